//! The one way a service calls another: an upstream is a list of endpoints behind one balanced
//! channel, and every call carries a deadline.

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

/// How to reach one upstream service.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// Endpoint URLs such as `http://127.0.0.1:50052`.
    pub endpoints: Vec<String>,
    /// Deadline given to each call unless the caller's own remaining budget is smaller.
    pub call_timeout: Duration,
    /// Longest wait for a TCP connection to one endpoint.
    pub connect_timeout: Duration,
}

impl UpstreamConfig {
    pub fn new(endpoints: Vec<String>) -> Self {
        Self {
            endpoints,
            call_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(1),
        }
    }
}

/// Errors building an upstream.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("upstream has no endpoints")]
    NoEndpoints,
    #[error("invalid endpoint `{endpoint}`: {source}")]
    InvalidEndpoint {
        endpoint: String,
        source: tonic::transport::Error,
    },
}

/// Builds a lazily connecting channel balanced over the configured endpoints.
pub fn channel(config: &UpstreamConfig) -> Result<Channel, UpstreamError> {
    if config.endpoints.is_empty() {
        return Err(UpstreamError::NoEndpoints);
    }
    let endpoints = config
        .endpoints
        .iter()
        .map(|url| {
            Endpoint::from_shared(url.clone())
                .map(|endpoint| {
                    endpoint
                        .connect_timeout(config.connect_timeout)
                        .tcp_nodelay(true)
                        .http2_keep_alive_interval(Duration::from_secs(30))
                        .keep_alive_while_idle(true)
                })
                .map_err(|source| UpstreamError::InvalidEndpoint {
                    endpoint: url.clone(),
                    source,
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Channel::balance_list(endpoints.into_iter()))
}

/// Wraps a message in a request whose deadline (`grpc-timeout`) is `timeout`, so the upstream
/// gives up when the caller does.
pub fn request<T>(message: T, timeout: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(timeout);
    request
}

/// The deadline budget a caller gave us, read from its `grpc-timeout` header, so that calls
/// made while serving it never outlive it.
pub fn incoming_timeout(metadata: &tonic::metadata::MetadataMap) -> Option<Duration> {
    let value = metadata.get("grpc-timeout")?.to_str().ok()?;
    if value.len() < 2 {
        return None;
    }
    let (amount, unit) = value.split_at(value.len() - 1);
    let amount: u64 = amount.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.saturating_mul(3600)),
        "M" => Duration::from_secs(amount.saturating_mul(60)),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// The deadline for a call to an upstream: its own timeout, capped by the caller's budget.
pub fn call_deadline(config: &UpstreamConfig, caller_budget: Option<Duration>) -> Duration {
    caller_budget.map_or(config.call_timeout, |budget| {
        budget.min(config.call_timeout)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_grpc_timeout_units() {
        let mut metadata = tonic::metadata::MetadataMap::new();
        assert_eq!(incoming_timeout(&metadata), None);
        metadata.insert("grpc-timeout", "250m".parse().expect("ascii"));
        assert_eq!(
            incoming_timeout(&metadata),
            Some(Duration::from_millis(250))
        );
        metadata.insert("grpc-timeout", "3S".parse().expect("ascii"));
        assert_eq!(incoming_timeout(&metadata), Some(Duration::from_secs(3)));
        metadata.insert("grpc-timeout", "3x".parse().expect("ascii"));
        assert_eq!(incoming_timeout(&metadata), None);
    }

    #[test]
    fn caller_budget_caps_the_call_deadline() {
        let config = UpstreamConfig::new(vec!["http://127.0.0.1:1".into()]);
        assert_eq!(call_deadline(&config, None), Duration::from_secs(2));
        assert_eq!(
            call_deadline(&config, Some(Duration::from_millis(300))),
            Duration::from_millis(300)
        );
        assert_eq!(
            call_deadline(&config, Some(Duration::from_secs(60))),
            Duration::from_secs(2)
        );
    }
}
