//! Workers on one database (issue "many processes, one database"): runs per second completed by 1,
//! 2 and 4 workers claiming from the run queue (10 `template` nodes per run), beside today's
//! in-process runs/s at the same concurrency; and the time from a worker's death to its run being
//! taken over.
//!
//! ```text
//! FLOWGUARD_BENCH_URL=mysql://root@127.0.0.1:3306 cargo bench --bench workers
//! FLOWGUARD_BENCH_URL=postgres://postgres@127.0.0.1:5432 cargo bench --bench workers
//! ```
//!
//! Each worker is what one `serve` process has: its own pool, group-commit writer and lease
//! heartbeat, claiming with `FOR UPDATE SKIP LOCKED`. A server URL without a database gets a fresh
//! `flowguard_bench_<pid>` database, dropped afterwards. Knobs: `FLOWGUARD_BENCH_RUNS` (default
//! 1000), `FLOWGUARD_BENCH_CONCURRENCY` (runs in flight in total, default 16). Prints one line per
//! figure; asserts nothing.

mod support;
use flowguard::clock::{SharedClock, SystemClock};
use flowguard::config::Config;
use flowguard::engine::{Engine, RunRequest};
use flowguard::flow::Flow;
use flowguard::nodes::Registry;
use flowguard::scheduler::runs::{Launch, OnFinish, Runs};
use flowguard::store::{LeaseSettings, Store, StoreOptions};
use futures::StreamExt;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use support::{BenchDb, NODES, env_num, flow_text};

struct Bench {
    url: String,
    reg: Arc<Registry>,
    flows: BTreeMap<String, Arc<Flow>>,
}

impl Bench {
    async fn engine(&self, lease: LeaseSettings) -> anyhow::Result<Engine> {
        let opts =
            StoreOptions { pool: flowguard::store::PoolSettings { max_connections: 8, ..Default::default() }, lease, ..Default::default() };
        let store = Store::open_with(&self.url, &opts).await?;
        let clock: SharedClock = Arc::new(SystemClock);
        Ok(Engine::new(store, self.reg.clone(), clock, 64 * 1024))
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let runs = env_num("FLOWGUARD_BENCH_RUNS", 1000);
    let concurrency = env_num("FLOWGUARD_BENCH_CONCURRENCY", 16);
    let tmp = tempfile::tempdir()?;
    let db = BenchDb::from_env(tmp.path()).await?;
    let url = db.url.clone();
    let cfg_text = "timezone: UTC\nmodels:\n  slow:\n    provider: simulated\n    simulate: { latency: 60s }\n";
    let cfg = Config::parse(Path::new("bench.yaml"), cfg_text, tmp.path(), &|_| None).map_err(|d| anyhow::anyhow!("{d}"))?;
    let reg = Arc::new(Registry::from_config(&cfg)?);
    let parse = |text: String| flowguard::flow::parse(Path::new("bench.yaml"), &text, &reg).map_err(|d| anyhow::anyhow!("{d}"));
    let bench_flow = Arc::new(parse(flow_text("bench", ""))?);
    let stuck = Arc::new(parse(flow_text("stuck", "  - id: think\n    kind: llm\n    model: slow\n    prompt: hi\n"))?);
    let flows: BTreeMap<String, Arc<Flow>> = [("bench".to_owned(), bench_flow.clone()), ("stuck".to_owned(), stuck.clone())].into();
    let b = Bench { url, reg: reg.clone(), flows };
    let lease = LeaseSettings::default();

    let engine = b.engine(lease).await?;
    let backend = engine.store.backend().name().replace('/', "_");
    let req = || RunRequest { flow: bench_flow.clone(), inputs: Default::default(), trigger: "bench".into(), canary: false };
    for _ in 0..50 {
        engine.run(req()).await?;
    }
    // Today's way: runs started in process, no queue.
    let start = Instant::now();
    let results: Vec<_> = futures::stream::iter(0..runs).map(|_| engine.run(req())).buffer_unordered(concurrency).collect().await;
    if let Some(Err(e)) = results.into_iter().find(|r| r.is_err()) {
        return Err(e);
    }
    let in_process = runs as f64 / start.elapsed().as_secs_f64();
    println!(
        "workers backend={backend} mode=in_process concurrency={concurrency} runs={runs} nodes_per_run={NODES} runs_per_s={in_process:.0}"
    );

    for workers in [1usize, 2, 4] {
        // The queue is filled first; the figure is the workers' throughput claiming and running.
        let runs_ = Arc::new(Runs::default());
        let launch = Launch { flow: bench_flow.clone(), inputs: Default::default(), trigger: "bench".into(), canary: false, overlap: None };
        let ids: Vec<String> = (0..runs).map(|_| uuid::Uuid::now_v7().to_string()).collect();
        let queued: Vec<_> =
            futures::stream::iter(ids.iter()).map(|id| runs_.queue(&engine, &launch, id, None)).buffer_unordered(64).collect().await;
        if let Some(Err(e)) = queued.into_iter().find(|r| r.is_err()) {
            return Err(e);
        }
        let done = Arc::new(AtomicUsize::new(0));
        let finished = Arc::new(tokio::sync::Notify::new());
        let mut engines = Vec::new();
        for _ in 0..workers {
            engines.push(b.engine(lease).await?);
        }
        let start = Instant::now();
        let mut tasks = Vec::new();
        for e in engines.clone() {
            let per = Arc::new(Runs::with_capacity((concurrency / workers).max(1)));
            let (done, finished, flows) = (done.clone(), finished.clone(), b.flows.clone());
            let on_finish: OnFinish = Arc::new(move |_, _| {
                done.fetch_add(1, Ordering::Relaxed);
                finished.notify_one();
            });
            tasks.push(tokio::spawn(async move {
                loop {
                    match per.work_once(&e, &flows, &on_finish).await {
                        Ok(n) if n > 0 => continue,
                        Ok(_) => per.idle(Duration::from_millis(20)).await,
                        Err(err) => eprintln!("claim failed: {err:#}"),
                    }
                }
            }));
        }
        while done.load(Ordering::Relaxed) < runs {
            let _ = tokio::time::timeout(Duration::from_millis(100), finished.notified()).await;
        }
        let rate = runs as f64 / start.elapsed().as_secs_f64();
        for t in tasks {
            t.abort();
        }
        for e in engines {
            e.store.close().await;
        }
        println!(
            "workers backend={backend} mode=queue workers={workers} concurrency={concurrency} runs={runs} nodes_per_run={NODES} runs_per_s={rate:.0} vs_in_process={:.2}",
            rate / in_process
        );
    }

    // Takeover: a worker holding a run dies (its task and heartbeat stop); another one, checking
    // every heartbeat as `serve` does, takes the run over once the lease expired.
    let short = LeaseSettings { length: Duration::from_secs(2), heartbeat: Duration::from_millis(667) };
    for _ in 0..3 {
        let dying = b.engine(short).await?;
        let run_req = RunRequest { flow: stuck.clone(), inputs: Default::default(), trigger: "bench".into(), canary: false };
        let d = dying.clone();
        let task = tokio::spawn(async move { d.run(run_req).await });
        // Wait until it is in its stuck node, holding the lease.
        let run_id = loop {
            let rows = engine
                .store
                .pool()
                .fetch(
                    "SELECT run_id FROM node_attempts WHERE flow = 'stuck' AND node_id = 'n9' AND run_id IN (SELECT id FROM runs WHERE status = 'running')",
                    &[],
                    &[flowguard::store::Ty::Str],
                )
                .await?;
            if let Some(id) = rows.first().and_then(|r| r[0].str()) {
                break id;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        task.abort();
        let died = Instant::now();
        let _ = task.await;
        dying.store.close().await;
        drop(dying);
        let taker = b.engine(short).await?;
        let mut took = None;
        while took.is_none() {
            tokio::time::sleep(short.heartbeat).await;
            let claimed = taker.store.claim_expired().await?;
            if claimed.iter().any(|r| r.id == run_id) {
                took = Some(died.elapsed());
            }
        }
        let took = took.unwrap_or_default();
        // End the run so the next round starts clean.
        let run = taker.store.get_run(&run_id).await?.ok_or_else(|| anyhow::anyhow!("run vanished"))?;
        taker.store.mark_interrupted(&run, flowguard::store::leases::wall_ms(), "bench").await?;
        taker.store.close().await;
        println!(
            "workers backend={backend} mode=takeover lease_ms={} heartbeat_ms={} death_to_takeover_ms={}",
            short.length.as_millis(),
            short.heartbeat.as_millis(),
            took.as_millis()
        );
    }

    engine.store.close().await;
    db.drop_created().await?;
    Ok(())
}
