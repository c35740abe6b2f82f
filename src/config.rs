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
            keepalive_interval: Duration::from_secs(30),
            drain_delay: Duration::ZERO,
            shutdown_grace: Duration::from_secs(20),
            readiness_interval: Duration::from_secs(5),
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
