//! Queries of `flowguard serve`: run pages with cursors, ingestion of external events, scheduler
//! state, recovery of runs a dead process left `running`, and readiness.

use super::{AttemptRecord, RUN_COLS, RUN_TYS, RunEnd, RunFilter, RunRecord, Store, attempt_stmt, run_from};
use crate::store::db::{Arg, Stmt, Ty};
use crate::vocab::RunStatus;
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

/// Where a page of runs ends: the (started_at, id) of its last run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub started_at: i64,
    pub id: String,
}

impl Cursor {
    pub fn encode(&self) -> String {
        format!("{}.{}", self.started_at, self.id)
    }
    pub fn decode(s: &str) -> Option<Cursor> {
        let (t, id) = s.split_once('.')?;
        Some(Cursor { started_at: t.parse().ok()?, id: id.to_owned() }).filter(|c| !c.id.is_empty())
    }
}

/// What one ingestion batch writes, in one transaction.
#[derive(Debug, Default)]
pub struct IngestWrite {
    /// (event id, run id).
    pub events: Vec<(String, String)>,
    /// Runs written whole (replacing the stored row).
    pub runs: Vec<RunRecord>,
    pub attempts: Vec<AttemptRecord>,
    /// Ids of `runs` that had no row before this write (as read under the ingestion lock): nothing
    /// of them is counted in the rollups yet, so their counts are made without reading. A run not
    /// named here is read back and its counts moved, which is right whatever was stored.
    pub fresh: HashSet<String>,
}

fn in_list(n: usize) -> String {
    vec!["?"; n].join(", ")
}

impl Store {
    /// Newest first, `limit` runs after `cursor`; the cursor of the next page when there is one.
    pub async fn runs_page(&self, f: &RunFilter, cursor: Option<&Cursor>, limit: i64) -> anyhow::Result<(Vec<RunRecord>, Option<Cursor>)> {
        let (mut sql, mut args) = super::select_runs(f);
        if let Some(c) = cursor {
            sql.push_str(" AND (started_at < ? OR (started_at = ? AND id < ?))");
            args.extend([c.started_at.into(), c.started_at.into(), c.id.as_str().into()]);
        }
        let limit = limit.clamp(1, 500);
        sql.push_str(&format!(" ORDER BY started_at DESC, id DESC LIMIT {}", limit + 1));
        let mut runs: Vec<RunRecord> = self.pool.fetch(&sql, &args, RUN_TYS).await?.into_iter().map(run_from).collect();
        let next = if runs.len() as i64 > limit {
            runs.truncate(limit as usize);
            runs.last().map(|r| Cursor { started_at: r.started_at, id: r.id.clone() })
        } else {
            None
        };
        Ok((runs, next))
    }

    /// The newest run of a flow, canary or not.
    pub async fn last_run(&self, flow: &str, canary: bool) -> anyhow::Result<Option<RunRecord>> {
        let sql = format!("SELECT {RUN_COLS} FROM runs WHERE flow = ? AND canary = ? ORDER BY started_at DESC, id DESC LIMIT 1");
        let rows = self.pool.fetch(&sql, &[flow.into(), (canary as i64).into()], RUN_TYS).await?;
        Ok(rows.into_iter().next().map(run_from))
    }

    /// Runs still `running` that started before `before_ms` (left by a process that died).
    pub async fn running_runs(&self, before_ms: i64) -> anyhow::Result<Vec<RunRecord>> {
        let sql = format!("SELECT {RUN_COLS} FROM runs WHERE status = 'running' AND started_at < ? AND trigger_kind <> 'external'");
        Ok(self.pool.fetch(&sql, &[before_ms.into()], RUN_TYS).await?.into_iter().map(run_from).collect())
    }

    /// Records a run as `interrupted` (kind `interrupted`).
    pub async fn mark_interrupted(&self, run: &RunRecord, now_ms: i64, message: &str) -> anyhow::Result<()> {
        let end = RunEnd {
            status: Some(RunStatus::Interrupted),
            ended_at: now_ms,
            duration_ms: now_ms - run.started_at,
            error_kind: Some("interrupted".into()),
            error_message: Some(message.to_owned()),
            severity: Some("medium".into()),
            ..Default::default()
        };
        self.finish_run(&run.id, &end, &[]).await
    }

    /// External runs still `running`, started before `cutoff_ms`, with no event received since.
    pub async fn silent_external_runs(&self, cutoff_ms: i64) -> anyhow::Result<Vec<RunRecord>> {
        let sql = format!(
            "SELECT {RUN_COLS} FROM runs WHERE status = 'running' AND trigger_kind = 'external' AND started_at < ? \
             AND (last_event_at IS NULL OR last_event_at < ?)"
        );
        Ok(self.pool.fetch(&sql, &[cutoff_ms.into(), cutoff_ms.into()], RUN_TYS).await?.into_iter().map(run_from).collect())
    }

    /// Records a silent external run `interrupted`, if it is still `running` (false: an event
    /// finished it, or another process did this first).
    pub async fn interrupt_external(&self, run: &RunRecord, now_ms: i64, message: &str) -> anyhow::Result<bool> {
        let end = RunEnd {
            status: Some(RunStatus::Interrupted),
            ended_at: now_ms,
            duration_ms: now_ms - run.started_at,
            failed_node: run.failed_node.clone(),
            error_kind: Some("interrupted".into()),
            error_message: Some(message.to_owned()),
            severity: Some("medium".into()),
        };
        let changed = self
            .pool
            .exec(
                "UPDATE runs SET status = 'interrupted', ended_at = ?, duration_ms = ?, error_kind = 'interrupted', error_message = ?, severity = 'medium' WHERE id = ? AND status = 'running'",
                &[now_ms.into(), end.duration_ms.into(), message.into(), run.id.as_str().into()],
            )
            .await?;
        if changed == 0 {
            return Ok(false);
        }
        let mut stmts = self.rollup_stmts(&run.id, &end, &[], None).await?;
        stmts.push(Store::run_end_stmt(&run.id, now_ms));
        self.write(stmts).await?;
        Ok(true)
    }

    /// The database answers and has every schema version this flowguard knows.
    pub async fn schema_current(&self) -> anyhow::Result<bool> {
        let applied: HashSet<i64> = self
            .pool
            .fetch("SELECT version FROM flowguard_migrations", &[], &[Ty::I64])
            .await?
            .into_iter()
            .filter_map(|r| r[0].i64())
            .collect();
        Ok(super::MIGRATIONS.iter().all(|m| applied.contains(&m.0)))
    }

    pub async fn last_fire(&self, job: &str) -> anyhow::Result<Option<i64>> {
        let rows = self.pool.fetch("SELECT last_fire FROM schedule_state WHERE job = ?", &[job.into()], &[Ty::I64]).await?;
        Ok(rows.into_iter().next().and_then(|r| r[0].i64()))
    }

    pub async fn set_last_fire(&self, job: &str, at_ms: i64) -> anyhow::Result<()> {
        self.write(vec![
            (Cow::Borrowed("DELETE FROM schedule_state WHERE job = ?"), vec![job.into()]),
            (Cow::Borrowed("INSERT INTO schedule_state (job, last_fire) VALUES (?, ?)"), vec![job.into(), at_ms.into()]),
        ])
        .await
    }

    /// Which of these event ids were applied before.
    /// Runs `f` holding the database-wide lock `name`, taken on the write path's connections so
    /// it never waits behind reads (see [`db::Pool::with_named_lock`]).
    pub async fn with_db_lock<T>(&self, name: &str, f: impl AsyncFnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
        self.write_pool.with_named_lock(name, f).await
    }

    pub async fn known_events(&self, ids: &[String]) -> anyhow::Result<HashSet<String>> {
        let mut out = HashSet::new();
        for chunk in ids.chunks(500) {
            let sql = format!("SELECT id FROM ingest_events WHERE id IN ({})", in_list(chunk.len()));
            let args: Vec<Arg> = chunk.iter().map(|s| s.as_str().into()).collect();
            out.extend(self.write_pool.lookup(&sql, &args, &[Ty::Str]).await?.into_iter().filter_map(|r| r[0].str()));
        }
        Ok(out)
    }

    pub async fn runs_by_ids(&self, ids: &[String]) -> anyhow::Result<Vec<RunRecord>> {
        let mut out = Vec::new();
        for chunk in ids.chunks(500) {
            let sql = format!("SELECT {RUN_COLS} FROM runs WHERE id IN ({})", in_list(chunk.len()));
            let args: Vec<Arg> = chunk.iter().map(|s| s.as_str().into()).collect();
            out.extend(self.write_pool.lookup(&sql, &args, RUN_TYS).await?.into_iter().map(run_from));
        }
        Ok(out)
    }

    /// Commits one ingestion batch in one transaction; returns once it is durable. Rows go in
    /// multi-row INSERTs (on MySQL/PostgreSQL joined by the writer, not one statement per event);
    /// the report rollups of the runs that have ended go in the same transaction, so a committed
    /// end is never missing from them.
    pub async fn apply_ingest(&self, w: &IngestWrite, now_ms: i64) -> anyhow::Result<()> {
        self.send_ingest(w, now_ms).await?.await
    }

    /// [`Store::apply_ingest`] up to handing the batch to the writer: what it returns resolves
    /// once the batch is committed (or refused), so the caller may go on meanwhile.
    pub async fn send_ingest(
        &self,
        w: &IngestWrite,
        now_ms: i64,
    ) -> anyhow::Result<impl Future<Output = anyhow::Result<()>> + Send + 'static> {
        let mut stmts: Vec<Stmt> = Vec::new();
        for chunk in w.events.chunks(500) {
            let sql = format!("INSERT INTO ingest_events (id, run_id, received_at) VALUES {}", vec!["(?, ?, ?)"; chunk.len()].join(", "));
            let args = chunk.iter().flat_map(|(id, run)| [id.as_str().into(), run.as_str().into(), now_ms.into()]).collect();
            stmts.push((Cow::Owned(sql), args));
        }
        for chunk in w.runs.chunks(500) {
            let ids: Vec<Arg> = chunk.iter().map(|r| r.id.as_str().into()).collect();
            stmts.push((Cow::Owned(format!("DELETE FROM runs WHERE id IN ({})", in_list(ids.len()))), ids));
            stmts.extend(chunk.iter().map(|r| super::external_run_stmt(r, now_ms)));
        }
        // A fresh run that ends in this write has all its attempts here, counted by its rollups
        // below: they are stored counted.
        let counted: HashSet<&str> =
            w.runs.iter().filter(|r| r.status.is_final() && w.fresh.contains(&r.id)).map(|r| r.id.as_str()).collect();
        // On MySQL/PostgreSQL the writer joins rows of one shape into one statement per table
        // (db::merge_writes).
        let backend = self.backend();
        stmts.extend(w.attempts.iter().map(|a| attempt_stmt(a, backend, counted.contains(a.run_id.as_str()))));
        // Exporters follow run ends; an external run's end arrives with its last event.
        stmts.extend(w.runs.iter().filter(|r| r.status.is_final()).map(|r| Store::run_end_stmt(&r.id, now_ms)));
        // Report rollups of the runs that have ended, after their attempts (which they mark counted
        // when not stored counted).
        let mut by_run: HashMap<&str, Vec<&AttemptRecord>> = HashMap::new();
        for a in &w.attempts {
            by_run.entry(a.run_id.as_str()).or_default().push(a);
        }
        for r in w.runs.iter().filter(|r| r.status.is_final()) {
            let batch = by_run.get(r.id.as_str()).map(Vec::as_slice).unwrap_or(&[]);
            stmts.extend(self.ingest_rollup_stmts(r, w.fresh.contains(&r.id), batch).await?);
        }
        let sent = self.send_guarded(stmts, None)?;
        Ok(async move { super::answered(sent.await) })
    }
}
