//! Benchmarks of `flowguard serve` (DESIGN.md §9.3 and the serve issue): ingestion throughput in
//! batches of 100 events into SQLite and MariaDB (durable: acknowledged after commit); p99 of
//! `GET /api/v1/runs?limit=50` with 1M runs recorded; idle memory of the `serve` process; p50/p99 of
//! ingestion while 200 readers hammer the API (`contended`: reads must not starve writes).
//! Prints one line per figure. `cargo bench --bench serve`; MariaDB is used when
//! FLOWGUARD_TEST_MYSQL_URL (an admin URL, e.g. mysql://root@127.0.0.1:3306) is set.

use flowguard::clock::SystemClock;
use flowguard::server::{Application, Options};
use flowguard::store::{IngestWrite, RunRecord};
use flowguard::vocab::RunStatus;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};

const TOKEN: &str = "bench-token-0123456789abcdef";

fn project(url: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("flows")).expect("flows");
    std::fs::write(dir.path().join("flows/hello.yaml"), "name: hello\nnodes:\n  - id: greet\n    kind: template\n    text: hi\n")
        .expect("flow");
    let cfg = format!(
        "storage: {{ url: \"{url}\", max_connections: 8 }}\nserver:\n  listen: 127.0.0.1:0\n  tokens: [{{ name: bench, token: \"{TOKEN}\", scopes: [read, operate, ingest] }}]\n  rate_limit: {{ per_second: 1000000, burst: 1000000 }}\n"
    );
    std::fs::write(dir.path().join("flowguard.yaml"), cfg).expect("config");
    dir
}

async fn start(dir: &tempfile::TempDir) -> (String, Arc<flowguard::server::Shared>, tokio::sync::oneshot::Sender<()>) {
    let opts = Options { listen: None, clock: Arc::new(SystemClock), extra_schedules: Vec::new() };
    let app = Application::build(&dir.path().join("flowguard.yaml"), opts).await.expect("build");
    let base = format!("http://127.0.0.1:{}", app.port());
    let shared = app.shared.clone();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.run_until_stopped(async move {
        let _ = rx.await;
    }));
    (base, shared, tx)
}

fn batch(run: usize, t0: i64) -> Value {
    let run_id = format!("bench-{run}");
    let mut events = vec![json!({"id": format!("{run_id}-s"), "type": "run.started", "flow": "coze", "run_id": run_id, "ts": t0})];
    for n in 0..98 {
        events.push(json!({"id": format!("{run_id}-n{n}"), "type": "node.finished", "flow": "coze", "run_id": run_id, "node": format!("node{}", n % 7),
            "started_at": t0 + n * 10, "duration_ms": 9, "status": "succeeded", "model": "doubao", "tokens_in": 100, "tokens_out": 200}));
    }
    events.push(json!({"id": format!("{run_id}-f"), "type": "run.finished", "flow": "coze", "run_id": run_id, "ts": t0 + 1000, "status": "succeeded"}));
    json!({ "events": events })
}

/// Posts `bodies` from `clients` concurrent clients, each batch checked accepted whole.
async fn post_all(http: &reqwest::Client, base: &str, bodies: &[String], clients: usize) {
    let mut tasks = Vec::new();
    for chunk in bodies.chunks(bodies.len().div_ceil(clients)) {
        let (http, base, chunk) = (http.clone(), base.to_owned(), chunk.to_vec());
        tasks.push(tokio::spawn(async move {
            for b in chunk {
                let r = http
                    .post(format!("{base}/api/v1/events"))
                    .bearer_auth(TOKEN)
                    .header("content-type", "application/json")
                    .body(b)
                    .send()
                    .await
                    .expect("post");
                assert!(r.status().is_success());
                let v: Value = r.json().await.expect("json");
                assert_eq!(v["accepted"], 100, "{v}");
            }
        }));
    }
    for t in tasks {
        t.await.expect("client");
    }
}

async fn ingestion(label: &str, url: &str) {
    let dir = project(url);
    let (base, _shared, stop) = start(&dir).await;
    let http = reqwest::Client::new();
    let bodies: Vec<String> = (0..1200).map(|i| batch(i, 1_795_000_000_000 + i as i64 * 2000).to_string()).collect();
    // Warm-up, not counted: the first batches fault in the heap's fresh pages (a fifth of a short
    // run's time) and grow the database's caches; the server's steady state is what is measured.
    let (warm, measured) = bodies.split_at(200);
    post_all(&http, &base, warm, 4).await;
    let start = Instant::now();
    post_all(&http, &base, measured, 4).await;
    let secs = start.elapsed().as_secs_f64();
    let events = measured.len() * 100;
    println!("ingest_events_per_s backend={label} batch=100 clients=4 events={events} value={:.0}", events as f64 / secs);
    let _ = stop.send(());
}

async fn list_latency() {
    let dir = project("sqlite://flowguard.db");
    let (base, shared, stop) = start(&dir).await;
    let statuses = [RunStatus::Succeeded, RunStatus::Succeeded, RunStatus::Succeeded, RunStatus::Recovered, RunStatus::Failed];
    let t0 = 1_760_000_000_000i64;
    let fill = Instant::now();
    let total = 1_000_000usize;
    for chunk in 0..(total / 20_000) {
        let mut w = IngestWrite::default();
        for i in chunk * 20_000..(chunk + 1) * 20_000 {
            let status = statuses[i % statuses.len()];
            w.runs.push(RunRecord {
                id: format!("{:016x}-{i}", i),
                flow: format!("flow{}", i % 10),
                flow_hash: "bench".into(),
                trigger: "cron".into(),
                status,
                canary: false,
                inputs: None,
                started_at: t0 + i as i64 * 1000,
                ended_at: Some(t0 + i as i64 * 1000 + 500),
                duration_ms: Some(500),
                failed_node: None,
                error_kind: (status == RunStatus::Failed).then(|| "timeout".into()),
                error_message: None,
                severity: None,
            });
        }
        // New runs: their rollups are counted without reading anything back.
        w.fresh = w.runs.iter().map(|r| r.id.clone()).collect();
        shared.store.apply_ingest(&w, 0).await.expect("fill");
    }
    println!("runs_fill backend=sqlite runs={total} seconds={:.1}", fill.elapsed().as_secs_f64());
    let http = reqwest::Client::new();
    for (name, q) in [
        ("unfiltered", "/api/v1/runs?limit=50"),
        ("flow", "/api/v1/runs?limit=50&flow=flow3"),
        // Flows and statuses both cycle with the run number: flow4 runs are the failed ones.
        ("flow_status", "/api/v1/runs?limit=50&flow=flow4&status=failed"),
        ("status", "/api/v1/runs?limit=50&status=failed"),
    ] {
        let mut lat = Vec::new();
        for i in 0..220 {
            let s = Instant::now();
            let r = http.get(format!("{base}{q}")).bearer_auth(TOKEN).send().await.expect("get");
            let v: Value = r.json().await.expect("json");
            assert_eq!(v["runs"].as_array().map(Vec::len), Some(50));
            if i >= 20 {
                lat.push(s.elapsed());
            }
        }
        lat.sort();
        let p = |q: f64| lat[((lat.len() as f64 * q).ceil() as usize).saturating_sub(1)].as_secs_f64() * 1000.0;
        println!("runs_list_latency_ms backend=sqlite runs={total} query={name} p50={:.2} p99={:.2}", p(0.5), p(0.99));
    }
    let _ = stop.send(());
}

/// Ingestion latency while `READERS` clients read runs and statistics as fast as they can.
async fn contended(label: &str, url: &str) {
    const READERS: usize = 200;
    let dir = project(url);
    let (base, _shared, stop) = start(&dir).await;
    let http = reqwest::Client::builder().pool_max_idle_per_host(READERS + 8).build().expect("client");
    let post = |body: String| {
        let (http, base) = (http.clone(), base.clone());
        async move {
            let r = http
                .post(format!("{base}/api/v1/events"))
                .bearer_auth(TOKEN)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .expect("post");
            assert!(r.status().is_success(), "{}", r.status());
        }
    };
    let t0 = 1_795_000_000_000i64;
    for i in 0..100 {
        post(batch(i, t0 + i as i64 * 2000).to_string()).await;
    }
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reads = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut readers = Vec::new();
    for i in 0..READERS {
        let (http, base, done, reads) = (http.clone(), base.clone(), done.clone(), reads.clone());
        readers.push(tokio::spawn(async move {
            let q = if i % 2 == 0 { "/api/v1/runs?limit=50" } else { "/api/v1/stats?since=30d" };
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(r) = http.get(format!("{base}{q}")).bearer_auth(TOKEN).send().await {
                    let _ = r.bytes().await;
                    reads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let started = Instant::now();
    let mut lat = Vec::new();
    for i in 0..150 {
        let body = batch(1000 + i, t0 + (1000 + i) as i64 * 2000).to_string();
        let s = Instant::now();
        post(body).await;
        lat.push(s.elapsed());
    }
    let secs = started.elapsed().as_secs_f64();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    for r in readers {
        let _ = r.await;
    }
    lat.sort();
    let p = |q: f64| lat[((lat.len() as f64 * q).ceil() as usize).saturating_sub(1)].as_secs_f64() * 1000.0;
    let rps = reads.load(std::sync::atomic::Ordering::Relaxed) as f64 / (secs + 2.0);
    println!(
        "ingest_latency_under_readers_ms backend={label} readers={READERS} batch=100 p50={:.1} p99={:.1} max={:.1} reads_per_s={rps:.0}",
        p(0.5),
        p(0.99),
        p(1.0)
    );
    let _ = stop.send(());
}

fn idle_rss() {
    let dir = project("sqlite://flowguard.db");
    let exe = std::env::var("FLOWGUARD_BIN").unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/target/release/flowguard").into());
    let Ok(mut child) = std::process::Command::new(&exe)
        .current_dir(dir.path())
        .args(["serve", "--listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::null())
        .spawn()
    else {
        println!("serve_idle_rss_mb skipped (no binary at {exe}; build with `cargo build --release`)");
        return;
    };
    std::thread::sleep(Duration::from_secs(3));
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap_or_default();
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    println!("serve_idle_rss_mb backend=sqlite value={:.1}", kb / 1024.0);
    let _ = child.kill();
    let _ = child.wait();
}

fn main() {
    flowguard::init_tls();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let only = std::env::args().nth(1).filter(|a| !a.starts_with('-'));
    let want = |n: &str| only.as_deref().is_none_or(|o| o == n);
    if want("ingest") {
        rt.block_on(ingestion("sqlite", "sqlite://flowguard.db"));
        if let Ok(admin) = std::env::var("FLOWGUARD_TEST_MYSQL_URL") {
            let db = format!("fg_bench_{}", std::process::id());
            rt.block_on(async {
                let pool = flowguard::store::Pool::connect(&admin, &Default::default()).await.expect("mariadb");
                pool.exec(&format!("CREATE DATABASE {db}"), &[]).await.expect("create db");
                ingestion("mariadb", &format!("{}/{db}", admin.trim_end_matches('/'))).await;
                pool.exec(&format!("DROP DATABASE {db}"), &[]).await.expect("drop db");
            });
        }
    }
    if want("contended") {
        rt.block_on(contended("sqlite", "sqlite://flowguard.db"));
        if let Ok(admin) = std::env::var("FLOWGUARD_TEST_MYSQL_URL") {
            let db = format!("fg_bench_c_{}", std::process::id());
            rt.block_on(async {
                let pool = flowguard::store::Pool::connect(&admin, &Default::default()).await.expect("mariadb");
                pool.exec(&format!("CREATE DATABASE {db}"), &[]).await.expect("create db");
                contended("mariadb", &format!("{}/{db}", admin.trim_end_matches('/'))).await;
                pool.exec(&format!("DROP DATABASE {db}"), &[]).await.expect("drop db");
            });
        }
    }
    if want("list") {
        rt.block_on(list_latency());
    }
    if want("rss") {
        idle_rss();
    }
}

/// The binary's allocator (src/main.rs), so the figures are the binary's.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;
