//! Configuration: every variable and flag a manifest sets is one its binary accepts.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::helpers::{
    OVERLAYS, binary_of, cluster, container_env, is_python, name, of_kind, port_number,
    python_service_env, python_service_sources, service_selects, the_gateway, workloads,
};

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
                if is_python(container) {
                    python_reads_its_environment(&objects, overlay, &workload.id(), container);
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

/// The notification service (Python) reads its settings in config.py, not through clap: every
/// `BOOKMESH_*` variable the manifests set must be in its table, every other one (the
/// OpenTelemetry SDK's `OTEL_*`) named in its sources, and no argument is passed (it takes
/// none).
fn python_reads_its_environment(objects: &[Value], overlay: &str, id: &str, container: &Value) {
    let table = python_service_env();
    assert!(
        table.contains("BOOKMESH_LISTEN") && table.contains("BOOKMESH_REDIS_URL"),
        "config.py's table is not where it was: {table:?}"
    );
    let sources = python_service_sources();
    for key in container_env(objects, container, "pod-0").keys() {
        let read = if key.starts_with("BOOKMESH_") {
            table.contains(key)
        } else {
            key.starts_with("OTEL_") && sources.contains(&format!("\"{key}\""))
        };
        assert!(
            read,
            "{overlay}: {id} sets {key}, which the notification service does not read \
             (services/notification/bookmesh_notification/config.py: {table:?})"
        );
    }
    let command: Vec<&str> = container["command"]
        .as_array()
        .map(|c| c.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    assert_eq!(
        command.get(1..),
        Some(["-m", "bookmesh_notification"].as_slice()),
        "{overlay}: {id} runs the package as `python -m bookmesh_notification`"
    );
    assert!(
        container["args"].as_array().is_none_or(Vec::is_empty),
        "{overlay}: {id} passes arguments, which the notification service does not take"
    );
}

/// The gateway in a cluster: never the development sign-in (anyone reaching it could sign
/// tokens for any role), each service called through its headless Service at its gRPC port,
/// each service's admin port reached through the same headless name, so that every replica
/// appears in the console's mesh view.
#[test]
#[ignore = "needs the rendered manifests: make check-k8s"]
fn the_gateway_has_no_development_sign_in_and_names_every_service_by_its_headless_service() {
    for overlay in OVERLAYS {
        let objects = cluster(overlay);
        let gateway = the_gateway(&objects, overlay);
        let id = format!("{overlay}: {}", gateway.id());
        let container = &gateway.containers()[0];
        let env = container_env(&objects, container, "pod-0");
        assert!(
            env.get("BOOKMESH_DEV_SIGN_IN")
                .is_none_or(|v| v.is_empty() || v == "false"),
            "{id}: the development sign-in is on"
        );
        assert!(
            !container["args"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|a| a.as_str().is_some_and(|a| a.starts_with("--dev-sign-in"))),
            "{id}: the development sign-in is on (args)"
        );
        let all = workloads(&objects);
        // The headless Service selecting `service`'s pods, and the Service port leading to its
        // container port `port_name`, for a `host:port` the gateway is configured with.
        let leads_to = |address: &str, service: &str, port_name: &str| -> bool {
            let Some((host, port)) = address.rsplit_once(':') else {
                return false;
            };
            let Ok(port) = port.parse::<u16>() else {
                return false;
            };
            let short = host.split('.').next().unwrap_or_default();
            let Some(workload) = all
                .iter()
                .find(|w| w.kind == "Deployment" && w.name == service)
            else {
                return false;
            };
            let Some(container_port) = workload.port_named(port_name) else {
                return false;
            };
            of_kind(&objects, "Service").into_iter().any(|s| {
                name(s) == short
                    && host.ends_with(".svc.cluster.local")
                    && s["spec"]["clusterIP"] == "None"
                    && service_selects(s, workload)
                    && s["spec"]["ports"].as_array().is_some_and(|ports| {
                        ports.iter().any(|p| {
                            port_number(&p["port"]) == port
                                && match &p["targetPort"] {
                                    Value::String(n) => n == port_name,
                                    Value::Number(_) => {
                                        port_number(&p["targetPort"]) == container_port
                                    }
                                    _ => port == container_port,
                                }
                        })
                    })
            })
        };
        let admin_targets: Vec<(String, String)> = env
            .get("BOOKMESH_ADMIN_TARGETS")
            .unwrap_or_else(|| panic!("{id}: BOOKMESH_ADMIN_TARGETS"))
            .split(',')
            .filter(|entry| !entry.trim().is_empty())
            .map(|entry| {
                let (service, address) = entry
                    .split_once('=')
                    .unwrap_or_else(|| panic!("{id}: admin target {entry:?}"));
                (service.trim().to_owned(), address.trim().to_owned())
            })
            .collect();
        let mut named: Vec<&str> = admin_targets.iter().map(|(s, _)| s.as_str()).collect();
        named.sort_unstable();
        assert_eq!(
            named,
            ["bestbook", "book", "member", "notification", "rental"],
            "{id}: an admin target per service"
        );
        for service in ["book", "member", "rental", "bestbook", "notification"] {
            let key = format!("BOOKMESH_{}_ENDPOINTS", service.to_uppercase());
            let endpoints = env
                .get(&key)
                .unwrap_or_else(|| panic!("{id}: {key} (the default is loopback)"));
            for endpoint in endpoints.split(',') {
                let address = endpoint
                    .strip_prefix("http://")
                    .unwrap_or_else(|| panic!("{id}: {key}={endpoint}: http://host:port"));
                assert!(
                    leads_to(address, service, "grpc"),
                    "{id}: {key}={endpoint} is not {service}'s headless Service at its gRPC port"
                );
            }
            let (_, address) = admin_targets
                .iter()
                .find(|(s, _)| s == service)
                .expect("named");
            assert!(
                leads_to(address, service, "admin"),
                "{id}: admin target {service}={address} is not {service}'s headless Service \
                 at its admin port"
            );
        }
    }
}
