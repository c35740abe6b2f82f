//! The one way a service calls another: a proxyless mesh in the library.
//!
//! An [`Upstream`] is one logical service (member, book…). For every call it, in order:
//! 1. takes the deadline: the upstream's call timeout, capped by what is left of the request
//!    being served (see [`crate::deadline`]), and covering every attempt;
//! 2. asks the circuit breaker (open: fail at once with UNAVAILABLE);
//! 3. picks a replica by power of two choices on in-flight calls, skipping replicas that just
//!    refused or failed (ejected), from the set that discovery keeps current;
//! 4. sends the attempt on one of the replica's connections, with `grpc-timeout` set to the
//!    time left;
//! 5. records the outcome (breaker, retry throttle, ejection and re-resolution on UNAVAILABLE)
//!    and, for idempotent calls on retryable codes, retries after a jittered backoff while the
//!    retry budget and the deadline allow.
//!
//! Retries and the breaker work on typed calls, not on the HTTP/2 channel: there every gRPC
//! error is an HTTP 200 and request bodies cannot be replayed.

pub mod breaker;
pub mod discovery;
pub mod retry;

use std::collections::BTreeSet;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, watch};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Response, Status};

pub use breaker::{BreakerConfig, BreakerState, CircuitBreaker};
pub use discovery::{Resolve, StaticResolver, SystemResolver, Target};
pub use retry::{Idempotency, RetryConfig, RetryThrottle};

/// Time kept back from a served request's deadline for answering it: a tenth of what is left,
/// within these bounds, so the caller's answer reaches its own caller before that one gives up.
const MIN_RESPONSE_MARGIN: Duration = Duration::from_millis(5);
const MAX_RESPONSE_MARGIN: Duration = Duration::from_millis(100);

/// How to reach and treat one upstream service.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// Name used in logs, metrics and errors ("member").
    pub name: String,
    /// Targets such as `http://member-headless:50052` or a list of `http://127.0.0.1:50052`.
    pub endpoints: Vec<String>,
    /// Deadline of a call (all attempts), unless the caller's own budget is smaller.
    pub call_timeout: Duration,
    /// Longest wait for a TCP connection to one replica.
    pub connect_timeout: Duration,
    /// HTTP/2 connections per replica: one connection serialises on one socket and one
    /// buffer, a few lift throughput under high concurrency.
    pub connections_per_endpoint: usize,
    /// How often names are resolved again (also right after a connection failure).
    pub resolve_interval: Duration,
    /// How long a replica that answered UNAVAILABLE or refused a connection gets no calls.
    pub eject_duration: Duration,
    pub retry: RetryConfig,
    pub breaker: BreakerConfig,
}

impl UpstreamConfig {
    /// Documented defaults for everything but the name and targets.
    pub fn new(name: impl Into<String>, endpoints: Vec<String>) -> Self {
        Self {
            name: name.into(),
            endpoints,
            call_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(1),
            connections_per_endpoint: 2,
            resolve_interval: Duration::from_secs(5),
            eject_duration: Duration::from_secs(2),
            retry: RetryConfig::default(),
            breaker: BreakerConfig::default(),
        }
    }
}

/// Errors building an upstream.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("upstream {0} has no endpoints")]
    NoEndpoints(String),
    #[error("upstream {upstream}: {reason}")]
    InvalidEndpoint { upstream: String, reason: String },
}

/// One replica: its connections and its current load.
struct Replica {
    address: SocketAddr,
    channels: Vec<Channel>,
    next_channel: AtomicUsize,
    in_flight: AtomicUsize,
    calls: AtomicU64,
    ejected_until: Mutex<Option<Instant>>,
}

impl Replica {
    fn new(address: SocketAddr, config: &UpstreamConfig) -> Self {
        let channels = (0..config.connections_per_endpoint.max(1))
            .map(|_| {
                Endpoint::from(
                    http::Uri::builder()
                        .scheme("http")
                        .authority(address.to_string())
                        .path_and_query("/")
                        .build()
                        .unwrap_or_else(|_| http::Uri::from_static("http://127.0.0.1:0/")),
                )
                .connect_timeout(config.connect_timeout)
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(30))
                .keep_alive_while_idle(true)
                .connect_lazy()
            })
            .collect();
        Self {
            address,
            channels,
            next_channel: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            calls: AtomicU64::new(0),
            ejected_until: Mutex::new(None),
        }
    }

    fn channel(&self) -> Channel {
        let index = self.next_channel.fetch_add(1, Ordering::Relaxed) % self.channels.len();
        self.channels[index].clone()
    }

    fn is_ejected(&self, now: Instant) -> bool {
        self.ejected_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_some_and(|until| now < until)
    }

    fn eject(&self, until: Instant) {
        *self
            .ejected_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(until);
    }
}

/// Counts a call as in flight on a replica for as long as it lives.
struct InFlight(Arc<Replica>);

impl InFlight {
    fn start(replica: Arc<Replica>) -> Self {
        replica.in_flight.fetch_add(1, Ordering::Relaxed);
        replica.calls.fetch_add(1, Ordering::Relaxed);
        Self(replica)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

struct Shared {
    config: UpstreamConfig,
    targets: Vec<Target>,
    resolver: Arc<dyn Resolve>,
    replicas: RwLock<Arc<Vec<Arc<Replica>>>>,
    /// Bumped after every resolution, so callers waiting for replicas can wake up.
    resolutions: watch::Sender<u64>,
    refresh: Arc<Notify>,
    breaker: CircuitBreaker,
    throttle: RetryThrottle,
    attempts: AtomicU64,
}

/// A logical upstream service behind the shared client stack. Cheap to clone.
#[derive(Clone)]
pub struct Upstream {
    shared: Arc<Shared>,
}

impl Upstream {
    /// An upstream resolved by the system resolver (and `BOOKMESH_HOSTS_FILE`, if set).
    pub fn new(config: UpstreamConfig) -> Result<Self, UpstreamError> {
        Self::with_resolver(config, Arc::new(SystemResolver::from_env()))
    }

    /// An upstream whose replicas come from `resolver`. Must be called inside a Tokio runtime:
    /// it starts the discovery task (which ends when the last clone is dropped).
    pub fn with_resolver(
        config: UpstreamConfig,
        resolver: Arc<dyn Resolve>,
    ) -> Result<Self, UpstreamError> {
        if config.endpoints.is_empty() {
            return Err(UpstreamError::NoEndpoints(config.name));
        }
        let targets = config
            .endpoints
            .iter()
            .map(|url| Target::parse(url))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|reason| UpstreamError::InvalidEndpoint {
                upstream: config.name.clone(),
                reason,
            })?;
        let shared = Arc::new(Shared {
            breaker: CircuitBreaker::new(config.name.clone(), config.breaker.clone()),
            throttle: RetryThrottle::new(&config.retry),
            config,
            targets,
            resolver,
            replicas: RwLock::new(Arc::new(Vec::new())),
            resolutions: watch::Sender::new(0),
            refresh: Arc::new(Notify::new()),
            attempts: AtomicU64::new(0),
        });
        tokio::spawn(discover(Arc::downgrade(&shared)));
        Ok(Self { shared })
    }

    pub fn name(&self) -> &str {
        &self.shared.config.name
    }

    /// Makes one logical call. `call` sends one attempt on the given channel; it is called again
    /// for each retry with a fresh request (the message is cloned), so it must not have side
    /// effects of its own.
    pub async fn call<Req, Resp, F, Fut>(
        &self,
        idempotency: Idempotency,
        message: Req,
        call: F,
    ) -> Result<Resp, Status>
    where
        Req: Clone,
        F: Fn(Channel, Request<Req>) -> Fut,
        Fut: Future<Output = Result<Response<Resp>, Status>>,
    {
        let method = method_name::<Req>();
        let upstream = self.shared.config.name.as_str();
        let started = Instant::now();
        // The client span: a child of the work in progress; its ids go out in `traceparent`.
        let span = tracing::info_span!(
            "call",
            otel.name = %format!("{upstream}/{method}"),
            otel.kind = "client",
            rpc.system = "grpc",
            rpc.method = method,
            peer.service = upstream,
            rpc.grpc.status_code = tracing::field::Empty,
            trace_id = tracing::field::Empty,
            span_id = tracing::field::Empty,
        );
        let trace = crate::telemetry::enter_trace(&span, crate::trace_context::current());
        crate::metrics::CLIENT_ACTIVE
            .with_label_values(&[upstream])
            .inc();
        let result = tracing::Instrument::instrument(
            crate::trace_context::scope(trace, self.call_with_retries(idempotency, message, call)),
            span.clone(),
        )
        .await;
        crate::metrics::CLIENT_ACTIVE
            .with_label_values(&[upstream])
            .dec();
        let code = result.as_ref().err().map_or(Code::Ok, Status::code) as i32;
        span.record("rpc.grpc.status_code", code);
        crate::metrics::CLIENT_REQUESTS
            .with_label_values(&[upstream, method, code.to_string().as_str()])
            .inc();
        crate::metrics::CLIENT_DURATION
            .with_label_values(&[upstream, method])
            .observe(started.elapsed().as_secs_f64());
        result
    }

    async fn call_with_retries<Req, Resp, F, Fut>(
        &self,
        idempotency: Idempotency,
        message: Req,
        call: F,
    ) -> Result<Resp, Status>
    where
        Req: Clone,
        F: Fn(Channel, Request<Req>) -> Fut,
        Fut: Future<Output = Result<Response<Resp>, Status>>,
    {
        let shared = &self.shared;
        let config = &shared.config;
        let own_deadline = Instant::now() + config.call_timeout;
        // Leave the request being served a moment to answer with the upstream's failure
        // before its own deadline passes.
        let deadline = crate::deadline::current().map_or(own_deadline, |request_deadline| {
            let left = request_deadline.saturating_duration_since(Instant::now());
            let margin = (left / 10).clamp(MIN_RESPONSE_MARGIN, MAX_RESPONSE_MARGIN);
            request_deadline
                .checked_sub(margin)
                .unwrap_or(request_deadline)
                .min(own_deadline)
        });
        let max_attempts = match idempotency {
            Idempotency::Idempotent => config.retry.attempts(),
            Idempotency::NotIdempotent => 1,
        };
        let mut attempt = 0;
        let mut transparent_retries = 0;
        loop {
            attempt += 1;
            let now = Instant::now();
            if now >= deadline {
                return Err(Status::deadline_exceeded(format!(
                    "{}: deadline exceeded before attempt {attempt}",
                    config.name
                )));
            }
            if shared.breaker.try_acquire(now).is_err() {
                return Err(Status::unavailable(format!(
                    "{}: circuit breaker open, failing fast",
                    config.name
                )));
            }
            let Some(replica) = self.pick(deadline).await else {
                shared.breaker.record(false, Instant::now());
                return Err(Status::unavailable(format!(
                    "{}: no replica available",
                    config.name
                )));
            };
            shared.attempts.fetch_add(1, Ordering::Relaxed);
            crate::metrics::CLIENT_ATTEMPTS
                .with_label_values(&[config.name.as_str()])
                .inc();
            if attempt > 1 {
                crate::metrics::CLIENT_RETRIES
                    .with_label_values(&[config.name.as_str()])
                    .inc();
            }
            let mut request = Request::new(message.clone());
            request.set_timeout(deadline.saturating_duration_since(Instant::now()));
            // The callee continues this call's span (the task-local set above).
            let traceparent = crate::trace_context::current()
                .map(|trace| trace.to_traceparent())
                .unwrap_or_else(crate::trace_context::next_traceparent);
            if let Ok(traceparent) = traceparent.parse() {
                request.metadata_mut().insert("traceparent", traceparent);
            }
            let in_flight = InFlight::start(replica.clone());
            let outcome =
                tokio::time::timeout_at(deadline.into(), call(replica.channel(), request)).await;
            drop(in_flight);
            let status = match outcome {
                Ok(Ok(response)) => {
                    shared.breaker.record(true, Instant::now());
                    shared.throttle.record_success();
                    return Ok(response.into_inner());
                }
                // tonic enforces `grpc-timeout` on the client too and reports it as CANCELLED;
                // nothing else cancels our calls, so past the deadline it is a deadline.
                Ok(Err(status))
                    if status.code() == Code::Cancelled
                        && Instant::now() + Duration::from_millis(1) >= deadline =>
                {
                    Status::deadline_exceeded(format!(
                        "{}: deadline exceeded after {attempt} attempt(s)",
                        config.name
                    ))
                }
                Ok(Err(status)) => status,
                Err(_elapsed) => Status::deadline_exceeded(format!(
                    "{}: deadline exceeded after {attempt} attempt(s)",
                    config.name
                )),
            };
            let code = status.code();
            // A replica that fails while others are healthy is that replica's problem (it is
            // leaving, draining or restarting), not an outage of the upstream.
            let replica_local = code == Code::Unavailable
                && !replica.is_ejected(Instant::now())
                && self.has_other_healthy_replica(&replica);
            if code == Code::Unavailable {
                // Refused, draining or starting: send nothing there for a while, and look again
                // at what the name resolves to.
                replica.eject(Instant::now() + config.eject_duration);
                shared.refresh.notify_one();
            }
            let never_sent = never_left_the_client(&status);
            let failover = never_sent || (replica_local && idempotency == Idempotency::Idempotent);
            if failover && transparent_retries < MAX_TRANSPARENT_RETRIES {
                // Transparent retry on another replica, without charging the retry budget or
                // the breaker: a call that never reached a server (gRFC A6; safe even when not
                // idempotent), or an idempotent call that a single leaving replica refused.
                // Upstream-wide failures still go through the budget below.
                transparent_retries += 1;
                attempt -= 1;
                tracing::debug!(upstream = %config.name, %status, never_sent, "trying another replica");
                continue;
            }
            shared
                .breaker
                .record(!is_upstream_failure(code), Instant::now());
            if retry::is_retryable(code) {
                shared.throttle.record_failure();
            } else {
                shared.throttle.record_success();
            }
            let retry_allowed = attempt < max_attempts
                && retry::is_retryable(code)
                && shared.throttle.allows_retry();
            if !retry_allowed {
                return Err(status);
            }
            let backoff = config.retry.backoff(attempt);
            if Instant::now() + backoff >= deadline {
                return Err(status);
            }
            tracing::debug!(upstream = %config.name, attempt, ?backoff, %status, "retrying");
            tokio::time::sleep(backoff).await;
        }
    }

    fn has_other_healthy_replica(&self, failed: &Arc<Replica>) -> bool {
        let now = Instant::now();
        self.shared
            .replicas
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .any(|replica| !Arc::ptr_eq(replica, failed) && !replica.is_ejected(now))
    }

    /// Power of two choices on in-flight calls among replicas that are not ejected (all of
    /// them if every one is ejected: a stale ejection must not stop all traffic).
    async fn pick(&self, deadline: Instant) -> Option<Arc<Replica>> {
        let shared = &self.shared;
        let mut resolutions = shared.resolutions.subscribe();
        loop {
            let replicas = shared
                .replicas
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone();
            if !replicas.is_empty() {
                let now = Instant::now();
                let healthy: Vec<&Arc<Replica>> =
                    replicas.iter().filter(|r| !r.is_ejected(now)).collect();
                let candidates: Vec<&Arc<Replica>> = if healthy.is_empty() {
                    replicas.iter().collect()
                } else {
                    healthy
                };
                return Some(power_of_two_choices(&candidates).clone());
            }
            // Nothing resolved yet (or the name resolves to nothing): ask for a resolution and
            // wait for it, within the deadline.
            shared.refresh.notify_one();
            let waited = tokio::time::timeout_at(deadline.into(), resolutions.changed()).await;
            if !matches!(waited, Ok(Ok(()))) {
                return None;
            }
        }
    }

    /// A connection to one replica (picked as for a call), for long-lived streams that must not
    /// carry a call deadline, such as event subscriptions. `None` when no replica is known
    /// within the call timeout.
    pub async fn channel(&self) -> Option<Channel> {
        let deadline = Instant::now() + self.shared.config.call_timeout;
        self.pick(deadline).await.map(|replica| replica.channel())
    }

    /// Calls sent to each replica so far (for tests, demos and the load generator's report).
    pub fn calls_per_replica(&self) -> Vec<(SocketAddr, u64)> {
        self.shared
            .replicas
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|r| (r.address, r.calls.load(Ordering::Relaxed)))
            .collect()
    }

    /// Attempts sent so far, retries included.
    pub fn attempts(&self) -> u64 {
        self.shared.attempts.load(Ordering::Relaxed)
    }

    pub fn breaker_state(&self) -> BreakerState {
        self.shared.breaker.state(Instant::now())
    }
}

/// The RPC's name from its request type (`GetMemberRequest` → `GetMember`), for metrics.
fn method_name<Req>() -> &'static str {
    let name = std::any::type_name::<Req>();
    let name = name.rsplit("::").next().unwrap_or(name);
    name.strip_suffix("Request").unwrap_or(name)
}

/// Transparent retries per call: enough to skip a few dead replicas, bounded so a call whose
/// every replica refuses ends quickly.
const MAX_TRANSPARENT_RETRIES: u32 = 3;

/// Whether a failed call never reached a server: connecting failed (tonic marks those with
/// `ConnectError` in the error's source chain; a server's answer never carries one).
fn never_left_the_client(status: &Status) -> bool {
    use std::error::Error as _;
    if status.code() != Code::Unavailable {
        return false;
    }
    let mut source = status.source();
    while let Some(error) = source {
        if error.downcast_ref::<tonic::ConnectError>().is_some() {
            return true;
        }
        source = error.source();
    }
    false
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
    if b.in_flight.load(Ordering::Relaxed) < a.in_flight.load(Ordering::Relaxed) {
        b
    } else {
        a
    }
}

/// Codes that say the upstream is unwell (they count against the breaker). Business answers
/// such as NOT_FOUND or FAILED_PRECONDITION mean the upstream works.
fn is_upstream_failure(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
            | Code::Internal
            | Code::Unknown
            | Code::DataLoss
    )
}

/// Keeps an upstream's replica set current until the upstream is dropped.
async fn discover(shared: Weak<Shared>) {
    loop {
        let Some(strong) = shared.upgrade() else {
            return;
        };
        match strong.resolver.resolve(&strong.targets).await {
            Ok(addresses) => update_replicas(&strong, &addresses),
            Err(error) => {
                tracing::warn!(upstream = %strong.config.name, %error, "resolution failed; keeping the last known replicas")
            }
        }
        strong.resolutions.send_modify(|n| *n += 1);
        let interval = strong.config.resolve_interval;
        let refresh = strong.refresh.clone();
        // Hold no strong reference while waiting, so dropping the upstream ends this task.
        drop(strong);
        tokio::select! {
            () = tokio::time::sleep(interval) => {},
            () = refresh.notified() => {
                // Coalesce bursts of failures into one resolution.
                tokio::time::sleep(Duration::from_millis(50)).await;
            },
        }
    }
}

fn update_replicas(shared: &Shared, addresses: &BTreeSet<SocketAddr>) {
    let mut replicas = shared
        .replicas
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let current: BTreeSet<SocketAddr> = replicas.iter().map(|r| r.address).collect();
    if &current == addresses {
        return;
    }
    let kept = replicas
        .iter()
        .filter(|r| addresses.contains(&r.address))
        .cloned();
    let added = addresses
        .difference(&current)
        .map(|address| Arc::new(Replica::new(*address, &shared.config)));
    let next: Vec<Arc<Replica>> = kept.chain(added).collect();
    tracing::info!(
        upstream = %shared.config.name,
        replicas = ?addresses,
        added = addresses.difference(&current).count(),
        removed = current.difference(addresses).count(),
        "replica set changed"
    );
    *replicas = Arc::new(next);
}

#[cfg(test)]
mod tests {
    use super::*;

    // connect_lazy needs a runtime, though nothing connects here.
    #[tokio::test]
    async fn power_of_two_choices_prefers_the_less_loaded_replica() {
        let config = UpstreamConfig::new("t", vec!["http://127.0.0.1:1".into()]);
        let busy = Arc::new(Replica::new("127.0.0.1:1".parse().expect("addr"), &config));
        let idle = Arc::new(Replica::new("127.0.0.1:2".parse().expect("addr"), &config));
        busy.in_flight.store(10, Ordering::Relaxed);
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
    }

    #[test]
    fn business_errors_do_not_count_against_the_breaker() {
        assert!(is_upstream_failure(Code::Unavailable));
        assert!(is_upstream_failure(Code::DeadlineExceeded));
        assert!(!is_upstream_failure(Code::NotFound));
        assert!(!is_upstream_failure(Code::FailedPrecondition));
        assert!(!is_upstream_failure(Code::InvalidArgument));
    }
}
