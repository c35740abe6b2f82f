//! Test helpers shared by every crate (feature `testing`): a fresh database per test and the
//! real server started on an ephemeral loopback port.
//!
//! The database engine comes from `BOOKMESH_TEST_DB`: `sqlite` (default, needs nothing),
//! `postgres` or `mysql` (a fresh database is created on the server named by
//! `BOOKMESH_TEST_POSTGRES_URL` / `BOOKMESH_TEST_MYSQL_URL`), so the same suites prove every
//! backend.

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sea_orm::{ConnectionTrait, Database};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_types::StatusExt;

/// Which database engine the suites run against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// A file in a temporary folder (the default: needs nothing installed).
    Sqlite,
    /// A fresh database on the local PostgreSQL server.
    Postgres,
    /// A fresh database on the local MariaDB/MySQL server.
    MySql,
}

impl Engine {
    /// The engine selected by `BOOKMESH_TEST_DB`.
    pub fn from_env() -> Self {
        match std::env::var("BOOKMESH_TEST_DB").as_deref() {
            Ok("postgres") => Self::Postgres,
            Ok("mysql") | Ok("mariadb") => Self::MySql,
            _ => Self::Sqlite,
        }
    }
}

/// A database that exists only for one test.
pub struct TestDatabase {
    /// Its connection URL.
    pub url: String,
    /// Its engine.
    pub engine: Engine,
    // Keeps the SQLite file's folder alive for the test's duration.
    _dir: Option<tempfile::TempDir>,
}

impl TestDatabase {
    /// Creates a fresh, empty database on the engine selected by `BOOKMESH_TEST_DB`.
    pub async fn fresh() -> Self {
        Self::fresh_on(Engine::from_env()).await
    }

    /// Creates a fresh, empty database on `engine` (the local server for PostgreSQL and
    /// MariaDB, see `BOOKMESH_TEST_POSTGRES_URL` and `BOOKMESH_TEST_MYSQL_URL`).
    pub async fn fresh_on(engine: Engine) -> Self {
        let name = format!("bmtest_{}", uuid::Uuid::now_v7().simple());
        match engine {
            Engine::Sqlite => {
                let dir = tempfile::tempdir().expect("temporary folder");
                let url = format!("sqlite://{}/{name}.db?mode=rwc", dir.path().display());
                Self {
                    url,
                    engine,
                    _dir: Some(dir),
                }
            }
            Engine::Postgres | Engine::MySql => {
                let (admin_var, admin_default) = if engine == Engine::Postgres {
                    (
                        "BOOKMESH_TEST_POSTGRES_URL",
                        "postgres://postgres@127.0.0.1:5432/postgres",
                    )
                } else {
                    (
                        "BOOKMESH_TEST_MYSQL_URL",
                        "mysql://root@127.0.0.1:3306/test",
                    )
                };
                let admin_url =
                    std::env::var(admin_var).unwrap_or_else(|_| admin_default.to_owned());
                let admin = Database::connect(admin_url.as_str())
                    .await
                    .unwrap_or_else(|e| panic!("cannot reach {admin_url} ({admin_var}): {e}"));
                admin
                    .execute_unprepared(&format!("CREATE DATABASE {name}"))
                    .await
                    .expect("create test database");
                admin.close().await.expect("close admin connection");
                let base = admin_url
                    .rsplit_once('/')
                    .map(|(base, _)| base)
                    .expect("admin URL ends with a database name");
                Self {
                    url: format!("{base}/{name}"),
                    engine,
                    _dir: None,
                }
            }
        }
    }
}

/// A real server running in the test's runtime on `127.0.0.1:<ephemeral>`.
pub struct RunningServer {
    /// Where it listens.
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningServer {
    /// Binds an ephemeral port and starts `serve(listener, shutdown)`; returns once the server
    /// reports SERVING on the health service.
    pub async fn start<F, Fut, E>(serve: F) -> Self
    where
        F: FnOnce(TcpListener, futures::future::BoxFuture<'static, ()>) -> Fut,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: std::fmt::Display + Send + 'static,
    {
        let server = Self::spawn(serve).await;
        wait_until_serving(&server.url(), Duration::from_secs(30)).await;
        server
    }

    /// Like [`RunningServer::start`] on a listener bound beforehand (with [`bind`]), for
    /// services that must know each other's addresses before any of them starts.
    pub async fn start_on<F, Fut, E>(listener: TcpListener, serve: F) -> Self
    where
        F: FnOnce(TcpListener, futures::future::BoxFuture<'static, ()>) -> Fut,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: std::fmt::Display + Send + 'static,
    {
        let server = Self::spawn_on(listener, serve);
        wait_until_serving(&server.url(), Duration::from_secs(30)).await;
        server
    }

    /// Like [`RunningServer::start`] but returns at once, whatever the health status.
    pub async fn spawn<F, Fut, E>(serve: F) -> Self
    where
        F: FnOnce(TcpListener, futures::future::BoxFuture<'static, ()>) -> Fut,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: std::fmt::Display + Send + 'static,
    {
        Self::spawn_on(bind().await, serve)
    }

    /// Like [`RunningServer::spawn`] on a listener bound beforehand (with [`bind`]).
    pub fn spawn_on<F, Fut, E>(listener: TcpListener, serve: F) -> Self
    where
        F: FnOnce(TcpListener, futures::future::BoxFuture<'static, ()>) -> Fut,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: std::fmt::Display + Send + 'static,
    {
        let addr = listener.local_addr().expect("local address");
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = Box::pin(async move {
            let _ = stopped.await;
        });
        let served = serve(listener, shutdown);
        let task = tokio::spawn(async move {
            if let Err(error) = served.await {
                panic!("server failed: {error}");
            }
        });
        Self {
            addr,
            stop: Some(stop),
            task,
        }
    }

    /// Sends the stop signal without waiting for the drain.
    pub fn signal_stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Waits for the server task to end (after [`RunningServer::signal_stop`]).
    pub async fn wait_stopped(mut self) {
        (&mut self.task).await.expect("server task ended cleanly");
    }

    /// `http://127.0.0.1:<port>`, for channels and upstream configuration.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Sends the stop signal and waits for the drain to finish.
    pub async fn stop(mut self) {
        self.signal_stop();
        self.wait_stopped().await;
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        // A server still running when its test ends must not outlive the test's runtime.
        self.task.abort();
    }
}

/// A listener on an ephemeral loopback port.
pub async fn bind() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").await.expect("bind")
}

/// The `http://` URL of a bound listener.
pub fn url_of(listener: &TcpListener) -> String {
    format!("http://{}", listener.local_addr().expect("local address"))
}

/// Polls `probe` until it returns `Some`; panics with `what` after `deadline`.
pub async fn eventually<T, Fut: Future<Output = Option<T>>>(
    what: &str,
    deadline: Duration,
    mut probe: impl FnMut() -> Fut,
) -> T {
    let started = Instant::now();
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            started.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A channel to `url`, for clients generated without `connect` (health, reflection).
pub async fn connect(url: &str) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    tonic::transport::Endpoint::from_shared(url.to_owned())?
        .connect()
        .await
}

/// Overall health status of the server at `url`, or `None` if it cannot be reached.
pub async fn health_status(url: &str) -> Option<ServingStatus> {
    service_health_status(url, "").await
}

/// The health status one health-service name reports (`""` for the whole server,
/// `liveness` for the process); `None` when the server does not answer.
pub async fn service_health_status(url: &str, service: &str) -> Option<ServingStatus> {
    let mut client = HealthClient::new(connect(url).await.ok()?);
    let response = client
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .ok()?;
    ServingStatus::try_from(response.into_inner().status).ok()
}

/// Polls the health service until SERVING; panics after `deadline`.
pub async fn wait_until_serving(url: &str, deadline: Duration) {
    let started = Instant::now();
    loop {
        if health_status(url).await == Some(ServingStatus::Serving) {
            return;
        }
        assert!(
            started.elapsed() < deadline,
            "{url} not SERVING after {deadline:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The fields named by the `google.rpc.BadRequest` details of an INVALID_ARGUMENT status.
pub fn violated_fields(status: &tonic::Status) -> Vec<String> {
    assert_eq!(
        status.code(),
        tonic::Code::InvalidArgument,
        "expected INVALID_ARGUMENT, got {status:?}"
    );
    let bad_request = status
        .get_details_bad_request()
        .expect("INVALID_ARGUMENT carries google.rpc.BadRequest");
    bad_request
        .field_violations
        .into_iter()
        .map(|violation| violation.field)
        .collect()
}

/// A PKI in a temporary folder: the local authority, a certificate per workload, the
/// development token keys; as `make run` creates under `data/pki/`.
pub struct TestPki {
    dir: tempfile::TempDir,
}

/// Every workload of the mesh and its tools, and two that no policy names.
pub const TEST_WORKLOADS: &[&str] = &[
    "book", "member", "rental", "bestbook", "loadgen", "check", "launcher", "stranger",
];

impl TestPki {
    /// A fresh PKI with a certificate for each of [`TEST_WORKLOADS`].
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temporary folder");
        crate::identity::pki::ensure_local(dir.path(), TRUST_DOMAIN, NAMESPACE, TEST_WORKLOADS)
            .expect("test PKI");
        Self { dir }
    }

    /// Its folder.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Identity settings that use this PKI (mTLS on), checking rotation every 100 ms.
    pub fn identity_args(&self) -> crate::config::IdentityArgs {
        crate::config::IdentityArgs {
            pki_dir: self.dir().to_owned(),
            tls_reload_interval: Duration::from_millis(100),
            insecure_plaintext: false,
            ..Default::default()
        }
    }

    /// The credentials of `workload` (watched for rotation every 100 ms).
    pub fn credentials(&self, workload: &str) -> std::sync::Arc<crate::identity::Credentials> {
        let args = self.identity_args();
        let credentials = crate::identity::Credentials::load(
            crate::identity::SpiffeId::new(TRUST_DOMAIN, NAMESPACE, workload),
            args.credential_files(workload),
        )
        .expect("credentials");
        credentials.watch(Duration::from_millis(100));
        credentials
    }

    /// The local authority, to issue more certificates (expired ones, say).
    pub fn authority(&self) -> crate::identity::pki::Authority {
        crate::identity::pki::Authority::load(self.dir(), TRUST_DOMAIN).expect("authority")
    }
}

impl Default for TestPki {
    fn default() -> Self {
        Self::new()
    }
}

/// The trust domain and namespace the test PKI issues in (the defaults).
pub const TRUST_DOMAIN: &str = "bookmesh.local";
/// See [`TRUST_DOMAIN`].
pub const NAMESPACE: &str = "bookmesh";

/// An mTLS channel to `url` presenting `client`'s certificate and expecting the server to be
/// `server_workload`.
pub async fn connect_tls(
    url: &str,
    client: &std::sync::Arc<crate::identity::Credentials>,
    server_workload: &str,
) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    let expected = crate::identity::SpiffeId::new(TRUST_DOMAIN, NAMESPACE, server_workload);
    let config = crate::identity::tls::client_config(client, expected).expect("client TLS");
    // The connector does TLS: tonic, built with its own TLS support, refuses an `https` URI
    // it has no TLS configuration for.
    tonic::transport::Endpoint::from_shared(url.to_owned())?
        .connect_with_connector(crate::identity::transport::TlsConnector::new(config))
        .await
}

/// Polls the health service over mTLS (as `client`, expecting `server_workload`) until
/// SERVING; panics after `deadline`.
pub async fn wait_until_serving_tls(
    url: &str,
    client: &std::sync::Arc<crate::identity::Credentials>,
    server_workload: &str,
    deadline: Duration,
) {
    eventually(&format!("{url} SERVING over mTLS"), deadline, || async {
        let channel = connect_tls(url, client, server_workload).await.ok()?;
        let status = HealthClient::new(channel)
            .check(HealthCheckRequest::default())
            .await
            .ok()?
            .into_inner()
            .status;
        (ServingStatus::try_from(status).ok()? == ServingStatus::Serving).then_some(())
    })
    .await;
}

/// A TLS channel to `url` that presents no certificate (as a user's tool does: it brings a
/// token), checking that the server is `server_workload` against the test PKI's authority.
pub async fn connect_tls_without_certificate(
    url: &str,
    pki: &TestPki,
    server_workload: &str,
) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    let expected = crate::identity::SpiffeId::new(TRUST_DOMAIN, NAMESPACE, server_workload);
    // Any workload's credentials carry the authority to check the server against.
    let trust = pki.credentials("check");
    let config =
        crate::identity::tls::anonymous_client_config(&trust, expected).expect("client TLS");
    tonic::transport::Endpoint::from_shared(url.to_owned())?
        .connect_with_connector(crate::identity::transport::TlsConnector::new(config))
        .await
}

/// A development token signed by the test PKI's key: `subject` with `roles`, valid for
/// `lifetime` seconds (negative: already expired).
pub fn test_token(pki: &TestPki, subject: &str, roles: &[&str], lifetime: i64) -> String {
    let defaults = crate::config::AuthArgs::default();
    crate::auth::DevTokenIssuer::from_pki(
        pki.dir(),
        &defaults.token_issuer,
        &defaults.token_audience,
    )
    .expect("token key")
    .issue(subject, roles, lifetime)
}

/// A valid registration of a book called `title`: what a test needs when the book itself is
/// not what it is about.
pub fn a_book(title: impl Into<String>) -> crate::proto::book::v1::RegisterBookRequest {
    crate::proto::book::v1::RegisterBookRequest {
        title: title.into(),
        author: "Frank Herbert".into(),
        isbn: "9780441013593".into(),
        publisher: "Ace".into(),
        published_on: "1965-08-01".into(),
        classification: "Fiction".into(),
        location: "Shelf 1".into(),
    }
}

/// A SQLite database `name` in `dir` holding only the event tables (outbox, inbox, dead
/// letters): what a test of the event flow needs without a service's schema.
pub async fn event_tables_database(
    dir: &std::path::Path,
    name: &str,
) -> sea_orm::DatabaseConnection {
    use sea_orm_migration::MigratorTrait as _;

    struct EventTables;

    impl sea_orm_migration::MigratorTrait for EventTables {
        fn migrations() -> Vec<Box<dyn sea_orm_migration::MigrationTrait>> {
            vec![
                Box::new(crate::events::tables::CreateEventTables),
                Box::new(crate::events::tables::IndexEventTables),
            ]
        }
    }

    let db = crate::db::connect_lazy(&format!("sqlite://{}/{name}.db?mode=rwc", dir.display()))
        .await
        .expect("sqlite");
    EventTables::up(&db, None).await.expect("migrate");
    db
}

/// An event handler that counts the events it is given, and does nothing else.
#[derive(Debug, Default)]
pub struct CountingHandler(std::sync::atomic::AtomicU32);

impl CountingHandler {
    /// How many events it was given.
    pub fn count(&self) -> u32 {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl crate::events::consumer::EventHandler for CountingHandler {
    fn handle<'a>(
        &'a self,
        _txn: &'a sea_orm::DatabaseTransaction,
        _event: &'a crate::events::Event,
    ) -> futures::future::BoxFuture<'a, Result<(), crate::events::consumer::HandlerError>> {
        Box::pin(async move {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(())
        })
    }
}

/// Registers a new member (a unique email) and a new copy titled `title` through the member
/// and book services at `member_url` and `book_url`: their ids.
pub async fn register_member_and_book(
    member_url: &str,
    book_url: &str,
    title: &str,
) -> (String, String) {
    use crate::proto::book::v1::book_service_client::BookServiceClient;
    use crate::proto::member::v1::RegisterMemberRequest;
    use crate::proto::member::v1::member_service_client::MemberServiceClient;
    let channel = |url: &str| {
        let url = url.to_owned();
        async move { connect(&url).await.expect("connect") }
    };
    let member = MemberServiceClient::new(channel(member_url).await)
        .register_member(RegisterMemberRequest {
            name: "Test Reader".into(),
            email: format!("reader-{}@example.org", uuid::Uuid::now_v7().simple()),
        })
        .await
        .expect("register member")
        .into_inner()
        .member
        .expect("member")
        .member_id;
    let book = BookServiceClient::new(channel(book_url).await)
        .register_book(a_book(title))
        .await
        .expect("register book")
        .into_inner()
        .book
        .expect("book")
        .book_id;
    (member, book)
}
