//! Command-line and environment settings shared by every binary. Each service flattens
//! [`ServiceArgs`] into its own `Config` and adds only what is its own (its upstreams).
//!
//! Defaults are written once, in the `#[arg]` attributes; `Default` and the test constructors
//! read them back through [`defaults`].

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, ValueEnum};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Pretty on a terminal, JSON otherwise (so log collectors get structured lines).
    Auto,
    /// Human-readable, one line per event.
    Pretty,
    /// One JSON object per line.
    Json,
}

/// What every bookmesh service takes: where it listens, where its data lives, how its events
/// travel, and the settings of the shared server runtime.
#[derive(Debug, Clone, Args)]
pub struct ServiceArgs {
    /// Address to listen on for gRPC.
    #[arg(long, env = "BOOKMESH_LISTEN", default_value = "0.0.0.0:50051")]
    pub listen: SocketAddr,

    /// Where its data lives.
    #[command(flatten)]
    pub database: DatabaseArgs,

    /// How its events travel.
    #[command(flatten)]
    pub events: EventArgs,

    /// The server runtime's settings.
    #[command(flatten)]
    pub server: ServerArgs,

    /// Who it is (its certificate) and whom it trusts.
    #[command(flatten)]
    pub identity: IdentityArgs,

    /// Who may call what: user tokens and the authorization policy.
    #[command(flatten)]
    pub auth: AuthArgs,
}

impl ServiceArgs {
    /// The defaults, on loopback with an ephemeral port and the given database, in the
    /// development mode (plaintext, no authorization): what the functional suites start a real
    /// server with. The security suites give it a PKI instead (`testing::TestPki`).
    pub fn for_tests(database_url: impl Into<String>) -> Self {
        let mut args: Self = defaults();
        args.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        args.database.database_url = Some(database_url.into());
        args.identity.insecure_plaintext = true;
        args
    }
}

/// Who a workload is and whom it trusts: its SPIFFE ID's parts, and where its certificate,
/// key and trusted authorities are. Every binary that speaks gRPC takes these.
#[derive(Debug, Clone, Args)]
pub struct IdentityArgs {
    /// SPIFFE trust domain of this workload and its peers.
    #[arg(long, env = "BOOKMESH_TRUST_DOMAIN", default_value = "bookmesh.local")]
    pub trust_domain: String,

    /// Namespace part of SPIFFE IDs (`spiffe://<trust domain>/ns/<namespace>/sa/<workload>`).
    #[arg(long, env = "BOOKMESH_NAMESPACE", default_value = "bookmesh")]
    pub namespace: String,

    /// Folder of the local PKI that `make run` creates: `ca.crt`, `<workload>.crt` and
    /// `<workload>.key`, the development token keys.
    #[arg(long, env = "BOOKMESH_PKI_DIR", default_value = "data/pki")]
    pub pki_dir: std::path::PathBuf,

    /// This workload's certificate chain (PEM). Default: `<pki-dir>/<workload>.crt`.
    #[arg(long, env = "BOOKMESH_TLS_CERT")]
    pub tls_cert: Option<std::path::PathBuf>,

    /// Its private key (PEM). Default: `<pki-dir>/<workload>.key`.
    #[arg(long, env = "BOOKMESH_TLS_KEY")]
    pub tls_key: Option<std::path::PathBuf>,

    /// The authorities peers' certificates must chain to (PEM). Default: `<pki-dir>/ca.crt`.
    #[arg(long, env = "BOOKMESH_TLS_CA")]
    pub tls_ca: Option<std::path::PathBuf>,

    /// How often the certificate files are checked for rotation.
    #[arg(long, env = "BOOKMESH_TLS_RELOAD_INTERVAL", value_parser = parse_duration, default_value = "10s")]
    pub tls_reload_interval: Duration,

    /// DEVELOPMENT ONLY: plaintext without identities or authorization. Logged as a warning.
    #[arg(long, env = "BOOKMESH_INSECURE_PLAINTEXT")]
    pub insecure_plaintext: bool,
}

impl Default for IdentityArgs {
    fn default() -> Self {
        defaults()
    }
}

/// How a server authenticates users and authorizes every call.
#[derive(Debug, Clone, Args)]
pub struct AuthArgs {
    /// Keys that sign user tokens: a PEM public key or a JWKS document (JSON). Default: the
    /// development key `<pki-dir>/jwt.pub`.
    #[arg(long, env = "BOOKMESH_TOKEN_KEYS")]
    pub token_keys: Option<std::path::PathBuf>,

    /// A JWKS URL (an identity provider's `jwks_uri`) instead of a key file; fetched at start
    /// and again every `--token-keys-refresh`.
    #[arg(long, env = "BOOKMESH_TOKEN_JWKS_URL")]
    pub token_jwks_url: Option<String>,

    /// How often keys from a JWKS URL are fetched again (key rotation at the provider).
    #[arg(long, env = "BOOKMESH_TOKEN_KEYS_REFRESH", value_parser = parse_duration, default_value = "10m")]
    pub token_keys_refresh: Duration,

    /// The `iss` a token must carry.
    #[arg(long, env = "BOOKMESH_TOKEN_ISSUER", default_value = "bookmesh-dev")]
    pub token_issuer: String,

    /// The `aud` a token must carry.
    #[arg(long, env = "BOOKMESH_TOKEN_AUDIENCE", default_value = "bookmesh")]
    pub token_audience: String,

    /// The authorization policy (TOML). Default: the repository's `policy/authorization.toml`,
    /// built into the binary.
    #[arg(long, env = "BOOKMESH_AUTHZ_POLICY")]
    pub authz_policy: Option<std::path::PathBuf>,
}

impl Default for AuthArgs {
    fn default() -> Self {
        defaults()
    }
}

/// Settings of the shared gRPC server runtime.
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// Log format.
    #[arg(long, env = "BOOKMESH_LOG_FORMAT", value_enum, default_value_t = LogFormat::Auto)]
    pub log_format: LogFormat,

    /// Largest gRPC message accepted or sent, in bytes.
    #[arg(long, env = "BOOKMESH_MAX_MESSAGE_BYTES", default_value_t = 1024 * 1024)]
    pub max_message_bytes: usize,

    /// Upper bound on the time spent serving one request; a shorter client deadline wins.
    #[arg(long, env = "BOOKMESH_REQUEST_TIMEOUT", value_parser = parse_duration, default_value = "10s")]
    pub request_timeout: Duration,

    /// Concurrent streams allowed on one HTTP/2 connection.
    #[arg(long, env = "BOOKMESH_MAX_CONCURRENT_STREAMS", default_value_t = 256)]
    pub max_concurrent_streams: u32,

    /// Calls served at once (across connections) before new ones are refused with
    /// RESOURCE_EXHAUSTED: shedding load early beats queueing it without bound.
    #[arg(long, env = "BOOKMESH_MAX_CONCURRENT_REQUESTS", default_value_t = 512)]
    pub max_concurrent_requests: usize,

    /// Client connections open at once; a connection beyond it is closed as soon as it is
    /// accepted (and counted), so a client opening sockets in a loop cannot exhaust memory or
    /// file descriptors.
    #[arg(long, env = "BOOKMESH_MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,

    /// Largest request header list (HTTP/2 SETTINGS_MAX_HEADER_LIST_SIZE), in bytes; a larger
    /// one is refused before any handler sees it. Room for a user token and trace context.
    #[arg(long, env = "BOOKMESH_MAX_HEADER_LIST_BYTES", default_value_t = 16 * 1024)]
    pub max_header_list_bytes: u32,

    /// Shortest time allowed between a client's HTTP/2 pings while the server sends it
    /// nothing: the third ping that comes sooner closes the connection (gRPC's keepalive
    /// enforcement), so a ping flood costs the server nothing but one close.
    #[arg(long, env = "BOOKMESH_MIN_PING_INTERVAL", value_parser = parse_duration, default_value = "10s")]
    pub min_ping_interval: Duration,

    /// Age after which a client connection is asked to reconnect (GOAWAY), ±10% per process,
    /// so long-lived clients spread over replicas added since they connected. 0s disables.
    #[arg(long, env = "BOOKMESH_MAX_CONNECTION_AGE", value_parser = parse_duration, default_value = "5m")]
    pub max_connection_age: Duration,

    /// Time between HTTP/2 keepalive pings, so dead peers are noticed.
    #[arg(long, env = "BOOKMESH_KEEPALIVE_INTERVAL", value_parser = parse_duration, default_value = "30s")]
    pub keepalive_interval: Duration,

    /// After a stop signal: time spent reporting NOT_SERVING before draining, so load balancers
    /// stop sending new calls first (set it a little above the readiness probe period).
    #[arg(long, env = "BOOKMESH_DRAIN_DELAY", value_parser = parse_duration, default_value = "0s")]
    pub drain_delay: Duration,

    /// Longest wait for in-flight calls to finish after a stop signal before exiting anyway.
    #[arg(long, env = "BOOKMESH_SHUTDOWN_GRACE", value_parser = parse_duration, default_value = "20s")]
    pub shutdown_grace: Duration,

    /// How long an `idempotency-key` and its stored answer are kept: a retry with the same key
    /// within it gets the first answer.
    #[arg(long, env = "BOOKMESH_IDEMPOTENCY_KEY_TTL", value_parser = parse_duration, default_value = "24h")]
    pub idempotency_key_ttl: Duration,

    /// Address of the admin HTTP port (/metrics, /healthz, /readyz); unset disables it.
    #[arg(long, env = "BOOKMESH_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,

    /// Interval of the database check behind the health status.
    #[arg(long, env = "BOOKMESH_READINESS_INTERVAL", value_parser = parse_duration, default_value = "5s")]
    pub readiness_interval: Duration,

    /// Accept injected faults (docs/faults.md) on the admin port and from --fault. Off by
    /// default: a production service refuses them.
    #[arg(long, env = "BOOKMESH_FAULTS_ENABLED")]
    pub faults_enabled: bool,

    /// Faults switched on at start, `name=<json>`, several separated by `;`
    /// (`error={"code":"UNAVAILABLE","rate":0.5}`). Needs --faults-enabled.
    #[arg(long = "fault", env = "BOOKMESH_FAULTS", value_delimiter = ';')]
    pub faults: Vec<String>,
}

impl Default for ServerArgs {
    fn default() -> Self {
        defaults()
    }
}

/// Where a service keeps its data. Its `Debug` masks the URL's password, so it can be logged.
#[derive(Clone, Args)]
pub struct DatabaseArgs {
    /// Database URL: `sqlite://FILE?mode=rwc`, `postgres://…` or `mysql://…`.
    /// Default: an SQLite file named after the service under --data-dir.
    #[arg(long, env = "BOOKMESH_DATABASE_URL")]
    pub database_url: Option<String>,

    /// Folder for the default SQLite database (created if missing).
    #[arg(long, env = "BOOKMESH_DATA_DIR", default_value = "data")]
    pub data_dir: std::path::PathBuf,
}

impl std::fmt::Debug for DatabaseArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseArgs")
            .field(
                "database_url",
                &self.database_url.as_deref().map(mask_url_password),
            )
            .field("data_dir", &self.data_dir)
            .finish()
    }
}

impl DatabaseArgs {
    /// The effective URL; `service` names the default SQLite file.
    pub fn effective_url(&self, service: &str) -> String {
        self.database_url.clone().unwrap_or_else(|| {
            format!("sqlite://{}/{service}.db?mode=rwc", self.data_dir.display())
        })
    }
}

/// Settings of the shared client stack, flattened into the `Config` of each service that calls
/// others. Defaults apply to every upstream; `--upstream-option` overrides one upstream.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// Deadline of an outgoing call, all attempts included (capped by the caller's own).
    #[arg(long, env = "BOOKMESH_UPSTREAM_TIMEOUT", value_parser = parse_duration, default_value = "2s")]
    pub upstream_timeout: Duration,

    /// Attempts per idempotent call, the first included (1 disables retries; at most 5).
    #[arg(long, env = "BOOKMESH_UPSTREAM_MAX_ATTEMPTS", default_value_t = 3)]
    pub upstream_max_attempts: u32,

    /// HTTP/2 connections to each replica.
    #[arg(long, env = "BOOKMESH_UPSTREAM_CONNECTIONS", default_value_t = 2)]
    pub upstream_connections: usize,

    /// How often upstream names are resolved again.
    #[arg(long, env = "BOOKMESH_UPSTREAM_RESOLVE_INTERVAL", value_parser = parse_duration, default_value = "5s")]
    pub upstream_resolve_interval: Duration,

    /// How long the circuit breaker stays open before trial calls.
    #[arg(long, env = "BOOKMESH_BREAKER_OPEN_DURATION", value_parser = parse_duration, default_value = "5s")]
    pub breaker_open_duration: Duration,

    /// Per-upstream overrides, `NAME.KEY=VALUE` (repeatable or comma-separated). Keys:
    /// call_timeout, connect_timeout, connections, resolve_interval, eject_duration,
    /// max_attempts, breaker_window, breaker_minimum_calls, breaker_failure_rate,
    /// breaker_open_duration, breaker_half_open_calls.
    #[arg(
        long = "upstream-option",
        env = "BOOKMESH_UPSTREAM_OPTIONS",
        value_delimiter = ','
    )]
    pub upstream_options: Vec<String>,
}

impl Default for ClientArgs {
    fn default() -> Self {
        defaults()
    }
}

/// How events travel between services. Its `Debug` masks the NATS URL's password.
#[derive(Clone, Args)]
pub struct EventArgs {
    /// `feed`: the broker-free gRPC event feed (default, embedded); `nats`: NATS JetStream.
    #[arg(long, env = "BOOKMESH_EVENT_TRANSPORT", value_enum, default_value_t = EventTransport::Feed)]
    pub event_transport: EventTransport,

    /// NATS server, with JetStream enabled (transport `nats`).
    #[arg(
        long,
        env = "BOOKMESH_NATS_URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    pub nats_url: String,

    /// The authority the NATS server's certificate must chain to (PEM); set, the connection
    /// must be TLS.
    #[arg(long, env = "BOOKMESH_NATS_CA")]
    pub nats_ca: Option<std::path::PathBuf>,

    /// Prefix of the JetStream stream names and subjects.
    #[arg(long, env = "BOOKMESH_NATS_PREFIX", default_value = "bookmesh")]
    pub nats_prefix: String,

    /// Consume every event in this replica, through its own durable consumer named after this
    /// value (Kubernetes passes the pod name), instead of sharing the service's consumer with
    /// the other replicas. For services whose state lives in the pod (the best-seller read
    /// model): with a shared consumer each replica would see only part of the events.
    #[arg(long, env = "BOOKMESH_NATS_REPLICA_CONSUMER")]
    pub nats_replica_consumer: Option<String>,

    /// Event-feed subscriptions served at once; one more is refused with RESOURCE_EXHAUSTED.
    /// Each costs a task and a database query per publication (or half second), so a client
    /// subscribing in a loop must not multiply them without a bound.
    #[arg(long, env = "BOOKMESH_MAX_FEED_SUBSCRIBERS", default_value_t = 64)]
    pub max_feed_subscribers: usize,

    /// How long published events stay in the outbox (and so on the feed). A consumer whose
    /// cursor falls further behind is told OUT_OF_RANGE rather than skipping events.
    #[arg(long, env = "BOOKMESH_OUTBOX_RETENTION", value_parser = parse_duration, default_value = "7d")]
    pub outbox_retention: Duration,

    /// How long the ids of applied events are kept to recognise a redelivery. Far longer than
    /// any redelivery can take.
    #[arg(long, env = "BOOKMESH_INBOX_RETENTION", value_parser = parse_duration, default_value = "7d")]
    pub inbox_retention: Duration,

    /// How long a dead letter waits for a redrive before it is deleted.
    #[arg(long, env = "BOOKMESH_DEAD_LETTER_RETENTION", value_parser = parse_duration, default_value = "30d")]
    pub dead_letter_retention: Duration,

    /// How long a service's history tables (rental's saga steps) keep their rows.
    #[arg(long, env = "BOOKMESH_HISTORY_RETENTION", value_parser = parse_duration, default_value = "90d")]
    pub history_retention: Duration,

    /// Time between two rounds of pruning; 0s turns pruning off.
    #[arg(long, env = "BOOKMESH_PRUNE_INTERVAL", value_parser = parse_duration, default_value = "10m")]
    pub prune_interval: Duration,

    /// Rows deleted per statement while pruning.
    #[arg(long, env = "BOOKMESH_PRUNE_BATCH", default_value_t = 1000)]
    pub prune_batch: u64,

    /// JetStream: age after which the server drops an event from the producer's stream.
    #[arg(long, env = "BOOKMESH_NATS_MAX_AGE", value_parser = parse_duration, default_value = "7d")]
    pub nats_max_age: Duration,

    /// JetStream: bytes a producer's stream may hold; the oldest events go first.
    #[arg(long, env = "BOOKMESH_NATS_MAX_BYTES", default_value_t = 1024 * 1024 * 1024)]
    pub nats_max_bytes: i64,
}

/// The event transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EventTransport {
    /// The broker-free gRPC event feed each producer serves.
    Feed,
    /// NATS JetStream.
    Nats,
}

impl std::fmt::Debug for EventArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventArgs")
            .field("event_transport", &self.event_transport)
            .field("nats_url", &mask_url_password(&self.nats_url))
            .field("nats_ca", &self.nats_ca)
            .field("nats_prefix", &self.nats_prefix)
            .field("nats_replica_consumer", &self.nats_replica_consumer)
            .field("max_feed_subscribers", &self.max_feed_subscribers)
            .field("outbox_retention", &self.outbox_retention)
            .field("inbox_retention", &self.inbox_retention)
            .field("dead_letter_retention", &self.dead_letter_retention)
            .field("history_retention", &self.history_retention)
            .field("prune_interval", &self.prune_interval)
            .field("prune_batch", &self.prune_batch)
            .field("nats_max_age", &self.nats_max_age)
            .field("nats_max_bytes", &self.nats_max_bytes)
            .finish()
    }
}

impl Default for EventArgs {
    fn default() -> Self {
        defaults()
    }
}

impl EventArgs {
    /// Settings for the test suites: `BOOKMESH_TEST_TRANSPORT=nats` runs them on JetStream
    /// (with `prefix`, unique per test, so tests never share streams).
    pub fn for_tests(prefix: &str) -> Self {
        let nats = std::env::var("BOOKMESH_TEST_TRANSPORT").is_ok_and(|t| t == "nats");
        let mut args: Self = defaults();
        if nats {
            args.event_transport = EventTransport::Nats;
        }
        if let Ok(url) = std::env::var("BOOKMESH_TEST_NATS_URL") {
            args.nats_url = url;
        }
        args.nats_prefix = prefix.to_owned();
        // JetStream reserves each stream's limit on disk up front: at 1 GiB, a suite's few
        // dozen streams would claim more than a test machine's disk, and creating the next
        // one would fail. A test's stream holds a few kilobytes.
        args.nats_max_bytes = 16 * 1024 * 1024;
        args
    }
}

/// The value of `T` when no flag and no environment variable is given: the defaults exactly as
/// the `#[arg]` attributes state them, so they are written once. Panics when an argument of `T`
/// has no default (a programming error the tests catch).
pub fn defaults<T: clap::Args + clap::FromArgMatches>() -> T {
    let command = T::augment_args(clap::Command::new("defaults").no_binary_name(true))
        // The environment of whoever calls this (a test runner, CI) must not leak in.
        .mut_args(|arg| arg.env(None));
    command
        .try_get_matches_from(std::iter::empty::<String>())
        .and_then(|matches| T::from_arg_matches(&matches))
        .unwrap_or_else(|error| {
            panic!(
                "{} has an argument without a default: {error}",
                std::any::type_name::<T>()
            )
        })
}

/// Parses durations such as `250ms`, `10s`, `2m` or `1h`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("`{text}` has no unit (use ms, s, m, h or d)"))?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` does not start with a number"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(number)),
        "s" => Ok(Duration::from_secs(number)),
        "m" => Ok(Duration::from_secs(number * 60)),
        "h" => Ok(Duration::from_secs(number * 3600)),
        "d" => Ok(Duration::from_secs(number * 86_400)),
        _ => Err(format!(
            "`{text}` has an unknown unit (use ms, s, m, h or d)"
        )),
    }
}

/// Hides the password of a connection URL so configuration can be logged.
pub fn mask_url_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((credentials, host)) = rest.rsplit_once('@') else {
        return url.to_owned();
    };
    match credentials.split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:****@{host}"),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_durations_with_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("s").is_err());
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert!(parse_duration("3w").is_err());
    }

    #[test]
    fn masks_passwords_only() {
        assert_eq!(
            mask_url_password("postgres://app:secret@db:5432/member"),
            "postgres://app:****@db:5432/member"
        );
        assert_eq!(
            mask_url_password("postgres://app@db/member"),
            "postgres://app@db/member"
        );
        assert_eq!(
            mask_url_password("sqlite://data/book.db?mode=rwc"),
            "sqlite://data/book.db?mode=rwc"
        );
    }

    #[test]
    fn logged_configuration_masks_passwords() {
        let mut service = ServiceArgs::for_tests("postgres://app:secret@db/member");
        service.events.nats_url = "nats://bus:hunter2@nats:4222".into();
        let logged = format!("{service:?}");
        assert!(
            !logged.contains("secret") && !logged.contains("hunter2"),
            "{logged}"
        );
        assert!(logged.contains("postgres://app:****@db/member"), "{logged}");
    }

    #[test]
    fn defaults_come_from_the_arg_attributes() {
        let server = ServerArgs::default();
        assert_eq!(server.request_timeout, Duration::from_secs(10));
        assert_eq!(server.max_concurrent_requests, 512);
        assert_eq!(server.admin_listen, None);
        let client = ClientArgs::default();
        assert_eq!(client.upstream_timeout, Duration::from_secs(2));
        assert!(client.upstream_options.is_empty());
        let events = EventArgs::default();
        assert_eq!(events.event_transport, EventTransport::Feed);
        let service: ServiceArgs = defaults();
        assert_eq!(service.database.data_dir, std::path::PathBuf::from("data"));
        assert_eq!(service.listen.port(), 50051);
    }
}
