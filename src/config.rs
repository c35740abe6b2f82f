//! Command-line and environment settings shared by every server binary.

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

/// Settings of the shared gRPC server runtime, flattened into each service's `Config`.
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

    /// Address of the admin HTTP port (/metrics, /healthz, /readyz); unset disables it.
    #[arg(long, env = "BOOKMESH_ADMIN_LISTEN")]
    pub admin_listen: Option<std::net::SocketAddr>,

    /// Interval of the database check behind the health status.
    #[arg(long, env = "BOOKMESH_READINESS_INTERVAL", value_parser = parse_duration, default_value = "5s")]
    pub readiness_interval: Duration,
}

impl Default for ServerArgs {
    fn default() -> Self {
        Self {
            log_format: LogFormat::Auto,
            max_message_bytes: 1024 * 1024,
            request_timeout: Duration::from_secs(10),
            max_concurrent_streams: 256,
            max_concurrent_requests: 512,
            max_connection_age: Duration::from_secs(300),
            keepalive_interval: Duration::from_secs(30),
            drain_delay: Duration::ZERO,
            shutdown_grace: Duration::from_secs(20),
            readiness_interval: Duration::from_secs(5),
            admin_listen: None,
        }
    }
}

/// Parses durations such as `250ms`, `10s`, `2m` or `1h`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("`{text}` has no unit (use ms, s, m or h)"))?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` does not start with a number"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(number)),
        "s" => Ok(Duration::from_secs(number)),
        "m" => Ok(Duration::from_secs(number * 60)),
        "h" => Ok(Duration::from_secs(number * 3600)),
        _ => Err(format!("`{text}` has an unknown unit (use ms, s, m or h)")),
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
        assert!(parse_duration("3d").is_err());
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
}

/// Where a service keeps its data, flattened into each service's `Config`.
#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// Database URL: `sqlite://FILE?mode=rwc`, `postgres://…` or `mysql://…`.
    /// Default: an SQLite file named after the service under --data-dir.
    #[arg(long, env = "BOOKMESH_DATABASE_URL")]
    pub database_url: Option<String>,

    /// Folder for the default SQLite database (created if missing).
    #[arg(long, env = "BOOKMESH_DATA_DIR", default_value = "data")]
    pub data_dir: std::path::PathBuf,
}

impl DatabaseArgs {
    /// Settings that use `url` (tests pass a fresh database here).
    pub fn url(url: impl Into<String>) -> Self {
        Self {
            database_url: Some(url.into()),
            data_dir: "data".into(),
        }
    }

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
        Self {
            upstream_timeout: Duration::from_secs(2),
            upstream_max_attempts: 3,
            upstream_connections: 2,
            upstream_resolve_interval: Duration::from_secs(5),
            breaker_open_duration: Duration::from_secs(5),
            upstream_options: Vec::new(),
        }
    }
}

impl ClientArgs {
    /// The configuration of upstream `name` at `endpoints`: defaults, then overrides.
    pub fn upstream(
        &self,
        name: &str,
        endpoints: Vec<String>,
    ) -> Result<crate::client::UpstreamConfig, String> {
        let mut config = crate::client::UpstreamConfig::new(name, endpoints);
        config.call_timeout = self.upstream_timeout;
        config.retry.max_attempts = self.upstream_max_attempts;
        config.connections_per_endpoint = self.upstream_connections;
        config.resolve_interval = self.upstream_resolve_interval;
        config.breaker.open_duration = self.breaker_open_duration;
        for option in &self.upstream_options {
            let Some((key, value)) = option.split_once('=') else {
                return Err(format!("upstream option `{option}` is not NAME.KEY=VALUE"));
            };
            let Some((upstream, key)) = key.split_once('.') else {
                return Err(format!("upstream option `{option}` is not NAME.KEY=VALUE"));
            };
            if upstream != name {
                continue;
            }
            let bad = |e: String| format!("upstream option `{option}`: {e}");
            let number = |v: &str| v.parse::<usize>().map_err(|e| bad(e.to_string()));
            match key {
                "call_timeout" => config.call_timeout = parse_duration(value).map_err(bad)?,
                "connect_timeout" => config.connect_timeout = parse_duration(value).map_err(bad)?,
                "connections" => config.connections_per_endpoint = number(value)?,
                "resolve_interval" => {
                    config.resolve_interval = parse_duration(value).map_err(bad)?
                }
                "eject_duration" => config.eject_duration = parse_duration(value).map_err(bad)?,
                "max_attempts" => config.retry.max_attempts = number(value)? as u32,
                "breaker_window" => config.breaker.window = number(value)?,
                "breaker_minimum_calls" => config.breaker.minimum_calls = number(value)?,
                "breaker_failure_rate" => {
                    config.breaker.failure_rate = value
                        .parse()
                        .map_err(|e: std::num::ParseFloatError| bad(e.to_string()))?
                }
                "breaker_open_duration" => {
                    config.breaker.open_duration = parse_duration(value).map_err(bad)?
                }
                "breaker_half_open_calls" => config.breaker.half_open_calls = number(value)?,
                _ => return Err(bad(format!("unknown key `{key}`"))),
            }
        }
        Ok(config)
    }
}

#[cfg(test)]
mod client_args_tests {
    use super::*;

    #[test]
    fn overrides_apply_to_their_upstream_only() {
        let args = ClientArgs {
            upstream_options: vec![
                "member.call_timeout=300ms".into(),
                "member.breaker_minimum_calls=4".into(),
                "book.max_attempts=1".into(),
            ],
            ..ClientArgs::default()
        };
        let member = args
            .upstream("member", vec!["http://m:1".into()])
            .expect("valid");
        assert_eq!(member.call_timeout, Duration::from_millis(300));
        assert_eq!(member.breaker.minimum_calls, 4);
        assert_eq!(member.retry.max_attempts, 3);
        let book = args
            .upstream("book", vec!["http://b:1".into()])
            .expect("valid");
        assert_eq!(book.retry.max_attempts, 1);
        assert_eq!(book.call_timeout, Duration::from_secs(2));
    }

    #[test]
    fn bad_overrides_are_reported() {
        for option in ["member", "member.nope=1", "member.call_timeout=soon"] {
            let args = ClientArgs {
                upstream_options: vec![option.into()],
                ..ClientArgs::default()
            };
            assert!(
                args.upstream("member", vec!["http://m:1".into()]).is_err(),
                "{option}"
            );
        }
    }
}

/// How events travel between services, flattened into the `Config` of every service that
/// publishes or consumes events.
#[derive(Debug, Clone, Args)]
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

    /// Prefix of the JetStream stream names and subjects.
    #[arg(long, env = "BOOKMESH_NATS_PREFIX", default_value = "bookmesh")]
    pub nats_prefix: String,

    /// Consume every event in this replica, through its own durable consumer named after this
    /// value (Kubernetes passes the pod name), instead of sharing the service's consumer with
    /// the other replicas. For services whose state lives in the pod (the best-seller read
    /// model): with a shared consumer each replica would see only part of the events.
    #[arg(long, env = "BOOKMESH_NATS_REPLICA_CONSUMER")]
    pub nats_replica_consumer: Option<String>,
}

/// The event transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EventTransport {
    Feed,
    Nats,
}

impl Default for EventArgs {
    fn default() -> Self {
        Self {
            event_transport: EventTransport::Feed,
            nats_url: "nats://127.0.0.1:4222".into(),
            nats_prefix: "bookmesh".into(),
            nats_replica_consumer: None,
        }
    }
}

impl EventArgs {
    /// Settings for the test suites: `BOOKMESH_TEST_TRANSPORT=nats` runs them on JetStream
    /// (with `prefix`, unique per test, so tests never share streams).
    pub fn for_tests(prefix: &str) -> Self {
        let nats = std::env::var("BOOKMESH_TEST_TRANSPORT").is_ok_and(|t| t == "nats");
        Self {
            event_transport: if nats {
                EventTransport::Nats
            } else {
                EventTransport::Feed
            },
            nats_url: std::env::var("BOOKMESH_TEST_NATS_URL")
                .unwrap_or_else(|_| "nats://127.0.0.1:4222".into()),
            nats_prefix: prefix.to_owned(),
            nats_replica_consumer: None,
        }
    }

    pub fn nats(&self) -> Option<crate::events::nats::NatsSettings> {
        (self.event_transport == EventTransport::Nats).then(|| crate::events::nats::NatsSettings {
            url: self.nats_url.clone(),
            prefix: self.nats_prefix.clone(),
            replica: self.nats_replica_consumer.clone(),
        })
    }
}
