//! What travels down the client stack: one logical call, and how it failed.

use std::time::Instant;

use tonic::Status;
use tonic::transport::Channel;

/// Whether a call may be sent more than once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idempotency {
    /// Reads and idempotent writes: retried on retryable codes.
    Idempotent,
    /// Writes whose repetition could apply twice: never retried.
    NotIdempotent,
}

/// One logical call to an upstream, as each layer of the stack sees it.
#[derive(Debug, Clone)]
pub(crate) struct Call<M> {
    /// The RPC's name (`GetMember`), for spans, metrics and messages.
    pub(crate) method: &'static str,
    pub(crate) message: M,
    pub(crate) idempotency: Idempotency,
    /// Every attempt ends by then: the deadline layer sets it before anything is sent.
    pub(crate) deadline: Instant,
    /// Whether `deadline` is the caller's (what the request being served had left) rather
    /// than the upstream's own call timeout. Running out of the caller's time says nothing
    /// about the upstream, so the breaker does not count it.
    pub(crate) callers_deadline: bool,
    /// For a server stream: when the stream itself ends, sent as the callee's `grpc-timeout`.
    /// `deadline` then bounds only the wait for the stream to open.
    pub(crate) stream_deadline: Option<Instant>,
    /// 1 for the first attempt; the retry layer counts up.
    pub(crate) attempt: u32,
}

/// A call the balancer has given a replica's connection.
pub(crate) struct Routed<M> {
    pub(crate) call: Call<M>,
    pub(crate) channel: Channel,
}

/// Why a call failed, as the layers must tell apart: only an attempt's answer is worth
/// another attempt or counts for the retry budget.
#[derive(Debug)]
pub(crate) enum Failure {
    /// A layer refused before anything was sent: the breaker is open or the deadline passed.
    /// Neither retried nor counted against the breaker.
    Refused(Status),
    /// No replica could be found within the deadline: counts against the breaker (the
    /// upstream is as good as down for this caller) but is not retried.
    NoReplica(Status),
    /// An attempt was sent and answered with this status (or ran out of time).
    Answered(Status),
}

impl Failure {
    pub(crate) fn status(&self) -> &Status {
        match self {
            Self::Refused(status) | Self::NoReplica(status) | Self::Answered(status) => status,
        }
    }

    pub(crate) fn into_status(self) -> Status {
        match self {
            Self::Refused(status) | Self::NoReplica(status) | Self::Answered(status) => status,
        }
    }
}
