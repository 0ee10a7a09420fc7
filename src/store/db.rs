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
    /// One column of many rows, bound as an array: PostgreSQL's `UNNEST` form of a multi-row
    /// INSERT ([`merge_writes`]). Never made for another backend.
    I64s(Vec<Option<i64>>),
    Strs(Vec<Option<String>>),
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

/// Binds one [`Arg`] to a query of one backend.
trait BindArg: Sized {
    fn bind_arg(self, a: &Arg) -> Self;
}

impl BindArg for sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments> {
    fn bind_arg(self, a: &Arg) -> Self {
        match a {
            Arg::I64(v) => self.bind(*v),
            Arg::Str(v) => self.bind(v.as_deref()),
            Arg::I64s(v) => self.bind(v.as_slice()),
            Arg::Strs(v) => self.bind(v.as_slice()),
        }
    }
}

macro_rules! bind_scalars {
    ($($db:ty),*) => {$(
        impl BindArg for sqlx::query::Query<'_, $db, <$db as sqlx::Database>::Arguments> {
            fn bind_arg(self, a: &Arg) -> Self {
                match a {
                    Arg::I64(v) => self.bind(*v),
                    Arg::Str(v) => self.bind(v.as_deref()),
                    // merge_writes makes arrays for PostgreSQL only.
                    Arg::I64s(_) | Arg::Strs(_) => unreachable!("an array bound outside PostgreSQL"),
                }
            }
        }
    )*};
}
bind_scalars!(sqlx::MySql, sqlx::Sqlite);

/// Binds `$args` to the query `$q`, whichever backend it is for.
macro_rules! bind_args {
    ($q:expr, $args:expr) => {{
        let mut q = $q;
        for a in $args {
            q = q.bind_arg(a);
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
/// write lock already): one round trip however many writes share the commit. On PostgreSQL the
/// ids travel as one array, so the statement is the same for any number of them.
fn fence_stmt(fences: &[Fence], backend: Backend) -> Stmt {
    if backend == Backend::Postgres {
        let ids = fences.iter().map(|f| Some(f.run_id.clone())).collect();
        return (Cow::Borrowed("SELECT id, epoch FROM runs WHERE id = ANY(?::text[]) FOR UPDATE"), vec![Arg::Strs(ids)]);
    }
    let marks = vec!["?"; fences.len()].join(", ");
    let lock = if backend == Backend::MySql { " FOR UPDATE" } else { "" };
    let sql = format!("SELECT id, epoch FROM runs WHERE id IN ({marks}){lock}");
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
    ($c:expr, $fences:expr, $stmts:expr, $rewrite:expr, $backend:expr) => {{
        let c = $c;
        let fences: &[Fence] = $fences;
        let mut tx = sqlx::Connection::begin(&mut **c).await?;
        let (sql, args) = fence_stmt(fences, $backend);
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
            OwnedConn::MySql(c) => run_guarded!(c, fences, stmts, same, Backend::MySql),
            OwnedConn::Postgres(c) => run_guarded!(c, fences, stmts, numbered, Backend::Postgres),
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
            let (sql, args) = fence_stmt(fences, Backend::Sqlite);
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
            Arg::I64s(_) | Arg::Strs(_) => Err(rusqlite::Error::ToSqlConversionFailure("SQLite binds no arrays".into())),
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
    let params = placeholders(&row.as_bytes()[1..len - 1])?;
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
    /// or MySQL applies them one after the other (`ON DUPLICATE KEY UPDATE`).
    InOrder,
    /// An upsert (`ON CONFLICT (k) DO UPDATE SET …`): rows of one key fold into one, column by
    /// column, into what applying them in order gives (PostgreSQL refuses to touch a row twice
    /// in one statement). One [`Fold`] per column.
    PerKey(Vec<Fold>),
}

/// What rows of one key leave in one column of an upsert.
#[derive(Clone, Copy, PartialEq)]
enum Fold {
    /// Part of the conflict key.
    Key,
    /// Not set on conflict: the value the first row inserted.
    First,
    /// `c = excluded.c`: the last row's.
    Last,
    /// `c = t.c + excluded.c`: the sum (integers only; anything else leaves the rows apart).
    Sum,
}

/// The column a SET expression takes from the inserted row: `excluded.c`/`EXCLUDED.c`/`VALUES(c)`.
fn inserted(v: &str) -> Option<&str> {
    v.strip_prefix("excluded.").or_else(|| v.strip_prefix("EXCLUDED.")).or_else(|| v.strip_prefix("VALUES(")?.strip_suffix(')'))
}

/// `Some(true)` for `c = excluded.c` (replace), `Some(false)` for `c = [t.]c + excluded.c` (add),
/// `None` for anything else.
fn set_kind<'a>(table: &str, assignment: &'a str) -> Option<(bool, &'a str)> {
    let (c, v) = assignment.split_once(" = ")?;
    let (c, v) = (c.trim(), v.trim());
    if v == c || inserted(v) == Some(c) {
        return Some((true, c));
    }
    let (old, new) = v.split_once(" + ")?;
    let old = old.strip_prefix(table).and_then(|o| o.strip_prefix('.')).unwrap_or(old);
    (old == c && inserted(new) == Some(c)).then_some((false, c))
}

/// `None` when rows of the statement must stay apart (a SET this does not know how to fold).
fn share_of(i: &Insert<'_>) -> Option<Share> {
    let t = i.tail.trim();
    if t.is_empty() || t == "ON CONFLICT DO NOTHING" {
        return Some(Share::InOrder);
    }
    let table = i.head.strip_prefix("INSERT INTO ")?.split([' ', '(']).next()?;
    if let Some(set) = t.strip_prefix("ON DUPLICATE KEY UPDATE ") {
        // MySQL applies the rows of one statement in order, whatever they replace or add.
        return set.split(", ").all(|a| set_kind(table, a).is_some()).then_some(Share::InOrder);
    }
    let rest = t.strip_prefix("ON CONFLICT (")?;
    let (key, set) = rest.split_once(") DO UPDATE SET ")?;
    let cols = columns(i.head)?;
    let key: Vec<&str> = key.split(',').map(str::trim).collect();
    let mut folds = vec![Fold::First; cols.len()];
    for k in &key {
        folds[cols.iter().position(|c| c == k)?] = Fold::Key;
    }
    for a in set.split(", ") {
        let (replace, c) = set_kind(table, a)?;
        folds[cols.iter().position(|x| *x == c)?] = if replace { Fold::Last } else { Fold::Sum };
    }
    Some(Share::PerKey(folds))
}

/// Rows of one key folded into one, in the order their keys first came; `None` when a summed
/// value is not an integer (or overflows).
fn fold_rows(args: &[Arg], folds: &[Fold]) -> Option<Vec<Arg>> {
    let mut at: std::collections::HashMap<Vec<Arg>, usize> = std::collections::HashMap::new();
    let mut rows: Vec<Vec<Arg>> = Vec::new();
    for row in args.chunks(folds.len()) {
        let key: Vec<Arg> = folds.iter().zip(row).filter(|(f, _)| **f == Fold::Key).map(|(_, a)| a.clone()).collect();
        let Some(&n) = at.get(&key) else {
            at.insert(key, rows.len());
            rows.push(row.to_vec());
            continue;
        };
        for ((f, old), new) in folds.iter().zip(rows[n].iter_mut()).zip(row) {
            match (f, &*old, new) {
                (Fold::Last, _, _) => *old = new.clone(),
                (Fold::Sum, Arg::I64(Some(a)), Arg::I64(Some(b))) => *old = Arg::I64(Some(a.checked_add(*b)?)),
                (Fold::Sum, _, _) => return None,
                (Fold::Key | Fold::First, _, _) => {}
            }
        }
    }
    Some(rows.concat())
}

/// The columns of `rows` as arrays, for `UNNEST`: `None` unless each column holds one type.
fn as_columns(args: &[Arg], params: usize) -> Option<Vec<Arg>> {
    let mut cols: Vec<Arg> = args[..params]
        .iter()
        .map(|a| match a {
            Arg::I64(_) => Some(Arg::I64s(Vec::new())),
            Arg::Str(_) => Some(Arg::Strs(Vec::new())),
            _ => None,
        })
        .collect::<Option<_>>()?;
    for row in args.chunks(params) {
        for (col, a) in cols.iter_mut().zip(row) {
            match (col, a) {
                (Arg::I64s(c), Arg::I64(v)) => c.push(*v),
                (Arg::Strs(c), Arg::Str(v)) => c.push(v.clone()),
                _ => return None,
            }
        }
    }
    Some(cols)
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
    /// The statements for these rows, each with at most [`MAX_ARGS`] values. On PostgreSQL
    /// several rows travel as one array per column (`INSERT … SELECT * FROM UNNEST(…)`): one
    /// statement text whatever the row count, so it is prepared and planned once.
    fn emit(self, out: &mut Vec<Stmt>, backend: Backend) {
        let params = self.params.max(1);
        let mut args = self.args;
        if let Share::PerKey(folds) = &self.share {
            match fold_rows(&args, folds) {
                Some(folded) => args = folded,
                None => {
                    // Rows that cannot fold go one statement each, as they came.
                    let sql = format!("{}{}{}", self.head, self.row, self.tail);
                    for row in std::mem::take(&mut args).chunks(params) {
                        out.push((Cow::Owned(sql.clone()), row.to_vec()));
                    }
                }
            }
        }
        let per = (MAX_ARGS / params).max(1) * params;
        while !args.is_empty() {
            let rest = if args.len() > per { args.split_off(per) } else { Vec::new() };
            let n = args.len() / params;
            let unnest = if backend == Backend::Postgres && n > 1 { as_columns(&args, params) } else { None };
            match unnest {
                Some(cols) => {
                    let types: Vec<String> = cols.iter().map(|c| format!("?::{}[]", pg_array(c))).collect();
                    let head = self.head.strip_suffix("VALUES ").unwrap_or(&self.head);
                    let sql = format!("{head}SELECT * FROM UNNEST({}){}", types.join(", "), self.tail);
                    out.push((Cow::Owned(sql), cols));
                }
                None => {
                    let sql = format!("{}{}{}", self.head, vec![self.row.as_str(); n].join(", "), self.tail);
                    out.push((Cow::Owned(sql), args));
                }
            }
            args = rest;
        }
    }
}

/// `UPDATE t SET … WHERE k = ?…` taken apart: each SET value is `?` or a literal, the WHERE
/// starts with one key column and has no other `?`, and when a SET value is `?` it has nothing
/// else. So applying the rows of one key in order leaves what the last one does, and a SET of
/// literals applied twice leaves what it does once.
struct Update<'a> {
    table: &'a str,
    set: Vec<(&'a str, &'a str)>,
    key: &'a str,
    rest: &'a str,
}

impl Update<'_> {
    /// Values bound per row: the SET's `?` and the key.
    fn params(&self) -> usize {
        self.set.iter().filter(|(_, v)| *v == "?").count() + 1
    }
}

fn parse_update(sql: &str) -> Option<Update<'_>> {
    let rest = sql.strip_prefix("UPDATE ")?;
    if sql.contains("SELECT") {
        return None;
    }
    let (table, rest) = rest.split_once(" SET ")?;
    let (set, cond) = rest.split_once(" WHERE ")?;
    let (key, rest) = cond.split_once(" = ?")?;
    if key.contains([' ', '(']) || rest.contains('?') {
        return None;
    }
    let literal = |v: &str| {
        v == "NULL" || v.parse::<i64>().is_ok() || (v.len() > 1 && v.starts_with('\'') && !v[1..].trim_end_matches('\'').contains('\''))
    };
    let set: Option<Vec<(&str, &str)>> =
        set.split(", ").map(|a| a.split_once(" = ").filter(|(c, v)| !c.contains(' ') && (*v == "?" || literal(v)))).collect();
    let set = set?;
    if set.iter().any(|(_, v)| *v == "?") && !rest.is_empty() {
        return None;
    }
    Some(Update { table, set, key, rest })
}

/// Rows of one UPDATE shape waiting to be written: each row its SET values then its key.
struct PendingUpdate {
    table: String,
    sql: String,
    set: Vec<(String, String)>,
    key: String,
    rest: String,
    args: Vec<Arg>,
}

impl PendingUpdate {
    fn params(&self) -> usize {
        self.set.iter().filter(|(_, v)| v == "?").count() + 1
    }

    fn keys(&self) -> impl Iterator<Item = &Arg> {
        let n = self.params();
        self.args.chunks(n).map(move |r| &r[n - 1])
    }

    /// One statement for all rows: a SET of literals updates every key at once (`k = ANY(?)` on
    /// PostgreSQL, `k IN (…)` on MySQL); a SET of values joins the rows, the last row of a key
    /// winning as in order (PostgreSQL `FROM UNNEST(…)`, MySQL a `UNION ALL` derived table).
    /// Rows whose columns mix types go one statement each, in order.
    fn emit(self, out: &mut Vec<Stmt>, backend: Backend) {
        let n = self.params();
        let rows = self.args.len() / n;
        let one_by_one = |out: &mut Vec<Stmt>, args: Vec<Arg>| {
            for r in args.chunks(n) {
                out.push((Cow::Owned(self.sql.clone()), r.to_vec()));
            }
        };
        if rows < 2 {
            return one_by_one(out, self.args);
        }
        let (t, k, rest) = (&self.table, &self.key, &self.rest);
        let set = |value: &dyn Fn(usize) -> String| {
            let mut i = 0;
            let parts: Vec<String> = self
                .set
                .iter()
                .map(|(c, v)| {
                    if v != "?" {
                        return format!("{c} = {v}");
                    }
                    i += 1;
                    format!("{c} = {}", value(i))
                })
                .collect();
            parts.join(", ")
        };
        if n == 1 {
            // No `?` in the SET: `set` never asks for a value.
            let literals = set(&|_| unreachable!());
            let stmt = match backend {
                Backend::Postgres => match as_columns(&self.args, 1) {
                    Some(keys) => (format!("UPDATE {t} SET {literals} WHERE {k} = ANY(?::{}[]){rest}", pg_array(&keys[0])), keys),
                    None => return one_by_one(out, self.args),
                },
                _ => (format!("UPDATE {t} SET {literals} WHERE {k} IN ({}){rest}", vec!["?"; rows].join(", ")), self.args.clone()),
            };
            out.push((Cow::Owned(stmt.0), stmt.1));
            return;
        }
        // Of rows of one key, the last.
        let mut seen = std::collections::HashSet::new();
        let mut kept: Vec<&[Arg]> = self.args.chunks(n).rev().filter(|r| seen.insert(&r[n - 1])).collect();
        kept.reverse();
        let args = kept.concat();
        if backend == Backend::MySql {
            // The rows as a derived table joined on the key, cut to the bind limit.
            for chunk in args.chunks((MAX_ARGS / n).max(1) * n) {
                let first: Vec<String> = (1..n).map(|i| format!("? AS fg_{i}")).chain(["? AS fg_key".to_owned()]).collect();
                let more = format!(" UNION ALL SELECT {}", vec!["?"; n].join(", "));
                let sql = format!(
                    "UPDATE {t} JOIN (SELECT {}{}) AS fg_rows ON {t}.{k} = fg_rows.fg_key SET {}",
                    first.join(", "),
                    more.repeat(chunk.len() / n - 1),
                    set(&|i| format!("fg_rows.fg_{i}"))
                );
                out.push((Cow::Owned(sql), chunk.to_vec()));
            }
            return;
        }
        let Some(cols) = as_columns(&args, n) else { return one_by_one(out, args) };
        let types: Vec<String> = cols.iter().map(|c| format!("?::{}[]", pg_array(c))).collect();
        let names: Vec<String> = (1..n).map(|i| format!("fg_{i}")).collect();
        let sql = format!(
            "UPDATE {t} SET {} FROM UNNEST({}) AS fg_rows({}, fg_key) WHERE {t}.{k} = fg_rows.fg_key{rest}",
            set(&|i| format!("fg_rows.fg_{i}")),
            types.join(", "),
            names.join(", ")
        );
        out.push((Cow::Owned(sql), cols));
    }
}

/// PostgreSQL's element type for an [`Arg`] or a column of them.
fn pg_array(a: &Arg) -> &'static str {
    if matches!(a, Arg::I64(_) | Arg::I64s(_)) { "bigint" } else { "text" }
}

/// How many `?` a row's values are, when they are nothing else (`?, ?, ?`).
fn placeholders(values: &[u8]) -> Option<usize> {
    let (mut n, mut mark) = (0, false);
    for &b in values {
        match b {
            b'?' if !mark => (n, mark) = (n + 1, true),
            b',' if mark => mark = false,
            b' ' | b'\t' | b'\n' | b'\r' => {}
            _ => return None,
        }
    }
    mark.then_some(n)
}

/// Whether an INSERT with this tail changes no row but its own (no upsert, or one whose SET is
/// `c = c`), so that it passes an UPDATE of other keys. (No gathered UPDATE sets a column of a
/// unique key, so it cannot change which rows an INSERT conflicts with.)
fn inserts_only(tail: &str) -> bool {
    let t = tail.trim();
    t.is_empty()
        || t == "ON CONFLICT DO NOTHING"
        || t.strip_prefix("ON DUPLICATE KEY UPDATE ")
            .is_some_and(|set| set.split(", ").all(|a| a.split_once(" = ").is_some_and(|(c, v)| c.trim() == v.trim())))
}

/// Rows waiting to be written, one shape each.
enum Group {
    Insert(Pending),
    Update(PendingUpdate),
}

impl Group {
    fn table(&self) -> &str {
        match self {
            Group::Insert(p) => &p.table,
            Group::Update(u) => &u.table,
        }
    }

    fn emit(self, out: &mut Vec<Stmt>, backend: Backend) {
        match self {
            Group::Insert(p) => p.emit(out, backend),
            Group::Update(u) => u.emit(out, backend),
        }
    }

    /// Whether this group may touch a row of its table whose `column` holds one of `keys`, or a
    /// row no key says (then it must be written before a statement that touches that row).
    fn meets(&self, column: &str, keys: &[&Arg]) -> bool {
        match self {
            Group::Insert(p) => match columns(&p.head).and_then(|c| c.iter().position(|c| *c == column)) {
                Some(at) if inserts_only(&p.tail) => p.args.chunks(p.params.max(1)).any(|r| keys.contains(&&r[at])),
                _ => true,
            },
            Group::Update(u) => u.key != column || u.keys().any(|k| keys.contains(&k)),
        }
    }
}

/// Writes the open groups `now` picks, in their order; an UPDATE group takes the groups of its
/// table before it along (it may touch their rows, so it comes after them).
fn flush_where(open: &mut Vec<Group>, out: &mut Vec<Stmt>, backend: Backend, now: impl Fn(&Group) -> bool) {
    let mut take: Vec<bool> = open.iter().map(&now).collect();
    for i in (0..open.len()).rev() {
        if let (true, Group::Update(u)) = (take[i], &open[i]) {
            for (j, g) in open[..i].iter().enumerate() {
                take[j] |= g.table() == u.table;
            }
        }
    }
    let mut take = take.into_iter();
    let (now, later): (Vec<Group>, Vec<Group>) = std::mem::take(open).into_iter().partition(|_| take.next().unwrap_or(true));
    *open = later;
    for g in now {
        g.emit(out, backend);
    }
}

/// Writes the rows gathered for `table` (for every table when `None`).
fn flush(open: &mut Vec<Group>, table: Option<&str>, out: &mut Vec<Stmt>, backend: Backend) {
    flush_where(open, out, backend, |g| table.is_none_or(|t| g.table() == t));
}

/// Statements of a batch, written with fewer round trips. INSERTs of one shape become one
/// multi-row INSERT (under load a group commit carries one statement per table instead of one
/// per record), cut so that no statement binds more than [`MAX_ARGS`] values; upserts fold rows
/// of one key into the one row that applying them in order leaves ([`Share::PerKey`]). On
/// MySQL/PostgreSQL UPDATEs of one shape by one key column gather too ([`PendingUpdate::emit`]).
///
/// Order: rows are gathered across statements on other tables. A statement on a table first
/// writes the groups gathered there that may touch the rows it touches (an UPDATE of key `k` and
/// an INSERT of rows whose `k` differs touch different rows, so they may pass each other); one
/// whose tables are not known writes everything first. So every row sees its statements in
/// their order. (There are no foreign keys or triggers between tables.)
///
/// SQLite runs statements inline on the writer's thread, so there is no round trip to save, and
/// gathering costs more than it saves (rows copied, new statement texts to prepare, measured with
/// `cargo bench --bench serve`): its statements go as they come, only those binding more than
/// [`MAX_ARGS`] values are cut.
pub fn merge_writes(stmts: Vec<Stmt>, backend: Backend) -> Vec<Stmt> {
    if backend != Backend::Sqlite {
        return gather(stmts, backend);
    }
    let mut out = Vec::with_capacity(stmts.len());
    for s in stmts {
        if s.1.len() > MAX_ARGS {
            out.extend(gather(vec![s], backend));
        } else {
            out.push(s);
        }
    }
    out
}

/// [`merge_writes`]' gathering.
fn gather(stmts: Vec<Stmt>, backend: Backend) -> Vec<Stmt> {
    let mut out: Vec<Stmt> = Vec::with_capacity(stmts.len());
    let mut open: Vec<Group> = Vec::new();
    for (sql, args) in stmts {
        let parsed = parse_insert(&sql).filter(|i| i.params > 0 && args.len() == i.params * i.rows);
        let table = table_written(&sql).map(str::to_owned);
        if let (Some(i), Some(t)) = (&parsed, &table) {
            let share = share_of(i);
            let same = |g: &Group| matches!(g, Group::Insert(p) if p.head == i.head && p.row == i.row && p.tail == i.tail);
            // Pending UPDATEs of the table that may touch these rows go first.
            flush_where(&mut open, &mut out, backend, |g| {
                let Group::Update(u) = g else { return false };
                if &u.table != t {
                    return false;
                }
                let at = inserts_only(i.tail).then(|| columns(i.head)?.iter().position(|c| *c == u.key)).flatten();
                let Some(at) = at else { return true };
                let mine: Vec<&Arg> = args.chunks(i.params).map(|r| &r[at]).collect();
                g.meets(&u.key, &mine)
            });
            if let Some(Group::Insert(p)) = open.iter_mut().find(|g| share.is_some() && same(g)) {
                p.args.extend(args);
                continue;
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
                open.push(Group::Insert(pending));
                continue;
            }
            flush(&mut open, Some(t.as_str()), &mut out, backend);
            // Alone, but still cut to the bind limit.
            pending.emit(&mut out, backend);
            continue;
        }
        let update = parse_update(&sql).filter(|u| backend != Backend::Sqlite && args.len() == u.params());
        if let Some(u) = update {
            let key = &args[args.len() - 1];
            // The groups this UPDATE may touch are written before it: it joins an UPDATE of its
            // shape placed after the last of them (or opens one at the end, after all), or they
            // are written now.
            let meets = |g: &Group| g.table() == u.table && g.meets(u.key, &[key]);
            let last_met = open.iter().rposition(meets);
            let same = open.iter().position(|g| matches!(g, Group::Update(p) if p.sql == sql));
            if let (Some(i), Some(m)) = (same, last_met)
                && i < m
            {
                flush_where(&mut open, &mut out, backend, meets);
            }
            if let Some(Group::Update(p)) = open.iter_mut().find(|g| matches!(g, Group::Update(p) if p.sql == sql)) {
                p.args.extend(args);
                continue;
            }
            open.push(Group::Update(PendingUpdate {
                table: u.table.to_owned(),
                sql: sql.to_string(),
                set: u.set.iter().map(|(c, v)| (c.to_string(), v.to_string())).collect(),
                key: u.key.to_owned(),
                rest: u.rest.to_owned(),
                args,
            }));
            continue;
        }
        flush(&mut open, table.as_deref(), &mut out, backend);
        out.push((sql, args));
    }
    flush(&mut open, None, &mut out, backend);
    out
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
            if !opts.get_options().is_some_and(|o| o.contains("plan_cache_mode")) {
                // Statements stay prepared, but each execution is planned for its values and the
                // tables as they are now. A generic plan is made once and kept: on a new
                // database it is made while the tables are nearly empty, and scans them whole
                // until autovacuum first analyzes them (64 concurrent runs were ~40 % slower).
                opts = opts.options([("plan_cache_mode", "force_custom_plan")]);
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

    /// [`Pool::fetch`] for a short look-up by key: on SQLite it runs inline on the calling
    /// thread, on a connection of our own kept between uses, with no hop to sqlx's worker thread
    /// and back per row (a reader does not wait for writers in WAL mode); elsewhere as `fetch`.
    pub async fn lookup(&self, sql: &str, args: &[Arg], tys: &[Ty]) -> Result<Vec<Vec<Val>>, sqlx::Error> {
        let Pool::Sqlite(p, idle) = self else { return self.fetch(sql, args, tys).await };
        let c = idle.take(&p.connect_options())?;
        let rows = sqlite_fetch(&c, sql, args, tys);
        if c.is_autocommit() {
            idle.keep(*c);
        }
        rows
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

/// SQLite connections for [`Tx`] and [`Pool::lookup`], kept between uses.
#[derive(Debug, Default)]
pub struct SqliteIdle(Mutex<Vec<rusqlite::Connection>>);

impl SqliteIdle {
    fn take(&self, opts: &SqliteConnectOptions) -> Result<Box<rusqlite::Connection>, sqlx::Error> {
        match self.0.lock().expect("idle").pop() {
            Some(c) => Ok(Box::new(c)),
            None => sqlite_open(opts),
        }
    }

    fn keep(&self, c: rusqlite::Connection) {
        let mut idle = self.0.lock().expect("idle");
        if idle.len() < 4 {
            idle.push(c);
        }
    }
}

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
        let c = idle.take(opts)?;
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
        self.idle.keep(c);
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
        let out = gather(vec![ins(1), ins(2), ins(3), upd, ins(4)], Backend::Sqlite);
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
        let out = gather(vec![five_hundred(0), five_hundred(10_000)], Backend::Sqlite);
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
        let out = gather((0..20_004).map(one).collect(), Backend::Sqlite);
        assert!(out.len() > 1);
        assert!(out.iter().all(|(sql, args)| args.len() <= MAX_ARGS && sql.matches('?').count() == args.len()));
        assert_eq!(out.iter().map(|(_, a)| a.len()).sum::<usize>(), 20_004 * 7);
        // One statement built too big elsewhere is cut as well.
        let big = (Cow::Owned(format!("INSERT INTO t (a) VALUES {}", vec!["(?)"; 40_000].join(", "))), vec![Arg::from(1i64); 40_000]);
        let out = gather(vec![big], Backend::Sqlite);
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn upserts_that_add_fold_into_one_row_per_key() {
        let up = |k: i64, kind: &str, n: i64| -> Stmt {
            (
                Cow::Borrowed(
                    "INSERT INTO r (k, kind, n, last) VALUES (?, ?, ?, ?) ON CONFLICT (k) DO UPDATE SET n = r.n + EXCLUDED.n, last = excluded.last",
                ),
                vec![k.into(), kind.into(), n.into(), n.into()],
            )
        };
        let out = gather(vec![up(1, "a", 2), up(2, "b", 5), up(1, "c", 3)], Backend::Sqlite);
        assert_eq!(out.len(), 1);
        // Key 1: the first row's kind, the sum of n, the last row's `last`; key 2 as it came.
        let want: Vec<Arg> = vec![1i64.into(), "a".into(), 5i64.into(), 3i64.into(), 2i64.into(), "b".into(), 5i64.into(), 5i64.into()];
        assert_eq!(out[0].1, want);
        // A sum that is not of integers leaves the rows apart, as they came.
        let null = (up(1, "a", 2).0, vec![1i64.into(), "a".into(), Arg::I64(None), 1i64.into()]);
        assert_eq!(gather(vec![up(1, "a", 2), null], Backend::Sqlite).len(), 2);
        // A SET it cannot read stays apart.
        let odd = || -> Stmt {
            (
                Cow::Borrowed("INSERT INTO r (k, n) VALUES (?, ?) ON CONFLICT (k) DO UPDATE SET n = MAX(r.n, excluded.n)"),
                vec![1i64.into(), 1i64.into()],
            )
        };
        assert_eq!(gather(vec![odd(), odd()], Backend::Sqlite).len(), 2);
        // MySQL applies the rows of one statement in order, adding or replacing.
        let my = || -> Stmt {
            (Cow::Borrowed("INSERT INTO a (x, n) VALUES (?, ?) ON DUPLICATE KEY UPDATE n = n + VALUES(n)"), vec![1i64.into(), 1i64.into()])
        };
        let out = gather(vec![my(), my()], Backend::MySql);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].1.len(), 4);
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
        let out = gather(vec![a(1), b(10), a(2), upd("c"), b(20), a(3), upd("a"), a(4)], Backend::Sqlite);
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
        // PostgreSQL: several rows travel as one array per column (and the UPDATE gathers too).
        let pg = gather(vec![a(1), b(10), a(2), a(3), upd("c"), b(20), a(4)], Backend::Postgres);
        let sqls: Vec<&str> = pg.iter().map(|(s, _)| s.as_ref()).collect();
        assert_eq!(
            sqls,
            vec![
                "INSERT INTO a (x) SELECT * FROM UNNEST(?::bigint[]) ON CONFLICT DO NOTHING",
                "INSERT INTO b (k, out) VALUES (?, ?) ON CONFLICT (k) DO UPDATE SET out = excluded.out",
                "UPDATE c SET y = ? WHERE id = ?",
            ]
        );
        assert_eq!(pg[0].1, vec![Arg::I64s(vec![Some(1), Some(2), Some(3), Some(4)])]);
        assert_eq!(pg[1].1, vec![Arg::from(1i64), Arg::from(20i64)]);
        // A statement that reads another table writes everything gathered first.
        let sub: Stmt = (Cow::Borrowed("UPDATE c SET y = (SELECT MAX(x) FROM a)"), vec![]);
        let out = gather(vec![a(1), sub, a(2)], Backend::Sqlite);
        assert_eq!(out.len(), 3);
        assert!(out[1].0.starts_with("UPDATE c"));
    }

    #[test]
    fn an_upsert_keeps_the_first_value_of_a_column_it_does_not_set() {
        let up = |v: i64| -> Stmt {
            (
                Cow::Borrowed("INSERT INTO b (k, first, out) VALUES (?, ?, ?) ON CONFLICT (k) DO UPDATE SET out = excluded.out"),
                vec![1i64.into(), v.into(), v.into()],
            )
        };
        let out = gather(vec![up(1), up(2)], Backend::Sqlite);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].1, vec![Arg::from(1i64), Arg::from(1i64), Arg::from(2i64)]);
        let my = |v: i64| -> Stmt {
            (Cow::Borrowed("INSERT INTO b (k, out) VALUES (?, ?) ON DUPLICATE KEY UPDATE out = VALUES(out)"), vec![1i64.into(), v.into()])
        };
        let out = gather(vec![my(1), my(2)], Backend::MySql);
        assert_eq!(out.len(), 1, "MySQL applies the rows in order");
        assert_eq!(out[0].1.len(), 4);
    }

    #[test]
    fn sqlite_statements_go_as_they_come_cut_to_the_bind_limit() {
        let ins = |k: i64| -> Stmt { (Cow::Borrowed("INSERT INTO t (k) VALUES (?) ON CONFLICT DO NOTHING"), vec![k.into()]) };
        let out = merge_writes(vec![ins(1), ins(2)], Backend::Sqlite);
        assert_eq!(out, vec![ins(1), ins(2)]);
        let rows = MAX_ARGS + 2;
        let big: Stmt =
            (Cow::Owned(format!("INSERT INTO t (k) VALUES {}", vec!["(?)"; rows].join(", "))), (0..rows as i64).map(Arg::from).collect());
        let out = merge_writes(vec![ins(0), big], Backend::Sqlite);
        assert_eq!(out.len(), 3);
        assert_eq!(out[0], ins(0));
        assert!(out[1..].iter().all(|(sql, args)| args.len() <= MAX_ARGS && sql.matches('?').count() == args.len()));
        assert_eq!(out[1..].iter().map(|s| s.1.len()).sum::<usize>(), rows);
    }

    #[test]
    fn a_row_of_values_other_than_placeholders_is_not_merged() {
        assert_eq!(placeholders(b"?, ?,?"), Some(3));
        for values in [&b""[..], b"?, ", b"??", b"?, 1", b"?, NOW()", b", ?"] {
            assert_eq!(placeholders(values), None, "{}", String::from_utf8_lossy(values));
        }
    }

    #[test]
    fn an_update_joins_its_shape_after_the_rows_it_touches() {
        let ins = |k: i64| -> Stmt {
            (Cow::Borrowed("INSERT INTO t (k, done) VALUES (?, ?) ON CONFLICT DO NOTHING"), vec![k.into(), 0i64.into()])
        };
        let mark = |k: i64| -> Stmt { (Cow::Borrowed("UPDATE t SET done = 1 WHERE k = ? AND done = 0"), vec![k.into()]) };
        // Runs' rows each marked after them (a run's end): one INSERT of all rows, then one UPDATE.
        let out = gather(vec![ins(1), mark(1), ins(2), mark(2), ins(3), mark(3)], Backend::Postgres);
        let sqls: Vec<&str> = out.iter().map(|(s, _)| s.as_ref()).collect();
        assert_eq!(
            sqls,
            [
                "INSERT INTO t (k, done) SELECT * FROM UNNEST(?::bigint[], ?::bigint[]) ON CONFLICT DO NOTHING",
                "UPDATE t SET done = 1 WHERE k = ANY(?::bigint[]) AND done = 0"
            ]
        );
        // A row of a key already marked comes after the mark (it stays unmarked), and the rows
        // the mark touches still come before it.
        let out = gather(vec![ins(1), mark(1), ins(1)], Backend::Postgres);
        let keys: Vec<(&str, &Vec<Arg>)> = out.iter().map(|(s, a)| (&s[..6], a)).collect();
        assert_eq!(
            keys,
            [
                ("INSERT", &vec![Arg::from(1i64), Arg::from(0i64)]),
                ("UPDATE", &vec![Arg::from(1i64)]),
                ("INSERT", &vec![Arg::from(1i64), Arg::from(0i64)])
            ]
        );
    }

    #[test]
    fn postgres_rows_of_mixed_types_in_a_column_stay_values() {
        let a = |v: Arg| -> Stmt { (Cow::Borrowed("INSERT INTO a (x) VALUES (?)"), vec![v]) };
        let out = gather(vec![a(Arg::from(1i64)), a(Arg::from("1"))], Backend::Postgres);
        assert_eq!(out[0].0, "INSERT INTO a (x) VALUES (?), (?)");
    }

    #[test]
    fn updates_gather_only_where_order_cannot_matter() {
        let upd = |sql: &'static str, k: i64| -> Stmt { (Cow::Borrowed(sql), vec![k.into()]) };
        // A literal SET applied twice leaves what it does once: the keys gather.
        let lit = "UPDATE t SET done = 1 WHERE k = ? AND done = 0";
        let out = gather(vec![upd(lit, 1), upd(lit, 2)], Backend::Postgres);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, "UPDATE t SET done = 1 WHERE k = ANY(?::bigint[]) AND done = 0");
        // A SET that reads the row would count twice, or not at all: each stays a statement.
        let inc = "UPDATE t SET n = n + 1 WHERE k = ?";
        assert_eq!(gather(vec![upd(inc, 1), upd(inc, 1)], Backend::Postgres).len(), 2);
        // Values and a condition: the first row may change what the second finds.
        let cond = |v: i64| -> Stmt { (Cow::Borrowed("UPDATE t SET s = ? WHERE k = ? AND s = 0"), vec![v.into(), 1i64.into()]) };
        assert_eq!(gather(vec![cond(1), cond(2)], Backend::MySql).len(), 2);
        // SQLite runs statements inline: nothing to gain, nothing gathered.
        assert_eq!(gather(vec![upd(lit, 1), upd(lit, 2)], Backend::Sqlite).len(), 2);
        // An INSERT of a row the pending UPDATE would touch goes after it; of another row, not.
        let ins = |k: i64| -> Stmt { (Cow::Borrowed("INSERT INTO t (k, done) VALUES (?, ?)"), vec![k.into(), 0i64.into()]) };
        let out = gather(vec![upd(lit, 1), ins(2), ins(1), upd(lit, 3)], Backend::MySql);
        let sqls: Vec<&str> = out.iter().map(|(s, _)| s.as_ref()).collect();
        assert_eq!(
            sqls,
            vec!["UPDATE t SET done = 1 WHERE k = ? AND done = 0", "INSERT INTO t (k, done) VALUES (?, ?), (?, ?)", lit],
            "the first UPDATE before the INSERT of its row"
        );
    }

    #[test]
    fn scripts_split_on_statement_ends() {
        let s = split_statements("-- c\nCREATE TABLE a (\n x INT\n);\nCREATE INDEX i ON a (x);\n");
        assert_eq!(s.len(), 2);
        assert!(s[0].starts_with("CREATE TABLE a"));
    }
}
