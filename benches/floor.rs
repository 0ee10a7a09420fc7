//! The physical floor of the run log on SQLite (DESIGN.md §9.1): the statements the store writes
//! for a 10-node run, inline on one connection the benchmark owns (benches/support/floor.rs), one
//! run at a time and `FLOWGUARD_BENCH_CONCURRENCY` runs per commit. `cargo bench --bench engine`
//! measures the same floor in its own run and prints each mode's ratio to it.
//!
//! ```text
//! cargo bench --bench floor
//! ```
//!
//! Knobs: `FLOWGUARD_BENCH_RUNS` (runs per mode, default 2000), `FLOWGUARD_BENCH_CONCURRENCY`
//! (default 64). Prints one line per mode; asserts nothing.

#[path = "support/floor.rs"]
mod floor;
#[allow(dead_code)] // the floor needs only NODES and env_num
mod support;

use support::{NODES, env_num};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let runs = env_num("FLOWGUARD_BENCH_RUNS", 2000);
    let concurrency = env_num("FLOWGUARD_BENCH_CONCURRENCY", 64);
    let tmp = tempfile::tempdir()?;
    let path = tmp.path().join("floor.db");
    // flowguard's own schema, as migrations leave it.
    flowguard::store::Store::open(&format!("sqlite://{}", path.display()), 2, std::time::Duration::from_secs(5)).await?.close().await;
    let f = tokio::task::spawn_blocking(move || floor::measure(&path, runs, concurrency)).await??;
    println!("record_floor backend=SQLite mode=sequential concurrency=1 nodes_per_run={NODES} us_per_node={:.1}", f.sequential_us);
    println!(
        "record_floor backend=SQLite mode=concurrent concurrency={concurrency} nodes_per_run={NODES} us_per_node={:.1}",
        f.concurrent_us
    );
    Ok(())
}
