//! The one way a service calls another: a proxyless mesh in the library.
//!
//! An [`Upstream`] is one logical service (member, book…). Every call goes down one stack of
//! layers, composed in [`Upstream::call`], each its own type in its own file:
//!
//! 1. [`trace`]: the client span, child of the work in progress;
//! 2. [`metrics`]: calls in flight, totals by final status, duration with retries;
//! 3. [`deadline`]: the upstream's call timeout, tightened to what the request being served
//!    has left (see [`crate::deadline`]); it covers every attempt;
//! 4. [`retry`]: idempotent calls on retryable codes, after a jittered backoff, while the
//!    retry budget and the deadline allow;
//! 5. [`breaker`]: fail fast with UNAVAILABLE while the upstream's breaker is open;
//! 6. [`balance`]: power of two choices among the replicas discovery keeps current, ejection
//!    of replicas that refuse, transparent failover to another replica;
//! 7. [`attempt`]: one attempt on the chosen connection, with `grpc-timeout` and
//!    `traceparent`.
//!
//! Retries and the breaker work on typed calls, not on the HTTP/2 channel: there every gRPC
//! error is an HTTP 200 and request bodies cannot be replayed.

mod attempt;
mod balance;
mod breaker;
mod call;
mod circuit;
mod config;
mod deadline;
mod discovery;
mod metrics;
mod replica;
mod retry;
mod trace;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use tonic::transport::Channel;
use tonic::{Request, Response, Status};
use tower::{ServiceBuilder, ServiceExt as _};

pub use call::Idempotency;
use circuit::CircuitBreaker;
pub use circuit::{BreakerConfig, BreakerState};
pub use config::UpstreamConfig;
pub use discovery::{Resolve, StaticResolver, SystemResolver, Target};
pub use retry::RetryConfig;
use retry::RetryThrottle;

use self::call::Call;
use self::replica::ReplicaSet;
use crate::identity::Identity;
use crate::identity::tls;
use crate::identity::transport::TlsConnector;

/// Errors building an upstream.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// No target was configured.
    #[error("upstream {0} has no endpoints")]
    NoEndpoints(String),
    /// Its TLS configuration could not be built.
    #[error("upstream {upstream}: TLS: {reason}")]
    Tls {
        /// The upstream's name.
        upstream: String,
        /// What failed.
        reason: String,
    },
    /// A target is not `host:port`.
    #[error("upstream {upstream}: {reason}")]
    InvalidEndpoint {
        /// The upstream's name.
        upstream: String,
        /// What is wrong with the target.
        reason: String,
    },
}

/// A logical upstream service behind the shared client stack. Cheap to clone.
#[derive(Clone)]
pub struct Upstream {
    name: Arc<str>,
    replicas: Arc<ReplicaSet>,
    breaker: Arc<CircuitBreaker>,
    throttle: Arc<RetryThrottle>,
    attempts: Arc<AtomicU64>,
}

impl Upstream {
    /// An upstream called as `identity` (over mTLS, checking that its servers are the
    /// configured peer; in plaintext if the identity is), resolved by the system resolver (and
    /// `BOOKMESH_HOSTS_FILE`, if set).
    pub fn new(config: UpstreamConfig, identity: &Identity) -> Result<Self, UpstreamError> {
        Self::with_resolver(config, identity, Arc::new(SystemResolver::from_env()))
    }

    /// An upstream whose replicas come from `resolver`. Must be called inside a Tokio runtime:
    /// it starts the discovery task (which ends when the last clone is dropped).
    pub fn with_resolver(
        config: UpstreamConfig,
        identity: &Identity,
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
        let tls = match identity.credentials() {
            Some(credentials) => Some(TlsConnector::new(
                tls::client_config(credentials, identity.peer(&config.peer)).map_err(|error| {
                    UpstreamError::Tls {
                        upstream: config.name.clone(),
                        reason: error.to_string(),
                    }
                })?,
            )),
            None => None,
        };
        let upstream = Self {
            name: Arc::from(config.name.as_str()),
            breaker: Arc::new(CircuitBreaker::new(
                config.name.clone(),
                config.breaker.clone(),
            )),
            throttle: Arc::new(RetryThrottle::new(&config.retry)),
            attempts: Arc::new(AtomicU64::new(0)),
            replicas: Arc::new(ReplicaSet::new(config, tls)),
        };
        tokio::spawn(discovery::discover(
            Arc::downgrade(&upstream.replicas),
            targets,
            resolver,
        ));
        Ok(upstream)
    }

    /// The upstream's name, as in logs and metrics.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Makes one logical call. `send` sends one attempt on the given channel; it is called
    /// again for each retry or failover with a fresh request (the message is cloned), so it
    /// must not have side effects of its own.
    pub async fn call<Req, Resp, F, Fut>(
        &self,
        idempotency: Idempotency,
        message: Req,
        send: F,
    ) -> Result<Resp, Status>
    where
        Req: Clone + Send + 'static,
        Resp: Send + 'static,
        F: Fn(Channel, Request<Req>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Response<Resp>, Status>> + Send + 'static,
    {
        self.call_method(method_name::<Req>(), idempotency, message, send)
            .await
    }

    /// [`Upstream::call`] for a caller whose message type does not name the method (the
    /// gateway forwards encoded messages): `method` labels the call's metrics and span, so it
    /// must come from a closed set (the contracts' methods), never from a request.
    pub async fn call_method<Req, Resp, F, Fut>(
        &self,
        method: &'static str,
        idempotency: Idempotency,
        message: Req,
        send: F,
    ) -> Result<Resp, Status>
    where
        Req: Clone + Send + 'static,
        Resp: Send + 'static,
        F: Fn(Channel, Request<Req>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Response<Resp>, Status>> + Send + 'static,
    {
        self.call_through_stack(method, idempotency, message, None, send)
            .await
    }

    /// Opens a server stream through the same stack as [`Upstream::call_method`] (replica,
    /// retries of the opening, breaker, trace): the stream is open once `send`'s response
    /// (its headers) arrives, within the call timeout, and lasts until `ends_at`, which the
    /// callee sees as its `grpc-timeout`.
    pub async fn open_stream<Req, Resp, F, Fut>(
        &self,
        method: &'static str,
        message: Req,
        ends_at: Instant,
        send: F,
    ) -> Result<Resp, Status>
    where
        Req: Clone + Send + 'static,
        Resp: Send + 'static,
        F: Fn(Channel, Request<Req>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Response<Resp>, Status>> + Send + 'static,
    {
        // Opening a stream changes nothing: safe to retry.
        self.call_through_stack(
            method,
            Idempotency::Idempotent,
            message,
            Some(ends_at),
            send,
        )
        .await
    }

    async fn call_through_stack<Req, Resp, F, Fut>(
        &self,
        method: &'static str,
        idempotency: Idempotency,
        message: Req,
        stream_deadline: Option<Instant>,
        send: F,
    ) -> Result<Resp, Status>
    where
        Req: Clone + Send + 'static,
        Resp: Send + 'static,
        F: Fn(Channel, Request<Req>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Response<Resp>, Status>> + Send + 'static,
    {
        let config = self.replicas.config();
        let stack = ServiceBuilder::new()
            // Outermost, so the span covers every attempt and is the parent of each.
            .layer(trace::TraceLayer::new(self.name.clone()))
            // One count and one duration per logical call, retries included.
            .layer(metrics::MetricsLayer::new(self.name.clone()))
            // Before any attempt: all of them share the one deadline.
            .layer(deadline::PropagateDeadlineLayer)
            // Above the breaker, so each retry asks it again and an open breaker stops them.
            .layer(retry::RetryLayer::new(
                self.name.clone(),
                config.retry.clone(),
                self.throttle.clone(),
            ))
            // Above the balancer: a failover between replicas is not an upstream failure.
            .layer(breaker::BreakerLayer::new(self.breaker.clone()))
            // Picks the replica (and fails over) for every attempt the layers above allow.
            .layer(balance::BalanceLayer::new(self.replicas.clone()))
            .service(attempt::Attempt::new(
                self.name.clone(),
                send,
                self.attempts.clone(),
            ));
        let call = Call {
            method,
            message,
            idempotency,
            deadline: Instant::now() + config.call_timeout,
            callers_deadline: false,
            stream_deadline,
            attempt: 1,
        };
        stack
            .oneshot(call)
            .await
            .map_err(call::Failure::into_status)
    }

    /// A connection to one replica (picked as for a call), for long-lived streams that must not
    /// carry a call deadline, such as event subscriptions. `None` when no replica is known
    /// within the call timeout.
    pub async fn channel(&self) -> Option<Channel> {
        let deadline = Instant::now() + self.replicas.config().call_timeout;
        balance::pick(&self.replicas, deadline)
            .await
            .map(|replica| replica.channel())
    }

    /// Calls sent to each replica so far (for tests, demos and the load generator's report).
    pub fn calls_per_replica(&self) -> Vec<(SocketAddr, u64)> {
        self.replicas.calls_per_replica()
    }

    /// Attempts sent so far, retries and failovers included.
    pub fn attempts(&self) -> u64 {
        self.attempts.load(Ordering::Relaxed)
    }

    /// The circuit breaker's state now.
    pub fn breaker_state(&self) -> BreakerState {
        self.breaker.state(Instant::now())
    }
}

/// The RPC's name from its request type (`GetMemberRequest` → `GetMember`), for metrics.
fn method_name<Req>() -> &'static str {
    let name = std::any::type_name::<Req>();
    let name = name.rsplit("::").next().unwrap_or(name);
    name.strip_suffix("Request").unwrap_or(name)
}
