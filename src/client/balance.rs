//! Load balancing over an upstream's replicas: power of two choices on calls in flight, among
//! the replicas discovery found and that are not ejected, with transparent failover to another
//! replica when the chosen one refused or is leaving.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use futures::future::BoxFuture;
use tonic::{Code, Status};

use super::call::{Call, Failure, Idempotency, Routed};
use super::replica::{InFlight, Replica, ReplicaSet};

/// Transparent failovers per attempt: enough to skip a few dead replicas, bounded so a call
/// whose every replica refuses ends quickly.
const MAX_TRANSPARENT_RETRIES: u32 = 3;

/// Picks a replica for each attempt and sends it on one of its connections.
#[derive(Clone)]
pub(crate) struct BalanceLayer {
    replicas: Arc<ReplicaSet>,
}

/// The service [`BalanceLayer`] makes.
#[derive(Clone)]
pub(crate) struct Balance<S> {
    inner: S,
    replicas: Arc<ReplicaSet>,
}

// === impl BalanceLayer ===

impl BalanceLayer {
    pub(crate) fn new(replicas: Arc<ReplicaSet>) -> Self {
        Self { replicas }
    }
}

impl<S> tower::Layer<S> for BalanceLayer {
    type Service = Balance<S>;

    fn layer(&self, inner: S) -> Balance<S> {
        Balance {
            inner,
            replicas: self.replicas.clone(),
        }
    }
}

// === impl Balance ===

impl<M, S> tower::Service<Call<M>> for Balance<S>
where
    M: Clone + Send + 'static,
    S: tower::Service<Routed<M>, Error = Failure> + Clone + Send + 'static,
    S::Response: Send + 'static,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = Failure;
    type Future = BoxFuture<'static, Result<S::Response, Failure>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Failure>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, call: Call<M>) -> Self::Future {
        let mut inner = self.inner.clone();
        let replicas = self.replicas.clone();
        Box::pin(async move {
            use tower::ServiceExt as _;
            let config = replicas.config();
            let mut failovers = 0;
            loop {
                if Instant::now() >= call.deadline {
                    return Err(Failure::Refused(Status::deadline_exceeded(format!(
                        "{}: deadline exceeded before attempt {}",
                        config.name, call.attempt
                    ))));
                }
                let Some(replica) = pick(&replicas, call.deadline).await else {
                    return Err(Failure::NoReplica(Status::unavailable(format!(
                        "{}: no replica available",
                        config.name
                    ))));
                };
                let in_flight = InFlight::start(replica.clone());
                let routed = Routed {
                    call: call.clone(),
                    channel: replica.channel(),
                };
                let outcome = inner.ready().await?.call(routed).await;
                drop(in_flight);
                let Err(Failure::Answered(status)) = outcome else {
                    return outcome;
                };
                let never_sent = never_left_the_client(&status);
                let status = lost_connection_as_unavailable(status, &config.name);
                let code = status.code();
                // A replica that fails while others are healthy is that replica's problem (it
                // is leaving, draining or restarting), not an outage of the upstream.
                let replica_local = code == Code::Unavailable
                    && !replica.is_ejected(Instant::now())
                    && has_other_healthy_replica(&replicas, &replica);
                if code == Code::Unavailable || never_sent {
                    // Refused, draining, starting or gone: send nothing there for a while, and
                    // look again at what the name resolves to.
                    replica.eject(Instant::now() + config.eject_duration);
                    replicas.request_refresh();
                }
                let failover =
                    never_sent || (replica_local && call.idempotency == Idempotency::Idempotent);
                if failover && failovers < MAX_TRANSPARENT_RETRIES {
                    // Another replica, without charging the retry budget or the breaker (both
                    // sit above): a call that never reached a server (gRFC A6; safe even when
                    // not idempotent), or an idempotent call that a single leaving replica
                    // refused. Upstream-wide failures go up to the retry layer.
                    failovers += 1;
                    tracing::debug!(upstream = %config.name, %status, never_sent, "trying another replica");
                    continue;
                }
                return Err(Failure::Answered(status));
            }
        })
    }
}

/// Power of two choices on in-flight calls among replicas that are not ejected (all of them if
/// every one is ejected: a stale ejection must not stop all traffic). Waits for a resolution
/// while none is known, within `deadline`.
pub(crate) async fn pick(replicas: &ReplicaSet, deadline: Instant) -> Option<Arc<Replica>> {
    let mut resolutions = replicas.resolutions();
    loop {
        let known = replicas.snapshot();
        if !known.is_empty() {
            let now = Instant::now();
            let healthy: Vec<&Arc<Replica>> = known.iter().filter(|r| !r.is_ejected(now)).collect();
            let candidates: Vec<&Arc<Replica>> = if healthy.is_empty() {
                known.iter().collect()
            } else {
                healthy
            };
            return Some(power_of_two_choices(&candidates).clone());
        }
        // Nothing resolved yet (or the name resolves to nothing): ask for a resolution and
        // wait for it, within the deadline.
        replicas.request_refresh();
        let waited = tokio::time::timeout_at(deadline.into(), resolutions.changed()).await;
        if !matches!(waited, Ok(Ok(()))) {
            return None;
        }
    }
}

fn has_other_healthy_replica(replicas: &ReplicaSet, failed: &Arc<Replica>) -> bool {
    let now = Instant::now();
    replicas
        .snapshot()
        .iter()
        .any(|replica| !Arc::ptr_eq(replica, failed) && !replica.is_ejected(now))
}

fn power_of_two_choices<'a>(candidates: &[&'a Arc<Replica>]) -> &'a Arc<Replica> {
    if candidates.len() == 1 {
        return candidates[0];
    }
    let first = fastrand::usize(..candidates.len());
    let mut second = fastrand::usize(..candidates.len() - 1);
    if second >= first {
        second += 1;
    }
    let (a, b) = (candidates[first], candidates[second]);
    if b.in_flight() < a.in_flight() { b } else { a }
}

/// Whether a failed call never reached a server's handler, so sending it elsewhere cannot apply
/// it twice (gRFC A6's transparent retry). Three ways, all seen while a replica shuts down:
/// - connecting failed (tonic puts a `ConnectError` in the error's source chain);
/// - the connection closed while the request still waited to be written (hyper: canceled, "a
///   pending item was dropped before ever being processed");
/// - the server's GOAWAY refused the stream (h2 fails exactly the streams above the GOAWAY's
///   last processed id, and those opened after it, with the remote GOAWAY error; a stream cut
///   by the connection closing gets an I/O error instead).
///
/// A server's answer never carries any of these.
/// A call whose connection broke under it (the replica was killed mid-call) fails locally
/// with UNKNOWN "transport error": tonic's code for an I/O error it cannot classify. No
/// server answered it, so for the caller it is UNAVAILABLE, the code gRPC clients retry and
/// act on. An UNKNOWN the server sent has no local source and stays what it is.
fn lost_connection_as_unavailable(status: Status, upstream: &str) -> Status {
    use std::error::Error as _;
    if status.code() != Code::Unknown || status.source().is_none() {
        return status;
    }
    let mut detail = status.message().to_owned();
    let mut source = status.source();
    while let Some(error) = source {
        detail.push_str(": ");
        detail.push_str(&error.to_string());
        source = error.source();
    }
    Status::unavailable(format!("{upstream}: connection lost mid-call: {detail}"))
}

fn never_left_the_client(status: &Status) -> bool {
    use std::error::Error as _;
    let mut source = status.source();
    while let Some(error) = source {
        let refused_by_go_away = error
            .downcast_ref::<h2::Error>()
            .is_some_and(|h2| h2.is_go_away() && h2.is_remote());
        if error.downcast_ref::<tonic::ConnectError>().is_some()
            || error
                .downcast_ref::<hyper::Error>()
                .is_some_and(hyper::Error::is_canceled)
            || refused_by_go_away
        {
            return true;
        }
        source = error.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_lost_mid_call_is_unavailable_but_a_servers_unknown_is_not() {
        let reset = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset by peer");
        let lost = Status::from_error(Box::new(reset));
        assert_eq!(lost.code(), Code::Unknown, "what tonic makes of it");
        let mapped = lost_connection_as_unavailable(lost, "book");
        assert_eq!(mapped.code(), Code::Unavailable);
        assert!(mapped.message().contains("reset by peer"), "{mapped:?}");
        let answered = Status::unknown("the handler said so");
        assert_eq!(
            lost_connection_as_unavailable(answered, "book").code(),
            Code::Unknown
        );
    }
    use crate::client::config::UpstreamConfig;
    use tonic::transport::Endpoint;

    // connect_lazy needs a runtime, though nothing connects here.
    #[tokio::test]
    async fn power_of_two_choices_prefers_the_less_loaded_replica() {
        let config = UpstreamConfig::new("t", vec!["http://127.0.0.1:1".into()]);
        let busy = Arc::new(Replica::new(
            "127.0.0.1:1".parse().expect("addr"),
            &config,
            None,
        ));
        let idle = Arc::new(Replica::new(
            "127.0.0.1:2".parse().expect("addr"),
            &config,
            None,
        ));
        busy.set_in_flight(10);
        for _ in 0..50 {
            let picked = power_of_two_choices(&[&busy, &idle]);
            assert_eq!(picked.address, idle.address);
        }
    }

    #[tokio::test]
    async fn a_refused_connection_is_recognised_as_never_sent() {
        // Nothing listens on port 1 of loopback.
        let channel = Endpoint::from_static("http://127.0.0.1:1").connect_lazy();
        let status = tonic_health::pb::health_client::HealthClient::new(channel)
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await
            .expect_err("refused");
        assert!(never_left_the_client(&status), "{status:?}");
        assert!(!never_left_the_client(&Status::unavailable("draining")));
        assert!(!never_left_the_client(&Status::cancelled(
            "the caller gave up"
        )));
    }
}
