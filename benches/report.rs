//! Report benchmarks (printed, never asserted):
//! 1. the daily (and weekly) report over a generated history of N node attempts;
//! 2. what rolling up a finished run adds to the engine's per-run overhead (10 no-op nodes).
//!
//!     cargo bench --bench report -- [attempts=1000000] [database URL, default a temporary SQLite file]
//!
//! The history is written with bulk inserts (`Store::import_finished`, which writes the rollups
//! too): runs of an 8-node flow with retries and model switches, ~10 attempts per run, over the
//! 60 days before 2026-11-28 (Asia/Shanghai).

use flowguard::report::{self, ReportCtx, ReportsConfig, schedule};
use flowguard::store::{AttemptRecord, RunRecord, Store};
use flowguard::vocab::{AttemptStatus, RunStatus};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

const NODES: &[(&str, &str, i64)] = &[
    ("fetch", "http", 300),
    ("outline", "llm", 3000),
    ("write", "llm", 9000),
    ("qc", "quality_check", 30),
    ("repair", "llm", 2000),
    ("caption", "template", 5),
    ("cover", "http", 700),
    ("publish", "http", 800),
];

fn history(rng: &mut fastrand::Rng, i: u64, start: i64, span: i64) -> (RunRecord, Vec<AttemptRecord>) {
    let flow = ["douyin", "xiaohongshu", "news"][rng.usize(0..3)];
    let t0 = start + rng.i64(0..span);
    let id = format!("b{i:09}");
    let mut t = t0;
    let mut atts = Vec::with_capacity(12);
    let mut seq = 0;
    let mut failed: Option<(String, String)> = None;
    let mut recovered = false;
    for (node, kind, base) in NODES {
        if failed.is_some() {
            break;
        }
        for try_no in 1..=3 {
            seq += 1;
            let dur = (*base as f64 * (0.5 + rng.f64() * rng.f64() * 4.0)) as i64;
            let bad = rng.f64() < if *kind == "llm" { 0.12 } else { 0.04 };
            let kind_s =
                if bad { Some(["timeout", "rate_limited", "network", "generation_empty"][rng.usize(0..4)].to_owned()) } else { None };
            let retry = bad && try_no < 3 && rng.f64() < 0.8;
            atts.push(AttemptRecord {
                run_id: id.clone(),
                flow: flow.into(),
                node_id: (*node).into(),
                kind: (*kind).into(),
                seq,
                attempt: try_no,
                iteration: None,
                status: if !bad {
                    AttemptStatus::Succeeded
                } else if kind_s.as_deref() == Some("timeout") {
                    AttemptStatus::TimedOut
                } else {
                    AttemptStatus::Failed
                },
                started_at: t,
                ended_at: t + dur,
                duration_ms: dur,
                input_bytes: 100,
                output_bytes: 400,
                input: None,
                output: None,
                retried: retry && try_no < 2,
                action: Some(
                    if !bad {
                        "continue"
                    } else if retry && try_no < 2 {
                        "retry"
                    } else if retry {
                        "next_model"
                    } else {
                        "fail"
                    }
                    .into(),
                ),
                error_kind: kind_s.clone(),
                error_message: None,
                model: (*kind == "llm").then(|| if try_no == 3 { "backup".into() } else { "deepseek".into() }),
                tokens_in: None,
                tokens_out: None,
                http_status: None,
                cost_nanos: None,
                currency: None,
            });
            t += dur;
            if !bad {
                break;
            }
            if retry {
                recovered = true;
                continue;
            }
            failed = Some(((*node).into(), kind_s.unwrap_or_default()));
            break;
        }
    }
    let status = match (&failed, recovered) {
        (Some(_), _) => RunStatus::Failed,
        (None, true) => RunStatus::Recovered,
        (None, false) => RunStatus::Succeeded,
    };
    let run = RunRecord {
        id,
        flow: flow.into(),
        flow_hash: "bench".into(),
        trigger: "cron".into(),
        status,
        canary: false,
        inputs: None,
        started_at: t0,
        ended_at: Some(t),
        duration_ms: Some(t - t0),
        failed_node: failed.as_ref().map(|f| f.0.clone()),
        error_kind: failed.map(|f| f.1),
        error_message: None,
        severity: None,
    };
    (run, atts)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    flowguard::init_tls();
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let target: u64 = args.first().and_then(|a| a.replace('_', "").parse().ok()).unwrap_or(1_000_000);
    let dir = tempfile::tempdir()?;
    let url = args.get(1).cloned().unwrap_or_else(|| format!("sqlite://{}", dir.path().join("bench.db").display()));
    let store = Store::open(&url, 8, Duration::from_secs(30)).await?;
    let backend = store.backend().name();
    let tz = jiff::tz::TimeZone::get("Asia/Shanghai")?;
    let end = jiff::civil::date(2026, 11, 28).to_zoned(tz.clone())?.timestamp().as_millisecond();
    let span = 60 * 86_400_000;

    // 1. History.
    let existing = store.rollup_window(None, end - span, end, false).await?.nodes.iter().map(|n| n.4[0]).sum::<i64>() as u64;
    let t = Instant::now();
    let mut rng = fastrand::Rng::with_seed(42);
    let (mut written, mut i) = (existing, existing);
    while written < target {
        let mut runs = Vec::with_capacity(2000);
        let mut atts = Vec::with_capacity(22000);
        while runs.len() < 2000 && written + (atts.len() as u64) < target {
            let (r, a) = history(&mut rng, i, end - span, span);
            i += 1;
            atts.extend(a);
            runs.push(r);
        }
        written += atts.len() as u64;
        store.import_finished(&runs, &atts).await?;
    }
    if written > existing {
        println!(
            "report-bench generate backend={backend} attempts={written} new={} secs={:.1}",
            written - existing,
            t.elapsed().as_secs_f64()
        );
    }

    // 2. Daily and weekly reports, cold-ish then warm: five of each, median.
    let ctx = ReportCtx {
        store: store.clone(),
        cfg: ReportsConfig::default(),
        tz: tz.clone(),
        tz_name: "Asia/Shanghai".into(),
        locale: "zh-CN".into(),
        limits: BTreeMap::new(),
    };
    let day = schedule::day(jiff::civil::date(2026, 11, 27), &tz);
    let week = schedule::week(jiff::civil::date(2026, 11, 16), &tz);
    for (name, p) in [("daily", &day), ("weekly", &week)] {
        let mut times = Vec::new();
        let mut runs = 0;
        for _ in 0..5 {
            let t = Instant::now();
            let r = report::build(&ctx, p, end).await?;
            let _ = report::render::render(&r, &tz);
            times.push(t.elapsed().as_secs_f64() * 1000.0);
            runs = r.stats.total.runs;
        }
        println!(
            "report-bench {name}-report backend={backend} attempts={written} runs_in_period={runs} median_ms={:.1} max_ms={:.1}",
            median(times.clone()),
            times.iter().cloned().fold(0.0, f64::max)
        );
    }

    // 3. Per-run cost of rolling up, against the engine's whole per-run overhead: a flow of ten
    //    template nodes (no I/O), sequential runs, with and without rollups.
    let proj = tempfile::tempdir()?;
    let cfg = flowguard::config::Config::parse(&proj.path().join("flowguard.yaml"), "timezone: Asia/Shanghai\n", proj.path(), &|_| None)
        .map_err(|d| anyhow::anyhow!("{d}"))?;
    let reg = Arc::new(flowguard::nodes::Registry::from_config(&cfg)?);
    let mut yaml = String::from("name: noop10\nnodes:\n");
    for n in 0..10 {
        yaml.push_str(&format!("  - id: n{n}\n    kind: template\n    text: \"x{n}\"\n"));
    }
    let flow = Arc::new(flowguard::flow::parse(&proj.path().join("noop10.yaml"), &yaml, &reg).map_err(|d| anyhow::anyhow!("{d}"))?);
    let engine = flowguard::engine::Engine::new(store.clone(), reg, Arc::new(flowguard::clock::SystemClock), 65536);
    let req = || flowguard::engine::RunRequest { flow: flow.clone(), inputs: Default::default(), trigger: "bench".into(), canary: false };
    let n = 300;
    let mut per_run = BTreeMap::new();
    for round in 0..2 {
        for off in [false, true] {
            flowguard::store::rollups::bench_disable_rollups(off);
            let t = Instant::now();
            for _ in 0..n {
                engine.run(req()).await?;
            }
            if round == 1 {
                per_run.insert(off, t.elapsed().as_secs_f64() * 1e6 / n as f64);
            }
        }
    }
    flowguard::store::rollups::bench_disable_rollups(false);
    let (with, without) = (per_run[&false], per_run[&true]);
    println!(
        "report-bench rollup-per-run backend={backend} engine_us_per_run_without={without:.0} with={with:.0} rollup_us={:.0} share_of_engine={:.1}%",
        with - without,
        (with - without) / without * 100.0
    );
    store.close().await;
    Ok(())
}
