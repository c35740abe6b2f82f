//! Tracing of outgoing calls: a client span per logical call, child of the work in progress,
//! whose ids the attempts send in `traceparent`.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use tonic::Code;

use super::call::{Call, Failure};

/// Opens the client span of each call and makes it the trace context of everything below.
#[derive(Clone)]
pub(crate) struct TraceLayer {
    upstream: Arc<str>,
}

/// The service [`TraceLayer`] makes.
#[derive(Clone)]
pub(crate) struct Trace<S> {
    inner: S,
    upstream: Arc<str>,
}

// === impl TraceLayer ===

impl TraceLayer {
    pub(crate) fn new(upstream: Arc<str>) -> Self {
        Self { upstream }
    }
}

impl<S> tower::Layer<S> for TraceLayer {
    type Service = Trace<S>;

    fn layer(&self, inner: S) -> Trace<S> {
        Trace {
            inner,
            upstream: self.upstream.clone(),
        }
    }
}

// === impl Trace ===

impl<M, S> tower::Service<Call<M>> for Trace<S>
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
        let upstream = &*self.upstream;
        let method = call.method;
        let span = tracing::info_span!(
            "call",
            otel.name = %format!("{upstream}/{method}"),
            otel.kind = "client",
            rpc.system = "grpc",
            rpc.method = method,
            peer.service = upstream,
            rpc.grpc.status_code = tracing::field::Empty,
            trace_id = tracing::field::Empty,
            span_id = tracing::field::Empty,
        );
        let trace = crate::telemetry::enter_trace(&span, crate::trace_context::current());
        let outcome = tracing::Instrument::instrument(
            crate::trace_context::scope(trace, self.inner.call(call)),
            span.clone(),
        );
        Box::pin(async move {
            let outcome = outcome.await;
            let code = outcome
                .as_ref()
                .err()
                .map_or(Code::Ok, |failure| failure.status().code());
            span.record("rpc.grpc.status_code", code as i32);
            outcome
        })
    }
}
