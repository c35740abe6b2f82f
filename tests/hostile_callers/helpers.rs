use std::time::Duration;

use bookmesh::testing::wait_until_serving;
use bookmesh_mesh_tests::{ServiceProcess, free_port, http_get};

/// A member service process with its admin port, serving.
pub struct Member {
    pub process: ServiceProcess,
    pub url: String,
    pub admin: String,
    _dir: tempdir::Dir,
}

pub async fn member(extra: &[(&str, String)]) -> Member {
    let dir = tempdir::Dir::new("member");
    let address = format!("127.0.0.1:{}", free_port());
    let admin = format!("127.0.0.1:{}", free_port());
    let mut env = vec![
        ("BOOKMESH_LISTEN", address.clone()),
        ("BOOKMESH_ADMIN_LISTEN", admin.clone()),
        ("BOOKMESH_DATA_DIR", dir.0.display().to_string()),
        ("BOOKMESH_RENTAL_ENDPOINTS", "http://127.0.0.1:1".into()),
    ];
    env.extend(extra.iter().cloned());
    let process = ServiceProcess::spawn("member", "member-service", &env);
    let url = format!("http://{address}");
    wait_until_serving(&url, Duration::from_secs(60)).await;
    Member {
        process,
        url,
        admin,
        _dir: dir,
    }
}

/// The sample lines (series) of the process's `/metrics`.
pub async fn series(admin: &str) -> Vec<String> {
    let (status, body) = http_get(admin, "/metrics").await.expect("scrape");
    assert_eq!(status, 200);
    body.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            line.rsplit_once(' ')
                .map_or(line, |(series, _)| series)
                .to_owned()
        })
        .collect()
}

/// The sample lines (series and value) of the process's `/metrics`.
pub async fn series_values(admin: &str) -> Vec<String> {
    let body = match http_get(admin, "/metrics").await {
        Ok((200, body)) => body,
        _ => String::new(),
    };
    body.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(str::to_owned)
        .collect()
}

mod tempdir {
    /// A fresh folder under the system's temporary folder, removed on drop.
    pub struct Dir(pub std::path::PathBuf);

    impl Dir {
        pub fn new(name: &str) -> Self {
            let path =
                std::env::temp_dir().join(format!("bookmesh-{name}-{}", uuid::Uuid::now_v7()));
            std::fs::create_dir_all(&path).expect("temp dir");
            Self(path)
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
