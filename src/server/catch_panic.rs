//! A handler that panics answers INTERNAL instead of taking its connection down.
//!
//! Without this layer a panic unwinds the connection's task: the caller sees its connection
//! reset, and so does every other call multiplexed on it. Here it ends only its own call, is
//! counted (`bookmesh_server_panics_total`) and logged once with the method; the process and
//! its other calls go on. A panic is still a bug: the metric is worth an alert.

use std::convert::Infallible;
use std::panic::AssertUnwindSafe;
use std::task::{Context, Poll};

use futures::FutureExt as _;
use futures::future::BoxFuture;
use tonic::Status;
use tonic::body::Body;

use super::response::rpc_method;

/// Turns a handler's panic into an INTERNAL answer.
#[derive(Clone, Copy)]
pub(crate) struct CatchPanicLayer {
    service: &'static str,
}

/// The service [`CatchPanicLayer`] makes.
#[derive(Clone)]
pub(crate) struct CatchPanic<S> {
    inner: S,
    service: &'static str,
}

// === impl CatchPanicLayer ===

impl CatchPanicLayer {
    pub(crate) fn new(service: &'static str) -> Self {
        Self { service }
    }
}

impl<S> tower::Layer<S> for CatchPanicLayer {
    type Service = CatchPanic<S>;

    fn layer(&self, inner: S) -> CatchPanic<S> {
        CatchPanic {
            inner,
            service: self.service,
        }
    }
}

// === impl CatchPanic ===

impl<S> tower::Service<http::Request<Body>> for CatchPanic<S>
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
        let service = self.service;
        let method = rpc_method(request.uri().path()).to_owned();
        // A panic while the handler is being called, not only while its future runs.
        let called = std::panic::catch_unwind(AssertUnwindSafe(|| self.inner.call(request)));
        Box::pin(async move {
            let outcome = match called {
                Ok(served) => AssertUnwindSafe(served).catch_unwind().await,
                Err(panic) => Err(panic),
            };
            match outcome {
                Ok(answered) => answered,
                Err(panic) => {
                    let what = panic
                        .downcast_ref::<&str>()
                        .map(|s| (*s).to_owned())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "(not a string)".to_owned());
                    crate::metrics::SERVER_PANICS
                        .with_label_values(&[service, method.as_str()])
                        .inc();
                    tracing::error!(
                        rpc.service = service,
                        rpc.method = %method,
                        panic = %what,
                        "handler panicked; answered INTERNAL"
                    );
                    Ok(Status::internal("internal error").into_http())
                }
            }
        })
    }
}
