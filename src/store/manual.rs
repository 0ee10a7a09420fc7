//! The store side of error handling: node outputs kept for resuming a run, the manual queue with
//! its action history, flow blocks with their history, and cancel requests between processes.

use super::{Arg, RunEnd, Store, Ty, Val, db};
use serde::Serialize;
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A run parked for a human.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ManualTask {
    pub id: String,
    pub run_id: String,
    pub flow: String,
    pub node_id: String,
    pub error_kind: String,
    pub error_message: Option<String>,
    pub severity: String,
    /// `open`, `retried`, `skipped`, `resolved`, `aborted`.
    pub status: String,
    pub created_at: i64,
    pub closed_at: Option<i64>,
    pub closed_by: Option<String>,
    pub note: Option<String>,
}

/// Who did what to a manual task, when and why.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ManualAction {
    pub task_id: String,
    pub run_id: String,
    pub action: String,
    pub actor: String,
    pub note: Option<String>,
    pub at: i64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FlowBlock {
    pub flow: String,
    pub blocked_at: i64,
    pub run_id: Option<String>,
    pub reason: Option<String>,
    pub blocked_by: String,
}

/// How long the blocks read for [`Store::flow_block_cached`] are used.
pub const BLOCKS_FRESH: Duration = Duration::from_secs(1);

/// The blocks as this process last read them (see [`Store::flow_block_cached`]).
#[derive(Default)]
pub(crate) struct SeenBlocks {
    /// Moves on before and after every block or unblock made through this store, so a read that
    /// overlapped one is not used.
    written: AtomicU64,
    seen: Mutex<Option<Seen>>,
}

/// When the blocks were read, at which [`SeenBlocks::written`], and what they were.
type Seen = (Instant, u64, HashMap<String, FlowBlock>);

/// Moves [`SeenBlocks::written`] on again when dropped (the write is done, or failed).
pub(crate) struct Changed<'a>(&'a AtomicU64);

impl Drop for Changed<'_> {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

impl SeenBlocks {
    fn changed(&self) -> Changed<'_> {
        self.written.fetch_add(1, Ordering::SeqCst);
        Changed(&self.written)
    }
}

const TASK_COLS: &str = "id, run_id, flow, node_id, error_kind, error_message, severity, status, created_at, closed_at, closed_by, note";
const TASK_TYS: &[Ty] = &[Ty::Str, Ty::Str, Ty::Str, Ty::Str, Ty::Str, Ty::Str, Ty::Str, Ty::Str, Ty::I64, Ty::I64, Ty::Str, Ty::Str];

fn task_from(r: Vec<Val>) -> ManualTask {
    ManualTask {
        id: r[0].str().unwrap_or_default(),
        run_id: r[1].str().unwrap_or_default(),
        flow: r[2].str().unwrap_or_default(),
        node_id: r[3].str().unwrap_or_default(),
        error_kind: r[4].str().unwrap_or_default(),
        error_message: r[5].str(),
        severity: r[6].str().unwrap_or_default(),
        status: r[7].str().unwrap_or_default(),
        created_at: r[8].i64().unwrap_or(0),
        closed_at: r[9].i64(),
        closed_by: r[10].str(),
        note: r[11].str(),
    }
}

fn stmt(sql: &'static str, args: Vec<Arg>) -> db::Stmt {
    (Cow::Borrowed(sql), args)
}

/// The statement that keeps a node's full output for resuming (replacing an earlier one).
pub(crate) fn output_stmt(backend: super::Backend, run_id: &str, node_id: &str, output: &str) -> db::Stmt {
    let sql = match backend {
        super::Backend::MySql => {
            "INSERT INTO run_outputs (run_id, node_id, output) VALUES (?, ?, ?) ON DUPLICATE KEY UPDATE output = VALUES(output)"
        }
        _ => {
            "INSERT INTO run_outputs (run_id, node_id, output) VALUES (?, ?, ?) ON CONFLICT (run_id, node_id) DO UPDATE SET output = excluded.output"
        }
    };
    stmt(sql, vec![run_id.into(), node_id.into(), output.into()])
}

impl Store {
    /// The kept outputs of a run, by node.
    pub async fn outputs(&self, run_id: &str) -> anyhow::Result<BTreeMap<String, String>> {
        let rows =
            self.pool.fetch("SELECT node_id, output FROM run_outputs WHERE run_id = ?", &[run_id.into()], &[Ty::Str, Ty::Str]).await?;
        Ok(rows.into_iter().map(|r| (r[0].str().unwrap_or_default(), r[1].str().unwrap_or_default())).collect())
    }

    /// Keeps a node's full output (for a node whose output is not written with an attempt).
    pub async fn write_output(&self, run_id: &str, node_id: &str, output: &str) -> anyhow::Result<()> {
        self.write_run(run_id, vec![output_stmt(self.backend(), run_id, node_id, output)]).await
    }

    /// The highest attempt sequence number of a run (0 when none).
    pub async fn max_seq(&self, run_id: &str) -> anyhow::Result<i64> {
        let rows = self.pool.fetch("SELECT MAX(seq) FROM node_attempts WHERE run_id = ?", &[run_id.into()], &[Ty::I64]).await?;
        Ok(rows.first().and_then(|r| r[0].i64()).unwrap_or(0))
    }

    /// Ends a run waiting for a human and opens its manual task, in one transaction (after
    /// `before`, the run's records not written yet).
    pub async fn park_run(&self, run_id: &str, before: Vec<db::Stmt>, end: &RunEnd, task: &ManualTask) -> anyhow::Result<()> {
        let mut stmts = self.records_first(run_id, before).await?;
        stmts.extend([super::finish_stmt(run_id, end), Store::run_end_stmt(run_id, end.ended_at)]);
        stmts.push((
            // Idempotent, as every write of a batch that may be retried after a lost acknowledgement.
            Cow::Owned(format!(
                "INSERT INTO manual_tasks ({TASK_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?){}",
                self.on_conflict_skip("id")
            )),
            vec![
                task.id.as_str().into(),
                task.run_id.as_str().into(),
                task.flow.as_str().into(),
                task.node_id.as_str().into(),
                task.error_kind.as_str().into(),
                task.error_message.clone().into(),
                task.severity.as_str().into(),
                task.status.as_str().into(),
                task.created_at.into(),
                task.closed_at.into(),
                task.closed_by.clone().into(),
                task.note.clone().into(),
            ],
        ));
        stmts.extend(self.rollup_stmts(run_id, end, &[], None).await?);
        self.write_run(run_id, stmts).await?;
        self.release(run_id);
        Ok(())
    }

    /// Open tasks (or all, newest first).
    pub async fn manual_tasks(&self, only_open: bool, limit: i64) -> anyhow::Result<Vec<ManualTask>> {
        let filter = if only_open { "WHERE status = 'open'" } else { "" };
        let sql = format!("SELECT {TASK_COLS} FROM manual_tasks {filter} ORDER BY created_at DESC LIMIT {}", limit.max(0));
        Ok(self.pool.fetch(&sql, &[], TASK_TYS).await?.into_iter().map(task_from).collect())
    }

    /// A task by its id, or the newest task of a run, or by a unique prefix of either.
    pub async fn manual_task(&self, id: &str) -> anyhow::Result<Option<ManualTask>> {
        let sql = format!("SELECT {TASK_COLS} FROM manual_tasks WHERE id = ? OR run_id = ? ORDER BY created_at DESC LIMIT 1");
        if let Some(t) = self.pool.fetch(&sql, &[id.into(), id.into()], TASK_TYS).await?.into_iter().next() {
            return Ok(Some(task_from(t)));
        }
        let like = format!("{}%", id.replace(['%', '_'], ""));
        let sql = format!("SELECT {TASK_COLS} FROM manual_tasks WHERE id LIKE ? OR run_id LIKE ? ORDER BY created_at DESC LIMIT 2");
        let found: Vec<ManualTask> =
            self.pool.fetch(&sql, &[like.clone().into(), like.into()], TASK_TYS).await?.into_iter().map(task_from).collect();
        Ok(if found.len() == 1 { found.into_iter().next() } else { None })
    }

    pub async fn manual_actions(&self, task_id: &str) -> anyhow::Result<Vec<ManualAction>> {
        let rows = self
            .pool
            .fetch(
                "SELECT task_id, run_id, action, actor, note, at FROM manual_actions WHERE task_id = ? ORDER BY at, id",
                &[task_id.into()],
                &[Ty::Str, Ty::Str, Ty::Str, Ty::Str, Ty::Str, Ty::I64],
            )
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| ManualAction {
                task_id: r[0].str().unwrap_or_default(),
                run_id: r[1].str().unwrap_or_default(),
                action: r[2].str().unwrap_or_default(),
                actor: r[3].str().unwrap_or_default(),
                note: r[4].str(),
                at: r[5].i64().unwrap_or(0),
            })
            .collect())
    }

    /// Closes a task with `status` and records the action. Returns false when the task was not
    /// open (somebody else acted first).
    pub async fn close_manual_task(&self, task: &ManualTask, status: &str, a: &ManualAction, end: Option<&RunEnd>) -> anyhow::Result<bool> {
        let changed = self
            .pool
            .exec(
                "UPDATE manual_tasks SET status = ?, closed_at = ?, closed_by = ?, note = ? WHERE id = ? AND status = 'open'",
                &[status.into(), a.at.into(), a.actor.as_str().into(), a.note.clone().into(), task.id.as_str().into()],
            )
            .await?;
        if changed == 0 {
            return Ok(false);
        }
        let mut stmts = vec![stmt(
            "INSERT INTO manual_actions (task_id, run_id, action, actor, note, at) VALUES (?, ?, ?, ?, ?, ?)",
            vec![
                a.task_id.as_str().into(),
                a.run_id.as_str().into(),
                a.action.as_str().into(),
                a.actor.as_str().into(),
                a.note.clone().into(),
                a.at.into(),
            ],
        )];
        if let Some(end) = end {
            stmts.push(super::finish_stmt(&task.run_id, end));
            stmts.push(Store::run_end_stmt(&task.run_id, end.ended_at));
            stmts.extend(self.rollup_stmts(&task.run_id, end, &[], None).await?);
        }
        self.write_run(&task.run_id, stmts).await?;
        Ok(true)
    }

    /// Marks a finished or parked run as running again (a resumed run), under the lease this
    /// process took on it.
    pub async fn reopen_run(&self, run_id: &str) -> anyhow::Result<()> {
        self.write_run(run_id, vec![stmt(
            "UPDATE runs SET status = 'running', ended_at = NULL, duration_ms = NULL, failed_node = NULL, error_kind = NULL, error_message = NULL, severity = NULL WHERE id = ?",
            vec![run_id.into()],
        )])
        .await
    }

    pub async fn block_flow(&self, b: &FlowBlock) -> anyhow::Result<()> {
        let _changed = self.blocks_seen.changed();
        self.write(vec![
            stmt("DELETE FROM flow_blocks WHERE flow = ?", vec![b.flow.as_str().into()]),
            stmt(
                "INSERT INTO flow_blocks (flow, blocked_at, run_id, reason, blocked_by) VALUES (?, ?, ?, ?, ?)",
                vec![
                    b.flow.as_str().into(),
                    b.blocked_at.into(),
                    b.run_id.clone().into(),
                    b.reason.clone().into(),
                    b.blocked_by.as_str().into(),
                ],
            ),
            stmt(
                "INSERT INTO block_events (flow, action, at, actor, reason, run_id) VALUES (?, 'block', ?, ?, ?, ?)",
                vec![
                    b.flow.as_str().into(),
                    b.blocked_at.into(),
                    b.blocked_by.as_str().into(),
                    b.reason.clone().into(),
                    b.run_id.clone().into(),
                ],
            ),
        ])
        .await
    }

    /// Lifts a block; false when the flow was not blocked.
    pub async fn unblock_flow(&self, flow: &str, actor: &str, reason: Option<&str>, at: i64) -> anyhow::Result<bool> {
        let _changed = self.blocks_seen.changed();
        let n = self.pool.exec("DELETE FROM flow_blocks WHERE flow = ?", &[flow.into()]).await?;
        if n == 0 {
            return Ok(false);
        }
        self.write(vec![stmt(
            "INSERT INTO block_events (flow, action, at, actor, reason, run_id) VALUES (?, 'unblock', ?, ?, ?, NULL)",
            vec![flow.into(), at.into(), actor.into(), reason.into()],
        )])
        .await?;
        Ok(true)
    }

    pub async fn flow_block(&self, flow: &str) -> anyhow::Result<Option<FlowBlock>> {
        Ok(self.blocks(Some(flow)).await?.into_iter().next())
    }

    /// [`Store::flow_block`] as the engine checks it before each run: all blocks are read at
    /// once and kept for [`BLOCKS_FRESH`], so a run costs no read of its own. A block or unblock
    /// made through this store is seen at once; one made by another process within
    /// [`BLOCKS_FRESH`]. (Runs claimed from the queue read their flow's block in the claim.)
    pub async fn flow_block_cached(&self, flow: &str) -> anyhow::Result<Option<FlowBlock>> {
        let generation = self.blocks_seen.written.load(Ordering::SeqCst);
        if let Some((at, g, blocks)) = &*self.blocks_seen.seen.lock().expect("blocks")
            && *g == generation
            && at.elapsed() < BLOCKS_FRESH
        {
            return Ok(blocks.get(flow).cloned());
        }
        let read_at = Instant::now();
        let blocks: HashMap<String, FlowBlock> = self.blocks(None).await?.into_iter().map(|b| (b.flow.clone(), b)).collect();
        let found = blocks.get(flow).cloned();
        *self.blocks_seen.seen.lock().expect("blocks") = Some((read_at, generation, blocks));
        Ok(found)
    }

    pub async fn blocks(&self, flow: Option<&str>) -> anyhow::Result<Vec<FlowBlock>> {
        let (filter, args): (&str, Vec<Arg>) = match flow {
            Some(f) => ("WHERE flow = ?", vec![f.into()]),
            None => ("", vec![]),
        };
        let sql = format!("SELECT flow, blocked_at, run_id, reason, blocked_by FROM flow_blocks {filter} ORDER BY flow");
        let rows = self.pool.fetch(&sql, &args, &[Ty::Str, Ty::I64, Ty::Str, Ty::Str, Ty::Str]).await?;
        Ok(rows
            .into_iter()
            .map(|r| FlowBlock {
                flow: r[0].str().unwrap_or_default(),
                blocked_at: r[1].i64().unwrap_or(0),
                run_id: r[2].str(),
                reason: r[3].str(),
                blocked_by: r[4].str().unwrap_or_default(),
            })
            .collect())
    }

    /// Asks the process running `run_id` to cancel it.
    pub async fn request_cancel(&self, run_id: &str, actor: &str, at: i64) -> anyhow::Result<()> {
        self.write(vec![
            stmt("DELETE FROM run_cancels WHERE run_id = ?", vec![run_id.into()]),
            stmt(
                "INSERT INTO run_cancels (run_id, requested_at, requested_by) VALUES (?, ?, ?)",
                vec![run_id.into(), at.into(), actor.into()],
            ),
        ])
        .await
    }

    /// Which of these runs have a cancel request.
    pub async fn cancel_requested(&self, run_ids: &[String]) -> anyhow::Result<Vec<String>> {
        if run_ids.is_empty() {
            return Ok(Vec::new());
        }
        let marks = vec!["?"; run_ids.len()].join(", ");
        let sql = format!("SELECT run_id FROM run_cancels WHERE run_id IN ({marks})");
        let args: Vec<Arg> = run_ids.iter().map(|r| r.as_str().into()).collect();
        Ok(self.pool.fetch(&sql, &args, &[Ty::Str]).await?.into_iter().filter_map(|r| r[0].str()).collect())
    }
}
