//! 1,000 concurrent runs × 3 `llm` calls against a local fake OpenAI-compatible server that answers
//! after 200 ms: wall time against the ideal (3 × 200 ms = 0.6 s) and peak RSS.
//!
//! Also printed: the same 3,000 calls made straight with the registry's HTTP client, no engine
//! (`bare_ms`): the cost of the fake and of HTTP on this machine, so `engine_ms` over it is
//! flowguard's own.
//!
//! `cargo bench --bench concurrency` (env RUNS, LATENCY_MS to change the shape).

use axum::Router;
use axum::routing::post;
use flowguard::clock::{SharedClock, SystemClock};
use flowguard::config::Config;
use flowguard::engine::{Engine, RunRequest};
use flowguard::nodes::Registry;
use flowguard::store::Store;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn peak_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()))
        .unwrap_or(0)
}

/// How many files (sockets included) the process has open.
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

fn main() {
    let runs: usize = std::env::var("RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
    let latency = Duration::from_millis(std::env::var("LATENCY_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(200));
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    rt.block_on(async move {
        // When each call reached the fake: the first `runs` of them are the first wave, whose
        // spread is the cost of opening that many connections at once.
        let arrivals: Arc<std::sync::Mutex<Vec<Instant>>> = Default::default();
        let seen = arrivals.clone();
        let app = Router::new().route(
            "/v1/chat/completions",
            post(move || {
                seen.lock().expect("arrivals").push(Instant::now());
                async move {
                    tokio::time::sleep(latency).await;
                    axum::Json(serde_json::json!({
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": "{\"title\":\"t\",\"body\":\"b\"}"}, "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": 10, "completion_tokens": 10}
                    }))
                }
            }),
        );
        // A listen backlog above the calls' count: with the default (1,024) a burst of 1,000
        // connects overflows the accept queue and the dropped handshakes are retried late.
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.bind(([127, 0, 0, 1], 0).into()).expect("bind");
        let listener = socket.listen(4096).expect("listen");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await.ok() });

        let dir = tempfile::tempdir().expect("tempdir");
        let cfg_text = format!("models:\n  m:\n    provider: openai\n    base_url: http://{addr}/v1\n    model: fake\n    api_key: sk-bench\n");
        let cfg = Config::parse(&dir.path().join("flowguard.yaml"), &cfg_text, dir.path(), &|_| None).expect("config");
        let reg = Arc::new(Registry::from_config(&cfg).expect("registry"));
        let flow_path = dir.path().join("f.yaml");
        let node = |id: &str| format!("  - id: {id}\n    kind: llm\n    model: m\n    prompt: 'write {{{{ run.id }}}}'\n    json: true\n");
        std::fs::write(&flow_path, format!("name: bench\nnodes:\n{}{}{}", node("a"), node("b"), node("c"))).expect("flow");
        let flow = Arc::new(flowguard::flow::load(&flow_path, &reg).expect("flow"));
        let store = Store::open(&format!("sqlite://{}", dir.path().join("b.db").display()), 4, Duration::from_secs(30)).await.expect("store");
        let clock: SharedClock = Arc::new(SystemClock);
        let engine = Engine::new(store, reg, clock, 65536);

        // The calls alone, on a client of their own (a cold pool, like the engine's).
        let bare_http = Registry::from_config(&cfg).expect("registry").http;
        let url = format!("http://{addr}/v1/chat/completions");
        let fds_before = open_fds();
        let start = Instant::now();
        let calls: Vec<_> = (0..runs)
            .map(|_| {
                let (http, url) = (bare_http.clone(), url.clone());
                tokio::spawn(async move {
                    for _ in 0..3 {
                        let body = serde_json::json!({"model": "fake", "messages": [{"role": "user", "content": "write"}]});
                        let r = http.post(&url).json(&body).send().await.expect("call");
                        r.bytes().await.expect("body");
                    }
                })
            })
            .collect();
        for c in calls {
            c.await.expect("call task");
        }
        let bare = start.elapsed();
        let bare_waves = waves(&arrivals, start, runs);
        // The engine's calls start once the bare client's connections are closed on both ends,
        // so they do not pay for closing those.
        drop(bare_http);
        while open_fds() > fds_before {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }

        let start = Instant::now();
        let handles: Vec<_> = (0..runs)
            .map(|_| {
                let (engine, flow) = (engine.clone(), flow.clone());
                tokio::spawn(async move { engine.run(RunRequest { flow, inputs: Default::default(), trigger: "bench".into(), canary: false }).await })
            })
            .collect();
        let mut ok = 0;
        for h in handles {
            if matches!(h.await, Ok(Ok(o)) if o.status.is_success()) {
                ok += 1;
            }
        }
        let wall = start.elapsed();
        let engine_waves = waves(&arrivals, start, runs);
        let ideal = latency * 3;
        println!("concurrency: runs={runs} llm_calls={} succeeded={ok}", runs * 3);
        println!("concurrency: wall_ms={:.0} ideal_ms={} over_ideal_pct={:.1}", wall.as_secs_f64() * 1000.0, ideal.as_millis(), (wall.as_secs_f64() / ideal.as_secs_f64() - 1.0) * 100.0);
        println!(
            "concurrency: bare_ms={:.0} (the same calls without the engine) engine_over_bare_ms={:.0}",
            bare.as_secs_f64() * 1000.0,
            (wall.as_secs_f64() - bare.as_secs_f64()) * 1000.0
        );
        println!("concurrency: waves_ms bare={bare_waves} engine={engine_waves} (when the first and the last of each {runs} calls reached the fake)");
        println!("concurrency: peak_rss_mb={:.1} (fake server in the same process)", peak_rss_kb() as f64 / 1024.0);
    });
}

/// When the first and the last call of each round of `runs` calls reached the fake, in ms from
/// `start` (`0-52,201-260,…`): how far each round spreads, and how the spreads add up. Clears the list.
fn waves(arrivals: &std::sync::Mutex<Vec<Instant>>, start: Instant, runs: usize) -> String {
    let mut a = std::mem::take(&mut *arrivals.lock().expect("arrivals"));
    a.sort();
    let ms = |t: &Instant| (*t - start).as_secs_f64() * 1000.0;
    a.chunks(runs.max(1)).map(|w| format!("{:.0}-{:.0}", ms(&w[0]), ms(&w[w.len() - 1]))).collect::<Vec<_>>().join(",")
}

/// The binary's allocator (src/main.rs), so the figures are the binary's.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;
