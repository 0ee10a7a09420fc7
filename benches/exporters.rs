//! Exporters while runs go on: records/s delivered to a fake Elasticsearch (`_bulk`) and to a
//! fake Feishu Bitable (batch_create, within its limits: calls spaced for 50/s), and the engine's
//! runs/s with the exporters on against off (the same 10-node flow as the engine bench), on the
//! database named by `FLOWGUARD_BENCH_URL` (a temporary SQLite file when unset). The exporters use
//! the shipped defaults of the `exporters:` section (batch size, interval, lease).
//!
//! The fake targets run in a second process (this binary re-executed with `--serve-fakes`, which
//! prints their URLs), so parsing and storing what is exported is not charged to flowguard. The
//! flowguard process's own CPU time (utime + stime from `/proc/self/stat`) is printed per phase,
//! and its extra CPU per exported record: (CPU of the on-phase until caught up − CPU per run of the
//! off-phases × runs) / records delivered. On a machine with few cores the exporters compete with
//! the runs for CPU at saturation; the figures are ratios measured in one sitting.
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
use flowguard::export::config::{BitableConfig, ElasticsearchConfig, ExportersConfig};
use flowguard::export::{Exporter, Settings, Sink};
use flowguard::nodes::Registry;
use flowguard::store::{Store, StoreOptions};
use futures::StreamExt;
use std::io::{BufRead, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{BenchDb, NODES, env_num, flow_text};

const SINKS: [&str; 2] = ["elasticsearch", "bitable"];

/// CPU seconds (user + system) of a process, from `/proc/PID/stat`.
fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at field 3: utime is 14, stime 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    (ticks(11) + ticks(12)) / hz
}

/// The child: serves the fakes until its stdin closes (the bench ended).
fn serve_fakes() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    rt.block_on(async {
        let es = fake_es::FakeEs::start().await;
        let fs = fake_feishu_open::FakeFeishuOpen::start().await;
        println!("es={}", es.url);
        println!("feishu={}", fs.url);
        std::io::stdout().flush()?;
        tokio::task::spawn_blocking(|| {
            let mut sink = Vec::new();
            let _ = std::io::stdin().read_to_end(&mut sink);
        })
        .await?;
        anyhow::Ok(())
    })
}

fn main() -> anyhow::Result<()> {
    if std::env::args().any(|a| a == "--serve-fakes") {
        return serve_fakes();
    }
    let mut child = Command::new(std::env::current_exe()?).arg("--serve-fakes").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn()?;
    let mut lines = std::io::BufReader::new(child.stdout.take().expect("piped")).lines();
    let mut url = |key: &str| -> anyhow::Result<String> {
        let line = lines.next().ok_or_else(|| anyhow::anyhow!("the fakes' process ended"))??;
        line.strip_prefix(&format!("{key}=")).map(str::to_owned).ok_or_else(|| anyhow::anyhow!("unexpected line from the fakes: {line}"))
    };
    let (es_url, fs_url) = (url("es")?, url("feishu")?);
    let rt = tokio::runtime::Runtime::new()?;
    let result = rt.block_on(bench(&es_url, &fs_url));
    let fakes_cpu = cpu_seconds(&child.id().to_string());
    drop(child.stdin.take());
    let _ = child.wait();
    let (backend, records) = result?;
    println!("exporters_fakes backend={backend} records={records} fakes_process_cpu_s={fakes_cpu:.2}");
    Ok(())
}

async fn bench(es_url: &str, fs_url: &str) -> anyhow::Result<(String, i64)> {
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
    // Runs/s and the process's CPU seconds of one phase.
    let phase = |label: &'static str| {
        let engine = engine.clone();
        let backend = backend.clone();
        async move {
            let cpu0 = cpu_seconds("self");
            let start = Instant::now();
            let results: Vec<_> = futures::stream::iter(0..runs).map(|_| engine.run(req())).buffer_unordered(concurrency).collect().await;
            let elapsed = start.elapsed();
            let cpu = cpu_seconds("self") - cpu0;
            if let Some(Err(e)) = results.into_iter().find(|r| r.is_err()) {
                return Err(e);
            }
            let rps = runs as f64 / elapsed.as_secs_f64();
            println!(
                "exporters_engine backend={backend} exporters={label} concurrency={concurrency} runs={runs} nodes_per_run={NODES} runs_per_s={rps:.0} cpu_s={cpu:.2} cpu_ms_per_run={:.3}",
                cpu * 1000.0 / runs as f64
            );
            Ok((rps, cpu))
        }
    };
    for _ in 0..50 {
        engine.run(req()).await?;
    }
    let (off1, cpu_off1) = phase("off").await?;

    // Exporters on: both sinks follow the log from its head, with the shipped defaults.
    let defaults = ExportersConfig::default();
    let es_cfg = ElasticsearchConfig {
        url: es_url.to_owned(),
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
        base_url: fs_url.to_owned(),
        app_id: fake_feishu_open::APP_ID.into(),
        app_secret: fake_feishu_open::APP_SECRET.into(),
        app_token: fake_feishu_open::APP_TOKEN.into(),
        table_id: fake_feishu_open::TABLE.into(),
        run_url: None,
        timeout: HumanDuration::secs(30),
    };
    flowguard::export::bitable::setup(&bt_cfg).await?;
    let settings = Settings::from(&defaults);
    println!(
        "exporters_settings batch_size={} interval_ms={} lease_s={}",
        settings.batch_size,
        settings.interval.as_millis(),
        settings.lease.as_secs()
    );
    // Start where the log is now, as a newly configured sink that was set up to skip history would.
    let head = store.attempts_after(0, i64::MAX).await?.last().map(|a| a.0).unwrap_or(0);
    let ends = store.run_ends_after(0, i64::MAX).await?.last().map(|r| r.0).unwrap_or(0);
    for name in SINKS {
        let c = store.export_claim(name, "bench", flowguard::store::leases::wall_ms(), 1).await?.expect("free");
        let p = flowguard::store::ExportProgress { attempt_id: head, run_end_seq: ends, sent: 0, rejected: 0 };
        store.export_advance(name, c.epoch, &p, flowguard::store::leases::wall_ms(), 0).await?;
        store.export_release(name, c.epoch).await?;
    }
    let sent = |store: Store| async move {
        let mut out = [0i64; 2];
        for (i, name) in SINKS.iter().enumerate() {
            out[i] = store.export_cursor(name).await?.map_or(0, |c| c.sent);
        }
        anyhow::Ok(out)
    };
    let sent0 = sent(store.clone()).await?;
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let sinks: [Arc<dyn Sink>; 2] = [
        Arc::new(flowguard::export::elasticsearch::Elasticsearch::new(&es_cfg)?),
        Arc::new(flowguard::export::bitable::Bitable::new(&bt_cfg)?),
    ];
    let tasks: Vec<_> = sinks.into_iter().map(|s| tokio::spawn(Exporter::new(store.clone(), s, settings).run(stop.clone()))).collect();
    let cpu0 = cpu_seconds("self");
    let start = Instant::now();
    let (on, _) = phase("on").await?;
    let during = start.elapsed();
    let sent_during = sent(store.clone()).await?;
    loop {
        let mut lag = 0;
        for name in SINKS {
            let c = store.export_cursor(name).await?.expect("cursor");
            lag += store.export_lag(c.attempt_id, c.run_end_seq).await?;
        }
        if lag == 0 {
            break;
        }
        if start.elapsed() > Duration::from_secs(600) {
            anyhow::bail!("the exporters did not catch up in 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let total = start.elapsed();
    let cpu_on = cpu_seconds("self") - cpu0;
    let sent_end = sent(store.clone()).await?;
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    let (off2, cpu_off2) = phase("off").await?;
    let mut records = 0;
    for (i, sink) in SINKS.iter().enumerate() {
        let (n, during_n) = (sent_end[i] - sent0[i], sent_during[i] - sent0[i]);
        records += n;
        println!(
            "exporters_throughput backend={backend} sink={sink} records={n} delivered_while_running={during_n} records_per_s_while_running={:.0} caught_up_after_s={:.2} records_per_s_overall={:.0}",
            during_n as f64 / during.as_secs_f64(),
            total.as_secs_f64(),
            n as f64 / total.as_secs_f64()
        );
    }
    let off = (off1 + off2) / 2.0;
    let cpu_off_per_run = (cpu_off1 + cpu_off2) / 2.0 / runs as f64;
    let extra = cpu_on - cpu_off_per_run * runs as f64;
    println!(
        "exporters_overhead backend={backend} runs_per_s_off={off:.0} runs_per_s_on={on:.0} slower_pct={:.1} cpu_s_on_until_caught_up={cpu_on:.2} cpu_s_off_same_runs={:.2} cpu_us_per_exported_record={:.1}",
        (off - on) / off * 100.0,
        cpu_off_per_run * runs as f64,
        extra * 1e6 / records.max(1) as f64
    );
    store.close().await;
    db.drop_created().await?;
    Ok((backend, records))
}
