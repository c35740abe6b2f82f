//! The breaker layer: fail fast while an upstream's circuit breaker ([`super::circuit`]) is
//! open, and feed it the outcome of every call it let through.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use futures::future::BoxFuture;
use tonic::{Code, Status};

use super::call::{Call, Failure};
use super::circuit::{Admission, CircuitBreaker};

/// Codes that say the upstream is unwell (they count against the breaker). Business answers
/// such as NOT_FOUND or FAILED_PRECONDITION mean the upstream works.
fn is_upstream_failure(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
            | Code::Internal
            | Code::Unknown
            | Code::DataLoss
    )
}

/// Codes a call gets when its time runs out (tonic's own client-side timeout is CANCELLED).
fn ran_out_of_time(code: Code) -> bool {
    matches!(code, Code::DeadlineExceeded | Code::Cancelled)
}

/// Fails calls fast while the upstream's breaker is open, and feeds it every attempt's outcome.
#[derive(Clone)]
pub(crate) struct BreakerLayer {
    breaker: Arc<CircuitBreaker>,
}

/// The service [`BreakerLayer`] makes.
#[derive(Clone)]
pub(crate) struct Breaker<S> {
    inner: S,
    breaker: Arc<CircuitBreaker>,
}

// === impl BreakerLayer ===

impl BreakerLayer {
    pub(crate) fn new(breaker: Arc<CircuitBreaker>) -> Self {
        Self { breaker }
    }
}

impl<S> tower::Layer<S> for BreakerLayer {
    type Service = Breaker<S>;

    fn layer(&self, inner: S) -> Breaker<S> {
        Breaker {
            inner,
            breaker: self.breaker.clone(),
        }
    }
}

// === impl Breaker ===

impl<M, S> tower::Service<Call<M>> for Breaker<S>
where
    S: tower::Service<Call<M>, Error = Failure>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = Failure;
    type Future = BoxFuture<'static, Result<S::Response, Failure>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Failure>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, call: Call<M>) -> Self::Future {
        let Ok(admission) = self.breaker.try_acquire(Instant::now()) else {
            let status = Status::unavailable(format!(
                "{}: circuit breaker open, failing fast",
                self.breaker.name()
            ));
            return Box::pin(async move { Err(Failure::Refused(status)) });
        };
        // Settled with the call's outcome; a call that says nothing about the upstream (or
        // whose caller dropped it) gives its half-open trial slot back.
        let permit = TrialPermit {
            breaker: self.breaker.clone(),
            admission,
            settled: false,
        };
        let callers_deadline = call.callers_deadline;
        let stream_open = call.stream_deadline.is_some();
        let outcome = self.inner.call(call);
        Box::pin(async move {
            let mut permit = permit;
            let outcome = outcome.await;
            let success = match &outcome {
                Ok(_) => Some(true),
                // The caller's own budget ran out (a client sending 5 ms deadlines): the
                // upstream was not given its call timeout, so this says nothing about it. One
                // careless caller must not open the breaker for everyone else.
                Err(Failure::Answered(status))
                    if callers_deadline && ran_out_of_time(status.code()) =>
                {
                    None
                }
                // A stream refused because its server serves as many streams as it allows
                // (watchers): a quota one caller can fill, not an unwell upstream. Counting
                // it would let one member's open tabs open the breaker for every call.
                Err(Failure::Answered(status))
                    if stream_open && status.code() == Code::ResourceExhausted =>
                {
                    None
                }
                Err(Failure::Answered(status)) => Some(!is_upstream_failure(status.code())),
                Err(Failure::NoReplica(_)) if callers_deadline => None,
                Err(Failure::NoReplica(_)) => Some(false),
                Err(Failure::Refused(_)) => None,
            };
            if let Some(success) = success {
                permit
                    .breaker
                    .record_admitted(permit.admission, success, Instant::now());
                permit.settled = true;
            }
            outcome
        })
    }
}

/// One call the breaker let through. Without this, a half-open breaker whose trial calls
/// ended without a verdict (the caller's own deadline ran out, the caller went away) would
/// keep its trial slots taken and refuse every call for ever.
struct TrialPermit {
    breaker: Arc<CircuitBreaker>,
    admission: Admission,
    settled: bool,
}

impl Drop for TrialPermit {
    fn drop(&mut self) {
        if !self.settled {
            self.breaker.release(self.admission);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn business_errors_do_not_count_against_the_breaker() {
        assert!(is_upstream_failure(Code::Unavailable));
        assert!(is_upstream_failure(Code::DeadlineExceeded));
        assert!(!is_upstream_failure(Code::NotFound));
        assert!(!is_upstream_failure(Code::FailedPrecondition));
        assert!(!is_upstream_failure(Code::InvalidArgument));
    }
}
