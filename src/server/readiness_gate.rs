//! The readiness gate: no call reaches a handler before the service's tables exist.

use std::convert::Infallible;
use std::task::{Context, Poll};

use futures::future::{Either, Ready, ready};
use tonic::body::Body;

use crate::readiness::Readiness;

/// Answers UNAVAILABLE until the service first became ready (its migrations ran), instead of
/// letting a handler touch a database whose tables do not exist yet. Clients retry UNAVAILABLE
/// on another replica.
#[derive(Clone)]
pub(crate) struct ReadinessGateLayer {
    readiness: Readiness,
}

/// The service [`ReadinessGateLayer`] makes.
#[derive(Clone)]
pub(crate) struct ReadinessGate<S> {
    inner: S,
    readiness: Readiness,
}

// === impl ReadinessGateLayer ===

impl ReadinessGateLayer {
    pub(crate) fn new(readiness: Readiness) -> Self {
        Self { readiness }
    }
}

impl<S> tower::Layer<S> for ReadinessGateLayer {
    type Service = ReadinessGate<S>;

    fn layer(&self, inner: S) -> ReadinessGate<S> {
        ReadinessGate {
            inner,
            readiness: self.readiness.clone(),
        }
    }
}

// === impl ReadinessGate ===

impl<S> tower::Service<http::Request<Body>> for ReadinessGate<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Either<Ready<Result<http::Response<Body>, Infallible>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        if !self.readiness.has_started() {
            let status = tonic::Status::unavailable("service is starting: database not ready yet");
            return Either::Left(ready(Ok(status.into_http())));
        }
        // An injected database outage (docs/faults.md): every call fails as the store would.
        if crate::faults::database_outage() {
            let status =
                tonic::Status::unavailable("database unavailable (fault injected: db-outage)");
            return Either::Left(ready(Ok(status.into_http())));
        }
        Either::Right(self.inner.call(request))
    }
}
