//! Each service binary started exactly as its Deployment starts it, and the gateway too, which
//! must then reach each service through the addresses its ConfigMap names, with mTLS as the
//! `gateway` workload, forwarding a user's token. The notification service is Python, not a
//! binary of the workspace: it runs from the environment `make notification` prepares (and is
//! skipped, saying so, where that environment is missing).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use bookmesh::testing::{Engine, NAMESPACE, TRUST_DOMAIN, TestDatabase, TestPki, connect_tls};
use bookmesh_mesh_tests::{ServiceProcess, http_get, http_request};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::helpers::{
    Workload, binary_of, cluster, container_env, is_python, services, the_gateway, url_hosts,
};

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
#[ignore = "needs the rendered manifests and local PostgreSQL, MariaDB, NATS and Redis: make check-k8s"]
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
    let pki = TestPki::new();
    // The test PKI issues the mesh's workloads; the gateway's and the notification service's
    // certificates are added the same way.
    bookmesh::identity::pki::ensure_local(
        pki.dir(),
        TRUST_DOMAIN,
        NAMESPACE,
        &["gateway", "notification"],
    )
    .expect("the gateway's and the notification service's certificates");
    let probe = pki.credentials("check");
    let librarian = format!(
        "Bearer {}",
        bookmesh::testing::test_token(&pki, "librarian-k8s", &["librarian"], 600)
    );
    // The gateway first: it starts without its upstreams (it connects lazily) and must reach
    // each service once that one serves.
    let gateway_hosts = tempfile_path("gateway-hosts");
    let gateway = start_gateway(&objects, &pki, &gateway_hosts).await;
    for deployment in services(&objects) {
        let container = &deployment.containers()[0];
        let pod_name = format!("{}-7c9f8d6b5-x2x9q", deployment.name);
        if is_python(container) {
            python_service_serves_as_its_deployment_says(
                &objects,
                &deployment,
                &pki,
                &probe,
                &gateway,
                &librarian,
                &pod_name,
            )
            .await;
            continue;
        }
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
        // The identity Secret cert-manager mounts, and the token keys, are a local PKI's files.
        let mounted = |key: &str, file: &str, env: &mut BTreeMap<String, String>| {
            mount(&pki, key, file, env);
        };
        let workload = deployment.spec["serviceAccountName"]
            .as_str()
            .expect("a ServiceAccount")
            .to_owned();
        mounted("BOOKMESH_TLS_CERT", &format!("{workload}.crt"), &mut env);
        mounted("BOOKMESH_TLS_KEY", &format!("{workload}.key"), &mut env);
        mounted("BOOKMESH_TLS_CA", "ca.crt", &mut env);
        mounted("BOOKMESH_TOKEN_KEYS", "jwt.pub", &mut env);
        // The local NATS speaks plaintext and ignores users.
        env.remove("BOOKMESH_NATS_CA");
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
        let workload = deployment.spec["serviceAccountName"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let serving = tokio::time::timeout(Duration::from_secs(60), async {
            loop {
                if tls_health(&url, &probe, &workload, "").await == Some(ServingStatus::Serving) {
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
            tls_health(&url, &probe, &workload, bookmesh::server::LIVENESS_NAME).await,
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
        // A user's call through the gateway, as the console makes it: the gateway's endpoint
        // for this service, its mTLS identity, the token forwarded; the answer is the
        // service's own (not UNAVAILABLE from a gateway that cannot reach it).
        gateway
            .call_through(&deployment.name, &librarian, &process)
            .await;
        // Killed rather than stopped: a graceful stop would sit out the 15 s drain delay.
        process.crash().await;
        let _ = std::fs::remove_dir_all(&data_dir);
    }
    let _ = std::fs::remove_file(&hosts);
    gateway.stop().await;
    let _ = std::fs::remove_file(&gateway_hosts);
}

/// The notification service's Python environment as `make notification` prepares it
/// (services/notification/prepare.sh): the virtual environment's interpreter, and the stubs
/// generated from proto/ (BOOKMESH_NOTIFICATION_GEN, default .tools/notification-gen).
fn notification_environment() -> Option<(PathBuf, PathBuf)> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let python = root.join(".tools/notification-venv/bin/python");
    let generated = std::env::var_os("BOOKMESH_NOTIFICATION_GEN")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(".tools/notification-gen"));
    (python.exists() && generated.join("bookmesh").exists()).then_some((python, generated))
}

/// Deletes the keys under `prefix` from the Redis at `url` (what one run wrote), with the
/// environment's own Redis client.
fn drop_redis_keys(python: &std::path::Path, url: &str, prefix: &str) {
    const SCRIPT: &str = "import redis, sys\n\
        client = redis.Redis.from_url(sys.argv[1])\n\
        keys = list(client.scan_iter(match=sys.argv[2] + '*', count=500))\n\
        if keys:\n    client.delete(*keys)\n";
    let status = std::process::Command::new(python)
        .arg("-c")
        .arg(SCRIPT)
        .arg(url)
        .arg(prefix)
        .status();
    if !status.is_ok_and(|s| s.success()) {
        eprintln!("note: could not delete the test's Redis keys {prefix}* from {url}");
    }
}

/// The notification service (Python) started as its Deployment starts it: the Deployment's
/// command with the interpreter of `make notification`'s environment in place of the image's,
/// and the Deployment's environment plus what the image adds to it (PYTHONPATH,
/// BOOKMESH_AUTHZ_POLICY), pointed at the repository's files. As for the binaries, only what
/// points at cluster infrastructure changes: Redis at the local server (under a key prefix of
/// this run's own), NATS at the local server, the identity and token-key mounts at the test
/// PKI's files, and cluster names at loopback (the service reads no hosts file, so the names
/// in its environment are rewritten). It must answer SERVING over mTLS on its container port,
/// ready on its admin port, and a librarian's call through the gateway.
async fn python_service_serves_as_its_deployment_says(
    objects: &[serde_json::Value],
    deployment: &Workload<'_>,
    pki: &TestPki,
    probe: &std::sync::Arc<bookmesh::identity::Credentials>,
    gateway: &RunningGateway,
    librarian: &str,
    pod_name: &str,
) {
    let Some((python, generated)) = notification_environment() else {
        eprintln!(
            "SKIPPED {}: the notification service's Python environment is not prepared \
             (.tools/notification-venv and its generated stubs; `make notification` makes them)",
            deployment.id()
        );
        return;
    };
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let container = &deployment.containers()[0];
    let mut env = container_env(objects, container, pod_name);

    // What the image adds to the environment (its ENV), here at the repository's files.
    let dockerfile = std::fs::read_to_string(root.join("images/notification.Dockerfile"))
        .expect("images/notification.Dockerfile");
    for key in ["PYTHONPATH", "BOOKMESH_AUTHZ_POLICY"] {
        assert!(
            dockerfile.contains(&format!("{key}=")),
            "images/notification.Dockerfile sets {key}"
        );
    }
    env.insert(
        "PYTHONPATH".into(),
        format!(
            "{}:{}",
            generated.display(),
            root.join("services/notification").display()
        ),
    );
    env.insert(
        "BOOKMESH_AUTHZ_POLICY".into(),
        root.join("policy/authorization.toml").display().to_string(),
    );
    env.insert("PYTHONDONTWRITEBYTECODE".into(), "1".into());
    env.insert("BOOKMESH_LOG_FORMAT".into(), "json".into());

    // Its store: the local Redis, under a key prefix of this run's own.
    assert_eq!(
        env.get("BOOKMESH_NOTIFICATION_STORE").map(String::as_str),
        Some("redis"),
        "{}: the notices are in Redis",
        deployment.id()
    );
    assert!(
        env.contains_key("BOOKMESH_REDIS_URL"),
        "{}: BOOKMESH_REDIS_URL",
        deployment.id()
    );
    let redis_url = std::env::var("BOOKMESH_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into());
    let redis_prefix = format!("bmtest:{}:", uuid::Uuid::now_v7().simple());
    env.insert("BOOKMESH_REDIS_URL".into(), redis_url.clone());
    env.insert("BOOKMESH_REDIS_PREFIX".into(), redis_prefix.clone());
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
    // The local NATS speaks plaintext and ignores users.
    env.remove("BOOKMESH_NATS_CA");
    let data_dir = tempfile_path(&deployment.name);
    std::fs::create_dir_all(&data_dir).expect("data dir");
    env.insert("BOOKMESH_DATA_DIR".into(), data_dir.display().to_string());
    let workload = mount_identity(pki, deployment, &mut env);
    mount(pki, "BOOKMESH_TOKEN_KEYS", "jwt.pub", &mut env);
    let names: BTreeSet<String> = url_hosts(&env)
        .into_iter()
        .filter(|h| h.ends_with(".svc.cluster.local"))
        .collect();
    for value in env.values_mut() {
        for name in &names {
            *value = value.replace(name.as_str(), "127.0.0.1");
        }
    }

    let grpc = deployment.port_named("grpc").expect("grpc port");
    let admin = deployment.port_named("admin").expect("admin port");
    for port in [grpc, admin] {
        if let Err(error) = std::net::TcpListener::bind(("0.0.0.0", port)) {
            panic!("port {port} is taken ({error}): stop whatever listens there (make run?)");
        }
    }
    // The Deployment's command, its interpreter this environment's; `env -i` starts it with
    // nothing but PATH and the environment above, as a container starts.
    let command: Vec<String> = container["command"]
        .as_array()
        .map(|c| {
            c.iter()
                .filter_map(|w| w.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    assert!(
        command.first().is_some_and(|p| p.ends_with("/python")),
        "{}: the command runs Python: {command:?}",
        deployment.id()
    );
    let mut args = vec![
        "-i".to_owned(),
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_owned(),
    ];
    args.extend(env.iter().map(|(key, value)| format!("{key}={value}")));
    args.push(python.display().to_string());
    args.extend(command.iter().skip(1).cloned());
    let process = ServiceProcess::spawn_program(&deployment.name, "env", &args, &[]);

    let url = format!("http://127.0.0.1:{grpc}");
    let serving = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            if tls_health(&url, probe, &workload, "").await == Some(ServingStatus::Serving) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    if serving.is_err() {
        let output = process.lines().join("\n");
        process.crash().await;
        drop_redis_keys(&python, &redis_url, &redis_prefix);
        panic!(
            "{} never became SERVING on port {grpc}; its output:\n{output}",
            deployment.id()
        );
    }
    assert_eq!(
        tls_health(&url, probe, &workload, bookmesh::server::LIVENESS_NAME).await,
        Some(ServingStatus::Serving),
        "{}: liveness",
        deployment.id()
    );
    let admin_address = format!("127.0.0.1:{admin}");
    for path in ["/healthz", "/readyz"] {
        bookmesh::testing::eventually(
            &format!("{}: {path} on the admin port {admin}", deployment.id()),
            Duration::from_secs(10),
            || async { matches!(http_get(&admin_address, path).await, Ok((200, _))).then_some(()) },
        )
        .await;
    }
    // A user's call through the gateway, as the console makes it.
    gateway
        .call_through(&deployment.name, librarian, &process)
        .await;
    process.crash().await;
    drop_redis_keys(&python, &redis_url, &redis_prefix);
    let _ = std::fs::remove_dir_all(&data_dir);
}

/// Replaces a mounted Secret's file in `env` with the test PKI's `file`.
fn mount(pki: &TestPki, key: &str, file: &str, env: &mut BTreeMap<String, String>) {
    let value = env
        .get(key)
        .cloned()
        .unwrap_or_else(|| panic!("{key} is set"));
    assert!(
        value.starts_with("/var/run/bookmesh/"),
        "{key}={value}: read from a mounted Secret"
    );
    env.insert(key.into(), pki.dir().join(file).display().to_string());
}

/// The workload certificate, key and CA of the Deployment's ServiceAccount, from the local PKI
/// where the pod has them mounted; the workload's name.
fn mount_identity(
    pki: &TestPki,
    deployment: &Workload<'_>,
    env: &mut BTreeMap<String, String>,
) -> String {
    let workload = deployment.spec["serviceAccountName"]
        .as_str()
        .expect("a ServiceAccount")
        .to_owned();
    mount(pki, "BOOKMESH_TLS_CERT", &format!("{workload}.crt"), env);
    mount(pki, "BOOKMESH_TLS_KEY", &format!("{workload}.key"), env);
    mount(pki, "BOOKMESH_TLS_CA", "ca.crt", env);
    workload
}

/// gateway-service running as its Deployment starts it.
struct RunningGateway {
    process: ServiceProcess,
    address: String,
    /// What the Deployment gives the kubelet to stop it: the preStop wait happens before
    /// SIGTERM, so the process itself has the rest of the grace period.
    stop_within: Duration,
}

/// Starts gateway-service with exactly its Deployment's environment (ConfigMap resolved), except
/// that its identity files are the test PKI's and the cluster names of its upstreams resolve to
/// loopback; waits for `/healthz` on its container port, as the kubelet's probes ask.
async fn start_gateway(
    objects: &[serde_json::Value],
    pki: &TestPki,
    hosts: &std::path::Path,
) -> RunningGateway {
    let deployment = the_gateway(objects, "kind");
    let container = &deployment.containers()[0];
    let mut env = container_env(objects, container, "gateway-5d8c7b9f4-k2x7p");
    assert!(
        !env.contains_key("BOOKMESH_DEV_SIGN_IN"),
        "the gateway's Deployment turns the development sign-in on"
    );
    mount_identity(pki, &deployment, &mut env);
    let names: BTreeSet<String> = url_hosts(&env)
        .into_iter()
        .filter(|h| h.ends_with(".svc.cluster.local"))
        .collect();
    let hosts_text: String = names.iter().map(|n| format!("127.0.0.1 {n}\n")).collect();
    std::fs::write(hosts, hosts_text).expect("hosts file");
    env.insert("BOOKMESH_HOSTS_FILE".into(), hosts.display().to_string());

    let binary = binary_of(container);
    let http = deployment.port_named("http").expect("http port");
    if let Err(error) = std::net::TcpListener::bind(("0.0.0.0", http)) {
        panic!("port {http} is taken ({error}): stop whatever listens there (make run?)");
    }
    let vars: Vec<(&str, String)> = env.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    let process = ServiceProcess::spawn_with_only("gateway", &binary, &vars);
    let address = format!("127.0.0.1:{http}");
    let healthy = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if matches!(http_get(&address, "/healthz").await, Ok((200, _))) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    if healthy.is_err() {
        panic!(
            "{} never answered /healthz on port {http}; its output:\n{}",
            deployment.id(),
            process.lines().join("\n")
        );
    }
    let grace = deployment.spec["terminationGracePeriodSeconds"]
        .as_u64()
        .unwrap_or(30);
    let wait = container["lifecycle"]["preStop"]["sleep"]["seconds"]
        .as_u64()
        .unwrap_or(0);
    RunningGateway {
        process,
        address,
        stop_within: Duration::from_secs(grace.saturating_sub(wait)),
    }
}

impl RunningGateway {
    /// One call of `service`'s API through the gateway as a librarian, retried until the
    /// service's own answer comes back (the gateway re-resolves and reconnects on its own).
    async fn call_through(&self, service: &str, token: &str, upstream: &ServiceProcess) {
        let (method, body, expected) = match service {
            "book" => ("bookmesh.book.v1.BookService/ListBooks", "{}", 200),
            "member" => ("bookmesh.member.v1.MemberService/ListMembers", "{}", 200),
            // An unknown member's history: the rental service's own NOT_FOUND.
            "rental" => (
                "bookmesh.rental.v1.RentalService/GetRentalHistory",
                r#"{"member_id": "0190a4c2-0000-7000-8000-000000000001"}"#,
                404,
            ),
            "bestbook" => (
                "bookmesh.bestbook.v1.BestBookService/GetBestBooks",
                "{}",
                200,
            ),
            // An unknown member's notices: an empty page (their first may not have arrived).
            "notification" => (
                "bookmesh.notification.v1.NotificationService/ListNotices",
                r#"{"member_id": "0190a4c2-0000-7000-8000-000000000001"}"#,
                200,
            ),
            other => panic!("no call through the gateway for {other}"),
        };
        let path = format!("/{method}");
        let headers = [
            ("content-type", "application/json"),
            ("authorization", token),
        ];
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let mut last = None;
        while tokio::time::Instant::now() < deadline {
            let answer = http_request(&self.address, "POST", &path, &headers, body).await;
            if let Ok((status, _)) = &answer
                && *status == expected
            {
                return;
            }
            last = Some(answer);
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        panic!(
            "the gateway never got {service}'s answer to {method} (expected HTTP {expected}); \
             last: {last:?}\ngateway output:\n{}\n{service} output:\n{}",
            self.process.lines().join("\n"),
            upstream.lines().join("\n")
        );
    }

    /// SIGTERM, as the kubelet sends after the preStop wait: a clean exit within the rest of
    /// the grace period.
    async fn stop(mut self) {
        let within = self.stop_within;
        let (status, _) = self.process.stop_and_time(within).await;
        assert!(
            status.success(),
            "the gateway exited with {status}; its output:\n{}",
            self.process.lines().join("\n")
        );
    }
}

/// The health status `service` reports, asked over mTLS as the `check` workload.
async fn tls_health(
    url: &str,
    probe: &std::sync::Arc<bookmesh::identity::Credentials>,
    workload: &str,
    service: &str,
) -> Option<ServingStatus> {
    let channel = connect_tls(url, probe, workload).await.ok()?;
    let status = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .ok()?
        .into_inner()
        .status;
    ServingStatus::try_from(status).ok()
}

fn tempfile_path(what: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "bookmesh-k8s-{what}-{}",
        uuid::Uuid::now_v7().simple()
    ))
}
