//! The access log: one DEBUG line per served call under the target `bookmesh::access`
//! (`RUST_LOG=info,bookmesh::access=debug` turns it on).

use std::convert::Infallible;
use std::task::{Context, Poll};
use std::time::Instant;

use futures::future::BoxFuture;
use tonic::body::Body;

use super::deadline::Budget;
use super::response::grpc_status;

/// Logs method, gRPC status, latency, the call's deadline budget and its trace id.
#[derive(Clone, Copy, Default)]
pub(crate) struct AccessLogLayer;

/// The service [`AccessLogLayer`] makes.
#[derive(Clone)]
pub(crate) struct AccessLog<S> {
    inner: S,
}

// === impl AccessLogLayer ===

impl<S> tower::Layer<S> for AccessLogLayer {
    type Service = AccessLog<S>;

    fn layer(&self, inner: S) -> AccessLog<S> {
        AccessLog { inner }
    }
}

// === impl AccessLog ===

impl<S> tower::Service<http::Request<Body>> for AccessLog<S>
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
        if !tracing::enabled!(target: "bookmesh::access", tracing::Level::DEBUG) {
            // Off by default: cost nothing but the check.
            return Box::pin(self.inner.call(request));
        }
        let method = request.uri().path().to_owned();
        let started = Instant::now();
        let served = self.inner.call(request);
        Box::pin(async move {
            // Polled inside the trace layer's scope: the call's own trace context.
            let trace_id = crate::trace_context::current()
                .map(|trace| trace.trace_id_hex())
                .unwrap_or_default();
            let Ok(response) = served.await;
            let budget_ms = response
                .extensions()
                .get::<Budget>()
                .map_or(0, |budget| budget.0.as_millis() as u64);
            tracing::debug!(
                target: "bookmesh::access",
                %method,
                grpc_status = grpc_status(&response),
                latency_us = started.elapsed().as_micros() as u64,
                budget_ms,
                %trace_id,
                "served"
            );
            Ok(response)
        })
    }
}
