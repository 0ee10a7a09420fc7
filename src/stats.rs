//! Statistics over a window, per flow, per node and per model, read from the store's rollups
//! (never from raw rows, so they cost the same at any history size): runs, success rate (DESIGN.md
//! §4), the recovered share, duration average and p50/p95/p99 (from merged histograms, within 1 %
//! of the exact nearest rank), each node's share of the time, retries, failures by error kind,
//! runs on a backup model, runs waiting for a human, and the change against the previous window
//! of the same length. Canary runs are left out (only counted). One implementation for the CLI,
//! the API, the reports and the dashboard.
//!
//! Windows are whole 15-minute buckets: the start is rounded down and the end up.

use crate::hist::Hist;
use crate::store::Store;
use crate::store::rollups::{BUCKET_MS, RollupWindow, bucket_of};
use crate::vocab::RunStatus;
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Stats {
    pub since_ms: i64,
    pub until_ms: i64,
    /// All flows together.
    pub total: FlowStats,
    pub flows: Vec<FlowStats>,
    pub models: Vec<ModelStats>,
    /// Nodes with the most failed attempts, most first (flow, node, failed attempts).
    pub top_failing_nodes: Vec<NodeRef>,
    /// Canary runs in the window (left out of everything else).
    pub canary_runs: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct NodeRef {
    pub flow: String,
    pub node: String,
    pub failed_attempts: u64,
    pub attempts: u64,
    /// Runs that ended failed at this node.
    pub runs_failed: u64,
    pub failures_by_kind: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct FlowStats {
    pub flow: String,
    /// Runs that reached a final state or wait for a human (refused excluded).
    pub runs: u64,
    pub succeeded: u64,
    pub recovered: u64,
    pub failed: u64,
    pub timed_out: u64,
    pub waiting_manual: u64,
    pub cancelled: u64,
    pub interrupted: u64,
    pub refused: u64,
    /// (succeeded + recovered) / runs.
    pub success_rate: Option<f64>,
    /// recovered / runs.
    pub recovered_rate: Option<f64>,
    /// Runs in which a node moved to a backup model.
    pub backup_model_runs: u64,
    /// Runs of this flow waiting for a human now (whenever they started).
    pub pending_manual: u64,
    pub duration: Durations,
    /// Error kinds of the runs that did not succeed.
    pub failures_by_kind: BTreeMap<String, u64>,
    pub nodes: Vec<NodeStats>,
    /// What the priced model calls cost, per currency.
    pub cost: Vec<Cost>,
    /// Against the previous window of the same length.
    pub change: Option<Change>,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct NodeStats {
    pub node: String,
    pub kind: String,
    pub attempts: u64,
    /// Attempts that were followed by another attempt.
    pub retries: u64,
    pub failed_attempts: u64,
    pub timed_out: u64,
    /// succeeded (or defaulted) attempts / attempts.
    pub success_rate: Option<f64>,
    /// retries / attempts.
    pub retry_rate: Option<f64>,
    /// timed-out attempts / attempts.
    pub timeout_rate: Option<f64>,
    pub duration: Durations,
    /// This node's share of all node time in the flow.
    pub time_share: Option<f64>,
    pub failures_by_kind: BTreeMap<String, u64>,
    /// Runs that ended failed at this node.
    pub runs_failed: u64,
    /// Attempts after which the node moved to its next model.
    pub backup_switches: u64,
}

/// What priced model calls cost in one currency (models' `price` in the config).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Cost {
    /// ISO 4217, as the price names it.
    pub currency: String,
    /// In units of the currency.
    pub amount: f64,
    /// Exact, in billionths of the unit.
    pub nanos: i64,
    pub tokens_in: i64,
    pub tokens_out: i64,
}

impl Cost {
    /// `0.0123 CNY`.
    pub fn text(&self) -> String {
        format!("{} {}", crate::config::model::format_cost(self.nanos), self.currency)
    }
}

/// Adds tokens and cost in a currency to a list kept per currency.
pub fn add_cost(list: &mut Vec<Cost>, currency: &str, tokens_in: i64, tokens_out: i64, nanos: i64) {
    let i = match list.iter().position(|c| c.currency == currency) {
        Some(i) => i,
        None => {
            list.push(Cost { currency: currency.to_owned(), ..Default::default() });
            list.len() - 1
        }
    };
    let c = &mut list[i];
    c.tokens_in += tokens_in;
    c.tokens_out += tokens_out;
    c.nanos += nanos;
    c.amount = c.nanos as f64 / 1e9;
}

/// What a run's priced model calls cost, per currency.
pub fn run_cost(attempts: &[crate::store::AttemptRecord]) -> Vec<Cost> {
    let mut out = Vec::new();
    for a in attempts {
        if let (Some(cur), Some(n)) = (&a.currency, a.cost_nanos) {
            add_cost(&mut out, cur, a.tokens_in.unwrap_or(0), a.tokens_out.unwrap_or(0), n);
        }
    }
    out
}

/// `0.0123 CNY + 0.0010 USD`, or "-".
pub fn cost_text(list: &[Cost]) -> String {
    if list.is_empty() { "-".to_owned() } else { list.iter().map(Cost::text).collect::<Vec<_>>().join(" + ") }
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ModelStats {
    pub model: String,
    pub attempts: u64,
    pub failed_attempts: u64,
    pub failure_rate: Option<f64>,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Durations {
    pub count: u64,
    pub avg_ms: Option<f64>,
    pub p50_ms: Option<i64>,
    pub p95_ms: Option<i64>,
    pub p99_ms: Option<i64>,
    pub total_ms: i64,
}

impl Durations {
    fn of(h: &Hist, count: i64, total_ms: i64) -> Durations {
        Durations {
            count: count.max(0) as u64,
            avg_ms: (count > 0).then(|| total_ms as f64 / count as f64),
            p50_ms: h.percentile(0.50),
            p95_ms: h.percentile(0.95),
            p99_ms: h.percentile(0.99),
            total_ms,
        }
    }
}

/// The previous window's figures and the differences.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Change {
    pub prev_runs: u64,
    pub prev_success_rate: Option<f64>,
    pub prev_avg_ms: Option<f64>,
    pub runs: i64,
    /// In percentage points.
    pub success_rate_pts: Option<f64>,
    pub avg_ms: Option<f64>,
}

impl Change {
    fn between(now: &FlowStats, prev: &FlowStats) -> Change {
        Change {
            prev_runs: prev.runs,
            prev_success_rate: prev.success_rate,
            prev_avg_ms: prev.duration.avg_ms,
            runs: now.runs as i64 - prev.runs as i64,
            success_rate_pts: now.success_rate.zip(prev.success_rate).map(|(a, b)| (a - b) * 100.0),
            avg_ms: now.duration.avg_ms.zip(prev.duration.avg_ms).map(|(a, b)| a - b),
        }
    }
}

/// The nearest-rank percentile of sorted values (the exact reference the histograms are held to).
pub fn nearest_rank(sorted: &[i64], p: f64) -> i64 {
    let rank = (p * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

fn ratio(a: u64, b: u64) -> Option<f64> {
    (b > 0).then(|| a as f64 / b as f64)
}

/// The window `[since_ms, until_ms)` widened to whole buckets.
pub fn align(since_ms: i64, until_ms: i64) -> (i64, i64) {
    (bucket_of(since_ms), bucket_of(until_ms + BUCKET_MS - 1))
}

/// Accumulates one flow (or all of them).
#[derive(Default)]
struct Acc {
    f: FlowStats,
    dur_n: i64,
    dur_sum: i64,
    hist: Hist,
    nodes: BTreeMap<String, NodeAcc>,
}

/// (kind, counters as in `RollupWindow::nodes`, histogram, failures by kind, runs failed here).
type NodeAcc = (String, [i64; 7], Hist, BTreeMap<String, u64>, u64);

impl Acc {
    fn finish(mut self, pending: u64) -> FlowStats {
        let f = &mut self.f;
        f.runs = f.succeeded + f.recovered + f.failed + f.timed_out + f.waiting_manual + f.cancelled + f.interrupted;
        f.success_rate = ratio(f.succeeded + f.recovered, f.runs);
        f.recovered_rate = ratio(f.recovered, f.runs);
        f.pending_manual = pending;
        f.duration = Durations::of(&self.hist, self.dur_n, self.dur_sum);
        let all_time: i64 = self.nodes.values().map(|n| n.1[6]).sum();
        let mut nodes: Vec<NodeStats> = self
            .nodes
            .into_iter()
            .map(|(node, (kind, c, h, kinds, runs_failed))| {
                let attempts = c[0].max(0) as u64;
                NodeStats {
                    node,
                    kind,
                    attempts,
                    retries: c[4] as u64,
                    failed_attempts: c[2] as u64,
                    timed_out: c[3] as u64,
                    success_rate: ratio(c[1] as u64, attempts),
                    retry_rate: ratio(c[4] as u64, attempts),
                    timeout_rate: ratio(c[3] as u64, attempts),
                    duration: Durations::of(&h, c[0], c[6]),
                    time_share: (all_time > 0).then(|| c[6] as f64 / all_time as f64),
                    failures_by_kind: kinds,
                    runs_failed,
                    backup_switches: c[5] as u64,
                }
            })
            .collect();
        nodes.sort_by(|a, b| b.duration.total_ms.cmp(&a.duration.total_ms).then_with(|| a.node.cmp(&b.node)));
        self.f.nodes = nodes;
        self.f
    }
}

/// Computes statistics from summed rollups (pure; the store query is in [`collect`]).
pub fn compute(w: &RollupWindow, since_ms: i64, until_ms: i64, pending: &BTreeMap<String, i64>) -> Stats {
    let mut flows: BTreeMap<String, Acc> = BTreeMap::new();
    let mut total = Acc::default();
    let mut canary_runs = 0;
    for (flow, canary, status, [runs, backup, dur_n, dur_sum]) in &w.runs {
        if *runs == 0 && *dur_n == 0 {
            continue; // a row whose run moved to another status
        }
        if *canary {
            canary_runs += *runs as u64;
            continue;
        }
        for acc in [flows.entry(flow.clone()).or_default(), &mut total] {
            let f = &mut acc.f;
            let n = *runs as u64;
            match status.parse::<RunStatus>() {
                Ok(RunStatus::Succeeded) => f.succeeded += n,
                Ok(RunStatus::Recovered) => f.recovered += n,
                Ok(RunStatus::Failed) => f.failed += n,
                Ok(RunStatus::TimedOut) => f.timed_out += n,
                Ok(RunStatus::WaitingManual) => f.waiting_manual += n,
                Ok(RunStatus::Cancelled) => f.cancelled += n,
                Ok(RunStatus::Interrupted) => f.interrupted += n,
                Ok(RunStatus::Refused) => f.refused += n,
                _ => {}
            }
            f.backup_model_runs += *backup as u64;
            acc.dur_n += dur_n;
            acc.dur_sum += dur_sum;
        }
    }
    for (flow, node, kind, n) in w.run_errors.iter().filter(|e| e.3 != 0) {
        for acc in [flows.entry(flow.clone()).or_default(), &mut total] {
            *acc.f.failures_by_kind.entry(kind.clone()).or_default() += *n as u64;
        }
        if !node.is_empty() {
            flows.entry(flow.clone()).or_default().nodes.entry(node.clone()).or_default().4 += *n as u64;
        }
    }
    let mut models: BTreeMap<String, ModelStats> = BTreeMap::new();
    for (flow, node, model, kind, c) in &w.nodes {
        let e = flows.entry(flow.clone()).or_default().nodes.entry(node.clone()).or_default();
        e.0 = kind.clone();
        for (a, b) in e.1.iter_mut().zip(c) {
            *a += b;
        }
        if !model.is_empty() {
            let m = models.entry(model.clone()).or_insert_with(|| ModelStats { model: model.clone(), ..Default::default() });
            m.attempts += c[0] as u64;
            m.failed_attempts += c[2] as u64;
        }
    }
    for (flow, node, kind, n) in w.node_errors.iter().filter(|e| e.3 != 0) {
        *flows.entry(flow.clone()).or_default().nodes.entry(node.clone()).or_default().3.entry(kind.clone()).or_default() += *n as u64;
    }
    for (flow, node, bin, n) in &w.hist {
        let acc = flows.entry(flow.clone()).or_default();
        if node.is_empty() {
            acc.hist.add_bin(*bin, *n);
            total.hist.add_bin(*bin, *n);
        } else {
            acc.nodes.entry(node.clone()).or_default().2.add_bin(*bin, *n);
        }
    }
    let mut top: Vec<NodeRef> = Vec::new();
    let mut flows: Vec<FlowStats> = flows
        .into_iter()
        .map(|(name, mut acc)| {
            acc.f.flow = name.clone();
            let fs = acc.finish(pending.get(&name).copied().unwrap_or(0) as u64);
            for n in fs.nodes.iter().filter(|n| n.failed_attempts > 0 || n.runs_failed > 0) {
                top.push(NodeRef {
                    flow: name.clone(),
                    node: n.node.clone(),
                    failed_attempts: n.failed_attempts,
                    attempts: n.attempts,
                    runs_failed: n.runs_failed,
                    failures_by_kind: n.failures_by_kind.clone(),
                });
            }
            fs
        })
        .collect();
    top.sort_by(|a, b| {
        (b.failed_attempts, b.runs_failed)
            .cmp(&(a.failed_attempts, a.runs_failed))
            .then_with(|| (&a.flow, &a.node).cmp(&(&b.flow, &b.node)))
    });
    let mut models: Vec<ModelStats> = models.into_values().collect();
    for m in &mut models {
        m.failure_rate = ratio(m.failed_attempts, m.attempts);
    }
    total.f.flow = "*".into();
    let mut total = total.finish(pending.values().sum::<i64>() as u64);
    total.nodes.clear();
    for (flow, cur, [tin, tout, nanos]) in w.costs.iter().filter(|c| c.2.iter().any(|x| *x != 0)) {
        if let Some(f) = flows.iter_mut().find(|f| &f.flow == flow) {
            add_cost(&mut f.cost, cur, *tin, *tout, *nanos);
        }
        add_cost(&mut total.cost, cur, *tin, *tout, *nanos);
    }
    Stats { since_ms, until_ms, total, flows, models, top_failing_nodes: top, canary_runs }
}

/// Reads a window (widened to whole buckets) and the window before it from the rollups, and
/// computes the statistics with the change between them.
pub async fn collect(store: &Store, flow: Option<&str>, since_ms: i64, until_ms: i64) -> anyhow::Result<Stats> {
    Ok(collect_with_previous(store, flow, since_ms, until_ms).await?.0)
}

/// [`collect`], and the previous window's statistics (without percentiles: only their counts
/// and averages are compared, which spares reading its histograms).
pub async fn collect_with_previous(store: &Store, flow: Option<&str>, since_ms: i64, until_ms: i64) -> anyhow::Result<(Stats, Stats)> {
    let (since, until) = align(since_ms, until_ms);
    let pending = store.waiting_manual_counts().await?;
    let now = store.rollup_window(flow, since, until, true).await?;
    let prev = store.rollup_window(flow, since - (until - since), since, false).await?;
    let mut stats = compute(&now, since, until, &pending);
    let before = compute(&prev, since - (until - since), since, &pending);
    stats.total.change = Some(Change::between(&stats.total, &before.total));
    for f in &mut stats.flows {
        let p = before.flows.iter().find(|p| p.flow == f.flow).cloned().unwrap_or_default();
        f.change = Some(Change::between(f, &p));
    }
    Ok((stats, before))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<i64> = (1..=100).collect();
        assert_eq!(nearest_rank(&v, 0.5), 50);
        assert_eq!(nearest_rank(&v, 0.95), 95);
        assert_eq!(nearest_rank(&[7], 0.95), 7);
    }

    #[test]
    fn windows_widen_to_buckets() {
        assert_eq!(align(1, BUCKET_MS), (0, BUCKET_MS));
        assert_eq!(align(BUCKET_MS, BUCKET_MS + 1), (BUCKET_MS, 2 * BUCKET_MS));
    }
}
