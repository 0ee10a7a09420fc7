//! Prometheus metrics, kept in the process and written in the text exposition format by hand (a
//! few counters and one histogram family do not need a metrics stack). Native runs feed them
//! through an engine observer, ingested events through the ingestion handler.

use crate::engine::Event;
use crate::store::AttemptRecord;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

/// Upper bounds of the node duration histogram, in seconds.
pub const BUCKETS: &[f64] = &[0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0];

#[derive(Debug, Default)]
struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

#[derive(Debug, Default)]
struct Inner {
    runs: BTreeMap<(String, String), u64>,
    durations: BTreeMap<(String, String), Histogram>,
    retries: BTreeMap<(String, String), u64>,
    failures: BTreeMap<(String, String), u64>,
    latency_warnings: BTreeMap<String, u64>,
    ingested: BTreeMap<String, u64>,
    scheduler_fires: BTreeMap<(String, String), u64>,
    skipped_fires: BTreeMap<(String, String), u64>,
    breaker_changes: BTreeMap<(String, String), u64>,
}

#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

impl Metrics {
    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        f(&mut self.inner.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Feeds an engine event.
    pub fn observe(&self, e: &Event) {
        match e {
            Event::AttemptFinished(a) => self.attempt(a),
            Event::RunFinished(o) => self.run_finished(&o.flow, o.status.as_str(), o.error_kind.map(|k| k.as_str())),
            Event::LatencyWarning { flow, .. } => self.with(|m| *m.latency_warnings.entry(flow.clone()).or_default() += 1),
            Event::Breaker(t) => self.with(|m| *m.breaker_changes.entry((t.model.clone(), t.event.to_owned())).or_default() += 1),
            _ => {}
        }
    }

    pub fn attempt(&self, a: &AttemptRecord) {
        self.with(|m| {
            let key = (a.flow.clone(), a.node_id.clone());
            let h = m.durations.entry(key.clone()).or_default();
            if h.counts.is_empty() {
                h.counts = vec![0; BUCKETS.len()];
            }
            let secs = a.duration_ms.max(0) as f64 / 1000.0;
            for (i, b) in BUCKETS.iter().enumerate() {
                if secs <= *b {
                    h.counts[i] += 1;
                }
            }
            h.sum += secs;
            h.count += 1;
            if a.retried {
                *m.retries.entry(key).or_default() += 1;
            }
        })
    }

    pub fn run_finished(&self, flow: &str, status: &str, kind: Option<&str>) {
        self.with(|m| {
            *m.runs.entry((flow.to_owned(), status.to_owned())).or_default() += 1;
            if let Some(k) = kind {
                *m.failures.entry((flow.to_owned(), k.to_owned())).or_default() += 1;
            }
        })
    }

    pub fn ingested(&self, result: &str, n: u64) {
        if n > 0 {
            self.with(|m| *m.ingested.entry(result.to_owned()).or_default() += n)
        }
    }

    pub fn fired(&self, flow: &str, job: &str) {
        self.with(|m| *m.scheduler_fires.entry((flow.to_owned(), job.to_owned())).or_default() += 1)
    }

    pub fn fires_skipped(&self, flow: &str, job: &str, n: u64) {
        self.with(|m| *m.skipped_fires.entry((flow.to_owned(), job.to_owned())).or_default() += n)
    }

    /// The models' breakers, read from the database at scrape time (shared by every process).
    pub fn render_breakers(out: &mut String, breakers: &[crate::model::breaker::BreakerStatus]) {
        header(out, "flowguard_model_breaker_state", "gauge", "1 for the state each model's breaker is in (closed, open, half_open).");
        for b in breakers {
            for st in ["closed", "open", "half_open"] {
                let _ =
                    writeln!(out, "flowguard_model_breaker_state{{model=\"{}\",state=\"{st}\"}} {}", esc(&b.model), (b.state == st) as u8);
            }
        }
        header(out, "flowguard_model_failure_rate", "gauge", "Failed share (0-1) of each model's calls over its breaker's window.");
        for b in breakers {
            let _ = writeln!(out, "flowguard_model_failure_rate{{model=\"{}\"}} {}", esc(&b.model), b.failure_rate / 100.0);
        }
        header(out, "flowguard_model_calls_window", "gauge", "Calls counted in each model's breaker window.");
        for b in breakers {
            let _ = writeln!(out, "flowguard_model_calls_window{{model=\"{}\"}} {}", esc(&b.model), b.calls);
        }
    }

    /// The text exposition format (version 0.0.4).
    /// `notifications`: (channel, status, count) from the outbox.
    pub fn render(&self, outbox_backlog: i64, notifications: &[(String, String, i64)]) -> String {
        let mut out = String::with_capacity(4096);
        self.with(|m| {
            counter2(&mut out, "flowguard_runs_total", "Runs that reached a final state, by flow and status.", ["flow", "status"], &m.runs);
            header(&mut out, "flowguard_node_duration_seconds", "histogram", "Duration of node attempts, by flow and node.");
            for ((flow, node), h) in &m.durations {
                let l = format!("flow=\"{}\",node=\"{}\"", esc(flow), esc(node));
                for (i, b) in BUCKETS.iter().enumerate() {
                    let _ = writeln!(out, "flowguard_node_duration_seconds_bucket{{{l},le=\"{b}\"}} {}", h.counts[i]);
                }
                let _ = writeln!(out, "flowguard_node_duration_seconds_bucket{{{l},le=\"+Inf\"}} {}", h.count);
                let _ = writeln!(out, "flowguard_node_duration_seconds_sum{{{l}}} {}", h.sum);
                let _ = writeln!(out, "flowguard_node_duration_seconds_count{{{l}}} {}", h.count);
            }
            counter2(&mut out, "flowguard_node_retries_total", "Node attempts followed by another attempt.", ["flow", "node"], &m.retries);
            counter2(&mut out, "flowguard_run_failures_total", "Runs that ended with an error kind.", ["flow", "kind"], &m.failures);
            header(&mut out, "flowguard_latency_warnings_total", "counter", "Runs still going past their flow's latency_warning.");
            for (flow, n) in &m.latency_warnings {
                let _ = writeln!(out, "flowguard_latency_warnings_total{{flow=\"{}\"}} {n}", esc(flow));
            }
            header(&mut out, "flowguard_ingested_events_total", "counter", "Events posted to /api/v1/events, by result.");
            for (result, n) in &m.ingested {
                let _ = writeln!(out, "flowguard_ingested_events_total{{result=\"{}\"}} {n}", esc(result));
            }
            counter2(&mut out, "flowguard_scheduler_fires_total", "Runs started by the scheduler.", ["flow", "job"], &m.scheduler_fires);
            counter2(
                &mut out,
                "flowguard_scheduler_fires_skipped_total",
                "Scheduled fires that fell due while the database was away and were not run.",
                ["flow", "job"],
                &m.skipped_fires,
            );
            counter2(
                &mut out,
                "flowguard_model_breaker_changes_total",
                "Breaker changes this process made, by model and event (opened, probe, closed, reopened).",
                ["model", "event"],
                &m.breaker_changes,
            );
        });
        header(&mut out, "flowguard_notifications_total", "counter", "Notifications by channel and result (pending, sending, sent, dead).");
        for (channel, status, n) in notifications {
            let _ = writeln!(out, "flowguard_notifications_total{{channel=\"{}\",result=\"{}\"}} {n}", esc(channel), esc(status));
        }
        header(&mut out, "flowguard_outbox_backlog", "gauge", "Notifications waiting in the outbox.");
        let _ = writeln!(out, "flowguard_outbox_backlog {outbox_backlog}");
        out
    }
}

fn header(out: &mut String, name: &str, ty: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {ty}");
}

fn counter2(out: &mut String, name: &str, help: &str, labels: [&str; 2], values: &BTreeMap<(String, String), u64>) {
    header(out, name, "counter", help);
    for ((a, b), n) in values {
        let _ = writeln!(out, "{name}{{{}=\"{}\",{}=\"{}\"}} {n}", labels[0], esc(a), labels[1], esc(b));
    }
}

/// Escapes a label value.
fn esc(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}
