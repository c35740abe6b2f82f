//! The server stack: what stands between the network and a service's handlers, composed once,
//! outermost first. Health and reflection stay outside it: probes must answer even while the
//! service sheds load or waits for its database.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::service::LayerExt as _;
use tower::ServiceBuilder;
use tower::limit::GlobalConcurrencyLimitLayer;

use super::access_log::AccessLogLayer;
use super::authorize::AuthorizeLayer;
use super::catch_panic::CatchPanicLayer;
use super::deadline::DeadlineLayer;
use super::fault::FaultLayer;
use super::load_shed::ShedAsResourceExhaustedLayer;
use super::metrics::MetricsLayer;
use super::readiness_gate::ReadinessGateLayer;
use super::trace::TraceLayer;
use crate::readiness::Readiness;

/// What every guarded service of one server shares.
#[derive(Clone)]
pub(crate) struct Guard {
    pub(crate) readiness: Readiness,
    /// One pool of permits for all the server's services: the limit is the process's.
    pub(crate) permits: Arc<Semaphore>,
    pub(crate) request_timeout: Duration,
    pub(crate) authorize: AuthorizeLayer,
    /// The service's idempotency keys, if it honours any.
    pub(crate) idempotency: Option<super::idempotency::IdempotencyLayer>,
}

/// The layers a benchmark build leaves out, to measure what each costs a call
/// (`bookmesh-bench reads`, docs/performance.md). Only a build with the `bench-layer-switches`
/// feature reads `BOOKMESH_BENCH_LAYERS_OFF` (a comma-separated list of `readiness`,
/// `metrics`, `tracing`: the trace span and the access log); every other build has every
/// layer, always.
#[derive(Debug, Default, Clone, Copy)]
struct LayersOff {
    readiness: bool,
    metrics: bool,
    tracing: bool,
}

impl LayersOff {
    #[cfg(feature = "bench-layer-switches")]
    fn from_env() -> Self {
        let off = std::env::var("BOOKMESH_BENCH_LAYERS_OFF").unwrap_or_default();
        let has = |name: &str| off.split(',').any(|listed| listed.trim() == name);
        let off = Self {
            readiness: has("readiness"),
            metrics: has("metrics"),
            tracing: has("tracing"),
        };
        tracing::warn!(?off, "benchmark build: server layers switched off");
        off
    }

    #[cfg(not(feature = "bench-layer-switches"))]
    fn from_env() -> Self {
        Self::default()
    }
}

/// `service` behind the stack. It keeps its name, so tonic routes to it as before.
pub(crate) fn guarded<S>(
    service: S,
    guard: &Guard,
) -> impl tower::Service<
    http::Request<Body>,
    Response = http::Response<Body>,
    Error = Infallible,
    Future: Send + 'static,
> + NamedService
+ Clone
+ Send
+ Sync
+ 'static
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + NamedService
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    let off = LayersOff::from_env();
    ServiceBuilder::new()
        // First: a service still migrating answers UNAVAILABLE and spends nothing else.
        .option_layer((!off.readiness).then(|| ReadinessGateLayer::new(guard.readiness.clone())))
        // Then shedding, before any work is spent on a call that will be refused: tower's
        // limit and load shed, answered as RESOURCE_EXHAUSTED.
        .layer(ShedAsResourceExhaustedLayer::new(S::NAME))
        .load_shed()
        .layer(GlobalConcurrencyLimitLayer::with_semaphore(
            guard.permits.clone(),
        ))
        // The span wraps everything below, so the access log and the handler run in it.
        .option_layer((!off.tracing).then(|| TraceLayer::new(S::NAME)))
        // Metrics and the access log sit above the deadline, so they see its answer too.
        .option_layer((!off.metrics).then(|| MetricsLayer::new(S::NAME)))
        .option_layer((!off.tracing).then_some(AccessLogLayer))
        // Every call gets a deadline, its checks included (a request read slowly for the
        // "member themself" check must not outlive it).
        .layer(DeadlineLayer::new(guard.request_timeout))
        // Injected faults (off unless --faults-enabled): below the deadline, so a hang ends
        // at the call's deadline; above everything else, so they see no handler work.
        .layer(FaultLayer)
        // A panic below answers INTERNAL, which the layers above see, count and log; the
        // connection and its other calls live on.
        .layer(CatchPanicLayer::new(S::NAME))
        // Innermost: nothing reaches a handler unauthorized; refusals are still traced,
        // counted and logged by the layers above.
        .layer(guard.authorize.clone())
        // Below authorization: only an authorized caller's key is stored or answered.
        .option_layer(guard.idempotency.clone())
        .named_layer(service)
}
