//! A fresh database per test, on every backend flowguard supports.
//!
//! ```ignore
//! use crate::support::db::{TestDb, backends};
//!
//! // One test per backend: `my_test::sqlite`, `my_test::mysql`, `my_test::postgres`.
//! backends! {
//!     async fn my_test(db: TestDb) {
//!         let store = db.open().await;          // flowguard's Store on the test database
//!         let url = db.url();                   // put it in a project's `storage.url`
//!     }
//! }
//! ```
//!
//! MySQL/MariaDB and PostgreSQL come from admin URLs in the environment:
//! `FLOWGUARD_TEST_MYSQL_URL` (e.g. `mysql://root@127.0.0.1:3306`) and
//! `FLOWGUARD_TEST_POSTGRES_URL` (e.g. `postgres://postgres@127.0.0.1:5432`). Each test creates a
//! database with a random name through that URL and drops it when the `TestDb` is dropped (also
//! when the test panics). SQLite is a file in a temporary directory. When a URL is unset the test
//! prints a note and passes without running; under `CI=true` an unset or unreachable database
//! fails the test instead, so CI cannot go green by skipping.

use flowguard::store::{Store, StoreOptions};
use sqlx::Connection;
use std::future::Future;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sqlite,
    MySql,
    Postgres,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Sqlite, Kind::MySql, Kind::Postgres];

    pub fn env_var(self) -> Option<&'static str> {
        match self {
            Kind::Sqlite => None,
            Kind::MySql => Some("FLOWGUARD_TEST_MYSQL_URL"),
            Kind::Postgres => Some("FLOWGUARD_TEST_POSTGRES_URL"),
        }
    }
}

/// One throwaway database. Dropping it drops the database.
pub struct TestDb {
    pub kind: Kind,
    /// The database's name (the file name for SQLite).
    pub name: String,
    url: String,
    admin: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

impl TestDb {
    /// Creates a fresh database, or `None` (with a printed note) when the backend is not
    /// configured and this is not CI.
    pub async fn create(kind: Kind) -> Option<TestDb> {
        let name = format!("fg_test_{}_{:08x}", std::process::id(), fastrand::u32(..));
        let Some(var) = kind.env_var() else {
            let dir = tempfile::tempdir().expect("tempdir");
            let url = format!("sqlite://{}", dir.path().join(format!("{name}.db")).display());
            return Some(TestDb { kind, name, url, admin: None, _dir: Some(dir) });
        };
        let admin = match std::env::var(var) {
            Ok(v) if !v.is_empty() => v,
            _ if ci() => panic!("{var} is not set, and CI=true: the {kind:?} tests must run in CI"),
            _ => {
                eprintln!("note: skipping the {kind:?} variant: {var} is not set (e.g. {var}={})", example(kind));
                return None;
            }
        };
        let url = with_database(&admin, &name);
        let sql = match kind {
            Kind::MySql => format!("CREATE DATABASE `{name}`"),
            _ => format!("CREATE DATABASE \"{name}\""),
        };
        if let Err(e) = admin_exec(kind, &admin, &[&sql]).await {
            // The URL is set: the developer asked for this backend, so an unreachable one fails.
            panic!("{var}: cannot create a test database at {}: {e}", flowguard::store::redact_url(&admin));
        }
        Some(TestDb { kind, name, url, admin: Some(admin), _dir: None })
    }

    /// The storage URL of this database.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// flowguard's store on this database (migrated), with a short write patience.
    pub async fn open(&self) -> Store {
        self.open_with(&StoreOptions { write_patience: Duration::from_secs(5), ..Default::default() }).await
    }

    pub async fn open_with(&self, opts: &StoreOptions) -> Store {
        Store::open_with(&self.url, opts).await.unwrap_or_else(|e| panic!("open {:?} store: {e:#}", self.kind))
    }

    /// Runs statements as the admin on the server (MySQL, PostgreSQL).
    #[allow(dead_code)]
    pub async fn admin_exec(&self, sql: &[&str]) -> Result<(), sqlx::Error> {
        admin_exec(self.kind, self.admin.as_deref().expect("a networked backend"), sql).await
    }

    /// A number from one query on its own connection to this database (not through a Store, so
    /// it survives [`TestDb::kill_connections`]).
    pub async fn query_i64(&self, sql: &str) -> i64 {
        let r: Result<i64, sqlx::Error> = match self.kind {
            Kind::MySql => {
                async {
                    let mut c = sqlx::MySqlConnection::connect(&self.url).await?;
                    let v: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_one(&mut c).await?;
                    c.close().await?;
                    Ok(v)
                }
                .await
            }
            Kind::Postgres => {
                async {
                    let mut c = sqlx::PgConnection::connect(&self.url).await?;
                    let v: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_one(&mut c).await?;
                    c.close().await?;
                    Ok(v)
                }
                .await
            }
            Kind::Sqlite => {
                async {
                    let mut c = sqlx::SqliteConnection::connect(&self.url).await?;
                    let v: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_one(&mut c).await?;
                    c.close().await?;
                    Ok(v)
                }
                .await
            }
        };
        r.unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// Kills every session connected to this database (MySQL `KILL`, PostgreSQL
    /// `pg_terminate_backend`), as a DBA or a failover would; returns how many.
    pub async fn kill_connections(&self) -> usize {
        let admin = self.admin.as_deref().expect("a networked backend");
        let r: Result<usize, sqlx::Error> = match self.kind {
            Kind::MySql => {
                async {
                    let mut c = sqlx::MySqlConnection::connect(admin).await?;
                    let ids: Vec<i64> = sqlx::query_scalar(
                        "SELECT CAST(ID AS SIGNED) FROM information_schema.PROCESSLIST WHERE DB = ? AND ID <> CONNECTION_ID()",
                    )
                    .bind(&self.name)
                    .fetch_all(&mut c)
                    .await?;
                    for id in &ids {
                        // A session may end between the listing and the kill.
                        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("KILL {id}"))).execute(&mut c).await;
                    }
                    c.close().await?;
                    Ok(ids.len())
                }
                .await
            }
            Kind::Postgres => {
                async {
                    let mut c = sqlx::PgConnection::connect(admin).await?;
                    let killed: Vec<bool> = sqlx::query_scalar(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                    )
                    .bind(&self.name)
                    .fetch_all(&mut c)
                    .await?;
                    c.close().await?;
                    Ok(killed.into_iter().filter(|k| *k).count())
                }
                .await
            }
            Kind::Sqlite => Ok(0),
        };
        r.unwrap_or_else(|e| panic!("killing connections: {e}"))
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some(admin) = self.admin.clone() else { return };
        let (kind, name) = (self.kind, self.name.clone());
        let sql = match kind {
            Kind::MySql => format!("DROP DATABASE IF EXISTS `{name}`"),
            _ => format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"),
        };
        // Drop runs inside the test's runtime, which cannot block on a future: use a thread.
        let done = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(admin_exec(kind, &admin, &[&sql]))
        })
        .join();
        if let Ok(Err(e)) = done {
            eprintln!("note: could not drop test database {}: {e}", self.name);
        }
    }
}

fn example(kind: Kind) -> &'static str {
    match kind {
        Kind::MySql => "mysql://root@127.0.0.1:3306",
        Kind::Postgres => "postgres://postgres@127.0.0.1:5432",
        Kind::Sqlite => "",
    }
}

/// `url` with its path set to `/name` (query parameters kept).
pub fn with_database(url: &str, name: &str) -> String {
    let mut u = url::Url::parse(url).expect("a database URL");
    u.set_path(&format!("/{name}"));
    u.to_string()
}

async fn admin_exec(kind: Kind, admin: &str, sql: &[&str]) -> Result<(), sqlx::Error> {
    match kind {
        Kind::MySql => {
            let mut c = sqlx::MySqlConnection::connect(&admin.replacen("mariadb:", "mysql:", 1)).await?;
            for s in sql {
                sqlx::raw_sql(sqlx::AssertSqlSafe(*s)).execute(&mut c).await?;
            }
            c.close().await
        }
        Kind::Postgres => {
            let mut c = sqlx::PgConnection::connect(admin).await?;
            for s in sql {
                sqlx::raw_sql(sqlx::AssertSqlSafe(*s)).execute(&mut c).await?;
            }
            c.close().await
        }
        Kind::Sqlite => Ok(()),
    }
}

/// Runs `body` on a fresh database of `kind` (skipping, with a note, when it is not configured).
pub async fn with_backend<F, Fut>(kind: Kind, body: F)
where
    F: FnOnce(TestDb) -> Fut,
    Fut: Future<Output = ()>,
{
    if let Some(db) = TestDb::create(kind).await {
        body(db).await;
    }
}

/// Runs `body` once per backend, one after another, each on a fresh database.
#[allow(dead_code)]
pub async fn for_each_backend<F, Fut>(body: F)
where
    F: Fn(TestDb) -> Fut,
    Fut: Future<Output = ()>,
{
    for kind in Kind::ALL {
        with_backend(kind, &body).await;
    }
}

/// Declares one `#[tokio::test]` per backend for each `async fn name(db: TestDb) { … }`: a module
/// `name` with tests `sqlite`, `mysql` and `postgres` (filter with e.g. `cargo nextest run mysql`).
/// Add `networked` before `async fn` for a test that needs a server (no SQLite variant).
macro_rules! backends {
    () => {};
    (networked async fn $name:ident($db:ident: TestDb) $body:block $($rest:tt)*) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn mysql() { $crate::support::db::with_backend($crate::support::db::Kind::MySql, |$db: TestDb| async move $body).await }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() { $crate::support::db::with_backend($crate::support::db::Kind::Postgres, |$db: TestDb| async move $body).await }
        }
        $crate::support::db::backends!($($rest)*);
    };
    (async fn $name:ident($db:ident: TestDb) $body:block $($rest:tt)*) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() { $crate::support::db::with_backend($crate::support::db::Kind::Sqlite, |$db: TestDb| async move $body).await }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn mysql() { $crate::support::db::with_backend($crate::support::db::Kind::MySql, |$db: TestDb| async move $body).await }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() { $crate::support::db::with_backend($crate::support::db::Kind::Postgres, |$db: TestDb| async move $body).await }
        }
        $crate::support::db::backends!($($rest)*);
    };
}
pub(crate) use backends;
