//! Engine overhead per node, including the committed run log (DESIGN.md §9.1): a 10-node flow of
//! `template` nodes, run one at a time and many at once, on the database named by
//! `FLOWGUARD_BENCH_URL` (a temporary SQLite file when unset).
//!
//! ```text
//! cargo bench --bench engine
//! FLOWGUARD_BENCH_URL=mysql://root@127.0.0.1:3306 cargo bench --bench engine
//! FLOWGUARD_BENCH_URL=postgres://postgres@127.0.0.1:5432 cargo bench --bench engine
//! ```
//!
//! A MySQL/PostgreSQL URL without a database gets a fresh `flowguard_bench_<pid>` database,
//! dropped afterwards. Other knobs: `FLOWGUARD_BENCH_RUNS` (runs per mode, default 2000) and
//! `FLOWGUARD_BENCH_CONCURRENCY` (default 64). Prints one line per mode; asserts nothing.

mod support;
use flowguard::clock::{SharedClock, SystemClock};
use flowguard::config::Config;
use flowguard::engine::{Engine, RunRequest};
use flowguard::nodes::Registry;
use flowguard::store::{Store, StoreOptions};
use futures::StreamExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;
use support::{BenchDb, NODES, env_num, flow_text};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let runs = env_num("FLOWGUARD_BENCH_RUNS", 2000);
    let concurrency = env_num("FLOWGUARD_BENCH_CONCURRENCY", 64);
    let tmp = tempfile::tempdir()?;
    let db = BenchDb::from_env(tmp.path()).await?;
    let url = db.url.clone();

    let cfg = Config::parse(Path::new("bench.yaml"), "timezone: UTC\n", tmp.path(), &|_| None).map_err(|d| anyhow::anyhow!("{d}"))?;
    let reg = Arc::new(Registry::from_config(&cfg)?);
    let flow =
        Arc::new(flowguard::flow::parse(Path::new("bench.yaml"), &flow_text("bench", ""), &reg).map_err(|d| anyhow::anyhow!("{d}"))?);
    let opts = StoreOptions { pool: flowguard::store::PoolSettings { max_connections: 8, ..Default::default() }, ..Default::default() };
    let store = Store::open_with(&url, &opts).await?;
    let backend = store.backend().name();
    let clock: SharedClock = Arc::new(SystemClock);
    let engine = Engine::new(store.clone(), reg, clock, 64 * 1024);
    let req = || RunRequest { flow: flow.clone(), inputs: Default::default(), trigger: "bench".into(), canary: false };

    // Warm up: connections, prepared statements, page cache.
    for _ in 0..50 {
        engine.run(req()).await?;
    }

    let seq_runs = runs.min(1000);
    let start = Instant::now();
    for _ in 0..seq_runs {
        engine.run(req()).await?;
    }
    report(backend, "sequential", 1, seq_runs, start.elapsed());

    let start = Instant::now();
    let results: Vec<_> = futures::stream::iter(0..runs).map(|_| engine.run(req())).buffer_unordered(concurrency).collect().await;
    let elapsed = start.elapsed();
    if let Some(Err(e)) = results.into_iter().find(|r| r.is_err()) {
        return Err(e);
    }
    report(backend, "concurrent", concurrency, runs, elapsed);

    store.close().await;
    db.drop_created().await?;
    Ok(())
}

fn report(backend: &str, mode: &str, concurrency: usize, runs: usize, elapsed: std::time::Duration) {
    let secs = elapsed.as_secs_f64();
    println!(
        "engine_overhead backend={} mode={mode} concurrency={concurrency} runs={runs} nodes_per_run={NODES} runs_per_s={:.0} us_per_node={:.1}",
        backend.replace('/', "_"),
        runs as f64 / secs,
        secs * 1e6 / (runs * NODES) as f64
    );
}
