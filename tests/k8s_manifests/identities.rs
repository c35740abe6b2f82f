//! Workload identities: every workload proves its own SPIFFE ID with a certificate the mesh's
//! CA issues (cert-manager), mounted where its binary reads it; and the policy matrix reaches
//! from network policies to identities: the workloads the authorization policy lets call a
//! server are exactly the ones the network policies let reach it.

use std::collections::BTreeSet;

use bookmesh::auth::{Caller, Claims, Decision, Policy};
use serde_json::Value;

use crate::helpers::{OVERLAYS, Workload, cluster, container_env, name, of_kind, workloads};
use crate::network_policies::{connection_allowed, peers};

const SPIFFE_PREFIX: &str = "spiffe://bookmesh.local/ns/bookmesh/sa/";

/// The workloads that speak gRPC: the services, the gateway (a client of them all), and the
/// load generator.
fn grpc_workloads<'a>(objects: &'a [Value]) -> Vec<Workload<'a>> {
    workloads(objects)
        .into_iter()
        .filter(|w| matches!(w.component(), "service" | "gateway") || w.name == "hpa-demo-loadgen")
        .collect()
}

/// The users' roles the policy knows; the gateway calls with the token of one of them.
const ROLES: [&str; 3] = ["member", "librarian", "admin"];

/// The workload's name in SPIFFE IDs and policies: its ServiceAccount, or its app name.
fn workload_name(workload: &Workload<'_>) -> String {
    workload.spec["serviceAccountName"]
        .as_str()
        .map(str::to_owned)
        .or_else(|| workload.labels.get("app.kubernetes.io/name").cloned())
        .expect("a name")
}

#[test]
#[ignore = "needs the rendered manifests: make check-k8s"]
fn every_workload_mounts_the_certificate_of_its_own_identity() {
    for overlay in OVERLAYS {
        let objects = cluster(overlay);
        let certificates = of_kind(&objects, "Certificate");
        let issuers = of_kind(&objects, "Issuer");
        let ca_issuer = issuers
            .iter()
            .find(|issuer| issuer["spec"]["ca"]["secretName"].is_string())
            .unwrap_or_else(|| panic!("{overlay}: an Issuer signing with the mesh's CA"));
        let ca_secret = ca_issuer["spec"]["ca"]["secretName"]
            .as_str()
            .unwrap_or_default();
        assert!(
            certificates
                .iter()
                .any(|c| c["spec"]["isCA"] == true && c["spec"]["secretName"] == ca_secret),
            "{overlay}: the CA Issuer's Secret is a CA Certificate's"
        );
        let mut checked = 0;
        let mut checked_gateway = false;
        for workload in grpc_workloads(&objects) {
            let id = format!("{overlay}: {}", workload.id());
            let me = workload_name(&workload);
            let container = &workload.containers()[0];
            let env = container_env(&objects, container, "pod-0");
            assert!(
                env.get("BOOKMESH_INSECURE_PLAINTEXT")
                    .is_none_or(|v| v == "false"),
                "{id}: runs without identities"
            );
            for (key, default) in [
                ("BOOKMESH_TRUST_DOMAIN", "bookmesh.local"),
                ("BOOKMESH_NAMESPACE", "bookmesh"),
            ] {
                assert_eq!(
                    env.get(key).map_or(default, String::as_str),
                    default,
                    "{id}: {key} matches the certificates' SPIFFE IDs"
                );
            }
            let certificate = env
                .get("BOOKMESH_TLS_CERT")
                .unwrap_or_else(|| panic!("{id}: BOOKMESH_TLS_CERT"));
            let folder = certificate
                .rsplit_once('/')
                .map(|(folder, _)| folder)
                .unwrap_or_default();
            for (key, file) in [
                ("BOOKMESH_TLS_CERT", "tls.crt"),
                ("BOOKMESH_TLS_KEY", "tls.key"),
                ("BOOKMESH_TLS_CA", "ca.crt"),
            ] {
                assert_eq!(
                    env.get(key).map(String::as_str),
                    Some(format!("{folder}/{file}").as_str()),
                    "{id}: {key} is the mounted Secret's {file}"
                );
            }
            let mount = container["volumeMounts"]
                .as_array()
                .and_then(|mounts| mounts.iter().find(|m| m["mountPath"] == folder))
                .unwrap_or_else(|| panic!("{id}: nothing is mounted at {folder}"));
            let secret = workload.spec["volumes"]
                .as_array()
                .and_then(|volumes| volumes.iter().find(|v| v["name"] == mount["name"]))
                .and_then(|volume| volume["secret"]["secretName"].as_str())
                .unwrap_or_else(|| panic!("{id}: {folder} is a Secret volume"));
            let issued = certificates
                .iter()
                .find(|c| c["spec"]["secretName"] == secret)
                .unwrap_or_else(|| panic!("{id}: no Certificate writes the Secret {secret}"));
            let uris: Vec<&str> = issued["spec"]["uris"]
                .as_array()
                .map(|uris| uris.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            assert_eq!(
                uris,
                [format!("{SPIFFE_PREFIX}{me}").as_str()],
                "{id}: its certificate names its own ServiceAccount, and only it"
            );
            assert_eq!(
                issued["spec"]["issuerRef"]["name"].as_str(),
                Some(name(ca_issuer)),
                "{id}: issued by the mesh's CA"
            );
            let usages: BTreeSet<&str> = issued["spec"]["usages"]
                .as_array()
                .map(|u| u.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            assert!(usages.contains("client auth"), "{id}: it calls others");
            if workload.component() == "service" {
                assert!(usages.contains("server auth"), "{id}: it serves");
            }
            if workload.component() == "gateway" {
                checked_gateway = true;
            }
            checked += 1;
        }
        assert!(checked >= 5, "{overlay}: checked {checked} workloads");
        assert!(
            checked_gateway,
            "{overlay}: the gateway's identity is checked"
        );
    }
}

/// The gRPC services `server` serves: its API, its event feed if it produces events, and its
/// dead letters (the notification service, in Python, serves only its API: its dead letters
/// stay in its store).
fn served(server: &str) -> Vec<&'static str> {
    let api = match server {
        "book" => "bookmesh.book.v1.BookService",
        "member" => "bookmesh.member.v1.MemberService",
        "rental" => "bookmesh.rental.v1.RentalService",
        "bestbook" => "bookmesh.bestbook.v1.BestBookService",
        "notification" => "bookmesh.notification.v1.NotificationService",
        other => panic!("unknown server {other}"),
    };
    if server == "notification" {
        return vec![api];
    }
    let mut services = vec![api, "bookmesh.events.v1.DeadLetterService"];
    if server != "bestbook" {
        services.push("bookmesh.events.v1.EventFeedService");
    }
    services
}

fn methods(service: &str) -> Vec<String> {
    let pool = prost_reflect::DescriptorPool::decode(bookmesh::proto::FILE_DESCRIPTOR_SET)
        .expect("descriptors");
    pool.get_service_by_name(service)
        .unwrap_or_else(|| panic!("{service} is a contract"))
        .methods()
        .map(|m| format!("{service}/{}", m.name()))
        .collect()
}

#[test]
#[ignore = "needs the rendered manifests: make check-k8s"]
fn the_workloads_the_policy_lets_call_are_the_ones_the_network_lets_through() {
    let policy = Policy::parse(
        bookmesh::auth::policy::DEFAULT_POLICY,
        bookmesh::auth::is_known,
    )
    .expect("the repository's policy");
    for overlay in OVERLAYS {
        let objects = cluster(overlay);
        let network = of_kind(&objects, "NetworkPolicy");
        let pods = peers(&objects);
        let callers = grpc_workloads(&objects);
        let mut checked = 0;
        for server in callers.iter().filter(|w| w.component() == "service") {
            let server_name = workload_name(server);
            let port = server.port_named("grpc").expect("a grpc port");
            let server_peer = pods.iter().find(|p| p.id == server.id()).expect("peer");
            let mut network_callers = BTreeSet::new();
            let mut policy_callers = BTreeSet::new();
            for caller in &callers {
                if caller.id() == server.id() {
                    continue;
                }
                let caller_peer = pods.iter().find(|p| p.id == caller.id()).expect("peer");
                if connection_allowed(&network, caller_peer, server_peer, port, "TCP") {
                    network_callers.insert(caller.id());
                }
                let env = container_env(&objects, &caller.containers()[0], "pod-0");
                // With the broker carrying events, nobody subscribes to a feed in the cluster.
                let uses_feeds =
                    env.get("BOOKMESH_EVENT_TRANSPORT").map(String::as_str) != Some("nats");
                let identity = Caller {
                    workload: Some(workload_name(caller)),
                    user: None,
                };
                let own_rights = served(&server_name)
                    .into_iter()
                    .filter(|service| uses_feeds || !service.ends_with("EventFeedService"))
                    .flat_map(methods)
                    .any(|method| {
                        policy.decide(&server_name, &method, &identity) == Decision::Allow
                    });
                let allowed = if caller.component() == "gateway" {
                    // The edge holds no rights of its own: it forwards users' tokens, and a
                    // user may call the server's public API through it.
                    assert!(
                        !own_rights,
                        "{overlay}: the gateway's own identity may call {server_name}: it \
                         must hold no rights beyond its users'"
                    );
                    methods(served(&server_name)[0]).iter().any(|method| {
                        ROLES.iter().any(|role| {
                            let user = Caller {
                                workload: Some(workload_name(caller)),
                                user: Some(Claims {
                                    subject: "0190a4c2-0000-7000-8000-000000000001".into(),
                                    roles: vec![(*role).to_owned()],
                                }),
                            };
                            matches!(
                                policy.decide(&server_name, method, &user),
                                Decision::Allow | Decision::AllowIfField { .. }
                            )
                        })
                    })
                } else {
                    own_rights
                };
                if allowed {
                    policy_callers.insert(caller.id());
                }
            }
            assert_eq!(
                network_callers,
                policy_callers,
                "{overlay}: {}: the network lets through != the policy lets call",
                server.id()
            );
            checked += 1;
        }
        assert_eq!(checked, 5, "{overlay}: five services");
    }
}
