//! How to reach and treat one upstream: its targets and the settings of every layer of the
//! client stack, from documented defaults and the service's `ClientArgs`.

use std::time::Duration;

use super::circuit::BreakerConfig;
use super::retry::RetryConfig;
use crate::config::{ClientArgs, parse_duration};

/// How to reach and treat one upstream service.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// Name used in logs, metrics and errors ("member").
    pub name: String,
    /// Targets such as `http://member-headless:50052` or a list of `http://127.0.0.1:50052`.
    pub endpoints: Vec<String>,
    /// The workload its servers must prove they are (their SPIFFE ID's service account).
    /// Usually the name; the event feed of `rental` is called `rental-feed` but is `rental`.
    pub peer: String,
    /// Deadline of a call (all attempts), unless the caller's own budget is smaller.
    pub call_timeout: Duration,
    /// Longest wait for a TCP connection to one replica.
    pub connect_timeout: Duration,
    /// HTTP/2 connections per replica: one connection serialises on one socket and one
    /// buffer, a few lift throughput under high concurrency.
    pub connections_per_endpoint: usize,
    /// How often names are resolved again (also right after a connection failure).
    pub resolve_interval: Duration,
    /// How long a replica that answered UNAVAILABLE or refused a connection gets no calls.
    pub eject_duration: Duration,
    /// Retries of idempotent calls and the retry budget.
    pub retry: RetryConfig,
    /// When the circuit breaker opens and closes.
    pub breaker: BreakerConfig,
}

impl UpstreamConfig {
    /// Documented defaults for everything but the name and targets: those of the client flags
    /// (`ClientArgs`), and the others here.
    pub fn new(name: impl Into<String>, endpoints: Vec<String>) -> Self {
        Self::with_settings(&ClientArgs::default(), name.into(), endpoints)
    }

    fn with_settings(args: &ClientArgs, name: String, endpoints: Vec<String>) -> Self {
        let retry = RetryConfig {
            max_attempts: args.upstream_max_attempts,
            ..RetryConfig::default()
        };
        let breaker = BreakerConfig {
            open_duration: args.breaker_open_duration,
            ..BreakerConfig::default()
        };
        Self {
            peer: name.clone(),
            name,
            endpoints,
            call_timeout: args.upstream_timeout,
            connect_timeout: Duration::from_secs(1),
            connections_per_endpoint: args.upstream_connections,
            resolve_interval: args.upstream_resolve_interval,
            eject_duration: Duration::from_secs(2),
            retry,
            breaker,
        }
    }

    /// The configuration of upstream `name` at `endpoints`: the service's client settings,
    /// then the `--upstream-option` overrides that name this upstream.
    pub fn from_args(
        args: &ClientArgs,
        name: &str,
        endpoints: Vec<String>,
    ) -> Result<Self, String> {
        let mut config = Self::with_settings(args, name.to_owned(), endpoints);
        for option in &args.upstream_options {
            let Some((key, value)) = option.split_once('=') else {
                return Err(format!("upstream option `{option}` is not NAME.KEY=VALUE"));
            };
            let Some((upstream, key)) = key.split_once('.') else {
                return Err(format!("upstream option `{option}` is not NAME.KEY=VALUE"));
            };
            if upstream != name {
                continue;
            }
            config
                .apply(key, value)
                .map_err(|e| format!("upstream option `{option}`: {e}"))?;
        }
        Ok(config)
    }

    fn apply(&mut self, key: &str, value: &str) -> Result<(), String> {
        let number = |v: &str| v.parse::<usize>().map_err(|e| e.to_string());
        match key {
            "call_timeout" => self.call_timeout = parse_duration(value)?,
            "connect_timeout" => self.connect_timeout = parse_duration(value)?,
            "connections" => self.connections_per_endpoint = number(value)?,
            "resolve_interval" => self.resolve_interval = parse_duration(value)?,
            "eject_duration" => self.eject_duration = parse_duration(value)?,
            "max_attempts" => {
                self.retry.max_attempts = value.parse().map_err(|e| format!("{e}"))?;
            }
            "breaker_window" => self.breaker.window = number(value)?,
            "breaker_minimum_calls" => self.breaker.minimum_calls = number(value)?,
            "breaker_failure_rate" => {
                self.breaker.failure_rate = value.parse().map_err(|e| format!("{e}"))?;
            }
            "breaker_open_duration" => self.breaker.open_duration = parse_duration(value)?,
            "breaker_half_open_calls" => self.breaker.half_open_calls = number(value)?,
            _ => return Err(format!("unknown key `{key}`")),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
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
        let member =
            UpstreamConfig::from_args(&args, "member", vec!["http://m:1".into()]).expect("valid");
        assert_eq!(member.call_timeout, Duration::from_millis(300));
        assert_eq!(member.breaker.minimum_calls, 4);
        assert_eq!(member.retry.max_attempts, 3);
        let book =
            UpstreamConfig::from_args(&args, "book", vec!["http://b:1".into()]).expect("valid");
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
                UpstreamConfig::from_args(&args, "member", vec!["http://m:1".into()]).is_err(),
                "{option}"
            );
        }
    }
}
