//! Where a bench's CPU went while it ran: each service's share, the bench's own (the load it
//! sends), the rest of the machine (a database server on it, neighbours) and what stayed idle,
//! read from `/proc` before and after. It turns "the run is CPU-bound" into a budget per
//! operation: on a machine with no idle time left, throughput cannot rise unless one of
//! these shrinks, and the largest is where to look first.
//!
//! Linux only (`/proc`); elsewhere the split is absent and the benches carry on without it.

use std::time::Instant;

/// CPU time counters at one moment, in the kernel's clock ticks (USER_HZ).
struct Snapshot {
    processes: Vec<Option<u64>>,
    own: Option<u64>,
    machine_busy: u64,
    machine_total: u64,
}

/// Measures the CPU the named processes, this process and the machine use from `start` to
/// `finish`.
pub(crate) struct CpuMeter {
    names: Vec<String>,
    pids: Vec<u32>,
    cores: usize,
    before: Option<Snapshot>,
    started: Instant,
}

impl CpuMeter {
    pub(crate) fn start(processes: &[(String, Option<u32>)]) -> Self {
        let names = processes.iter().map(|(name, _)| name.clone()).collect();
        let pids: Vec<u32> = processes.iter().map(|(_, pid)| pid.unwrap_or(0)).collect();
        let cores = machine_cores().unwrap_or(0);
        Self {
            before: snapshot(&pids),
            names,
            pids,
            cores,
            started: Instant::now(),
        }
    }

    /// The split since `start`, per operation (`operations` of them were done) and as a share
    /// of one core; `null` when `/proc` could not be read.
    pub(crate) fn finish(self, operations: usize) -> serde_json::Value {
        let seconds = self.started.elapsed().as_secs_f64();
        let (Some(before), Some(after)) = (self.before, snapshot(&self.pids)) else {
            return serde_json::Value::Null;
        };
        let total = after.machine_total.saturating_sub(before.machine_total);
        if total == 0 || self.cores == 0 || seconds <= 0.0 {
            return serde_json::Value::Null;
        }
        // /proc/stat counts every core's ticks: ticks per second of one core follow from it.
        let ticks_per_second = total as f64 / self.cores as f64 / seconds;
        let delta = |a: Option<u64>, b: Option<u64>| match (a, b) {
            (Some(a), Some(b)) => b.saturating_sub(a),
            _ => 0,
        };
        let mut parts: Vec<(String, u64)> = self
            .names
            .iter()
            .zip(before.processes.iter().zip(&after.processes))
            .map(|(name, (a, b))| (name.clone(), delta(*a, *b)))
            .collect();
        parts.push(("load (the bench)".into(), delta(before.own, after.own)));
        let ours: u64 = parts.iter().map(|(_, ticks)| ticks).sum();
        let busy = after.machine_busy.saturating_sub(before.machine_busy);
        parts.push(("rest of the machine".into(), busy.saturating_sub(ours)));
        let idle = total.saturating_sub(busy);
        let per_operation_us = |ticks: u64| {
            if operations == 0 {
                0.0
            } else {
                (ticks as f64 / ticks_per_second / operations as f64 * 1e6).round()
            }
        };
        let core_percent = |ticks: u64| (ticks as f64 / ticks_per_second / seconds * 100.0).round();
        serde_json::json!({
            "cores": self.cores,
            "seconds": (seconds * 10.0).round() / 10.0,
            "operations": operations,
            "idle_percent": (idle as f64 / total as f64 * 100.0).round(),
            "parts": parts.iter().map(|(name, ticks)| serde_json::json!({
                "name": name,
                "us_per_operation": per_operation_us(*ticks),
                "percent_of_a_core": core_percent(*ticks),
            })).collect::<Vec<_>>(),
        })
    }
}

/// One line for a table's foot: "CPU per rental: member 310 µs (40 % of a core), …".
pub(crate) fn describe(split: &serde_json::Value, operation: &str) -> Option<String> {
    let parts = split["parts"].as_array()?;
    let described: Vec<String> = parts
        .iter()
        .map(|part| {
            format!(
                "{} {} µs ({} % of a core)",
                part["name"].as_str().unwrap_or("?"),
                part["us_per_operation"].as_f64().unwrap_or_default(),
                part["percent_of_a_core"].as_f64().unwrap_or_default()
            )
        })
        .collect();
    Some(format!(
        "CPU per {operation}: {}; the machine ({} cores) {} % idle",
        described.join(", "),
        split["cores"],
        split["idle_percent"].as_f64().unwrap_or_default()
    ))
}

fn snapshot(pids: &[u32]) -> Option<Snapshot> {
    let (machine_busy, machine_total) = machine_ticks()?;
    Some(Snapshot {
        processes: pids.iter().map(|pid| process_ticks(*pid)).collect(),
        own: process_ticks(std::process::id()),
        machine_busy,
        machine_total,
    })
}

/// User plus system ticks of every thread of a process (`/proc/<pid>/stat`).
fn process_ticks(pid: u32) -> Option<u64> {
    if pid == 0 {
        return None;
    }
    parse_process_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

fn parse_process_stat(stat: &str) -> Option<u64> {
    // The command name (field 2) may hold spaces and parentheses: count fields after its end.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12th and 13th after the name.
    let user: u64 = fields.get(11)?.parse().ok()?;
    let system: u64 = fields.get(12)?.parse().ok()?;
    Some(user + system)
}

/// (busy, total) ticks of all cores together (`/proc/stat`'s first line).
fn machine_ticks() -> Option<(u64, u64)> {
    parse_machine_stat(&std::fs::read_to_string("/proc/stat").ok()?)
}

fn parse_machine_stat(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().next()?;
    let mut fields = line.split_whitespace();
    if fields.next()? != "cpu" {
        return None;
    }
    let values: Vec<u64> = fields.filter_map(|field| field.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user already).
    let [user, nice, system, idle, iowait, irq, softirq, steal] = *values.get(..8)? else {
        return None;
    };
    let busy = user + nice + system + irq + softirq + steal;
    Some((busy, busy + idle + iowait))
}

fn machine_cores() -> Option<usize> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    Some(
        stat.lines()
            .filter(|line| {
                line.strip_prefix("cpu")
                    .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
            })
            .count(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_line_is_read_past_a_name_with_spaces_and_parentheses() {
        let stat = "4242 (book (svc) x) S 1 4242 4242 0 -1 4194560 900 0 0 0 1234 567 0 0 20 0 9 0 100 0 0";
        assert_eq!(parse_process_stat(stat), Some(1234 + 567));
        assert_eq!(parse_process_stat("4242 (cut) S 1"), None);
    }

    #[test]
    fn the_machine_line_counts_iowait_as_idle_and_steal_as_busy() {
        let stat = "cpu  100 5 50 1000 20 3 2 7 0 0\ncpu0 50 2 25 500 10 1 1 3 0 0\n";
        assert_eq!(parse_machine_stat(stat), Some((167, 1187)));
        assert_eq!(parse_machine_stat("intr 1 2 3\n"), None);
    }

    #[test]
    fn this_machine_is_measured_when_it_has_proc() {
        if std::fs::metadata("/proc/stat").is_err() {
            return;
        }
        let meter = CpuMeter::start(&[("myself".into(), Some(std::process::id()))]);
        // Burn some CPU so the tick counters move (nothing about time is asserted).
        let burning = Instant::now();
        let mut x = 0u64;
        while burning.elapsed().as_millis() < 100 {
            for i in 0..100_000u64 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
            }
        }
        let split = meter.finish(10);
        assert!(split["cores"].as_u64().unwrap_or_default() >= 1, "{split}");
        let names: Vec<&str> = split["parts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|part| part["name"].as_str())
            .collect();
        assert_eq!(names, ["myself", "load (the bench)", "rest of the machine"]);
        assert!(describe(&split, "call").is_some_and(|line| line.contains("myself")));
    }
}
