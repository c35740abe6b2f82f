//! Configuration: every variable and flag a manifest sets is one its binary accepts.

use std::collections::BTreeSet;

use crate::helpers::{OVERLAYS, binary_of, cluster, container_env, workloads};

fn help_text(binary: &str) -> String {
    let output = std::process::Command::new(bookmesh_mesh_tests::binary(binary))
        .arg("--help")
        .env_clear()
        .output()
        .expect("run --help");
    assert!(output.status.success(), "{binary} --help failed");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The long options a binary takes, from its `--help`.
fn accepted_options(binary: &str) -> BTreeSet<String> {
    help_text(binary)
        .split_whitespace()
        .filter_map(|word| word.strip_prefix("--"))
        .map(|option| {
            option
                .trim_end_matches(|c: char| !c.is_ascii_alphanumeric())
                .to_owned()
        })
        .filter(|option| !option.is_empty())
        .collect()
}

/// The environment variables a binary reads as flags, from its `--help`.
fn accepted_env(binary: &str) -> BTreeSet<String> {
    help_text(binary)
        .split("[env: ")
        .skip(1)
        .filter_map(|rest| rest.split('=').next())
        .map(str::to_owned)
        .collect()
}

#[test]
#[ignore = "needs the rendered manifests: make check-k8s"]
fn every_environment_variable_is_one_the_binary_reads() {
    for overlay in OVERLAYS {
        let objects = cluster(overlay);
        for workload in workloads(&objects) {
            for container in workload.containers() {
                let image = container["image"].as_str().unwrap_or_default();
                if !image.contains("bookmesh/") {
                    continue;
                }
                let binary = binary_of(container);
                let flags = accepted_env(&binary);
                let file = std::fs::read(bookmesh_mesh_tests::binary(&binary)).expect("binary");
                for key in container_env(&objects, container, "pod-0").keys() {
                    // OTEL_* are read by the OpenTelemetry SDK, not clap: the binary must at
                    // least contain the name it looks up.
                    let read = flags.contains(key)
                        || (key.starts_with("OTEL_")
                            && file.windows(key.len()).any(|w| w == key.as_bytes()));
                    assert!(
                        read,
                        "{overlay}: {} sets {key}, which {binary} does not read ({flags:?})",
                        workload.id()
                    );
                }
                let options = accepted_options(&binary);
                for arg in container["args"].as_array().cloned().unwrap_or_default() {
                    let arg = arg.as_str().unwrap_or_default();
                    if let Some(option) = arg.strip_prefix("--") {
                        let option = option.split('=').next().unwrap_or_default();
                        assert!(
                            options.contains(option),
                            "{overlay}: {} passes --{option}, which {binary} does not take",
                            workload.id()
                        );
                    }
                }
            }
        }
    }
}
