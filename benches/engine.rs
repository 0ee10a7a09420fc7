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
//!
//! Each line carries `floor_us`, the physical floor of the record path measured in the same run
//! (benches/support/floor.rs: the statements of a run, inline on one owned SQLite connection, one
//! run at a time or group-committed), and `x_floor`, the mode's ratio to it, so figures taken on
//! different (or busy) machines compare. On MySQL/PostgreSQL the floor is still SQLite's.

#[path = "support/floor.rs"]
mod floor;
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
    let seq = start.elapsed();

    let start = Instant::now();
    let results: Vec<_> = futures::stream::iter(0..runs).map(|_| engine.run(req())).buffer_unordered(concurrency).collect().await;
    let elapsed = start.elapsed();
    if let Some(Err(e)) = results.into_iter().find(|r| r.is_err()) {
        return Err(e);
    }
    let conc = elapsed;

    store.close().await;
    db.drop_created().await?;

    // The floor, measured now (after the engine, so it does not warm the page cache for it).
    let path = tmp.path().join("floor.db");
    Store::open(&format!("sqlite://{}", path.display()), 2, std::time::Duration::from_secs(5)).await?.close().await;
    let f = tokio::task::spawn_blocking(move || floor::measure(&path, runs, concurrency)).await??;
    for (mode, c, elapsed, runs, floor_us) in
        [("sequential", 1, seq, seq_runs, f.sequential_us), ("concurrent", concurrency, conc, runs, f.concurrent_us)]
    {
        report(backend, mode, c, runs, elapsed, floor_us);
    }
    Ok(())
}

fn report(backend: &str, mode: &str, concurrency: usize, runs: usize, elapsed: std::time::Duration, floor_us: f64) {
    let secs = elapsed.as_secs_f64();
    let us = secs * 1e6 / (runs * NODES) as f64;
    println!(
        "engine_overhead backend={} mode={mode} concurrency={concurrency} runs={runs} nodes_per_run={NODES} runs_per_s={:.0} us_per_node={us:.1} floor_us={floor_us:.1} x_floor={:.1}",
        backend.replace('/', "_"),
        runs as f64 / secs,
        us / floor_us
    );
}

/// The binary's allocator (src/main.rs), so the figures are the binary's.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;
