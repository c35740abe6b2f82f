//! `GET /api/mesh`: each service's replicas, health, request rate, error rate, p99 and
//! breakers, read from the services' own `/metrics` and `/readyz` (the same figures Prometheus
//! scrapes), and the gateway's own breakers.
//!
//! Rates need two readings: each answer compares this scrape with the previous one. Scrapes
//! are shared: however many browsers ask, the services are scraped at most once per
//! [`MIN_INTERVAL`], and the gateway keeps one previous reading per replica it saw last time.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use hyper::body::Bytes;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::admin::{self, AdminTargets};
use crate::reply::{self, Response};

/// The services are scraped at most this often.
const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// gRPC codes that mean the call failed (not a refusal by the rules, such as NOT_FOUND):
/// UNKNOWN, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, INTERNAL, UNAVAILABLE, DATA_LOSS.
const FAILURE_CODES: [&str; 6] = ["2", "4", "8", "13", "14", "15"];
/// The key of the gateway's own reading.
const GATEWAY: &str = "gateway";

/// Counters read from one `/metrics`.
#[derive(Debug, Clone, Default, PartialEq)]
struct Reading {
    requests: f64,
    failures: f64,
    /// Cumulative histogram buckets of call durations: upper bound (seconds) → count.
    buckets: Vec<(f64, f64)>,
    /// Breaker state per upstream (0 closed, 1 open, 2 half-open).
    breakers: BTreeMap<String, i64>,
}

struct State {
    answered: Option<(Instant, Value)>,
    previous: HashMap<String, (Instant, Reading)>,
}

pub struct MeshView {
    targets: Arc<AdminTargets>,
    state: Mutex<State>,
}

impl MeshView {
    pub fn new(targets: Arc<AdminTargets>) -> Self {
        Self {
            targets,
            state: Mutex::new(State {
                answered: None,
                previous: HashMap::new(),
            }),
        }
    }

    /// Answers `GET /api/mesh`.
    pub async fn answer(&self) -> Response {
        // Held during a scrape: a second browser waits for it and gets the same answer.
        let mut state = self.state.lock().await;
        if let Some((at, answer)) = &state.answered
            && at.elapsed() < MIN_INTERVAL
        {
            return reply::json_value(StatusCode::OK, answer);
        }
        let now = Instant::now();
        let mut current: HashMap<String, (Instant, Reading)> = HashMap::new();
        let mut services = Vec::new();
        // Every service at once: one that does not answer costs its 2 s timeout once, not
        // once per service after it.
        let scrapes = futures::future::join_all(self.targets.names().map(|name| async move {
            let replicas = self.targets.replicas(name).await;
            let scraped =
                futures::future::join_all(replicas.iter().map(|address| scrape(*address))).await;
            (name, replicas, scraped)
        }))
        .await;
        for (name, replicas, scraped) in scrapes {
            let mut rows = Vec::new();
            let mut readings = Vec::new();
            for (address, (reading, ready)) in replicas.iter().zip(scraped) {
                rows.push(json!({
                    "address": address.to_string(),
                    "up": reading.is_some(),
                    "ready": ready,
                }));
                if let Some(reading) = reading {
                    let key = format!("{name}/{address}");
                    readings.push((state.previous.get(&key).cloned(), reading.clone()));
                    current.insert(key, (now, reading));
                }
            }
            services.push(summary(name, rows, &readings, now));
        }
        let own = parse(&bookmesh::metrics::render(), Side::Client);
        let own_previous = state.previous.get(GATEWAY).cloned();
        services.push(summary(
            GATEWAY,
            Vec::new(),
            &[(own_previous, own.clone())],
            now,
        ));
        current.insert(GATEWAY.to_owned(), (now, own));
        // Only the replicas seen now are kept: the map is as large as the mesh.
        state.previous = current;
        let answer = json!({ "services": services });
        state.answered = Some((now, answer.clone()));
        reply::json_value(StatusCode::OK, &answer)
    }
}

/// One replica's reading (`None` when its `/metrics` did not answer) and whether it is ready.
async fn scrape(address: SocketAddr) -> (Option<Reading>, bool) {
    let (metrics, ready) = tokio::join!(
        admin::call(address, Method::GET, "/metrics", None, Bytes::new()),
        admin::call(address, Method::GET, "/readyz", None, Bytes::new()),
    );
    let reading = match metrics {
        Ok((StatusCode::OK, body)) => Some(parse(&String::from_utf8_lossy(&body), Side::Server)),
        _ => None,
    };
    let ready = matches!(ready, Ok((StatusCode::OK, _)));
    (reading, ready)
}

/// A service's line in the answer: rates from the readings' differences since the previous
/// scrape, summed over its replicas.
fn summary(
    name: &str,
    replicas: Vec<Value>,
    readings: &[(Option<(Instant, Reading)>, Reading)],
    now: Instant,
) -> Value {
    let (mut requests, mut failures, mut seconds) = (0.0, 0.0, 0.0_f64);
    let mut buckets: BTreeMap<u64, f64> = BTreeMap::new();
    let mut breakers: BTreeMap<String, i64> = BTreeMap::new();
    for (previous, reading) in readings {
        for (upstream, state) in &reading.breakers {
            let worst = breakers.entry(upstream.clone()).or_insert(0);
            // Open is worse than half-open, which is worse than closed.
            if rank(*state) > rank(*worst) {
                *worst = *state;
            }
        }
        let Some((at, before)) = previous else {
            continue;
        };
        // A counter that went down belongs to a restarted replica: it counts from zero.
        let base = if reading.requests < before.requests {
            &Reading::default()
        } else {
            before
        };
        requests += reading.requests - base.requests;
        failures += reading.failures - base.failures;
        seconds = seconds.max(now.duration_since(*at).as_secs_f64());
        for (bound, count) in &reading.buckets {
            let earlier = base
                .buckets
                .iter()
                .find(|(b, _)| b.to_bits() == bound.to_bits())
                .map_or(0.0, |(_, c)| *c);
            *buckets.entry(bound.to_bits()).or_default() += count - earlier;
        }
    }
    let mut merged: Vec<(f64, f64)> = buckets
        .into_iter()
        .map(|(bound, count)| (f64::from_bits(bound), count))
        .collect();
    merged.sort_by(|a, b| a.0.total_cmp(&b.0));
    let rate = if seconds > 0.0 {
        requests / seconds
    } else {
        0.0
    };
    let error_rate = if requests > 0.0 {
        failures / requests
    } else {
        0.0
    };
    let breakers: Vec<Value> = breakers
        .into_iter()
        .map(|(upstream, state)| json!({ "upstream": upstream, "state": state_name(state) }))
        .collect();
    json!({
        "name": name,
        "replicas": replicas,
        "request_rate": round(rate),
        "error_rate": round(error_rate),
        "p99_ms": quantile(0.99, &merged).map(|seconds| round(seconds * 1000.0)),
        "breakers": breakers,
    })
}

fn round(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

fn rank(state: i64) -> i64 {
    match state {
        1 => 2,
        2 => 1,
        _ => 0,
    }
}

fn state_name(state: i64) -> &'static str {
    match state {
        1 => "open",
        2 => "half_open",
        _ => "closed",
    }
}

/// The `q` quantile of cumulative buckets, interpolated within its bucket as Prometheus's
/// `histogram_quantile` does; `None` without observations.
fn quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let wanted = q * total;
    let (mut lower_bound, mut lower_count) = (0.0, 0.0);
    for (bound, count) in buckets {
        if *count >= wanted {
            if bound.is_infinite() {
                return Some(lower_bound);
            }
            let share = if *count > lower_count {
                (wanted - lower_count) / (count - lower_count)
            } else {
                1.0
            };
            return Some(lower_bound + (bound - lower_bound) * share);
        }
        (lower_bound, lower_count) = (*bound, *count);
    }
    Some(lower_bound)
}

/// Which calls a reading counts: those a service served, or those the gateway made.
#[derive(Debug, Clone, Copy)]
enum Side {
    Server,
    Client,
}

/// The figures of one Prometheus text exposition. Only the contracts' services count (not
/// health checks or reflection): the rate is the mesh's traffic, not its probes.
fn parse(text: &str, side: Side) -> Reading {
    let (requests, duration) = match side {
        Side::Server => (
            "rpc_server_requests_total",
            "rpc_server_duration_seconds_bucket",
        ),
        Side::Client => (
            "rpc_client_requests_total",
            "rpc_client_duration_seconds_bucket",
        ),
    };
    let mut reading = Reading::default();
    let mut buckets: BTreeMap<u64, f64> = BTreeMap::new();
    for line in text.lines() {
        let Some((name, labels, value)) = sample(line) else {
            continue;
        };
        let counts = match side {
            Side::Server => {
                label(labels, "rpc_service").is_some_and(|s| s.starts_with("bookmesh."))
            }
            Side::Client => true,
        };
        if name == requests && counts {
            reading.requests += value;
            if label(labels, "rpc_grpc_status_code")
                .is_some_and(|code| FAILURE_CODES.contains(&code))
            {
                reading.failures += value;
            }
        } else if name == duration && counts {
            let bound = match label(labels, "le") {
                Some("+Inf") => f64::INFINITY,
                Some(bound) => match bound.parse::<f64>() {
                    Ok(bound) => bound,
                    Err(_) => continue,
                },
                None => continue,
            };
            *buckets.entry(bound.to_bits()).or_default() += value;
        } else if name == "bookmesh_client_circuit_breaker_state"
            && let Some(upstream) = label(labels, "upstream")
        {
            reading.breakers.insert(upstream.to_owned(), value as i64);
        }
    }
    reading.buckets = buckets
        .into_iter()
        .map(|(bound, count)| (f64::from_bits(bound), count))
        .collect();
    reading.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    reading
}

/// A sample line: its metric name, its label text (between the braces) and its value.
fn sample(line: &str) -> Option<(&str, &str, f64)> {
    if line.starts_with('#') {
        return None;
    }
    let (series, value) = line.rsplit_once(' ')?;
    let value = value.parse().ok()?;
    match series.split_once('{') {
        Some((name, labels)) => Some((name, labels.strip_suffix('}')?, value)),
        None => Some((series, "", value)),
    }
}

/// The value of label `name` (our label values hold no quotes or commas).
fn label<'a>(labels: &'a str, name: &str) -> Option<&'a str> {
    labels.split(',').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (key.trim() == name).then(|| value.trim().trim_matches('"'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const METRICS: &str = r#"# HELP rpc_server_requests_total x
rpc_server_requests_total{rpc_grpc_status_code="0",rpc_method="GetBook",rpc_service="bookmesh.book.v1.BookService"} 90
rpc_server_requests_total{rpc_grpc_status_code="5",rpc_method="GetBook",rpc_service="bookmesh.book.v1.BookService"} 5
rpc_server_requests_total{rpc_grpc_status_code="14",rpc_method="GetBook",rpc_service="bookmesh.book.v1.BookService"} 5
rpc_server_requests_total{rpc_grpc_status_code="0",rpc_method="Check",rpc_service="grpc.health.v1.Health"} 1000
rpc_server_duration_seconds_bucket{rpc_method="GetBook",rpc_service="bookmesh.book.v1.BookService",le="0.005"} 50
rpc_server_duration_seconds_bucket{rpc_method="GetBook",rpc_service="bookmesh.book.v1.BookService",le="0.01"} 99
rpc_server_duration_seconds_bucket{rpc_method="GetBook",rpc_service="bookmesh.book.v1.BookService",le="+Inf"} 100
bookmesh_client_circuit_breaker_state{upstream="member"} 1
"#;

    #[test]
    fn a_reading_counts_the_contracts_calls_their_failures_and_breakers() {
        let reading = parse(METRICS, Side::Server);
        assert_eq!(reading.requests, 100.0);
        // NOT_FOUND is an answer, UNAVAILABLE a failure.
        assert_eq!(reading.failures, 5.0);
        assert_eq!(reading.breakers.get("member"), Some(&1));
        assert_eq!(reading.buckets.len(), 3);
    }

    #[test]
    fn rates_and_p99_come_from_the_difference_between_two_readings() {
        let later = parse(METRICS, Side::Server);
        let start = Instant::now();
        let earlier = Reading {
            requests: 50.0,
            failures: 0.0,
            buckets: vec![(0.005, 50.0), (0.01, 50.0), (f64::INFINITY, 50.0)],
            breakers: BTreeMap::new(),
        };
        let now = start + Duration::from_secs(10);
        let line = summary("book", Vec::new(), &[(Some((start, earlier)), later)], now);
        assert_eq!(line["request_rate"], json!(5.0));
        assert_eq!(line["error_rate"], json!(0.1));
        // 50 new calls: 49 between 5 and 10 ms, 1 slower; the 99th percentile is in the
        // second bucket, at its upper end.
        let p99 = line["p99_ms"].as_f64().expect("p99");
        assert!((9.0..=10.0).contains(&p99), "{p99}");
        assert_eq!(line["breakers"][0]["state"], json!("open"));
        // No earlier reading: no rate yet.
        let first = summary(
            "book",
            Vec::new(),
            &[(None, parse(METRICS, Side::Server))],
            now,
        );
        assert_eq!(first["request_rate"], json!(0.0));
        assert_eq!(first["p99_ms"], Value::Null);
    }
}
