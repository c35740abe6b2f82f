//! Health probes, and a drain that fits the termination grace period.
//!
//! The gRPC port speaks only TLS, which the kubelet's native gRPC probes cannot: the probes
//! ask the admin port's plain HTTP endpoints, which say the same as gRPC health
//! (`/healthz`: the process serves; `/readyz`: migrated, the database answers, not draining).
//! The gateway has neither a gRPC port nor an admin port: its probes ask `/healthz` on its own
//! HTTP port, and since it stops accepting at SIGTERM, a preStop wait keeps it serving while
//! the endpoints and the ingress controller move traffic away.

use std::time::Duration;

use crate::helpers::{
    OVERLAYS, cluster, config_duration, container_env, services, socket_port, the_gateway,
};

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

#[test]
#[ignore = "needs the rendered manifests: make check-k8s"]
fn the_gateway_probes_its_healthz_and_waits_before_it_stops_accepting() {
    for overlay in OVERLAYS {
        let objects = cluster(overlay);
        let gateway = the_gateway(&objects, overlay);
        let id = format!("{overlay}: {}", gateway.id());
        let container = &gateway.containers()[0];
        let env = container_env(&objects, container, "pod-0");
        let http = gateway.port_named("http").expect("an http port");
        assert_eq!(
            socket_port(&env, "BOOKMESH_LISTEN"),
            http,
            "{id}: the http port is where the binary serves /healthz"
        );
        assert!(
            gateway.port_named("admin").is_none() && gateway.port_named("grpc").is_none(),
            "{id}: the gateway serves HTTP only (no admin, no gRPC port)"
        );
        for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
            let action = &container[probe]["httpGet"];
            assert!(action.is_object(), "{id}: {probe} is an HTTP probe");
            let port = match &action["port"] {
                serde_json::Value::String(name) => gateway.port_named(name),
                number => number.as_u64().and_then(|n| u16::try_from(n).ok()),
            };
            assert_eq!(port, Some(http), "{id}: {probe} asks the http port");
            assert_eq!(
                action["path"].as_str(),
                Some("/healthz"),
                "{id}: {probe} path"
            );
        }
        // SIGTERM closes the listener at once: without a wait first, the endpoints, kube-proxy
        // and the ingress controller would still send connections to a closed port.
        let wait = Duration::from_secs(
            container["lifecycle"]["preStop"]["sleep"]["seconds"]
                .as_u64()
                .unwrap_or_else(|| panic!("{id}: a preStop sleep before SIGTERM")),
        );
        // As long as the services' own drain delay, which covers the same propagation.
        for service in services(&objects) {
            let service_env = container_env(&objects, &service.containers()[0], "pod-0");
            let drain = config_duration(&service_env, "BOOKMESH_DRAIN_DELAY");
            assert!(
                wait >= drain,
                "{id}: the preStop wait ({wait:?}) is shorter than {}'s drain delay ({drain:?})",
                service.id()
            );
        }
        // Then open calls get the request timeout to finish (streams end at once).
        let finish = config_duration(&env, "BOOKMESH_REQUEST_TIMEOUT");
        let termination = Duration::from_secs(
            gateway.spec["terminationGracePeriodSeconds"]
                .as_u64()
                .unwrap_or(30),
        );
        assert!(
            termination > wait + finish,
            "{id}: terminationGracePeriodSeconds ({termination:?}) must exceed the preStop wait \
             ({wait:?}) + the request timeout ({finish:?})"
        );
    }
}
