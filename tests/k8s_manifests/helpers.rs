//! Reading the rendered manifests: objects, workloads, their environment and selectors.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use serde_json::Value;

pub const NAMESPACE: &str = "bookmesh";
pub const OVERLAYS: [&str; 2] = ["kind", "production"];

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

/// k8s/kind/cluster.yaml, the kind cluster `make kind-up` creates (one object).
pub fn kind_cluster() -> Value {
    let mut objects = rendered("kind-cluster");
    assert_eq!(objects.len(), 1, "k8s/kind/cluster.yaml is one object");
    objects.remove(0)
}

/// An overlay as a cluster would hold it, with the hpa-demo Job applied next to the kind one.
pub fn cluster(overlay: &str) -> Vec<Value> {
    let mut objects = rendered(overlay);
    if overlay == "kind" {
        objects.extend(rendered("hpa-demo"));
    }
    objects
}

pub fn kind(object: &Value) -> &str {
    object["kind"].as_str().unwrap_or_default()
}

pub fn name(object: &Value) -> &str {
    object["metadata"]["name"].as_str().unwrap_or_default()
}

pub fn str_map(value: &Value) -> BTreeMap<String, String> {
    value
        .as_object()
        .map(|map| {
            map.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

pub fn of_kind<'a>(objects: &'a [Value], wanted: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| kind(o) == wanted).collect()
}

pub fn find<'a>(objects: &'a [Value], wanted_kind: &str, wanted_name: &str) -> Option<&'a Value> {
    objects
        .iter()
        .find(|o| kind(o) == wanted_kind && name(o) == wanted_name)
}

/// A pod template of a Deployment, StatefulSet or Job: what actually runs.
pub struct Workload<'a> {
    pub kind: String,
    pub name: String,
    pub object: &'a Value,
    pub labels: BTreeMap<String, String>,
    pub spec: &'a Value,
}

impl Workload<'_> {
    pub fn id(&self) -> String {
        format!("{}/{}", self.kind, self.name)
    }

    pub fn component(&self) -> &str {
        self.labels
            .get("app.kubernetes.io/component")
            .map(String::as_str)
            .unwrap_or_default()
    }

    pub fn containers(&self) -> &[Value] {
        self.spec["containers"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// Every container port: (name, number, protocol).
    pub fn ports(&self) -> Vec<(String, u16, String)> {
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

    pub fn port_named(&self, wanted: &str) -> Option<u16> {
        self.ports()
            .into_iter()
            .find(|(name, _, _)| name == wanted)
            .map(|(_, number, _)| number)
    }
}

pub fn port_number(value: &Value) -> u16 {
    value
        .as_u64()
        .and_then(|n| u16::try_from(n).ok())
        .unwrap_or_else(|| panic!("not a port number: {value}"))
}

pub fn workloads(objects: &[Value]) -> Vec<Workload<'_>> {
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

pub fn services(objects: &[Value]) -> Vec<Workload<'_>> {
    workloads(objects)
        .into_iter()
        .filter(|w| w.kind == "Deployment" && w.component() == "service")
        .collect()
}

/// The gateway's Deployments (component `gateway`): the edge, HTTP for browsers, a gRPC client
/// of every service; no gRPC port, no admin port, no database.
pub fn gateways(objects: &[Value]) -> Vec<Workload<'_>> {
    workloads(objects)
        .into_iter()
        .filter(|w| w.kind == "Deployment" && w.component() == "gateway")
        .collect()
}

/// The one gateway Deployment of a render.
pub fn the_gateway<'a>(objects: &'a [Value], overlay: &str) -> Workload<'a> {
    let mut found = gateways(objects);
    assert_eq!(found.len(), 1, "{overlay}: one gateway Deployment");
    found.remove(0)
}

/// The environment a container starts with, as the kubelet would compute it: `envFrom`
/// ConfigMaps first, then `env` (ConfigMap and Secret keys resolved, `$(VAR)` expanded, pod
/// fields filled in). A Secret the overlay does not render (production) reads as
/// `<secret name/key>`.
pub fn container_env(
    objects: &[Value],
    container: &Value,
    pod_name: &str,
) -> BTreeMap<String, String> {
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
pub fn url_hosts(env: &BTreeMap<String, String>) -> BTreeSet<String> {
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

/// The addresses an environment names: `(host, port)` of every URL
/// (`scheme://[user@]host[:port]/...`, comma-separated lists too) and of every
/// `name=host:port` entry (the gateway's `BOOKMESH_ADMIN_TARGETS`). The port is `None` where
/// a URL gives none.
pub fn named_addresses(env: &BTreeMap<String, String>) -> BTreeSet<(String, Option<u16>)> {
    let mut addresses = BTreeSet::new();
    for item in env.values().flat_map(|value| value.split(',')) {
        let item = item.trim();
        let authority = if let Some((_, rest)) = item.split_once("://") {
            let authority = rest.split('/').next().unwrap_or_default();
            authority.rsplit('@').next().unwrap_or_default()
        } else if let Some((name, address)) = item.split_once('=')
            && !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && address.contains(':')
        {
            address
        } else {
            continue;
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) => (host, port.parse::<u16>().ok()),
            None => (authority, None),
        };
        if !host.is_empty() {
            addresses.insert((host.to_owned(), port));
        }
    }
    addresses
}

/// A selector (`matchLabels` and `matchExpressions`) against a set of labels.
pub fn selector_matches(selector: &Value, labels: &BTreeMap<String, String>) -> bool {
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

pub fn service_selects(service: &Value, workload: &Workload<'_>) -> bool {
    let selector = str_map(&service["spec"]["selector"]);
    !selector.is_empty()
        && selector
            .iter()
            .all(|(k, v)| workload.labels.get(k) == Some(v))
}

pub fn config_duration(env: &BTreeMap<String, String>, key: &str) -> Duration {
    let value = env.get(key).unwrap_or_else(|| panic!("{key} is not set"));
    bookmesh::config::parse_duration(value).unwrap_or_else(|e| panic!("{key}={value}: {e}"))
}

pub fn socket_port(env: &BTreeMap<String, String>, key: &str) -> u16 {
    let value = env.get(key).unwrap_or_else(|| panic!("{key} is not set"));
    value
        .parse::<std::net::SocketAddr>()
        .unwrap_or_else(|e| panic!("{key}={value}: {e}"))
        .port()
}

/// The Dockerfile that builds an image unless `make image-list` names another.
pub const RUST_DOCKERFILE: &str = "images/Dockerfile";

/// The images `make images` builds (`make -s image-list`, lines `image=binary` or
/// `image=binary:Dockerfile`): each with the binary it runs and the Dockerfile that builds it.
fn image_list() -> Vec<(String, String, String)> {
    let list =
        std::env::var("BOOKMESH_IMAGES").expect("BOOKMESH_IMAGES is not set: run `make check-k8s`");
    list.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let (image, rest) = line.split_once('=').expect("image=binary");
            let (binary, dockerfile) = rest.split_once(':').unwrap_or((rest, RUST_DOCKERFILE));
            (
                image.trim().to_owned(),
                binary.trim().to_owned(),
                dockerfile.trim().to_owned(),
            )
        })
        .collect()
}

/// The images `make images` builds, each with the binary it runs (`make -s image-list`).
pub fn built_images() -> BTreeMap<String, String> {
    image_list()
        .into_iter()
        .map(|(image, binary, _)| (image, binary))
        .collect()
}

/// The images `make images` builds, each with the Dockerfile that builds it (a path from the
/// repository's root).
pub fn image_dockerfiles() -> BTreeMap<String, String> {
    image_list()
        .into_iter()
        .map(|(image, _, dockerfile)| (image, dockerfile))
        .collect()
}

pub fn binary_of(container: &Value) -> String {
    container["command"][0]
        .as_str()
        .and_then(|c| c.rsplit('/').next())
        .expect("an explicit command")
        .to_owned()
}

/// Whether a container runs a Python program (the notification service) rather than one of
/// the workspace's Rust binaries: its checks read the package instead of a binary's `--help`,
/// and its entrypoint runs under the environment `make notification` prepares.
pub fn is_python(container: &Value) -> bool {
    binary_of(container).starts_with("python")
}

/// The notification service's package (services/notification/bookmesh_notification).
pub fn notification_package() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../services/notification/bookmesh_notification")
}

/// The environment variables the notification service reads: the names in config.py's
/// `_VARIABLES` table (`"field": ("BOOKMESH_…", parser)`), which `Config.from_env` goes
/// through; the Python counterpart of a Rust binary's `[env: …]` in `--help`.
pub fn python_service_env() -> BTreeSet<String> {
    let path = notification_package().join("config.py");
    let config = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let table = config
        .split("_VARIABLES = {")
        .nth(1)
        .and_then(|rest| rest.split("\n}").next())
        .unwrap_or_else(|| panic!("{}: no `_VARIABLES = {{ ... }}` table", path.display()));
    table
        .split("(\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .filter(|name| name.starts_with("BOOKMESH_"))
        .map(str::to_owned)
        .collect()
}

/// Every Python source of the notification service's package, concatenated (to look for the
/// names it reads from the environment besides config.py's, such as the OpenTelemetry
/// SDK's `OTEL_*`).
pub fn python_service_sources() -> String {
    fn walk(dir: &std::path::Path, out: &mut String) {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        for path in entries {
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "py") {
                out.push_str(&std::fs::read_to_string(&path).unwrap_or_default());
                out.push('\n');
            }
        }
    }
    let mut sources = String::new();
    walk(&notification_package(), &mut sources);
    sources
}
