//! Configuration of the gateway, from flags and environment.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bookmesh::client::UpstreamConfig;
use bookmesh::config::{ClientArgs, IdentityArgs, LogFormat, parse_duration};
use clap::Parser;

/// gateway-service: every public RPC of book, member, rental, bestbook and notification as JSON
/// over HTTP and gRPC-Web, and the console.
#[derive(Debug, Clone, Parser)]
#[command(version, about)]
pub struct Config {
    /// Address to listen on for HTTP.
    #[arg(long, env = "BOOKMESH_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,

    /// Book service endpoints, comma-separated.
    #[arg(
        long,
        env = "BOOKMESH_BOOK_ENDPOINTS",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:50051"
    )]
    pub book_endpoints: Vec<String>,

    /// Member service endpoints, comma-separated.
    #[arg(
        long,
        env = "BOOKMESH_MEMBER_ENDPOINTS",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:50052"
    )]
    pub member_endpoints: Vec<String>,

    /// Rental service endpoints, comma-separated.
    #[arg(
        long,
        env = "BOOKMESH_RENTAL_ENDPOINTS",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:50053"
    )]
    pub rental_endpoints: Vec<String>,

    /// Best-seller service endpoints, comma-separated.
    #[arg(
        long,
        env = "BOOKMESH_BESTBOOK_ENDPOINTS",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:50054"
    )]
    pub bestbook_endpoints: Vec<String>,

    /// Notification service endpoints, comma-separated.
    #[arg(
        long,
        env = "BOOKMESH_NOTIFICATION_ENDPOINTS",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:50055"
    )]
    pub notification_endpoints: Vec<String>,

    /// Most connections open at once; a new one past it is closed at once.
    #[arg(long, env = "BOOKMESH_MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,

    /// Largest request body, in bytes (the services' own gRPC limit).
    #[arg(long, env = "BOOKMESH_MAX_MESSAGE_BYTES", default_value_t = 1024 * 1024)]
    pub max_message_bytes: usize,

    /// Longest a call may take; a request's `connect-timeout-ms` may ask for less.
    #[arg(long, env = "BOOKMESH_REQUEST_TIMEOUT", value_parser = parse_duration, default_value = "10s")]
    pub request_timeout: Duration,

    /// Longest a server stream (a live view) stays open; a request's `grpc-timeout` may ask
    /// for less. The browser opens it again.
    #[arg(long, env = "BOOKMESH_STREAM_TIMEOUT", value_parser = parse_duration, default_value = "10m")]
    pub stream_timeout: Duration,

    /// Serve the console from this folder instead of the copy built into the binary (for
    /// work on the console: `npm run build` in console/, reload the page).
    #[arg(long, env = "BOOKMESH_CONSOLE_DIR")]
    pub console_dir: Option<PathBuf>,

    /// The services' admin ports, `service=host:port` comma-separated, for the console's mesh
    /// view and fault switches (`GET /api/mesh`, `/api/faults`). A host that resolves to
    /// several addresses (a headless Service) gives every replica.
    #[arg(long, env = "BOOKMESH_ADMIN_TARGETS", value_delimiter = ',')]
    pub admin_targets: Vec<String>,

    /// DEVELOPMENT ONLY (`make run`): `POST /auth/dev-token` signs tokens for any role with
    /// the local development key `<pki-dir>/jwt.key`. Anyone who reaches the gateway can then
    /// act as staff on a mesh that trusts that key. Logged as a warning.
    #[arg(long, env = "BOOKMESH_DEV_SIGN_IN")]
    pub dev_sign_in: bool,

    /// Log format.
    #[arg(long, env = "BOOKMESH_LOG_FORMAT", value_enum, default_value_t = LogFormat::Auto)]
    pub log_format: LogFormat,

    /// How the gateway calls the services.
    #[command(flatten)]
    pub client: ClientArgs,

    /// Who the gateway is (its certificate) and whom it trusts.
    #[command(flatten)]
    pub identity: IdentityArgs,
}

impl Config {
    /// Configuration for tests: the given services, plaintext, on an ephemeral port.
    pub fn for_tests(book: &str, member: &str, rental: &str, bestbook: &str) -> Self {
        let mut config: Self = bookmesh::config::defaults();
        config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        config.book_endpoints = vec![book.to_owned()];
        config.member_endpoints = vec![member.to_owned()];
        config.rental_endpoints = vec![rental.to_owned()];
        config.bestbook_endpoints = vec![bestbook.to_owned()];
        // No notification service in these tests: a port nothing listens on.
        config.notification_endpoints = vec!["http://127.0.0.1:1".to_owned()];
        config.identity.insecure_plaintext = true;
        config
    }

    /// The upstream serving `service` (`book`, `member`, `rental`, `bestbook`,
    /// `notification`).
    pub fn upstream(&self, service: &str) -> Result<UpstreamConfig, String> {
        let endpoints = match service {
            "book" => &self.book_endpoints,
            "member" => &self.member_endpoints,
            "rental" => &self.rental_endpoints,
            "notification" => &self.notification_endpoints,
            _ => &self.bestbook_endpoints,
        };
        UpstreamConfig::from_args(&self.client, service, endpoints.clone())
    }
}
