//! TLS to the databases: the services' pool speaks it when the URL asks (`sslmode=require` or
//! `verify-full` for PostgreSQL, `ssl-mode=VERIFY_IDENTITY` for MariaDB), which the production
//! overlay does. Proven on the local PostgreSQL (`BOOKMESH_TEST_DB=postgres`, which serves
//! TLS with its own certificate), and on a private MariaDB server this test starts with a
//! certificate from a mesh-style CA (`BOOKMESH_TEST_DB=mysql`): the shared local MariaDB may
//! have TLS disabled, and this way the certificate is one we made.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bookmesh::testing::{Engine, TestDatabase};
use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};

#[tokio::test]
async fn a_service_pool_speaks_tls_to_postgresql_and_checks_the_server() {
    if Engine::from_env() != Engine::Postgres {
        eprintln!("skipped: run with BOOKMESH_TEST_DB=postgres (make test-db)");
        return;
    }
    let database = TestDatabase::fresh().await;
    let pool = bookmesh::db::connect_lazy(&format!("{}?sslmode=require", database.url))
        .await
        .expect("pool");
    let row = pool
        .query_one_raw(Statement::from_string(
            pool.get_database_backend(),
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        ))
        .await
        .expect("query")
        .expect("a row");
    let encrypted: bool = row.try_get("", "ssl").expect("ssl column");
    assert!(encrypted, "the connection is encrypted");

    // verify-full checks the server's certificate: the local server's own (self-signed)
    // certificate is not trusted, so the pool refuses it.
    let checked = bookmesh::db::connect_lazy(&format!("{}?sslmode=verify-full", database.url))
        .await
        .expect("pool");
    let refused = checked.ping().await;
    assert!(
        refused.is_err(),
        "an untrusted server certificate was accepted"
    );
}

/// A MariaDB server of this test's own, killed when dropped.
struct PrivateMariaDb {
    process: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for PrivateMariaDb {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// `name` from `BOOKMESH_<NAME>` or the usual places of a Debian or RPM install.
fn mariadb_program(name: &str) -> PathBuf {
    let variable = format!("BOOKMESH_{}", name.to_uppercase().replace('-', "_"));
    if let Ok(path) = std::env::var(&variable) {
        return PathBuf::from(path);
    }
    ["/usr/sbin", "/usr/bin", "/usr/local/bin", "/usr/libexec"]
        .iter()
        .map(|dir| Path::new(dir).join(name))
        .find(|path| path.exists())
        .unwrap_or_else(|| panic!("{name} not found: install MariaDB's server or set {variable}"))
}

/// Starts a MariaDB server on a fresh data folder, serving TLS with `certificate`/`key`, with a
/// user `service` (password `secret`) owning a database `library`.
fn start_private_mariadb(certificate: &Path, key: &Path, authority: &Path) -> PrivateMariaDb {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let socket = dir.path().join("mariadb.sock");
    // mariadbd refuses root unless told; anyone else runs as themself.
    let as_root = {
        use std::os::unix::fs::MetadataExt as _;
        std::fs::metadata("/proc/self").is_ok_and(|process| process.uid() == 0)
    };
    let mut install = Command::new(mariadb_program("mariadb-install-db"));
    install
        .arg("--no-defaults")
        .arg(format!("--datadir={}", data.display()))
        .arg("--auth-root-authentication-method=normal")
        .arg("--skip-test-db")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if as_root {
        install.arg("--user=root");
    }
    assert!(
        install.status().expect("mariadb-install-db").success(),
        "mariadb-install-db failed"
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let mut server = Command::new(mariadb_program("mariadbd"));
    server
        .arg("--no-defaults")
        .arg(format!("--datadir={}", data.display()))
        .arg(format!("--socket={}", socket.display()))
        .arg(format!(
            "--pid-file={}",
            dir.path().join("mariadb.pid").display()
        ))
        .arg(format!("--port={port}"))
        .arg("--bind-address=127.0.0.1")
        .arg("--skip-log-bin")
        .arg(format!("--ssl-ca={}", authority.display()))
        .arg(format!("--ssl-cert={}", certificate.display()))
        .arg(format!("--ssl-key={}", key.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if as_root {
        server.arg("--user=root");
    }
    let process = server.spawn().expect("mariadbd");
    let server = PrivateMariaDb {
        process,
        port,
        _dir: dir,
    };
    // Through the socket as root, once the server answers: the service's user and database.
    let setup = "CREATE USER 'service'@'%' IDENTIFIED BY 'secret'; \
                 CREATE DATABASE library; GRANT ALL ON library.* TO 'service'@'%';";
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answered = Command::new(mariadb_program("mariadb"))
            .arg("--no-defaults")
            .arg(format!("--socket={}", socket.display()))
            .args(["--user=root", "--execute", setup])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        if answered {
            return server;
        }
        assert!(
            Instant::now() < deadline,
            "the private MariaDB did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

async fn tls_version(pool: &DatabaseConnection) -> Result<String, sea_orm::DbErr> {
    let row = pool
        .query_one_raw(Statement::from_string(
            pool.get_database_backend(),
            "SHOW SESSION STATUS LIKE 'Ssl_version'",
        ))
        .await?
        .ok_or_else(|| sea_orm::DbErr::Custom("no Ssl_version row".into()))?;
    row.try_get("", "Value")
}

#[tokio::test]
async fn a_service_pool_speaks_tls_to_mariadb_and_checks_the_server() {
    if Engine::from_env() != Engine::MySql {
        eprintln!("skipped: run with BOOKMESH_TEST_DB=mysql (make test-db)");
        return;
    }
    // The database's certificate comes from the mesh's CA, as cert-manager issues it in the
    // production overlay; it names 127.0.0.1 among others.
    let pki = tempfile::tempdir().expect("tempdir");
    bookmesh::identity::pki::ensure_local(pki.path(), "bookmesh.local", "bookmesh", &["book-db"])
        .expect("pki");
    let server = start_private_mariadb(
        &pki.path().join("book-db.crt"),
        &pki.path().join("book-db.key"),
        &pki.path().join("ca.crt"),
    );
    let url = |ca: &Path| {
        format!(
            "mysql://service:secret@127.0.0.1:{}/library?ssl-mode=VERIFY_IDENTITY&ssl-ca={}",
            server.port,
            ca.display()
        )
    };

    // The URL the production overlay writes: encrypted, and the server proved its name.
    let pool = bookmesh::db::connect_lazy(&url(&pki.path().join("ca.crt")))
        .await
        .expect("pool");
    let version = tls_version(&pool).await.expect("a TLS connection");
    assert!(
        version.starts_with("TLSv1.2") || version.starts_with("TLSv1.3"),
        "the connection is encrypted (Ssl_version {version:?})"
    );
    // A service's schema goes over it like any other.
    for statement in [
        "CREATE TABLE books (id INT PRIMARY KEY)",
        "INSERT INTO books VALUES (1)",
    ] {
        pool.execute_unprepared(statement)
            .await
            .expect("statements over TLS");
    }

    // A server whose certificate another authority signed is refused.
    let other = tempfile::tempdir().expect("tempdir");
    bookmesh::identity::pki::ensure_local(other.path(), "bookmesh.local", "bookmesh", &[])
        .expect("other pki");
    let checked = bookmesh::db::connect_lazy(&url(&other.path().join("ca.crt")))
        .await
        .expect("pool");
    assert!(
        checked.ping().await.is_err(),
        "a server certificate from another authority was accepted"
    );
}
