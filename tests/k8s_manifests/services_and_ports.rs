//! Services, the pods they select and the ports the binaries listen on.

use serde_json::Value;

use crate::helpers::{
    OVERLAYS, Workload, cluster, container_env, name, of_kind, port_number, service_selects,
    services, socket_port, workloads,
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
    }
}
