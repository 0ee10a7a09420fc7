//! Alert latency: from a run's failure to the first webhook message reaching a local receiver,
//! durable (the alert and its notification are committed before the send).
//!
//! - `serve`: an engine and its alerter in one long-lived process, as under `flowguard serve`
//!   (the outbox pump runs in the background). Measured from the engine reporting the failed run
//!   to the receiver getting the message, in µs.
//! - `run`: `flowguard run` as a user runs it, one process per failure. Measured from the run's
//!   recorded end to the receiver getting the message, in ms (the recorded end has ms precision).
//!
//! Each failure is of a flow of its own, so each is a new alert whose group is due at once
//! (group_wait 0). SQLite. `cargo bench --bench alerts [serve|run]` (env RUNS, default 200 for
//! serve and 20 for run). Prints median and p90; asserts nothing.

use axum::Router;
use axum::routing::post;
use flowguard::alert::Alerter;
use flowguard::clock::{SharedClock, SystemClock};
use flowguard::config::Config;
use flowguard::engine::{Engine, Event, RunRequest};
use flowguard::nodes::Registry;
use flowguard::store::Store;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// A message as the receiver saw it: its flow, and when (monotonic and wall clock).
struct Received {
    flow: String,
    at: Instant,
    wall_ms: i64,
}

fn wall_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// The receiver (`POST /hook`) and the failing upstream the flows call (`POST /fail`, HTTP 400).
async fn receiver() -> (String, mpsc::UnboundedReceiver<Received>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let app = Router::new().route("/fail", post(|| async { (axum::http::StatusCode::BAD_REQUEST, "{\"error\":\"bad input\"}") })).route(
        "/hook",
        post(move |axum::Json(v): axum::Json<serde_json::Value>| {
            let tx = tx.clone();
            async move {
                let (at, wall_ms) = (Instant::now(), wall_ms());
                if v["purpose"] == "firing" {
                    let flow = v["fields"]["flow"].as_str().unwrap_or_default().to_owned();
                    let _ = tx.send(Received { flow, at, wall_ms });
                }
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await.ok() });
    (format!("http://{addr}"), rx)
}

fn config_text(base: &str) -> String {
    format!(
        "timezone: UTC\nalerting: {{ group_wait: 0s }}\nchannels:\n  hook: {{ type: webhook, webhook: \"{base}/hook\" }}\nroutes:\n  - channels: [hook]\n"
    )
}

/// A flow whose one node fails at once, without retries (the upstream answers 400).
fn flow_text(name: &str, base: &str) -> String {
    format!("name: {name}\nnodes:\n  - id: publish\n    kind: http\n    url: \"{base}/fail\"\n    method: POST\n    body: {{ a: 1 }}\n")
}

fn summary(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)];
    (at(0.5), at(0.9))
}

async fn serve_mode(runs: usize) {
    let (base, mut rx) = receiver().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = Config::parse(Path::new("flowguard.yaml"), &config_text(&base), dir.path(), &|_| None).expect("config");
    let reg = Arc::new(Registry::from_config(&cfg).expect("registry"));
    let store = Store::open(&format!("sqlite://{}", dir.path().join("fg.db").display()), 4, Duration::from_secs(30)).await.expect("store");
    let clock: SharedClock = Arc::new(SystemClock);
    let alerter = Alerter::new(&cfg, store.clone(), clock.clone()).expect("alerter");
    let failed_at: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let seen = failed_at.clone();
    let engine = Engine::new(store, reg.clone(), clock, 64 * 1024)
        .with_observer(Arc::new(move |e: &Event| {
            if let Event::RunFinished(o) = e {
                seen.lock().expect("failed_at").insert(o.flow.clone(), Instant::now());
            }
        }))
        .with_notifier(alerter.notifier())
        .with_observer(alerter.observer());
    let pump = alerter.pump_in_background();
    let mut lat = Vec::new();
    for i in 0..runs + 10 {
        let flow = Arc::new(flowguard::flow::parse(Path::new("f.yaml"), &flow_text(&format!("f{i}"), &base), &reg).expect("flow"));
        let o = engine.run(RunRequest { flow, inputs: Default::default(), trigger: "bench".into(), canary: false }).await.expect("run");
        assert!(!o.status.is_success(), "the flow must fail");
        let got = rx.recv().await.expect("a message");
        let failed = failed_at.lock().expect("failed_at").remove(&got.flow).expect("the failure came first");
        // The first few warm connections and statement caches.
        if i >= 10 {
            lat.push(got.at.duration_since(failed).as_secs_f64() * 1e6);
        }
    }
    pump.stop(Duration::from_secs(2)).await;
    let (p50, p90) = summary(lat);
    println!("alert_latency mode=serve backend=sqlite failures={runs} median_us={p50:.0} p90_us={p90:.0}");
}

fn run_mode(runs: usize) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (base, mut rx) = rt.block_on(receiver());
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("flows")).expect("flows");
    std::fs::write(dir.path().join("flowguard.yaml"), config_text(&base)).expect("config");
    let mut lat = Vec::new();
    for i in 0..runs {
        let name = format!("f{i}");
        std::fs::write(dir.path().join(format!("flows/{name}.yaml")), flow_text(&name, &base)).expect("flow");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_flowguard"))
            .current_dir(dir.path())
            .args(["run", &name, "--format", "json"])
            .output()
            .expect("flowguard run");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("run output");
        let got = rx.try_recv().expect("flowguard run delivers its alert before it exits");
        assert_eq!(got.flow, name);
        let ended = rt.block_on(async {
            let store = Store::open(&format!("sqlite://{}", dir.path().join("flowguard.db").display()), 1, Duration::from_secs(5))
                .await
                .expect("store");
            let r = store.get_run(v["run_id"].as_str().expect("run id")).await.expect("run").expect("the run is recorded");
            store.close().await;
            r.ended_at.expect("ended")
        });
        lat.push((got.wall_ms - ended) as f64);
    }
    let (p50, p90) = summary(lat);
    println!("alert_latency mode=run backend=sqlite failures={runs} median_ms={p50:.1} p90_ms={p90:.1}");
}

fn main() {
    flowguard::init_tls();
    let only = std::env::args().nth(1).filter(|a| !a.starts_with('-'));
    let want = |n: &str| only.as_deref().is_none_or(|o| o == n);
    let runs = |d: usize| std::env::var("RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(d);
    if want("serve") {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        rt.block_on(serve_mode(runs(200)));
    }
    if want("run") {
        run_mode(runs(20));
    }
}

/// The binary's allocator (src/main.rs), so the figures are the binary's.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;
