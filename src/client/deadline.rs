//! Deadline propagation: a call made while serving a request ends before that request's own
//! deadline, with a margin left to answer it.

use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use super::call::Call;

/// Time kept back from a served request's deadline for answering it: a tenth of what is left,
/// within these bounds, so the caller's answer reaches its own caller before that one gives up.
const MIN_RESPONSE_MARGIN: Duration = Duration::from_millis(5);
const MAX_RESPONSE_MARGIN: Duration = Duration::from_millis(100);

/// Tightens a call's deadline (the upstream's call timeout) to what the request being served
/// has left (see [`crate::deadline`]), minus the margin to answer it.
#[derive(Clone, Copy, Default)]
pub(crate) struct PropagateDeadlineLayer;

/// The service [`PropagateDeadlineLayer`] makes.
#[derive(Clone)]
pub(crate) struct PropagateDeadline<S> {
    inner: S,
}

// === impl PropagateDeadlineLayer ===

impl<S> tower::Layer<S> for PropagateDeadlineLayer {
    type Service = PropagateDeadline<S>;

    fn layer(&self, inner: S) -> PropagateDeadline<S> {
        PropagateDeadline { inner }
    }
}

// === impl PropagateDeadline ===

impl<M, S: tower::Service<Call<M>>> tower::Service<Call<M>> for PropagateDeadline<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut call: Call<M>) -> S::Future {
        if let Some(served) = crate::deadline::current() {
            let callers = answer_margin_before(served);
            if callers < call.deadline {
                call.deadline = callers;
                call.callers_deadline = true;
            }
        }
        self.inner.call(call)
    }
}

/// The served request's deadline less the time kept back to answer it.
fn answer_margin_before(request_deadline: Instant) -> Instant {
    let left = request_deadline.saturating_duration_since(Instant::now());
    let margin = (left / 10).clamp(MIN_RESPONSE_MARGIN, MAX_RESPONSE_MARGIN);
    request_deadline
        .checked_sub(margin)
        .unwrap_or(request_deadline)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_margin_is_a_tenth_of_what_is_left_within_bounds() {
        let now = Instant::now();
        let in_a_second = now + Duration::from_secs(1);
        let margin = in_a_second - answer_margin_before(in_a_second);
        assert!(margin <= MAX_RESPONSE_MARGIN && margin >= Duration::from_millis(99));
        let soon = now + Duration::from_millis(20);
        assert_eq!(soon - answer_margin_before(soon), MIN_RESPONSE_MARGIN);
    }
}
