//! Services, the pods they select and the ports the binaries listen on.

use serde_json::Value;

use crate::helpers::{
    OVERLAYS, Workload, cluster, container_env, find, kind_cluster, name, of_kind, port_number,
    service_selects, services, socket_port, the_gateway, workloads,
};

#[test]
#[ignore = "needs the rendered manifests: make check-k8s"]
fn services_select_pods_and_every_port_is_one_the_binary_listens_on() {
    for overlay in OVERLAYS {
        let objects = cluster(overlay);
        let all = workloads(&objects);
        for service in of_kind(&objects, "Service") {
            let id = format!("{overlay}: Service/{}", name(service));
            let selected: Vec<&Workload<'_>> =
                all.iter().filter(|w| service_selects(service, w)).collect();
            assert!(!selected.is_empty(), "{id} selects no pod");
            for port in service["spec"]["ports"].as_array().expect("ports") {
                let target = &port["targetPort"];
                for workload in &selected {
                    let resolved = match target {
                        Value::String(port_name) => workload.port_named(port_name),
                        Value::Number(_) => Some(port_number(target)),
                        _ => Some(port_number(&port["port"])),
                    };
                    let resolved = resolved.unwrap_or_else(|| {
                        panic!("{id}: {} has no container port {target}", workload.id())
                    });
                    assert!(
                        workload.ports().iter().any(|(_, n, _)| *n == resolved),
                        "{id}: port {resolved} is not a container port of {}",
                        workload.id()
                    );
                }
            }
        }
        for deployment in services(&objects) {
            let id = format!("{overlay}: {}", deployment.id());
            let container = &deployment.containers()[0];
            let env = container_env(&objects, container, "pod-0");
            let grpc = deployment.port_named("grpc").expect("a grpc port");
            let admin = deployment.port_named("admin").expect("an admin port");
            assert_eq!(
                socket_port(&env, "BOOKMESH_LISTEN"),
                grpc,
                "{id}: BOOKMESH_LISTEN is the grpc container port"
            );
            assert_eq!(
                socket_port(&env, "BOOKMESH_ADMIN_LISTEN"),
                admin,
                "{id}: BOOKMESH_ADMIN_LISTEN is the admin container port"
            );
            // Headless for the mesh's own client-side balancing, regular for outside tools.
            let selecting: Vec<&Value> = of_kind(&objects, "Service")
                .into_iter()
                .filter(|s| service_selects(s, &deployment))
                .collect();
            assert!(
                selecting.iter().any(|s| s["spec"]["clusterIP"] == "None"),
                "{id}: a headless Service"
            );
            assert!(
                selecting.iter().any(|s| s["spec"]["clusterIP"] != "None"),
                "{id}: a regular Service"
            );
        }
        // The gateway: HTTP on its one port, behind a regular Service (browsers and the ingress
        // controller speak HTTP/1.1; connection-level balancing is what they need).
        let gateway = the_gateway(&objects, overlay);
        let id = format!("{overlay}: {}", gateway.id());
        let env = container_env(&objects, &gateway.containers()[0], "pod-0");
        let http = gateway.port_named("http").expect("an http port");
        assert_eq!(
            socket_port(&env, "BOOKMESH_LISTEN"),
            http,
            "{id}: BOOKMESH_LISTEN is the http container port"
        );
        assert!(
            of_kind(&objects, "Service").into_iter().any(|s| {
                service_selects(s, &gateway)
                    && s["spec"]["clusterIP"] != "None"
                    && s["spec"]["ports"]
                        .as_array()
                        .is_some_and(|ports| ports.iter().any(|p| p["targetPort"] == "http"))
            }),
            "{id}: a regular Service targets its http port"
        );
        // Every Ingress leads to a port of a Service that exists.
        for ingress in of_kind(&objects, "Ingress") {
            let id = format!("{overlay}: Ingress/{}", name(ingress));
            let backends: Vec<&Value> = ingress["spec"]["rules"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|rule| rule["http"]["paths"].as_array().into_iter().flatten())
                .map(|path| &path["backend"]["service"])
                .collect();
            assert!(!backends.is_empty(), "{id}: no backend");
            for backend in backends {
                let service_name = backend["name"].as_str().unwrap_or_default();
                let service = find(&objects, "Service", service_name)
                    .unwrap_or_else(|| panic!("{id}: no Service {service_name}"));
                let port = &backend["port"];
                assert!(
                    service["spec"]["ports"]
                        .as_array()
                        .is_some_and(|ports| ports
                            .iter()
                            .any(|p| (port["name"].is_string() && p["name"] == port["name"])
                                || (port["number"].is_u64() && p["port"] == port["number"]))),
                    "{id}: Service {service_name} has no port {port}"
                );
            }
        }
    }
}

/// `make kind-up` puts the console on http://localhost:8080: the kind overlay makes the
/// gateway's Service a NodePort, and the kind cluster maps that node port to the host's 8080.
#[test]
#[ignore = "needs the rendered manifests: make check-k8s"]
fn kind_publishes_the_gateway_on_localhost_8080() {
    let objects = cluster("kind");
    let gateway = the_gateway(&objects, "kind");
    let http = gateway.port_named("http").expect("an http port");
    let node_ports: Vec<u64> = of_kind(&objects, "Service")
        .into_iter()
        .filter(|s| service_selects(s, &gateway) && s["spec"]["type"] == "NodePort")
        .flat_map(|s| s["spec"]["ports"].as_array().cloned().unwrap_or_default())
        .filter(|p| p["targetPort"] == "http" || p["targetPort"] == u64::from(http))
        .filter_map(|p| p["nodePort"].as_u64())
        .collect();
    assert_eq!(
        node_ports.len(),
        1,
        "kind: one fixed NodePort leads to the gateway's http port: {node_ports:?}"
    );
    let cluster_config = kind_cluster();
    let mappings: Vec<&Value> = cluster_config["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|node| node["extraPortMappings"].as_array().into_iter().flatten())
        .collect();
    assert!(
        mappings.iter().any(|m| m["containerPort"] == node_ports[0]
            && m["hostPort"] == 8080
            && m["protocol"].as_str().unwrap_or("TCP") == "TCP"),
        "k8s/kind/cluster.yaml maps node port {} to the host's 8080: {mappings:?}",
        node_ports[0]
    );
    // A NodePort is for kind only: production goes through its Ingress.
    let production = cluster("production");
    assert!(
        of_kind(&production, "Service")
            .into_iter()
            .all(|s| s["spec"]["type"] != "NodePort"),
        "production: no NodePort"
    );
    assert!(
        !of_kind(&production, "Ingress").is_empty(),
        "production: an Ingress to the gateway"
    );
}
