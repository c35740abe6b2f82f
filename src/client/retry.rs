//! Retries as gRPC's retry design (gRFC A6) describes them: only for calls that are safe to
//! repeat, only on retryable codes, at most five attempts within the call's one deadline,
//! jittered exponential backoff, and a token bucket that stops retrying when most calls fail,
//! so retries never multiply the load on an upstream that is already down.

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use tonic::{Code, Status};

use super::call::{Call, Failure, Idempotency};
use crate::config::ClientArgs;

/// Retry settings of one upstream.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryConfig {
    /// Attempts in all, the first included (capped at 5, as in gRFC A6).
    pub max_attempts: u32,
    /// Bound of the first retry's random backoff.
    pub initial_backoff: Duration,
    /// Largest backoff bound, however many retries came before.
    pub max_backoff: Duration,
    /// Growth of the backoff bound per retry.
    pub backoff_multiplier: f64,
    /// Token bucket size: each failure takes a token, each success gives back `token_ratio`;
    /// retries stop while the bucket is at or below half.
    pub max_tokens: f64,
    /// Tokens a success gives back.
    pub token_ratio: f64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            // The one default a flag can change is written with the flag.
            max_attempts: ClientArgs::default().upstream_max_attempts,
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(500),
            backoff_multiplier: 2.0,
            max_tokens: 10.0,
            token_ratio: 0.1,
        }
    }
}

/// Codes worth another attempt: the call did not happen, or the server could not take it.
pub(super) fn is_retryable(code: Code) -> bool {
    matches!(code, Code::Unavailable | Code::ResourceExhausted)
}

impl RetryConfig {
    /// Attempts in all, at least one and at most five.
    pub fn attempts(&self) -> u32 {
        self.max_attempts.clamp(1, 5)
    }

    /// Backoff before attempt `retry` (1 for the first retry): uniformly random between zero
    /// and the exponential bound ("full jitter"), so retrying clients do not synchronise.
    pub fn backoff(&self, retry: u32) -> Duration {
        let exponent = retry.saturating_sub(1).min(16) as i32;
        let bound = self.initial_backoff.as_secs_f64() * self.backoff_multiplier.powi(exponent);
        let bound = bound.min(self.max_backoff.as_secs_f64());
        Duration::from_secs_f64(bound * fastrand::f64())
    }
}

/// The retry throttle of gRFC A6, one per upstream.
pub(super) struct RetryThrottle {
    max_tokens: f64,
    token_ratio: f64,
    tokens: Mutex<f64>,
}

impl RetryThrottle {
    /// A full bucket.
    pub(super) fn new(config: &RetryConfig) -> Self {
        Self {
            max_tokens: config.max_tokens,
            token_ratio: config.token_ratio,
            tokens: Mutex::new(config.max_tokens),
        }
    }

    /// A call succeeded (or failed in a way a retry could not fix): give back a little.
    pub(super) fn record_success(&self) {
        let mut tokens = self.lock();
        *tokens = (*tokens + self.token_ratio).min(self.max_tokens);
    }

    /// A call failed with a retryable code: take a token.
    pub(super) fn record_failure(&self) {
        let mut tokens = self.lock();
        *tokens = (*tokens - 1.0).max(0.0);
    }

    /// Whether a retry may be sent now.
    pub(super) fn allows_retry(&self) -> bool {
        *self.lock() > self.max_tokens / 2.0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, f64> {
        self.tokens
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Retries idempotent calls on retryable codes after a jittered backoff, while the retry
/// budget and the call's deadline allow.
#[derive(Clone)]
pub(crate) struct RetryLayer {
    upstream: Arc<str>,
    config: RetryConfig,
    throttle: Arc<RetryThrottle>,
}

/// The service [`RetryLayer`] makes.
#[derive(Clone)]
pub(crate) struct Retry<S> {
    inner: S,
    layer: RetryLayer,
}

// === impl RetryLayer ===

impl RetryLayer {
    pub(crate) fn new(
        upstream: Arc<str>,
        config: RetryConfig,
        throttle: Arc<RetryThrottle>,
    ) -> Self {
        Self {
            upstream,
            config,
            throttle,
        }
    }
}

impl<S> tower::Layer<S> for RetryLayer {
    type Service = Retry<S>;

    fn layer(&self, inner: S) -> Retry<S> {
        Retry {
            inner,
            layer: self.clone(),
        }
    }
}

// === impl Retry ===

impl<M, S> tower::Service<Call<M>> for Retry<S>
where
    M: Clone + Send + 'static,
    S: tower::Service<Call<M>, Error = Failure> + Clone + Send + 'static,
    S::Response: Send + 'static,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = Failure;
    type Future = BoxFuture<'static, Result<S::Response, Failure>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Failure>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut call: Call<M>) -> Self::Future {
        let mut inner = self.inner.clone();
        let RetryLayer {
            upstream,
            config,
            throttle,
        } = self.layer.clone();
        Box::pin(async move {
            use tower::ServiceExt as _;
            let max_attempts = match call.idempotency {
                Idempotency::Idempotent => config.attempts(),
                Idempotency::NotIdempotent => 1,
            };
            let deadline = call.deadline;
            let mut attempt = 0;
            loop {
                attempt += 1;
                if Instant::now() >= deadline {
                    return Err(Failure::Refused(Status::deadline_exceeded(format!(
                        "{upstream}: deadline exceeded before attempt {attempt}"
                    ))));
                }
                call.attempt = attempt;
                let status = match inner.ready().await?.call(call.clone()).await {
                    Ok(response) => {
                        throttle.record_success();
                        return Ok(response);
                    }
                    Err(Failure::Answered(status)) => status,
                    // Nothing was sent: nothing to retry, nothing learned about the upstream.
                    Err(other) => return Err(other),
                };
                // A stream refused for its quota (RESOURCE_EXHAUSTED on open) is not retried:
                // the quota stays full for a while, and retries would spend the budget the
                // unary calls share.
                let quota =
                    call.stream_deadline.is_some() && status.code() == Code::ResourceExhausted;
                let retryable = is_retryable(status.code()) && !quota;
                if retryable {
                    throttle.record_failure();
                } else {
                    throttle.record_success();
                }
                if attempt >= max_attempts || !retryable || !throttle.allows_retry() {
                    return Err(Failure::Answered(status));
                }
                let backoff = config.backoff(attempt);
                if Instant::now() + backoff >= deadline {
                    return Err(Failure::Answered(status));
                }
                tracing::debug!(%upstream, attempt, ?backoff, %status, "retrying");
                tokio::time::sleep(backoff).await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_jittered_under_an_exponential_bound() {
        let config = RetryConfig::default();
        for _ in 0..200 {
            assert!(config.backoff(1) <= Duration::from_millis(20));
            assert!(config.backoff(3) <= Duration::from_millis(80));
            assert!(config.backoff(30) <= Duration::from_millis(500));
        }
        let samples: Vec<_> = (0..50).map(|_| config.backoff(3)).collect();
        assert!(samples.iter().any(|d| *d != samples[0]), "jittered");
    }

    #[test]
    fn attempts_are_capped_at_five() {
        let config = RetryConfig {
            max_attempts: 9,
            ..RetryConfig::default()
        };
        assert_eq!(config.attempts(), 5);
    }

    #[test]
    fn the_throttle_stops_retries_when_most_calls_fail_and_recovers_on_success() {
        let throttle = RetryThrottle::new(&RetryConfig::default());
        assert!(throttle.allows_retry());
        for _ in 0..5 {
            throttle.record_failure();
        }
        assert!(!throttle.allows_retry(), "bucket at half: no retries");
        for _ in 0..11 {
            throttle.record_success();
        }
        assert!(throttle.allows_retry());
    }

    #[test]
    fn only_unavailable_and_resource_exhausted_are_retryable() {
        assert!(is_retryable(Code::Unavailable));
        assert!(is_retryable(Code::ResourceExhausted));
        for code in [
            Code::NotFound,
            Code::InvalidArgument,
            Code::DeadlineExceeded,
            Code::Internal,
            Code::FailedPrecondition,
        ] {
            assert!(!is_retryable(code), "{code:?}");
        }
    }
}
