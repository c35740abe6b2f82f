//! Process metrics in the Prometheus text format, served on the admin port (`/metrics`).
//! One registry per process; names follow the Prometheus conventions (`_total` counters,
//! base units).

use std::sync::LazyLock;

use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};

/// The process-wide registry that `/metrics` renders.
pub static REGISTRY: LazyLock<Registry> = LazyLock::new(Registry::new);

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

/// Circuit breaker state per upstream: 0 closed, 1 open, 2 half-open.
pub static CLIENT_BREAKER_STATE: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    gauge(
        "bookmesh_client_circuit_breaker_state",
        "Circuit breaker state per upstream: 0 closed, 1 open, 2 half-open",
        &["upstream"],
    )
});

/// Circuit breaker transitions per upstream and new state.
pub static CLIENT_BREAKER_TRANSITIONS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "bookmesh_client_circuit_breaker_transitions_total",
        "Circuit breaker state changes per upstream, by the state entered",
        &["upstream", "state"],
    )
});

/// Attempts sent per upstream (first attempts and retries).
pub static CLIENT_ATTEMPTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "bookmesh_client_attempts_total",
        "Attempts sent to an upstream, retries included",
        &["upstream"],
    )
});

/// Retries per upstream.
pub static CLIENT_RETRIES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "bookmesh_client_retries_total",
        "Retries sent to an upstream",
        &["upstream"],
    )
});

/// Calls a server refused because it was at its concurrency limit.
pub static SERVER_SHED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "bookmesh_server_requests_shed_total",
        "Calls answered RESOURCE_EXHAUSTED because the server was at its concurrency limit",
        &["service"],
    )
});

/// The registry in the Prometheus text exposition format.
pub fn render() -> String {
    let encoder = prometheus::TextEncoder::new();
    encoder
        .encode_to_string(&REGISTRY.gather())
        .unwrap_or_else(|error| format!("# encoding failed: {error}\n"))
}
