//! Each service binary started exactly as its Deployment starts it.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use bookmesh::testing::{Engine, TestDatabase, service_health_status};
use bookmesh_mesh_tests::{ServiceProcess, http_get};
use tonic_health::pb::health_check_response::ServingStatus;

use crate::helpers::{binary_of, cluster, container_env, services, url_hosts};

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
        // The manifests do not mount certificates yet.
        env.insert("BOOKMESH_INSECURE_PLAINTEXT".into(), "true".into());
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
