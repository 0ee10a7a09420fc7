//! One small layer over three sqlx pools. Queries are written once with `?` placeholders (rewritten
//! to `$n` for PostgreSQL) and values travel as [`Arg`]; each backend arm of [`on_pool!`] is
//! concrete sqlx code, so there is no `sqlx::Any` and no dynamic typing beyond our own [`Val`].

use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{ConnectOptions, Row};
use std::borrow::Cow;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    MySql,
    Postgres,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "SQLite",
            Backend::MySql => "MySQL/MariaDB",
            Backend::Postgres => "PostgreSQL",
        }
    }
}

#[derive(Clone, Debug)]
pub enum Pool {
    /// With the connections its transactions ([`Tx`]) run on, kept between them.
    Sqlite(SqlitePool, Arc<SqliteIdle>),
    MySql(MySqlPool),
    Postgres(PgPool),
}

/// A bound value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Arg {
    I64(Option<i64>),
    Str(Option<String>),
}

impl From<i64> for Arg {
    fn from(v: i64) -> Self {
        Arg::I64(Some(v))
    }
}
impl From<Option<i64>> for Arg {
    fn from(v: Option<i64>) -> Self {
        Arg::I64(v)
    }
}
/// Text as every backend can store it: PostgreSQL refuses the NUL character in text, so it is
/// replaced by U+FFFD on every backend (the three store and find the same value).
fn storable(s: String) -> String {
    if s.contains('\0') { s.replace('\0', "\u{FFFD}") } else { s }
}

impl From<&str> for Arg {
    fn from(v: &str) -> Self {
        Arg::Str(Some(storable(v.to_owned())))
    }
}
impl From<String> for Arg {
    fn from(v: String) -> Self {
        Arg::Str(Some(storable(v)))
    }
}
impl From<Option<String>> for Arg {
    fn from(v: Option<String>) -> Self {
        Arg::Str(v.map(storable))
    }
}
impl From<Option<&str>> for Arg {
    fn from(v: Option<&str>) -> Self {
        Arg::Str(v.map(|s| storable(s.to_owned())))
    }
}

/// The type of a selected column.
#[derive(Debug, Clone, Copy)]
pub enum Ty {
    I64,
    Str,
}

/// A fetched value.
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    I64(Option<i64>),
    Str(Option<String>),
}

impl Val {
    pub fn i64(&self) -> Option<i64> {
        match self {
            Val::I64(v) => *v,
            Val::Str(s) => s.as_deref().and_then(|s| s.parse().ok()),
        }
    }
    pub fn str(&self) -> Option<String> {
        match self {
            Val::Str(s) => s.clone(),
            Val::I64(v) => v.map(|v| v.to_string()),
        }
    }
}

/// `?` → `$1, $2 …` for PostgreSQL (our SQL has no `?` inside string literals).
pub fn pg_sql(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut n = 0;
    for c in sql.chars() {
        if c == '?' {
            n += 1;
            out.push('$');
            out.push_str(&n.to_string());
        } else {
            out.push(c);
        }
    }
    out
}

/// Binds `$args` to the query `$q`, whichever backend it is for.
macro_rules! bind_args {
    ($q:expr, $args:expr) => {{
        let mut q = $q;
        for a in $args {
            q = match a {
                Arg::I64(v) => q.bind(*v),
                Arg::Str(v) => q.bind(v.as_deref()),
            };
        }
        q
    }};
}

macro_rules! decode_row {
    ($row:expr, $tys:expr) => {{
        let row = $row;
        let mut vals = Vec::with_capacity($tys.len());
        for (i, ty) in $tys.iter().enumerate() {
            vals.push(match ty {
                // PostgreSQL does not widen INT4/INT2/BOOL to INT8 on decode; we do.
                Ty::I64 => Val::I64(match row.try_get::<Option<i64>, _>(i) {
                    Ok(v) => v,
                    Err(e) => match row.try_get::<Option<i32>, _>(i) {
                        Ok(v) => v.map(i64::from),
                        Err(_) => match row.try_get::<Option<bool>, _>(i) {
                            Ok(v) => v.map(i64::from),
                            Err(_) => return Err(e),
                        },
                    },
                }),
                Ty::Str => Val::Str(row.try_get::<Option<String>, _>(i)?),
            });
        }
        vals
    }};
}

pub type Stmt = (Cow<'static, str>, Vec<Arg>);

/// Pool settings from `storage:` in the config.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    pub max_connections: u32,
    /// Bounds opening a connection and waiting for a free one.
    pub connect_timeout: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings { max_connections: 8, connect_timeout: Duration::from_secs(10) }
    }
}

/// How long a SQLite connection waits for another's write lock before it gives up ("database is
/// locked").
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections of the write path: the writer keeps one, ingestion's database lock may hold one,
/// the reads that come before a write (ingestion's look-ups, rollups) share the others.
pub const WRITE_POOL_SIZE: u32 = 4;

/// The lock is per server on MySQL, so its name carries the database (names are cut at 64 chars).
const MYSQL_LOCK: &str = "SELECT GET_LOCK(CONCAT('flowguard_migrate_', LEFT(MD5(IFNULL(DATABASE(), '')), 16)), 60)";
const MYSQL_UNLOCK: &str = "SELECT RELEASE_LOCK(CONCAT('flowguard_migrate_', LEFT(MD5(IFNULL(DATABASE(), '')), 16)))";
/// Advisory locks are per database on PostgreSQL; any fixed key will do ("flowguar" in ASCII).
const PG_LOCK_KEY: i64 = 0x666c_6f77_6775_6172;

async fn probe<C: sqlx::Connection>(
    connect: impl std::future::Future<Output = Result<C, sqlx::Error>>,
    timeout: Duration,
) -> Result<(), sqlx::Error> {
    match tokio::time::timeout(timeout, connect).await {
        Ok(Ok(c)) => {
            let _ = c.close().await;
            Ok(())
        }
        Ok(Err(e)) => Err(e),
        Err(_) => Err(sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no answer within {}", humantime::format_duration(timeout)),
        ))),
    }
}

/// How long a returned connection may take to show it is usable, and how long closing the pool
/// waits for connections to come back.
const RELEASE_PATIENCE: Duration = Duration::from_secs(2);
const CLOSE_PATIENCE: Duration = Duration::from_secs(5);

/// Checks a connection on its way back to the pool, within [`RELEASE_PATIENCE`]. A connection
/// whose statement failed half-way (a protocol error, a query cut off by a timeout) may wait
/// forever for an answer that never comes; sqlx's own check has no time limit, so without this
/// such a connection stays checked out for good and the pool runs dry. An error here makes the
/// pool drop the connection at once and open a fresh one when needed.
async fn released_alive<C: sqlx::Connection>(c: &mut C) -> Result<bool, sqlx::Error> {
    match tokio::time::timeout(RELEASE_PATIENCE, c.ping()).await {
        Ok(Ok(())) => Ok(true),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(sqlx::Error::Io(std::io::Error::new(std::io::ErrorKind::TimedOut, "connection did not answer a ping"))),
    }
}

/// A connection the group-commit writer keeps between batches, so a commit costs no pool
/// round trip (the pool pings a connection on every acquire). SQLite's is not a pool connection:
/// sqlx runs each SQLite statement on a worker thread of its own, one thread hop per statement
/// (BEGIN, guard, insert, upsert, COMMIT: most of a node's record time). The writer owns this one
/// and runs on a thread of its own (store/mod.rs), so a batch executes inline with its statements
/// prepared once.
pub enum OwnedConn {
    Sqlite(Box<rusqlite::Connection>),
    MySql(sqlx::pool::PoolConnection<sqlx::MySql>),
    Postgres(sqlx::pool::PoolConnection<sqlx::Postgres>),
}

/// Runs `stmts` on one connection: a single statement as it is (autocommit), several in one
/// transaction.
macro_rules! run_batch {
    ($c:expr, $stmts:expr, $rewrite:expr) => {{
        let c = $c;
        let stmts: &[Stmt] = $stmts;
        if let [(sql, args)] = stmts {
            let sql: Cow<'_, str> = $rewrite(sql.as_ref());
            bind_args!(sqlx::query(sqlx::AssertSqlSafe(sql.as_ref())), args).execute(&mut **c).await?;
            Ok(())
        } else {
            let mut tx = sqlx::Connection::begin(&mut **c).await?;
            for (sql, args) in stmts {
                let sql: Cow<'_, str> = $rewrite(sql.as_ref());
                bind_args!(sqlx::query(sqlx::AssertSqlSafe(sql.as_ref())), args).execute(&mut *tx).await?;
            }
            tx.commit().await
        }
    }};
}

fn same(sql: &str) -> Cow<'_, str> {
    Cow::Borrowed(sql)
}

fn numbered(sql: &str) -> Cow<'_, str> {
    Cow::Owned(pg_sql(sql))
}

/// A fencing check (store/leases.rs): a write commits only while its run's `epoch` is still the
/// one this process holds.
#[derive(Debug, Clone)]
pub struct Fence {
    pub run_id: String,
    pub epoch: i64,
}

/// One statement that reads the epoch of every fenced run of a batch (and, on MySQL/PostgreSQL,
/// locks those rows until the commit, as an UPDATE would; SQLite's writer holds the database's
/// write lock already): one round trip however many writes share the commit.
fn fence_stmt(fences: &[Fence], lock: bool) -> Stmt {
    let marks = vec!["?"; fences.len()].join(", ");
    let sql = format!("SELECT id, epoch FROM runs WHERE id IN ({marks}){}", if lock { " FOR UPDATE" } else { "" });
    (Cow::Owned(sql), fences.iter().map(|f| Arg::from(f.run_id.as_str())).collect())
}

/// The indexes of the fences whose run no longer has their epoch (or is gone), given the
/// `(id, epoch)` rows [`fence_stmt`] read.
fn fences_failed(fences: &[Fence], rows: &[Vec<Val>]) -> Vec<usize> {
    let found: std::collections::HashMap<String, Option<i64>> = rows.iter().map(|r| (r[0].str().unwrap_or_default(), r[1].i64())).collect();
    fences.iter().enumerate().filter(|(_, f)| found.get(&f.run_id).copied().flatten() != Some(f.epoch)).map(|(i, _)| i).collect()
}

/// Checks `fences` then runs `stmts`, in one transaction. When a fence fails, nothing is committed
/// and the indexes of the failed fences are returned.
macro_rules! run_guarded {
    ($c:expr, $fences:expr, $stmts:expr, $rewrite:expr) => {{
        let c = $c;
        let fences: &[Fence] = $fences;
        let mut tx = sqlx::Connection::begin(&mut **c).await?;
        let (sql, args) = fence_stmt(fences, true);
        let sql: Cow<'_, str> = $rewrite(sql.as_ref());
        let mut rows = Vec::with_capacity(fences.len());
        for row in bind_args!(sqlx::query(sqlx::AssertSqlSafe(sql.as_ref())), &args).fetch_all(&mut *tx).await? {
            rows.push(decode_row!(row, [Ty::Str, Ty::I64]));
        }
        let failed = fences_failed(fences, &rows);
        if !failed.is_empty() {
            tx.rollback().await?;
            return Ok(failed);
        }
        for (sql, args) in $stmts {
            let sql: Cow<'_, str> = $rewrite(sql.as_ref());
            bind_args!(sqlx::query(sqlx::AssertSqlSafe(sql.as_ref())), args).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(failed)
    }};
}

impl OwnedConn {
    pub async fn exec_batch(&mut self, stmts: &[Stmt]) -> Result<(), sqlx::Error> {
        match self {
            OwnedConn::Sqlite(c) => sqlite_commit(c, &[], stmts).map(|_| ()),
            OwnedConn::MySql(c) => run_batch!(c, stmts, same),
            OwnedConn::Postgres(c) => run_batch!(c, stmts, numbered),
        }
    }

    /// [`run_guarded!`]: `Ok(failed fences)`, empty when everything committed.
    pub async fn exec_guarded(&mut self, fences: &[Fence], stmts: &[Stmt]) -> Result<Vec<usize>, sqlx::Error> {
        match self {
            OwnedConn::Sqlite(c) => sqlite_commit(c, fences, stmts),
            OwnedConn::MySql(c) => run_guarded!(c, fences, stmts, same),
            OwnedConn::Postgres(c) => run_guarded!(c, fences, stmts, numbered),
        }
    }
}

/// Opens the SQLite writer's own connection to the pool's database, set up as the pool's are
/// (WAL, synchronous=NORMAL, the same busy timeout, foreign keys off).
fn sqlite_open(opts: &SqliteConnectOptions) -> Result<Box<rusqlite::Connection>, sqlx::Error> {
    use rusqlite::OpenFlags;
    let name = opts.get_filename().to_string_lossy().into_owned();
    let mut flags =
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_URI | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    // `sqlite::memory:` is one shared-cache database per pool; the writer must join it.
    if name.starts_with("file:sqlx-in-memory-") {
        flags |= OpenFlags::SQLITE_OPEN_MEMORY | OpenFlags::SQLITE_OPEN_SHARED_CACHE;
    }
    let c = rusqlite::Connection::open_with_flags(&name, flags).map_err(sqlite_error)?;
    c.busy_timeout(SQLITE_BUSY_TIMEOUT).map_err(sqlite_error)?;
    c.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = OFF;").map_err(sqlite_error)?;
    // Merged INSERTs come in several row counts; each is a statement of its own to keep.
    c.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(Box::new(c))
}

/// [`run_guarded!`] (with no guards: [`run_batch!`]) on the writer's own SQLite connection.
fn sqlite_commit(c: &mut rusqlite::Connection, fences: &[Fence], stmts: &[Stmt]) -> Result<Vec<usize>, sqlx::Error> {
    if let ([], [stmt]) = (fences, stmts) {
        sqlite_exec(c, &stmt.0, &stmt.1)?;
        return Ok(Vec::new());
    }
    let r = (|| {
        // The write lock up front: a transaction that starts reading cannot be refused its upgrade.
        c.execute_batch("BEGIN IMMEDIATE").map_err(sqlite_error)?;
        let failed = if fences.is_empty() {
            Vec::new()
        } else {
            let (sql, args) = fence_stmt(fences, false);
            fences_failed(fences, &sqlite_fetch(c, &sql, &args, &[Ty::Str, Ty::I64])?)
        };
        if !failed.is_empty() {
            c.execute_batch("ROLLBACK").map_err(sqlite_error)?;
            return Ok(failed);
        }
        for (sql, args) in stmts {
            sqlite_exec(c, sql, args)?;
        }
        c.execute_batch("COMMIT").map_err(sqlite_error)?;
        Ok(failed)
    })();
    if r.is_err() && !c.is_autocommit() {
        let _ = c.execute_batch("ROLLBACK");
    }
    r
}

/// A statement prepared once per connection, with its arguments bound.
fn sqlite_bound<'c>(c: &'c rusqlite::Connection, sql: &str, args: &[Arg]) -> Result<rusqlite::CachedStatement<'c>, sqlx::Error> {
    let mut st = c.prepare_cached(sql).map_err(sqlite_error)?;
    for (i, a) in args.iter().enumerate() {
        match a {
            Arg::I64(v) => st.raw_bind_parameter(i + 1, v),
            Arg::Str(v) => st.raw_bind_parameter(i + 1, v.as_deref()),
        }
        .map_err(sqlite_error)?;
    }
    Ok(st)
}

/// Runs one statement (prepared once per connection); returns the rows it changed.
fn sqlite_exec(c: &rusqlite::Connection, sql: &str, args: &[Arg]) -> Result<u64, sqlx::Error> {
    let mut st = sqlite_bound(c, sql, args)?;
    // Stepped to the end, so a statement that returns rows runs as well as one that does not.
    let mut rows = st.raw_query();
    while rows.next().map_err(sqlite_error)?.is_some() {}
    drop(rows);
    Ok(c.changes())
}

/// Selects rows, decoding each column as `tys` says (as leniently as [`Val`] reads them).
fn sqlite_fetch(c: &rusqlite::Connection, sql: &str, args: &[Arg], tys: &[Ty]) -> Result<Vec<Vec<Val>>, sqlx::Error> {
    use rusqlite::types::ValueRef;
    let mut st = sqlite_bound(c, sql, args)?;
    let mut rows = st.raw_query();
    let mut out = Vec::new();
    while let Some(r) = rows.next().map_err(sqlite_error)? {
        let mut vals = Vec::with_capacity(tys.len());
        for (i, ty) in tys.iter().enumerate() {
            let v = r.get_ref(i).map_err(sqlite_error)?;
            vals.push(match (ty, v) {
                (Ty::I64, ValueRef::Null) => Val::I64(None),
                (Ty::Str, ValueRef::Null) => Val::Str(None),
                (Ty::I64, ValueRef::Integer(n)) => Val::I64(Some(n)),
                (Ty::I64, ValueRef::Real(f)) => Val::I64(Some(f as i64)),
                (Ty::I64, ValueRef::Text(t) | ValueRef::Blob(t)) => Val::I64(std::str::from_utf8(t).ok().and_then(|t| t.parse().ok())),
                (Ty::Str, ValueRef::Text(t) | ValueRef::Blob(t)) => Val::Str(Some(String::from_utf8_lossy(t).into_owned())),
                (Ty::Str, ValueRef::Integer(n)) => Val::Str(Some(n.to_string())),
                (Ty::Str, ValueRef::Real(f)) => Val::Str(Some(f.to_string())),
            });
        }
        out.push(vals);
    }
    Ok(out)
}

/// SQLite's answer as sqlx reports it (the extended result code as the code, SQLite's message),
/// so errors read, and are sorted into retryable or not, the same whichever connection ran it.
fn sqlite_error(e: rusqlite::Error) -> sqlx::Error {
    let (code, message) = match &e {
        rusqlite::Error::SqliteFailure(f, msg) => (Some(f.extended_code), msg.clone().unwrap_or_else(|| f.to_string())),
        other => (None, other.to_string()),
    };
    sqlx::Error::Database(Box::new(SqliteWriteError { code, message }))
}

#[derive(Debug)]
struct SqliteWriteError {
    code: Option<i32>,
    message: String,
}

impl std::fmt::Display for SqliteWriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.code {
            Some(c) => write!(f, "(code: {c}) {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for SqliteWriteError {}

impl sqlx::error::DatabaseError for SqliteWriteError {
    fn message(&self) -> &str {
        &self.message
    }

    fn code(&self) -> Option<Cow<'_, str>> {
        self.code.map(|c| Cow::Owned(c.to_string()))
    }

    fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
        self
    }

    fn kind(&self) -> sqlx::error::ErrorKind {
        // SQLITE_CONSTRAINT_UNIQUE, SQLITE_CONSTRAINT_PRIMARYKEY, SQLITE_CONSTRAINT_NOTNULL.
        match self.code {
            Some(2067 | 1555) => sqlx::error::ErrorKind::UniqueViolation,
            Some(1299) => sqlx::error::ErrorKind::NotNullViolation,
            _ => sqlx::error::ErrorKind::Other,
        }
    }
}

/// Prepared statements each connection keeps: every statement flowguard runs, merged INSERTs in
/// each row count they come in (sqlx keeps 100 by default, fewer than that).
const STATEMENT_CACHE: usize = 512;

/// Most values bound to one statement: under every backend's limit (SQLite 32766, MySQL and
/// PostgreSQL 65535), whatever the input, so a big batch becomes several statements, never a
/// statement the database refuses.
pub const MAX_ARGS: usize = 30_000;

/// A multi-row `INSERT … VALUES (?, …), (?, …) tail`, taken apart.
struct Insert<'a> {
    head: &'a str,
    row: &'a str,
    params: usize,
    rows: usize,
    tail: &'a str,
}

/// `None` for any statement that is not an INSERT of `?`-only rows (those are left as they are).
fn parse_insert(sql: &str) -> Option<Insert<'_>> {
    if !sql.starts_with("INSERT INTO ") {
        return None;
    }
    let at = sql.find(" VALUES (")? + " VALUES ".len();
    let len = sql[at..].find(')')? + 1;
    let row = &sql[at..at + len];
    if row[1..len - 1].split(',').any(|p| p.trim() != "?") {
        return None;
    }
    let params = row.matches('?').count();
    // A statement may already carry several rows: count them, or it would be taken for one.
    let mut rest = &sql[at + len..];
    let mut rows = 1;
    while let Some(r) = rest.strip_prefix(", ").and_then(|r| r.strip_prefix(row)) {
        rows += 1;
        rest = r;
    }
    Some(Insert { head: &sql[..at], row, params, rows, tail: rest })
}

/// How rows of one INSERT shape, gathered from several statements, may share one statement.
#[derive(Clone, PartialEq)]
enum Share {
    /// As they come: a row cannot meet another of the same statement (no upsert, `DO NOTHING`),
    /// or MySQL applies them one after the other (`ON DUPLICATE KEY UPDATE c = VALUES(c)`).
    InOrder,
    /// An upsert that replaces every other column (`ON CONFLICT (k) DO UPDATE SET c =
    /// excluded.c`): of rows with one key only the last is kept, which is what applying them in
    /// order gives (PostgreSQL refuses to touch a row twice in one statement). The key's
    /// positions in a row.
    LastPerKey(Vec<usize>),
}

/// `None` when rows of the statement must stay apart: an upsert that adds to a row
/// (`n = r.n + excluded.n`) must see each row once.
fn share_of(i: &Insert<'_>) -> Option<Share> {
    let t = i.tail.trim();
    if t.is_empty() || t == "ON CONFLICT DO NOTHING" {
        return Some(Share::InOrder);
    }
    if let Some(set) = t.strip_prefix("ON DUPLICATE KEY UPDATE ") {
        let replaces = set.split(", ").all(|a| {
            a.split_once(" = ").is_some_and(|(c, v)| {
                let c = c.trim();
                v.trim() == c || v.trim().strip_prefix("VALUES(").and_then(|v| v.strip_suffix(')')) == Some(c)
            })
        });
        return replaces.then_some(Share::InOrder);
    }
    let rest = t.strip_prefix("ON CONFLICT (")?;
    let (key, set) = rest.split_once(") DO UPDATE SET ")?;
    let cols = columns(i.head)?;
    let key: Vec<&str> = key.split(',').map(str::trim).collect();
    let mut set_cols = Vec::new();
    for a in set.split(", ") {
        let (c, v) = a.split_once(" = ")?;
        let v = v.trim();
        let from = v.strip_prefix("excluded.").or_else(|| v.strip_prefix("EXCLUDED."))?;
        if from != c.trim() {
            return None;
        }
        set_cols.push(c.trim());
    }
    // Every column is the key or replaced: the last row of a key is the whole outcome.
    if !cols.iter().all(|c| key.contains(c) || set_cols.contains(c)) {
        return None;
    }
    let at: Option<Vec<usize>> = key.iter().map(|k| cols.iter().position(|c| c == k)).collect();
    at.map(Share::LastPerKey)
}

/// The column names of `INSERT INTO t (a, b) VALUES `.
fn columns(head: &str) -> Option<Vec<&str>> {
    let open = head.find('(')?;
    let close = head[open..].find(')')? + open;
    Some(head[open + 1..close].split(',').map(str::trim).collect())
}

/// The one table a statement writes, when that is all it touches: `None` for anything else (a
/// statement that reads another table, DDL), before which every gathered row is written.
fn table_written(sql: &str) -> Option<&str> {
    let rest = sql.strip_prefix("INSERT INTO ").or_else(|| sql.strip_prefix("UPDATE ")).or_else(|| sql.strip_prefix("DELETE FROM "))?;
    if sql.contains("SELECT") {
        return None;
    }
    rest.split([' ', '(']).next().filter(|t| !t.is_empty())
}

/// Rows of one INSERT shape waiting to be written.
struct Pending {
    table: String,
    head: String,
    row: String,
    tail: String,
    params: usize,
    args: Vec<Arg>,
    share: Share,
}

impl Pending {
    /// The statements for these rows, each with at most [`MAX_ARGS`] values.
    fn emit(self, out: &mut Vec<Stmt>) {
        let params = self.params.max(1);
        let mut args = self.args;
        if let Share::LastPerKey(key) = &self.share {
            let mut seen = std::collections::HashSet::new();
            let mut rows: Vec<&[Arg]> =
                args.chunks(params).rev().filter(|r| seen.insert(key.iter().map(|&k| &r[k]).collect::<Vec<_>>())).collect();
            rows.reverse();
            args = rows.concat();
        }
        let per = (MAX_ARGS / params).max(1) * params;
        while !args.is_empty() {
            let rest = if args.len() > per { args.split_off(per) } else { Vec::new() };
            let n = args.len() / params;
            let sql = format!("{}{}{}", self.head, vec![self.row.as_str(); n].join(", "), self.tail);
            out.push((Cow::Owned(sql), args));
            args = rest;
        }
    }
}

/// INSERTs of one shape in a batch become one multi-row INSERT (under load a group commit
/// carries one statement per table instead of one per record), and any multi-row INSERT is cut
/// so that no statement binds more than [`MAX_ARGS`] values. Rows are gathered across statements
/// on other tables; a statement on a table writes the rows gathered for that table before it, and
/// one whose tables are not known writes all of them first, so each table sees its statements in
/// their order. (There are no foreign keys or triggers between tables.) Without `gather` only
/// consecutive rows of one shape join: on PostgreSQL gathering made 64 concurrent runs ~20 %
/// slower (while it made MariaDB's 2.4× faster), for reasons not yet found.
pub fn merge_inserts(stmts: Vec<Stmt>, gather: bool) -> Vec<Stmt> {
    let mut out: Vec<Stmt> = Vec::with_capacity(stmts.len());
    let mut open: Vec<Pending> = Vec::new();
    for (sql, args) in stmts {
        let parsed = parse_insert(&sql).filter(|i| i.params > 0 && args.len() == i.params * i.rows);
        let table = table_written(&sql).map(str::to_owned);
        if let (Some(i), Some(t)) = (&parsed, &table) {
            let share = share_of(i);
            if let Some(p) = open.iter_mut().find(|p| share.is_some() && p.head == i.head && p.row == i.row && p.tail == i.tail) {
                p.args.extend(args);
                continue;
            }
            if !gather {
                flush(&mut open, None, &mut out);
            }
            let pending = Pending {
                table: t.clone(),
                head: i.head.to_owned(),
                row: i.row.to_owned(),
                tail: i.tail.to_owned(),
                params: i.params,
                args,
                share: share.clone().unwrap_or(Share::InOrder),
            };
            if share.is_some() {
                open.push(pending);
                continue;
            }
            flush(&mut open, Some(t.as_str()).filter(|_| gather), &mut out);
            // Alone, but still cut to the bind limit.
            pending.emit(&mut out);
            continue;
        }
        flush(&mut open, table.as_deref().filter(|_| gather), &mut out);
        out.push((sql, args));
    }
    flush(&mut open, None, &mut out);
    out
}

/// Writes the rows gathered for `table` (for every table when `None`), in the order their shapes
/// first came.
fn flush(open: &mut Vec<Pending>, table: Option<&str>, out: &mut Vec<Stmt>) {
    let (now, later): (Vec<Pending>, Vec<Pending>) = std::mem::take(open).into_iter().partition(|p| table.is_none_or(|t| p.table == t));
    *open = later;
    for p in now {
        p.emit(out);
    }
}

/// One connection taken from the pool (for migrations, which must run where the lock is held).
pub enum Conn<'c> {
    Sqlite(&'c mut sqlx::pool::PoolConnection<sqlx::Sqlite>),
    MySql(&'c mut sqlx::pool::PoolConnection<sqlx::MySql>),
    Postgres(&'c mut sqlx::pool::PoolConnection<sqlx::Postgres>),
}

impl Conn<'_> {
    pub fn backend(&self) -> Backend {
        match self {
            Conn::Sqlite(_) => Backend::Sqlite,
            Conn::MySql(_) => Backend::MySql,
            Conn::Postgres(_) => Backend::Postgres,
        }
    }

    pub async fn exec(&mut self, sql: &str, args: &[Arg]) -> Result<u64, sqlx::Error> {
        Ok(match self {
            Conn::Sqlite(c) => bind_args!(sqlx::query(sqlx::AssertSqlSafe(sql)), args).execute(&mut ***c).await?.rows_affected(),
            Conn::MySql(c) => bind_args!(sqlx::query(sqlx::AssertSqlSafe(sql)), args).execute(&mut ***c).await?.rows_affected(),
            Conn::Postgres(c) => {
                let sql = pg_sql(sql);
                bind_args!(sqlx::query(sqlx::AssertSqlSafe(sql.as_str())), args).execute(&mut ***c).await?.rows_affected()
            }
        })
    }

    pub async fn fetch(&mut self, sql: &str, args: &[Arg], tys: &[Ty]) -> Result<Vec<Vec<Val>>, sqlx::Error> {
        let mut out = Vec::new();
        match self {
            Conn::Sqlite(c) => {
                for row in bind_args!(sqlx::query(sqlx::AssertSqlSafe(sql)), args).fetch_all(&mut ***c).await? {
                    out.push(decode_row!(row, tys));
                }
            }
            Conn::MySql(c) => {
                for row in bind_args!(sqlx::query(sqlx::AssertSqlSafe(sql)), args).fetch_all(&mut ***c).await? {
                    out.push(decode_row!(row, tys));
                }
            }
            Conn::Postgres(c) => {
                let sql = pg_sql(sql);
                for row in bind_args!(sqlx::query(sqlx::AssertSqlSafe(sql.as_str())), args).fetch_all(&mut ***c).await? {
                    out.push(decode_row!(row, tys));
                }
            }
        }
        Ok(out)
    }

    /// Runs a script of `;`-separated statements (migrations).
    pub async fn exec_script(&mut self, script: &str) -> Result<(), sqlx::Error> {
        for stmt in split_statements(script) {
            self.exec(&stmt, &[]).await?;
        }
        Ok(())
    }
}

impl Pool {
    /// Whether `e` means the database cannot be reached (rather than a refused statement).
    pub fn is_unreachable(e: &sqlx::Error) -> bool {
        is_unreachable(e)
    }

    pub fn backend(&self) -> Backend {
        match self {
            Pool::Sqlite(_, _) => Backend::Sqlite,
            Pool::MySql(_) => Backend::MySql,
            Pool::Postgres(_) => Backend::Postgres,
        }
    }

    /// Opens a pool. For MySQL and PostgreSQL one connection is made first, on its own and within
    /// `connect_timeout`, so that a refused or rejected connection reports the server's answer
    /// (the pool itself would retry a refused connection until its timeout and say only that).
    pub async fn connect(url: &str, settings: &PoolSettings) -> Result<Pool, sqlx::Error> {
        // One connection is kept by the group-commit writer; queries need at least one more.
        let max = settings.max_connections.max(2);
        let timeout = settings.connect_timeout;
        if url.starts_with("sqlite:") {
            let opts = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(SQLITE_BUSY_TIMEOUT)
                .foreign_keys(false)
                .disable_statement_logging();
            let pool = SqlitePoolOptions::new().max_connections(max.clamp(1, 8)).connect_with(opts).await?;
            Ok(Pool::Sqlite(pool, Arc::default()))
        } else if url.starts_with("mysql:") || url.starts_with("mariadb:") {
            let url = url.replacen("mariadb:", "mysql:", 1);
            let opts = MySqlConnectOptions::from_str(&url)?
                .charset("utf8mb4")
                .statement_cache_capacity(STATEMENT_CACHE)
                .disable_statement_logging();
            probe(opts.connect(), timeout).await?;
            let pool = MySqlPoolOptions::new()
                .max_connections(max)
                .acquire_timeout(timeout)
                .after_release(|c, _| Box::pin(released_alive(c)))
                .connect_with(opts)
                .await?;
            Ok(Pool::MySql(pool))
        } else {
            let mut opts = PgConnectOptions::from_str(url)?.statement_cache_capacity(STATEMENT_CACHE).disable_statement_logging();
            if opts.get_application_name().is_none() {
                // Lets a DBA tell flowguard's sessions apart in pg_stat_activity.
                opts = opts.application_name("flowguard");
            }
            probe(opts.connect(), timeout).await?;
            let pool = PgPoolOptions::new()
                .max_connections(max)
                .acquire_timeout(timeout)
                .after_release(|c, _| Box::pin(released_alive(c)))
                .connect_with(opts)
                .await?;
            Ok(Pool::Postgres(pool))
        }
    }

    /// Runs `f` on one connection while holding the database's migration lock (`GET_LOCK` on
    /// MySQL/MariaDB, `pg_advisory_lock` on PostgreSQL, one `BEGIN IMMEDIATE` transaction on SQLite), so two
    /// processes starting at once do not migrate over each other.
    pub async fn with_migration_lock<T>(&self, f: impl AsyncFnOnce(&mut Conn<'_>) -> anyhow::Result<T>) -> anyhow::Result<T> {
        match self {
            Pool::Sqlite(p, _) => {
                // One write transaction around the whole migration: a second process waits for it
                // (busy timeout), then finds the versions applied; DDL is transactional in SQLite.
                let mut c = p.acquire().await?;
                sqlx::query("BEGIN IMMEDIATE").execute(&mut *c).await?;
                let r = f(&mut Conn::Sqlite(&mut c)).await;
                let end = if r.is_ok() { "COMMIT" } else { "ROLLBACK" };
                let ended = sqlx::query(end).execute(&mut *c).await;
                match (r, ended) {
                    (Ok(v), Ok(_)) => Ok(v),
                    (Ok(_), Err(e)) => Err(e.into()),
                    (Err(e), _) => Err(e),
                }
            }
            Pool::MySql(p) => {
                let mut c = p.acquire().await?;
                let got: Option<i64> = sqlx::query_scalar(MYSQL_LOCK).fetch_one(&mut *c).await?;
                if got != Some(1) {
                    anyhow::bail!("another flowguard process held the migration lock for 60 s");
                }
                let r = f(&mut Conn::MySql(&mut c)).await;
                let _ = sqlx::query(MYSQL_UNLOCK).execute(&mut *c).await;
                r
            }
            Pool::Postgres(p) => {
                let mut c = p.acquire().await?;
                sqlx::query("SELECT pg_advisory_lock($1)").bind(PG_LOCK_KEY).execute(&mut *c).await?;
                let r = f(&mut Conn::Postgres(&mut c)).await;
                let _ = sqlx::query("SELECT pg_advisory_unlock($1)").bind(PG_LOCK_KEY).execute(&mut *c).await;
                r
            }
        }
    }

    /// Runs `f` while this process holds the database-wide lock `name`: `GET_LOCK` on
    /// MySQL/MariaDB, an advisory lock on PostgreSQL, each kept on one connection of the pool until
    /// `f` ends (`f` uses the pool's other connections as usual). SQLite has one `serve` per file,
    /// so `f` runs as it is. The lock lives on a connection: run this where it cannot be cancelled
    /// half-way (in a task of its own); a lock that cannot be let go closes its connection.
    pub async fn with_named_lock<T>(&self, name: &str, f: impl AsyncFnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
        match self {
            Pool::Sqlite(_, _) => f().await,
            Pool::MySql(p) => {
                let mut c = p.acquire().await?;
                let got: Option<i64> =
                    sqlx::query_scalar("SELECT GET_LOCK(CONCAT('flowguard_', ?, '_', LEFT(MD5(IFNULL(DATABASE(), '')), 16)), 60)")
                        .bind(name)
                        .fetch_one(&mut *c)
                        .await?;
                if got != Some(1) {
                    anyhow::bail!("another flowguard process held the database lock `{name}` for 60 s");
                }
                let r = f().await;
                let released = sqlx::query("SELECT RELEASE_LOCK(CONCAT('flowguard_', ?, '_', LEFT(MD5(IFNULL(DATABASE(), '')), 16)))")
                    .bind(name)
                    .execute(&mut *c)
                    .await;
                if released.is_err() {
                    drop(c.detach());
                }
                r
            }
            Pool::Postgres(p) => {
                let mut c = p.acquire().await?;
                sqlx::query("SELECT pg_advisory_lock(hashtextextended($1, 0))").bind(name).execute(&mut *c).await?;
                let r = f().await;
                if sqlx::query("SELECT pg_advisory_unlock(hashtextextended($1, 0))").bind(name).execute(&mut *c).await.is_err() {
                    drop(c.detach());
                }
                r
            }
        }
    }

    /// Runs `f` inside one transaction on one connection: committed when `f` returns `Ok`, rolled
    /// back otherwise. SQLite takes its write lock at the start (`BEGIN IMMEDIATE`), so a
    /// read-then-write inside cannot interleave with another process.
    pub async fn with_tx<T>(&self, f: impl AsyncFnOnce(&mut Conn<'_>) -> anyhow::Result<T>) -> anyhow::Result<T> {
        macro_rules! tx {
            ($p:expr, $variant:ident, $begin:literal) => {{
                let mut c = $p.acquire().await?;
                sqlx::raw_sql($begin).execute(&mut *c).await?;
                let r = f(&mut Conn::$variant(&mut c)).await;
                let end = if r.is_ok() { "COMMIT" } else { "ROLLBACK" };
                match sqlx::raw_sql(end).execute(&mut *c).await {
                    Ok(_) => r,
                    Err(e) if r.is_ok() => Err(e.into()),
                    Err(_) => r,
                }
            }};
        }
        match self {
            Pool::Sqlite(p, _) => tx!(p, Sqlite, "BEGIN IMMEDIATE"),
            Pool::MySql(p) => tx!(p, MySql, "START TRANSACTION"),
            Pool::Postgres(p) => tx!(p, Postgres, "BEGIN"),
        }
    }

    /// The server's version string (`SELECT VERSION()`; SQLite's library version).
    pub async fn server_version(&self) -> Result<String, sqlx::Error> {
        let sql = match self {
            Pool::Sqlite(_, _) => "SELECT sqlite_version()",
            _ => "SELECT VERSION()",
        };
        Ok(self.fetch(sql, &[], &[Ty::Str]).await?.into_iter().next().and_then(|r| r[0].str()).unwrap_or_default())
    }

    /// A connection for the writer to keep.
    pub async fn acquire_owned(&self) -> Result<OwnedConn, sqlx::Error> {
        Ok(match self {
            Pool::Sqlite(p, _) => OwnedConn::Sqlite(sqlite_open(&p.connect_options())?),
            Pool::MySql(p) => OwnedConn::MySql(p.acquire().await?),
            Pool::Postgres(p) => OwnedConn::Postgres(p.acquire().await?),
        })
    }

    /// Runs statements in one transaction: all of them commit, or none.
    pub async fn exec_batch(&self, stmts: &[Stmt]) -> Result<(), sqlx::Error> {
        match self {
            Pool::Sqlite(p, _) => {
                let mut tx = p.begin().await?;
                for (sql, args) in stmts {
                    bind_args!(sqlx::query(sqlx::AssertSqlSafe(sql.as_ref())), args).execute(&mut *tx).await?;
                }
                tx.commit().await
            }
            Pool::MySql(p) => {
                let mut tx = p.begin().await?;
                for (sql, args) in stmts {
                    bind_args!(sqlx::query(sqlx::AssertSqlSafe(sql.as_ref())), args).execute(&mut *tx).await?;
                }
                tx.commit().await
            }
            Pool::Postgres(p) => {
                let mut tx = p.begin().await?;
                for (sql, args) in stmts {
                    let sql = pg_sql(sql);
                    bind_args!(sqlx::query(sqlx::AssertSqlSafe(sql.as_str())), args).execute(&mut *tx).await?;
                }
                tx.commit().await
            }
        }
    }

    /// Runs one statement outside a transaction; returns the rows affected.
    pub async fn exec(&self, sql: &str, args: &[Arg]) -> Result<u64, sqlx::Error> {
        Ok(match self {
            Pool::Sqlite(p, _) => bind_args!(sqlx::query(sqlx::AssertSqlSafe(sql)), args).execute(p).await?.rows_affected(),
            Pool::MySql(p) => bind_args!(sqlx::query(sqlx::AssertSqlSafe(sql)), args).execute(p).await?.rows_affected(),
            Pool::Postgres(p) => {
                let sql = pg_sql(sql);
                bind_args!(sqlx::query(sqlx::AssertSqlSafe(sql.as_str())), args).execute(p).await?.rows_affected()
            }
        })
    }

    /// Selects rows, decoding each column as `tys` says.
    pub async fn fetch(&self, sql: &str, args: &[Arg], tys: &[Ty]) -> Result<Vec<Vec<Val>>, sqlx::Error> {
        let mut out = Vec::new();
        match self {
            Pool::Sqlite(p, _) => {
                for row in bind_args!(sqlx::query(sqlx::AssertSqlSafe(sql)), args).fetch_all(p).await? {
                    out.push(decode_row!(row, tys));
                }
            }
            Pool::MySql(p) => {
                for row in bind_args!(sqlx::query(sqlx::AssertSqlSafe(sql)), args).fetch_all(p).await? {
                    out.push(decode_row!(row, tys));
                }
            }
            Pool::Postgres(p) => {
                let sql = pg_sql(sql);
                for row in bind_args!(sqlx::query(sqlx::AssertSqlSafe(sql.as_str())), args).fetch_all(p).await? {
                    out.push(decode_row!(row, tys));
                }
            }
        }
        Ok(out)
    }

    /// Runs a script of `;`-separated statements (migrations).
    pub async fn exec_script(&self, script: &str) -> Result<(), sqlx::Error> {
        for stmt in split_statements(script) {
            self.exec(&stmt, &[]).await?;
        }
        Ok(())
    }

    /// Closes the pool. Bounded: a connection that never comes back must not keep the process
    /// from ending (SIGTERM ends `serve` whatever the database does).
    pub async fn close(&self) {
        let close = async {
            match self {
                Pool::Sqlite(p, _) => p.close().await,
                Pool::MySql(p) => p.close().await,
                Pool::Postgres(p) => p.close().await,
            }
        };
        if tokio::time::timeout(CLOSE_PATIENCE, close).await.is_err() {
            tracing::warn!("connections still out after {}; closing anyway", humantime::format_duration(CLOSE_PATIENCE));
        }
    }
}

/// The error means the database cannot be reached (down, refusing connections, out of
/// connections), not that it refused a statement.
fn is_unreachable(e: &sqlx::Error) -> bool {
    match e {
        // A protocol error here is a connection cut mid-exchange (e.g. while connecting).
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(d) => {
            if let Some(m) = d.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
                // 1040 too many connections, 1053 shutdown, 1927 killed, 2006 gone away, 2013 lost.
                return matches!(m.number(), 1040 | 1053 | 1927 | 2006 | 2013);
            }
            let code = d.code().unwrap_or_default();
            // PostgreSQL class 08 (connection), 57P01–57P03 (shutdown), 53300 (too many connections).
            code.starts_with("08") || matches!(code.as_ref(), "57P01" | "57P02" | "57P03" | "53300")
        }
        _ => false,
    }
}

/// Splits a SQL script on `;` at line ends, dropping `--` comment lines.
pub fn split_statements(script: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in script.lines() {
        let t = line.trim();
        if t.starts_with("--") || t.is_empty() {
            continue;
        }
        cur.push_str(line);
        cur.push('\n');
        if t.ends_with(';') {
            out.push(cur.trim().trim_end_matches(';').to_owned());
            cur.clear();
        }
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_owned());
    }
    out
}

/// A transaction on one pooled connection, for read-decide-write steps that must hold across
/// processes: rows are locked with `FOR UPDATE` on MySQL/PostgreSQL (at READ COMMITTED, so
/// statements see what others committed after the lock was granted), and SQLite's
/// `BEGIN IMMEDIATE` takes the database's write lock up front. Dropped without `commit`, it rolls
/// back.
pub enum Tx {
    Sqlite(SqliteTx),
    MySql(sqlx::Transaction<'static, sqlx::MySql>),
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
}

impl Pool {
    pub async fn begin(&self) -> Result<Tx, sqlx::Error> {
        Ok(match self {
            Pool::Sqlite(p, idle) => Tx::Sqlite(SqliteTx::begin(&p.connect_options(), idle).await?),
            Pool::MySql(p) => {
                let mut c = p.acquire().await?;
                // Applies to the next transaction only; REPEATABLE READ would add gap locks.
                sqlx::query("SET TRANSACTION ISOLATION LEVEL READ COMMITTED").execute(&mut *c).await?;
                Tx::MySql(sqlx::Transaction::begin(c, None).await?)
            }
            Pool::Postgres(p) => Tx::Postgres(p.begin().await?),
        })
    }
}

/// SQLite connections for [`Tx`], kept between transactions.
#[derive(Debug, Default)]
pub struct SqliteIdle(Mutex<Vec<rusqlite::Connection>>);

/// A SQLite transaction on a connection of our own, whose statements run inline on the calling
/// thread: no hop to sqlx's worker thread per statement (an alert's raise is about ten). Once
/// `BEGIN IMMEDIATE` holds the write lock, no statement waits for another connection; only the
/// `BEGIN` may, and then it waits on a blocking thread, not the runtime's.
pub struct SqliteTx {
    conn: Option<Box<rusqlite::Connection>>,
    idle: Arc<SqliteIdle>,
}

impl SqliteTx {
    async fn begin(opts: &SqliteConnectOptions, idle: &Arc<SqliteIdle>) -> Result<SqliteTx, sqlx::Error> {
        let kept = idle.0.lock().expect("idle").pop().map(Box::new);
        let c = match kept {
            Some(c) => c,
            None => sqlite_open(opts)?,
        };
        c.busy_timeout(Duration::ZERO).map_err(sqlite_error)?;
        let begun = c.execute_batch("BEGIN IMMEDIATE");
        c.busy_timeout(SQLITE_BUSY_TIMEOUT).map_err(sqlite_error)?;
        let c = match begun {
            Ok(()) => c,
            // Another connection writes: wait for it (the busy timeout) off the runtime.
            Err(rusqlite::Error::SqliteFailure(f, _)) if f.code == rusqlite::ErrorCode::DatabaseBusy => {
                tokio::task::spawn_blocking(move || c.execute_batch("BEGIN IMMEDIATE").map(|()| c))
                    .await
                    .map_err(|_| sqlx::Error::WorkerCrashed)?
                    .map_err(sqlite_error)?
            }
            Err(e) => return Err(sqlite_error(e)),
        };
        Ok(SqliteTx { conn: Some(c), idle: idle.clone() })
    }

    fn conn(&self) -> &rusqlite::Connection {
        self.conn.as_deref().expect("an open transaction has its connection")
    }

    fn commit(mut self) -> Result<(), sqlx::Error> {
        let r = self.conn().execute_batch("COMMIT").map_err(sqlite_error);
        if r.is_ok() {
            // Back to the idle list as it is (dropped: rolled back first).
            if let Some(c) = self.conn.take() {
                self.keep(*c);
            }
        }
        r
    }

    fn keep(&self, c: rusqlite::Connection) {
        let mut idle = self.idle.0.lock().expect("idle");
        if idle.len() < 4 {
            idle.push(c);
        }
    }
}

impl Drop for SqliteTx {
    fn drop(&mut self) {
        if let Some(c) = self.conn.take() {
            // Rolled back; a connection that cannot roll back is not kept.
            if c.is_autocommit() || c.execute_batch("ROLLBACK").is_ok() {
                self.keep(*c);
            }
        }
    }
}

impl Tx {
    pub fn backend(&self) -> Backend {
        match self {
            Tx::Sqlite(_) => Backend::Sqlite,
            Tx::MySql(_) => Backend::MySql,
            Tx::Postgres(_) => Backend::Postgres,
        }
    }

    /// ` FOR UPDATE` where the backend locks rows (SQLite already holds the write lock).
    pub fn for_update(&self) -> &'static str {
        match self {
            Tx::Sqlite(_) => "",
            _ => " FOR UPDATE",
        }
    }

    pub async fn exec(&mut self, sql: &str, args: &[Arg]) -> Result<u64, sqlx::Error> {
        Ok(match self {
            Tx::Sqlite(t) => sqlite_exec(t.conn(), sql, args)?,
            Tx::MySql(t) => bind_args!(sqlx::query(sqlx::AssertSqlSafe(sql)), args).execute(&mut **t).await?.rows_affected(),
            Tx::Postgres(t) => {
                let sql = pg_sql(sql);
                bind_args!(sqlx::query(sqlx::AssertSqlSafe(sql.as_str())), args).execute(&mut **t).await?.rows_affected()
            }
        })
    }

    pub async fn fetch(&mut self, sql: &str, args: &[Arg], tys: &[Ty]) -> Result<Vec<Vec<Val>>, sqlx::Error> {
        let mut out = Vec::new();
        match self {
            Tx::Sqlite(t) => return sqlite_fetch(t.conn(), sql, args, tys),
            Tx::MySql(t) => {
                for row in bind_args!(sqlx::query(sqlx::AssertSqlSafe(sql)), args).fetch_all(&mut **t).await? {
                    out.push(decode_row!(row, tys));
                }
            }
            Tx::Postgres(t) => {
                let sql = pg_sql(sql);
                for row in bind_args!(sqlx::query(sqlx::AssertSqlSafe(sql.as_str())), args).fetch_all(&mut **t).await? {
                    out.push(decode_row!(row, tys));
                }
            }
        }
        Ok(out)
    }

    pub async fn commit(self) -> Result<(), sqlx::Error> {
        match self {
            Tx::Sqlite(t) => t.commit(),
            Tx::MySql(t) => t.commit().await,
            Tx::Postgres(t) => t.commit().await,
        }
    }
}

/// A transaction lost to another (deadlock, serialisation failure, SQLite busy): run it again.
pub fn is_conflict(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) => {
            if let Some(m) = d.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
                return matches!(m.number(), 1205 | 1213);
            }
            let code = d.code().unwrap_or_default();
            matches!(code.as_ref(), "40001" | "40P01" | "5" | "6" | "261" | "517") || d.message().contains("database is locked")
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_never_reaches_the_database() {
        for a in [Arg::from("a\0b"), Arg::from("a\0b".to_owned()), Arg::from(Some("a\0b")), Arg::from(Some("a\0b".to_owned()))] {
            assert!(matches!(a, Arg::Str(Some(ref s)) if s == "a\u{FFFD}b"), "{a:?}");
        }
    }

    #[test]
    fn placeholders_are_numbered_for_postgres() {
        assert_eq!(pg_sql("SELECT a FROM t WHERE b = ? AND c = ?"), "SELECT a FROM t WHERE b = $1 AND c = $2");
    }

    #[test]
    fn consecutive_inserts_merge_into_one() {
        let ins =
            |v: i64| -> Stmt { (Cow::Borrowed("INSERT INTO t (a, b) VALUES (?, ?) ON CONFLICT DO NOTHING"), vec![v.into(), v.into()]) };
        let upd: Stmt = (Cow::Borrowed("UPDATE t SET b = ? WHERE a = ?"), vec![1i64.into(), 1i64.into()]);
        let out = merge_inserts(vec![ins(1), ins(2), ins(3), upd, ins(4)], true);
        assert_eq!(out.len(), 3);
        assert_eq!(out[0].0, "INSERT INTO t (a, b) VALUES (?, ?), (?, ?), (?, ?) ON CONFLICT DO NOTHING");
        assert_eq!(out[0].1.len(), 6);
        assert!(out[1].0.starts_with("UPDATE"));
        assert_eq!(out[2].0, "INSERT INTO t (a, b) VALUES (?, ?) ON CONFLICT DO NOTHING");
    }

    #[test]
    fn multi_row_statements_keep_every_row_when_merged() {
        // Two 500-row statements (an ingestion batch of 1000) must stay 1000 rows, not 501.
        let five_hundred = |base: i64| -> Stmt {
            let sql = format!("INSERT INTO t (a, b, c) VALUES {}", vec!["(?, ?, ?)"; 500].join(", "));
            (Cow::Owned(sql), (0..1500).map(|i| Arg::from(base + i)).collect())
        };
        let out = merge_inserts(vec![five_hundred(0), five_hundred(10_000)], true);
        let rows: usize = out.iter().map(|(sql, _)| sql.matches("(?, ?, ?)").count()).sum();
        assert_eq!(rows, 1000);
        for (sql, args) in &out {
            assert_eq!(sql.matches('?').count(), args.len(), "placeholders and values agree");
        }
    }

    #[test]
    fn no_statement_binds_more_than_the_backend_limit() {
        let one =
            |v: i64| -> Stmt { (Cow::Borrowed("INSERT INTO t (a, b, c, d, e, f, g) VALUES (?, ?, ?, ?, ?, ?, ?)"), vec![v.into(); 7]) };
        let out = merge_inserts((0..20_004).map(one).collect(), true);
        assert!(out.len() > 1);
        assert!(out.iter().all(|(sql, args)| args.len() <= MAX_ARGS && sql.matches('?').count() == args.len()));
        assert_eq!(out.iter().map(|(_, a)| a.len()).sum::<usize>(), 20_004 * 7);
        // One statement built too big elsewhere is cut as well.
        let big = (Cow::Owned(format!("INSERT INTO t (a) VALUES {}", vec!["(?)"; 40_000].join(", "))), vec![Arg::from(1i64); 40_000]);
        let out = merge_inserts(vec![big], true);
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn upserts_that_add_are_not_merged() {
        let up = || -> Stmt {
            (
                Cow::Borrowed("INSERT INTO r (k, n) VALUES (?, ?) ON CONFLICT (k) DO UPDATE SET n = r.n + EXCLUDED.n"),
                vec![1i64.into(), 1i64.into()],
            )
        };
        assert_eq!(merge_inserts(vec![up(), up()], true).len(), 2);
        let my = || -> Stmt { (Cow::Borrowed("INSERT INTO a (x) VALUES (?) ON DUPLICATE KEY UPDATE seq = seq"), vec![1i64.into()]) };
        assert_eq!(merge_inserts(vec![my(), my()], true).len(), 1);
    }

    #[test]
    fn rows_gather_across_statements_on_other_tables() {
        let a = |v: i64| -> Stmt { (Cow::Borrowed("INSERT INTO a (x) VALUES (?) ON CONFLICT DO NOTHING"), vec![v.into()]) };
        let b = |v: i64| -> Stmt {
            (
                Cow::Borrowed("INSERT INTO b (k, out) VALUES (?, ?) ON CONFLICT (k) DO UPDATE SET out = excluded.out"),
                vec![1i64.into(), v.into()],
            )
        };
        let upd = |t: &'static str| -> Stmt { (Cow::Owned(format!("UPDATE {t} SET y = ? WHERE id = ?")), vec![1i64.into(), 1i64.into()]) };
        // An UPDATE of another table lets the rows gather on; of the same table, it comes after them.
        let out = merge_inserts(vec![a(1), b(10), a(2), upd("c"), b(20), a(3), upd("a"), a(4)], true);
        let sqls: Vec<&str> = out.iter().map(|(s, _)| s.as_ref()).collect();
        assert_eq!(
            sqls,
            vec![
                "UPDATE c SET y = ? WHERE id = ?",
                "INSERT INTO a (x) VALUES (?), (?), (?) ON CONFLICT DO NOTHING",
                "UPDATE a SET y = ? WHERE id = ?",
                "INSERT INTO b (k, out) VALUES (?, ?) ON CONFLICT (k) DO UPDATE SET out = excluded.out",
                "INSERT INTO a (x) VALUES (?) ON CONFLICT DO NOTHING",
            ]
        );
        // Two rows of one key in a replacing upsert: the last one, as if applied in order.
        assert_eq!(out[3].1, vec![Arg::from(1i64), Arg::from(20i64)]);
        // Not gathered (PostgreSQL): only consecutive rows of one shape join, in the order given.
        let apart = merge_inserts(vec![a(1), b(10), a(2), a(3), upd("c"), a(4)], false);
        let sqls: Vec<&str> = apart.iter().map(|(s, _)| s.as_ref()).collect();
        assert_eq!(
            sqls,
            vec![
                "INSERT INTO a (x) VALUES (?) ON CONFLICT DO NOTHING",
                "INSERT INTO b (k, out) VALUES (?, ?) ON CONFLICT (k) DO UPDATE SET out = excluded.out",
                "INSERT INTO a (x) VALUES (?), (?) ON CONFLICT DO NOTHING",
                "UPDATE c SET y = ? WHERE id = ?",
                "INSERT INTO a (x) VALUES (?) ON CONFLICT DO NOTHING",
            ]
        );
        // A statement that reads another table writes everything gathered first.
        let sub: Stmt = (Cow::Borrowed("UPDATE c SET y = (SELECT MAX(x) FROM a)"), vec![]);
        let out = merge_inserts(vec![a(1), sub, a(2)], true);
        assert_eq!(out.len(), 3);
        assert!(out[1].0.starts_with("UPDATE c"));
    }

    #[test]
    fn an_upsert_that_keeps_a_column_it_does_not_replace_is_not_merged() {
        let up = |v: i64| -> Stmt {
            (
                Cow::Borrowed("INSERT INTO b (k, first, out) VALUES (?, ?, ?) ON CONFLICT (k) DO UPDATE SET out = excluded.out"),
                vec![1i64.into(), v.into(), v.into()],
            )
        };
        assert_eq!(merge_inserts(vec![up(1), up(2)], true).len(), 2);
        let my = |v: i64| -> Stmt {
            (Cow::Borrowed("INSERT INTO b (k, out) VALUES (?, ?) ON DUPLICATE KEY UPDATE out = VALUES(out)"), vec![1i64.into(), v.into()])
        };
        let out = merge_inserts(vec![my(1), my(2)], true);
        assert_eq!(out.len(), 1, "MySQL applies the rows in order");
        assert_eq!(out[0].1.len(), 4);
    }

    #[test]
    fn scripts_split_on_statement_ends() {
        let s = split_statements("-- c\nCREATE TABLE a (\n x INT\n);\nCREATE INDEX i ON a (x);\n");
        assert_eq!(s.len(), 2);
        assert!(s[0].starts_with("CREATE TABLE a"));
    }
}
