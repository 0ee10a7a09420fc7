//! What the engine and workers benchmarks share: their knobs, the 10-node flow, and the database
//! named by `FLOWGUARD_BENCH_URL` (a temporary SQLite file when unset; a server URL without a
//! database gets a fresh `flowguard_bench_<pid>` database, dropped by [`BenchDb::drop_created`]).

use sqlx::Connection;

pub const NODES: usize = 10;

/// A flow of [`NODES`] `template` nodes, each reading the one before, then `last` (YAML nodes).
pub fn flow_text(name: &str, last: &str) -> String {
    let mut s = format!("name: {name}\ninputs:\n  topic: 秋天露营\nnodes:\n");
    s.push_str("  - id: n0\n    kind: template\n    text: \"主题：{{ input.topic }}\"\n");
    for i in 1..NODES {
        s.push_str(&format!("  - id: n{i}\n    kind: template\n    text: \"{{{{ nodes.n{} }}}} · 第{i}步\"\n", i - 1));
    }
    s.push_str(last);
    s
}

pub fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The benchmark's database: its URL, and the database created for it, if any.
pub struct BenchDb {
    pub url: String,
    created: Option<(String, String)>,
}

impl BenchDb {
    /// `FLOWGUARD_BENCH_URL`, or a SQLite file in `dir`.
    pub async fn from_env(dir: &std::path::Path) -> anyhow::Result<BenchDb> {
        let given = std::env::var("FLOWGUARD_BENCH_URL").ok().filter(|u| !u.is_empty());
        Ok(match given {
            None => BenchDb { url: format!("sqlite://{}", dir.join("bench.db").display()), created: None },
            Some(u) if !u.starts_with("sqlite:") && url::Url::parse(&u).map(|p| p.path().len() <= 1).unwrap_or(false) => {
                let name = format!("flowguard_bench_{}", std::process::id());
                admin(&u, &format!("CREATE DATABASE {name}")).await?;
                let mut full = url::Url::parse(&u)?;
                full.set_path(&format!("/{name}"));
                BenchDb { url: full.to_string(), created: Some((u, name)) }
            }
            Some(u) => BenchDb { url: u, created: None },
        })
    }

    /// Drops the database [`BenchDb::from_env`] created.
    pub async fn drop_created(self) -> anyhow::Result<()> {
        if let Some((admin_url, name)) = self.created {
            admin(&admin_url, &format!("DROP DATABASE {name}")).await?;
        }
        Ok(())
    }
}

async fn admin(url: &str, sql: &str) -> anyhow::Result<()> {
    if url.starts_with("postgres") {
        let mut c = sqlx::PgConnection::connect(url).await?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut c).await?;
        c.close().await?;
    } else {
        let mut c = sqlx::MySqlConnection::connect(&url.replacen("mariadb:", "mysql:", 1)).await?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut c).await?;
        c.close().await?;
    }
    Ok(())
}
