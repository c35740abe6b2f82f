//! Metrics of outgoing calls: in flight, totals by final status, and duration with retries.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use futures::future::BoxFuture;
use tonic::Code;

use super::call::{Call, Failure};

/// Counts each logical call once, whatever number of attempts it took.
#[derive(Clone)]
pub(crate) struct MetricsLayer {
    upstream: Arc<str>,
}

/// The service [`MetricsLayer`] makes.
#[derive(Clone)]
pub(crate) struct Metrics<S> {
    inner: S,
    upstream: Arc<str>,
}

// === impl MetricsLayer ===

impl MetricsLayer {
    pub(crate) fn new(upstream: Arc<str>) -> Self {
        Self { upstream }
    }
}

impl<S> tower::Layer<S> for MetricsLayer {
    type Service = Metrics<S>;

    fn layer(&self, inner: S) -> Metrics<S> {
        Metrics {
            inner,
            upstream: self.upstream.clone(),
        }
    }
}

// === impl Metrics ===

impl<M, S> tower::Service<Call<M>> for Metrics<S>
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
        let upstream = self.upstream.clone();
        let method = call.method;
        let started = Instant::now();
        let in_flight = InFlight::start(upstream.clone());
        let outcome = self.inner.call(call);
        Box::pin(async move {
            let outcome = outcome.await;
            drop(in_flight);
            let code = outcome
                .as_ref()
                .err()
                .map_or(Code::Ok, |failure| failure.status().code()) as i32;
            crate::metrics::CLIENT_REQUESTS
                .with_label_values(&[&*upstream, method, code.to_string().as_str()])
                .inc();
            crate::metrics::CLIENT_DURATION
                .with_label_values(&[&*upstream, method])
                .observe(started.elapsed().as_secs_f64());
            outcome
        })
    }
}

/// Counts a call in `rpc_client_active_requests` for as long as it lives, so a call its caller
/// gave up on (its future dropped) leaves the gauge too.
struct InFlight(Arc<str>);

impl InFlight {
    fn start(upstream: Arc<str>) -> Self {
        crate::metrics::CLIENT_ACTIVE
            .with_label_values(&[&*upstream])
            .inc();
        Self(upstream)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        crate::metrics::CLIENT_ACTIVE
            .with_label_values(&[&*self.0])
            .dec();
    }
}
