//! The NATS server of the kind overlay, started locally for `nats_permissions`.

use std::time::Duration;

use bookmesh::events::nats::NatsSettings;
use bookmesh::identity::SpiffeId;
use bookmesh::testing::{NAMESPACE, TRUST_DOMAIN, TestPki, eventually};
use bookmesh_mesh_tests::ServiceProcess;

use crate::helpers::{cluster, container_env, kind, workloads};

/// The NATS server of the kind overlay, started locally: its nats.conf as rendered, the
/// certificate paths pointed at a local PKI's, its users' passwords from the rendered Secret.
pub(crate) struct Broker {
    pub(crate) url: String,
    /// The rendered nats.conf, as the server runs it.
    pub(crate) config: String,
    pub(crate) ca: std::path::PathBuf,
    pub(crate) passwords: std::collections::BTreeMap<String, String>,
    _process: ServiceProcess,
    _dir: tempfile::TempDir,
}

impl Broker {
    pub(crate) async fn start() -> Self {
        let objects = cluster("kind");
        let nats = workloads(&objects)
            .into_iter()
            .find(|w| w.kind == "StatefulSet" && w.name == "nats")
            .expect("the nats StatefulSet");
        let config_name = nats.spec["volumes"]
            .as_array()
            .and_then(|volumes| volumes.iter().find(|v| v["name"] == "config"))
            .and_then(|v| v["configMap"]["name"].as_str())
            .expect("a config volume")
            .to_owned();
        let config = objects
            .iter()
            .find(|o| kind(o) == "ConfigMap" && o["metadata"]["name"] == config_name.as_str())
            .and_then(|map| map["data"]["nats.conf"].as_str())
            .expect("nats.conf")
            .to_owned();
        let env = container_env(&objects, &nats.containers()[0], "nats-0");
        let passwords = env
            .iter()
            .filter_map(|(key, value)| {
                let user = key.strip_suffix("_PASSWORD")?.to_lowercase();
                Some((user, value.clone()))
            })
            .collect::<std::collections::BTreeMap<_, _>>();
        assert!(
            passwords.len() >= 4,
            "a password per service: {passwords:?}"
        );

        let dir = tempfile::tempdir().expect("dir");
        let pki = TestPki::new();
        let issued = pki
            .authority()
            .issue(
                &SpiffeId::new(TRUST_DOMAIN, NAMESPACE, "nats"),
                time::OffsetDateTime::now_utc() - time::Duration::minutes(1),
                time::Duration::days(1),
            )
            .expect("nats certificate");
        let (cert, key, ca) = (
            dir.path().join("nats.crt"),
            dir.path().join("nats.key"),
            dir.path().join("ca.crt"),
        );
        std::fs::write(&cert, &issued.certificate_pem).expect("write");
        std::fs::write(&key, &issued.key_pem).expect("write");
        std::fs::copy(pki.dir().join("ca.crt"), &ca).expect("ca");
        // Only what points at cluster infrastructure changes: the mounted certificate files.
        let mut config = config;
        for (mounted, local) in [
            ("/var/run/bookmesh/identity/tls.crt", &cert),
            ("/var/run/bookmesh/identity/tls.key", &key),
            ("/var/run/bookmesh/identity/ca.crt", &ca),
        ] {
            assert!(config.contains(mounted), "nats.conf reads {mounted}");
            config = config.replace(mounted, &local.display().to_string());
        }
        let config_path = dir.path().join("nats.conf");
        std::fs::write(&config_path, &config).expect("write");

        let port = bookmesh_mesh_tests::free_port();
        let store = dir.path().join("store");
        let server = std::env::var("BOOKMESH_NATS_SERVER").unwrap_or_else(|_| "nats-server".into());
        // The passwords, from the environment as in the pod.
        let passwords_env: Vec<(&str, String)> = env
            .iter()
            .filter(|(key, _)| key.ends_with("_PASSWORD"))
            .map(|(key, value)| (key.as_str(), value.clone()))
            .collect();
        let process = ServiceProcess::spawn_program(
            "nats",
            &server,
            &[
                "--config".into(),
                config_path.display().to_string(),
                "--addr".into(),
                "127.0.0.1".into(),
                "--port".into(),
                port.to_string(),
                "--jetstream".into(),
                "--store_dir".into(),
                store.display().to_string(),
                "--http_port".into(),
                "0".into(),
            ],
            &passwords_env,
        );
        let address = format!("127.0.0.1:{port}");
        eventually("nats-server listening", Duration::from_secs(20), || async {
            tokio::net::TcpStream::connect(&address)
                .await
                .ok()
                .map(|_| ())
        })
        .await;
        Self {
            url: format!("127.0.0.1:{port}"),
            config,
            ca,
            passwords,
            _process: process,
            _dir: dir,
        }
    }

    /// What the server printed (permission violations among it).
    pub(crate) fn log(&self) -> String {
        self._process.lines().join("\n")
    }

    pub(crate) fn settings(&self, user: &str) -> NatsSettings {
        NatsSettings {
            url: format!("nats://{user}:{}@{}", self.passwords[user], self.url),
            ca: Some(self.ca.clone()),
            prefix: "bookmesh".into(),
            replica: None,
            limits: bookmesh::events::nats::StreamLimits::default(),
        }
    }

    pub(crate) async fn raw(&self, user: &str) -> async_nats::jetstream::Context {
        let client = async_nats::ConnectOptions::new()
            .add_root_certificates(self.ca.clone())
            .require_tls(true)
            .user_and_password(user.into(), self.passwords[user].clone())
            .custom_inbox_prefix(format!("_INBOX_{user}"))
            .connect(&self.url)
            .await
            .expect("connect");
        let mut js = async_nats::jetstream::new(client);
        js.set_timeout(Duration::from_secs(2));
        js
    }
}
