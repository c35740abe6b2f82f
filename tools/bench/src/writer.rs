//! How busy a service's one SQLite writer was during a run, from its own metrics
//! (`bookmesh_db_write_turn_held_seconds` and `…_wait_seconds` on the admin port, see
//! `bookmesh::db::begin_write`). SQLite takes one writer at a time, so a writer busy close to
//! all of the run is the limit whatever the CPU has left: more calls in flight only wait longer.
//!
//! On PostgreSQL there is no writer turn and no such metric: the figure is absent.

use std::collections::BTreeMap;
use std::time::Instant;

const HELD: &str = "bookmesh_db_write_turn_held_seconds";
const WAIT: &str = "bookmesh_db_write_turn_wait_seconds";

/// The writer metrics' sums and counts at one moment, by writer (`call`, `consumer`,
/// `relay`).
#[derive(Debug, Clone, PartialEq, Default)]
struct Turns(BTreeMap<String, Writer>);

#[derive(Debug, Clone, Copy, PartialEq, Default)]
struct Writer {
    held_seconds: f64,
    wait_seconds: f64,
    transactions: f64,
}

pub(crate) struct WriterMeter {
    admin_port: u16,
    before: Option<Turns>,
    started: Instant,
}

impl WriterMeter {
    pub(crate) async fn start(admin_port: u16) -> Self {
        Self {
            admin_port,
            before: turns(admin_port).await,
            started: Instant::now(),
        }
    }

    /// The writer's share of the run, in all and by writer, and its transactions per
    /// operation; `null` when the service has no writer turn (not SQLite) or its metrics
    /// could not be read.
    pub(crate) async fn finish(self, operations: usize) -> serde_json::Value {
        let seconds = self.started.elapsed().as_secs_f64();
        let (Some(before), Some(after)) = (self.before, turns(self.admin_port).await) else {
            return serde_json::Value::Null;
        };
        let mut total = Writer::default();
        let mut writers = serde_json::Map::new();
        for (name, now) in &after.0 {
            let then = before.0.get(name).copied().unwrap_or_default();
            let delta = Writer {
                held_seconds: now.held_seconds - then.held_seconds,
                wait_seconds: now.wait_seconds - then.wait_seconds,
                transactions: now.transactions - then.transactions,
            };
            if delta.transactions <= 0.0 {
                continue;
            }
            total.held_seconds += delta.held_seconds;
            total.wait_seconds += delta.wait_seconds;
            total.transactions += delta.transactions;
            writers.insert(name.clone(), figures(&delta, seconds, operations));
        }
        if total.transactions <= 0.0 || seconds <= 0.0 {
            return serde_json::Value::Null;
        }
        let mut all = figures(&total, seconds, operations);
        all["writers"] = serde_json::Value::Object(writers);
        all
    }
}

fn figures(writer: &Writer, seconds: f64, operations: usize) -> serde_json::Value {
    serde_json::json!({
        "busy_percent": (writer.held_seconds / seconds * 100.0).round(),
        "write_transactions": writer.transactions,
        "per_operation": if operations == 0 { 0.0 } else {
            (writer.transactions / operations as f64 * 100.0).round() / 100.0
        },
        "held_us_mean": (writer.held_seconds / writer.transactions * 1e6).round(),
        "wait_ms_mean": (writer.wait_seconds / writer.transactions * 1e4).round() / 10.0,
    })
}

/// One line under a table: "rental-service's SQLite writer: busy 95 % of the run (call 60 %:
/// 5,000 transactions of 1,100 µs, …)".
pub(crate) fn describe_writer(writer: &serde_json::Value, service: &str) -> Option<String> {
    let parts: Vec<String> = writer["writers"]
        .as_object()?
        .iter()
        .map(|(name, figures)| {
            format!(
                "{name} {} % ({} transactions holding it {} µs on average)",
                figures["busy_percent"].as_f64().unwrap_or_default(),
                figures["write_transactions"].as_f64().unwrap_or_default(),
                figures["held_us_mean"].as_f64().unwrap_or_default()
            )
        })
        .collect();
    Some(format!(
        "{service}'s SQLite writer: busy {} % of the run: {}; {} write transactions per call, waiting {} ms for the turn on average",
        writer["busy_percent"].as_f64()?,
        parts.join(", "),
        writer["per_operation"].as_f64()?,
        writer["wait_ms_mean"].as_f64()?,
    ))
}

/// The sums and counts so far: none before the first write transaction (the metrics appear
/// with it), `None` when the metrics cannot be read.
async fn turns(admin_port: u16) -> Option<Turns> {
    Some(parse(&scrape(admin_port).await?))
}

/// The admin port's `/metrics`.
async fn scrape(admin_port: u16) -> Option<String> {
    let (status, body) = super::admin_get(admin_port, "/metrics").await?;
    (status == 200).then_some(body)
}

/// Reads `<name>_sum{writer="…"} value` and `<name>_count{writer="…"} value` lines.
fn parse(metrics: &str) -> Turns {
    let mut turns = Turns::default();
    for line in metrics.lines() {
        let Some((key, value)) = line.split_once(' ') else {
            continue;
        };
        let Ok(value) = value.trim().parse::<f64>() else {
            continue;
        };
        let Some((series, labels)) = key.split_once("{writer=\"") else {
            continue;
        };
        let Some(name) = labels.strip_suffix("\"}") else {
            continue;
        };
        let figures = turns.0.entry(name.to_owned()).or_default();
        match series {
            s if s == format!("{HELD}_sum") => figures.held_seconds = value,
            s if s == format!("{HELD}_count") => figures.transactions = value,
            s if s == format!("{WAIT}_sum") => figures.wait_seconds = value,
            _ => {}
        }
    }
    turns.0.retain(|_, figures| figures.transactions > 0.0);
    turns
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sums_and_counts_are_read_by_writer_from_the_exposition_text() {
        let text = "# HELP bookmesh_db_write_turn_held_seconds held\n\
            bookmesh_db_write_turn_held_seconds_bucket{writer=\"call\",le=\"0.001\"} 3\n\
            bookmesh_db_write_turn_held_seconds_sum{writer=\"call\"} 0.75\n\
            bookmesh_db_write_turn_held_seconds_count{writer=\"call\"} 500\n\
            bookmesh_db_write_turn_wait_seconds_sum{writer=\"call\"} 12.5\n\
            bookmesh_db_write_turn_wait_seconds_count{writer=\"call\"} 500\n\
            bookmesh_db_write_turn_held_seconds_sum{writer=\"relay\"} 0.5\n\
            bookmesh_db_write_turn_held_seconds_count{writer=\"relay\"} 20\n\
            bookmesh_db_write_turn_wait_seconds_sum{writer=\"relay\"} 0.25\n";
        let turns = parse(text);
        assert_eq!(
            turns.0.get("call"),
            Some(&Writer {
                held_seconds: 0.75,
                wait_seconds: 12.5,
                transactions: 500.0
            })
        );
        assert_eq!(
            turns.0.get("relay").map(|relay| relay.transactions),
            Some(20.0)
        );
        // Before the first write transaction, or without a writer turn (PostgreSQL): none.
        assert!(
            parse("rpc_server_active_requests{rpc_service=\"x\"} 0\n")
                .0
                .is_empty()
        );
    }

    #[test]
    fn a_writer_figure_is_described_by_writer_and_an_absent_one_is_not() {
        let writer = serde_json::json!({
            "busy_percent": 95.0, "write_transactions": 6000.0, "per_operation": 1.06,
            "held_us_mean": 1600.0, "wait_ms_mean": 58.0,
            "writers": {
                "call": { "busy_percent": 60.0, "write_transactions": 5600.0, "held_us_mean": 1000.0 },
                "consumer": { "busy_percent": 35.0, "write_transactions": 400.0, "held_us_mean": 9000.0 },
            },
        });
        let line = describe_writer(&writer, "rental-service").unwrap_or_default();
        assert!(line.contains("busy 95 %"), "{line}");
        assert!(line.contains("consumer 35 % (400 transactions"), "{line}");
        assert_eq!(
            describe_writer(&serde_json::Value::Null, "rental-service"),
            None
        );
    }
}
