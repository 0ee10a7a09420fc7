//! What the exporters read and keep: per sink, a cursor into the run log (`node_attempts.id` and
//! `run_ends.seq`, both numbered in commit order by the database), the lease of the one process
//! exporting that sink (owner, expiry, fencing epoch), and its sent / failed / rejected counts.
//! `run_ends` gets a row in the same transaction as each run's end (see the callers of
//! [`Store::run_end_stmt`]), so run outcomes are followed the way attempts are.

use super::{ATTEMPT_COLS, ATTEMPT_TYS, AttemptRecord, RUN_COLS, RUN_TYS, RunRecord, Store, Ty, attempt_from, db, run_from};
use std::borrow::Cow;

/// One sink's cursor and lease, as stored.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ExportCursor {
    pub sink: String,
    /// The last `node_attempts.id` delivered (or skipped as a hole in the numbering).
    pub attempt_id: i64,
    /// The last `run_ends.seq` delivered.
    pub run_end_seq: i64,
    pub owner: Option<String>,
    pub lease_until: Option<i64>,
    pub epoch: i64,
    pub sent: i64,
    pub failed: i64,
    /// Records the target refused for good (e.g. a mapping conflict): counted, not retried.
    pub rejected: i64,
    pub last_error: Option<String>,
    /// Since when every try has failed (None while delivering).
    pub failing_since: Option<i64>,
    pub updated_at: i64,
    /// The delivery under way or failed, for sinks that must send it again exactly (see
    /// [`Store::export_pin`]): the last node attempt id and run end seq it covers.
    pub inflight: Option<(i64, i64)>,
}

const CURSOR_COLS: &str = "sink, attempt_id, run_end_seq, owner, lease_until, epoch, sent, failed, rejected, last_error, failing_since, updated_at, inflight_attempt_to, inflight_run_to";
const CURSOR_TYS: &[Ty] =
    &[Ty::Str, Ty::I64, Ty::I64, Ty::Str, Ty::I64, Ty::I64, Ty::I64, Ty::I64, Ty::I64, Ty::Str, Ty::I64, Ty::I64, Ty::I64, Ty::I64];

fn cursor_from(r: Vec<db::Val>) -> ExportCursor {
    ExportCursor {
        sink: r[0].str().unwrap_or_default(),
        attempt_id: r[1].i64().unwrap_or(0),
        run_end_seq: r[2].i64().unwrap_or(0),
        owner: r[3].str(),
        lease_until: r[4].i64(),
        epoch: r[5].i64().unwrap_or(0),
        sent: r[6].i64().unwrap_or(0),
        failed: r[7].i64().unwrap_or(0),
        rejected: r[8].i64().unwrap_or(0),
        last_error: r[9].str(),
        failing_since: r[10].i64(),
        updated_at: r[11].i64().unwrap_or(0),
        inflight: r[12].i64().zip(r[13].i64()),
    }
}

/// How one delivery went, to record with the cursor.
#[derive(Debug, Clone, Default)]
pub struct ExportProgress {
    pub attempt_id: i64,
    pub run_end_seq: i64,
    pub sent: i64,
    pub rejected: i64,
}

impl Store {
    /// The row that numbers a run's end; written in the transaction that ends the run.
    pub(crate) fn run_end_stmt(run_id: &str, at: i64) -> db::Stmt {
        (Cow::Borrowed("INSERT INTO run_ends (run_id, at) VALUES (?, ?)"), vec![run_id.into(), at.into()])
    }

    /// Takes the lease of `sink` for `owner` when it is free, expired or already this owner's;
    /// the epoch grows with each new holder. Returns the cursor as held, or None while another
    /// process holds it. A holder with more than half of its lease left is answered from one read
    /// (no write: the exporter steps every few hundred milliseconds beside the runs' own writes);
    /// with less left, the lease is renewed, fenced by the epoch.
    pub async fn export_claim(&self, sink: &str, owner: &str, now_ms: i64, lease_ms: i64) -> anyhow::Result<Option<ExportCursor>> {
        let c = match self.export_cursor(sink).await? {
            Some(c) => c,
            None => {
                let insert = format!("INSERT INTO exporter_cursors (sink, updated_at) VALUES (?, ?){}", self.on_conflict_skip("sink"));
                self.pool.exec(&insert, &[sink.into(), now_ms.into()]).await?;
                let Some(c) = self.export_cursor(sink).await? else { return Ok(None) };
                c
            }
        };
        let until = c.lease_until.unwrap_or(0);
        let mine = c.owner.as_deref() == Some(owner);
        if mine && until >= now_ms + lease_ms / 2 {
            return Ok(Some(c));
        }
        let (sql, args): (&str, Vec<db::Arg>) = if mine && until >= now_ms {
            (
                "UPDATE exporter_cursors SET lease_until = ? WHERE sink = ? AND epoch = ? AND owner = ?",
                vec![(now_ms + lease_ms).into(), sink.into(), c.epoch.into(), owner.into()],
            )
        } else if c.lease_until.is_none_or(|u| u < now_ms) {
            (
                "UPDATE exporter_cursors SET owner = ?, lease_until = ?, epoch = epoch + 1 WHERE sink = ? AND epoch = ? AND (lease_until IS NULL OR lease_until < ?)",
                vec![owner.into(), (now_ms + lease_ms).into(), sink.into(), c.epoch.into(), now_ms.into()],
            )
        } else {
            return Ok(None);
        };
        if self.pool.exec(sql, &args).await? != 1 {
            return Ok(None);
        }
        let renewed = mine && until >= now_ms;
        Ok(Some(ExportCursor {
            owner: Some(owner.to_owned()),
            lease_until: Some(now_ms + lease_ms),
            epoch: if renewed { c.epoch } else { c.epoch + 1 },
            ..c
        }))
    }

    /// Records the extent of the delivery about to be made (the last node attempt id and run end
    /// seq it covers), fenced by `epoch`, renewing the lease: false when the sink was taken over.
    /// Whoever holds the sink next sends exactly this extent first; [`Store::export_advance`]
    /// clears it.
    pub async fn export_pin(
        &self,
        sink: &str,
        epoch: i64,
        attempt_to: i64,
        run_to: i64,
        now_ms: i64,
        lease_ms: i64,
    ) -> anyhow::Result<bool> {
        let sql = "UPDATE exporter_cursors SET inflight_attempt_to = ?, inflight_run_to = ?, lease_until = ?, updated_at = ? WHERE sink = ? AND epoch = ?";
        let args = [attempt_to.into(), run_to.into(), (now_ms + lease_ms).into(), now_ms.into(), sink.into(), epoch.into()];
        Ok(self.pool.exec(sql, &args).await? == 1)
    }

    /// Moves the cursor and renews the lease, fenced by `epoch`: false when another process took
    /// the sink over (nothing is written then). A delivery clears the failing state and the
    /// recorded extent.
    pub async fn export_advance(&self, sink: &str, epoch: i64, p: &ExportProgress, now_ms: i64, lease_ms: i64) -> anyhow::Result<bool> {
        let delivered = p.sent > 0 || p.rejected > 0;
        let sql = if delivered {
            "UPDATE exporter_cursors SET attempt_id = ?, run_end_seq = ?, sent = sent + ?, rejected = rejected + ?, lease_until = ?, updated_at = ?, failing_since = NULL, last_error = NULL, inflight_attempt_to = NULL, inflight_run_to = NULL WHERE sink = ? AND epoch = ?"
        } else {
            "UPDATE exporter_cursors SET attempt_id = ?, run_end_seq = ?, sent = sent + ?, rejected = rejected + ?, lease_until = ?, updated_at = ?, inflight_attempt_to = NULL, inflight_run_to = NULL WHERE sink = ? AND epoch = ?"
        };
        let args = [
            p.attempt_id.into(),
            p.run_end_seq.into(),
            p.sent.into(),
            p.rejected.into(),
            (now_ms + lease_ms).into(),
            now_ms.into(),
            sink.into(),
            epoch.into(),
        ];
        Ok(self.pool.exec(sql, &args).await? == 1)
    }

    /// Records a failed delivery of `records` records (the cursor stays), renewing the lease;
    /// false when the sink was taken over.
    pub async fn export_failed(
        &self,
        sink: &str,
        epoch: i64,
        records: i64,
        error: &str,
        now_ms: i64,
        lease_ms: i64,
    ) -> anyhow::Result<bool> {
        let sql = "UPDATE exporter_cursors SET failed = failed + ?, last_error = ?, failing_since = COALESCE(failing_since, ?), lease_until = ?, updated_at = ? WHERE sink = ? AND epoch = ?";
        let args = [records.into(), error.into(), now_ms.into(), (now_ms + lease_ms).into(), now_ms.into(), sink.into(), epoch.into()];
        Ok(self.pool.exec(sql, &args).await? == 1)
    }

    /// Gives the lease back (a stopping process), so another takes the sink at once.
    pub async fn export_release(&self, sink: &str, epoch: i64) -> anyhow::Result<()> {
        self.pool
            .exec("UPDATE exporter_cursors SET owner = NULL, lease_until = NULL WHERE sink = ? AND epoch = ?", &[sink.into(), epoch.into()])
            .await?;
        Ok(())
    }

    pub async fn export_cursor(&self, sink: &str) -> anyhow::Result<Option<ExportCursor>> {
        let sql = format!("SELECT {CURSOR_COLS} FROM exporter_cursors WHERE sink = ?");
        Ok(self.pool.fetch(&sql, &[sink.into()], CURSOR_TYS).await?.into_iter().next().map(cursor_from))
    }

    /// Every sink's cursor, by name.
    pub async fn export_cursors(&self) -> anyhow::Result<Vec<ExportCursor>> {
        let sql = format!("SELECT {CURSOR_COLS} FROM exporter_cursors ORDER BY sink");
        Ok(self.pool.fetch(&sql, &[], CURSOR_TYS).await?.into_iter().map(cursor_from).collect())
    }

    /// Node attempts recorded after `after_id`, in id order, with their ids (payloads left out).
    pub async fn attempts_after(&self, after_id: i64, limit: i64) -> anyhow::Result<Vec<(i64, AttemptRecord)>> {
        let cols = ATTEMPT_COLS.replace("input, output", "NULL AS input, NULL AS output");
        let sql = format!("SELECT id, {cols} FROM node_attempts WHERE id > ? ORDER BY id LIMIT {}", limit.max(1));
        let mut tys = vec![Ty::I64];
        tys.extend_from_slice(ATTEMPT_TYS);
        let rows = self.pool.fetch(&sql, &[after_id.into()], &tys).await?;
        Ok(rows
            .into_iter()
            .map(|mut r| {
                let id = r.remove(0).i64().unwrap_or(0);
                (id, attempt_from(r))
            })
            .collect())
    }

    /// Run ends recorded after `after_seq`, in order, each with the run as it is now (None: the
    /// run was pruned since).
    pub async fn run_ends_after(&self, after_seq: i64, limit: i64) -> anyhow::Result<Vec<(i64, Option<RunRecord>)>> {
        let cols: Vec<String> = RUN_COLS.split(", ").map(|c| format!("r.{c}")).collect();
        let sql = format!(
            "SELECT e.seq, {} FROM run_ends e LEFT JOIN runs r ON r.id = e.run_id WHERE e.seq > ? ORDER BY e.seq LIMIT {}",
            cols.join(", "),
            limit.max(1)
        );
        let mut tys = vec![Ty::I64];
        tys.extend_from_slice(RUN_TYS);
        let rows = self.pool.fetch(&sql, &[after_seq.into()], &tys).await?;
        Ok(rows
            .into_iter()
            .map(|mut r| {
                let seq = r.remove(0).i64().unwrap_or(0);
                let run = r[0].str().is_some().then(|| run_from(r));
                (seq, run)
            })
            .collect())
    }

    /// Records of the log after a cursor: how far behind a sink is.
    pub async fn export_lag(&self, attempt_id: i64, run_end_seq: i64) -> anyhow::Result<i64> {
        let a = self.pool.fetch("SELECT COUNT(*) FROM node_attempts WHERE id > ?", &[attempt_id.into()], &[Ty::I64]).await?;
        let r = self.pool.fetch("SELECT COUNT(*) FROM run_ends WHERE seq > ?", &[run_end_seq.into()], &[Ty::I64]).await?;
        let n = |rows: Vec<Vec<db::Val>>| rows.first().and_then(|r| r[0].i64()).unwrap_or(0);
        Ok(n(a) + n(r))
    }
}
