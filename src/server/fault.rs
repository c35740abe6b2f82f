//! Injected faults at the server's edge (docs/faults.md): a call matching an active latency,
//! error or hang fault waits, is answered with the fault's code, or is never answered.
//!
//! It sits below the deadline layer, so a hang ends as DEADLINE_EXCEEDED at the call's own
//! deadline as a stuck handler would, and above the handler's layers, so metrics, traces and
//! the access log see the injected answer like any other.

use std::convert::Infallible;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use tonic::Status;
use tonic::body::Body;

use super::response::rpc_method;
use crate::faults::CallOutcome;

/// Applies the active call faults.
#[derive(Clone, Copy, Default)]
pub(crate) struct FaultLayer;

/// The service [`FaultLayer`] makes.
#[derive(Clone)]
pub(crate) struct Faulty<S> {
    inner: S,
}

impl<S> tower::Layer<S> for FaultLayer {
    type Service = Faulty<S>;

    fn layer(&self, inner: S) -> Faulty<S> {
        Faulty { inner }
    }
}

impl<S> tower::Service<http::Request<Body>> for Faulty<S>
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
        let Some(fault) = crate::faults::for_call(rpc_method(request.uri().path())) else {
            return Box::pin(self.inner.call(request));
        };
        // What happens after the latency is decided now: tower services are called in
        // order, so the handler's future (if the call reaches it) is made here.
        let next = match fault.outcome {
            CallOutcome::Handler => Next::Handler(self.inner.call(request)),
            CallOutcome::Error(code) => Next::Answer(Status::new(
                code,
                "fault injected (docs/faults.md): this answer is not the handler's",
            )),
            CallOutcome::Hang => Next::Hang,
        };
        Box::pin(async move {
            if !fault.latency.is_zero() {
                tokio::time::sleep(fault.latency).await;
            }
            match next {
                Next::Handler(handler) => handler.await,
                Next::Answer(status) => Ok(status.into_http()),
                Next::Hang => std::future::pending().await,
            }
        })
    }
}

enum Next<F> {
    Handler(F),
    Answer(Status),
    Hang,
}
