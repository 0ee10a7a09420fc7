//! The run log: runs and node attempts in SQLite (embedded default), MySQL/MariaDB or PostgreSQL,
//! picked by the URL. Callers see records and queries; no SQL leaves this module.
//!
//! Writes go through one writer task that commits whatever is waiting in one transaction (group
//! commit) and answers each caller only after the commit: a record acknowledged is durable. When
//! the database goes away the writer retries with backoff for `write_patience`, then fails the
//! writes, and the engine fails the run with kind `internal`.

mod db;
mod server;

pub use db::{Arg, Backend, Pool, Stmt, Ty, Val};
pub use server::{Cursor, IngestWrite};

use crate::vocab::{AttemptStatus, RunStatus};
use anyhow::{Context, anyhow};
use serde::Serialize;
use std::borrow::Cow;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Schema versions: (version, SQLite, MySQL/MariaDB, PostgreSQL). Each area of flowguard owns its
/// versions; a version is applied when the database lacks it, so they need not arrive in order.
macro_rules! migration {
    ($v:literal, $name:literal) => {
        (
            $v,
            include_str!(concat!("migrations/", $name, "_sqlite.sql")),
            include_str!(concat!("migrations/", $name, "_mysql.sql")),
            include_str!(concat!("migrations/", $name, "_postgres.sql")),
        )
    };
}

const MIGRATIONS: &[(i64, &str, &str, &str)] = &[migration!(1, "v1"), migration!(4, "v4")];

/// One run, as stored.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RunRecord {
    pub id: String,
    pub flow: String,
    pub flow_hash: String,
    /// `cli`, `demo`, `cron`, `api`, `canary`, `external`.
    pub trigger: String,
    pub status: RunStatus,
    pub canary: bool,
    pub inputs: Option<String>,
    pub started_at: i64,
    pub ended_at: Option<i64>,
    pub duration_ms: Option<i64>,
    pub failed_node: Option<String>,
    pub error_kind: Option<String>,
    pub error_message: Option<String>,
    pub severity: Option<String>,
}

/// One attempt of one node, as stored.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AttemptRecord {
    pub run_id: String,
    pub flow: String,
    pub node_id: String,
    pub kind: String,
    /// Order of the attempt within its run.
    pub seq: i64,
    /// 1 for the first try of a node (per model and per item).
    pub attempt: i64,
    /// The item index inside a `foreach`.
    pub iteration: Option<i64>,
    pub status: AttemptStatus,
    pub started_at: i64,
    pub ended_at: i64,
    pub duration_ms: i64,
    pub input_bytes: i64,
    pub output_bytes: i64,
    /// Redacted and truncated to the configured size.
    pub input: Option<String>,
    pub output: Option<String>,
    /// Another attempt followed this one.
    pub retried: bool,
    /// What the engine did next: `retry`, `next_model`, `continue`, `fail`.
    pub action: Option<String>,
    pub error_kind: Option<String>,
    pub error_message: Option<String>,
    pub model: Option<String>,
    pub tokens_in: Option<i64>,
    pub tokens_out: Option<i64>,
    pub http_status: Option<i64>,
}

/// How a run ended.
#[derive(Debug, Clone, Default)]
pub struct RunEnd {
    pub status: Option<RunStatus>,
    pub ended_at: i64,
    pub duration_ms: i64,
    pub failed_node: Option<String>,
    pub error_kind: Option<String>,
    pub error_message: Option<String>,
    pub severity: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub flow: Option<String>,
    pub status: Option<RunStatus>,
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    pub limit: Option<i64>,
    pub include_canary: bool,
}

enum Write {
    Batch(Vec<db::Stmt>, oneshot::Sender<Result<(), String>>),
}

#[derive(Clone)]
pub struct Store {
    pub(crate) pool: Pool,
    writes: mpsc::UnboundedSender<Write>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Store({})", self.pool.backend().name())
    }
}

/// Removes the password from a database URL, for messages.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_owned(),
    }
}

const RUN_COLS: &str = "id, flow, flow_hash, trigger_kind, status, canary, inputs, started_at, ended_at, duration_ms, failed_node, error_kind, error_message, severity";
const RUN_TYS: &[Ty] =
    &[Ty::Str, Ty::Str, Ty::Str, Ty::Str, Ty::Str, Ty::I64, Ty::Str, Ty::I64, Ty::I64, Ty::I64, Ty::Str, Ty::Str, Ty::Str, Ty::Str];
const ATTEMPT_COLS: &str = "run_id, flow, node_id, kind, seq, attempt, iteration, status, started_at, ended_at, duration_ms, input_bytes, output_bytes, input, output, retried, action, error_kind, error_message, model, tokens_in, tokens_out, http_status";
const ATTEMPT_TYS: &[Ty] = &[
    Ty::Str,
    Ty::Str,
    Ty::Str,
    Ty::Str,
    Ty::I64,
    Ty::I64,
    Ty::I64,
    Ty::Str,
    Ty::I64,
    Ty::I64,
    Ty::I64,
    Ty::I64,
    Ty::I64,
    Ty::Str,
    Ty::Str,
    Ty::I64,
    Ty::Str,
    Ty::Str,
    Ty::Str,
    Ty::Str,
    Ty::I64,
    Ty::I64,
    Ty::I64,
];

impl Store {
    /// Connects, applies migrations, and starts the writer. `patience`: how long writes are
    /// retried while the database is unreachable.
    pub async fn open(url: &str, max_connections: u32, patience: Duration) -> anyhow::Result<Store> {
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("mysql:") || url.starts_with("mariadb:") {
            Backend::MySql
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(anyhow!("unsupported storage URL `{}`: expected sqlite://, mysql:// or postgres://", redact_url(url)));
        };
        let pool = Pool::connect(url, max_connections)
            .await
            .map_err(|e| anyhow!("cannot open the {} database at {}: {}", backend.name(), describe_target(url), e))?;
        migrate(&pool).await.with_context(|| format!("migrating the {} database at {}", backend.name(), describe_target(url)))?;
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(writer(pool.clone(), rx, patience));
        Ok(Store { pool, writes: tx })
    }

    pub fn backend(&self) -> Backend {
        self.pool.backend()
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Commits statements together; returns once they are durable.
    pub(crate) async fn write(&self, stmts: Vec<db::Stmt>) -> anyhow::Result<()> {
        let (tx, rx) = oneshot::channel();
        self.writes.send(Write::Batch(stmts, tx)).map_err(|_| anyhow!("the store's writer has stopped"))?;
        rx.await.map_err(|_| anyhow!("the store's writer has stopped"))?.map_err(|e| anyhow!(e))
    }

    pub async fn insert_run(&self, r: &RunRecord) -> anyhow::Result<()> {
        self.write(vec![run_stmt(r)]).await
    }

    pub async fn insert_attempt(&self, a: &AttemptRecord) -> anyhow::Result<()> {
        self.write(vec![attempt_stmt(a)]).await
    }

    /// Records a run's end (and any last attempts) in one transaction.
    pub async fn finish_run(&self, run_id: &str, end: &RunEnd, attempts: &[AttemptRecord]) -> anyhow::Result<()> {
        let mut stmts: Vec<db::Stmt> = attempts.iter().map(attempt_stmt).collect();
        stmts.push((
            Cow::Borrowed("UPDATE runs SET status = ?, ended_at = ?, duration_ms = ?, failed_node = ?, error_kind = ?, error_message = ?, severity = ? WHERE id = ?"),
            vec![
                end.status.map(|s| s.as_str()).into(),
                end.ended_at.into(),
                end.duration_ms.into(),
                end.failed_node.clone().into(),
                end.error_kind.clone().into(),
                end.error_message.clone().into(),
                end.severity.clone().into(),
                run_id.into(),
            ],
        ));
        self.write(stmts).await
    }

    pub async fn get_run(&self, id: &str) -> anyhow::Result<Option<RunRecord>> {
        let sql = format!("SELECT {RUN_COLS} FROM runs WHERE id = ?");
        let rows = self.pool.fetch(&sql, &[id.into()], RUN_TYS).await?;
        Ok(rows.into_iter().next().map(run_from))
    }

    /// Runs whose id starts with `prefix` (for short ids on the command line).
    pub async fn find_runs(&self, prefix: &str) -> anyhow::Result<Vec<RunRecord>> {
        let sql = format!("SELECT {RUN_COLS} FROM runs WHERE id LIKE ? ORDER BY started_at DESC LIMIT 5");
        let rows = self.pool.fetch(&sql, &[format!("{}%", prefix.replace(['%', '_'], "")).into()], RUN_TYS).await?;
        Ok(rows.into_iter().map(run_from).collect())
    }

    /// Newest first.
    pub async fn list_runs(&self, f: &RunFilter) -> anyhow::Result<Vec<RunRecord>> {
        let mut sql = format!("SELECT {RUN_COLS} FROM runs WHERE 1 = 1");
        let mut args: Vec<Arg> = Vec::new();
        if let Some(flow) = &f.flow {
            sql.push_str(" AND flow = ?");
            args.push(flow.as_str().into());
        }
        if let Some(s) = f.status {
            sql.push_str(" AND status = ?");
            args.push(s.as_str().into());
        }
        if let Some(t) = f.since_ms {
            sql.push_str(" AND started_at >= ?");
            args.push(t.into());
        }
        if let Some(t) = f.until_ms {
            sql.push_str(" AND started_at < ?");
            args.push(t.into());
        }
        if !f.include_canary {
            sql.push_str(" AND canary = 0");
        }
        sql.push_str(" ORDER BY started_at DESC, id DESC");
        if let Some(l) = f.limit {
            sql.push_str(&format!(" LIMIT {}", l.max(0)));
        }
        let rows = self.pool.fetch(&sql, &args, RUN_TYS).await?;
        Ok(rows.into_iter().map(run_from).collect())
    }

    pub async fn attempts(&self, run_id: &str) -> anyhow::Result<Vec<AttemptRecord>> {
        let sql = format!("SELECT {ATTEMPT_COLS} FROM node_attempts WHERE run_id = ? ORDER BY seq");
        let rows = self.pool.fetch(&sql, &[run_id.into()], ATTEMPT_TYS).await?;
        Ok(rows.into_iter().map(attempt_from).collect())
    }

    /// Attempts of runs that started in a window (for statistics), without payloads.
    pub async fn attempts_between(&self, flow: Option<&str>, since_ms: i64, until_ms: i64) -> anyhow::Result<Vec<AttemptRecord>> {
        let cols = ATTEMPT_COLS.replace("input, output", "NULL AS input, NULL AS output");
        let mut sql = format!(
            "SELECT {cols} FROM node_attempts WHERE run_id IN (SELECT id FROM runs WHERE started_at >= ? AND started_at < ? AND canary = 0"
        );
        let mut args: Vec<Arg> = vec![since_ms.into(), until_ms.into()];
        if let Some(flow) = flow {
            sql.push_str(" AND flow = ?");
            args.push(flow.into());
        }
        sql.push_str(") ORDER BY run_id, seq");
        let rows = self.pool.fetch(&sql, &args, ATTEMPT_TYS).await?;
        Ok(rows.into_iter().map(attempt_from).collect())
    }

    /// Marks runs left `running` by a dead process as `interrupted`; returns their ids.
    pub async fn interrupt_stale(&self, older_than_ms: i64, now_ms: i64, flow: Option<&str>) -> anyhow::Result<Vec<String>> {
        let mut sql = format!("SELECT {RUN_COLS} FROM runs WHERE status = 'running' AND started_at < ?");
        let mut args: Vec<Arg> = vec![older_than_ms.into()];
        if let Some(f) = flow {
            sql.push_str(" AND flow = ?");
            args.push(f.into());
        }
        let runs: Vec<RunRecord> = self.pool.fetch(&sql, &args, RUN_TYS).await?.into_iter().map(run_from).collect();
        for r in &runs {
            let end = RunEnd {
                status: Some(RunStatus::Interrupted),
                ended_at: now_ms,
                duration_ms: now_ms - r.started_at,
                error_kind: Some("interrupted".into()),
                error_message: Some("the process running this flow stopped before the run finished".into()),
                severity: Some("medium".into()),
                ..Default::default()
            };
            self.finish_run(&r.id, &end, &[]).await?;
        }
        Ok(runs.into_iter().map(|r| r.id).collect())
    }

    pub async fn close(&self) {
        self.pool.close().await
    }
}

fn run_stmt(r: &RunRecord) -> db::Stmt {
    let sql = format!("INSERT INTO runs ({RUN_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
    let args = vec![
        r.id.as_str().into(),
        r.flow.as_str().into(),
        r.flow_hash.as_str().into(),
        r.trigger.as_str().into(),
        r.status.as_str().into(),
        (r.canary as i64).into(),
        r.inputs.clone().into(),
        r.started_at.into(),
        r.ended_at.into(),
        r.duration_ms.into(),
        r.failed_node.clone().into(),
        r.error_kind.clone().into(),
        r.error_message.clone().into(),
        r.severity.clone().into(),
    ];
    (Cow::Owned(sql), args)
}

fn attempt_stmt(a: &AttemptRecord) -> db::Stmt {
    let sql = "INSERT INTO node_attempts (run_id, flow, node_id, kind, seq, attempt, iteration, status, started_at, ended_at, duration_ms, input_bytes, output_bytes, input, output, retried, action, error_kind, error_message, model, tokens_in, tokens_out, http_status) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
    let args = vec![
        a.run_id.as_str().into(),
        a.flow.as_str().into(),
        a.node_id.as_str().into(),
        a.kind.as_str().into(),
        a.seq.into(),
        a.attempt.into(),
        a.iteration.into(),
        a.status.as_str().into(),
        a.started_at.into(),
        a.ended_at.into(),
        a.duration_ms.into(),
        a.input_bytes.into(),
        a.output_bytes.into(),
        a.input.clone().into(),
        a.output.clone().into(),
        (a.retried as i64).into(),
        a.action.clone().into(),
        a.error_kind.clone().into(),
        a.error_message.clone().into(),
        a.model.clone().into(),
        a.tokens_in.into(),
        a.tokens_out.into(),
        a.http_status.into(),
    ];
    (Cow::Borrowed(sql), args)
}

fn run_from(r: Vec<Val>) -> RunRecord {
    RunRecord {
        id: r[0].str().unwrap_or_default(),
        flow: r[1].str().unwrap_or_default(),
        flow_hash: r[2].str().unwrap_or_default(),
        trigger: r[3].str().unwrap_or_default(),
        status: r[4].str().and_then(|s| s.parse().ok()).unwrap_or(RunStatus::Failed),
        canary: r[5].i64().unwrap_or(0) != 0,
        inputs: r[6].str(),
        started_at: r[7].i64().unwrap_or(0),
        ended_at: r[8].i64(),
        duration_ms: r[9].i64(),
        failed_node: r[10].str(),
        error_kind: r[11].str(),
        error_message: r[12].str(),
        severity: r[13].str(),
    }
}

fn attempt_from(r: Vec<Val>) -> AttemptRecord {
    AttemptRecord {
        run_id: r[0].str().unwrap_or_default(),
        flow: r[1].str().unwrap_or_default(),
        node_id: r[2].str().unwrap_or_default(),
        kind: r[3].str().unwrap_or_default(),
        seq: r[4].i64().unwrap_or(0),
        attempt: r[5].i64().unwrap_or(0),
        iteration: r[6].i64(),
        status: r[7].str().and_then(|s| s.parse().ok()).unwrap_or(AttemptStatus::Failed),
        started_at: r[8].i64().unwrap_or(0),
        ended_at: r[9].i64().unwrap_or(0),
        duration_ms: r[10].i64().unwrap_or(0),
        input_bytes: r[11].i64().unwrap_or(0),
        output_bytes: r[12].i64().unwrap_or(0),
        input: r[13].str(),
        output: r[14].str(),
        retried: r[15].i64().unwrap_or(0) != 0,
        action: r[16].str(),
        error_kind: r[17].str(),
        error_message: r[18].str(),
        model: r[19].str(),
        tokens_in: r[20].i64(),
        tokens_out: r[21].i64(),
        http_status: r[22].i64(),
    }
}

/// Host, port and database of a URL, without credentials.
pub fn describe_target(url: &str) -> String {
    if url.starts_with("sqlite:") {
        return url.to_owned();
    }
    match url::Url::parse(url) {
        Ok(u) => format!(
            "{}:{}{}",
            u.host_str().unwrap_or("?"),
            u.port().map(|p| p.to_string()).unwrap_or_else(|| "default port".into()),
            u.path()
        ),
        Err(_) => redact_url(url),
    }
}

/// Applies what is missing of the schema. DDL is idempotent and the version insert ignores a
/// duplicate, so two processes starting at once both succeed.
async fn migrate(pool: &Pool) -> anyhow::Result<()> {
    let create = match pool.backend() {
        Backend::MySql => {
            "CREATE TABLE IF NOT EXISTS flowguard_migrations (version BIGINT NOT NULL PRIMARY KEY, applied_at BIGINT NOT NULL) ENGINE=InnoDB"
        }
        _ => "CREATE TABLE IF NOT EXISTS flowguard_migrations (version BIGINT NOT NULL PRIMARY KEY, applied_at BIGINT NOT NULL)",
    };
    pool.exec(create, &[]).await?;
    let applied: Vec<i64> =
        pool.fetch("SELECT version FROM flowguard_migrations", &[], &[Ty::I64]).await?.into_iter().filter_map(|r| r[0].i64()).collect();
    let newest = MIGRATIONS.iter().map(|m| m.0).max().unwrap_or(0);
    if let Some(v) = applied.iter().find(|v| **v > newest) {
        return Err(anyhow!("the database has schema version {v}, newer than this flowguard knows ({newest}); upgrade flowguard"));
    }
    for (version, sqlite, mysql, postgres) in MIGRATIONS {
        if applied.contains(version) {
            continue;
        }
        let script = match pool.backend() {
            Backend::Sqlite => sqlite,
            Backend::MySql => mysql,
            Backend::Postgres => postgres,
        };
        pool.exec_script(script).await?;
        let now = jiff::Timestamp::now().as_millisecond();
        let insert = match pool.backend() {
            Backend::Sqlite => "INSERT OR IGNORE INTO flowguard_migrations (version, applied_at) VALUES (?, ?)",
            Backend::MySql => "INSERT IGNORE INTO flowguard_migrations (version, applied_at) VALUES (?, ?)",
            Backend::Postgres => "INSERT INTO flowguard_migrations (version, applied_at) VALUES (?, ?) ON CONFLICT DO NOTHING",
        };
        pool.exec(insert, &[(*version).into(), now.into()]).await?;
    }
    Ok(())
}

/// The group-commit writer: takes everything waiting, commits it in one transaction, answers each
/// caller. A failed batch is retried (with backoff, up to `patience`); a statement that fails on
/// its own (not the connection) fails only its caller.
async fn writer(pool: Pool, mut rx: mpsc::UnboundedReceiver<Write>, patience: Duration) {
    const MAX_BATCH: usize = 512;
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(w) => batch.push(w),
                Err(_) => break,
            }
        }
        let stmts: Vec<db::Stmt> = batch.iter().flat_map(|Write::Batch(s, _)| s.iter().cloned()).collect();
        let result = commit_with_patience(&pool, &stmts, patience).await;
        match result {
            Ok(()) => {
                for Write::Batch(_, ack) in batch {
                    let _ = ack.send(Ok(()));
                }
            }
            Err(e) if batch.len() > 1 && !is_connection_error(&e) => {
                // One bad write must not fail its neighbours: commit each on its own.
                for Write::Batch(stmts, ack) in batch {
                    let r = commit_with_patience(&pool, &stmts, patience).await.map_err(|e| e.to_string());
                    let _ = ack.send(r);
                }
            }
            Err(e) => {
                let msg = format!("the database did not accept the write within {}: {e}", humantime::format_duration(patience));
                for Write::Batch(_, ack) in batch {
                    let _ = ack.send(Err(msg.clone()));
                }
            }
        }
    }
}

fn is_connection_error(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Tls(_) | sqlx::Error::WorkerCrashed)
        || matches!(e, sqlx::Error::Database(d) if d.message().contains("database is locked") || d.message().contains("server has gone away") || d.message().contains("Lost connection") || d.message().contains("terminating connection"))
}

async fn commit_with_patience(pool: &Pool, stmts: &[db::Stmt], patience: Duration) -> Result<(), sqlx::Error> {
    let start = std::time::Instant::now();
    let mut delay = Duration::from_millis(50);
    loop {
        match pool.exec_batch(stmts).await {
            Ok(()) => return Ok(()),
            Err(e) if is_connection_error(&e) && start.elapsed() + delay < patience => {
                tracing::warn!(error = %e, "database write failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            Err(e) => return Err(e),
        }
    }
}
