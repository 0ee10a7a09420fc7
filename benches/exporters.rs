//! Exporters while runs go on: records/s delivered to a fake Elasticsearch (`_bulk`) and to a
//! fake Feishu Bitable (batch_create, within its limits: calls spaced for 50/s), and the engine's
//! runs/s with the exporters on against off (the same 10-node flow as the engine bench), on the
//! database named by `FLOWGUARD_BENCH_URL` (a temporary SQLite file when unset).
//!
//! ```text
//! cargo bench --bench exporters
//! FLOWGUARD_BENCH_URL=mysql://root@127.0.0.1:3306 cargo bench --bench exporters
//! ```
//!
//! Knobs: `FLOWGUARD_BENCH_RUNS` (runs per phase, default 1000), `FLOWGUARD_BENCH_CONCURRENCY`
//! (default 32). Prints one line per figure; asserts nothing.

#[allow(dead_code)]
#[path = "../tests/it/support/fake_es.rs"]
mod fake_es;
#[allow(dead_code)]
#[path = "../tests/it/support/fake_feishu_open.rs"]
mod fake_feishu_open;
mod support;

use flowguard::clock::{SharedClock, SystemClock};
use flowguard::config::{Config, HumanDuration};
use flowguard::engine::{Engine, RunRequest};
use flowguard::export::config::{BitableConfig, ElasticsearchConfig};
use flowguard::export::{Exporter, Settings, Sink};
use flowguard::nodes::Registry;
use flowguard::store::{Store, StoreOptions};
use futures::StreamExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{BenchDb, NODES, env_num, flow_text};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let runs = env_num("FLOWGUARD_BENCH_RUNS", 1000);
    let concurrency = env_num("FLOWGUARD_BENCH_CONCURRENCY", 32);
    let tmp = tempfile::tempdir()?;
    let db = BenchDb::from_env(tmp.path()).await?;
    let cfg = Config::parse(Path::new("bench.yaml"), "timezone: UTC\n", tmp.path(), &|_| None).map_err(|d| anyhow::anyhow!("{d}"))?;
    let reg = Arc::new(Registry::from_config(&cfg)?);
    let flow =
        Arc::new(flowguard::flow::parse(Path::new("bench.yaml"), &flow_text("bench", ""), &reg).map_err(|d| anyhow::anyhow!("{d}"))?);
    let opts = StoreOptions { pool: flowguard::store::PoolSettings { max_connections: 8, ..Default::default() }, ..Default::default() };
    let store = Store::open_with(&db.url, &opts).await?;
    let backend = store.backend().name().replace('/', "_");
    let clock: SharedClock = Arc::new(SystemClock);
    let engine = Engine::new(store.clone(), reg, clock, 64 * 1024);
    let req = || RunRequest { flow: flow.clone(), inputs: Default::default(), trigger: "bench".into(), canary: false };
    let phase = |label: &'static str| {
        let engine = engine.clone();
        let backend = backend.clone();
        async move {
            let start = Instant::now();
            let results: Vec<_> = futures::stream::iter(0..runs).map(|_| engine.run(req())).buffer_unordered(concurrency).collect().await;
            let elapsed = start.elapsed();
            if let Some(Err(e)) = results.into_iter().find(|r| r.is_err()) {
                return Err(e);
            }
            let rps = runs as f64 / elapsed.as_secs_f64();
            println!(
                "exporters_engine backend={backend} exporters={label} concurrency={concurrency} runs={runs} nodes_per_run={NODES} runs_per_s={rps:.0}"
            );
            Ok(rps)
        }
    };
    for _ in 0..50 {
        engine.run(req()).await?;
    }
    let off1 = phase("off").await?;

    // Exporters on: both sinks follow the log from its head.
    let es = fake_es::FakeEs::start().await;
    let fs = fake_feishu_open::FakeFeishuOpen::start().await;
    let es_cfg = ElasticsearchConfig {
        url: es.url.clone(),
        index: "flowguard-attempts".into(),
        runs_index: "flowguard-runs".into(),
        dated: false,
        api_key: Some(fake_es::API_KEY.into()),
        username: None,
        password: None,
        kibana_url: None,
        timeout: HumanDuration::secs(30),
    };
    let bt_cfg = BitableConfig {
        base_url: fs.url.clone(),
        app_id: fake_feishu_open::APP_ID.into(),
        app_secret: fake_feishu_open::APP_SECRET.into(),
        app_token: fake_feishu_open::APP_TOKEN.into(),
        table_id: fake_feishu_open::TABLE.into(),
        run_url: None,
        timeout: HumanDuration::secs(30),
    };
    flowguard::export::bitable::setup(&bt_cfg).await?;
    let settings = Settings {
        batch_size: 500,
        interval: Duration::from_millis(200),
        gap_wait: Duration::from_secs(10),
        lease: Duration::from_secs(30),
        max_backoff: Duration::from_secs(5),
        alert_after: Duration::from_secs(600),
    };
    // Start where the log is now, as a newly configured sink that was set up to skip history would.
    let head = store.attempts_after(0, i64::MAX).await?.last().map(|a| a.0).unwrap_or(0);
    let ends = store.run_ends_after(0, i64::MAX).await?.last().map(|r| r.0).unwrap_or(0);
    for name in ["elasticsearch", "bitable"] {
        let c = store.export_claim(name, "bench", flowguard::store::leases::wall_ms(), 1).await?.expect("free");
        let p = flowguard::store::ExportProgress { attempt_id: head, run_end_seq: ends, sent: 0, rejected: 0 };
        store.export_advance(name, c.epoch, &p, flowguard::store::leases::wall_ms(), 0).await?;
        store.export_release(name, c.epoch).await?;
    }
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let sinks: [Arc<dyn Sink>; 2] = [
        Arc::new(flowguard::export::elasticsearch::Elasticsearch::new(&es_cfg)?),
        Arc::new(flowguard::export::bitable::Bitable::new(&bt_cfg)?),
    ];
    let tasks: Vec<_> = sinks.into_iter().map(|s| tokio::spawn(Exporter::new(store.clone(), s, settings).run(stop.clone()))).collect();
    let start = Instant::now();
    let on = phase("on").await?;
    let during = start.elapsed();
    let es_during = es.docs("flowguard-attempts").len();
    let bt_during = fs.records().len();
    let want = runs * NODES;
    loop {
        if es.docs("flowguard-attempts").len() >= want && fs.records().len() >= want {
            break;
        }
        if start.elapsed() > Duration::from_secs(600) {
            anyhow::bail!("the exporters did not catch up in 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let total = start.elapsed();
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    let off2 = phase("off").await?;
    for (sink, during_n) in [("elasticsearch", es_during), ("bitable", bt_during)] {
        println!(
            "exporters_throughput backend={backend} sink={sink} records={want} delivered_while_running={during_n} records_per_s_while_running={:.0} caught_up_after_s={:.2} records_per_s_overall={:.0}",
            during_n as f64 / during.as_secs_f64(),
            total.as_secs_f64(),
            want as f64 / total.as_secs_f64()
        );
    }
    let off = (off1 + off2) / 2.0;
    println!(
        "exporters_overhead backend={backend} runs_per_s_off={off:.0} runs_per_s_on={on:.0} slower_pct={:.1}",
        (off - on) / off * 100.0
    );
    store.close().await;
    db.drop_created().await?;
    Ok(())
}
