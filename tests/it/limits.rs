//! Bad input, outages and limits, tried as a careless client and an attacker would: a batch at the
//! documented maximum, events that arrive late or twice, impossible times, NUL bytes, oversized
//! flows and templates, hostile word lists, errors that must keep one shape and never show a
//! secret, reloads that would open the API, and a database that goes away.

use crate::support::db::{Kind, TestDb, backends};
use crate::support::proxy::Proxy;
use crate::support::{Project, bin, count, stderr};
use flowguard::clock::SystemClock;
use flowguard::server::{Application, Options, Shared};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

const TOKEN: &str = "limits-token-0123456789abcdef";

const ECHO: &str = "name: echo\ninputs: { who: world }\nnodes:\n  - id: greet\n    kind: template\n    text: \"hello {{ input.who }}\"\n";

/// `serve` in-process on `url`, with one all-scopes token and `extra` config.
struct App {
    base: String,
    http: reqwest::Client,
    shared: Arc<Shared>,
    project: Project,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

fn config(url: &str, listen: &str, tokens: &str, extra: &str) -> String {
    format!(
        "storage:\n  url: \"{url}\"\n  connect_timeout: 2s\n  write_patience: 2s\ntimezone: UTC\nserver:\n  listen: \"{listen}\"\n  watch_interval: 0s\n  rate_limit: {{ per_second: 100000, burst: 100000 }}\n  tokens: {tokens}\n{extra}\n"
    )
}

/// Polls until `pred` holds (up to 90 s).
async fn until<F: std::future::Future<Output = bool>>(what: &str, mut pred: impl FnMut() -> F) {
    let start = std::time::Instant::now();
    while !pred().await {
        assert!(start.elapsed() < Duration::from_secs(90), "gave up waiting: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn all_scopes() -> String {
    format!("[{{ name: all, token: \"{TOKEN}\", scopes: [operate, ingest] }}]")
}

async fn spawn(url: &str, extra: &str) -> App {
    spawn_with(&config(url, "127.0.0.1:0", &all_scopes(), extra)).await
}

async fn spawn_with(cfg: &str) -> App {
    spawn_flows(cfg, &[]).await
}

/// `spawn_with`, with these flows beside `echo`.
async fn spawn_flows(cfg: &str, flows: &[(&str, &str)]) -> App {
    flowguard::init_tls();
    let project = Project::with_config(cfg);
    project.write("flows/echo.yaml", ECHO);
    for (name, text) in flows {
        project.write(&format!("flows/{name}.yaml"), text);
    }
    let opts = Options { listen: None, clock: Arc::new(SystemClock), extra_schedules: Vec::new() };
    let app = Application::build(&project.config(), opts).await.expect("build the app");
    let base = format!("http://127.0.0.1:{}", app.port());
    let shared = app.shared.clone();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        app.run_until_stopped(async move {
            let _ = rx.await;
        })
        .await
        .expect("serve");
    });
    App { base, http: reqwest::Client::new(), shared, project, stop: Some(tx), task: Some(task) }
}

impl App {
    async fn get(&self, path: &str) -> (u16, Value) {
        let r = self.http.get(format!("{}{path}", self.base)).bearer_auth(TOKEN).send().await.expect("GET");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let r = self.http.post(format!("{}{path}", self.base)).bearer_auth(TOKEN).json(body).send().await.expect("POST");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn wait_run(&self, id: &str) -> Value {
        for _ in 0..1000 {
            let (code, run) = self.get(&format!("/api/v1/runs/{id}")).await;
            if code == 200 && !["queued", "running"].contains(&run["status"].as_str().unwrap_or("")) {
                return run;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("run {id} did not finish");
    }

    async fn shutdown(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

/// Epoch ms an hour ago (inside the default statistics window).
fn recent() -> i64 {
    jiff::Timestamp::now().as_millisecond() - 3_600_000
}

fn node_event(id: &str, run: &str, node: &str, started: i64) -> Value {
    json!({"id": id, "type": "node.finished", "flow": "coze", "run_id": run, "node": node, "started_at": started, "duration_ms": 5, "status": "succeeded"})
}

fn count_of(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or(u64::MAX)
}

backends! {
    // 1,000 events (the documented maximum) are 1,000 stored rows on every backend, and the
    // batch sent again is 1,000 duplicates; afterwards the server is still ready.
    async fn a_batch_at_the_maximum_stores_every_event(db: TestDb) {
        let app = spawn(db.url(), "").await;
        let t0 = recent();
        let events: Vec<Value> = (0..1000).map(|i| node_event(&format!("e{i}"), &format!("run{}", i % 10), &format!("n{}", i / 10), t0 + i)).collect();
        let (code, body) = app.post("/api/v1/events", &json!({"events": events})).await;
        assert_eq!((code, count_of(&body, "accepted")), (200, 1000), "{}", body["rejected"]);
        assert_eq!(db.query_i64("SELECT COUNT(*) FROM node_attempts").await, 1000);
        assert_eq!(db.query_i64("SELECT COUNT(*) FROM ingest_events").await, 1000);
        let (code, again) = app.post("/api/v1/events", &json!({"events": events})).await;
        assert_eq!((code, count_of(&again, "accepted"), count_of(&again, "duplicates")), (200, 0, 1000));
        let (code, ready) = app.get("/readyz").await;
        assert_eq!(code, 200, "{ready}");
        app.shutdown().await;
    }

    // Statistics equal a count of the stored rows whatever the arrival order: a node event
    // after its run's end, and shuffled batches sent twice.
    async fn statistics_count_events_that_arrive_late_or_out_of_order(db: TestDb) {
        let app = spawn(db.url(), "").await;
        let t0 = recent();
        let mut events = Vec::new();
        for r in 0..4 {
            let run = format!("r{r}");
            events.push(json!({"id": format!("{run}-s"), "type": "run.started", "flow": "coze", "run_id": run, "ts": t0}));
            for n in 0..5 {
                events.push(node_event(&format!("{run}-n{n}"), &run, &format!("n{n}"), t0 + 10 * n));
            }
            events.push(json!({"id": format!("{run}-f"), "type": "run.finished", "flow": "coze", "run_id": run, "ts": t0 + 100, "status": "succeeded"}));
        }
        fastrand::seed(7);
        for _ in 0..2 {
            fastrand::shuffle(&mut events);
            for chunk in events.chunks(5) {
                let (code, body) = app.post("/api/v1/events", &json!({"events": chunk})).await;
                assert_eq!(code, 200, "{body}");
            }
        }
        // A node of r0 reported after its run ended, and earlier than every node counted so far.
        let (code, _) = app.post("/api/v1/events", &json!(node_event("late", "r0", "n0", t0 + 1))).await;
        assert_eq!(code, 200);
        let (code, stats) = app.get("/api/v1/stats?flow=coze").await;
        assert_eq!(code, 200, "{stats}");
        let flow = &stats["flows"][0];
        let attempts: u64 = flow["nodes"].as_array().expect("nodes").iter().map(|n| n["attempts"].as_u64().unwrap_or(0)).sum();
        let stored = db.query_i64("SELECT COUNT(*) FROM node_attempts WHERE flow = 'coze'").await as u64;
        assert_eq!((attempts, stored), (21, 21), "{stats}");
        let runs = db.query_i64("SELECT COUNT(*) FROM runs WHERE flow = 'coze' AND status = 'succeeded'").await as u64;
        assert_eq!((count_of(flow, "runs"), count_of(flow, "succeeded")), (runs, runs), "{flow}");
        app.shutdown().await;
    }

    // A NUL byte anywhere gets the same answer on every backend: stored without it, looked up
    // without a 500, and a run whose input carries one succeeds.
    async fn nul_bytes_get_the_same_answer_on_every_backend(db: TestDb) {
        let app = spawn(db.url(), "").await;
        let (code, body) = app.get("/api/v1/runs/%00").await;
        assert_eq!(code, 404, "{body}");
        let (code, body) = app.get("/api/v1/runs?flow=%00").await;
        assert_eq!(code, 200, "{body}");
        let (code, body) = app.get("/api/v1/manual/a%00b").await;
        assert_eq!(code, 404, "{body}");
        // An identifier with a NUL is refused (it could not be matched as sent); free text keeps the rest.
        let (code, body) = app.post("/api/v1/events", &json!(node_event("nul\u{0}id", "r", "n", recent()))).await;
        assert_eq!((code, body["rejected"].as_u64()), (200, Some(1)), "{body}");
        assert!(body["results"][0]["error"].as_str().unwrap_or("").contains("`id`"), "{body}");
        let ev = json!({"id": "nul-text", "type": "node.finished", "flow": "coze", "run_id": "nul-run", "node": "n1",
            "started_at": recent(), "duration_ms": 1, "status": "failed", "error_kind": "timeout", "error": "bad\u{0}thing", "output": "a\u{0}b", "input": {"k": "x\u{0}y"}});
        for expect in ["accepted", "duplicate"] {
            let (code, body) = app.post("/api/v1/events", &json!({"events": [ev.clone()]})).await;
            assert_eq!((code, body["results"][0]["result"].as_str()), (200, Some(expect)), "{body}");
        }
        let (code, run) = app.post("/api/v1/flows/echo/runs", &json!({"inputs": {"who": "a\u{0}b"}})).await;
        assert_eq!(code, 202, "{run}");
        let done = app.wait_run(run["run_id"].as_str().expect("id")).await;
        assert_eq!(done["status"], "succeeded", "{done}");
        app.shutdown().await;
    }

    // Every error of the API has one JSON shape, including those axum makes itself.
    async fn every_api_error_has_the_same_json_shape(db: TestDb) {
        let app = spawn(db.url(), "  max_body_bytes: 1000\n").await;
        let mut answers = Vec::new();
        for path in ["/api/v1/manual?limit=abc", "/api/v1/alerts?limit=abc", "/api/v1/silences?all=maybe", "/api/v1/runs/%FF%FE", "/api/v1/nope", "/api/v1/runs?limit=x"] {
            let r = app.http.get(format!("{}{path}", app.base)).bearer_auth(TOKEN).send().await.expect("GET");
            answers.push((path.to_owned(), r.status().as_u16(), r.headers().get("content-type").cloned(), r.text().await.unwrap_or_default()));
        }
        let big = "x".repeat(5000);
        let r = app.http.post(format!("{}/api/v1/events", app.base)).bearer_auth(TOKEN).body(big).send().await.expect("POST");
        answers.push(("413".into(), r.status().as_u16(), r.headers().get("content-type").cloned(), r.text().await.unwrap_or_default()));
        let r = app.http.delete(format!("{}/api/v1/runs", app.base)).bearer_auth(TOKEN).send().await.expect("DELETE");
        answers.push(("405".into(), r.status().as_u16(), r.headers().get("content-type").cloned(), r.text().await.unwrap_or_default()));
        for (what, status, ctype, text) in answers {
            assert!(status >= 400, "{what}: {status}");
            assert!(ctype.is_some_and(|c| c.to_str().unwrap_or("").starts_with("application/json")), "{what}: {text}");
            let v: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{what}: not JSON: {text}"));
            assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()) && v["code"].is_string(), "{what}: {v}");
        }
        app.shutdown().await;
    }
}

backends! {
    networked async fn a_connection_goes_back_to_the_pool_whatever_fails(db: TestDb) {
        let store = db.open_with(&flowguard::store::StoreOptions {
            pool: flowguard::store::PoolSettings { max_connections: 2, connect_timeout: Duration::from_secs(5) },
            write_patience: Duration::from_secs(2),
            ..Default::default()
        }).await;
        // Statements with more values than placeholders: MySQL's driver gives up half-way
        // through, which used to leave the connection waiting forever on its way back.
        if db.kind == Kind::MySql {
            for _ in 0..4 {
                assert!(store.pool().exec("SELECT ?", &[1i64.into(), 2i64.into()]).await.is_err());
            }
        }
        // Queries cut off by a timeout while the server is still working.
        let sleep = if db.kind == Kind::MySql { "SELECT SLEEP(3)" } else { "SELECT 1 FROM pg_sleep(3)" };
        for _ in 0..4 {
            let q = store.pool().fetch(sleep, &[], &[flowguard::store::Ty::I64]);
            assert!(tokio::time::timeout(Duration::from_millis(100), q).await.is_err());
        }
        let rows = store.pool().fetch("SELECT 1", &[], &[flowguard::store::Ty::I64]).await.expect("a connection is free");
        assert_eq!(rows.len(), 1);
        store.close().await;
    }

    // With the database away, the API answers 503 with Retry-After (not 500), and serves
    // again once it is back.
    networked async fn the_api_answers_503_while_the_database_is_away(db: TestDb) {
        let target = url::Url::parse(db.url()).expect("url");
        let proxy = Proxy::start(&format!("{}:{}", target.host_str().expect("host"), target.port().expect("port")));
        let app = spawn(&proxy.url(db.url()), "").await;
        let (code, _) = app.get("/api/v1/runs").await;
        assert_eq!(code, 200);
        proxy.cut();
        for _ in 0..3 {
            let r = app.http.get(format!("{}/api/v1/runs", app.base)).bearer_auth(TOKEN).send().await.expect("GET");
            assert_eq!(r.status().as_u16(), 503);
            assert!(r.headers().get("retry-after").is_some(), "Retry-After is set");
            let v: Value = r.json().await.expect("json");
            assert_eq!(v["code"], "unavailable", "{v}");
        }
        proxy.restore();
        let mut back = false;
        for _ in 0..200 {
            if app.get("/api/v1/runs").await.0 == 200 {
                back = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(back, "the API serves again once the database is back");
        app.shutdown().await;
    }

    // Scheduled fires that fall due while the database is away are not dropped silently: a flow
    // with `catch_up` runs once when it is back, one without has those fires recorded as skipped
    // (and counted in /metrics).
    networked async fn fires_due_while_the_database_is_away_follow_the_catch_up_policy(db: TestDb) {
        let every_second = |name: &str, catch_up: bool| {
            format!("name: {name}\nschedule: {{ cron: \"* * * * * *\", overlap: allow, catch_up: {catch_up} }}\nnodes:\n  - id: greet\n    kind: template\n    text: hi\n")
        };
        let (tick, tock) = (every_second("tick", false), every_second("tock", true));
        let target = url::Url::parse(db.url()).expect("url");
        let proxy = Proxy::start(&format!("{}:{}", target.host_str().expect("host"), target.port().expect("port")));
        // Writes wait out the outage (as with the default patience of 30 s), so the scheduler
        // stalls in `tick`'s write until the database is back, before it gets to `tock`'s fire.
        let cfg = config(&proxy.url(db.url()), "127.0.0.1:0", &all_scopes(), "").replace("write_patience: 2s", "write_patience: 20s");
        let app = spawn_flows(&cfg, &[("tick", &tick), ("tock", &tock)]).await;
        let store = db.open().await;
        let fires = |job: &'static str, skipped: i64, since: i64, until: i64| {
            let store = store.clone();
            async move {
                let rows = store
                    .pool()
                    .fetch(
                        "SELECT COUNT(*) FROM cron_fires WHERE job = ? AND skipped = ? AND at_ms > ? AND at_ms < ?",
                        &[job.into(), skipped.into(), since.into(), until.into()],
                        &[flowguard::store::Ty::I64],
                    )
                    .await
                    .expect("cron_fires");
                rows[0][0].i64().unwrap_or(0)
            }
        };
        until("both flows fire", || async { fires("cron:tick", 0, 0, i64::MAX).await > 0 && fires("cron:tock", 0, 0, i64::MAX).await > 0 }).await;
        proxy.cut();
        // Fires from here on fall due with the database away (the proxy closes its connections
        // within a few milliseconds of the cut).
        let cut_at = wall() + 50;
        // Fires fall due while the database is away: three of them at one a second.
        until("three fires fall due in the outage", || async { wall() > cut_at + 3_500 }).await;
        let back_at = wall();
        proxy.restore();
        until("the outage's fires are settled", || async {
            fires("cron:tick", 1, cut_at, back_at).await >= 2 && fires("cron:tock", 1, cut_at, back_at).await >= 2
        })
        .await;
        assert_eq!(fires("cron:tick", 0, cut_at, back_at).await, 0, "without catch_up nothing of the outage runs");
        // With catch_up the outage's fires are skipped but the latest, which runs once.
        assert!(fires("cron:tock", 0, cut_at, back_at).await <= 1);
        // The occurrence after the last one skipped is the one that ran. (A settle the database
        // interrupts, with a connection it dropped, goes on the next second: it skips up to the
        // occurrences due by then and runs the latest of those instead.)
        let last_skipped = || async {
            let rows = store
                .pool()
                .fetch("SELECT MAX(at_ms) FROM cron_fires WHERE job = 'cron:tock' AND skipped = 1", &[], &[flowguard::store::Ty::I64])
                .await
                .expect("max");
            rows[0][0].i64().expect("a skipped fire")
        };
        until("the caught-up fire", || async {
            let last = last_skipped().await;
            fires("cron:tock", 0, last, last + 1001).await == 1
        })
        .await;
        let metrics = app.http.get(format!("{}/metrics", app.base)).bearer_auth(TOKEN).send().await.expect("GET").text().await.expect("text");
        assert!(metrics.contains("flowguard_scheduler_fires_skipped_total{flow=\"tick\",job=\"cron:tick\"}"), "{metrics}");
        // The schedule goes on after the outage.
        let after = wall();
        until("tick fires again", || async { fires("cron:tick", 0, after, i64::MAX).await > 0 }).await;
        store.close().await;
        app.shutdown().await;
    }

    // A request whose write the database refuses does not fail the requests merged with it: the
    // group is merged again request by request.
    networked async fn a_refused_request_does_not_fail_the_requests_merged_with_it(db: TestDb) {
        let app = spawn(db.url(), "").await;
        let held = IngestHeld::take(&db).await;
        let post = |body: Value| {
            let (http, base) = (app.http.clone(), app.base.clone());
            tokio::spawn(async move {
                let r = http.post(format!("{base}/api/v1/events")).bearer_auth(TOKEN).json(&body).send().await.expect("POST");
                (r.status().as_u16(), r.json::<Value>().await.unwrap_or(Value::Null))
            })
        };
        let refused = post(json!(node_event("refused-1", "ra", "n", recent())));
        until("the first request waits on the lock", || async { app.shared.ingest_lock.requests_waiting() == 1 }).await;
        let fine = post(json!(node_event("fine-1", "rb", "n", recent())));
        until("both requests wait to be merged together", || async { app.shared.ingest_lock.requests_waiting() == 2 }).await;
        held.release().await;
        let (code, body) = fine.await.expect("fine");
        assert_eq!((code, count_of(&body, "accepted")), (200, 1), "{body}");
        assert_eq!(refused.await.expect("refused").0, 500);
        assert_eq!(db.query_i64("SELECT COUNT(*) FROM ingest_events WHERE id = 'fine-1'").await, 1);
        assert_eq!(db.query_i64("SELECT COUNT(*) FROM node_attempts WHERE run_id = 'ra'").await, 0);
        app.shutdown().await;
    }

    // Ingestion does not queue behind reads: with every read connection busy, a batch of
    // events is committed before any of those reads ends.
    networked async fn ingestion_is_not_queued_behind_reads(db: TestDb) {
        let app = spawn(db.url(), "").await;
        let (sleep, busy) = if db.kind == Kind::MySql {
            ("SELECT SLEEP(6)", format!("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE DB = '{}' AND INFO LIKE 'SELECT SLEEP%'", db.name))
        } else {
            ("SELECT 1 FROM pg_sleep(6)", format!("SELECT COUNT(*) FROM pg_stat_activity WHERE datname = '{}' AND query LIKE 'SELECT 1 FROM pg_sleep%' AND state = 'active'", db.name))
        };
        let ended = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let readers = 8; // storage.max_connections: every read connection
        let mut tasks = Vec::new();
        for _ in 0..readers {
            let (store, ended) = (app.shared.store.clone(), ended.clone());
            tasks.push(tokio::spawn(async move {
                let _ = store.pool().fetch(sleep, &[], &[flowguard::store::Ty::I64]).await;
                ended.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }));
        }
        while db.query_i64(&busy).await < readers as i64 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (code, body) = app.post("/api/v1/events", &json!(node_event("w1", "wr", "n", recent()))).await;
        assert_eq!((code, count_of(&body, "accepted")), (200, 1), "{body}");
        assert_eq!(ended.load(std::sync::atomic::Ordering::SeqCst), 0, "the write waited for the reads");
        for t in tasks {
            let _ = t.await;
        }
        app.shutdown().await;
    }
}

/// The start of the two tests below: a flow `tick` fired on `cron` (`catch_up` as given), a server
/// running it on SQLite; once a fire of it ran, the database refuses to queue scheduled runs.
/// Returns the server, the store, the project, the flow and when the refusal began.
async fn ticking(cron: &str, catch_up: bool) -> (App, flowguard::store::Store, tempfile::TempDir, String, i64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let tick = format!(
        "name: tick\nschedule: {{ cron: \"{cron}\", overlap: allow, catch_up: {catch_up} }}\nnodes:\n  - id: greet\n    kind: template\n    text: hi\n"
    );
    let app = spawn_flows(&config(&url, "127.0.0.1:0", &all_scopes(), ""), &[("tick", &tick)]).await;
    let store = flowguard::store::Store::open(&url, 1, Duration::from_secs(2)).await.expect("store");
    until("tick fires", || async { count(&store, RUNS).await > 0 }).await;
    store.pool().exec(REFUSE, &[]).await.expect("trigger");
    (app, store, dir, tick, wall())
}

const FIRED: &str = "SELECT COUNT(*) FROM cron_fires WHERE job = 'cron:tick' AND skipped = 0";
const RUNS: &str = "SELECT COUNT(*) FROM runs WHERE flow = 'tick' AND trigger_kind = 'cron'";
/// The database refuses to queue scheduled runs (as it refuses a write it cannot take).
const REFUSE: &str =
    "CREATE TRIGGER refuse_cron BEFORE INSERT ON runs WHEN NEW.trigger_kind = 'cron' BEGIN SELECT RAISE(ABORT, 'refused'); END";

fn wall() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("time").as_millis() as i64
}

/// The run a fire of `tick` at `at_ms` queues.
fn tick_run(at_ms: i64) -> String {
    use flowguard::flow::schedule::Overlap;
    use flowguard::scheduler::{Fire, JobKind};
    let f = Fire {
        job: "cron:tick".into(),
        flow: "tick".into(),
        kind: JobKind::Cron,
        overlap: Overlap::Allow,
        inputs: Default::default(),
        at_ms,
        catch_up: false,
    };
    f.run_id()
}

/// A scheduled fire whose run the database refuses is not recorded without it, and not dropped:
/// it is tried again each round, under the same run id, until the database takes it, and runs once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fire_the_database_refuses_is_tried_again_and_runs_once() {
    let (app, store, _dir, _, refused_at) = ticking("* * * * * *", false).await;
    until("two fires fall due while their runs are refused", || async { wall() > refused_at + 2_500 }).await;
    assert_eq!(count(&store, FIRED).await, count(&store, RUNS).await, "no fire is recorded without its run");
    store.pool().exec("DROP TRIGGER refuse_cron", &[]).await.expect("drop trigger");
    // The occurrences due while refused, whole seconds after the trigger took hold.
    let due: Vec<i64> = ((refused_at / 1000 + 1)..=((refused_at + 2_500) / 1000)).map(|s| s * 1000).collect();
    assert!(due.len() >= 2);
    for at in &due {
        let id = tick_run(*at);
        until("the refused fire's run ran", || async {
            count(&store, &format!("SELECT COUNT(*) FROM runs WHERE id = '{id}' AND status = 'succeeded'")).await == 1
        })
        .await;
    }
    assert_eq!(count(&store, FIRED).await, count(&store, RUNS).await, "every recorded fire has its run, once");
    store.close().await;
    app.shutdown().await;
}

/// A server that stops while the database refuses its fires' runs leaves no fire recorded without
/// its run (no process would ever run it), and the next server catches the latest one up when the
/// flow asks for it, as any fire missed while down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_stopping_while_its_fires_are_refused_leaves_none_recorded_without_its_run() {
    // Every 5 s: the server stops just after a refused fire, and the next one starts well before
    // the fire after it.
    let (app, store, dir, tick, refused_at) = ticking("*/5 * * * * *", true).await;
    let due = (refused_at / 5_000 + 1) * 5_000;
    until("a fire falls due while its run is refused", || async { wall() > due + 200 }).await;
    app.shutdown().await;
    let stopped_at = wall();
    store.pool().exec("DROP TRIGGER refuse_cron", &[]).await.expect("drop trigger");
    assert_eq!(count(&store, FIRED).await, count(&store, RUNS).await, "no fire is recorded without its run");
    // The next server on the same database catches up the latest occurrence missed.
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let again = spawn_flows(&config(&url, "127.0.0.1:0", &all_scopes(), ""), &[("tick", &tick)]).await;
    until("a fire missed while refused is caught up", || async {
        let caught = format!(
            "SELECT COUNT(*) FROM cron_fires WHERE job = 'cron:tick' AND skipped = 0 AND at_ms > {refused_at} AND at_ms <= {stopped_at}"
        );
        count(&store, &caught).await == 1
    })
    .await;
    until("every recorded fire has its run", || async { count(&store, FIRED).await == count(&store, RUNS).await }).await;
    store.close().await;
    again.shutdown().await;
}

/// Impossible times and durations are refused with a 400 (or a rejected item) naming the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impossible_times_and_durations_are_refused_naming_the_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let app = spawn(&url, "").await;
    let bad = [
        (
            json!({"id": "a", "type": "node.finished", "flow": "coze", "run_id": "r", "node": "n", "ended_at": 0, "duration_ms": 9_223_372_036_854_775_807i64, "status": "succeeded"}),
            "duration_ms",
        ),
        (
            json!({"id": "a2", "type": "node.finished", "flow": "coze", "run_id": "r", "node": "n", "ended_at": 0, "duration_ms": 5, "status": "succeeded"}),
            "ended_at",
        ),
        (json!({"id": "b", "type": "run.started", "flow": "coze", "run_id": "r", "ts": 1e300}), "ts"),
        (
            json!({"id": "c", "type": "node.finished", "flow": "coze", "run_id": "r", "node": "n", "started_at": recent(), "duration_ms": 9_000_000_000_000i64, "status": "succeeded"}),
            "duration_ms",
        ),
        (
            json!({"id": "d", "type": "node.finished", "flow": "coze", "run_id": "r", "node": "n", "ended_at": recent(), "duration_ms": 40 * 86_400_000i64, "status": "succeeded"}),
            "duration_ms",
        ),
        (json!({"id": "e", "type": "run.finished", "flow": "coze", "run_id": "r", "ts": "2999-01-01T00:00:00Z", "status": "failed"}), "ts"),
    ];
    for (ev, field) in bad {
        let (code, body) = app.post("/api/v1/events", &json!({"events": [ev]})).await;
        assert_eq!((code, body["rejected"].as_u64()), (200, Some(1)), "{field}: {body}");
        let why = body["results"][0]["error"].as_str().unwrap_or("");
        assert!(why.contains(&format!("`{field}`")), "{field}: {why}");
    }
    let (code, body) = app.post("/api/v1/silences", &json!({"matchers": {"flow": "x"}, "duration": "500000000y"})).await;
    assert_eq!(code, 400, "{body}");
    assert!(body["error"].as_str().unwrap_or("").contains("`duration`"), "{body}");
    let (_, list) = app.get("/api/v1/silences?all=true").await;
    assert_eq!(list["silences"].as_array().map(Vec::len), Some(0), "{list}");
    app.shutdown().await;
}

/// A reload that would open the API on a non-loopback address is refused and alerted; a
/// refused reload never shows a `${VAR}` value, in the health answer or the alert.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_weakens_access_is_refused_and_shows_no_secret() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let channel = "channels:\n  terminal:\n    type: console\n";
    let app = spawn_with(&config(&url, "0.0.0.0:0", &all_scopes(), channel)).await;
    let open = config(&url, "0.0.0.0:0", "[]", channel);
    std::fs::write(app.project.config(), &open).expect("rewrite config");
    let refused = app.shared.reload().expect_err("the reload is refused");
    assert!(refused.contains("server.tokens is empty"), "{refused}");
    let r = app.http.get(format!("{}/api/v1/flows", app.base)).send().await.expect("GET");
    assert_eq!(r.status().as_u16(), 401, "the API stays closed");
    let mut alerted = false;
    for _ in 0..200 {
        let (_, alerts) = app.get("/api/v1/alerts").await;
        if alerts["alerts"].as_array().is_some_and(|a| a.iter().any(|x| x["node"] == "config")) {
            alerted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(alerted, "the refused reload raised an alert");

    // A value from the environment (PATH is set for every process) that fails a check.
    let path = std::env::var("PATH").expect("PATH");
    std::fs::write(app.project.config(), config(&url, "0.0.0.0:0", &all_scopes(), &format!("{channel}locale: ${{PATH}}\n")))
        .expect("config");
    let refused = app.shared.reload().expect_err("bad locale");
    assert!(refused.contains("locale") && !refused.contains(&path), "{refused}");
    let (_, health) = app.get("/api/v1/health").await;
    let shown = health["reload_error"].as_str().unwrap_or("");
    assert!(shown.contains("locale") && !shown.contains(&path), "{shown}");
    app.shutdown().await;
}

/// `check` on hostile or broken files: answers at once with where the problem is.
#[test]
fn check_bounds_hostile_flows_and_names_where_errors_are() {
    let p = Project::with_config("storage:\n  url: sqlite://fg.db\n");
    let check = |p: &Project| {
        let child = bin()
            .current_dir(p.path())
            .args(["check"])
            .stderr(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("spawn");
        let (tx, rx) = std::sync::mpsc::channel();
        let id = child.id();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(out) => out.expect("output"),
            Err(_) => {
                let _ = std::process::Command::new("kill").args(["-9", &id.to_string()]).status();
                panic!("`flowguard check` did not finish");
            }
        }
    };
    // A word list that never ends.
    p.write("flows/qc.yaml", "name: qc\nnodes:\n  - id: t\n    kind: template\n    text: hi\n  - id: q\n    kind: quality_check\n    target: t\n    sensitive_words: /dev/zero\n");
    let o = check(&p);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("not a regular file"), "{}", stderr(&o));
    std::fs::remove_file(p.path().join("flows/qc.yaml")).expect("rm");

    // Too many nodes.
    let mut big = String::from("name: big\nnodes:\n");
    for i in 0..=flowguard::flow::MAX_NODES {
        big.push_str(&format!("  - {{ id: n{i}, kind: template, text: x }}\n"));
    }
    p.write("flows/big.yaml", &big);
    let o = check(&p);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains(&format!("at most {}", flowguard::flow::MAX_NODES)), "{}", stderr(&o));
    std::fs::remove_file(p.path().join("flows/big.yaml")).expect("rm");

    // YAML syntax errors and bytes that are not UTF-8 print file:line:col like other errors.
    p.write("flows/syntax.yaml", "name: syntax\nnodes:\n  - id: a\n   kind: template\n");
    let o = check(&p);
    let err = stderr(&o);
    assert!(err.contains("flows/syntax.yaml:4:") || err.contains("flows/syntax.yaml:3:"), "{err}");
    assert!(!err.contains("error: line"), "{err}");
    std::fs::remove_file(p.path().join("flows/syntax.yaml")).expect("rm");
    std::fs::write(p.path().join("flows/latin1.yaml"), b"name: latin1\n# caf\xe9\nnodes: []\n").expect("write");
    let err = stderr(&check(&p));
    assert!(err.contains("flows/latin1.yaml:2:6: not UTF-8"), "{err}");
    std::fs::remove_file(p.path().join("flows/latin1.yaml")).expect("rm");
    std::fs::write(p.config(), b"storage:\n  url: sqlite://fg.db\ntimezone: \xff\n").expect("write");
    let err = stderr(&check(&p));
    assert!(err.contains("flowguard.yaml:3:11: not UTF-8"), "{err}");
}

/// A template that would grow without end fails its node with `loop_limit`, not the process.
#[tokio::test]
async fn a_runaway_template_fails_its_node_with_a_clear_kind() {
    let flow = "name: runaway\nnodes:\n  - id: boom\n    kind: template\n    text: \"{{ [1] * 100000000 }}\"\n";
    let h = crate::support::harness::harness("timezone: UTC\n", flow).await;
    let out = h.run().await;
    assert_eq!(out.status, flowguard::vocab::RunStatus::Failed, "{out:?}");
    assert_eq!(out.error_kind, Some(flowguard::vocab::ErrorKind::LoopLimit), "{out:?}");
    assert!(out.error_message.as_deref().unwrap_or("").contains("template limit"), "{out:?}");
}

/// A connection of the test's own that makes the database refuse the event id `refused-1` (a
/// trigger) and holds ingestion's database lock until released, so that requests sent meanwhile
/// wait to be merged as one group.
enum IngestHeld {
    MySql(sqlx::MySqlConnection),
    Postgres(sqlx::PgConnection),
}

impl IngestHeld {
    async fn take(db: &TestDb) -> IngestHeld {
        use sqlx::Connection;
        match db.kind {
            Kind::MySql => {
                let mut c = sqlx::MySqlConnection::connect(db.url()).await.expect("connect");
                let refuse = "CREATE TRIGGER refuse_event BEFORE INSERT ON ingest_events FOR EACH ROW \
                    BEGIN IF NEW.id = 'refused-1' THEN SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'refused'; END IF; END";
                sqlx::raw_sql(refuse).execute(&mut c).await.expect("trigger");
                let lock = "SELECT GET_LOCK(CONCAT('flowguard_', 'ingest', '_', LEFT(MD5(IFNULL(DATABASE(), '')), 16)), 60)";
                let got: Option<i64> = sqlx::query_scalar(lock).fetch_one(&mut c).await.expect("lock");
                assert_eq!(got, Some(1));
                IngestHeld::MySql(c)
            }
            _ => {
                let mut c = sqlx::PgConnection::connect(db.url()).await.expect("connect");
                let refuse = "CREATE FUNCTION refuse_event() RETURNS trigger AS $$ BEGIN \
                    IF NEW.id = 'refused-1' THEN RAISE EXCEPTION 'refused'; END IF; RETURN NEW; END $$ LANGUAGE plpgsql; \
                    CREATE TRIGGER refuse_event BEFORE INSERT ON ingest_events FOR EACH ROW EXECUTE FUNCTION refuse_event();";
                sqlx::raw_sql(refuse).execute(&mut c).await.expect("trigger");
                sqlx::query("SELECT pg_advisory_lock(hashtextextended('ingest', 0))").execute(&mut c).await.expect("lock");
                IngestHeld::Postgres(c)
            }
        }
    }

    async fn release(self) {
        use sqlx::Connection;
        match self {
            IngestHeld::MySql(c) => c.close().await.expect("close"),
            IngestHeld::Postgres(c) => c.close().await.expect("close"),
        }
    }
}
