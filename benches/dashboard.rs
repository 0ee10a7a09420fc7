//! Dashboard benchmark (printed, never asserted): time to first byte and full answer of the
//! overview, a flow page and a run page, served by the real server over a database holding N runs
//! (default 1,000,000, three node attempts each, over the 30 days before now), and the size of the
//! assets.
//!
//!     cargo bench --bench dashboard -- [runs=1000000] [database URL, default a temporary SQLite file]
//!
//! The history is written with bulk inserts (`Store::import_finished`, rollups included). The
//! server runs without tokens (loopback), so no sign-in is measured; each page is fetched 20 times
//! after one warm-up, and the median and the slowest are printed.

use flowguard::clock::SystemClock;
use flowguard::server::{Application, Options};
use flowguard::store::{AttemptRecord, RunRecord, Store};
use flowguard::vocab::{AttemptStatus, RunStatus};
use std::sync::Arc;
use std::time::{Duration, Instant};

const NODES: &[(&str, &str, i64)] = &[("fetch", "http", 300), ("write", "llm", 6000), ("publish", "http", 800)];

fn run(rng: &mut fastrand::Rng, i: u64, start: i64, span: i64) -> (RunRecord, Vec<AttemptRecord>) {
    let flow = ["douyin", "xiaohongshu", "news"][rng.usize(0..3)];
    let id = format!("d{i:09}");
    let t0 = start + rng.i64(0..span);
    let mut t = t0;
    let mut atts = Vec::with_capacity(3);
    let failed = rng.f64() < 0.05;
    for (seq, (node, kind, base)) in NODES.iter().enumerate() {
        let dur = (*base as f64 * (0.5 + rng.f64() * 2.0)) as i64;
        let bad = failed && seq == NODES.len() - 1;
        atts.push(AttemptRecord {
            run_id: id.clone(),
            flow: flow.into(),
            node_id: (*node).into(),
            kind: (*kind).into(),
            seq: seq as i64 + 1,
            attempt: 1,
            iteration: None,
            status: if bad { AttemptStatus::Failed } else { AttemptStatus::Succeeded },
            started_at: t,
            ended_at: t + dur,
            duration_ms: dur,
            input_bytes: 200,
            output_bytes: 800,
            input: Some(r#"{"topic":"spring travel"}"#.into()),
            output: Some(r#"{"text":"a script about spring travel"}"#.into()),
            retried: false,
            action: Some(if bad { "fail" } else { "continue" }.into()),
            error_kind: bad.then(|| "publish_failed".into()),
            error_message: bad.then(|| "the platform refused the post".into()),
            model: (*kind == "llm").then(|| "writer".into()),
            tokens_in: None,
            tokens_out: None,
            http_status: None,
            cost_nanos: None,
            currency: None,
        });
        t += dur;
    }
    let r = RunRecord {
        id,
        flow: flow.into(),
        flow_hash: "bench".into(),
        trigger: "cron".into(),
        status: if failed { RunStatus::Failed } else { RunStatus::Succeeded },
        canary: false,
        inputs: Some(r#"{"topic":"spring travel"}"#.into()),
        started_at: t0,
        ended_at: Some(t),
        duration_ms: Some(t - t0),
        failed_node: failed.then(|| "publish".into()),
        error_kind: failed.then(|| "publish_failed".into()),
        error_message: failed.then(|| "the platform refused the post".into()),
        severity: failed.then(|| "medium".into()),
    };
    (r, atts)
}

/// (time to the response's head, time to its last byte, bytes) of one GET.
async fn fetch(http: &reqwest::Client, url: &str) -> anyhow::Result<(Duration, Duration, usize)> {
    let t = Instant::now();
    let r = http.get(url).send().await?;
    let head = t.elapsed();
    anyhow::ensure!(r.status().is_success(), "{url}: {}", r.status());
    let body = r.bytes().await?;
    Ok((head, t.elapsed(), body.len()))
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    flowguard::init_tls();
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let target: u64 = args.first().and_then(|a| a.replace('_', "").parse().ok()).unwrap_or(1_000_000);
    let dir = tempfile::tempdir()?;
    let url = args.get(1).cloned().unwrap_or_else(|| format!("sqlite://{}?mode=rwc", dir.path().join("bench.db").display()));
    let store = Store::open(&url, 4, Duration::from_secs(30)).await?;
    let backend = store.backend().name();
    let now = jiff::Timestamp::now().as_millisecond();
    let span = 30 * 86_400_000;

    // 1. History.
    let t = Instant::now();
    let mut rng = fastrand::Rng::with_seed(7);
    let mut last = String::new();
    let mut i = 0;
    while i < target {
        let n = (target - i).min(5000);
        let mut runs = Vec::with_capacity(n as usize);
        let mut atts = Vec::with_capacity(3 * n as usize);
        for _ in 0..n {
            let (r, a) = run(&mut rng, i, now - span, span - 60_000);
            i += 1;
            last = r.id.clone();
            runs.push(r);
            atts.extend(a);
        }
        store.import_finished(&runs, &atts).await?;
    }
    println!("dashboard history: {target} runs, {} attempts written in {:.1}s ({backend})", target * 3, t.elapsed().as_secs_f64());
    store.close().await;

    // 2. The server over it.
    let config = format!(
        "storage:\n  url: {url}\ntimezone: Asia/Shanghai\nlocale: zh-CN\nserver:\n  listen: 127.0.0.1:0\n  watch_interval: 0s\n  read_concurrency: 8\n"
    );
    std::fs::write(dir.path().join("flowguard.yaml"), config)?;
    std::fs::create_dir_all(dir.path().join("flows"))?;
    let opts = Options { listen: None, clock: Arc::new(SystemClock), extra_schedules: Vec::new() };
    let app = Application::build(&dir.path().join("flowguard.yaml"), opts).await?;
    let base = format!("http://127.0.0.1:{}", app.port());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async move {
        let _ = stop_rx.await;
    }));
    let http = reqwest::Client::new();
    let pages = [
        ("overview", "/".to_owned()),
        ("overview 7d", "/?window=7d".to_owned()),
        ("flow page", "/flows/douyin".to_owned()),
        ("run page", format!("/runs/{last}")),
        ("alerts page", "/alerts".to_owned()),
        ("reports page", "/reports".to_owned()),
    ];
    for (name, path) in &pages {
        let url = format!("{base}{path}");
        fetch(&http, &url).await?;
        let mut heads = Vec::new();
        let mut fulls = Vec::new();
        let mut size = 0;
        for _ in 0..20 {
            let (h, f, n) = fetch(&http, &url).await?;
            heads.push(h);
            fulls.push(f);
            size = n;
        }
        heads.sort();
        fulls.sort();
        println!(
            "dashboard {name} at {target} runs ({backend}): first byte median {} ms, slowest {} ms; full answer median {} ms; {size} bytes",
            ms(heads[10]),
            ms(heads[19]),
            ms(fulls[10])
        );
    }
    let assets: usize = flowguard::server::dashboard::ASSETS.iter().map(|(_, _, body)| body.len()).sum();
    let overview = fetch(&http, &format!("{base}/")).await?.2;
    println!(
        "dashboard assets: {assets} bytes ({}), overview page with its assets: {} bytes",
        flowguard::server::dashboard::ASSETS.iter().map(|(n, _, b)| format!("{n} {}", b.len())).collect::<Vec<_>>().join(", "),
        assets + overview
    );
    let _ = stop_tx.send(());
    server.await??;
    Ok(())
}
