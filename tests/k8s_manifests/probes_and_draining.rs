//! Health probes, and a drain that fits the termination grace period.

use std::time::Duration;

use crate::helpers::{OVERLAYS, cluster, config_duration, container_env, port_number, services};

#[test]
#[ignore = "needs the rendered manifests: make check-k8s"]
fn probes_use_grpc_health_on_the_serving_port_and_the_drain_fits_the_grace_period() {
    for overlay in OVERLAYS {
        let objects = cluster(overlay);
        for deployment in services(&objects) {
            let id = format!("{overlay}: {}", deployment.id());
            let container = &deployment.containers()[0];
            let grpc = deployment.port_named("grpc").expect("a grpc port");
            for (probe, service) in [
                ("startupProbe", bookmesh::server::LIVENESS_NAME),
                ("livenessProbe", bookmesh::server::LIVENESS_NAME),
                ("readinessProbe", ""),
            ] {
                let action = &container[probe]["grpc"];
                assert!(action.is_object(), "{id}: {probe} is a native gRPC probe");
                assert_eq!(port_number(&action["port"]), grpc, "{id}: {probe} port");
                assert_eq!(
                    action["service"].as_str().unwrap_or_default(),
                    service,
                    "{id}: {probe} health-service name"
                );
            }
            let env = container_env(&objects, container, "pod-0");
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
