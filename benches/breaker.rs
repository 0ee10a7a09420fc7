//! Auto-degrade with a model's breaker (issue: "a primary answering 500 costs each run three
//! failed attempts before the backup is tried"). The primary model fails every call; the backup
//! answers after a fixed latency. Prints the median run duration:
//!
//! - `direct`: runs whose node uses the backup model directly (the floor);
//! - `before_open`: runs on the chain primary → backup while the breaker is still closed (each
//!   pays the primary's failed attempts and their backoff);
//! - `after_open`: the same runs once the breaker opened (the primary is skipped), and their
//!   ratio to `direct` (target: within 5 %).
//!
//! ```text
//! cargo bench --bench breaker
//! FLOWGUARD_BENCH_URL=mysql://root@127.0.0.1:3306 cargo bench --bench breaker
//! ```
//!
//! Knobs: `FLOWGUARD_BENCH_RUNS` (runs per mode after the breaker opens, default 40). Asserts nothing.

#[allow(dead_code)] // the 10-node flow is for the engine and workers benches
mod support;
use flowguard::clock::{SharedClock, SystemClock};
use flowguard::config::Config;
use flowguard::engine::{Engine, RunRequest};
use flowguard::nodes::Registry;
use flowguard::store::{Store, StoreOptions};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{BenchDb, env_num};

const CONFIG: &str = "timezone: UTC
defaults:
  breaker: { min_calls: 30, failure_rate: 50, window: 10m, cooldown: 1h }
models:
  primary:
    provider: simulated
    fallback: [backup]
    simulate: { latency: 50ms, faults: { server_error: 1.0 } }
  backup:
    provider: simulated
    simulate: { latency: 200ms }
";

fn flow(name: &str, model: &str) -> String {
    format!(
        "name: {name}\nnodes:\n  - id: script\n    kind: llm\n    {model}\n    prompt: \"主题：秋天露营\"\n    json: true\n    retry: {{ max_attempts: 3, delay: 100ms, jitter: 0 }}\n"
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let runs = env_num("FLOWGUARD_BENCH_RUNS", 40);
    let tmp = tempfile::tempdir()?;
    let db = BenchDb::from_env(tmp.path()).await?;
    let cfg = Config::parse(Path::new("bench.yaml"), CONFIG, tmp.path(), &|_| None).map_err(|d| anyhow::anyhow!("{d}"))?;
    let reg = Arc::new(Registry::from_config(&cfg)?);
    let parse = |name: &str, model: &str| -> anyhow::Result<_> {
        Ok(Arc::new(flowguard::flow::parse(Path::new("bench.yaml"), &flow(name, model), &reg).map_err(|d| anyhow::anyhow!("{d}"))?))
    };
    let (chain, direct) = (parse("chain", "model: primary")?, parse("direct", "models: [backup]")?);
    let opts = StoreOptions { pool: flowguard::store::PoolSettings { max_connections: 8, ..Default::default() }, ..Default::default() };
    let store = Store::open_with(&db.url, &opts).await?;
    let backend = store.backend().name().replace('/', "_");
    let clock: SharedClock = Arc::new(SystemClock);
    let engine = Engine::new(store.clone(), reg.clone(), clock, 64 * 1024);
    let run = |f: &Arc<flowguard::flow::Flow>| {
        let req = RunRequest { flow: f.clone(), inputs: Default::default(), trigger: "bench".into(), canary: false };
        let engine = engine.clone();
        async move {
            let t = Instant::now();
            let o = engine.run(req).await?;
            anyhow::ensure!(o.status.is_success(), "run failed: {o:?}");
            Ok::<Duration, anyhow::Error>(t.elapsed())
        }
    };

    let mut direct_ms = Vec::new();
    for _ in 0..runs {
        direct_ms.push(run(&direct).await?);
    }
    let mut before = Vec::new();
    while store.breaker("primary").await?.state == "closed" {
        before.push(run(&chain).await?);
    }
    let mut after = Vec::new();
    for _ in 0..runs {
        after.push(run(&chain).await?);
    }
    let (d, b, a) = (median(&mut direct_ms), median(&mut before), median(&mut after));
    println!("breaker backend={backend} mode=direct runs={} median_ms={d:.1}", direct_ms.len());
    println!("breaker backend={backend} mode=before_open runs={} median_ms={b:.1} ratio_vs_direct={:.3}", before.len(), b / d);
    println!("breaker backend={backend} mode=after_open runs={} median_ms={a:.1} ratio_vs_direct={:.3}", after.len(), a / d);

    store.close().await;
    db.drop_created().await?;
    Ok(())
}

fn median(v: &mut [Duration]) -> f64 {
    v.sort();
    v.get(v.len() / 2).map(|d| d.as_secs_f64() * 1000.0).unwrap_or(f64::NAN)
}
