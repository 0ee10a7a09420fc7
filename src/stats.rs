//! Statistics over a window of recorded runs: per flow and per node, success rate, durations
//! (average, p50, p95 by nearest rank), each node's share of the time, retries and failures by
//! error kind. Canary runs are left out; `refused` runs do not count toward the success rate
//! (DESIGN.md §4).

use crate::store::{AttemptRecord, RunFilter, RunRecord, Store};
use crate::vocab::{AttemptStatus, RunStatus};
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Stats {
    pub since_ms: i64,
    pub until_ms: i64,
    pub flows: Vec<FlowStats>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FlowStats {
    pub flow: String,
    /// Runs that reached a final state (refused excluded).
    pub runs: u64,
    pub succeeded: u64,
    pub recovered: u64,
    pub failed: u64,
    pub timed_out: u64,
    pub waiting_manual: u64,
    pub refused: u64,
    pub running: u64,
    /// (succeeded + recovered) / runs.
    pub success_rate: Option<f64>,
    /// recovered / runs.
    pub recovered_rate: Option<f64>,
    pub duration: Durations,
    pub failures_by_kind: BTreeMap<String, u64>,
    pub nodes: Vec<NodeStats>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct NodeStats {
    pub node: String,
    pub kind: String,
    pub attempts: u64,
    /// Attempts that were followed by another attempt.
    pub retries: u64,
    pub failed_attempts: u64,
    /// succeeded attempts / attempts.
    pub success_rate: Option<f64>,
    pub duration: Durations,
    /// This node's share of all node time in the flow.
    pub time_share: Option<f64>,
    pub failures_by_kind: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Durations {
    pub avg_ms: Option<f64>,
    pub p50_ms: Option<i64>,
    pub p95_ms: Option<i64>,
    pub total_ms: i64,
}

impl Durations {
    pub fn of(mut values: Vec<i64>) -> Durations {
        if values.is_empty() {
            return Durations::default();
        }
        values.sort_unstable();
        let total: i64 = values.iter().sum();
        Durations {
            avg_ms: Some(total as f64 / values.len() as f64),
            p50_ms: Some(nearest_rank(&values, 0.50)),
            p95_ms: Some(nearest_rank(&values, 0.95)),
            total_ms: total,
        }
    }
}

/// The nearest-rank percentile of sorted values.
pub fn nearest_rank(sorted: &[i64], p: f64) -> i64 {
    let rank = (p * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

fn ratio(a: u64, b: u64) -> Option<f64> {
    (b > 0).then(|| a as f64 / b as f64)
}

/// Computes statistics from records (pure; the store query is in [`collect`]).
pub fn compute(runs: &[RunRecord], attempts: &[AttemptRecord], since_ms: i64, until_ms: i64) -> Stats {
    let mut flows: BTreeMap<&str, (Vec<&RunRecord>, Vec<&AttemptRecord>)> = BTreeMap::new();
    for r in runs.iter().filter(|r| !r.canary) {
        flows.entry(&r.flow).or_default().0.push(r);
    }
    for a in attempts {
        flows.entry(&a.flow).or_default().1.push(a);
    }
    let flows = flows
        .into_iter()
        .map(|(flow, (runs, attempts))| {
            let count = |s: RunStatus| runs.iter().filter(|r| r.status == s).count() as u64;
            let (succeeded, recovered, failed, timed_out) =
                (count(RunStatus::Succeeded), count(RunStatus::Recovered), count(RunStatus::Failed), count(RunStatus::TimedOut));
            let refused = count(RunStatus::Refused);
            let waiting_manual = count(RunStatus::WaitingManual);
            let running = count(RunStatus::Running) + count(RunStatus::Queued);
            let finals = runs
                .iter()
                .filter(|r| (r.status.is_final() || r.status == RunStatus::WaitingManual) && r.status != RunStatus::Refused)
                .count() as u64;
            let mut failures_by_kind = BTreeMap::new();
            for r in runs.iter().filter(|r| !r.status.is_success()) {
                if let Some(k) = &r.error_kind {
                    *failures_by_kind.entry(k.clone()).or_insert(0) += 1;
                }
            }
            let durations =
                runs.iter().filter(|r| r.status.is_final() && r.status != RunStatus::Refused).filter_map(|r| r.duration_ms).collect();

            let mut by_node: BTreeMap<&str, Vec<&AttemptRecord>> = BTreeMap::new();
            let mut order: Vec<&str> = Vec::new();
            for a in attempts.iter().filter(|a| a.status != AttemptStatus::Skipped) {
                if !by_node.contains_key(a.node_id.as_str()) {
                    order.push(&a.node_id);
                }
                by_node.entry(&a.node_id).or_default().push(a);
            }
            let all_node_time: i64 = attempts.iter().map(|a| a.duration_ms).sum();
            let nodes = order
                .into_iter()
                .map(|node| {
                    let list = &by_node[node];
                    let ok = list.iter().filter(|a| matches!(a.status, AttemptStatus::Succeeded | AttemptStatus::Defaulted)).count() as u64;
                    let mut kinds = BTreeMap::new();
                    for a in list.iter().filter(|a| a.error_kind.is_some()) {
                        *kinds.entry(a.error_kind.clone().unwrap_or_default()).or_insert(0) += 1;
                    }
                    let d = Durations::of(list.iter().map(|a| a.duration_ms).collect());
                    NodeStats {
                        node: node.to_owned(),
                        kind: list[0].kind.clone(),
                        attempts: list.len() as u64,
                        retries: list.iter().filter(|a| a.retried).count() as u64,
                        failed_attempts: list.len() as u64 - ok,
                        success_rate: ratio(ok, list.len() as u64),
                        time_share: (all_node_time > 0).then(|| d.total_ms as f64 / all_node_time as f64),
                        duration: d,
                        failures_by_kind: kinds,
                    }
                })
                .collect();
            FlowStats {
                flow: flow.to_owned(),
                runs: finals,
                succeeded,
                recovered,
                failed,
                timed_out,
                waiting_manual,
                refused,
                running,
                success_rate: ratio(succeeded + recovered, finals),
                recovered_rate: ratio(recovered, finals),
                duration: Durations::of(durations),
                failures_by_kind,
                nodes,
            }
        })
        .collect();
    Stats { since_ms, until_ms, flows }
}

/// Reads a window from the store and computes its statistics.
pub async fn collect(store: &Store, flow: Option<&str>, since_ms: i64, until_ms: i64) -> anyhow::Result<Stats> {
    let runs = store
        .list_runs(&RunFilter { flow: flow.map(str::to_owned), since_ms: Some(since_ms), until_ms: Some(until_ms), ..Default::default() })
        .await?;
    let attempts = store.attempts_between(flow, since_ms, until_ms).await?;
    Ok(compute(&runs, &attempts, since_ms, until_ms))
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
        let d = Durations::of(vec![30, 10, 20]);
        assert_eq!((d.avg_ms, d.p50_ms, d.total_ms), (Some(20.0), Some(20), 60));
    }
}
