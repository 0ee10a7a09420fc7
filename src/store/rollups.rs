//! Report rollups: per 15-minute bucket (of the run's start), per flow and node, counters and
//! latency histograms that merge by addition. They are written in the same transaction as a run's
//! end ([`Store::finish_run`]), so a recorded end is never missing from them, and reports read
//! them instead of the raw rows. `rollup_seen` remembers what each run contributed, so a run that
//! ends again (a human resolves `waiting_manual`, an interrupted run is resumed) moves its counts
//! instead of adding them twice. Canary runs are counted apart and add nothing else.

use super::db::{self, Arg, Backend, Ty, Val};
use super::{AttemptRecord, RunEnd, Store};
use crate::hist;
use crate::vocab::{AttemptStatus, RunStatus};
use std::borrow::Cow;
use std::collections::BTreeMap;

/// Bucket width: 15 minutes divides every UTC offset in use, so buckets align with local days.
pub const BUCKET_MS: i64 = 15 * 60 * 1000;

static BENCH_WITHOUT_ROLLUPS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// For the benchmark that measures what rollups add to a run: turns them off process-wide.
#[doc(hidden)]
pub fn bench_disable_rollups(off: bool) {
    BENCH_WITHOUT_ROLLUPS.store(off, std::sync::atomic::Ordering::Relaxed);
}

pub fn bucket_of(ms: i64) -> i64 {
    ms.div_euclid(BUCKET_MS) * BUCKET_MS
}

/// Runs started by this process and not ended yet: what their end needs for the rollups, so
/// `finish_run` reads nothing back in the common case (another process's or a resumed run is read).
#[derive(Default)]
pub(crate) struct Live(std::sync::Mutex<std::collections::HashMap<String, LiveRun>>);

struct LiveRun {
    flow: String,
    canary: bool,
    started_at: i64,
    attempts: Vec<AttemptRecord>,
}

impl Live {
    pub(crate) fn start(&self, r: &super::RunRecord) {
        if matches!(r.status, RunStatus::Running | RunStatus::Queued)
            && let Ok(mut m) = self.0.lock()
        {
            m.insert(r.id.clone(), LiveRun { flow: r.flow.clone(), canary: r.canary, started_at: r.started_at, attempts: Vec::new() });
        }
    }

    pub(crate) fn attempt(&self, a: &AttemptRecord) {
        if let Ok(mut m) = self.0.lock()
            && let Some(run) = m.get_mut(&a.run_id)
        {
            run.attempts.push(AttemptRecord { input: None, output: None, error_message: None, ..a.clone() });
        }
    }

    pub(crate) fn has(&self, run_id: &str) -> bool {
        self.0.lock().is_ok_and(|m| m.contains_key(run_id))
    }

    /// Forgets a run (this process let go of it without ending it).
    pub(super) fn forget(&self, run_id: &str) {
        self.take(run_id);
    }

    fn take(&self, run_id: &str) -> Option<LiveRun> {
        self.0.lock().ok()?.remove(run_id)
    }
}

/// Rollup rows of a window, summed over its buckets.
#[derive(Debug, Clone, Default)]
pub struct RollupWindow {
    /// (flow, canary, status) → (runs, backup_runs, dur_n, dur_sum).
    pub runs: Vec<(String, bool, String, [i64; 4])>,
    /// (flow, failed node or "", error kind, runs).
    pub run_errors: Vec<(String, String, String, i64)>,
    /// (flow, node, model or "", kind, [attempts, ok, failed, timed_out, retries, next_model, dur_sum]).
    pub nodes: Vec<(String, String, String, String, [i64; 7])>,
    /// (flow, node, error kind, attempts).
    pub node_errors: Vec<(String, String, String, i64)>,
    /// (flow, node or "" for whole runs, bin, count).
    pub hist: Vec<(String, String, i64, i64)>,
    /// (flow, currency, [tokens_in, tokens_out, cost_nanos]) of priced model calls.
    pub costs: Vec<(String, String, [i64; 3])>,
}

/// What one run added to the rollups (its `rollup_seen` row).
#[derive(Debug, Clone, Default)]
struct Seen {
    status: String,
    duration_ms: Option<i64>,
    failed_node: Option<String>,
    error_kind: Option<String>,
    backup: bool,
    last_seq: i64,
}

#[derive(Default)]
struct Deltas {
    runs: BTreeMap<(String, i64, String), [i64; 4]>,
    run_errors: BTreeMap<(String, String, String), i64>,
    nodes: BTreeMap<(String, String, String), (String, [i64; 7])>,
    node_errors: BTreeMap<(String, String, String), i64>,
    hist: BTreeMap<(String, String, i64), i64>,
    costs: BTreeMap<(String, String), [i64; 3]>,
}

/// A run counts toward durations when it reached a final state other than `refused`.
fn counts_duration(status: &str) -> bool {
    status.parse::<RunStatus>().map(|s| s.is_final() && s != RunStatus::Refused).unwrap_or(false)
}

impl Deltas {
    /// Adds (sign 1) or removes (sign -1) a run's own contribution.
    fn run(&mut self, flow: &str, canary: bool, s: &Seen, sign: i64) {
        let dur = s.duration_ms.filter(|_| counts_duration(&s.status) && !canary);
        let e = self.runs.entry((flow.to_owned(), canary as i64, s.status.clone())).or_default();
        e[0] += sign;
        e[1] += sign * s.backup as i64;
        if let Some(d) = dur {
            e[2] += sign;
            e[3] += sign * d;
            *self.hist.entry((flow.to_owned(), String::new(), hist::bin_of(d))).or_default() += sign;
        }
        let status = s.status.parse::<RunStatus>().ok();
        let success = status.is_some_and(|s| s.is_success());
        // A failure nothing could classify (an external run that sent no error_kind) still counts
        // in the cause table, as `unknown`, so the causes add up to the failures.
        let unexplained =
            matches!(status, Some(RunStatus::Failed | RunStatus::TimedOut | RunStatus::Interrupted | RunStatus::WaitingManual));
        let kind = s.error_kind.clone().or_else(|| unexplained.then(|| "unknown".to_owned()));
        if let (false, false, Some(k)) = (canary, success, kind) {
            *self.run_errors.entry((flow.to_owned(), s.failed_node.clone().unwrap_or_default(), k)).or_default() += sign;
        }
    }

    fn attempt(&mut self, a: &AttemptRecord) {
        self.attempt_signed(a, 1)
    }

    /// Adds (sign 1) or removes (sign -1) one attempt.
    fn attempt_signed(&mut self, a: &AttemptRecord, sign: i64) {
        if a.status == AttemptStatus::Skipped {
            return;
        }
        if let (Some(cur), Some(cost)) = (&a.currency, a.cost_nanos) {
            let c = self.costs.entry((a.flow.clone(), cur.clone())).or_default();
            c[0] += sign * a.tokens_in.unwrap_or(0);
            c[1] += sign * a.tokens_out.unwrap_or(0);
            c[2] += sign * cost;
        }
        let key = (a.flow.clone(), a.node_id.clone(), a.model.clone().unwrap_or_default());
        let (_, c) = self.nodes.entry(key).or_insert_with(|| (a.kind.clone(), [0; 7]));
        let ok = matches!(a.status, AttemptStatus::Succeeded | AttemptStatus::Defaulted);
        c[0] += sign;
        c[1] += sign * ok as i64;
        c[2] += sign * !ok as i64;
        c[3] += sign * (a.status == AttemptStatus::TimedOut) as i64;
        c[4] += sign * a.retried as i64;
        c[5] += sign * (a.action.as_deref() == Some("next_model")) as i64;
        c[6] += sign * a.duration_ms;
        if let (false, Some(k)) = (ok, &a.error_kind) {
            *self.node_errors.entry((a.flow.clone(), a.node_id.clone(), k.clone())).or_default() += sign;
        }
        *self.hist.entry((a.flow.clone(), a.node_id.clone(), hist::bin_of(a.duration_ms))).or_default() += sign;
    }
}

/// `INSERT … ON CONFLICT` that adds `add` columns to an existing row (or, with `replace`, sets them).
fn upsert(backend: Backend, table: &str, keys: &[&str], cols: &[&str], rows: Vec<Vec<Arg>>, replace: bool) -> Option<db::Stmt> {
    if rows.is_empty() {
        return None;
    }
    let all: Vec<&str> = keys.iter().chain(cols.iter()).copied().collect();
    let one = format!("({})", vec!["?"; all.len()].join(", "));
    let values = vec![one.as_str(); rows.len()].join(", ");
    let set: Vec<String> = cols
        .iter()
        .filter(|c| **c != "kind")
        .map(|c| match (backend, replace) {
            (Backend::MySql, false) => format!("{c} = {c} + VALUES({c})"),
            (Backend::MySql, true) => format!("{c} = VALUES({c})"),
            (Backend::Postgres, false) => format!("{c} = {table}.{c} + EXCLUDED.{c}"),
            (Backend::Sqlite, false) => format!("{c} = {c} + excluded.{c}"),
            (_, true) => format!("{c} = excluded.{c}"),
        })
        .collect();
    let tail = match backend {
        Backend::MySql => format!("ON DUPLICATE KEY UPDATE {}", set.join(", ")),
        _ => format!("ON CONFLICT ({}) DO UPDATE SET {}", keys.join(", "), set.join(", ")),
    };
    let sql = format!("INSERT INTO {table} ({}) VALUES {values} {tail}", all.join(", "));
    Some((Cow::Owned(sql), rows.into_iter().flatten().collect()))
}

/// A `rollup_seen` row (status, duration_ms, failed_node, error_kind, backup, last_seq), if any.
fn seen_from(r: &[Val]) -> Option<Seen> {
    r[0].str().map(|status| Seen {
        status,
        duration_ms: r[1].i64(),
        failed_node: r[2].str(),
        error_kind: r[3].str(),
        backup: r[4].i64().unwrap_or(0) != 0,
        last_seq: r[5].i64().unwrap_or(0),
    })
}

/// Marks a run's attempts as counted; it runs after them in the same transaction.
fn mark_rolled_up(run_id: &str) -> db::Stmt {
    (Cow::Borrowed("UPDATE node_attempts SET rolled_up = 1 WHERE run_id = ? AND rolled_up = 0"), vec![run_id.into()])
}

const ATTEMPT_ROLLUP_COLS: &str = "run_id, flow, node_id, kind, seq, status, duration_ms, retried, action, error_kind, model, tokens_in, tokens_out, cost_nanos, currency";

/// `?, ?, …` for `ids`, and the ids as the statement's arguments.
fn id_list(ids: &[String]) -> (String, Vec<Arg>) {
    (vec!["?"; ids.len()].join(", "), ids.iter().map(|i| Arg::from(i.as_str())).collect())
}

/// What [`Store::prune_raw`] deleted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    /// Runs whose node attempts were deleted.
    pub attempts_of: u64,
    /// Run rows deleted.
    pub runs: u64,
    /// Ids of ingested events deleted.
    pub event_ids: u64,
}

impl Store {
    /// The statements that move a run's counts into the rollups; `end` is its new end and
    /// `last` the attempts written with it. Reads what is already committed of the run.
    /// `inserted`: the run is being inserted already ended (a `refused` run), so nothing of it is stored yet.
    pub(crate) async fn rollup_stmts(
        &self,
        run_id: &str,
        end: &RunEnd,
        last: &[AttemptRecord],
        inserted: Option<&super::RunRecord>,
    ) -> anyhow::Result<Vec<db::Stmt>> {
        let Some(status) = end.status else { return Ok(Vec::new()) };
        if BENCH_WITHOUT_ROLLUPS.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(Vec::new());
        }
        if let Some(r) = inserted {
            let new = Seen {
                status: status.as_str().to_owned(),
                duration_ms: r.duration_ms,
                failed_node: r.failed_node.clone(),
                error_kind: r.error_kind.clone(),
                ..Default::default()
            };
            let mut d = Deltas::default();
            d.run(&r.flow, r.canary, &new, 1);
            return Ok(self.delta_stmts(bucket_of(r.started_at), d, Some((run_id, &new))));
        }
        if let Some(live) = self.live.take(run_id) {
            // Started here and not ended before: nothing rolled up yet, every attempt known.
            let mut attempts = live.attempts;
            let known: std::collections::HashSet<i64> = attempts.iter().map(|a| a.seq).collect();
            attempts.extend(last.iter().filter(|a| !known.contains(&a.seq)).cloned());
            if live.canary {
                attempts.clear();
            }
            let mut out = self.run_delta(run_id, &live.flow, live.canary, live.started_at, end, status, None, attempts);
            out.push(mark_rolled_up(run_id));
            return Ok(out);
        }
        let row = self
            .write_pool
            .fetch(
                "SELECT r.flow, r.canary, r.started_at, s.status, s.duration_ms, s.failed_node, s.error_kind, s.backup, s.last_seq, s.bucket_ms \
                 FROM runs r LEFT JOIN rollup_seen s ON s.run_id = r.id WHERE r.id = ?",
                &[run_id.into()],
                &[Ty::Str, Ty::I64, Ty::I64, Ty::Str, Ty::I64, Ty::Str, Ty::Str, Ty::I64, Ty::I64, Ty::I64],
            )
            .await?;
        let Some(r) = row.into_iter().next() else { return Ok(Vec::new()) };
        let (flow, canary, started) = (r[0].str().unwrap_or_default(), r[1].i64().unwrap_or(0) != 0, r[2].i64().unwrap_or(0));
        let old = seen_from(&r[3..]);
        let old_bucket = r[9].i64().unwrap_or(bucket_of(started));
        self.moved_stmts(run_id, &flow, canary, started, (old, old_bucket), end, status, last).await
    }

    /// For ingestion: the statements that count `run` (its new row, ended) in the rollups, to be
    /// committed with that row and `batch` (its attempts in the same write, not stored yet).
    /// `fresh`: the run had no row before, so nothing of it is counted or stored and nothing is
    /// read, and the caller stores `batch` counted; otherwise what it added before is read and
    /// moved, as [`Store::rollup_stmts`] does.
    pub(crate) async fn ingest_rollup_stmts(
        &self,
        run: &super::RunRecord,
        fresh: bool,
        batch: &[&AttemptRecord],
    ) -> anyhow::Result<Vec<db::Stmt>> {
        let end = RunEnd {
            status: Some(run.status),
            ended_at: run.ended_at.unwrap_or(run.started_at),
            duration_ms: run.duration_ms.unwrap_or(0),
            failed_node: run.failed_node.clone(),
            error_kind: run.error_kind.clone(),
            error_message: run.error_message.clone(),
            severity: run.severity.clone(),
        };
        if BENCH_WITHOUT_ROLLUPS.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(Vec::new());
        }
        // The INSERT keeps the first attempt of a (run, seq): so do the counts.
        let mut seqs = std::collections::HashSet::new();
        let last: Vec<AttemptRecord> = batch.iter().filter(|a| seqs.insert(a.seq)).map(|a| (*a).clone()).collect();
        let bucket = bucket_of(run.started_at);
        if fresh {
            // Its attempts are all in `batch`, written counted (Store::apply_ingest).
            let attempts = if run.canary { Vec::new() } else { last };
            return Ok(self.run_delta(&run.id, &run.flow, run.canary, run.started_at, &end, run.status, None, attempts));
        }
        let rows = self
            .write_pool
            .fetch(
                "SELECT status, duration_ms, failed_node, error_kind, backup, last_seq, bucket_ms FROM rollup_seen WHERE run_id = ?",
                &[run.id.as_str().into()],
                &[Ty::Str, Ty::I64, Ty::Str, Ty::Str, Ty::I64, Ty::I64, Ty::I64],
            )
            .await?;
        let (old, old_bucket) = match rows.into_iter().next() {
            Some(r) => (seen_from(&r), r[6].i64().unwrap_or(bucket)),
            None => (None, bucket),
        };
        self.moved_stmts(&run.id, &run.flow, run.canary, run.started_at, (old, old_bucket), &end, run.status, &last).await
    }

    /// The statements for a run's new end given what it added before (`old`, in `old_bucket`):
    /// reads its attempts, counts those not counted yet (and `last`, those not stored), and moves
    /// what was counted when the run's start moved to another bucket.
    #[allow(clippy::too_many_arguments)]
    async fn moved_stmts(
        &self,
        run_id: &str,
        flow: &str,
        canary: bool,
        started: i64,
        (old, old_bucket): (Option<Seen>, i64),
        end: &RunEnd,
        status: RunStatus,
        last: &[AttemptRecord],
    ) -> anyhow::Result<Vec<db::Stmt>> {
        // Every attempt not counted yet, whatever its place in the run (one that arrived after
        // the run's end, or before an attempt with a higher seq, is counted all the same).
        let mut attempts: Vec<AttemptRecord> = Vec::new();
        let mut counted: Vec<AttemptRecord> = Vec::new();
        if !canary {
            let sql = format!("SELECT {ATTEMPT_ROLLUP_COLS}, rolled_up FROM node_attempts WHERE run_id = ?");
            let tys = [
                Ty::Str,
                Ty::Str,
                Ty::Str,
                Ty::Str,
                Ty::I64,
                Ty::Str,
                Ty::I64,
                Ty::I64,
                Ty::Str,
                Ty::Str,
                Ty::Str,
                Ty::I64,
                Ty::I64,
                Ty::I64,
                Ty::Str,
                Ty::I64,
            ];
            for mut v in self.write_pool.fetch(&sql, &[run_id.into()], &tys).await? {
                let done = v.pop().and_then(|x| x.i64()).unwrap_or(0) != 0;
                if done { counted.push(rollup_attempt(v)) } else { attempts.push(rollup_attempt(v)) }
            }
            let stored: std::collections::HashSet<i64> = attempts.iter().chain(&counted).map(|a| a.seq).collect();
            attempts.extend(last.iter().filter(|a| !stored.contains(&a.seq)).cloned());
        }
        let mut out = Vec::new();
        if old.is_some() && old_bucket != bucket_of(started) {
            // The run's start moved (an earlier event came late): what it added before leaves
            // the old bucket, and the attempts already counted move with it.
            let mut d = Deltas::default();
            if let Some(o) = &old {
                d.run(flow, canary, o, -1);
            }
            for a in &counted {
                d.attempt_signed(a, -1);
            }
            out.extend(self.delta_stmts(old_bucket, d, None));
            attempts.extend(counted);
            out.extend(self.run_delta(run_id, flow, canary, started, end, status, None, attempts));
        } else {
            out.extend(self.run_delta(run_id, flow, canary, started, end, status, old, attempts));
        }
        out.push(mark_rolled_up(run_id));
        Ok(out)
    }

    /// The statements for a run's (new) end, given what it contributed before.
    #[allow(clippy::too_many_arguments)]
    fn run_delta(
        &self,
        run_id: &str,
        flow: &str,
        canary: bool,
        started: i64,
        end: &RunEnd,
        status: RunStatus,
        old: Option<Seen>,
        attempts: Vec<AttemptRecord>,
    ) -> Vec<db::Stmt> {
        let last_seq = old.as_ref().map(|o| o.last_seq).unwrap_or(0);
        let new = Seen {
            status: status.as_str().to_owned(),
            duration_ms: Some(end.duration_ms),
            failed_node: end.failed_node.clone(),
            error_kind: end.error_kind.clone(),
            backup: old.as_ref().map(|o| o.backup).unwrap_or(false) || attempts.iter().any(|a| a.action.as_deref() == Some("next_model")),
            last_seq: attempts.iter().map(|a| a.seq).max().unwrap_or(0).max(last_seq),
        };
        let bucket = bucket_of(started);
        let mut d = Deltas::default();
        if let Some(o) = &old {
            d.run(flow, canary, o, -1);
        }
        d.run(flow, canary, &new, 1);
        for a in &attempts {
            d.attempt(a);
        }
        self.delta_stmts(bucket, d, Some((run_id, &new)))
    }

    fn delta_stmts(&self, bucket: i64, d: Deltas, seen: Option<(&str, &Seen)>) -> Vec<db::Stmt> {
        let be = self.backend();
        let b = || Arg::from(bucket);
        let mut out = Vec::new();
        let rows = d
            .runs
            .into_iter()
            .filter(|(_, v)| v.iter().any(|x| *x != 0))
            .map(|((f, c, s), v)| vec![b(), f.into(), c.into(), s.into(), v[0].into(), v[1].into(), v[2].into(), v[3].into()])
            .collect();
        out.extend(upsert(
            be,
            "rollup_runs",
            &["bucket_ms", "flow", "canary", "status"],
            &["runs", "backup_runs", "dur_n", "dur_sum"],
            rows,
            false,
        ));
        let rows = d
            .run_errors
            .into_iter()
            .filter(|(_, n)| *n != 0)
            .map(|((f, n, k), c)| vec![b(), f.into(), n.into(), k.into(), c.into()])
            .collect();
        out.extend(upsert(be, "rollup_run_errors", &["bucket_ms", "flow", "node", "error_kind"], &["runs"], rows, false));
        let rows = d
            .nodes
            .into_iter()
            .map(|((f, n, m), (kind, c))| {
                let mut v = vec![b(), f.into(), n.into(), m.into(), kind.into()];
                v.extend(c.iter().map(|x| Arg::from(*x)));
                v
            })
            .collect();
        out.extend(upsert(
            be,
            "rollup_nodes",
            &["bucket_ms", "flow", "node", "model"],
            &["kind", "attempts", "ok", "failed", "timed_out", "retries", "next_model", "dur_sum"],
            rows,
            false,
        ));
        let rows = d.node_errors.into_iter().map(|((f, n, k), c)| vec![b(), f.into(), n.into(), k.into(), c.into()]).collect();
        out.extend(upsert(be, "rollup_node_errors", &["bucket_ms", "flow", "node", "error_kind"], &["n"], rows, false));
        let rows = d
            .hist
            .into_iter()
            .filter(|(_, n)| *n != 0)
            .map(|((f, n, bin), c)| vec![b(), f.into(), n.into(), bin.into(), c.into()])
            .collect();
        out.extend(upsert(be, "rollup_hist", &["bucket_ms", "flow", "node", "bin"], &["n"], rows, false));
        let rows = d
            .costs
            .into_iter()
            .filter(|(_, c)| c.iter().any(|x| *x != 0))
            .map(|((f, cur), c)| vec![b(), f.into(), cur.into(), c[0].into(), c[1].into(), c[2].into()])
            .collect();
        out.extend(upsert(be, "rollup_costs", &["bucket_ms", "flow", "currency"], &["tokens_in", "tokens_out", "cost_nanos"], rows, false));
        if let Some((run_id, s)) = seen {
            let row = vec![
                run_id.into(),
                b(),
                s.status.clone().into(),
                s.duration_ms.into(),
                s.failed_node.clone().into(),
                s.error_kind.clone().into(),
                (s.backup as i64).into(),
                s.last_seq.into(),
            ];
            out.extend(upsert(
                be,
                "rollup_seen",
                &["run_id"],
                &["bucket_ms", "status", "duration_ms", "failed_node", "error_kind", "backup", "last_seq"],
                vec![row],
                true,
            ));
        }
        out
    }

    /// Records finished runs and all their attempts in bulk (imports, generated histories), with
    /// their rollups, in one transaction. Runs must be in their final state (or waiting for a human).
    pub async fn import_finished(&self, runs: &[super::RunRecord], attempts: &[AttemptRecord]) -> anyhow::Result<()> {
        let mut by_run: std::collections::HashMap<&str, Vec<&AttemptRecord>> = std::collections::HashMap::new();
        for a in attempts {
            by_run.entry(a.run_id.as_str()).or_default().push(a);
        }
        let mut buckets: BTreeMap<i64, Deltas> = BTreeMap::new();
        let mut seen_rows = Vec::new();
        for r in runs.iter().filter(|r| r.status != RunStatus::Running && r.status != RunStatus::Queued) {
            let atts = by_run.get(r.id.as_str()).map(Vec::as_slice).unwrap_or(&[]);
            let seen = Seen {
                status: r.status.as_str().to_owned(),
                duration_ms: r.duration_ms,
                failed_node: r.failed_node.clone(),
                error_kind: r.error_kind.clone(),
                backup: !r.canary && atts.iter().any(|a| a.action.as_deref() == Some("next_model")),
                last_seq: atts.iter().map(|a| a.seq).max().unwrap_or(0),
            };
            let bucket = bucket_of(r.started_at);
            let d = buckets.entry(bucket).or_default();
            d.run(&r.flow, r.canary, &seen, 1);
            if !r.canary {
                for a in atts {
                    d.attempt(a);
                }
            }
            seen_rows.push(vec![
                Arg::from(r.id.as_str()),
                bucket.into(),
                seen.status.into(),
                seen.duration_ms.into(),
                seen.failed_node.into(),
                seen.error_kind.into(),
                (seen.backup as i64).into(),
                seen.last_seq.into(),
            ]);
        }
        let mut stmts = Vec::new();
        let run_rows: Vec<Vec<Arg>> = runs.iter().map(super::run_args).collect();
        stmts.extend(insert_many("runs", super::RUN_COLS, run_rows));
        stmts.extend(insert_many("node_attempts", super::ATTEMPT_COLS, attempts.iter().map(super::attempt_args).collect()));
        stmts.extend(insert_many(
            "rollup_seen",
            "run_id, bucket_ms, status, duration_ms, failed_node, error_kind, backup, last_seq",
            seen_rows,
        ));
        for (bucket, d) in buckets {
            stmts.extend(self.delta_stmts(bucket, d, None));
        }
        let counted: Vec<&str> =
            runs.iter().filter(|r| r.status != RunStatus::Running && r.status != RunStatus::Queued).map(|r| r.id.as_str()).collect();
        for chunk in counted.chunks(500) {
            let sql = format!("UPDATE node_attempts SET rolled_up = 1 WHERE run_id IN ({})", vec!["?"; chunk.len()].join(", "));
            stmts.push((Cow::Owned(sql), chunk.iter().map(|id| Arg::from(*id)).collect()));
        }
        self.write(stmts).await
    }

    /// Sums the rollups of the buckets in `[since_ms, until_ms)` (both rounded to buckets: the
    /// start down, the end up), optionally for one flow; `hist`: also the latency histograms.
    pub async fn rollup_window(&self, flow: Option<&str>, since_ms: i64, until_ms: i64, hist: bool) -> anyhow::Result<RollupWindow> {
        let (since, until) = (bucket_of(since_ms), bucket_of(until_ms + BUCKET_MS - 1));
        let (fw, mut args): (&str, Vec<Arg>) = match flow {
            Some(f) => (" AND flow = ?", vec![since.into(), until.into(), f.into()]),
            None => ("", vec![since.into(), until.into()]),
        };
        let w = format!("WHERE bucket_ms >= ? AND bucket_ms < ?{fw}");
        let be = self.backend();
        let sum = |c: &str| match be {
            Backend::Sqlite => format!("SUM({c})"),
            Backend::MySql => format!("CAST(SUM({c}) AS SIGNED)"),
            Backend::Postgres => format!("CAST(SUM({c}) AS BIGINT)"),
        };
        let p = &self.pool;
        let mut out = RollupWindow::default();
        let sql = format!(
            "SELECT flow, canary, status, {}, {}, {}, {} FROM rollup_runs {w} GROUP BY flow, canary, status",
            sum("runs"),
            sum("backup_runs"),
            sum("dur_n"),
            sum("dur_sum")
        );
        for r in p.fetch(&sql, &args, &[Ty::Str, Ty::I64, Ty::Str, Ty::I64, Ty::I64, Ty::I64, Ty::I64]).await? {
            out.runs.push((s(&r[0]), r[1].i64() == Some(1), s(&r[2]), [n(&r[3]), n(&r[4]), n(&r[5]), n(&r[6])]));
        }
        let sql = format!("SELECT flow, node, error_kind, {} FROM rollup_run_errors {w} GROUP BY flow, node, error_kind", sum("runs"));
        for r in p.fetch(&sql, &args, &[Ty::Str, Ty::Str, Ty::Str, Ty::I64]).await? {
            out.run_errors.push((s(&r[0]), s(&r[1]), s(&r[2]), n(&r[3])));
        }
        let sql = format!(
            "SELECT flow, node, model, MAX(kind), {} FROM rollup_nodes {w} GROUP BY flow, node, model",
            ["attempts", "ok", "failed", "timed_out", "retries", "next_model", "dur_sum"].map(sum).join(", ")
        );
        let tys = [Ty::Str, Ty::Str, Ty::Str, Ty::Str, Ty::I64, Ty::I64, Ty::I64, Ty::I64, Ty::I64, Ty::I64, Ty::I64];
        for r in p.fetch(&sql, &args, &tys).await? {
            let c = [n(&r[4]), n(&r[5]), n(&r[6]), n(&r[7]), n(&r[8]), n(&r[9]), n(&r[10])];
            out.nodes.push((s(&r[0]), s(&r[1]), s(&r[2]), s(&r[3]), c));
        }
        let sql = format!("SELECT flow, node, error_kind, {} FROM rollup_node_errors {w} GROUP BY flow, node, error_kind", sum("n"));
        for r in p.fetch(&sql, &args, &[Ty::Str, Ty::Str, Ty::Str, Ty::I64]).await? {
            out.node_errors.push((s(&r[0]), s(&r[1]), s(&r[2]), n(&r[3])));
        }
        let sql = format!(
            "SELECT flow, currency, {} FROM rollup_costs {w} GROUP BY flow, currency",
            ["tokens_in", "tokens_out", "cost_nanos"].map(sum).join(", ")
        );
        for r in p.fetch(&sql, &args, &[Ty::Str, Ty::Str, Ty::I64, Ty::I64, Ty::I64]).await? {
            out.costs.push((s(&r[0]), s(&r[1]), [n(&r[2]), n(&r[3]), n(&r[4])]));
        }
        if !hist {
            return Ok(out);
        }
        let sql = format!("SELECT flow, node, bin, {} FROM rollup_hist {w} GROUP BY flow, node, bin", sum("n"));
        for r in p.fetch(&sql, &std::mem::take(&mut args), &[Ty::Str, Ty::Str, Ty::I64, Ty::I64]).await? {
            out.hist.push((s(&r[0]), s(&r[1]), n(&r[2]), n(&r[3])));
        }
        Ok(out)
    }

    /// Runs waiting for a human now, per flow (canaries left out).
    pub async fn waiting_manual_counts(&self) -> anyhow::Result<BTreeMap<String, i64>> {
        let rows = self
            .pool
            .fetch("SELECT flow, COUNT(*) FROM runs WHERE status = 'waiting_manual' AND canary = 0 GROUP BY flow", &[], &[Ty::Str, Ty::I64])
            .await?;
        Ok(rows.into_iter().map(|r| (s(&r[0]), n(&r[1]))).collect())
    }

    /// Rolls up runs recorded before the rollups existed (or written without `finish_run`): every
    /// run in a final state or waiting for a human that `rollup_seen` does not know, `batch` at a
    /// time. Returns how many runs it added.
    pub async fn rollup_backfill(&self, batch: i64) -> anyhow::Result<u64> {
        let mut total = 0;
        loop {
            let sql = format!(
                "SELECT r.id, r.status, r.ended_at, r.duration_ms, r.failed_node, r.error_kind FROM runs r \
                 LEFT JOIN rollup_seen s ON s.run_id = r.id WHERE s.run_id IS NULL AND r.status NOT IN ('queued', 'running') LIMIT {}",
                batch.max(1)
            );
            let rows = self.pool.fetch(&sql, &[], &[Ty::Str, Ty::Str, Ty::I64, Ty::I64, Ty::Str, Ty::Str]).await?;
            if rows.is_empty() {
                return Ok(total);
            }
            let mut stmts = Vec::new();
            for r in &rows {
                let end = RunEnd {
                    status: r[1].str().and_then(|s| s.parse().ok()),
                    ended_at: r[2].i64().unwrap_or(0),
                    duration_ms: r[3].i64().unwrap_or(0),
                    failed_node: r[4].str(),
                    error_kind: r[5].str(),
                    ..Default::default()
                };
                let mut st = self.rollup_stmts(&s(&r[0]), &end, &[], None).await?;
                if st.is_empty() {
                    // An unknown status: mark it seen so the loop moves on.
                    st.extend(self.delta_stmts(
                        0,
                        Deltas::default(),
                        Some((&s(&r[0]), &Seen { status: "unknown".into(), ..Default::default() })),
                    ));
                }
                stmts.extend(st);
            }
            self.write(stmts).await?;
            total += rows.len() as u64;
        }
    }

    /// Deletes the node attempts (and, with `runs_before_ms`, the run rows) of runs that started
    /// before `attempts_before_ms`, `batch` runs per transaction; rollups stay. Never touches a run
    /// that is not final (waiting for a human, running, queued) or that an open alert refers to.
    /// With `runs_before_ms`, also the ids of events ingested before it whose run is gone.
    pub async fn prune_raw(&self, attempts_before_ms: i64, runs_before_ms: Option<i64>, batch: i64) -> anyhow::Result<Pruned> {
        let keep = format!("status NOT IN ('waiting_manual', 'running', 'queued'){}", open_alert_guard());
        let mut pruned = Pruned::default();
        // Attempts first: runs whose attempts are gone are remembered by an empty attempt list.
        loop {
            let sql = format!(
                "SELECT id FROM runs WHERE started_at < ? AND {keep} AND EXISTS (SELECT 1 FROM node_attempts a WHERE a.run_id = runs.id) LIMIT {}",
                batch.max(1)
            );
            let ids = self.fetch_ids(&sql, &[attempts_before_ms.into()]).await?;
            if ids.is_empty() {
                break;
            }
            let (list, args) = id_list(&ids);
            self.write(vec![(Cow::Owned(format!("DELETE FROM node_attempts WHERE run_id IN ({list})")), args)]).await?;
            pruned.attempts_of += ids.len() as u64;
        }
        if let Some(before) = runs_before_ms {
            loop {
                let sql = format!("SELECT id FROM runs WHERE started_at < ? AND {keep} LIMIT {}", batch.max(1));
                let ids = self.fetch_ids(&sql, &[before.into()]).await?;
                if ids.is_empty() {
                    break;
                }
                let (list, args) = id_list(&ids);
                self.write(vec![
                    (Cow::Owned(format!("DELETE FROM node_attempts WHERE run_id IN ({list})")), args.clone()),
                    (Cow::Owned(format!("DELETE FROM rollup_seen WHERE run_id IN ({list})")), args.clone()),
                    (Cow::Owned(format!("DELETE FROM runs WHERE id IN ({list})")), args),
                ])
                .await?;
                pruned.runs += ids.len() as u64;
            }
            // The ids kept to know a resent event (ingestion): those of runs gone are no longer
            // needed, as a resent event of a run deleted would start it anew anyway. Walked in id
            // order from where the last batch ended: one pass over the table in all.
            // The DELETE checks the run again: another process may have ingested it anew since.
            let gone = "NOT EXISTS (SELECT 1 FROM runs r WHERE r.id = ingest_events.run_id)";
            let mut after = String::new();
            loop {
                let sql =
                    format!("SELECT id FROM ingest_events WHERE id > ? AND received_at < ? AND {gone} ORDER BY id LIMIT {}", batch.max(1));
                let ids = self.fetch_ids(&sql, &[after.as_str().into(), before.into()]).await?;
                let Some(last) = ids.last().cloned() else { break };
                let (list, args) = id_list(&ids);
                self.write(vec![(Cow::Owned(format!("DELETE FROM ingest_events WHERE id IN ({list}) AND {gone}")), args)]).await?;
                pruned.event_ids += ids.len() as u64;
                after = last;
            }
        }
        Ok(pruned)
    }

    /// The first column of the rows `sql` selects, as text.
    async fn fetch_ids(&self, sql: &str, args: &[Arg]) -> anyhow::Result<Vec<String>> {
        Ok(self.pool.fetch(sql, args, &[Ty::Str]).await?.iter().map(|r| s(&r[0])).collect())
    }

    /// Stores a rendered report (replacing one of the same kind and period, keeping its send marks).
    #[allow(clippy::too_many_arguments)]
    pub async fn save_report(
        &self,
        kind: &str,
        period: &str,
        since_ms: i64,
        until_ms: i64,
        now_ms: i64,
        body: &str,
        markdown: &str,
    ) -> anyhow::Result<()> {
        let row = vec![kind.into(), period.into(), since_ms.into(), until_ms.into(), now_ms.into(), body.into(), markdown.into()];
        let stmt = upsert(
            self.backend(),
            "reports",
            &["kind", "period"],
            &["since_ms", "until_ms", "created_at", "body", "markdown"],
            vec![row],
            true,
        );
        self.write(stmt.into_iter().collect()).await
    }

    /// A stored report: (body JSON, Markdown, sent_at).
    pub async fn load_report(&self, kind: &str, period: &str) -> anyhow::Result<Option<(String, String, Option<i64>)>> {
        let rows = self
            .pool
            .fetch(
                "SELECT body, markdown, sent_at FROM reports WHERE kind = ? AND period = ?",
                &[kind.into(), period.into()],
                &[Ty::Str, Ty::Str, Ty::I64],
            )
            .await?;
        Ok(rows.into_iter().next().map(|r| (s(&r[0]), s(&r[1]), r[2].i64())))
    }

    /// When the report of this kind and period was sent, if it was.
    pub async fn report_sent_at(&self, kind: &str, period: &str) -> anyhow::Result<Option<i64>> {
        Ok(self.load_report(kind, period).await?.and_then(|r| r.2))
    }

    /// Takes the right to send a report: true for exactly one caller across processes, unless the
    /// taker did not mark it sent within `lease_ms` (it died), when another may take it over.
    /// The report must have been saved first.
    pub async fn claim_report(&self, kind: &str, period: &str, now_ms: i64, lease_ms: i64) -> anyhow::Result<bool> {
        let n = self
            .pool
            .exec(
                "UPDATE reports SET claimed_at = ? WHERE kind = ? AND period = ? AND sent_at IS NULL AND (claimed_at IS NULL OR claimed_at < ?)",
                &[now_ms.into(), kind.into(), period.into(), (now_ms - lease_ms).into()],
            )
            .await?;
        Ok(n == 1)
    }

    pub async fn mark_report_sent(&self, kind: &str, period: &str, now_ms: i64) -> anyhow::Result<()> {
        self.write(vec![(
            Cow::Borrowed("UPDATE reports SET sent_at = ? WHERE kind = ? AND period = ?"),
            vec![now_ms.into(), kind.into(), period.into()],
        )])
        .await
    }
}

/// Multi-row INSERTs of at most ~30,000 values each (under every backend's placeholder limit).
fn insert_many(table: &str, cols: &str, rows: Vec<Vec<Arg>>) -> Vec<db::Stmt> {
    let width = cols.split(',').count();
    let one = format!("({})", vec!["?"; width].join(", "));
    rows.chunks((30_000 / width).max(1))
        .map(|chunk| {
            let sql = format!("INSERT INTO {table} ({cols}) VALUES {}", vec![one.as_str(); chunk.len()].join(", "));
            (Cow::Owned(sql), chunk.iter().flatten().cloned().collect())
        })
        .collect()
}

/// Retention never prunes a run an open (not yet resolved) alert refers to.
fn open_alert_guard() -> &'static str {
    " AND NOT EXISTS (SELECT 1 FROM alert_occurrences o JOIN alerts al ON al.id = o.alert_id WHERE o.run_id = runs.id AND al.status <> 'resolved')"
}

fn s(v: &Val) -> String {
    v.str().unwrap_or_default()
}

fn n(v: &Val) -> i64 {
    v.i64().unwrap_or(0)
}

fn rollup_attempt(v: Vec<Val>) -> AttemptRecord {
    AttemptRecord {
        run_id: s(&v[0]),
        flow: s(&v[1]),
        node_id: s(&v[2]),
        kind: s(&v[3]),
        seq: n(&v[4]),
        attempt: 0,
        iteration: None,
        status: v[5].str().and_then(|x| x.parse().ok()).unwrap_or(AttemptStatus::Failed),
        started_at: 0,
        ended_at: 0,
        duration_ms: n(&v[6]),
        input_bytes: 0,
        output_bytes: 0,
        input: None,
        output: None,
        retried: n(&v[7]) != 0,
        action: v[8].str(),
        error_kind: v[9].str(),
        error_message: None,
        model: v[10].str(),
        tokens_in: v[11].i64(),
        tokens_out: v[12].i64(),
        http_status: None,
        cost_nanos: v[13].i64(),
        currency: v[14].str(),
    }
}
