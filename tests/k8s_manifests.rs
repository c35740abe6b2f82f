//! The Kubernetes manifests, checked where no cluster runs: the invariants a schema cannot see
//! (autoscaling, selectors and ports, probes, images, network reachability, configuration the
//! binaries really accept), and each binary started exactly as its Deployment starts it.
//!
//! `make check-k8s` renders every kustomization to JSON (`BOOKMESH_K8S_RENDERED`), lists the
//! images `make images` builds (`BOOKMESH_IMAGES`), then runs these with `--ignored`; the
//! entrypoint test needs the local PostgreSQL, MariaDB and NATS.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use bookmesh::testing::{Engine, TestDatabase, service_health_status};
use bookmesh_mesh_tests::{ServiceProcess, http_get};
use serde_json::Value;
use tonic_health::pb::health_check_response::ServingStatus;

const NAMESPACE: &str = "bookmesh";
const OVERLAYS: [&str; 2] = ["kind", "production"];

// ---------------------------------------------------------------------------------------------
// Reading the rendered manifests

fn rendered(name: &str) -> Vec<Value> {
    let dir = std::env::var_os("BOOKMESH_K8S_RENDERED")
        .map(PathBuf::from)
        .expect("BOOKMESH_K8S_RENDERED is not set: run `make check-k8s`");
    let path = dir.join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    match serde_json::from_str(&text) {
        Ok(Value::Array(objects)) => objects,
        other => panic!("{}: expected a JSON array, got {other:?}", path.display()),
    }
}

/// An overlay as a cluster would hold it, with the hpa-demo Job applied next to the kind one.
fn cluster(overlay: &str) -> Vec<Value> {
    let mut objects = rendered(overlay);
    if overlay == "kind" {
        objects.extend(rendered("hpa-demo"));
    }
    objects
}

fn kind(object: &Value) -> &str {
    object["kind"].as_str().unwrap_or_default()
}

fn name(object: &Value) -> &str {
    object["metadata"]["name"].as_str().unwrap_or_default()
}

fn str_map(value: &Value) -> BTreeMap<String, String> {
    value
        .as_object()
        .map(|map| {
            map.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

fn of_kind<'a>(objects: &'a [Value], wanted: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| kind(o) == wanted).collect()
}

fn find<'a>(objects: &'a [Value], wanted_kind: &str, wanted_name: &str) -> Option<&'a Value> {
    objects
        .iter()
        .find(|o| kind(o) == wanted_kind && name(o) == wanted_name)
}

/// A pod template of a Deployment, StatefulSet or Job: what actually runs.
struct Workload<'a> {
    kind: String,
    name: String,
    object: &'a Value,
    labels: BTreeMap<String, String>,
    spec: &'a Value,
}

impl Workload<'_> {
    fn id(&self) -> String {
        format!("{}/{}", self.kind, self.name)
    }

    fn component(&self) -> &str {
        self.labels
            .get("app.kubernetes.io/component")
            .map(String::as_str)
            .unwrap_or_default()
    }

    fn containers(&self) -> &[Value] {
        self.spec["containers"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// Every container port: (name, number, protocol).
    fn ports(&self) -> Vec<(String, u16, String)> {
        self.containers()
            .iter()
            .flat_map(|c| c["ports"].as_array().cloned().unwrap_or_default())
            .map(|p| {
                (
                    p["name"].as_str().unwrap_or_default().to_owned(),
                    port_number(&p["containerPort"]),
                    p["protocol"].as_str().unwrap_or("TCP").to_owned(),
                )
            })
            .collect()
    }

    fn port_named(&self, wanted: &str) -> Option<u16> {
        self.ports()
            .into_iter()
            .find(|(name, _, _)| name == wanted)
            .map(|(_, number, _)| number)
    }
}

fn port_number(value: &Value) -> u16 {
    value
        .as_u64()
        .and_then(|n| u16::try_from(n).ok())
        .unwrap_or_else(|| panic!("not a port number: {value}"))
}

fn workloads(objects: &[Value]) -> Vec<Workload<'_>> {
    objects
        .iter()
        .filter(|o| matches!(kind(o), "Deployment" | "StatefulSet" | "Job"))
        .map(|o| {
            let template = &o["spec"]["template"];
            Workload {
                kind: kind(o).to_owned(),
                name: name(o).to_owned(),
                object: o,
                labels: str_map(&template["metadata"]["labels"]),
                spec: &template["spec"],
            }
        })
        .collect()
}

fn services(objects: &[Value]) -> Vec<Workload<'_>> {
    workloads(objects)
        .into_iter()
        .filter(|w| w.kind == "Deployment" && w.component() == "service")
        .collect()
}

/// The environment a container starts with, as the kubelet would compute it: `envFrom`
/// ConfigMaps first, then `env` (ConfigMap and Secret keys resolved, `$(VAR)` expanded, pod
/// fields filled in). A Secret the overlay does not render (production) reads as
/// `<secret name/key>`.
fn container_env(objects: &[Value], container: &Value, pod_name: &str) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for source in container["envFrom"].as_array().cloned().unwrap_or_default() {
        let map_name = source["configMapRef"]["name"]
            .as_str()
            .expect("only configMapRef is used in envFrom");
        let map = find(objects, "ConfigMap", map_name)
            .unwrap_or_else(|| panic!("envFrom names a missing ConfigMap {map_name}"));
        env.extend(str_map(&map["data"]));
    }
    for variable in container["env"].as_array().cloned().unwrap_or_default() {
        let key = variable["name"].as_str().expect("env name").to_owned();
        let value = if let Some(value) = variable["value"].as_str() {
            expand(value, &env)
        } else if let Some(from) = variable["valueFrom"]["configMapKeyRef"].as_object() {
            let map = find(
                objects,
                "ConfigMap",
                from["name"].as_str().unwrap_or_default(),
            )
            .unwrap_or_else(|| panic!("{key}: missing ConfigMap {:?}", from["name"]));
            map["data"][from["key"].as_str().unwrap_or_default()]
                .as_str()
                .unwrap_or_else(|| panic!("{key}: missing key {:?}", from["key"]))
                .to_owned()
        } else if let Some(from) = variable["valueFrom"]["secretKeyRef"].as_object() {
            let secret_name = from["name"].as_str().unwrap_or_default();
            let secret_key = from["key"].as_str().unwrap_or_default();
            match find(objects, "Secret", secret_name) {
                Some(secret) => {
                    let encoded = secret["data"][secret_key].as_str().unwrap_or_else(|| {
                        panic!("{key}: Secret {secret_name} has no {secret_key}")
                    });
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(encoded.split_whitespace().collect::<String>())
                        .expect("Secret data is base64");
                    String::from_utf8(bytes).expect("Secret value is UTF-8")
                }
                None => format!("<{secret_name}/{secret_key}>"),
            }
        } else if let Some(path) = variable["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
            match path {
                "metadata.name" => pod_name.to_owned(),
                "metadata.namespace" => NAMESPACE.to_owned(),
                other => panic!("{key}: fieldRef {other} is not simulated"),
            }
        } else {
            panic!("{key}: unsupported env source {variable}");
        };
        env.insert(key, value);
    }
    env
}

/// Kubernetes' `$(VAR)` expansion in env values.
fn expand(value: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = value.to_owned();
    for (key, replacement) in env {
        out = out.replace(&format!("$({key})"), replacement);
    }
    out
}

/// The hosts named by URLs in an environment (`scheme://[user@]host[:port]/...`).
fn url_hosts(env: &BTreeMap<String, String>) -> BTreeSet<String> {
    env.values()
        .flat_map(|value| value.split(','))
        .filter_map(|url| url.split_once("://").map(|(_, rest)| rest))
        .map(|rest| {
            let authority = rest.split('/').next().unwrap_or_default();
            let host_port = authority.rsplit('@').next().unwrap_or_default();
            host_port.split(':').next().unwrap_or_default().to_owned()
        })
        .collect()
}

/// A selector (`matchLabels` and `matchExpressions`) against a set of labels.
fn selector_matches(selector: &Value, labels: &BTreeMap<String, String>) -> bool {
    let labels_ok = str_map(&selector["matchLabels"])
        .iter()
        .all(|(k, v)| labels.get(k) == Some(v));
    let expressions_ok = selector["matchExpressions"]
        .as_array()
        .map(|expressions| {
            expressions.iter().all(|e| {
                let key = e["key"].as_str().unwrap_or_default();
                let values: Vec<&str> = e["values"]
                    .as_array()
                    .map(|v| v.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                let value = labels.get(key).map(String::as_str);
                match e["operator"].as_str().unwrap_or_default() {
                    "In" => value.is_some_and(|v| values.contains(&v)),
                    "NotIn" => !value.is_some_and(|v| values.contains(&v)),
                    "Exists" => value.is_some(),
                    "DoesNotExist" => value.is_none(),
                    other => panic!("unknown selector operator {other}"),
                }
            })
        })
        .unwrap_or(true);
    labels_ok && expressions_ok
}

fn service_selects(service: &Value, workload: &Workload<'_>) -> bool {
    let selector = str_map(&service["spec"]["selector"]);
    !selector.is_empty()
        && selector
            .iter()
            .all(|(k, v)| workload.labels.get(k) == Some(v))
}

fn config_duration(env: &BTreeMap<String, String>, key: &str) -> Duration {
    let value = env.get(key).unwrap_or_else(|| panic!("{key} is not set"));
    bookmesh::config::parse_duration(value).unwrap_or_else(|e| panic!("{key}={value}: {e}"))
}

fn socket_port(env: &BTreeMap<String, String>, key: &str) -> u16 {
    let value = env.get(key).unwrap_or_else(|| panic!("{key} is not set"));
    value
        .parse::<std::net::SocketAddr>()
        .unwrap_or_else(|e| panic!("{key}={value}: {e}"))
        .port()
}

/// The images `make images` builds, each with the binary it runs (`make -s image-list`).
fn built_images() -> BTreeMap<String, String> {
    let list =
        std::env::var("BOOKMESH_IMAGES").expect("BOOKMESH_IMAGES is not set: run `make check-k8s`");
    list.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let (image, binary) = line.split_once('=').expect("image=binary");
            (image.trim().to_owned(), binary.trim().to_owned())
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Autoscaling, disruption budgets, ports, probes, draining

#[test]
#[ignore = "needs the rendered manifests: make check-k8s"]
fn every_service_scales_on_cpu_between_two_and_more_replicas() {
    for overlay in OVERLAYS {
        let objects = cluster(overlay);
        let deployments = services(&objects);
        assert_eq!(deployments.len(), 4, "{overlay}: four service Deployments");
        for deployment in &deployments {
            let id = format!("{overlay}: {}", deployment.id());
            assert!(
                deployment.object["spec"].get("replicas").is_none(),
                "{id} sets replicas, which would fight its autoscaler on every apply"
            );
            for container in deployment.containers() {
                assert!(
                    container["resources"]["requests"]["cpu"].is_string(),
                    "{id}: the HPA's CPU target needs CPU requests"
                );
                assert!(
                    container["resources"]["limits"]["memory"].is_string(),
                    "{id}: memory limit"
                );
            }
            let hpas: Vec<&Value> = of_kind(&objects, "HorizontalPodAutoscaler")
                .into_iter()
                .filter(|h| {
                    let target = &h["spec"]["scaleTargetRef"];
                    target["kind"] == "Deployment"
                        && target["name"] == deployment.name.as_str()
                        && target["apiVersion"] == "apps/v1"
                })
                .collect();
            assert_eq!(hpas.len(), 1, "{id}: exactly one HPA targets it");
            let hpa = hpas[0];
            assert_eq!(hpa["apiVersion"], "autoscaling/v2", "{id}");
            let min = hpa["spec"]["minReplicas"].as_u64().unwrap_or(1);
            let max = hpa["spec"]["maxReplicas"].as_u64().unwrap_or(0);
            assert!(min >= 2 && max > min, "{id}: replicas {min}..{max}");
            let metrics = hpa["spec"]["metrics"].as_array().expect("metrics");
            assert!(
                metrics.iter().any(|m| m["type"] == "Resource"
                    && m["resource"]["name"] == "cpu"
                    && m["resource"]["target"]["type"] == "Utilization"
                    && m["resource"]["target"]["averageUtilization"].is_u64()),
                "{id}: a CPU utilization target"
            );
            for direction in ["scaleUp", "scaleDown"] {
                let behavior = &hpa["spec"]["behavior"][direction];
                assert!(
                    behavior["policies"]
                        .as_array()
                        .is_some_and(|p| !p.is_empty())
                        && behavior["stabilizationWindowSeconds"].is_u64(),
                    "{id}: explicit {direction} behaviour"
                );
            }
            let budgets: Vec<&Value> = of_kind(&objects, "PodDisruptionBudget")
                .into_iter()
                .filter(|pdb| selector_matches(&pdb["spec"]["selector"], &deployment.labels))
                .collect();
            assert_eq!(budgets.len(), 1, "{id}: one PodDisruptionBudget");
            let budget = &budgets[0]["spec"];
            let allows_disruption = budget["maxUnavailable"].as_u64().is_some_and(|n| n >= 1)
                || budget["minAvailable"].as_u64().is_some_and(|n| n < min);
            assert!(
                allows_disruption,
                "{id}: the budget must let a drain proceed at min replicas"
            );
        }
    }
}

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

// ---------------------------------------------------------------------------------------------
// Images, pod security

#[test]
#[ignore = "needs the rendered manifests: make check-k8s"]
fn bookmesh_containers_run_the_images_make_images_builds() {
    let images = built_images();
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
            assert_eq!(
                command,
                format!("/usr/local/bin/{binary}"),
                "{}: the command is the image's binary",
                workload.id()
            );
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
            if workload.component() == "service" {
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
    let wanted: BTreeSet<String> = built_images().into_values().collect();
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
    for needed in ["Cargo.toml", "Cargo.lock", "build.rs", "proto", "src"] {
        assert!(
            kept.contains(needed),
            "the build context leaves out {needed}"
        );
    }
}

#[test]
#[ignore = "needs the rendered manifests: make check-k8s"]
fn every_pod_meets_the_restricted_pod_security_standard() {
    for overlay in OVERLAYS {
        let objects = cluster(overlay);
        let namespace = find(&objects, "Namespace", NAMESPACE).expect("the namespace");
        assert_eq!(
            namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"], "restricted",
            "{overlay}: PSA enforces restricted"
        );
        for object in &objects {
            if kind(object) != "Namespace" {
                let ns = object["metadata"]["namespace"].as_str();
                assert_eq!(
                    ns,
                    Some(NAMESPACE),
                    "{overlay}: {}/{}",
                    kind(object),
                    name(object)
                );
            }
        }
        for workload in workloads(&objects) {
            let id = format!("{overlay}: {}", workload.id());
            let pod = &workload.spec["securityContext"];
            assert_eq!(pod["runAsNonRoot"], true, "{id}: runAsNonRoot");
            assert!(
                pod["runAsUser"].as_u64().is_some_and(|uid| uid > 0),
                "{id}: a non-zero runAsUser"
            );
            assert_eq!(pod["seccompProfile"]["type"], "RuntimeDefault", "{id}");
            assert!(
                workload.spec["hostNetwork"].is_null() && workload.spec["hostPID"].is_null(),
                "{id}: no host namespaces"
            );
            // The volume types the restricted profile allows.
            let allowed = [
                "name",
                "configMap",
                "emptyDir",
                "persistentVolumeClaim",
                "secret",
                "projected",
                "downwardAPI",
                "csi",
                "ephemeral",
            ];
            for volume in workload.spec["volumes"]
                .as_array()
                .cloned()
                .unwrap_or_default()
            {
                for key in volume.as_object().map(|v| v.keys()).into_iter().flatten() {
                    assert!(allowed.contains(&key.as_str()), "{id}: a {key} volume");
                }
            }
            for container in workload.containers() {
                let security = &container["securityContext"];
                assert_eq!(security["allowPrivilegeEscalation"], false, "{id}");
                assert_eq!(security["readOnlyRootFilesystem"], true, "{id}");
                assert_eq!(
                    security["capabilities"]["drop"],
                    serde_json::json!(["ALL"]),
                    "{id}"
                );
                assert!(
                    security["capabilities"]["add"].is_null(),
                    "{id}: no capability added"
                );
                assert!(security["privileged"] != true, "{id}: not privileged");
                assert!(
                    security["runAsUser"] != 0 && security["runAsNonRoot"] != false,
                    "{id}: a container must not switch back to root"
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Network policies

/// A pod as network policies see it.
#[derive(Clone)]
struct Peer {
    id: String,
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

fn peers(objects: &[Value]) -> Vec<Peer> {
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
fn connection_allowed(
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
/// selects `target` (a URL host) with that port, plus those sharing a database's credentials
/// Secret (the service the database was created for).
fn expected_callers(objects: &[Value], target: &Workload<'_>, port: u16) -> BTreeSet<String> {
    let all = workloads(objects);
    let serving_names: BTreeSet<String> = of_kind(objects, "Service")
        .into_iter()
        .filter(|s| service_selects(s, target))
        .filter(|s| {
            s["spec"]["ports"].as_array().is_some_and(|ports| {
                ports.iter().any(|p| match &p["targetPort"] {
                    Value::String(n) => target.port_named(n) == Some(port),
                    Value::Number(_) => port_number(&p["targetPort"]) == port,
                    _ => port_number(&p["port"]) == port,
                })
            })
        })
        .map(|s| name(s).to_owned())
        .collect();
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
    let target_secrets = if target.component() == "database" {
        secrets_of(target)
    } else {
        BTreeSet::new()
    };
    all.iter()
        .filter(|w| w.id() != target.id())
        .filter(|w| {
            let names_it = w.containers().iter().any(|c| {
                let env = container_env(objects, c, "pod-0");
                url_hosts(&env).iter().any(|host| {
                    let short = host.split('.').next().unwrap_or_default();
                    serving_names.contains(short)
                })
            });
            names_it || !secrets_of(w).is_disjoint(&target_secrets)
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
            if !matches!(target.component(), "service" | "database" | "event-broker") {
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
                if port_name != "admin" {
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
            checked_databases, 3,
            "{overlay}: book, member and rental databases"
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

// ---------------------------------------------------------------------------------------------
// Configuration the binaries accept, and the binaries run as the Deployments run them

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

fn binary_of(container: &Value) -> String {
    container["command"][0]
        .as_str()
        .and_then(|c| c.rsplit('/').next())
        .expect("an explicit command")
        .to_owned()
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

/// Rewrites a cluster URL to the local server of the same kind, as the entrypoint test runs
/// where the cluster's databases and broker do not exist.
async fn local_database(url: &str) -> TestDatabase {
    if url.starts_with("postgres://") {
        TestDatabase::fresh_on(Engine::Postgres).await
    } else if url.starts_with("mysql://") {
        TestDatabase::fresh_on(Engine::MySql).await
    } else {
        panic!("unexpected database URL {url}")
    }
}

#[tokio::test]
#[ignore = "needs the rendered manifests and local PostgreSQL, MariaDB and NATS: make check-k8s"]
async fn each_service_binary_serves_when_started_as_its_deployment_says() {
    let objects = cluster("kind");
    let dockerfile = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../images/Dockerfile"),
    )
    .expect("images/Dockerfile");
    // What the image adds to the environment (images/Dockerfile's ENV), checked below.
    let image_env = [
        ("BOOKMESH_DATA_DIR", "/var/lib/bookmesh"),
        ("BOOKMESH_LOG_FORMAT", "json"),
    ];
    for (key, value) in image_env {
        assert!(
            dockerfile.contains(&format!("{key}={value}")),
            "images/Dockerfile sets {key}={value}"
        );
    }
    let hosts = tempfile_path("hosts");
    for deployment in services(&objects) {
        let container = &deployment.containers()[0];
        let pod_name = format!("{}-7c9f8d6b5-x2x9q", deployment.name);
        let mut env = container_env(&objects, container, &pod_name);
        let data_mount = container["volumeMounts"]
            .as_array()
            .and_then(|mounts| mounts.iter().find(|m| m["name"] == "data"))
            .and_then(|m| m["mountPath"].as_str())
            .expect("a data volume");
        assert_eq!(
            data_mount,
            "/var/lib/bookmesh",
            "{}: data volume",
            deployment.id()
        );

        // Only what points at cluster infrastructure changes: the database at a fresh one on
        // the local server, NATS at the local server (with a prefix of its own), the data
        // volume at a temporary folder, cluster names at loopback.
        let _database = match env.get("BOOKMESH_DATABASE_URL").cloned() {
            Some(url) => {
                let database = local_database(&url).await;
                env.insert("BOOKMESH_DATABASE_URL".into(), database.url.clone());
                Some(database)
            }
            None => None,
        };
        if env.contains_key("BOOKMESH_NATS_URL") {
            env.insert(
                "BOOKMESH_NATS_URL".into(),
                std::env::var("BOOKMESH_TEST_NATS_URL")
                    .unwrap_or_else(|_| "nats://127.0.0.1:4222".into()),
            );
            env.insert(
                "BOOKMESH_NATS_PREFIX".into(),
                // "t" + a UUIDv7: the shape drop-test-streams cleans up.
                format!("t{}", uuid::Uuid::now_v7().simple()),
            );
        }
        let data_dir = tempfile_path(&deployment.name);
        std::fs::create_dir_all(&data_dir).expect("data dir");
        env.insert("BOOKMESH_DATA_DIR".into(), data_dir.display().to_string());
        env.insert("BOOKMESH_LOG_FORMAT".into(), "json".into());
        let names: BTreeSet<String> = url_hosts(&env)
            .into_iter()
            .filter(|h| h.ends_with(".svc.cluster.local"))
            .collect();
        let hosts_text: String = names.iter().map(|n| format!("127.0.0.1 {n}\n")).collect();
        std::fs::write(&hosts, hosts_text).expect("hosts file");
        env.insert("BOOKMESH_HOSTS_FILE".into(), hosts.display().to_string());

        let binary = binary_of(container);
        let grpc = deployment.port_named("grpc").expect("grpc port");
        let admin = deployment.port_named("admin").expect("admin port");
        // The answers below must come from this process, not from something already there
        // (a `make run` mesh uses the same ports).
        for port in [grpc, admin] {
            if let Err(error) = std::net::TcpListener::bind(("0.0.0.0", port)) {
                panic!("port {port} is taken ({error}): stop whatever listens there (make run?)");
            }
        }
        let vars: Vec<(&str, String)> = env.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        let process = ServiceProcess::spawn_with_only(&deployment.name, &binary, &vars);
        let url = format!("http://127.0.0.1:{grpc}");
        let serving = tokio::time::timeout(Duration::from_secs(60), async {
            loop {
                if service_health_status(&url, "").await == Some(ServingStatus::Serving) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await;
        if serving.is_err() {
            panic!(
                "{} never became SERVING on port {grpc}; its output:\n{}",
                deployment.id(),
                process.lines().join("\n")
            );
        }
        assert_eq!(
            service_health_status(&url, bookmesh::server::LIVENESS_NAME).await,
            Some(ServingStatus::Serving),
            "{}: liveness",
            deployment.id()
        );
        let admin_address = format!("127.0.0.1:{admin}");
        bookmesh::testing::eventually(
            &format!("{}: /readyz on the admin port {admin}", deployment.id()),
            Duration::from_secs(10),
            || async {
                matches!(http_get(&admin_address, "/readyz").await, Ok((200, _))).then_some(())
            },
        )
        .await;
        // Killed rather than stopped: a graceful stop would sit out the 15 s drain delay.
        process.crash().await;
        let _ = std::fs::remove_dir_all(&data_dir);
    }
    let _ = std::fs::remove_file(&hosts);
}

fn tempfile_path(what: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "bookmesh-k8s-{what}-{}",
        uuid::Uuid::now_v7().simple()
    ))
}
