//! Model breakers, shared by every process on the database. One row per model holds its state
//! (`closed`, `open`, `half_open`), since when, and a generation that grows with each change;
//! every change is one conditional UPDATE on the generation the deciding process read, so when
//! several processes see the same failures exactly one of them opens the breaker (and raises the
//! alert), exactly one claims the probe, exactly one closes it. The sliding window of calls is
//! kept in buckets (`model_breaker_counts`) that every process adds to; every change is written to
//! `model_breaker_events` with its figures.

use super::db::{self, Arg, Backend, Ty, Val};
use super::{Store, is_conflict};
use serde::Serialize;
use std::borrow::Cow;

/// `closed`: calls go through; `open`: calls skip the model; `half_open`: one probe call is trying it.
pub const CLOSED: &str = "closed";
pub const OPEN: &str = "open";
pub const HALF_OPEN: &str = "half_open";

/// A model's breaker as stored.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BreakerRow {
    pub model: String,
    pub state: String,
    /// When the breaker entered its state (epoch ms).
    pub since: i64,
    pub generation: i64,
    /// While `half_open`: until when the probe's claim holds.
    pub probe_until: Option<i64>,
    /// The window's figures when the state last changed.
    pub calls: i64,
    pub failures: i64,
    /// The process that made the last change.
    pub updated_by: Option<String>,
}

impl BreakerRow {
    /// A model with no row yet: closed since ever.
    pub fn closed(model: &str) -> BreakerRow {
        BreakerRow {
            model: model.to_owned(),
            state: CLOSED.into(),
            since: 0,
            generation: 0,
            probe_until: None,
            calls: 0,
            failures: 0,
            updated_by: None,
        }
    }
}

/// One open, probe or close, with its figures.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BreakerEvent {
    pub id: String,
    pub model: String,
    /// `opened`, `probe`, `closed`, `reopened` (a failed probe).
    pub event: String,
    pub at: i64,
    pub calls: i64,
    pub failures: i64,
    pub run_id: Option<String>,
    pub owner: String,
    pub note: Option<String>,
}

/// A change to make: from the state and generation read, to `to`.
#[derive(Debug, Clone)]
pub struct Change<'a> {
    pub model: &'a str,
    pub from_state: &'a str,
    pub from_generation: i64,
    pub to: &'a str,
    pub event: &'a str,
    pub now: i64,
    pub probe_until: Option<i64>,
    pub calls: i64,
    pub failures: i64,
    pub run_id: Option<&'a str>,
    pub note: Option<String>,
    /// A probe that is still held (not past `probe_until`) may not be taken by another.
    pub only_if_probe_expired: bool,
    /// Closing starts a fresh window.
    pub reset_window: bool,
}

const COLS: &str = "model, state, since_ms, generation, probe_until, calls, failures, updated_by";
const TYS: &[Ty] = &[Ty::Str, Ty::Str, Ty::I64, Ty::I64, Ty::I64, Ty::I64, Ty::I64, Ty::Str];
const EVENT_COLS: &str = "id, model, event, at_ms, calls, failures, run_id, owner, note";
const EVENT_TYS: &[Ty] = &[Ty::Str, Ty::Str, Ty::Str, Ty::I64, Ty::I64, Ty::I64, Ty::Str, Ty::Str, Ty::Str];

fn row_from(r: Vec<Val>) -> BreakerRow {
    BreakerRow {
        model: r[0].str().unwrap_or_default(),
        state: r[1].str().unwrap_or_else(|| CLOSED.into()),
        since: r[2].i64().unwrap_or(0),
        generation: r[3].i64().unwrap_or(0),
        probe_until: r[4].i64(),
        calls: r[5].i64().unwrap_or(0),
        failures: r[6].i64().unwrap_or(0),
        updated_by: r[7].str(),
    }
}

fn event_from(r: Vec<Val>) -> BreakerEvent {
    BreakerEvent {
        id: r[0].str().unwrap_or_default(),
        model: r[1].str().unwrap_or_default(),
        event: r[2].str().unwrap_or_default(),
        at: r[3].i64().unwrap_or(0),
        calls: r[4].i64().unwrap_or(0),
        failures: r[5].i64().unwrap_or(0),
        run_id: r[6].str(),
        owner: r[7].str().unwrap_or_default(),
        note: r[8].str(),
    }
}

impl Store {
    /// A model's breaker (closed when it never changed).
    pub async fn breaker(&self, model: &str) -> anyhow::Result<BreakerRow> {
        let sql = format!("SELECT {COLS} FROM model_breakers WHERE model = ?");
        let rows = self.pool.fetch(&sql, &[model.into()], TYS).await?;
        Ok(rows.into_iter().next().map(row_from).unwrap_or_else(|| BreakerRow::closed(model)))
    }

    /// Every breaker that ever changed, by model name.
    pub async fn breakers(&self) -> anyhow::Result<Vec<BreakerRow>> {
        let sql = format!("SELECT {COLS} FROM model_breakers ORDER BY model");
        Ok(self.pool.fetch(&sql, &[], TYS).await?.into_iter().map(row_from).collect())
    }

    /// Adds one call (failed or not) to the model's window, in the bucket that starts at `bucket_ms`.
    pub async fn breaker_count(&self, model: &str, bucket_ms: i64, failed: bool) -> anyhow::Result<()> {
        let set = match self.backend() {
            Backend::MySql => "ON DUPLICATE KEY UPDATE calls = calls + VALUES(calls), failures = failures + VALUES(failures)",
            Backend::Postgres => {
                "ON CONFLICT (model, bucket_ms) DO UPDATE SET calls = model_breaker_counts.calls + EXCLUDED.calls, failures = model_breaker_counts.failures + EXCLUDED.failures"
            }
            Backend::Sqlite => {
                "ON CONFLICT (model, bucket_ms) DO UPDATE SET calls = calls + excluded.calls, failures = failures + excluded.failures"
            }
        };
        let sql = format!("INSERT INTO model_breaker_counts (model, bucket_ms, calls, failures) VALUES (?, ?, 1, ?) {set}");
        self.pool.exec(&sql, &[model.into(), bucket_ms.into(), (failed as i64).into()]).await?;
        Ok(())
    }

    /// Calls and failures of the buckets that start at or after `since_bucket_ms`.
    pub async fn breaker_window(&self, model: &str, since_bucket_ms: i64) -> anyhow::Result<(i64, i64)> {
        let sum = |c: &str| match self.backend() {
            Backend::Sqlite => format!("COALESCE(SUM({c}), 0)"),
            Backend::MySql => format!("CAST(COALESCE(SUM({c}), 0) AS SIGNED)"),
            Backend::Postgres => format!("CAST(COALESCE(SUM({c}), 0) AS BIGINT)"),
        };
        let sql = format!("SELECT {}, {} FROM model_breaker_counts WHERE model = ? AND bucket_ms >= ?", sum("calls"), sum("failures"));
        let rows = self.pool.fetch(&sql, &[model.into(), since_bucket_ms.into()], &[Ty::I64, Ty::I64]).await?;
        let r = rows.into_iter().next().unwrap_or_default();
        Ok((r.first().and_then(Val::i64).unwrap_or(0), r.get(1).and_then(Val::i64).unwrap_or(0)))
    }

    /// Makes a change if the breaker is still in the state and generation the caller read;
    /// records it (with its figures) in the same transaction. Returns the new row, or None when
    /// another process changed the breaker first.
    pub async fn breaker_change(&self, c: &Change<'_>) -> anyhow::Result<Option<BreakerRow>> {
        let owner = super::leases::owner();
        if c.from_generation == 0 {
            let sql =
                format!("INSERT INTO model_breakers ({COLS}) VALUES (?, ?, 0, 0, NULL, 0, 0, NULL){}", self.on_conflict_skip("model"));
            self.pool.exec(&sql, &[c.model.into(), CLOSED.into()]).await?;
        }
        let mut tries = 0;
        loop {
            tries += 1;
            match self.try_change(c, owner).await {
                Err(e) if tries < 20 && e.downcast_ref::<sqlx::Error>().is_some_and(is_conflict) => {
                    tokio::time::sleep(std::time::Duration::from_millis(fastrand::u64(1..=5 * tries))).await;
                }
                r => return r,
            }
        }
    }

    async fn try_change(&self, c: &Change<'_>, owner: &str) -> anyhow::Result<Option<BreakerRow>> {
        let mut tx = self.pool.begin().await?;
        let mut sql = String::from(
            "UPDATE model_breakers SET state = ?, since_ms = ?, generation = generation + 1, probe_until = ?, calls = ?, failures = ?, updated_by = ? \
             WHERE model = ? AND state = ? AND generation = ?",
        );
        let mut args: Vec<Arg> = vec![
            c.to.into(),
            c.now.into(),
            c.probe_until.into(),
            c.calls.into(),
            c.failures.into(),
            owner.into(),
            c.model.into(),
            c.from_state.into(),
            c.from_generation.into(),
        ];
        if c.only_if_probe_expired {
            sql.push_str(" AND (probe_until IS NULL OR probe_until < ?)");
            args.push(c.now.into());
        }
        if tx.exec(&sql, &args).await? != 1 {
            return Ok(None);
        }
        let event: db::Stmt = (
            Cow::Owned(format!("INSERT INTO model_breaker_events ({EVENT_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)")),
            vec![
                uuid::Uuid::now_v7().to_string().into(),
                c.model.into(),
                c.event.into(),
                c.now.into(),
                c.calls.into(),
                c.failures.into(),
                c.run_id.map(str::to_owned).into(),
                owner.into(),
                c.note.clone().into(),
            ],
        );
        tx.exec(&event.0, &event.1).await?;
        if c.reset_window {
            tx.exec("DELETE FROM model_breaker_counts WHERE model = ?", &[c.model.into()]).await?;
        }
        let sql = format!("SELECT {COLS} FROM model_breakers WHERE model = ?");
        let row = tx.fetch(&sql, &[c.model.into()], TYS).await?.into_iter().next().map(row_from);
        tx.commit().await?;
        Ok(row)
    }

    /// Forgets buckets older than `before_ms` (they have left every window).
    pub async fn breaker_prune(&self, model: &str, before_ms: i64) -> anyhow::Result<u64> {
        Ok(self.pool.exec("DELETE FROM model_breaker_counts WHERE model = ? AND bucket_ms < ?", &[model.into(), before_ms.into()]).await?)
    }

    /// The newest changes first, of one model or of all.
    pub async fn breaker_events(&self, model: Option<&str>, limit: i64) -> anyhow::Result<Vec<BreakerEvent>> {
        let (w, args): (&str, Vec<Arg>) = match model {
            Some(m) => (" WHERE model = ?", vec![m.into()]),
            None => ("", Vec::new()),
        };
        let sql = format!("SELECT {EVENT_COLS} FROM model_breaker_events{w} ORDER BY at_ms DESC, id DESC LIMIT {}", limit.max(0));
        Ok(self.pool.fetch(&sql, &args, EVENT_TYS).await?.into_iter().map(event_from).collect())
    }
}
