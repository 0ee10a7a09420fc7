//! `flowguard demo`: with no configuration, writes the example project into a directory, runs the
//! example flow a bounded number of times against the simulated model and publisher (with fault
//! rates that make every error kind show up), and prints the statistics.

use super::init::{Profile, init};
use super::{App, Failure, query, table};
use crate::clock::SharedClock;
use crate::engine::{Event, RunRequest};
use futures::StreamExt;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

pub async fn demo(dir: &Path, runs: u32, concurrency: usize, clock: SharedClock) -> Result<i32, Failure> {
    init(dir, true, Profile::Demo)?;
    batch(dir, runs, concurrency, clock).await
}

/// The demo with the dashboard live from the start: writes the project, starts serving and
/// prints the dashboard's address first, runs the batch while the dashboard shows it, then keeps
/// the example flow running every 15 seconds until Ctrl-C.
pub async fn served(dir: &Path, runs: u32, concurrency: usize, listen: &str, clock: SharedClock) -> Result<i32, Failure> {
    init(dir, true, Profile::Demo)?;
    let config = dir.join("flowguard.yaml");
    let cron = crate::flow::schedule::parse_cron("*/15 * * * * *").map_err(super::usage)?;
    let mut opts = crate::server::Options {
        listen: Some(listen.to_owned()),
        clock: clock.clone(),
        extra_schedules: vec![("douyin_script".into(), cron)],
    };
    let app = match crate::server::Application::build(&config, opts.clone()).await {
        Ok(app) => app,
        Err(_) => {
            // The port is taken: any free one will do for a demo.
            opts.listen = Some("127.0.0.1:0".into());
            crate::server::Application::build(&config, opts).await.map_err(|e| Failure { code: 2, error: e })?
        }
    };
    let base = format!("http://127.0.0.1:{}", app.port());
    println!("dashboard: {base}/");
    let shared = app.shared.clone();
    let stop = super::serve::signals(&shared)?;
    let server = tokio::spawn(app.run_until_stopped(stop));
    batch(dir, runs, concurrency, clock).await?;
    println!("\nflowguard is serving the demo at {base}/ (the dashboard) — `douyin_script` runs every 15 s on a schedule.");
    println!("  {base}/api/v1/runs    {base}/api/v1/stats    {base}/api/v1/health    {base}/metrics");
    println!("press Ctrl-C to stop (or run `flowguard demo --no-serve` for the batch alone).");
    match server.await {
        Ok(r) => r?,
        Err(e) => return Err(anyhow::anyhow!("the server stopped: {e}").into()),
    }
    Ok(0)
}

/// Runs the example flow `runs` times against the simulator and prints what happened.
async fn batch(dir: &Path, runs: u32, concurrency: usize, clock: SharedClock) -> Result<i32, Failure> {
    let config = dir.join("flowguard.yaml");
    let app = App::load(&config)?;
    let flow = app.flow("douyin_script")?;
    let kinds: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let seen = kinds.clone();
    let alerter = crate::alert::Alerter::new(&app.config, app.store().await?, clock.clone())?;
    let pump = alerter.pump_in_background();
    let engine = app.engine(clock.clone()).await?.with_notifier(alerter.notifier()).with_observer(alerter.observer()).with_observer(
        Arc::new(move |e: &Event| {
            if let Event::AttemptFinished(a) = e
                && let Some(k) = &a.error_kind
            {
                *seen.lock().expect("kinds").entry(k.clone()).or_default() += 1;
            }
        }),
    );
    println!("flowguard demo: {runs} runs of `douyin_script` against the simulator (simulated model and publisher)");
    println!("project and database: {}\n", dir.display());
    let started = clock.now_ms();
    let done = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let results = futures::stream::iter(0..runs)
        .map(|_| {
            let (engine, flow, done, clock) = (engine.clone(), flow.clone(), done.clone(), clock.clone());
            async move {
                let outcome = engine.run(RunRequest { flow, inputs: Default::default(), trigger: "demo".into(), canary: false }).await;
                let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                // A high-severity failure blocks the flow; the demo lifts the block as an operator
                // would, so the batch goes on.
                if let Ok(Some(b)) = engine.store.flow_block("douyin_script").await
                    && engine.store.unblock_flow("douyin_script", "demo", Some("lifted by the demo"), clock.now_ms()).await.unwrap_or(false)
                {
                    println!(
                        "          ⛔ flow blocked ({}); the demo unblocks it, as `flowguard flow unblock douyin_script` would",
                        b.reason.unwrap_or_default()
                    );
                }
                match &outcome {
                    Ok(o) => {
                        let detail = match (&o.failed_node, o.error_kind) {
                            (Some(node), Some(k)) => format!("  {node}: {k}"),
                            _ => String::new(),
                        };
                        println!("[{n:>3}/{runs}] {} {:<10} {:>7}{detail}", o.run_id, o.status.as_str(), table::ms(Some(o.duration_ms)));
                    }
                    Err(e) => println!("[{n:>3}/{runs}] error: {e:#}"),
                }
                outcome
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect::<Vec<_>>()
        .await;
    pump.stop(std::time::Duration::from_secs(5)).await;
    alerter.drain(alerter.drain_budget()).await?;
    if let Some(Err(e)) = results.into_iter().find(|r| r.is_err()) {
        return Err(e.into());
    }
    let stats = crate::stats::collect(&engine.store, Some("douyin_script"), started, clock.now_ms() + 1).await?;
    println!();
    query::print_stats(&stats);
    let kinds = kinds.lock().expect("kinds").clone();
    let list: Vec<String> = kinds.iter().map(|(k, n)| format!("{k} ×{n}")).collect();
    println!("error kinds met in node attempts: {}", if list.is_empty() { "none".into() } else { list.join(", ") });
    let waiting = engine.store.manual_tasks(true, 1000).await?.len();
    if waiting > 0 {
        println!("{waiting} run(s) wait for a human: flowguard --config {} manual list", config.display());
    }
    let alerts = engine.store.list_alerts(&Default::default()).await?;
    let notes: Vec<String> = engine.store.notification_counts().await?.into_iter().map(|(s, n)| format!("{s} {n}")).collect();
    println!(
        "alerts: {} fingerprint(s), {} occurrence(s); notifications: {}",
        alerts.len(),
        alerts.iter().map(|a| a.count).sum::<i64>(),
        if notes.is_empty() { "none".into() } else { notes.join(", ") }
    );
    println!(
        "\nexplore: flowguard --config {} runs | show RUN_ID | stats | manual list | alerts list | check --explain douyin_script",
        config.display()
    );
    engine.store.close().await;
    Ok(0)
}
