//! The images: what the manifests run is what `make images` and the Dockerfile build.

use std::collections::BTreeSet;
use std::path::PathBuf;

use crate::helpers::{built_images, cluster, workloads};

#[test]
#[ignore = "needs the rendered manifests: make check-k8s"]
fn bookmesh_containers_run_the_images_make_images_builds() {
    let images = built_images();
    let objects = cluster("kind");
    let mut used = BTreeSet::new();
    for workload in workloads(&objects) {
        for container in workload.containers() {
            let image = container["image"].as_str().expect("image");
            if !image.starts_with("bookmesh/") {
                continue;
            }
            let binary = images.get(image).unwrap_or_else(|| {
                panic!(
                    "{} runs {image}, which `make images` does not build ({images:?})",
                    workload.id()
                )
            });
            let command = container["command"][0].as_str().unwrap_or_default();
            assert_eq!(
                command,
                format!("/usr/local/bin/{binary}"),
                "{}: the command is the image's binary",
                workload.id()
            );
            assert_eq!(container["imagePullPolicy"], "IfNotPresent", "{image}");
            used.insert(image.to_owned());
        }
    }
    assert_eq!(
        used,
        images.keys().cloned().collect(),
        "every image built is used"
    );
    // The production overlay runs the same images, from a registry.
    for workload in workloads(&cluster("production")) {
        for container in workload.containers() {
            let image = container["image"].as_str().expect("image");
            let repository = image.split(':').next().unwrap_or_default();
            let short = repository.rsplit('/').next().unwrap_or_default();
            if matches!(workload.component(), "service" | "gateway") {
                assert!(
                    images
                        .keys()
                        .any(|i| i.starts_with(&format!("bookmesh/{short}:"))),
                    "production {}: {image}",
                    workload.id()
                );
                assert!(
                    !image.ends_with(":dev") && image.contains(':'),
                    "{image}: a release tag"
                );
            }
        }
    }
}

/// The Dockerfile's build, checked without Docker: its `cargo build` line builds exactly the
/// binaries of the images (and cargo accepts it, run here in debug mode), and its build context
/// (Dockerfile.dockerignore) keeps every workspace member and the contracts.
#[test]
#[ignore = "needs the rendered manifests: make check-k8s"]
fn the_dockerfile_builds_the_binary_of_every_image() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let dockerfile = std::fs::read_to_string(root.join("images/Dockerfile")).expect("Dockerfile");
    // The `cargo build` instruction, its continuation lines joined.
    let joined = dockerfile.replace("\\\n", " ");
    let build = joined
        .lines()
        .find(|line| line.contains("cargo build"))
        .expect("a cargo build line");
    let args: Vec<&str> = build
        .split_whitespace()
        .skip_while(|word| *word != "build")
        .skip(1)
        .filter(|word| *word != "--release")
        .collect();
    let bins: BTreeSet<String> = args
        .windows(2)
        .filter(|pair| pair[0] == "--bin")
        .map(|pair| pair[1].to_owned())
        .collect();
    let wanted: BTreeSet<String> = built_images().into_values().collect();
    assert_eq!(bins, wanted, "the Dockerfile builds the images' binaries");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // Only the variables a user's shell would have: the ones cargo sets for this test (package
    // name, manifest dir, ...) would look like a changed environment and rebuild dependencies.
    let mut command = std::process::Command::new(cargo);
    command.env_clear();
    for key in [
        "PATH",
        "HOME",
        "CARGO_HOME",
        "RUSTUP_HOME",
        "RUSTUP_TOOLCHAIN",
        "CARGO_TARGET_DIR",
    ] {
        if let Some(value) = std::env::var_os(key) {
            command.env(key, value);
        }
    }
    let status = command
        .arg("build")
        .args(&args)
        .current_dir(&root)
        .status()
        .expect("run cargo");
    assert!(status.success(), "cargo build {} fails", args.join(" "));

    let ignore = std::fs::read_to_string(root.join("images/Dockerfile.dockerignore"))
        .expect("Dockerfile.dockerignore");
    let kept: BTreeSet<&str> = ignore
        .lines()
        .filter_map(|line| line.strip_prefix('!'))
        .map(|path| path.trim_end_matches('/'))
        .collect();
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).expect("Cargo.toml");
    let members = manifest
        .split("members = [")
        .nth(1)
        .and_then(|rest| rest.split(']').next())
        .expect("workspace members");
    for member in members.split(',').map(|m| m.trim().trim_matches('"')) {
        let top = member.split('/').next().unwrap_or_default();
        if top == "." || top.is_empty() {
            continue;
        }
        assert!(kept.contains(top), "the build context leaves out {member}");
    }
    // The policy is built into every binary (include_str!); the console's sources and the buf
    // that generates its code go to the console stage.
    for needed in [
        "Cargo.toml",
        "Cargo.lock",
        "build.rs",
        "proto",
        "policy",
        "src",
        "console",
        ".ci/tools/package.json",
        ".ci/tools/package-lock.json",
    ] {
        assert!(
            kept.contains(needed),
            "the build context leaves out {needed}"
        );
    }

    // The gateway embeds console/dist when it compiles (services/gateway/build.rs): the
    // console is built (npm run build in console/) and copied into the builder stage before
    // its `cargo build`, or the image's gateway serves a page saying the console is missing.
    let build_script = std::fs::read_to_string(root.join("services/gateway/build.rs"))
        .expect("services/gateway/build.rs");
    assert!(
        build_script.contains("../../console/dist"),
        "the gateway's build script no longer reads console/dist: update images/Dockerfile"
    );
    let console_built = joined
        .lines()
        .position(|line| line.trim_start().starts_with("RUN") && line.contains("npm run build"))
        .expect("images/Dockerfile builds the console (npm run build)");
    let console_copied = joined
        .lines()
        .position(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            words.first() == Some(&"COPY")
                && words.iter().any(|w| w.starts_with("--from="))
                && words.last() == Some(&"console/dist")
                && words
                    .iter()
                    .any(|w| w.ends_with("console/dist") && *w != "console/dist")
        })
        .expect("images/Dockerfile copies the built console/dist into the builder");
    let cargo_built = joined
        .lines()
        .position(|line| line.contains("cargo build"))
        .expect("cargo build");
    assert!(
        console_built < console_copied && console_copied < cargo_built,
        "images/Dockerfile: the console is built, then copied, then the gateway compiled"
    );
}
