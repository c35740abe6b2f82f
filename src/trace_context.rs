//! W3C trace context (`traceparent`) carried through every hop, synchronous and asynchronous.
//!
//! A server takes the caller's `traceparent` (or starts a new trace) and keeps it for the
//! request being served; outgoing calls send a child of it; events written to the outbox store
//! one; a consumer applying an event continues the event's trace, so the events it publishes in
//! turn belong to the same trace. One RentBook and everything it causes share one trace id.
//! (Spans are exported by the telemetry layer; this module only propagates the context.)

use std::future::Future;

tokio::task_local! {
    static CURRENT: TraceContext;
}

/// A position in a trace: the trace, the current span, and whether it is sampled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TraceContext {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub sampled: bool,
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    // All-zero ids are invalid in W3C trace context; the loop never runs twice in practice.
    while bytes.iter().all(|b| *b == 0) {
        bytes.iter_mut().for_each(|b| *b = fastrand::u8(..));
    }
    bytes
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != N * 2 {
        return None;
    }
    let mut bytes = [0u8; N];
    for (i, byte) in bytes.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    (!bytes.iter().all(|b| *b == 0)).then_some(bytes)
}

impl TraceContext {
    /// A new trace.
    pub(crate) fn new_root() -> Self {
        Self {
            trace_id: random_bytes(),
            span_id: random_bytes(),
            sampled: true,
        }
    }

    /// The next hop of the same trace.
    pub(crate) fn child(&self) -> Self {
        Self {
            span_id: random_bytes(),
            ..*self
        }
    }

    /// Parses `00-<trace id>-<span id>-<flags>`; `None` for anything else.
    pub(crate) fn parse(traceparent: &str) -> Option<Self> {
        let mut parts = traceparent.trim().split('-');
        let version = parts.next()?;
        let trace_id = unhex::<16>(parts.next()?)?;
        let span_id = unhex::<8>(parts.next()?)?;
        let flags = u8::from_str_radix(parts.next()?, 16).ok()?;
        if version != "00" || parts.next().is_some() {
            return None;
        }
        Some(Self {
            trace_id,
            span_id,
            sampled: flags & 1 == 1,
        })
    }

    pub(crate) fn to_traceparent(self) -> String {
        format!(
            "00-{}-{}-{:02x}",
            hex(&self.trace_id),
            hex(&self.span_id),
            u8::from(self.sampled)
        )
    }

    pub(crate) fn trace_id_hex(&self) -> String {
        hex(&self.trace_id)
    }

    pub(crate) fn span_id_hex(&self) -> String {
        hex(&self.span_id)
    }
}

/// Runs `future` as part of `context`.
pub(crate) async fn scope<F: Future>(context: TraceContext, future: F) -> F::Output {
    CURRENT.scope(context, future).await
}

/// The trace context of the work in progress, if any.
pub(crate) fn current() -> Option<TraceContext> {
    CURRENT.try_with(|context| *context).ok()
}

/// The `traceparent` to send or store for the next hop: a child of the current context, or a
/// new trace when there is none.
pub(crate) fn next_traceparent() -> String {
    current()
        .map_or_else(TraceContext::new_root, |context| context.child())
        .to_traceparent()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparents_round_trip_and_reject_nonsense() {
        let context = TraceContext::new_root();
        assert_eq!(
            TraceContext::parse(&context.to_traceparent()),
            Some(context)
        );
        let example = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let parsed = TraceContext::parse(example).expect("the W3C example");
        assert_eq!(parsed.to_traceparent(), example);
        for bad in [
            "",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert_eq!(TraceContext::parse(bad), None, "{bad:?}");
        }
    }

    #[tokio::test]
    async fn children_keep_the_trace_and_change_the_span() {
        let root = TraceContext::new_root();
        let next = scope(root, async { next_traceparent() }).await;
        let next = TraceContext::parse(&next).expect("valid");
        assert_eq!(next.trace_id, root.trace_id);
        assert_ne!(next.span_id, root.span_id);
        assert!(current().is_none());
    }
}
