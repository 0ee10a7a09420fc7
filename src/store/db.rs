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
                Ty::I64 => Val::I64(row.try_get::<Option<i64>, _>(i)?),
                Ty::Str => Val::Str(row.try_get::<Option<String>, _>(i)?),
            });
        }
        vals
    }};
}

pub type Stmt = (Cow<'static, str>, Vec<Arg>);

impl Pool {
    pub fn backend(&self) -> Backend {
        match self {
            Pool::Sqlite(_) => Backend::Sqlite,
            Pool::MySql(_) => Backend::MySql,
            Pool::Postgres(_) => Backend::Postgres,
        }
    }

    pub async fn connect(url: &str, max_connections: u32) -> Result<Pool, sqlx::Error> {
        if url.starts_with("sqlite:") {
            let opts = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(10))
                .foreign_keys(false)
                .disable_statement_logging();
            let pool = SqlitePoolOptions::new().max_connections(max_connections.clamp(1, 8)).connect_with(opts).await?;
            Ok(Pool::Sqlite(pool))
        } else if url.starts_with("mysql:") || url.starts_with("mariadb:") {
            let url = url.replacen("mariadb:", "mysql:", 1);
            let opts = MySqlConnectOptions::from_str(&url)?.charset("utf8mb4").disable_statement_logging();
            let pool = MySqlPoolOptions::new()
                .max_connections(max_connections)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(opts)
                .await?;
            Ok(Pool::MySql(pool))
        } else {
            let opts = PgConnectOptions::from_str(url)?.disable_statement_logging();
            let pool =
                PgPoolOptions::new().max_connections(max_connections).acquire_timeout(Duration::from_secs(10)).connect_with(opts).await?;
            Ok(Pool::Postgres(pool))
        }
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
    fn scripts_split_on_statement_ends() {
        let s = split_statements("-- c\nCREATE TABLE a (\n x INT\n);\nCREATE INDEX i ON a (x);\n");
        assert_eq!(s.len(), 2);
        assert!(s[0].starts_with("CREATE TABLE a"));
    }
}
