//! What one client connection may cost: a bound on connections open at once, and gRPC's
//! keepalive enforcement (a client may not ping faster than the server allows).
//!
//! Both sit under HTTP/2, on the byte stream: the connection limit where connections are
//! accepted, the ping check in a scanner that reads the HTTP/2 frame headers going in and out
//! (it never buffers or changes a byte). The other HTTP/2 limits (reset streams, header list
//! size, streams per connection) are hyper's, set in [`super::serve`].

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt as _};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::transport::server::Connected;

/// Pings sooner than the minimum interval tolerated before the connection is closed, as in
/// gRPC's enforcement policy (grpc-go allows two "ping strikes").
const PING_STRIKES_ALLOWED: u32 = 2;

/// The limits every accepted connection is held to.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ConnectionLimits {
    pub(crate) max_connections: usize,
    pub(crate) min_ping_interval: Duration,
}

/// Accepted connections, each holding one of `limits.max_connections` slots while it lives;
/// one accepted while none is free is closed at once.
pub(crate) fn limit_connections<IO, E>(
    incoming: impl Stream<Item = Result<IO, E>> + Send + 'static,
    limits: ConnectionLimits,
) -> impl Stream<Item = Result<Guarded<IO>, E>> + Send + 'static
where
    IO: Send + 'static,
    E: Send + 'static,
{
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    incoming.filter_map(move |accepted| {
        let slot = slots.clone().try_acquire_owned();
        async move {
            let io = match accepted {
                Ok(io) => io,
                Err(error) => return Some(Err(error)),
            };
            match slot {
                Ok(slot) => Some(Ok(Guarded::new(io, slot, limits.min_ping_interval))),
                Err(_) => {
                    crate::metrics::SERVER_CONNECTIONS_REFUSED
                        .with_label_values(&["limit"])
                        .inc();
                    tracing::warn!(
                        max_connections = limits.max_connections,
                        "connection limit reached: closing a new connection"
                    );
                    // Dropping it closes it; the client sees the connection reset.
                    drop(io);
                    None
                }
            }
        }
    })
}

/// An accepted connection: its slot, and the ping check on what it sends and receives.
pub(crate) struct Guarded<IO> {
    io: IO,
    _slot: OwnedSemaphorePermit,
    received: FrameScanner,
    sent: FrameScanner,
    pings: PingPolicy,
}

impl<IO> Guarded<IO> {
    fn new(io: IO, slot: OwnedSemaphorePermit, min_ping_interval: Duration) -> Self {
        crate::metrics::SERVER_CONNECTIONS
            .with_label_values::<&str>(&[])
            .inc();
        Self {
            io,
            _slot: slot,
            // A client starts with the 24-byte connection preface; a server with a frame.
            received: FrameScanner::after(PREFACE_LEN),
            sent: FrameScanner::after(0),
            pings: PingPolicy::new(min_ping_interval),
        }
    }
}

impl<IO> Drop for Guarded<IO> {
    fn drop(&mut self) {
        crate::metrics::SERVER_CONNECTIONS
            .with_label_values::<&str>(&[])
            .dec();
    }
}

impl<IO: Connected> Connected for Guarded<IO> {
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> IO::ConnectInfo {
        self.io.connect_info()
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Guarded<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        let read = Pin::new(&mut this.io).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = read {
            let now = Instant::now();
            let mut flood = false;
            this.received.scan(&buf.filled()[before..], |frame| {
                flood |= this.pings.received(frame, now);
            });
            if flood {
                crate::metrics::SERVER_CONNECTIONS_REFUSED
                    .with_label_values(&["ping_flood"])
                    .inc();
                tracing::warn!("client pings faster than the minimum ping interval: closing");
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    "too many pings",
                )));
            }
        }
        read
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Guarded<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let written = Pin::new(&mut this.io).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = written {
            this.sent.scan(&buf[..n], |frame| this.pings.sent(frame));
        }
        written
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// The client connection preface, `PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`.
const PREFACE_LEN: usize = 24;
const FRAME_HEADER_LEN: usize = 9;
const FRAME_DATA: u8 = 0x0;
const FRAME_HEADERS: u8 = 0x1;
const FRAME_PING: u8 = 0x6;
const FLAG_ACK: u8 = 0x1;

/// The type and flags of one HTTP/2 frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FrameHead {
    kind: u8,
    flags: u8,
}

/// Finds the frame headers in one direction of an HTTP/2 byte stream, however the bytes are
/// split: it keeps only the partial header it is in and the count of payload bytes to skip.
struct FrameScanner {
    skip: usize,
    header: [u8; FRAME_HEADER_LEN],
    filled: usize,
}

impl FrameScanner {
    fn after(skip: usize) -> Self {
        Self {
            skip,
            header: [0; FRAME_HEADER_LEN],
            filled: 0,
        }
    }

    fn scan(&mut self, mut bytes: &[u8], mut on_frame: impl FnMut(FrameHead)) {
        while !bytes.is_empty() {
            if self.skip > 0 {
                let skipped = self.skip.min(bytes.len());
                self.skip -= skipped;
                bytes = &bytes[skipped..];
                continue;
            }
            let take = (FRAME_HEADER_LEN - self.filled).min(bytes.len());
            self.header[self.filled..self.filled + take].copy_from_slice(&bytes[..take]);
            self.filled += take;
            bytes = &bytes[take..];
            if self.filled == FRAME_HEADER_LEN {
                let h = self.header;
                self.skip = usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
                self.filled = 0;
                on_frame(FrameHead {
                    kind: h[3],
                    flags: h[4],
                });
            }
        }
    }
}

/// gRPC's keepalive enforcement: a ping received less than the minimum interval after the
/// previous one, with nothing sent by the server in between, is a strike; too many strikes
/// close the connection. Data or headers sent by the server forgive (a client's BDP pings
/// follow the data it receives, as gRPC clients send them).
struct PingPolicy {
    min_interval: Duration,
    last_ping: Option<Instant>,
    strikes: u32,
}

impl PingPolicy {
    fn new(min_interval: Duration) -> Self {
        Self {
            min_interval,
            last_ping: None,
            strikes: 0,
        }
    }

    /// Whether the connection must close after receiving `frame`.
    fn received(&mut self, frame: FrameHead, now: Instant) -> bool {
        if frame.kind != FRAME_PING || frame.flags & FLAG_ACK != 0 {
            return false;
        }
        if let Some(last) = self.last_ping
            && now.duration_since(last) < self.min_interval
        {
            self.strikes += 1;
        }
        self.last_ping = Some(now);
        self.strikes > PING_STRIKES_ALLOWED
    }

    fn sent(&mut self, frame: FrameHead) {
        if matches!(frame.kind, FRAME_DATA | FRAME_HEADERS) {
            self.last_ping = None;
            self.strikes = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, payload: usize) -> Vec<u8> {
        let mut bytes = vec![
            (payload >> 16) as u8,
            (payload >> 8) as u8,
            payload as u8,
            kind,
            flags,
            0,
            0,
            0,
            0,
        ];
        bytes.resize(FRAME_HEADER_LEN + payload, 0xAB);
        bytes
    }

    #[test]
    fn the_scanner_finds_every_frame_however_the_bytes_are_split() {
        let mut stream = vec![0u8; PREFACE_LEN];
        stream.extend(frame(0x4, 0, 12));
        stream.extend(frame(FRAME_PING, 0, 8));
        stream.extend(frame(FRAME_HEADERS, 0x4, 300));
        stream.extend(frame(FRAME_PING, FLAG_ACK, 8));
        for chunk in [1, 2, 5, 9, 10, 64, stream.len()] {
            let mut scanner = FrameScanner::after(PREFACE_LEN);
            let mut seen = Vec::new();
            for part in stream.chunks(chunk) {
                scanner.scan(part, |head| seen.push((head.kind, head.flags)));
            }
            assert_eq!(
                seen,
                vec![
                    (0x4, 0),
                    (FRAME_PING, 0),
                    (FRAME_HEADERS, 0x4),
                    (FRAME_PING, FLAG_ACK)
                ],
                "chunks of {chunk}"
            );
        }
    }

    #[test]
    fn the_third_early_ping_closes_and_server_data_forgives() {
        let ping = FrameHead {
            kind: FRAME_PING,
            flags: 0,
        };
        let now = Instant::now();
        let mut policy = PingPolicy::new(Duration::from_secs(10));
        assert!(!policy.received(ping, now));
        assert!(!policy.received(ping, now));
        assert!(!policy.received(ping, now));
        policy.sent(FrameHead {
            kind: FRAME_DATA,
            flags: 0,
        });
        assert!(!policy.received(ping, now));
        assert!(!policy.received(ping, now));
        assert!(!policy.received(ping, now));
        assert!(policy.received(ping, now), "third strike");
        let mut patient = PingPolicy::new(Duration::from_secs(10));
        for i in 0..10 {
            assert!(!patient.received(ping, now + Duration::from_secs(11 * i)));
        }
        let ack = FrameHead {
            kind: FRAME_PING,
            flags: FLAG_ACK,
        };
        let mut acks = PingPolicy::new(Duration::from_secs(10));
        for _ in 0..10 {
            assert!(
                !acks.received(ack, now),
                "acks of the server's pings are fine"
            );
        }
    }
}
