//! Ends open response streams when the drain begins.
//!
//! A graceful shutdown waits for every call in flight, and a server stream (a health
//! `Watch`, an event `Subscribe`) never finishes by itself: one open stream would hold the
//! process for the whole grace period and then be cut off. Instead, when the drain begins,
//! every response stream still open ends between two messages with UNAVAILABLE, a status gRPC
//! clients retry, so a watcher reconnects to another replica and a subscriber resumes from
//! its cursor. Unary calls are untouched: their handlers finish and answer as usual.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use http_body::Frame;
use tokio::sync::watch;
use tonic::Status;
use tonic::codegen::Bytes;

/// What the stream's last frame says.
const DRAIN_MESSAGE: &str = "server is shutting down: reconnect (to another replica)";

/// Turns to `true` when the drain begins.
#[derive(Clone)]
pub(crate) struct Draining(watch::Receiver<bool>);

/// Begins the drain for every stream of one server.
pub(crate) struct BeginDrain(watch::Sender<bool>);

/// A drain signal and its trigger.
pub(crate) fn drain_signal() -> (BeginDrain, Draining) {
    let (begin, draining) = watch::channel(false);
    (BeginDrain(begin), Draining(draining))
}

impl BeginDrain {
    pub(crate) fn begin(&self) {
        self.0.send_replace(true);
    }
}

/// Wraps every response body so it ends when the drain begins.
#[derive(Clone)]
pub(crate) struct EndStreamsOnDrainLayer {
    draining: Draining,
}

/// The service [`EndStreamsOnDrainLayer`] makes.
#[derive(Clone)]
pub(crate) struct EndStreamsOnDrain<S> {
    inner: S,
    draining: Draining,
}

/// A response body that ends with UNAVAILABLE once the drain began, if it is still waiting
/// for its next message then.
pub(crate) struct DrainableBody<B> {
    inner: B,
    draining: Draining,
    /// Made the first time the body waits, so unary answers (never waiting) allocate nothing.
    drained: Option<BoxFuture<'static, ()>>,
    ended: bool,
}

// === impl EndStreamsOnDrainLayer ===

impl EndStreamsOnDrainLayer {
    pub(crate) fn new(draining: Draining) -> Self {
        Self { draining }
    }
}

impl<S> tower::Layer<S> for EndStreamsOnDrainLayer {
    type Service = EndStreamsOnDrain<S>;

    fn layer(&self, inner: S) -> EndStreamsOnDrain<S> {
        EndStreamsOnDrain {
            inner,
            draining: self.draining.clone(),
        }
    }
}

// === impl EndStreamsOnDrain ===

impl<S, Req, B> tower::Service<Req> for EndStreamsOnDrain<S>
where
    S: tower::Service<Req, Response = http::Response<B>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<DrainableBody<B>>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        let draining = self.draining.clone();
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            Ok(response.map(|inner| DrainableBody {
                inner,
                draining,
                drained: None,
                ended: false,
            }))
        })
    }
}

// === impl DrainableBody ===

impl<B> http_body::Body for DrainableBody<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<Status>,
{
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => return Poll::Ready(frame.map(|f| f.map_err(Into::into))),
            Poll::Pending => {}
        }
        // Waiting for the next message: the only point where ending cannot cut one in half.
        let drained = this.drained.get_or_insert_with(|| {
            let mut draining = this.draining.0.clone();
            Box::pin(async move {
                // An error means the server is gone: end the stream then too.
                let _ = draining.wait_for(|begun| *begun).await;
            })
        });
        if drained.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        this.ended = true;
        let status = Status::unavailable(DRAIN_MESSAGE);
        let mut trailers = http::HeaderMap::new();
        if status.add_header(&mut trailers).is_err() {
            // Only fails for a message that is not a valid header; ours is.
            return Poll::Ready(None);
        }
        Poll::Ready(Some(Ok(Frame::trailers(trailers))))
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
