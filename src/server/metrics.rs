//! Metrics of served calls (OpenTelemetry's `rpc.server.*` conventions in Prometheus form):
//! totals by method and status, duration, and calls in flight.

use std::convert::Infallible;
use std::task::{Context, Poll};
use std::time::Instant;

use futures::future::BoxFuture;
use tonic::body::Body;

use super::response::{grpc_status, rpc_method};

/// Counts every call that got past the readiness gate and the load shedder.
#[derive(Clone, Copy)]
pub(crate) struct MetricsLayer {
    service: &'static str,
}

/// The service [`MetricsLayer`] makes.
#[derive(Clone)]
pub(crate) struct Metrics<S> {
    inner: S,
    service: &'static str,
}

// === impl MetricsLayer ===

impl MetricsLayer {
    pub(crate) fn new(service: &'static str) -> Self {
        Self { service }
    }
}

impl<S> tower::Layer<S> for MetricsLayer {
    type Service = Metrics<S>;

    fn layer(&self, inner: S) -> Metrics<S> {
        Metrics {
            inner,
            service: self.service,
        }
    }
}

// === impl Metrics ===

impl<S> tower::Service<http::Request<Body>> for Metrics<S>
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
        let started = Instant::now();
        let active = Active::start(service);
        let served = self.inner.call(request);
        Box::pin(async move {
            let Ok(response) = served.await;
            drop(active);
            crate::metrics::SERVER_REQUESTS
                .with_label_values(&[service, method.as_str(), grpc_status(&response)])
                .inc();
            crate::metrics::SERVER_DURATION
                .with_label_values(&[service, method.as_str()])
                .observe(started.elapsed().as_secs_f64());
            Ok(response)
        })
    }
}

/// Counts a call in `rpc_server_active_requests` for as long as it lives, so a call dropped
/// unanswered (its connection reset) leaves the gauge too.
struct Active(&'static str);

impl Active {
    fn start(service: &'static str) -> Self {
        crate::metrics::SERVER_ACTIVE
            .with_label_values(&[service])
            .inc();
        Self(service)
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        crate::metrics::SERVER_ACTIVE
            .with_label_values(&[self.0])
            .dec();
    }
}
