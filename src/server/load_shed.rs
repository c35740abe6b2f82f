//! Load shedding: beyond the concurrency limit, calls are refused at once with
//! RESOURCE_EXHAUSTED instead of waiting in a queue that grows memory and latency.
//!
//! The limit and the refusal are tower's own (`GlobalConcurrencyLimitLayer` under
//! `LoadShedLayer`, composed in [`super::stack`]); this layer turns tower's `Overloaded`
//! error into the gRPC answer a client understands, and counts it.

use std::convert::Infallible;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use tonic::body::Body;
use tower::BoxError;

/// Answers tower's `Overloaded` as RESOURCE_EXHAUSTED (clients retry it with backoff) and
/// counts it in `bookmesh_server_requests_shed_total`.
#[derive(Clone, Copy)]
pub(crate) struct ShedAsResourceExhaustedLayer {
    service: &'static str,
}

/// The service [`ShedAsResourceExhaustedLayer`] makes.
#[derive(Clone)]
pub(crate) struct ShedAsResourceExhausted<S> {
    inner: S,
    service: &'static str,
}

// === impl ShedAsResourceExhaustedLayer ===

impl ShedAsResourceExhaustedLayer {
    pub(crate) fn new(service: &'static str) -> Self {
        Self { service }
    }
}

impl<S> tower::Layer<S> for ShedAsResourceExhaustedLayer {
    type Service = ShedAsResourceExhausted<S>;

    fn layer(&self, inner: S) -> ShedAsResourceExhausted<S> {
        ShedAsResourceExhausted {
            inner,
            service: self.service,
        }
    }
}

// === impl ShedAsResourceExhausted ===

impl<S> tower::Service<http::Request<Body>> for ShedAsResourceExhausted<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = BoxError>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<http::Response<Body>, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Load shedding answers "ready" whenever its inner service is not, so this never
        // waits; an error here could only come from below, which cannot fail.
        match self.inner.poll_ready(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(_) => Poll::Ready(Ok(())),
        }
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let method = request.uri().path().to_owned();
        let service = self.service;
        let answer = self.inner.call(request);
        Box::pin(async move {
            match answer.await {
                Ok(response) => Ok(response),
                Err(error) if error.is::<tower::load_shed::error::Overloaded>() => {
                    tracing::debug!(target: "bookmesh::access", %method, "shed");
                    crate::metrics::SERVER_SHED
                        .with_label_values(&[service])
                        .inc();
                    Ok(tonic::Status::resource_exhausted(
                        "server overloaded: too many calls in flight, retry with backoff",
                    )
                    .into_http())
                }
                Err(error) => {
                    tracing::error!(%error, %method, "server stack failed");
                    Ok(tonic::Status::internal("internal error").into_http())
                }
            }
        })
    }
}
