//! Process metrics in the Prometheus text format, served on the admin port (`/metrics`).
//! One registry per process; names follow the Prometheus conventions (`_total` counters,
//! base units).

use std::sync::LazyLock;

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};

/// The process-wide registry that `/metrics` renders.
pub(crate) static REGISTRY: LazyLock<Registry> = LazyLock::new(Registry::new);

fn register<C: prometheus::core::Collector + Clone + 'static>(collector: C) -> C {
    // Registration fails only for a duplicate name, which would be a programming error caught
    // by the tests; the collector works unregistered either way.
    if let Err(error) = REGISTRY.register(Box::new(collector.clone())) {
        tracing::error!(%error, "metric registration failed");
    }
    collector
}

fn counter(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    match IntCounterVec::new(Opts::new(name, help), labels) {
        Ok(counter) => register(counter),
        Err(error) => panic!("invalid metric definition {name}: {error}"),
    }
}

fn gauge(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    match IntGaugeVec::new(Opts::new(name, help), labels) {
        Ok(gauge) => register(gauge),
        Err(error) => panic!("invalid metric definition {name}: {error}"),
    }
}

fn histogram(name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    // Latency buckets from 1 ms to 10 s: gRPC calls on a mesh live in that range.
    let buckets = vec![
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ];
    match HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels) {
        Ok(histogram) => register(histogram),
        Err(error) => panic!("invalid metric definition {name}: {error}"),
    }
}

/// Calls served, by service, method and gRPC status code (OpenTelemetry's `rpc.server.*`
/// semantic conventions, in Prometheus form).
pub(crate) static SERVER_REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "rpc_server_requests_total",
        "gRPC calls served, by service, method and status code",
        &["rpc_service", "rpc_method", "rpc_grpc_status_code"],
    )
});

/// Time to answer a call (until the response headers), by service and method.
pub(crate) static SERVER_DURATION: LazyLock<HistogramVec> = LazyLock::new(|| {
    histogram(
        "rpc_server_duration_seconds",
        "Time to answer a gRPC call, by service and method",
        &["rpc_service", "rpc_method"],
    )
});

/// Calls being served right now.
pub(crate) static SERVER_ACTIVE: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    gauge(
        "rpc_server_active_requests",
        "gRPC calls being served now",
        &["rpc_service"],
    )
});

/// Outgoing calls (all attempts of one call), by upstream, method and final status code.
pub(crate) static CLIENT_REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "rpc_client_requests_total",
        "gRPC calls made to an upstream, by method and final status code",
        &["upstream", "rpc_method", "rpc_grpc_status_code"],
    )
});

/// Duration of outgoing calls, retries included.
pub(crate) static CLIENT_DURATION: LazyLock<HistogramVec> = LazyLock::new(|| {
    histogram(
        "rpc_client_duration_seconds",
        "Duration of gRPC calls to an upstream, retries included",
        &["upstream", "rpc_method"],
    )
});

/// Outgoing calls in flight per upstream.
pub(crate) static CLIENT_ACTIVE: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    gauge(
        "rpc_client_active_requests",
        "gRPC calls to an upstream in flight now",
        &["upstream"],
    )
});

/// Outbox rows not yet published on the feed.
pub(crate) static OUTBOX_BACKLOG: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    gauge(
        "bookmesh_outbox_unpublished_events",
        "Committed outbox events not yet published",
        &["producer"],
    )
});

/// Age of the oldest unpublished outbox row.
pub(crate) static OUTBOX_OLDEST_AGE: LazyLock<prometheus::GaugeVec> = LazyLock::new(|| {
    match prometheus::GaugeVec::new(
        Opts::new(
            "bookmesh_outbox_oldest_unpublished_age_seconds",
            "Age of the oldest committed outbox event not yet published (0 when none)",
        ),
        &["producer"],
    ) {
        Ok(gauge) => register(gauge),
        Err(error) => panic!("invalid metric definition: {error}"),
    }
});

/// Events handled per subscription, by outcome (applied, duplicate, dead_lettered).
pub(crate) static CONSUMER_EVENTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "bookmesh_consumer_events_total",
        "Events handled by a consumer, by outcome",
        &["subscription", "outcome"],
    )
});

/// Consumer lag in time: how old the last handled event was when it was handled.
pub(crate) static CONSUMER_LAG: LazyLock<prometheus::GaugeVec> = LazyLock::new(|| {
    match prometheus::GaugeVec::new(
        Opts::new(
            "bookmesh_consumer_lag_seconds",
            "Time between an event's commit at the producer and its handling, last event",
        ),
        &["subscription"],
    ) {
        Ok(gauge) => register(gauge),
        Err(error) => panic!("invalid metric definition: {error}"),
    }
});

/// Feed position of the last handled event.
pub(crate) static CONSUMER_POSITION: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    gauge(
        "bookmesh_consumer_position",
        "Feed sequence of the last event a consumer handled",
        &["subscription"],
    )
});

/// Database connections per state (in use, idle) and the pool's maximum.
pub(crate) static DB_POOL: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    gauge(
        "bookmesh_db_pool_connections",
        "Database pool connections, by state (used, idle, max)",
        &["state"],
    )
});

/// How long SQLite writers of this process waited for their turn (`db::begin_write`), by
/// writer (`call`, `consumer`, `relay`).
pub(crate) static DB_WRITE_TURN_WAIT: LazyLock<HistogramVec> = LazyLock::new(|| {
    writer_histogram(
        "bookmesh_db_write_turn_wait_seconds",
        "Time a SQLite write transaction waited for this process's writer turn, by writer",
    )
});

/// How long SQLite writers held the turn, by writer: the rate of its sum is the share of time
/// the one writer is busy (near 1, writes queue), and its labels say who keeps it busy
/// (docs/performance.md).
pub(crate) static DB_WRITE_TURN_HELD: LazyLock<HistogramVec> = LazyLock::new(|| {
    writer_histogram(
        "bookmesh_db_write_turn_held_seconds",
        "Time a SQLite write transaction held this process's writer turn, by writer",
    )
});

/// A histogram by writer, with buckets from 100 µs: a write transaction on a local file
/// takes well under a millisecond when nothing delays it.
fn writer_histogram(name: &str, help: &str) -> HistogramVec {
    let buckets = vec![
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0,
    ];
    match HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), &["writer"]) {
        Ok(histogram) => register(histogram),
        Err(error) => panic!("invalid metric definition {name}: {error}"),
    }
}

/// Circuit breaker state per upstream: 0 closed, 1 open, 2 half-open.
pub(crate) static CLIENT_BREAKER_STATE: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    gauge(
        "bookmesh_client_circuit_breaker_state",
        "Circuit breaker state per upstream: 0 closed, 1 open, 2 half-open",
        &["upstream"],
    )
});

/// Circuit breaker transitions per upstream and new state.
pub(crate) static CLIENT_BREAKER_TRANSITIONS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "bookmesh_client_circuit_breaker_transitions_total",
        "Circuit breaker state changes per upstream, by the state entered",
        &["upstream", "state"],
    )
});

/// Attempts sent per upstream (first attempts and retries).
pub(crate) static CLIENT_ATTEMPTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "bookmesh_client_attempts_total",
        "Attempts sent to an upstream, retries included",
        &["upstream"],
    )
});

/// Retries per upstream.
pub(crate) static CLIENT_RETRIES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "bookmesh_client_retries_total",
        "Retries sent to an upstream",
        &["upstream"],
    )
});

/// Calls a server refused because it was at its concurrency limit.
pub(crate) static SERVER_SHED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "bookmesh_server_requests_shed_total",
        "Calls answered RESOURCE_EXHAUSTED because the server was at its concurrency limit",
        &["service"],
    )
});

/// Calls refused by authorization, by server, method (known ones only) and reason.
pub(crate) static AUTHZ_REFUSALS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "bookmesh_authz_refusals_total",
        "Calls refused for missing or bad credentials or by the policy, by server, method and reason",
        &["server", "rpc_method", "reason"],
    )
});

/// The registry in the Prometheus text exposition format.
pub fn render() -> String {
    let encoder = prometheus::TextEncoder::new();
    encoder
        .encode_to_string(&REGISTRY.gather())
        .unwrap_or_else(|error| format!("# encoding failed: {error}\n"))
}

/// Client connections open now.
pub(crate) static SERVER_CONNECTIONS: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    gauge(
        "bookmesh_server_connections",
        "Client connections open now",
        &[],
    )
});

/// Client connections closed by the server's protections, by reason (`limit`: over
/// --max-connections; `ping_flood`: pings faster than --min-ping-interval).
pub(crate) static SERVER_CONNECTIONS_REFUSED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "bookmesh_server_connections_refused_total",
        "Client connections closed by the server's protections, by reason",
        &["reason"],
    )
});

/// Event-feed subscriptions open now, by producer.
pub(crate) static FEED_SUBSCRIBERS: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    gauge(
        "bookmesh_feed_subscribers",
        "Event-feed subscriptions open now, by producer",
        &["producer"],
    )
});

/// Handler panics turned into INTERNAL answers, by service and method (a bug each).
pub(crate) static SERVER_PANICS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "bookmesh_server_panics_total",
        "Handler panics answered as INTERNAL, by service and method",
        &["rpc_service", "rpc_method"],
    )
});

/// Rows deleted by retention, by table.
pub(crate) static ROWS_PRUNED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "bookmesh_rows_pruned_total",
        "Rows deleted by retention, by table",
        &["table"],
    )
});

/// Saga steps waiting longer than the service's step timeout, by service and step: a saga a
/// dependency left hanging (down, or its event dead-lettered). Set by each sweep.
pub(crate) static SAGA_STEPS_STUCK: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    gauge(
        "bookmesh_saga_steps_stuck",
        "Saga steps waiting longer than the step timeout, by service and step",
        &["service", "step"],
    )
});

/// Saga steps given up at their timeout and compensated, by service and step.
pub(crate) static SAGA_TIMEOUTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "bookmesh_saga_timeouts_total",
        "Saga steps given up at their timeout and compensated, by service and step",
        &["service", "step"],
    )
});

/// Publishes how many of `service`'s saga steps named `step` (a fixed name, not data) wait
/// longer than the step timeout.
pub fn set_saga_steps_stuck(service: &'static str, step: &'static str, count: u64) {
    SAGA_STEPS_STUCK
        .with_label_values(&[service, step])
        .set(i64::try_from(count).unwrap_or(i64::MAX));
}

/// Counts one of `service`'s saga steps named `step` given up at its timeout.
pub fn count_saga_timeout(service: &'static str, step: &'static str) {
    SAGA_TIMEOUTS.with_label_values(&[service, step]).inc();
}

/// Faults switched on now, by service and fault (1 or 0; docs/faults.md).
pub(crate) static FAULTS_ACTIVE: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    gauge(
        "bookmesh_faults_active",
        "Injected faults switched on now, by service and fault",
        &["service", "fault"],
    )
});

/// Calls and events a fault hit, by service and fault.
pub(crate) static FAULTS_INJECTED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "bookmesh_faults_injected_total",
        "Calls and events an injected fault hit, by service and fault",
        &["service", "fault"],
    )
});
