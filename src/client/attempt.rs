//! The innermost step of the client stack: send one attempt on the connection the balancer
//! chose, with the call's deadline on the wire and the trace context in the metadata.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status};

use super::call::{Failure, Routed};

/// Sends one attempt through `send`, the typed client call the caller supplied.
pub(crate) struct Attempt<F> {
    upstream: Arc<str>,
    send: Arc<F>,
    /// The upstream's attempt counter (retries and failovers included).
    attempts: Arc<AtomicU64>,
}

// === impl Attempt ===

impl<F> Attempt<F> {
    pub(crate) fn new(upstream: Arc<str>, send: F, attempts: Arc<AtomicU64>) -> Self {
        Self {
            upstream,
            send: Arc::new(send),
            attempts,
        }
    }
}

impl<F> Clone for Attempt<F> {
    fn clone(&self) -> Self {
        Self {
            upstream: self.upstream.clone(),
            send: self.send.clone(),
            attempts: self.attempts.clone(),
        }
    }
}

impl<M, R, F, Fut> tower::Service<Routed<M>> for Attempt<F>
where
    M: Send + 'static,
    R: Send + 'static,
    F: Fn(Channel, Request<M>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<R>, Status>> + Send + 'static,
{
    type Response = R;
    type Error = Failure;
    type Future = BoxFuture<'static, Result<R, Failure>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Failure>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, routed: Routed<M>) -> Self::Future {
        let Routed { call, channel } = routed;
        self.attempts.fetch_add(1, Ordering::Relaxed);
        crate::metrics::CLIENT_ATTEMPTS
            .with_label_values(&[&*self.upstream])
            .inc();
        if call.attempt > 1 {
            crate::metrics::CLIENT_RETRIES
                .with_label_values(&[&*self.upstream])
                .inc();
        }
        let mut request = Request::new(call.message);
        // The callee sees what is left of the deadline (a stream's own) as its `grpc-timeout`.
        request.set_timeout(
            call.stream_deadline
                .unwrap_or(call.deadline)
                .saturating_duration_since(Instant::now()),
        );
        // The callee continues the client span (the trace layer's task-local).
        let traceparent = crate::trace_context::current()
            .map(|trace| trace.to_traceparent())
            .unwrap_or_else(crate::trace_context::next_traceparent);
        if let Ok(traceparent) = traceparent.parse() {
            request.metadata_mut().insert("traceparent", traceparent);
        }
        // Whom the served request is for, for the callee's audit trail; the call itself is
        // authorized by this workload's identity.
        if let Some(user) = crate::auth::current_user()
            && let Ok(user) = user.parse()
        {
            request
                .metadata_mut()
                .insert(crate::auth::ON_BEHALF_OF_HEADER, user);
        }
        let sent = (self.send)(channel, request);
        let upstream = self.upstream.clone();
        Box::pin(async move {
            let deadline_exceeded = || {
                Failure::Answered(Status::deadline_exceeded(format!(
                    "{upstream}: deadline exceeded after {} attempt(s)",
                    call.attempt
                )))
            };
            match tokio::time::timeout_at(call.deadline.into(), sent).await {
                Ok(Ok(response)) => Ok(response.into_inner()),
                // tonic enforces `grpc-timeout` on the client too and reports it as CANCELLED;
                // nothing else cancels our calls, so past the deadline it is a deadline.
                Ok(Err(status))
                    if status.code() == Code::Cancelled
                        && Instant::now() + Duration::from_millis(1) >= call.deadline =>
                {
                    Err(deadline_exceeded())
                }
                Ok(Err(status)) => Err(Failure::Answered(status)),
                Err(_elapsed) => Err(deadline_exceeded()),
            }
        })
    }
}
