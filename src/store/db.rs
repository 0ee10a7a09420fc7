//! One small layer over three sqlx pools. Queries are written once with `?` placeholders (rewritten
//! to `$n` for PostgreSQL) and values travel as [`Arg`]; each backend arm of [`on_pool!`] is
//! concrete sqlx code, so there is no `sqlx::Any` and no dynamic typing beyond our own [`Val`].

use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{ConnectOptions, Row};
use std::borrow::Cow;
use std::str::FromStr;
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
    Sqlite(SqlitePool),
    MySql(MySqlPool),
    Postgres(PgPool),
}

/// A bound value.
#[derive(Debug, Clone)]
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
impl From<&str> for Arg {
    fn from(v: &str) -> Self {
        Arg::Str(Some(v.to_owned()))
    }
}
impl From<String> for Arg {
    fn from(v: String) -> Self {
        Arg::Str(Some(v))
    }
}
impl From<Option<String>> for Arg {
    fn from(v: Option<String>) -> Self {
        Arg::Str(v)
    }
}
impl From<Option<&str>> for Arg {
    fn from(v: Option<&str>) -> Self {
        Arg::Str(v.map(str::to_owned))
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

/// A connection the group-commit writer keeps between batches, so a commit costs no pool
/// round trip (the pool pings a connection on every acquire).
pub enum OwnedConn {
    Sqlite(sqlx::pool::PoolConnection<sqlx::Sqlite>),
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

/// Runs `guards` then `stmts` in one transaction. A guard must touch exactly one row (a fencing
/// check, e.g. `UPDATE runs … WHERE id = ? AND epoch = ?`); when any does not, nothing is
/// committed and the indexes of the failed guards are returned.
macro_rules! run_guarded {
    ($c:expr, $guards:expr, $stmts:expr, $rewrite:expr) => {{
        let c = $c;
        let mut tx = sqlx::Connection::begin(&mut **c).await?;
        let mut failed = Vec::new();
        for (i, (sql, args)) in $guards.iter().enumerate() {
            let sql: Cow<'_, str> = $rewrite(sql.as_ref());
            if bind_args!(sqlx::query(sqlx::AssertSqlSafe(sql.as_ref())), args).execute(&mut *tx).await?.rows_affected() != 1 {
                failed.push(i);
            }
        }
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
            OwnedConn::Sqlite(c) => run_batch!(c, stmts, same),
            OwnedConn::MySql(c) => run_batch!(c, stmts, same),
            OwnedConn::Postgres(c) => run_batch!(c, stmts, numbered),
        }
    }

    /// [`run_guarded!`]: `Ok(failed guards)`, empty when everything committed.
    pub async fn exec_guarded(&mut self, guards: &[Stmt], stmts: &[Stmt]) -> Result<Vec<usize>, sqlx::Error> {
        match self {
            OwnedConn::Sqlite(c) => run_guarded!(c, guards, stmts, same),
            OwnedConn::MySql(c) => run_guarded!(c, guards, stmts, same),
            OwnedConn::Postgres(c) => run_guarded!(c, guards, stmts, numbered),
        }
    }
}

/// Consecutive copies of one `INSERT … VALUES (?, …)` become one multi-row INSERT: under load a
/// group commit carries one statement per table instead of one per record.
pub fn merge_inserts(stmts: Vec<Stmt>) -> Vec<Stmt> {
    // Below every backend's limit on bound parameters (SQLite: 32766).
    const MAX_ARGS: usize = 30_000;
    let mut out: Vec<Stmt> = Vec::with_capacity(stmts.len());
    let mut run: Option<(Cow<'static, str>, usize, Vec<Arg>)> = None;
    let flush = |run: &mut Option<(Cow<'static, str>, usize, Vec<Arg>)>, out: &mut Vec<Stmt>| {
        if let Some((sql, n, args)) = run.take() {
            out.push(if n == 1 { (sql, args) } else { (Cow::Owned(multi_row(&sql, n).unwrap_or_default()), args) });
        }
    };
    for (sql, args) in stmts {
        let mergeable = multi_row(&sql, 1).is_some();
        match &mut run {
            Some((s, n, a)) if mergeable && *s == sql && a.len() + args.len() <= MAX_ARGS => {
                *n += 1;
                a.extend(args);
            }
            _ => {
                flush(&mut run, &mut out);
                if mergeable {
                    run = Some((sql, 1, args));
                } else {
                    out.push((sql, args));
                }
            }
        }
    }
    flush(&mut run, &mut out);
    out
}

/// `INSERT … VALUES (?, ?) tail` with its row repeated `n` times; `None` for other statements.
fn multi_row(sql: &str, n: usize) -> Option<String> {
    if !sql.starts_with("INSERT INTO ") {
        return None;
    }
    let at = sql.find(" VALUES (")? + " VALUES ".len();
    let len = sql[at..].find(')')? + 1;
    let row = &sql[at..at + len];
    if row[1..len - 1].split(',').any(|p| p.trim() != "?") {
        return None;
    }
    let rows = vec![row; n].join(", ");
    Some(format!("{}{rows}{}", &sql[..at], &sql[at + len..]))
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
    pub fn backend(&self) -> Backend {
        match self {
            Pool::Sqlite(_) => Backend::Sqlite,
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
                .busy_timeout(Duration::from_secs(10))
                .foreign_keys(false)
                .disable_statement_logging();
            let pool = SqlitePoolOptions::new().max_connections(max.clamp(1, 8)).connect_with(opts).await?;
            Ok(Pool::Sqlite(pool))
        } else if url.starts_with("mysql:") || url.starts_with("mariadb:") {
            let url = url.replacen("mariadb:", "mysql:", 1);
            let opts = MySqlConnectOptions::from_str(&url)?.charset("utf8mb4").disable_statement_logging();
            probe(opts.connect(), timeout).await?;
            let pool = MySqlPoolOptions::new().max_connections(max).acquire_timeout(timeout).connect_with(opts).await?;
            Ok(Pool::MySql(pool))
        } else {
            let mut opts = PgConnectOptions::from_str(url)?.disable_statement_logging();
            if opts.get_application_name().is_none() {
                // Lets a DBA tell flowguard's sessions apart in pg_stat_activity.
                opts = opts.application_name("flowguard");
            }
            probe(opts.connect(), timeout).await?;
            let pool = PgPoolOptions::new().max_connections(max).acquire_timeout(timeout).connect_with(opts).await?;
            Ok(Pool::Postgres(pool))
        }
    }

    /// Runs `f` on one connection while holding the database's migration lock (`GET_LOCK` on
    /// MySQL/MariaDB, `pg_advisory_lock` on PostgreSQL; SQLite serialises writers itself), so two
    /// processes starting at once do not migrate over each other.
    pub async fn with_migration_lock<T>(&self, f: impl AsyncFnOnce(&mut Conn<'_>) -> anyhow::Result<T>) -> anyhow::Result<T> {
        match self {
            Pool::Sqlite(p) => {
                // SQLite's write lock is the migration lock: the versions applied are read and
                // applied in one IMMEDIATE transaction (its DDL is transactional).
                let mut c = p.acquire().await?;
                sqlx::raw_sql("BEGIN IMMEDIATE").execute(&mut *c).await?;
                let r = f(&mut Conn::Sqlite(&mut c)).await;
                let end = if r.is_ok() { "COMMIT" } else { "ROLLBACK" };
                sqlx::raw_sql(end).execute(&mut *c).await?;
                r
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
            Pool::Sqlite(p) => tx!(p, Sqlite, "BEGIN IMMEDIATE"),
            Pool::MySql(p) => tx!(p, MySql, "START TRANSACTION"),
            Pool::Postgres(p) => tx!(p, Postgres, "BEGIN"),
        }
    }

    /// The server's version string (`SELECT VERSION()`; SQLite's library version).
    pub async fn server_version(&self) -> Result<String, sqlx::Error> {
        let sql = match self {
            Pool::Sqlite(_) => "SELECT sqlite_version()",
            _ => "SELECT VERSION()",
        };
        Ok(self.fetch(sql, &[], &[Ty::Str]).await?.into_iter().next().and_then(|r| r[0].str()).unwrap_or_default())
    }

    /// A connection for the writer to keep.
    pub async fn acquire_owned(&self) -> Result<OwnedConn, sqlx::Error> {
        Ok(match self {
            Pool::Sqlite(p) => OwnedConn::Sqlite(p.acquire().await?),
            Pool::MySql(p) => OwnedConn::MySql(p.acquire().await?),
            Pool::Postgres(p) => OwnedConn::Postgres(p.acquire().await?),
        })
    }

    /// Runs statements in one transaction: all of them commit, or none.
    pub async fn exec_batch(&self, stmts: &[Stmt]) -> Result<(), sqlx::Error> {
        match self {
            Pool::Sqlite(p) => {
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
            Pool::Sqlite(p) => bind_args!(sqlx::query(sqlx::AssertSqlSafe(sql)), args).execute(p).await?.rows_affected(),
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
            Pool::Sqlite(p) => {
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

    pub async fn close(&self) {
        match self {
            Pool::Sqlite(p) => p.close().await,
            Pool::MySql(p) => p.close().await,
            Pool::Postgres(p) => p.close().await,
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_for_postgres() {
        assert_eq!(pg_sql("SELECT a FROM t WHERE b = ? AND c = ?"), "SELECT a FROM t WHERE b = $1 AND c = $2");
    }

    #[test]
    fn consecutive_inserts_merge_into_one() {
        let ins =
            |v: i64| -> Stmt { (Cow::Borrowed("INSERT INTO t (a, b) VALUES (?, ?) ON CONFLICT DO NOTHING"), vec![v.into(), v.into()]) };
        let upd: Stmt = (Cow::Borrowed("UPDATE t SET b = ? WHERE a = ?"), vec![1i64.into(), 1i64.into()]);
        let out = merge_inserts(vec![ins(1), ins(2), ins(3), upd, ins(4)]);
        assert_eq!(out.len(), 3);
        assert_eq!(out[0].0, "INSERT INTO t (a, b) VALUES (?, ?), (?, ?), (?, ?) ON CONFLICT DO NOTHING");
        assert_eq!(out[0].1.len(), 6);
        assert!(out[1].0.starts_with("UPDATE"));
        assert_eq!(out[2].0, "INSERT INTO t (a, b) VALUES (?, ?) ON CONFLICT DO NOTHING");
    }

    #[test]
    fn scripts_split_on_statement_ends() {
        let s = split_statements("-- c\nCREATE TABLE a (\n x INT\n);\nCREATE INDEX i ON a (x);\n");
        assert_eq!(s.len(), 2);
        assert!(s[0].starts_with("CREATE TABLE a"));
    }
}
