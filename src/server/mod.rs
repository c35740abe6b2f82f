//! The one way to run a bookmesh gRPC server.
//!
//! Every server gets gRPC health (`grpc.health.v1`: NOT_SERVING until the service is ready and
//! again from the moment a stop signal arrives), reflection v1 and v1alpha (grpcurl 1.8 and
//! grpcui only speak v1alpha) with the health and `google.rpc` error types registered, HTTP/2
//! limits and keepalive, the admin port, and a graceful drain bounded by a grace period.
//!
//! The service's API, its event feed and its dead-letter service sit behind the server stack
//! ([`stack`]): readiness gate, load shedding, trace, metrics, access log and deadline, each a
//! layer of its own.

mod access_log;
mod authorize;
mod catch_panic;
mod connections;
mod deadline;
mod drain;
mod fault;
mod health;
mod idempotency;
mod load_shed;
mod metrics;
mod readiness_gate;
mod response;
mod shutdown;
mod stack;
mod trace;

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::transport::server::TcpIncoming;

pub use health::LIVENESS_NAME;
pub(crate) use idempotency::retention_target as idempotency_retention;
pub use idempotency::{CreateIdempotencyKeys, IDEMPOTENCY_KEY_HEADER, IdempotencyLayer};
pub use shutdown::shutdown_signal;

use crate::auth::Authorizer;
use crate::config::ServerArgs;
use crate::events::dead_letters::DeadLetterServer;
use crate::events::feed::EventFeedServer;
use crate::identity::Identity;
use crate::readiness::Readiness;

/// Errors that stop a server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The reflection service could not be built from the descriptors.
    #[error("reflection setup failed: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The gRPC server failed.
    #[error("gRPC transport failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The database pool could not be created.
    #[error("database: {0}")]
    Database(#[from] sea_orm::DbErr),
    /// An upstream is misconfigured.
    #[error("upstream: {0}")]
    Upstream(#[from] crate::client::UpstreamError),
    /// The configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The listening socket could not be bound.
    #[error("cannot listen: {0}")]
    Listen(#[from] std::io::Error),
    /// Calls were still running when the shutdown grace period ended.
    #[error("in-flight calls did not finish within the shutdown grace period")]
    DrainTimedOut,
}

/// Streams a client may reset before the server accepted them, per connection (h2's default,
/// set explicitly so it cannot silently change).
const MAX_PENDING_ACCEPT_RESET_STREAMS: usize = 20;
/// Streams the server may reset because of a client's errors, per connection, before it sends
/// GOAWAY (hyper's default, which tonic turns off unless it is set).
const MAX_LOCAL_ERROR_RESET_STREAMS: usize = 1024;

/// The event services a service serves beside its API, if it produces or consumes events.
#[derive(Default)]
pub(crate) struct EventServices {
    /// Its event feed, if it publishes events.
    pub(crate) feed: Option<EventFeedServer>,
    /// Its dead letters, if it consumes events.
    pub(crate) dead_letters: Option<DeadLetterServer>,
}

/// Serves `service` on `listener` until `shutdown` completes, then drains in-flight calls.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn serve<S>(
    settings: &ServerArgs,
    identity: &Identity,
    authorizer: Option<Arc<Authorizer>>,
    service: S,
    events: EventServices,
    listener: TcpListener,
    readiness: Readiness,
    idempotency: Option<IdempotencyLayer>,
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
    health::initial_statuses(&health_reporter, S::NAME).await;
    let mut served_names = vec![S::NAME];
    if events.feed.is_some() {
        served_names.push(<EventFeedServer as NamedService>::NAME);
    }
    if events.dead_letters.is_some() {
        served_names.push(<DeadLetterServer as NamedService>::NAME);
    }
    let reflection_v1 = health::reflection(&served_names).build_v1()?;
    let reflection_v1alpha = health::reflection(&served_names).build_v1alpha()?;
    let health_task = tokio::spawn(health::follow_readiness(
        health_reporter,
        S::NAME,
        readiness.clone(),
    ));
    let admin_task = settings.admin_listen.map(|address| {
        let admin = crate::admin::Admin {
            readiness: readiness.clone(),
            authorizer: authorizer.clone(),
        };
        tokio::spawn(async move {
            if let Err(error) = crate::admin::serve(address, admin).await {
                tracing::error!(%error, %address, "admin HTTP server failed");
            }
        })
    });

    let drain_delay = settings.drain_delay;
    let (drain_started_tx, drain_started_rx) = tokio::sync::oneshot::channel::<()>();
    let (begin_drain, draining) = drain::drain_signal();
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
        // Open streams end now (watchers have seen NOT_SERVING during the delay), so the
        // drain waits only for unary calls.
        begin_drain.begin();
        let _ = drain_started_tx.send(());
    };

    let local_addr = listener.local_addr().ok();
    let tcp = TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(settings.keepalive_interval));
    let tls = identity
        .credentials()
        .map(crate::identity::tls::server_config)
        .transpose()
        .map_err(|error| ServeError::Config(format!("TLS: {error}")))?;

    let mut builder = tonic::transport::Server::builder();
    if !settings.max_connection_age.is_zero() {
        // Jitter per process, so replicas started together do not send their clients away at
        // the same moment.
        let jitter = 0.9 + 0.2 * fastrand::f64();
        builder = builder
            .max_connection_age(settings.max_connection_age.mul_f64(jitter))
            .max_connection_age_grace(settings.request_timeout);
    }
    let guard = stack::Guard {
        readiness,
        permits: Arc::new(tokio::sync::Semaphore::new(
            settings.max_concurrent_requests,
        )),
        request_timeout: settings.request_timeout,
        authorize: authorize::AuthorizeLayer::new(
            authorizer,
            identity.id().clone(),
            settings.max_message_bytes,
        ),
        idempotency,
    };
    let router = builder
        .layer(drain::EndStreamsOnDrainLayer::new(draining))
        .timeout(settings.request_timeout)
        .max_concurrent_streams(settings.max_concurrent_streams)
        // HTTP/2 floods (docs/reliability.md): streams a client opens and resets at once
        // ("rapid reset"), streams it makes the server reset ("made you reset"), and header
        // lists larger than any real call needs. Past the first two the connection gets
        // GOAWAY; tonic leaves the second unlimited unless it is set.
        .http2_max_pending_accept_reset_streams(Some(MAX_PENDING_ACCEPT_RESET_STREAMS))
        .http2_max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESET_STREAMS))
        .http2_max_header_list_size(settings.max_header_list_bytes)
        .http2_keepalive_interval(Some(settings.keepalive_interval))
        .http2_keepalive_timeout(Some(std::time::Duration::from_secs(10)))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_optional_service(events.feed.map(|feed| {
            let feed = feed
                .max_decoding_message_size(settings.max_message_bytes)
                .max_encoding_message_size(settings.max_message_bytes);
            stack::guarded(feed, &guard)
        }))
        .add_optional_service(events.dead_letters.map(|dead_letters| {
            let dead_letters = dead_letters
                .max_decoding_message_size(settings.max_message_bytes)
                .max_encoding_message_size(settings.max_message_bytes);
            stack::guarded(dead_letters, &guard)
        }))
        .add_service(stack::guarded(service, &guard));
    let limits = connections::ConnectionLimits {
        max_connections: settings.max_connections,
        min_ping_interval: settings.min_ping_interval,
    };
    let server = match tls {
        Some(tls) => {
            let incoming = crate::identity::transport::tls_incoming(tcp, tls);
            let incoming = connections::limit_connections(incoming, limits);
            futures::future::Either::Left(router.serve_with_incoming_shutdown(incoming, signal))
        }
        None => {
            let incoming = connections::limit_connections(tcp, limits);
            futures::future::Either::Right(router.serve_with_incoming_shutdown(incoming, signal))
        }
    };

    tracing::info!(service = S::NAME, address = ?local_addr, identity = ?identity, "gRPC server listening");
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
