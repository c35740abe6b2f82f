//! The images: what the manifests run is what `make images` and the Dockerfile build.

use std::collections::BTreeSet;
use std::path::PathBuf;

use crate::helpers::{
    RUST_DOCKERFILE, built_images, cluster, image_dockerfiles, services, workloads,
};

/// The ENTRYPOINT of a Dockerfile's last stage, in exec form (a JSON array).
fn entrypoint(dockerfile: &str) -> Vec<String> {
    let joined = dockerfile.replace("\\\n", " ");
    let line = joined
        .lines()
        .rfind(|line| line.trim_start().starts_with("ENTRYPOINT"))
        .expect("an ENTRYPOINT");
    let json = line.trim_start().trim_start_matches("ENTRYPOINT").trim();
    serde_json::from_str(json)
        .unwrap_or_else(|e| panic!("ENTRYPOINT {json} is not in exec form (a JSON array): {e}"))
}

#[test]
#[ignore = "needs the rendered manifests: make check-k8s"]
fn bookmesh_containers_run_the_images_make_images_builds() {
    let images = built_images();
    let dockerfiles = image_dockerfiles();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
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
            let dockerfile = dockerfiles.get(image).expect("listed");
            if dockerfile == RUST_DOCKERFILE {
                assert_eq!(
                    command,
                    format!("/usr/local/bin/{binary}"),
                    "{}: the command is the image's binary",
                    workload.id()
                );
            } else {
                // An image of its own (the notification service): the Deployment runs exactly
                // what the image's ENTRYPOINT runs, with no arguments on top.
                let text = std::fs::read_to_string(root.join(dockerfile))
                    .unwrap_or_else(|e| panic!("{dockerfile}: {e}"));
                let command: Vec<String> = container["command"]
                    .as_array()
                    .map(|c| {
                        c.iter()
                            .filter_map(|w| w.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default();
                assert_eq!(
                    command,
                    entrypoint(&text),
                    "{}: the command is {dockerfile}'s ENTRYPOINT",
                    workload.id()
                );
                assert!(
                    command.first().and_then(|c| c.rsplit('/').next()) == Some(binary.as_str()),
                    "{}: {image} runs {binary}",
                    workload.id()
                );
                assert!(
                    container["args"].as_array().is_none_or(Vec::is_empty),
                    "{}: no arguments",
                    workload.id()
                );
            }
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
    // The images built from images/Dockerfile; the others have their own (the next test).
    let dockerfiles = image_dockerfiles();
    let wanted: BTreeSet<String> = built_images()
        .into_iter()
        .filter(|(image, _)| dockerfiles.get(image).map(String::as_str) == Some(RUST_DOCKERFILE))
        .map(|(_, binary)| binary)
        .collect();
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

/// The images with a Dockerfile of their own (the notification service, Python): the image runs
/// as the uid its Deployment says, holds the policy where it tells the service to read it
/// (BOOKMESH_AUTHZ_POLICY), installs the lock file and generates the stubs from proto/, and its
/// build context (`<Dockerfile>.dockerignore`) keeps every file the Dockerfile copies in.
#[test]
#[ignore = "needs the rendered manifests: make check-k8s"]
fn an_image_with_its_own_dockerfile_holds_what_its_service_reads() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let objects = cluster("kind");
    let mut checked = 0;
    for (image, dockerfile) in image_dockerfiles() {
        if dockerfile == RUST_DOCKERFILE {
            continue;
        }
        let text = std::fs::read_to_string(root.join(&dockerfile))
            .unwrap_or_else(|e| panic!("{dockerfile}: {e}"));
        let joined = text.replace("\\\n", " ");
        let instructions: Vec<Vec<&str>> = joined
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .map(|line| line.split_whitespace().collect())
            .collect();
        let repository = image.split(':').next().unwrap_or_default();
        let deployment = services(&objects)
            .into_iter()
            .find(|d| {
                d.containers().iter().any(|c| {
                    c["image"].as_str().unwrap_or_default().split(':').next() == Some(repository)
                })
            })
            .unwrap_or_else(|| panic!("no service Deployment runs {image}"));
        let id = format!("{dockerfile} ({})", deployment.id());

        // The user: the last USER instruction, numeric, the Deployment's uid and gid.
        let user = instructions
            .iter()
            .rfind(|words| words.first() == Some(&"USER"))
            .and_then(|words| words.get(1).copied())
            .unwrap_or_else(|| panic!("{id}: a USER instruction"));
        let pod = &deployment.spec["securityContext"];
        assert_eq!(
            user,
            format!("{}:{}", pod["runAsUser"], pod["runAsGroup"]),
            "{id}: the image's user is the pod's runAsUser:runAsGroup"
        );

        // The policy, where the image's environment points the service.
        let policy = joined
            .split("BOOKMESH_AUTHZ_POLICY=")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("{id}: ENV BOOKMESH_AUTHZ_POLICY=<path>"));
        assert!(
            instructions
                .iter()
                .any(|words| words.first() == Some(&"COPY")
                    && words.contains(&"policy/authorization.toml")
                    && words.last() == Some(&policy)),
            "{id}: policy/authorization.toml is copied to {policy}"
        );
        // The lock file in a virtual environment, the stubs by the generator prepare.sh uses.
        for needed in [
            "services/notification/requirements.lock",
            "python -m venv",
            "clients/python/generate.sh",
        ] {
            assert!(joined.contains(needed), "{id}: {needed}");
        }

        // The build context keeps what the Dockerfile copies from it.
        let ignore_path = format!("{dockerfile}.dockerignore");
        let ignore = std::fs::read_to_string(root.join(&ignore_path))
            .unwrap_or_else(|e| panic!("{ignore_path}: {e}"));
        let kept: Vec<&str> = ignore
            .lines()
            .filter_map(|line| line.trim().strip_prefix('!'))
            .map(|path| path.trim_end_matches('/'))
            .collect();
        for words in &instructions {
            if words.first() != Some(&"COPY") || words.iter().any(|w| w.starts_with("--from=")) {
                continue;
            }
            let sources = &words[1..words.len() - 1];
            for source in sources.iter().filter(|w| !w.starts_with("--")) {
                let source = source.trim_end_matches('/');
                assert!(
                    kept.iter()
                        .any(|k| source == *k || source.starts_with(&format!("{k}/"))),
                    "{id}: {ignore_path} leaves out {source}, which the Dockerfile copies"
                );
            }
        }
        checked += 1;
    }
    assert!(checked >= 1, "the notification service's image is checked");
}
