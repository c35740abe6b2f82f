//! The one way to run a bookmesh gRPC server.
//!
//! Every server gets, in this order: gRPC health (`grpc.health.v1`, NOT_SERVING until the
//! service is ready and again from the moment a stop signal arrives), reflection v1 and v1alpha
//! (grpcurl 1.8 and grpcui only speak v1alpha) with the health and `google.rpc` error types
//! registered, a readiness gate that answers UNAVAILABLE instead of touching a database that is
//! not migrated yet, per-request timeouts, HTTP/2 limits and keepalive, and a graceful drain
//! bounded by a grace period.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;

use crate::config::ServerArgs;

/// Whether the service can do its work: its database is migrated and answering, and it is
/// not shutting down. Drives the gRPC health status and the admin port's `/readyz`.
#[derive(Clone)]
pub struct Readiness {
    serving: Arc<watch::Sender<bool>>,
    /// Latches on the first `set_serving(true)`: the service's tables exist from then on.
    started: Arc<AtomicBool>,
    /// Latches when a stop signal arrives: from then on the service is never ready again.
    stopping: Arc<watch::Sender<bool>>,
}

impl Default for Readiness {
    fn default() -> Self {
        Self::new()
    }
}

impl Readiness {
    pub fn new() -> Self {
        Self {
            serving: Arc::new(watch::Sender::new(false)),
            started: Arc::new(AtomicBool::new(false)),
            stopping: Arc::new(watch::Sender::new(false)),
        }
    }

    /// Reports whether the database answers (after migrations); ignored once stopping.
    pub fn set_serving(&self, serving: bool) {
        if serving {
            self.started.store(true, Ordering::Release);
        }
        let serving = serving && !*self.stopping.borrow();
        self.serving.send_if_modified(|current| {
            let changed = *current != serving;
            *current = serving;
            changed
        });
    }

    /// A stop signal arrived: not ready from now on, whatever the database says.
    pub fn mark_stopping(&self) {
        self.stopping.send_replace(true);
        self.set_serving(false);
    }

    /// Turns true when a stop signal arrives: long-lived work (event streams, consumers) ends.
    pub fn stopping_signal(&self) -> watch::Receiver<bool> {
        self.stopping.subscribe()
    }

    /// Completes once the service became ready for the first time (its tables exist).
    pub async fn started(&self) {
        let mut serving = self.serving.subscribe();
        while !self.has_started() {
            if serving.changed().await.is_err() {
                return;
            }
        }
    }

    pub fn is_serving(&self) -> bool {
        *self.serving.borrow()
    }

    fn has_started(&self) -> bool {
        self.started.load(Ordering::Acquire)
    }
}

/// Errors that stop a server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("reflection setup failed: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("gRPC transport failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("database: {0}")]
    Database(#[from] sea_orm::DbErr),
    #[error("upstream: {0}")]
    Upstream(#[from] crate::client::UpstreamError),
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("cannot listen: {0}")]
    Listen(#[from] std::io::Error),
    #[error("in-flight calls did not finish within the shutdown grace period")]
    DrainTimedOut,
}

/// Serves `service` on `listener` until `shutdown` completes, then drains in-flight calls.
pub async fn serve<S>(
    settings: &ServerArgs,
    service: S,
    events: EventServices,
    listener: TcpListener,
    readiness: Readiness,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + NamedService
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    // The reporter starts the overall status ("") as SERVING; nothing is ready yet.
    health_reporter
        .set_service_status("", ServingStatus::NotServing)
        .await;
    health_reporter.set_not_serving::<S>().await;
    // `liveness` answers SERVING for as long as the process serves at all: a liveness probe
    // must not restart a pod that is merely waiting for its database (restarting cannot help).
    health_reporter
        .set_service_status(LIVENESS_NAME, ServingStatus::Serving)
        .await;

    let mut extra_names = Vec::new();
    if events.feed.is_some() {
        extra_names.push(EVENT_FEED_NAME);
    }
    if events.dead_letters.is_some() {
        extra_names.push(DEAD_LETTER_NAME);
    }
    let reflection_v1 = reflection_builder(S::NAME, &extra_names).build_v1()?;
    let reflection_v1alpha = reflection_builder(S::NAME, &extra_names).build_v1alpha()?;

    // The health status follows readiness, which turns false for good once shutdown starts,
    // so balancers and probes route new calls elsewhere while we drain.
    let mut ready_rx = readiness.serving.subscribe();
    let health_task = tokio::spawn(async move {
        loop {
            let status = if *ready_rx.borrow_and_update() {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            health_reporter.set_service_status("", status).await;
            health_reporter.set_service_status(S::NAME, status).await;
            if ready_rx.changed().await.is_err() {
                break;
            }
        }
    });
    let admin_task = settings.admin_listen.map(|address| {
        let readiness = readiness.clone();
        tokio::spawn(async move {
            if let Err(error) = crate::admin::serve(address, readiness).await {
                tracing::error!(%error, %address, "admin HTTP server failed");
            }
        })
    });

    let drain_delay = settings.drain_delay;
    let (drain_started_tx, drain_started_rx) = tokio::sync::oneshot::channel::<()>();
    let stopping = readiness.clone();
    let signal = async move {
        shutdown.await;
        tracing::info!(
            service = S::NAME,
            ?drain_delay,
            "stop requested: reporting NOT_SERVING, then draining"
        );
        stopping.mark_stopping();
        tokio::time::sleep(drain_delay).await;
        let _ = drain_started_tx.send(());
    };

    let local_addr = listener.local_addr().ok();
    let incoming = TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(settings.keepalive_interval));

    let mut builder = tonic::transport::Server::builder();
    if !settings.max_connection_age.is_zero() {
        // Jitter per process, so replicas started together do not send their clients away at
        // the same moment.
        let jitter = 0.9 + 0.2 * fastrand::f64();
        builder = builder
            .max_connection_age(settings.max_connection_age.mul_f64(jitter))
            .max_connection_age_grace(settings.request_timeout);
    }
    let permits = Arc::new(tokio::sync::Semaphore::new(
        settings.max_concurrent_requests,
    ));
    let feed = events.feed.map(|inner| ServiceGuard {
        inner,
        readiness: readiness.clone(),
        permits: permits.clone(),
        request_timeout: settings.request_timeout,
    });
    let dead_letters = events.dead_letters.map(|inner| ServiceGuard {
        inner,
        readiness: readiness.clone(),
        permits: permits.clone(),
        request_timeout: settings.request_timeout,
    });
    let server = builder
        .timeout(settings.request_timeout)
        .max_concurrent_streams(settings.max_concurrent_streams)
        .http2_keepalive_interval(Some(settings.keepalive_interval))
        .http2_keepalive_timeout(Some(std::time::Duration::from_secs(10)))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_optional_service(feed)
        .add_optional_service(dead_letters)
        .add_service(ServiceGuard {
            inner: service,
            readiness,
            permits,
            request_timeout: settings.request_timeout,
        })
        .serve_with_incoming_shutdown(incoming, signal);

    tracing::info!(service = S::NAME, address = ?local_addr, "gRPC server listening");
    let grace = settings.shutdown_grace;
    let result = tokio::select! {
        served = server => served.map_err(ServeError::from),
        () = async {
            // Only after the drain began does the grace period run.
            if drain_started_rx.await.is_ok() {
                tokio::time::sleep(grace).await;
            } else {
                futures::future::pending::<()>().await;
            }
        } => Err(ServeError::DrainTimedOut),
    };
    health_task.abort();
    if let Some(admin) = admin_task {
        admin.abort();
    }
    tracing::info!(service = S::NAME, "gRPC server stopped");
    result
}

/// The event feed a producing service serves beside its own API.
pub type EventFeedServer =
    crate::proto::events::v1::event_feed_service_server::EventFeedServiceServer<
        crate::events::feed::EventFeed,
    >;

/// The dead-letter service a consuming service serves beside its own API.
pub type DeadLetterServer =
    crate::proto::events::v1::dead_letter_service_server::DeadLetterServiceServer<
        crate::events::dead_letters::DeadLetters,
    >;

/// The event services a service serves beside its API, if it produces or consumes events.
#[derive(Default)]
pub struct EventServices {
    pub feed: Option<EventFeedServer>,
    pub dead_letters: Option<DeadLetterServer>,
}

/// The health-service name that reports whether the process is alive (for liveness and
/// startup probes), as opposed to "" and the service's own name, which report readiness.
pub const LIVENESS_NAME: &str = "liveness";
const EVENT_FEED_NAME: &str = "bookmesh.events.v1.EventFeedService";
const DEAD_LETTER_NAME: &str = "bookmesh.events.v1.DeadLetterService";

fn reflection_builder(
    service_name: &str,
    extra_names: &[&str],
) -> tonic_reflection::server::Builder<'static> {
    extra_names
        .iter()
        .fold(
            tonic_reflection::server::Builder::configure(),
            |builder, name| builder.with_service_name(*name),
        )
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
        // Advertise only what this server serves, though every contract is registered so
        // that shared message types resolve.
        .with_service_name(service_name)
        .with_service_name("grpc.health.v1.Health")
        .with_service_name("grpc.reflection.v1.ServerReflection")
        .with_service_name("grpc.reflection.v1alpha.ServerReflection")
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM (what Kubernetes and the launcher send).
pub async fn shutdown_signal() {
    let interrupt = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            futures::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                futures::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = futures::future::pending::<()>();
    tokio::select! {
        () = interrupt => {},
        () = terminate => {},
    }
}

/// How much earlier than tonic's timer the guard answers an expired deadline.
const DEADLINE_HEAD_START: std::time::Duration = std::time::Duration::from_millis(2);

/// What stands between the network and a service's handlers, in order:
/// 1. readiness: UNAVAILABLE until the service first became ready, so no call reaches a
///    database whose tables do not exist yet (clients retry UNAVAILABLE on another replica);
/// 2. load shedding: RESOURCE_EXHAUSTED at once when `max_concurrent_requests` calls are in
///    flight, instead of an unbounded queue that grows memory and latency;
/// 3. deadline: the request's deadline (its `grpc-timeout`, capped by the server's request
///    timeout) is set for the handler, so its outgoing calls inherit what is left of it;
/// 4. trace context: the caller's `traceparent` is continued (or a trace started), so outgoing
///    calls and outbox events of this request belong to its trace;
/// 5. access log at DEBUG (`bookmesh::access`): method, gRPC status, latency, trace id.
///
/// Health and reflection are outside it: probes must answer even when the service sheds load.
#[derive(Clone)]
struct ServiceGuard<S> {
    inner: S,
    readiness: Readiness,
    permits: Arc<tokio::sync::Semaphore>,
    request_timeout: std::time::Duration,
}

impl<S: NamedService> NamedService for ServiceGuard<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> tower::Service<http::Request<Body>> for ServiceGuard<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + NamedService,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        if !self.readiness.has_started() {
            let status = tonic::Status::unavailable("service is starting: database not ready yet");
            return Box::pin(async move { Ok(status.into_http()) });
        }
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            let status = tonic::Status::resource_exhausted(
                "server overloaded: too many calls in flight, retry with backoff",
            );
            tracing::debug!(target: "bookmesh::access", method = %request.uri().path(), "shed");
            crate::metrics::SERVER_SHED
                .with_label_values(&[S::NAME])
                .inc();
            return Box::pin(async move { Ok(status.into_http()) });
        };
        let started = std::time::Instant::now();
        let budget = request
            .headers()
            .get("grpc-timeout")
            .and_then(|value| value.to_str().ok())
            .and_then(crate::deadline::parse_grpc_timeout)
            .map_or(self.request_timeout, |timeout| {
                timeout.min(self.request_timeout)
            });
        let method = request.uri().path().to_owned();
        let rpc_method = method.rsplit('/').next().unwrap_or_default().to_owned();
        // The server span continues the caller's trace (or starts one); every log line written
        // while serving the call carries its ids (JSON logs include the current span's fields).
        let caller = request
            .headers()
            .get("traceparent")
            .and_then(|value| value.to_str().ok())
            .and_then(crate::trace_context::TraceContext::parse);
        let span = tracing::info_span!(
            "rpc",
            otel.name = %method.trim_start_matches('/'),
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.service = S::NAME,
            rpc.method = %rpc_method,
            rpc.grpc.status_code = tracing::field::Empty,
            trace_id = tracing::field::Empty,
            span_id = tracing::field::Empty,
        );
        let trace = crate::telemetry::enter_trace(&span, caller);
        crate::metrics::SERVER_ACTIVE
            .with_label_values(&[S::NAME])
            .inc();
        let response = self.inner.call(request);
        Box::pin(async move {
            // Answer DEADLINE_EXCEEDED ourselves, a moment before tonic's own timer would: tonic
            // reports an expired deadline as CANCELLED "Timeout expired", which callers in other
            // languages do not read as a deadline.
            let answer_by = started + budget.saturating_sub(DEADLINE_HEAD_START);
            let served = tokio::time::timeout_at(
                answer_by.into(),
                tracing::Instrument::instrument(
                    crate::trace_context::scope(
                        trace,
                        crate::deadline::scope(started + budget, response),
                    ),
                    span.clone(),
                ),
            )
            .await;
            let response = match served {
                Ok(response) => response,
                Err(_elapsed) => Ok(tonic::Status::deadline_exceeded(
                    "the call's deadline passed before it was served",
                )
                .into_http()),
            };
            drop(permit);
            crate::metrics::SERVER_ACTIVE
                .with_label_values(&[S::NAME])
                .dec();
            if let Ok(response) = &response {
                let code = response
                    .headers()
                    .get("grpc-status")
                    .and_then(|value| value.to_str().ok())
                    .unwrap_or("0");
                crate::metrics::SERVER_REQUESTS
                    .with_label_values(&[S::NAME, rpc_method.as_str(), code])
                    .inc();
                span.record("rpc.grpc.status_code", code);
                crate::metrics::SERVER_DURATION
                    .with_label_values(&[S::NAME, rpc_method.as_str()])
                    .observe(started.elapsed().as_secs_f64());
                tracing::debug!(
                    target: "bookmesh::access",
                    %method,
                    grpc_status = code,
                    latency_us = started.elapsed().as_micros() as u64,
                    budget_ms = budget.as_millis() as u64,
                    trace_id = %trace.trace_id_hex(),
                    "served"
                );
            }
            response
        })
    }
}

/// What a service hands to [`serve_with_database`] once its database connection exists.
pub struct App<S> {
    /// The service's own gRPC API.
    pub service: S,
    /// Its event feed (if it publishes events) and dead letters (if it consumes some).
    pub events: EventServices,
    /// Background work (outbox relay, event consumers), stopped when the server stops.
    pub tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl<S> App<S> {
    /// A service with no events and no background work.
    pub fn service(service: S) -> Self {
        Self {
            service,
            events: EventServices::default(),
            tasks: Vec::new(),
        }
    }
}

/// Serves a service that owns a database: opens the pool lazily, migrates it in the
/// background (health says NOT_SERVING until done), builds the app, then serves until
/// `shutdown`.
pub async fn serve_with_database<M, S>(
    settings: &ServerArgs,
    database_url: &str,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    build: impl FnOnce(sea_orm::DatabaseConnection, &Readiness) -> Result<App<S>, ServeError>,
) -> Result<(), ServeError>
where
    M: sea_orm_migration::MigratorTrait,
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + NamedService
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    let db = crate::db::connect_lazy(database_url).await?;
    let readiness = Readiness::new();
    let readiness_task =
        crate::db::spawn_readiness::<M>(db.clone(), readiness.clone(), settings.readiness_interval);
    let app = build(db, &readiness)?;
    let served = serve(
        settings,
        app.service,
        app.events,
        listener,
        readiness,
        shutdown,
    )
    .await;
    readiness_task.abort();
    for task in app.tasks {
        task.abort();
    }
    served
}

/// Binds the listening socket with `SO_REUSEADDR` (a restarted server must not wait for the
/// TIME_WAIT sockets of its previous life), retrying while the address is in use: 50051-50054
/// lie in Linux's ephemeral range, and a client connection that used one as its source port
/// holds it in TIME_WAIT for up to a minute (reserve the ports with
/// `net.ipv4.ip_local_reserved_ports` to avoid the wait altogether).
pub async fn bind(address: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let listen = || -> std::io::Result<TcpListener> {
        let socket = if address.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.bind(address)?;
        socket.listen(1024)
    };
    let mut attempts = 0;
    loop {
        match listen() {
            Err(error) if error.kind() == std::io::ErrorKind::AddrInUse && attempts < 350 => {
                attempts += 1;
                tracing::warn!(%address, %error, "address in use; retrying");
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            bound => return bound,
        }
    }
}
