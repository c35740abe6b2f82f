//! One service skeleton. A service says what it is (name, migrations, API) and builds its parts
//! once its database pool exists; the skeleton does the rest, the same way for every service:
//! logging and tracing, binding, the lazy database pool and migrations behind the health
//! status, the event feed and consumers, the server stack, the drain.
//!
//! ```ignore
//! impl bookmesh::service::Service for Config {
//!     const NAME: &'static str = "book";
//!     type Migrator = store::migration::Migrator;
//!     type Api = BookServiceServer<BookApi>;
//!     fn args(&self) -> &ServiceArgs { &self.service }
//!     fn build(self, parts: &mut Parts) -> Result<Self::Api, ServeError> {
//!         parts.publish_events();
//!         parts.consume_events("rental", self.rental_endpoints, RentalEvents)?;
//!         Ok(BookServiceServer::new(BookApi::new(BookStore::new(parts.db()))))
//!     }
//! }
//! ```

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use sea_orm::DatabaseConnection;
use sea_orm_migration::MigratorTrait;
use tokio::net::TcpListener;
use tonic::body::Body;
use tonic::server::NamedService;

pub use crate::telemetry::in_http_server_span;

use crate::auth::Authorizer;
use crate::config::{EventArgs, ServiceArgs};
use crate::events::consumer::{ConsumerConfig, EventHandler, Processor};
use crate::events::dead_letters::{DeadLetterServer, DeadLetters};
use crate::events::outbox::Relay;
use crate::events::retention::RetentionTarget;
use crate::events::{Consumer, Producer};
use crate::identity::Identity;
use crate::readiness::Readiness;
use crate::server::{EventServices, ServeError};

/// What makes a bookmesh service, for the skeleton to run it. Implemented by each service's
/// `Config`: the configuration says which service it is.
pub trait Service: std::fmt::Debug + Send + Sized + 'static {
    /// The service's name: its logs and traces, its default SQLite file, its events' producer
    /// and consumer names (`book`).
    const NAME: &'static str;
    /// The migrations of its database, applied before it reports SERVING.
    type Migrator: MigratorTrait;
    /// Its gRPC API, as tonic generates it (`BookServiceServer<BookApi>`).
    type Api: tower::Service<
            http::Request<Body>,
            Response = http::Response<Body>,
            Error = Infallible,
            Future: Send + 'static,
        > + NamedService
        + Clone
        + Send
        + Sync
        + 'static;

    /// The settings every service shares.
    fn args(&self) -> &ServiceArgs;

    /// Builds the API from `parts`, starting the service's event publishing and consuming.
    /// Runs once the database pool exists (it may not answer yet).
    fn build(self, parts: &mut Parts) -> Result<Self::Api, ServeError>;
}

/// What a service builds its API from, and where it registers its events.
pub struct Parts {
    service: &'static str,
    identity: Identity,
    db: DatabaseConnection,
    readiness: Readiness,
    events: EventArgs,
    max_message_bytes: usize,
    /// Created for every service so consumers can wake it; started by `publish_events`.
    relay: Relay,
    producer: Option<Producer>,
    consumers: Vec<Consumer>,
    /// The tables the pruner keeps bounded.
    retention: Vec<RetentionTarget>,
    /// Methods that honour an `idempotency-key`.
    idempotent_methods: Vec<&'static str>,
    idempotency_key_ttl: std::time::Duration,
    /// The service's own background jobs (`run_periodically`).
    jobs: Vec<tokio::task::JoinHandle<()>>,
}

impl Parts {
    /// The service's database (a lazy pool: it may not answer yet).
    pub fn db(&self) -> DatabaseConnection {
        self.db.clone()
    }

    /// Who the service is: its upstreams are called as this identity.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// Turns true when the service starts to stop: long-lived streams the API serves end
    /// then, so clients resubscribe to another replica and the drain is not held up.
    pub fn stopping_signal(&self) -> tokio::sync::watch::Receiver<bool> {
        self.readiness.stopping_signal()
    }

    /// Largest gRPC message the API should accept or send (`--max-message-bytes`).
    pub fn max_message_bytes(&self) -> usize {
        self.max_message_bytes
    }

    /// Publishes the service's outbox: starts the relay (and the JetStream publisher) and
    /// serves the event feed. Returns the relay, for a store to wake after its commits.
    pub fn publish_events(&mut self) -> Relay {
        if self.producer.is_none() {
            self.retain(crate::events::retention::outbox_target(
                self.events.outbox_retention,
            ));
            self.producer = Some(crate::events::start_producer(
                self.relay.clone(),
                &self.readiness,
                &self.events,
            ));
        }
        self.relay.clone()
    }

    /// Consumes `producer`'s events with `handler`, from its feed at `endpoints` or its
    /// JetStream stream, exactly once each; failed events go to the dead-letter service. The
    /// service's own relay is woken after each applied event, for the events it appended.
    pub fn consume_events(
        &mut self,
        producer: &str,
        endpoints: Vec<String>,
        handler: impl EventHandler,
    ) -> Result<(), ServeError> {
        let processor = Processor::new(
            self.db.clone(),
            ConsumerConfig::new(self.service, producer),
            handler,
        )
        .waking(self.relay.clone());
        let consumer = crate::events::start_consumer(
            processor,
            endpoints,
            &self.identity,
            &self.readiness,
            &self.events,
        )?;
        if self.consumers.is_empty() {
            self.retain(crate::events::retention::inbox_target(
                self.events.inbox_retention,
            ));
            self.retain(crate::events::retention::dead_letter_target(
                self.events.dead_letter_retention,
            ));
        }
        self.consumers.push(consumer);
        Ok(())
    }

    /// Lets callers of `methods` (`RentBook`) name each write with an `idempotency-key`, so
    /// a retry returns the first answer and changes nothing more (see
    /// [`crate::server::IdempotencyLayer`]). The service's migrator must list
    /// [`crate::server::CreateIdempotencyKeys`].
    pub fn honour_idempotency_keys(&mut self, methods: &[&'static str]) {
        if self.idempotent_methods.is_empty() {
            self.retain(crate::server::idempotency_retention(
                self.idempotency_key_ttl,
            ));
        }
        self.idempotent_methods.extend_from_slice(methods);
    }

    /// Keeps one of the service's own tables bounded (rental's saga steps): the pruner
    /// deletes its rows once they are older than the target's retention.
    pub fn retain(&mut self, target: RetentionTarget) {
        self.retention.push(target);
    }

    /// Runs `job` every `interval` once the database is ready, until the service stops (a
    /// job the drain interrupts is simply not finished; it must leave nothing half done, as
    /// one transaction per change does). Every replica runs it, so a job must tolerate
    /// another replica doing the same work at the same time.
    pub fn run_periodically<F, Fut>(&mut self, interval: std::time::Duration, mut job: F)
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send,
    {
        let readiness = self.readiness.clone();
        self.jobs.push(tokio::spawn(async move {
            if interval.is_zero() {
                return;
            }
            readiness.started().await;
            let mut stopping = readiness.stopping_signal();
            loop {
                tokio::select! {
                    () = job() => {},
                    _ = stopping.changed() => return,
                }
                tokio::select! {
                    () = tokio::time::sleep(interval) => {},
                    _ = stopping.changed() => return,
                }
            }
        }));
    }

    /// How long the service's history tables keep their rows (`--history-retention`).
    pub fn history_retention(&self) -> std::time::Duration {
        self.events.history_retention
    }

    /// The event services to serve, and the tasks to stop with the server.
    fn into_events(self) -> (EventServices, Vec<tokio::task::JoinHandle<()>>) {
        let mut tasks = vec![tokio::spawn(crate::events::retention::run_pruner(
            self.db.clone(),
            self.retention,
            self.events.prune_interval,
            self.events.prune_batch,
            self.readiness.clone(),
        ))];
        tasks.extend(self.jobs);
        let feed = self.producer.map(|producer| {
            tasks.push(producer.task);
            producer.feed
        });
        let dead_letters = (!self.consumers.is_empty()).then(|| {
            let processors = self
                .consumers
                .iter()
                .map(|c| c.processor.clone())
                .collect::<Vec<_>>();
            DeadLetterServer::new(DeadLetters::new(self.db.clone(), processors))
        });
        tasks.extend(self.consumers.into_iter().map(|consumer| consumer.task));
        (EventServices { feed, dead_letters }, tasks)
    }
}

/// Runs `service` as a process does: logging and tracing, the configuration logged (secrets
/// masked), the configured address bound, served until SIGINT or SIGTERM.
pub async fn run<S: Service>(service: S) -> Result<(), ServeError> {
    // Kept until the server stops, so pending spans are flushed on the way out.
    let _telemetry = crate::telemetry::init(S::NAME, service.args().server.log_format);
    tracing::info!(config = ?service, "{}-service configuration", S::NAME);
    let listener = crate::listener::bind(service.args().listen).await?;
    let served = serve(service, listener).await;
    if let Err(error) = &served {
        // One line, in the log format operators read, while the log is still set up.
        tracing::error!(service = S::NAME, %error, "{}-service stopped with an error", S::NAME);
    }
    served
}

/// Logging and trace export for a process that is not a [`Service`] (the gateway), set up as
/// the services' are; keep the guard until the process stops, so pending spans are flushed.
pub fn init_telemetry(name: &str, format: crate::config::LogFormat) -> TelemetryGuard {
    TelemetryGuard(crate::telemetry::init(name, format))
}

/// Keeps logging and trace export running; dropping it flushes them.
pub struct TelemetryGuard(#[allow(dead_code)] crate::telemetry::Telemetry);

/// A service binary's whole `main`: runs `service` and turns the outcome into the exit status
/// (the error was logged, as one line, by [`run`]; no backtrace).
pub async fn main<S: Service>(service: S) -> std::process::ExitCode {
    match run(service).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(_) => std::process::ExitCode::FAILURE,
    }
}

/// Serves `service` on `listener` until SIGINT or SIGTERM.
pub async fn serve<S: Service>(service: S, listener: TcpListener) -> Result<(), ServeError> {
    serve_until(service, listener, crate::server::shutdown_signal()).await
}

/// Serves `service` on `listener` until `shutdown` completes, then drains in-flight calls.
/// Tests start real servers with this, on an ephemeral port.
pub async fn serve_until<S: Service>(
    service: S,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let args = service.args().clone();
    let identity = Identity::from_args(&args.identity, S::NAME).map_err(|error| {
        ServeError::Config(format!(
            "identity: {error} (make run creates a local PKI under data/pki; \
                 --insecure-plaintext runs without one, for development only)"
        ))
    })?;
    // Plaintext has no identities to authorize; the identity already warned about it.
    let authorizer = if identity.is_plaintext() {
        None
    } else {
        let authorizer = Authorizer::from_args(S::NAME, &args.auth, &args.identity)
            .await
            .map_err(|error| ServeError::Config(error.to_string()))?;
        Some(Arc::new(authorizer))
    };
    if args.server.faults_enabled {
        crate::faults::enable(S::NAME, &args.server.faults)
            .map_err(|error| ServeError::Config(format!("--fault: {error}")))?;
        tracing::warn!(
            "faults may be injected (--faults-enabled, docs/faults.md): not for production"
        );
    } else if !args.server.faults.is_empty() {
        return Err(ServeError::Config(
            "--fault needs --faults-enabled (BOOKMESH_FAULTS_ENABLED=true)".to_owned(),
        ));
    }
    // Lazy: the server starts, answers NOT_SERVING, and waits for a database still starting.
    let db = crate::db::connect_lazy(&args.database.effective_url(S::NAME)).await?;
    let readiness = Readiness::new();
    let readiness_task = crate::db::spawn_readiness::<S::Migrator>(
        db.clone(),
        readiness.clone(),
        args.server.readiness_interval,
    );
    let mut parts = Parts {
        service: S::NAME,
        identity: identity.clone(),
        relay: Relay::new(S::NAME, db.clone()),
        db,
        readiness: readiness.clone(),
        events: args.events.clone(),
        max_message_bytes: args.server.max_message_bytes,
        producer: None,
        consumers: Vec::new(),
        retention: Vec::new(),
        idempotent_methods: Vec::new(),
        idempotency_key_ttl: args.server.idempotency_key_ttl,
        jobs: Vec::new(),
    };
    let api = match service.build(&mut parts) {
        Ok(api) => api,
        Err(error) => {
            readiness_task.abort();
            for task in parts.into_events().1 {
                task.abort();
            }
            return Err(error);
        }
    };
    let idempotency = (!parts.idempotent_methods.is_empty()).then(|| {
        crate::server::IdempotencyLayer::new(
            parts.db.clone(),
            &parts.idempotent_methods,
            // A call still "running" after twice the longest a call may take was cut off (its
            // process died): a repeat may run it again.
            args.server.request_timeout * 2,
            args.server.max_message_bytes,
        )
    });
    let (events, tasks) = parts.into_events();
    let served = crate::server::serve(
        &args.server,
        &identity,
        authorizer,
        api,
        events,
        listener,
        readiness,
        idempotency,
        shutdown,
    )
    .await;
    readiness_task.abort();
    for task in tasks {
        task.abort();
    }
    served
}
