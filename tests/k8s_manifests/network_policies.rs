//! Network policies, evaluated per policy: who may reach whom.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::helpers::{
    NAMESPACE, OVERLAYS, Workload, cluster, container_env, find, name, named_addresses, of_kind,
    port_number, selector_matches, service_selects, str_map, the_gateway, workloads,
};

/// A pod as network policies see it.
#[derive(Clone)]
pub(crate) struct Peer {
    pub(crate) id: String,
    namespace_labels: BTreeMap<String, String>,
    labels: BTreeMap<String, String>,
    /// (name, number, protocol) of its container ports.
    ports: Vec<(String, u16, String)>,
    /// Stands for "any pod in any other namespace": matches every namespaceSelector/ipBlock.
    outsider: bool,
}

fn namespace_labels(objects: &[Value]) -> BTreeMap<String, String> {
    let mut labels = find(objects, "Namespace", NAMESPACE)
        .map(|ns| str_map(&ns["metadata"]["labels"]))
        .unwrap_or_default();
    labels.insert("kubernetes.io/metadata.name".into(), NAMESPACE.into());
    labels
}

pub(crate) fn peers(objects: &[Value]) -> Vec<Peer> {
    let ns = namespace_labels(objects);
    workloads(objects)
        .iter()
        .map(|w| Peer {
            id: w.id(),
            namespace_labels: ns.clone(),
            labels: w.labels.clone(),
            ports: w.ports(),
            outsider: false,
        })
        .collect()
}

/// Whether a policy rule's peer list (`from` or `to`) admits `pod`.
fn rule_peers_admit(peers: &Value, pod: &Peer) -> bool {
    let Some(peers) = peers.as_array() else {
        return true; // no `from`/`to`: every source or destination
    };
    if peers.is_empty() {
        return true;
    }
    peers.iter().any(|peer| {
        if peer.get("ipBlock").is_some() {
            // Addresses could be anything: assume they include the pod (stricter checks).
            return true;
        }
        match (peer.get("namespaceSelector"), peer.get("podSelector")) {
            (Some(namespaces), pods) => {
                pod.outsider
                    || (selector_matches(namespaces, &pod.namespace_labels)
                        && pods.is_none_or(|s| selector_matches(s, &pod.labels)))
            }
            (None, Some(pods)) => {
                !pod.outsider
                    && pod.namespace_labels.get("kubernetes.io/metadata.name")
                        == Some(&NAMESPACE.to_owned())
                    && selector_matches(pods, &pod.labels)
            }
            (None, None) => false,
        }
    })
}

/// Whether a rule's port list admits `port`/`protocol` on `destination`.
fn rule_ports_admit(ports: &Value, destination: &Peer, port: u16, protocol: &str) -> bool {
    let Some(ports) = ports.as_array() else {
        return true;
    };
    ports.is_empty()
        || ports.iter().any(|p| {
            let p_protocol = p["protocol"].as_str().unwrap_or("TCP");
            let number_matches = match &p["port"] {
                Value::Null => true,
                Value::String(port_name) => destination
                    .ports
                    .iter()
                    .any(|(n, number, _)| n == port_name && *number == port),
                number => {
                    let start = port_number(number);
                    let end = p["endPort"].as_u64().map_or(start, |e| e as u16);
                    (start..=end).contains(&port)
                }
            };
            p_protocol == protocol && number_matches
        })
}

fn policy_types(policy: &Value) -> Vec<String> {
    match policy["spec"]["policyTypes"].as_array() {
        Some(types) => types
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        None => {
            let mut types = vec!["Ingress".to_owned()];
            if policy["spec"].get("egress").is_some() {
                types.push("Egress".into());
            }
            types
        }
    }
}

/// Whether the policies let `source` open a connection to `destination` on `port`.
pub(crate) fn connection_allowed(
    policies: &[&Value],
    source: &Peer,
    destination: &Peer,
    port: u16,
    protocol: &str,
) -> bool {
    let selecting = |pod: &Peer, direction: &str| -> Vec<&Value> {
        let in_namespace =
            pod.namespace_labels.get("kubernetes.io/metadata.name") == Some(&NAMESPACE.to_owned());
        if pod.outsider || !in_namespace {
            return Vec::new(); // policies select pods of their own namespace only
        }
        policies
            .iter()
            .copied()
            .filter(|p| {
                selector_matches(&p["spec"]["podSelector"], &pod.labels)
                    && policy_types(p).iter().any(|t| t == direction)
            })
            .collect()
    };
    let ingress = selecting(destination, "Ingress");
    let ingress_ok = ingress.is_empty()
        || ingress.iter().any(|p| {
            p["spec"]["ingress"].as_array().is_some_and(|rules| {
                rules.iter().any(|r| {
                    rule_peers_admit(&r["from"], source)
                        && rule_ports_admit(&r["ports"], destination, port, protocol)
                })
            })
        });
    let egress = selecting(source, "Egress");
    let egress_ok = egress.is_empty()
        || egress.iter().any(|p| {
            p["spec"]["egress"].as_array().is_some_and(|rules| {
                rules.iter().any(|r| {
                    rule_peers_admit(&r["to"], destination)
                        && rule_ports_admit(&r["ports"], destination, port, protocol)
                })
            })
        });
    ingress_ok && egress_ok
}

/// Who should reach `target` on `port`: the workloads whose configuration names a Service that
/// selects `target` at a Service port that leads to `port` (a URL, or a `name=host:port` entry
/// such as the gateway's admin targets), plus those sharing a database's credentials Secret
/// (the service the database was created for). Naming a Service for one port is no reason to
/// reach another port of the same pods: rental calls book-headless on gRPC, not on its admin
/// port.
fn expected_callers(objects: &[Value], target: &Workload<'_>, port: u16) -> BTreeSet<String> {
    let all = workloads(objects);
    // (Service name, Service port) pairs that lead to `port` on `target`.
    let serving: BTreeSet<(String, u16)> = of_kind(objects, "Service")
        .into_iter()
        .filter(|s| service_selects(s, target))
        .flat_map(|s| {
            s["spec"]["ports"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter(|p| match &p["targetPort"] {
                    Value::String(n) => target.port_named(n) == Some(port),
                    Value::Number(_) => port_number(&p["targetPort"]) == port,
                    _ => port_number(&p["port"]) == port,
                })
                .map(|p| (name(s).to_owned(), port_number(&p["port"])))
                .collect::<Vec<_>>()
        })
        .collect();
    let serving_names: BTreeSet<&str> = serving.iter().map(|(n, _)| n.as_str()).collect();
    let secrets_of = |w: &Workload<'_>| -> BTreeSet<String> {
        w.containers()
            .iter()
            .flat_map(|c| c["env"].as_array().cloned().unwrap_or_default())
            .filter_map(|e| {
                e["valueFrom"]["secretKeyRef"]["name"]
                    .as_str()
                    .map(str::to_owned)
            })
            .collect()
    };
    // A database's or the broker's callers hold its credentials (the Secret it is set up with);
    // where the overlay keeps that Secret outside git (production), the URL is not readable.
    let target_secrets = if matches!(target.component(), "database" | "event-broker") {
        secrets_of(target)
    } else {
        BTreeSet::new()
    };
    all.iter()
        .filter(|w| w.id() != target.id())
        .filter(|w| {
            let names_it = w.containers().iter().any(|c| {
                let env = container_env(objects, c, "pod-0");
                named_addresses(&env).iter().any(|(host, named_port)| {
                    let short = host.split('.').next().unwrap_or_default().to_owned();
                    match named_port {
                        Some(named_port) => serving.contains(&(short, *named_port)),
                        // No port in the URL: the scheme's default, whatever the Service has.
                        None => serving_names.contains(short.as_str()),
                    }
                })
            });
            // Credentials are for the port its Services expose, not for every port it has.
            let holds_credentials =
                !serving.is_empty() && !secrets_of(w).is_disjoint(&target_secrets);
            names_it || holds_credentials
        })
        .map(Workload::id)
        .collect()
}

#[test]
#[ignore = "needs the rendered manifests: make check-k8s"]
fn network_policies_admit_exactly_the_real_callers() {
    for overlay in OVERLAYS {
        let objects = cluster(overlay);
        let policies = of_kind(&objects, "NetworkPolicy");
        let pods = peers(&objects);
        let outsider = Peer {
            id: "a pod in another namespace".into(),
            namespace_labels: BTreeMap::from([(
                "kubernetes.io/metadata.name".into(),
                "elsewhere".into(),
            )]),
            labels: BTreeMap::new(),
            ports: Vec::new(),
            outsider: true,
        };
        let dns = Peer {
            id: "kube-dns".into(),
            namespace_labels: BTreeMap::from([(
                "kubernetes.io/metadata.name".into(),
                "kube-system".into(),
            )]),
            labels: BTreeMap::from([("k8s-app".into(), "kube-dns".into())]),
            ports: vec![
                ("dns".into(), 53, "UDP".into()),
                ("dns-tcp".into(), 53, "TCP".into()),
            ],
            outsider: false,
        };
        let mut checked_databases = 0;
        for target in workloads(&objects) {
            // The mesh's own parts; the observability component has its own, simpler policies.
            if !matches!(
                target.component(),
                "service" | "database" | "event-broker" | "gateway"
            ) {
                continue;
            }
            let target_peer = pods
                .iter()
                .find(|p| p.id == target.id())
                .expect("peer")
                .clone();
            for (port_name, port, protocol) in target.ports() {
                let id = format!("{overlay}: {} port {port} ({port_name})", target.id());
                let allowed: BTreeSet<String> = pods
                    .iter()
                    .filter(|source| source.id != target.id())
                    .filter(|source| {
                        connection_allowed(&policies, source, &target_peer, port, &protocol)
                    })
                    .map(|source| source.id.clone())
                    .collect();
                let expected = expected_callers(&objects, &target, port);
                assert_eq!(
                    allowed, expected,
                    "{id}: allowed callers != configured callers"
                );
                if target.component() == "gateway" {
                    // The edge: the ingress controller (another namespace) and kube-proxy
                    // forwarding the NodePort must get through.
                    assert!(
                        connection_allowed(&policies, &outsider, &target_peer, port, &protocol),
                        "{id}: the gateway is not reachable from outside the namespace"
                    );
                } else if port_name != "admin" {
                    assert!(
                        !connection_allowed(&policies, &outsider, &target_peer, port, &protocol),
                        "{id}: reachable from outside the namespace"
                    );
                }
                if target.component() == "database" {
                    assert_eq!(
                        expected.len(),
                        1,
                        "{id}: a database belongs to exactly one service: {expected:?}"
                    );
                    checked_databases += 1;
                }
            }
        }
        assert_eq!(
            checked_databases, 5,
            "{overlay}: book, member, rental and bestbook databases, notification's Redis"
        );
        for pod in &pods {
            assert!(
                connection_allowed(&policies, pod, &dns, 53, "UDP"),
                "{overlay}: {} cannot resolve names",
                pod.id
            );
        }
        // Deny by default: a pod nobody wrote a policy for reaches and is reached by nothing.
        let stranger = Peer {
            id: "an unlisted pod".into(),
            namespace_labels: namespace_labels(&objects),
            labels: BTreeMap::from([("app.kubernetes.io/name".into(), "stranger".into())]),
            ports: vec![("http".into(), 8080, "TCP".into())],
            outsider: false,
        };
        for pod in &pods {
            for (_, port, protocol) in &pod.ports {
                assert!(
                    !connection_allowed(&policies, &stranger, pod, *port, protocol),
                    "{overlay}: an unlisted pod reaches {} on {port}",
                    pod.id
                );
            }
            assert!(
                !connection_allowed(&policies, pod, &stranger, 8080, "TCP"),
                "{overlay}: {} reaches an unlisted pod",
                pod.id
            );
        }
    }
}

/// The gateway's paths, spelled out rather than derived from configuration: it reaches each
/// service's gRPC and admin ports (and the trace collector where there is one) and nothing
/// else in the namespace; the services' admin ports admit the gateway and, with the
/// observability component, Prometheus from the `monitoring` namespace — no other pod of this
/// namespace or any other.
#[test]
#[ignore = "needs the rendered manifests: make check-k8s"]
fn the_gateway_reaches_every_service_and_only_it_reaches_their_admin_ports() {
    for overlay in OVERLAYS {
        let objects = cluster(overlay);
        let policies = of_kind(&objects, "NetworkPolicy");
        let pods = peers(&objects);
        let gateway = the_gateway(&objects, overlay);
        let gateway_peer = pods
            .iter()
            .find(|p| p.id == gateway.id())
            .expect("peer")
            .clone();
        let all = workloads(&objects);
        let service_names = ["book", "member", "rental", "bestbook", "notification"];
        let mut expected: BTreeSet<(String, u16)> = BTreeSet::new();
        for service in service_names {
            let workload = all
                .iter()
                .find(|w| w.kind == "Deployment" && w.name == service)
                .unwrap_or_else(|| panic!("{overlay}: Deployment/{service}"));
            for port_name in ["grpc", "admin"] {
                let port = workload
                    .port_named(port_name)
                    .unwrap_or_else(|| panic!("{overlay}: {service} has a {port_name} port"));
                expected.insert((workload.id(), port));
            }
        }
        if let Some(collector) = all.iter().find(|w| w.name == "otel-collector") {
            expected.insert((collector.id(), 4317));
        }
        let reached: BTreeSet<(String, u16)> = pods
            .iter()
            .filter(|pod| pod.id != gateway_peer.id)
            .flat_map(|pod| {
                pod.ports
                    .iter()
                    .filter(|(_, port, protocol)| {
                        connection_allowed(&policies, &gateway_peer, pod, *port, protocol)
                    })
                    .map(|(_, port, _)| (pod.id.clone(), *port))
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(
            reached, expected,
            "{overlay}: where the gateway may connect != each service's gRPC and admin port"
        );

        let in_namespace = |name: &str, namespace: &str| Peer {
            id: format!("a pod of namespace {namespace}"),
            namespace_labels: BTreeMap::from([(
                "kubernetes.io/metadata.name".into(),
                namespace.into(),
            )]),
            labels: BTreeMap::from([("app.kubernetes.io/name".into(), name.into())]),
            ports: Vec::new(),
            outsider: false,
        };
        let monitoring = in_namespace("prometheus", "monitoring");
        let elsewhere = in_namespace("gateway", "elsewhere");
        let observed = all.iter().any(|w| w.name == "otel-collector");
        for service in service_names {
            let workload = all
                .iter()
                .find(|w| w.kind == "Deployment" && w.name == service)
                .expect("service");
            let target = pods.iter().find(|p| p.id == workload.id()).expect("peer");
            let admin = workload.port_named("admin").expect("admin port");
            let callers: BTreeSet<String> = pods
                .iter()
                .filter(|pod| pod.id != target.id)
                .filter(|pod| connection_allowed(&policies, pod, target, admin, "TCP"))
                .map(|pod| pod.id.clone())
                .collect();
            assert_eq!(
                callers,
                BTreeSet::from([gateway.id()]),
                "{overlay}: {service}'s admin port {admin}: only the gateway, of this namespace"
            );
            assert!(
                !connection_allowed(&policies, &elsewhere, target, admin, "TCP"),
                "{overlay}: {service}'s admin port is open to another namespace"
            );
            assert_eq!(
                connection_allowed(&policies, &monitoring, target, admin, "TCP"),
                observed,
                "{overlay}: Prometheus scrapes {service}'s admin port iff observability is on"
            );
        }
    }
}
