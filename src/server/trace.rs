//! Tracing of served calls: a server span per call that continues the caller's trace (or
//! starts one), so the handler's log lines, outgoing calls and outbox events belong to it.

use std::convert::Infallible;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use tonic::body::Body;

use super::response::{grpc_status, rpc_method};

/// Opens the server span of each call and makes it the trace context of everything below.
#[derive(Clone, Copy)]
pub(crate) struct TraceLayer {
    service: &'static str,
}

/// The service [`TraceLayer`] makes.
#[derive(Clone)]
pub(crate) struct Trace<S> {
    inner: S,
    service: &'static str,
}

// === impl TraceLayer ===

impl TraceLayer {
    pub(crate) fn new(service: &'static str) -> Self {
        Self { service }
    }
}

impl<S> tower::Layer<S> for TraceLayer {
    type Service = Trace<S>;

    fn layer(&self, inner: S) -> Trace<S> {
        Trace {
            inner,
            service: self.service,
        }
    }
}

// === impl Trace ===

impl<S> tower::Service<http::Request<Body>> for Trace<S>
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
        let path = request.uri().path();
        let method = rpc_method(path);
        let caller = request
            .headers()
            .get("traceparent")
            .and_then(|value| value.to_str().ok())
            .and_then(crate::trace_context::TraceContext::parse);
        let span = tracing::info_span!(
            "rpc",
            otel.name = %span_name(path, method),
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.service = self.service,
            rpc.method = %method,
            rpc.grpc.status_code = tracing::field::Empty,
            peer.workload = tracing::field::Empty,
            enduser.id = tracing::field::Empty,
            trace_id = tracing::field::Empty,
            span_id = tracing::field::Empty,
        );
        let trace = crate::telemetry::enter_trace(&span, caller);
        let served = tracing::Instrument::instrument(
            crate::trace_context::scope(trace, self.inner.call(request)),
            span.clone(),
        );
        Box::pin(async move {
            let Ok(response) = served.await;
            span.record("rpc.grpc.status_code", grpc_status(&response));
            Ok(response)
        })
    }
}

/// The span's name: the full method for a declared one, `unknown` otherwise (tracing
/// backends index span names; a made-up method must not make a new one).
fn span_name<'a>(path: &'a str, method: &'a str) -> &'a str {
    if method == super::response::UNKNOWN_METHOD {
        super::response::UNKNOWN_METHOD
    } else {
        path.trim_start_matches('/')
    }
}
