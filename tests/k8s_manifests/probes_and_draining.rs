//! Health probes, and a drain that fits the termination grace period.
//!
//! The gRPC port speaks only TLS, which the kubelet's native gRPC probes cannot: the probes
//! ask the admin port's plain HTTP endpoints, which say the same as gRPC health
//! (`/healthz`: the process serves; `/readyz`: migrated, the database answers, not draining).

use std::time::Duration;

use crate::helpers::{OVERLAYS, cluster, config_duration, container_env, services, socket_port};

#[test]
#[ignore = "needs the rendered manifests: make check-k8s"]
fn probes_use_the_admin_health_endpoints_and_the_drain_fits_the_grace_period() {
    for overlay in OVERLAYS {
        let objects = cluster(overlay);
        for deployment in services(&objects) {
            let id = format!("{overlay}: {}", deployment.id());
            let container = &deployment.containers()[0];
            let env = container_env(&objects, container, "pod-0");
            let admin = deployment.port_named("admin").expect("an admin port");
            assert_eq!(
                socket_port(&env, "BOOKMESH_ADMIN_LISTEN"),
                admin,
                "{id}: the admin port is where the binary serves /healthz and /readyz"
            );
            for (probe, path) in [
                ("startupProbe", "/healthz"),
                ("livenessProbe", "/healthz"),
                ("readinessProbe", "/readyz"),
            ] {
                let action = &container[probe]["httpGet"];
                assert!(action.is_object(), "{id}: {probe} is an HTTP probe");
                let port = match &action["port"] {
                    serde_json::Value::String(name) => deployment.port_named(name),
                    number => number.as_u64().and_then(|n| u16::try_from(n).ok()),
                };
                assert_eq!(port, Some(admin), "{id}: {probe} asks the admin port");
                assert_eq!(action["path"].as_str(), Some(path), "{id}: {probe} path");
            }
            let drain = config_duration(&env, "BOOKMESH_DRAIN_DELAY");
            let grace = config_duration(&env, "BOOKMESH_SHUTDOWN_GRACE");
            let readiness = &container["readinessProbe"];
            let detect = Duration::from_secs(
                readiness["periodSeconds"].as_u64().unwrap_or(10)
                    * readiness["failureThreshold"].as_u64().unwrap_or(3),
            );
            assert!(
                drain > detect,
                "{id}: the drain delay ({drain:?}) must outlast the readiness probe noticing \
                 ({detect:?}), or endpoints still route to a closed listener"
            );
            let termination = Duration::from_secs(
                deployment.spec["terminationGracePeriodSeconds"]
                    .as_u64()
                    .unwrap_or(30),
            );
            assert!(
                termination > drain + grace,
                "{id}: terminationGracePeriodSeconds ({termination:?}) must exceed drain \
                 ({drain:?}) + shutdown grace ({grace:?})"
            );
        }
    }
}
