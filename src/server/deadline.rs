//! Deadlines: each call is served within its caller's `grpc-timeout`, capped by the server's
//! request timeout, and the deadline is known to the handler, so its outgoing calls inherit
//! what is left of it (see [`crate::deadline`]).
//!
//! Not tower's `Timeout`: that takes one fixed duration, while each call brings its own.

use std::convert::Infallible;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use tonic::body::Body;

/// How much earlier than tonic's timer this layer answers an expired deadline: tonic reports
/// an expired deadline as CANCELLED "Timeout expired", which callers in other languages do
/// not read as a deadline.
const DEADLINE_HEAD_START: Duration = Duration::from_millis(2);

/// The budget a call was served with, left in the response's extensions for the access log.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Budget(pub(crate) Duration);

/// Serves each call within its deadline, and answers DEADLINE_EXCEEDED when it passes.
#[derive(Clone, Copy)]
pub(crate) struct DeadlineLayer {
    request_timeout: Duration,
}

/// The service [`DeadlineLayer`] makes.
#[derive(Clone)]
pub(crate) struct Deadline<S> {
    inner: S,
    request_timeout: Duration,
}

// === impl DeadlineLayer ===

impl DeadlineLayer {
    pub(crate) fn new(request_timeout: Duration) -> Self {
        Self { request_timeout }
    }
}

impl<S> tower::Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;

    fn layer(&self, inner: S) -> Deadline<S> {
        Deadline {
            inner,
            request_timeout: self.request_timeout,
        }
    }
}

// === impl Deadline ===

impl<S> tower::Service<http::Request<Body>> for Deadline<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<http::Response<Body>, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let started = Instant::now();
        let budget = request
            .headers()
            .get("grpc-timeout")
            .and_then(|value| value.to_str().ok())
            .and_then(crate::deadline::parse_grpc_timeout)
            .map_or(self.request_timeout, |timeout| {
                timeout.min(self.request_timeout)
            });
        let served = crate::deadline::scope(started + budget, self.inner.call(request));
        let answer_by = started + budget.saturating_sub(DEADLINE_HEAD_START);
        Box::pin(async move {
            let mut response = match tokio::time::timeout_at(answer_by.into(), served).await {
                Ok(Ok(response)) => response,
                Err(_elapsed) => tonic::Status::deadline_exceeded(
                    "the call's deadline passed before it was served",
                )
                .into_http(),
            };
            response.extensions_mut().insert(Budget(budget));
            Ok(response)
        })
    }
}
