//! The run log: runs and node attempts in SQLite (embedded default), MySQL/MariaDB or PostgreSQL,
//! picked by the URL. Callers see records and queries; no SQL leaves this module.
//!
//! Writes go through one writer task that commits whatever is waiting in one transaction (group
//! commit) and answers each caller only after the commit: a record acknowledged is durable. On
//! SQLite the writer runs on a thread of its own with its own connection (db::OwnedConn), so a
//! batch costs no hop between threads per statement. When
//! the database goes away the writer retries with backoff for `write_patience`, then fails the
//! writes, and the engine fails the run with kind `internal`.

mod alerts;
pub mod breakers;
mod dashboard;
mod db;
mod exports;
pub mod leases;
mod manual;
mod queue;
pub mod rollups;
mod server;

pub use alerts::{AlertFilter, AlertRecord, AlertTx, DeliveryRecord, GroupRecord, NotificationRecord, SilenceRecord};
pub use exports::{ExportCursor, ExportProgress};
pub use manual::{FlowBlock, ManualAction, ManualTask};
pub use server::{Cursor, IngestWrite};

pub use db::{Arg, Backend, Conn, OwnedConn, Pool, PoolSettings, Stmt, Tx, Ty, Val, is_conflict, merge_writes};
pub use leases::{LeaseLost, LeaseSettings, Queued};
pub use queue::{Claimed, Holder};

use crate::vocab::{AttemptStatus, RunStatus};
use anyhow::{Context, anyhow};
use serde::Serialize;
use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
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

const MIGRATIONS: &[(i64, &str, &str, &str)] = &[
    migration!(1, "v1"),
    migration!(2, "v2"),
    migration!(3, "v3"),
    migration!(4, "v4"),
    migration!(5, "v5"),
    migration!(6, "v6"),
    migration!(7, "v7"),
    migration!(8, "v8"),
    migration!(9, "v9"),
    migration!(12, "v12"),
    migration!(13, "v13"),
    migration!(14, "v14"),
    migration!(15, "v15"),
    migration!(18, "v18"),
    migration!(19, "v19"),
    migration!(20, "v20"),
];

/// Serializes JSON kept as text as the value it holds (text cut at `max_payload_bytes` no longer
/// parses and stays text).
pub fn as_json<S: serde::Serializer>(text: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match text.as_deref().map(|t| serde_json::from_str::<serde_json::Value>(t).map_err(|_| t)) {
        None => s.serialize_none(),
        Some(Ok(v)) => v.serialize(s),
        Some(Err(t)) => s.serialize_str(t),
    }
}

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
    /// JSON text; shown (CLI `--format json`, API) as the object it holds.
    #[serde(serialize_with = "as_json")]
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
    /// What the call cost, in billionths of `currency` (models with a `price`).
    pub cost_nanos: Option<i64>,
    pub currency: Option<String>,
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

/// Statements to commit together, an optional fencing guard (see leases.rs), and who to answer.
struct Write {
    stmts: Vec<db::Stmt>,
    guard: Option<db::Fence>,
    ack: oneshot::Sender<Result<(), WriteError>>,
}

/// The writer's answer to a write: committed, or why not.
fn answered(r: Result<Result<(), WriteError>, oneshot::error::RecvError>) -> anyhow::Result<()> {
    match r.map_err(|_| anyhow!("the store's writer has stopped"))? {
        Ok(()) => Ok(()),
        Err(WriteError::Stale) => Err(Stale.into()),
        Err(WriteError::Failed(e)) => Err(anyhow!(e)),
    }
}

enum WriteError {
    /// The batch's guard matched no row: its run belongs to another process now.
    Stale,
    Failed(String),
}

/// A batch refused by its guard; [`Store::write_run`] turns it into [`LeaseLost`].
#[derive(Debug, thiserror::Error)]
#[error("the write was refused: its run's epoch moved on")]
pub(crate) struct Stale;

#[derive(Clone)]
pub struct Store {
    /// Reads (API, reports, CLI).
    pub(crate) pool: Pool,
    /// The write path: the writer's kept connection and the reads a write depends on (ingestion's
    /// look-ups, rollups), apart from `pool` so that any number of readers cannot starve writes.
    pub(crate) write_pool: Pool,
    writes: mpsc::UnboundedSender<Write>,
    /// Asks the writer to give its kept connection back to the pool.
    release: mpsc::UnboundedSender<oneshot::Sender<()>>,
    server: Arc<str>,
    /// Runs in flight in this process, so their end rolls up without reading them back.
    live: std::sync::Arc<rollups::Live>,
    /// Leases this process holds on runs, and how long they last.
    leases: Arc<leases::Leases>,
    lease: LeaseSettings,
    /// The flows' blocks as last read, for the check before each run.
    blocks_seen: Arc<manual::SeenBlocks>,
    /// How many tries of a write met an unreachable database (see [`Store::unreachable_seen`]).
    unreachable: Arc<AtomicU64>,
}

/// How to open the store: the pool, and how long writes wait for a database that went away.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub pool: PoolSettings,
    pub write_patience: Duration,
    pub lease: LeaseSettings,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions { pool: PoolSettings::default(), write_patience: Duration::from_secs(30), lease: LeaseSettings::default() }
    }
}

/// The backend a storage URL names.
pub fn backend_of(url: &str) -> anyhow::Result<Backend> {
    if url.starts_with("sqlite:") {
        Ok(Backend::Sqlite)
    } else if url.starts_with("mysql:") || url.starts_with("mariadb:") {
        Ok(Backend::MySql)
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        Ok(Backend::Postgres)
    } else {
        Err(anyhow!("unsupported storage URL `{}`: expected sqlite://, mysql:// or postgres://", redact_url(url)))
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Store({})", self.pool.backend().name())
    }
}

/// Removes the password from a database URL, for messages: the one in the user part and any
/// `password=` / `sslpassword=` query parameter.
pub fn redact_url(url: &str) -> String {
    let Ok(mut u) = url::Url::parse(url) else {
        return url.to_owned();
    };
    if u.password().is_some() {
        let _ = u.set_password(Some("***"));
    }
    if u.query_pairs().any(|(k, _)| is_secret_param(&k)) {
        let pairs: Vec<(String, String)> = u
            .query_pairs()
            .map(|(k, v)| {
                let v = if is_secret_param(&k) { "***".to_owned() } else { v.into_owned() };
                (k.into_owned(), v)
            })
            .collect();
        u.query_pairs_mut().clear().extend_pairs(pairs);
    }
    u.to_string()
}

fn is_secret_param(k: &str) -> bool {
    k.eq_ignore_ascii_case("password") || k.eq_ignore_ascii_case("sslpassword")
}

const RUN_COLS: &str = "id, flow, flow_hash, trigger_kind, status, canary, inputs, started_at, ended_at, duration_ms, failed_node, error_kind, error_message, severity";
const RUN_TYS: &[Ty] =
    &[Ty::Str, Ty::Str, Ty::Str, Ty::Str, Ty::Str, Ty::I64, Ty::Str, Ty::I64, Ty::I64, Ty::I64, Ty::Str, Ty::Str, Ty::Str, Ty::Str];
const ATTEMPT_COLS: &str = "run_id, flow, node_id, kind, seq, attempt, iteration, status, started_at, ended_at, duration_ms, input_bytes, output_bytes, input, output, retried, action, error_kind, error_message, model, tokens_in, tokens_out, http_status, cost_nanos, currency";
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
    Ty::I64,
    Ty::Str,
];

impl Store {
    /// Connects, applies migrations, and starts the writer. `patience`: how long writes are
    /// retried while the database is unreachable.
    pub async fn open(url: &str, max_connections: u32, patience: Duration) -> anyhow::Result<Store> {
        let opts =
            StoreOptions { pool: PoolSettings { max_connections, ..Default::default() }, write_patience: patience, ..Default::default() };
        Store::open_with(url, &opts).await
    }

    /// Connects with the pool settings of `opts`, applies migrations, and starts the writer.
    pub async fn open_with(url: &str, opts: &StoreOptions) -> anyhow::Result<Store> {
        let backend = backend_of(url)?;
        let mut tries = 0;
        let pool = loop {
            match Pool::connect(url, &opts.pool).await {
                // Several processes opening one new SQLite file at once can meet a lock while
                // switching it to WAL, which the busy timeout does not cover.
                Err(e) if backend == Backend::Sqlite && is_connection_error(&e) && tries < 20 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                r => break r,
            }
        }
        .map_err(|e| anyhow!("cannot open the {} database at {}: {}", backend.name(), describe_target(url), describe_error(&e)))?;
        let server = pool.server_version().await.unwrap_or_default();
        if let Err(e) = check_server_version(backend, &server) {
            pool.close().await;
            return Err(anyhow!("the {} database at {}: {e}", backend.name(), describe_target(url)));
        }
        if let Err(e) = migrate(&pool).await {
            pool.close().await;
            return Err(e.context(format!("migrating the {} database at {}", backend.name(), describe_target(url))));
        }
        let write_settings = PoolSettings { max_connections: db::WRITE_POOL_SIZE, ..opts.pool.clone() };
        let write_pool = match Pool::connect(url, &write_settings).await {
            Ok(p) => p,
            Err(e) => {
                pool.close().await;
                return Err(anyhow!("cannot open the {} database at {}: {}", backend.name(), describe_target(url), describe_error(&e)));
            }
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let (release, released) = mpsc::unbounded_channel();
        let (patience, target) = (opts.write_patience, describe_target(url));
        let unreachable = Arc::new(AtomicU64::new(0));
        let seen = unreachable.clone();
        if backend == Backend::Sqlite {
            // SQLite executes in the calling thread: the writer gets a thread of its own, where its
            // connection lives and its batches run inline (db::OwnedConn).
            let pool = write_pool.clone();
            let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().context("starting the SQLite writer")?;
            std::thread::Builder::new()
                .name("flowguard-writer".into())
                .spawn(move || runtime.block_on(writer(pool, rx, released, Patience { patience, target, seen })))
                .context("starting the SQLite writer")?;
        } else {
            tokio::spawn(writer(write_pool.clone(), rx, released, Patience { patience, target, seen }));
        }
        Ok(Store {
            pool,
            write_pool,
            writes: tx,
            release,
            server: Arc::from(server),
            live: Default::default(),
            leases: Default::default(),
            lease: opts.lease,
            blocks_seen: Default::default(),
            unreachable,
        })
    }

    /// How many tries of a write have met an unreachable database since the store opened: a
    /// caller that reads it twice knows whether the database was away in between, even when
    /// every write it made went through in the end (the writer waits out short outages).
    pub fn unreachable_seen(&self) -> u64 {
        self.unreachable.load(Ordering::Relaxed)
    }

    /// The server's version string, as it answered at open.
    pub fn server_version(&self) -> &str {
        &self.server
    }

    pub fn backend(&self) -> Backend {
        self.pool.backend()
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Commits statements together (with whatever else is waiting: group commit); returns once
    /// they are durable. Statements must be idempotent — insert with [`Store::on_conflict_skip`] —
    /// because a batch whose commit was not acknowledged is tried again.
    pub async fn write(&self, stmts: Vec<db::Stmt>) -> anyhow::Result<()> {
        self.write_guarded(stmts, None).await
    }

    /// [`Store::write`] with a fence checked in the same transaction: unless the run still has the
    /// fence's epoch, nothing of this batch is committed (its neighbours in the group commit are)
    /// and the error is [`Stale`].
    async fn write_guarded(&self, stmts: Vec<db::Stmt>, guard: Option<db::Fence>) -> anyhow::Result<()> {
        answered(self.send_guarded(stmts, guard)?.await)
    }

    /// Hands statements to the writer; the receiver gets its answer once they are committed.
    fn send_guarded(&self, stmts: Vec<db::Stmt>, guard: Option<db::Fence>) -> anyhow::Result<oneshot::Receiver<Result<(), WriteError>>> {
        let (ack, rx) = oneshot::channel();
        self.writes.send(Write { stmts, guard, ack }).map_err(|_| anyhow!("the store's writer has stopped"))?;
        Ok(rx)
    }

    pub async fn insert_run(&self, r: &RunRecord) -> anyhow::Result<()> {
        let running = r.status == RunStatus::Running;
        // The process that inserts a running run executes it: it holds the lease from the start.
        let lease = running.then(|| ("owner, lease_until, epoch", self.lease_new_args().to_vec()));
        let mut stmts = vec![run_insert(r, lease, &self.on_conflict_skip("id"))];
        if r.status.is_final() {
            // Report rollups: a run recorded already ended (refused) is counted in the same commit.
            let end = RunEnd { status: Some(r.status), ..Default::default() };
            stmts.extend(self.rollup_stmts(&r.id, &end, &[], Some(r)).await?);
            stmts.push(Store::run_end_stmt(&r.id, r.started_at));
        }
        self.write(stmts).await?;
        if running {
            self.hold(&r.id, 1);
        }
        self.live.start(r);
        Ok(())
    }

    pub async fn insert_attempt(&self, a: &AttemptRecord) -> anyhow::Result<()> {
        self.write_run(&a.run_id, vec![attempt_stmt(a, self.backend(), false)]).await?;
        self.live.attempt(a);
        Ok(())
    }

    /// The clause that turns an INSERT into a no-op when the row (by its unique `key` column) is
    /// already there.
    pub fn on_conflict_skip(&self, key: &str) -> String {
        match self.backend() {
            Backend::MySql => format!(" ON DUPLICATE KEY UPDATE {key} = {key}"),
            _ => " ON CONFLICT DO NOTHING".to_owned(),
        }
    }

    /// Records a run's end (and any last attempts) in one transaction.
    pub async fn finish_run(&self, run_id: &str, end: &RunEnd, attempts: &[AttemptRecord]) -> anyhow::Result<()> {
        self.finish_run_after(run_id, Vec::new(), end, attempts).await
    }

    /// [`Store::finish_run`] with the run's records not written yet (from
    /// [`Store::attempt_stmts`]) in front, in the same transaction.
    pub async fn finish_run_after(
        &self,
        run_id: &str,
        before: Vec<db::Stmt>,
        end: &RunEnd,
        attempts: &[AttemptRecord],
    ) -> anyhow::Result<()> {
        let mut stmts = self.records_first(run_id, before).await?;
        stmts.extend(attempts.iter().map(|a| attempt_stmt(a, self.backend(), false)));
        stmts.push(finish_stmt(run_id, end));
        // Report rollups move with the run's end, in the same transaction (store/rollups.rs).
        stmts.extend(self.rollup_stmts(run_id, end, attempts, None).await?);
        stmts.push(Store::run_end_stmt(run_id, end.ended_at));
        self.write_run(run_id, stmts).await?;
        self.release(run_id);
        Ok(())
    }

    /// The run's records to put in front of its end, in its transaction: all of them for a run
    /// started or claimed here (its rollups know its attempts); for another (resumed), whose
    /// rollups read its stored attempts, they are committed first and none is left.
    async fn records_first(&self, run_id: &str, records: Vec<db::Stmt>) -> anyhow::Result<Vec<db::Stmt>> {
        if records.is_empty() || self.live.has(run_id) {
            return Ok(records);
        }
        self.write_run(run_id, records).await?;
        Ok(Vec::new())
    }

    /// Records an attempt and, for a node that produced output, keeps the full output so the run
    /// can be resumed; one transaction.
    pub async fn record_attempt(&self, a: &AttemptRecord, keep_output: Option<&str>) -> anyhow::Result<()> {
        self.queue_attempt(a, keep_output)?.done(self).await
    }

    /// [`Store::record_attempt`] without waiting for the commit: the writer has the record, and
    /// [`Queued::done`] says when it is committed (or refused). Writes are committed in the order
    /// they are handed over.
    pub fn queue_attempt(&self, a: &AttemptRecord, keep_output: Option<&str>) -> anyhow::Result<Queued> {
        let stmts = self.attempt_stmts(a, keep_output);
        self.queue_run(&a.run_id, stmts)
    }

    /// The statements that record an attempt (and keep its full output), to hand over with
    /// others of its run in one write ([`Store::queue_run`]).
    pub(crate) fn attempt_stmts(&self, a: &AttemptRecord, keep_output: Option<&str>) -> Vec<db::Stmt> {
        self.live.attempt(a);
        let mut stmts = vec![attempt_stmt(a, self.backend(), false)];
        if let Some(out) = keep_output {
            stmts.push(manual::output_stmt(self.backend(), &a.run_id, &a.node_id, out));
        }
        stmts
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
        let (mut sql, args) = select_runs(f);
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
        // The writer keeps a connection; the pool's close waits for every connection to return.
        let (tx, rx) = oneshot::channel();
        if self.release.send(tx).is_ok() {
            let _ = rx.await;
        }
        self.pool.close().await;
        self.write_pool.close().await
    }
}

pub(crate) fn finish_stmt(run_id: &str, end: &RunEnd) -> db::Stmt {
    (
        Cow::Borrowed(
            "UPDATE runs SET status = ?, ended_at = ?, duration_ms = ?, failed_node = ?, error_kind = ?, error_message = ?, severity = ? WHERE id = ?",
        ),
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
    )
}

fn run_args(r: &RunRecord) -> Vec<Arg> {
    vec![
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
    ]
}

/// The row of an external run as ingestion writes it (a run that started elsewhere, as it is), with
/// when its newest event came.
fn external_run_stmt(r: &RunRecord, last_event_at: i64) -> db::Stmt {
    run_insert(r, Some(("last_event_at", vec![last_event_at.into()])), "")
}

/// The INSERT of a run's row; with `more`, also those columns (named, then their values), such as
/// a lease's `owner, lease_until, epoch`.
fn run_insert(r: &RunRecord, more: Option<(&str, Vec<Arg>)>, tail: &str) -> db::Stmt {
    let mut args = run_args(r);
    let cols = match more {
        Some((cols, values)) => {
            args.extend(values);
            format!("{RUN_COLS}, {cols}")
        }
        None => RUN_COLS.to_owned(),
    };
    let marks = vec!["?"; args.len()].join(", ");
    (Cow::Owned(format!("INSERT INTO runs ({cols}) VALUES ({marks}){tail}")), args)
}

macro_rules! attempt_insert {
    () => {
        "INSERT INTO node_attempts (run_id, flow, node_id, kind, seq, attempt, iteration, status, started_at, ended_at, duration_ms, input_bytes, output_bytes, input, output, retried, action, error_kind, error_message, model, tokens_in, tokens_out, http_status, cost_nanos, currency, rolled_up) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    };
}

/// The INSERT of an attempt; `counted`: the same write moves it into its run's rollups, so it is
/// stored counted (`rolled_up = 1`) rather than marked by an UPDATE after it.
fn attempt_stmt(a: &AttemptRecord, backend: Backend, counted: bool) -> db::Stmt {
    // Idempotent by (run_id, seq): a batch retried after a lost COMMIT acknowledgement is not doubled.
    let sql: &'static str = match backend {
        Backend::MySql => concat!(attempt_insert!(), " ON DUPLICATE KEY UPDATE seq = seq"),
        _ => concat!(attempt_insert!(), " ON CONFLICT DO NOTHING"),
    };
    let mut args = attempt_args(a);
    args.push((counted as i64).into());
    (Cow::Borrowed(sql), args)
}

/// An attempt's values in the order of [`ATTEMPT_COLS`].
fn attempt_args(a: &AttemptRecord) -> Vec<Arg> {
    vec![
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
        a.cost_nanos.into(),
        a.currency.clone().into(),
    ]
}

/// `SELECT … FROM runs WHERE …` for a filter (its limit aside), and the values to bind.
pub(crate) fn select_runs(f: &RunFilter) -> (String, Vec<Arg>) {
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
    (sql, args)
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
        cost_nanos: r[23].i64(),
        currency: r[24].str(),
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

/// Oldest servers flowguard supports: MySQL 8.0, MariaDB 10.6, PostgreSQL 14.
pub fn check_server_version(backend: Backend, version: &str) -> Result<(), String> {
    let nums: Vec<u32> =
        version.split(|c: char| !c.is_ascii_digit()).filter(|p| !p.is_empty()).take(2).filter_map(|p| p.parse().ok()).collect();
    let (major, minor) = (nums.first().copied().unwrap_or(0), nums.get(1).copied().unwrap_or(0));
    let (name, need) = match backend {
        Backend::Sqlite => return Ok(()),
        Backend::MySql if version.to_ascii_lowercase().contains("mariadb") => ("MariaDB", (10, 6)),
        Backend::MySql => ("MySQL", (8, 0)),
        Backend::Postgres => ("PostgreSQL", (14, 0)),
    };
    if (major, minor) < need {
        return Err(format!("the server runs {name} {version}; flowguard needs {name} {}.{} or newer", need.0, need.1));
    }
    Ok(())
}

/// Applies what is missing of the schema, on one connection holding the migration lock, so two
/// processes starting at once neither race on DDL nor apply a version twice.
async fn migrate(pool: &Pool) -> anyhow::Result<()> {
    pool.with_migration_lock(async |c: &mut Conn<'_>| {
        let backend = c.backend();
        let create = match backend {
            Backend::MySql => {
                "CREATE TABLE IF NOT EXISTS flowguard_migrations (version BIGINT NOT NULL PRIMARY KEY, applied_at BIGINT NOT NULL) ENGINE=InnoDB"
            }
            _ => "CREATE TABLE IF NOT EXISTS flowguard_migrations (version BIGINT NOT NULL PRIMARY KEY, applied_at BIGINT NOT NULL)",
        };
        c.exec(create, &[]).await?;
        let applied: Vec<i64> =
            c.fetch("SELECT version FROM flowguard_migrations", &[], &[Ty::I64]).await?.into_iter().filter_map(|r| r[0].i64()).collect();
        let newest = MIGRATIONS.iter().map(|m| m.0).max().unwrap_or(0);
        if let Some(v) = applied.iter().find(|v| **v > newest) {
            return Err(anyhow!("the database has schema version {v}, newer than this flowguard knows ({newest}); upgrade flowguard"));
        }
        for (version, sqlite, mysql, postgres) in MIGRATIONS {
            if applied.contains(version) {
                continue;
            }
            let script = match backend {
                Backend::Sqlite => sqlite,
                Backend::MySql => mysql,
                Backend::Postgres => postgres,
            };
            c.exec_script(script).await.with_context(|| format!("applying schema version {version}"))?;
            let now = jiff::Timestamp::now().as_millisecond();
            let insert = match backend {
                Backend::Sqlite => "INSERT OR IGNORE INTO flowguard_migrations (version, applied_at) VALUES (?, ?)",
                Backend::MySql => "INSERT IGNORE INTO flowguard_migrations (version, applied_at) VALUES (?, ?)",
                Backend::Postgres => "INSERT INTO flowguard_migrations (version, applied_at) VALUES (?, ?) ON CONFLICT DO NOTHING",
            };
            c.exec(insert, &[(*version).into(), now.into()]).await?;
        }
        Ok(())
    })
    .await
}

/// The group-commit writer: takes everything waiting, commits it in one transaction, answers each
/// caller. A failed batch is retried (with backoff, up to `patience`); a statement that fails on
/// its own (not the connection) fails only its caller.
async fn writer(
    pool: Pool,
    mut rx: mpsc::UnboundedReceiver<Write>,
    mut release: mpsc::UnboundedReceiver<oneshot::Sender<()>>,
    patience: Patience,
) {
    const MAX_BATCH: usize = 512;
    let mut conn: Option<OwnedConn> = None;
    loop {
        let first = tokio::select! {
            biased;
            w = rx.recv() => match w {
                Some(w) => w,
                None => break,
            },
            Some(ack) = release.recv() => {
                conn = None;
                let _ = ack.send(());
                continue;
            }
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(w) => batch.push(w),
                Err(_) => break,
            }
        }
        // Writes whose fencing guard fails are answered `Stale` and dropped; the rest go again.
        let result = loop {
            let guards: Vec<db::Fence> = batch.iter().filter_map(|w| w.guard.clone()).collect();
            // A write alone is never committed apart, so its statements are not copied.
            let stmts = match batch.as_mut_slice() {
                [w] => std::mem::take(&mut w.stmts),
                _ => batch.iter().flat_map(|w| w.stmts.iter().cloned()).collect(),
            };
            let stmts: Vec<db::Stmt> = db::merge_writes(stmts, pool.backend());
            match patience.commit(&pool, &mut conn, &guards, &stmts).await {
                Ok(failed) if !failed.is_empty() => {
                    let mut seen = 0;
                    let (stale, kept): (Vec<Write>, Vec<Write>) = batch.into_iter().partition(|w| {
                        let hit = w.guard.is_some() && failed.contains(&seen);
                        seen += w.guard.is_some() as usize;
                        hit
                    });
                    for w in stale {
                        let _ = w.ack.send(Err(WriteError::Stale));
                    }
                    batch = kept;
                    if batch.is_empty() {
                        break Ok(Vec::new());
                    }
                }
                r => break r,
            }
        };
        match result {
            Ok(_) => {
                for w in batch {
                    let _ = w.ack.send(Ok(()));
                }
            }
            Err(e) if batch.len() > 1 && !is_connection_error(&e) => {
                // One bad write must not fail its neighbours: commit each on its own.
                for w in batch {
                    let guards: Vec<db::Fence> = w.guard.into_iter().collect();
                    let r = match patience.commit(&pool, &mut conn, &guards, &w.stmts).await {
                        Ok(failed) if failed.is_empty() => Ok(()),
                        Ok(_) => Err(WriteError::Stale),
                        Err(e) => Err(WriteError::Failed(patience.failed(&pool, &e))),
                    };
                    let _ = w.ack.send(r);
                }
            }
            Err(e) => {
                let msg = patience.failed(&pool, &e);
                if is_connection_error(&e) {
                    tracing::error!("{msg}");
                }
                for w in batch {
                    let _ = w.ack.send(Err(WriteError::Failed(msg.clone())));
                }
            }
        }
    }
}

/// The server's answer in one line: its error code and message, or the transport's error.
pub fn describe_error(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(d) => match d.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
            Some(m) => format!("server answered error {} ({}): {}", m.number(), m.code().unwrap_or("-"), m.message()),
            None => format!("server answered {}: {}", d.code().as_deref().unwrap_or("an error"), d.message()),
        },
        sqlx::Error::PoolTimedOut => "no connection could be made or freed within storage.connect_timeout".into(),
        other => other.to_string(),
    }
}

/// Errors worth retrying a write for: the database cannot be reached ([`Pool::is_unreachable`]),
/// or it gave up on the transaction for a passing reason (a lock wait, a deadlock, a
/// serialisation failure; SQLite busy or locked) — as opposed to a statement it rejects.
fn is_connection_error(e: &sqlx::Error) -> bool {
    if Pool::is_unreachable(e) {
        return true;
    }
    let sqlx::Error::Database(d) = e else { return false };
    if let Some(m) = d.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
        // 1205 lock wait timeout, 1213 deadlock.
        return matches!(m.number(), 1205 | 1213);
    }
    let code = d.code().unwrap_or_default();
    // PostgreSQL 40001/40P01 serialisation failure, deadlock; SQLite busy or locked.
    matches!(code.as_ref(), "40001" | "40P01" | "5" | "6" | "261" | "517") || d.message().contains("database is locked")
}

/// How the writer waits for a database that went away, and what it says when it gives up.
struct Patience {
    patience: Duration,
    /// The database, as errors name it (no password).
    target: String,
    /// Counts the tries that met an unreachable database ([`Store::unreachable_seen`]).
    seen: Arc<AtomicU64>,
}

impl Patience {
    /// What a caller is told when its write is given up on.
    fn failed(&self, pool: &Pool, e: &sqlx::Error) -> String {
        let target = &self.target;
        if is_connection_error(e) {
            format!(
                "the {} database at {target} did not accept the write within {} (storage.write_patience): {}",
                pool.backend().name(),
                humantime::format_duration(self.patience),
                describe_error(e)
            )
        } else {
            format!("the {} database at {target} refused the write: {}", pool.backend().name(), describe_error(e))
        }
    }

    /// Commits `stmts` in one transaction, retrying while the database is away until the patience
    /// is spent. Each try is bounded by what is left of the patience, so a server that stops
    /// answering (rather than refusing) cannot hold the run longer than configured.
    async fn commit(
        &self,
        pool: &Pool,
        conn: &mut Option<OwnedConn>,
        guards: &[db::Fence],
        stmts: &[db::Stmt],
    ) -> Result<Vec<usize>, sqlx::Error> {
        let patience = self.patience;
        let start = std::time::Instant::now();
        let mut delay = Duration::from_millis(50);
        loop {
            let left = patience.saturating_sub(start.elapsed()).max(Duration::from_millis(100));
            let attempt = async {
                if conn.is_none() {
                    *conn = Some(pool.acquire_owned().await?);
                }
                match conn.as_mut() {
                    Some(c) if guards.is_empty() => c.exec_batch(stmts).await.map(|()| Vec::new()),
                    Some(c) => c.exec_guarded(guards, stmts).await,
                    None => Err(sqlx::Error::PoolClosed),
                }
            };
            let r = match tokio::time::timeout(left, attempt).await {
                Ok(r) => r,
                Err(_) => Err(sqlx::Error::Io(std::io::Error::new(std::io::ErrorKind::TimedOut, "the database stopped answering"))),
            };
            if let Err(e) = &r {
                // The kept connection may be the broken part: take a fresh one next time. (A
                // statement the database rejected leaves it usable, but telling the two apart is
                // not worth a stale connection.)
                *conn = None;
                if Pool::is_unreachable(e) {
                    self.seen.fetch_add(1, Ordering::Relaxed);
                }
            }
            match r {
                Ok(failed) => return Ok(failed),
                Err(e) if is_connection_error(&e) && start.elapsed() + delay < patience => {
                    tracing::warn!(error = %describe_error(&e), "database write failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_versions_below_the_minimum_are_refused() {
        assert!(check_server_version(Backend::MySql, "10.11.19-MariaDB-0+deb12u1").is_ok());
        assert!(check_server_version(Backend::MySql, "10.6.0-MariaDB").is_ok());
        let old = check_server_version(Backend::MySql, "10.5.23-MariaDB").unwrap_err();
        assert!(old.contains("MariaDB 10.6 or newer") && old.contains("10.5.23"), "{old}");
        assert!(check_server_version(Backend::MySql, "8.0.36").is_ok());
        assert!(check_server_version(Backend::MySql, "5.7.44-log").unwrap_err().contains("MySQL 8.0 or newer"));
        assert!(check_server_version(Backend::Postgres, "PostgreSQL 15.20 (Debian 15.20-0+deb12u1) on x86_64").is_ok());
        assert!(check_server_version(Backend::Postgres, "PostgreSQL 13.9 on x86_64").unwrap_err().contains("PostgreSQL 14.0 or newer"));
    }

    #[test]
    fn passwords_are_masked_in_urls() {
        assert_eq!(redact_url("mysql://fg:s3cret@db:3306/fg"), "mysql://fg:***@db:3306/fg");
        let pg = redact_url("postgres://fg@db/fg?sslmode=require&password=s3cret");
        assert!(!pg.contains("s3cret") && pg.contains("sslmode=require"), "{pg}");
        assert_eq!(describe_target("postgres://fg:s3cret@db:5433/fg"), "db:5433/fg");
    }
}
