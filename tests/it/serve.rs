//! `flowguard serve` in-process: the real server on a random port, driven over HTTP — triggering
//! runs, ingestion (idempotency, out-of-order events, bad items), health, metrics, auth scopes,
//! limits, the scheduler, and the OpenAPI document against the routes served.

use crate::support::Project;
use flowguard::clock::SystemClock;
use flowguard::server::{Application, Options};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

pub const READ: &str = "read-token-0123456789abcdef";
pub const OPERATE: &str = "operate-token-0123456789abcdef";
pub const INGEST: &str = "ingest-token-0123456789abcdef";

const HELLO: &str = r#"
name: hello
inputs: { who: world }
nodes:
  - id: greet
    kind: template
    text: "hello {{ input.who }}"
  - id: shout
    kind: template
    value: { text: "{{ nodes.greet }}!" }
"#;

pub fn config(extra: &str) -> String {
    format!(
        r#"
storage:
  url: sqlite://flowguard.db
timezone: UTC
models:
  slow:
    provider: simulated
    simulate: {{ latency: 1500ms }}
server:
  listen: 127.0.0.1:0
  watch_interval: 0s
  tokens:
    - {{ name: reader, token: "{READ}", scopes: [read] }}
    - {{ name: operator, token: "{OPERATE}", scopes: [operate] }}
    - {{ name: ingester, token: "{INGEST}", scopes: [ingest] }}
{extra}
"#
    )
}

pub struct TestApp {
    pub base: String,
    pub http: reqwest::Client,
    pub project: Project,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestApp {
    pub async fn get(&self, path: &str, token: &str) -> (u16, Value) {
        let r = self.http.get(format!("{}{path}", self.base)).bearer_auth(token).send().await.expect("GET");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn post(&self, path: &str, token: &str, body: &Value) -> (u16, Value) {
        let r = self.http.post(format!("{}{path}", self.base)).bearer_auth(token).json(body).send().await.expect("POST");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Polls a run until it reaches a final state.
    pub async fn wait_run(&self, id: &str) -> Value {
        for _ in 0..500 {
            let (code, run) = self.get(&format!("/api/v1/runs/{id}"), READ).await;
            if code == 200 && !["queued", "running"].contains(&run["status"].as_str().unwrap_or("")) {
                return run;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("run {id} did not finish");
    }

    pub async fn shutdown(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

/// The server on a free port, with this config text and these flows.
pub async fn spawn_app(extra_config: &str, flows: &[(&str, &str)]) -> TestApp {
    spawn_app_with(&config(extra_config), flows).await
}

/// The server on a free port, with this whole config text.
pub async fn spawn_app_with(config_text: &str, flows: &[(&str, &str)]) -> TestApp {
    flowguard::init_tls();
    let project = Project::with_config(config_text);
    for (name, text) in flows {
        project.write(&format!("flows/{name}.yaml"), text);
    }
    let opts = Options { listen: None, clock: Arc::new(SystemClock), extra_schedules: Vec::new() };
    let app = Application::build(&project.config(), opts).await.expect("build the app");
    let base = format!("http://127.0.0.1:{}", app.port());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        app.run_until_stopped(async move {
            let _ = rx.await;
        })
        .await
        .expect("serve");
    });
    TestApp { base, http: reqwest::Client::new(), project, stop: Some(tx), task: Some(task) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trigger_runs_in_the_background_and_lists_them_with_a_cursor() {
    let app = spawn_app("", &[("hello", HELLO)]).await;
    let (code, body) = app.post("/api/v1/flows/hello/runs", OPERATE, &json!({"inputs": {"who": "flowguard"}})).await;
    assert_eq!(code, 202, "{body}");
    let id = body["run_id"].as_str().expect("run id").to_owned();
    let run = app.wait_run(&id).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["trigger"], "api");
    let attempts = run["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[1]["output"], r#"{"text":"hello flowguard!"}"#);

    for _ in 0..2 {
        let (_, b) = app.post("/api/v1/flows/hello/runs", OPERATE, &json!({})).await;
        app.wait_run(b["run_id"].as_str().expect("id")).await;
    }
    let (code, page1) = app.get("/api/v1/runs?limit=2&flow=hello&status=succeeded", READ).await;
    assert_eq!(code, 200, "{page1}");
    assert_eq!(page1["runs"].as_array().expect("runs").len(), 2);
    let cursor = page1["next_cursor"].as_str().expect("a next page");
    let (_, page2) = app.get(&format!("/api/v1/runs?limit=2&cursor={cursor}"), READ).await;
    let ids2: Vec<&str> = page2["runs"].as_array().expect("runs").iter().map(|r| r["id"].as_str().unwrap_or("")).collect();
    assert_eq!(ids2.len(), 1, "{page2}");
    assert!(page1["runs"].as_array().expect("runs").iter().all(|r| r["id"] != ids2[0]));
    assert!(page2["next_cursor"].is_null());
    let (_, failed) = app.get("/api/v1/runs?status=failed", READ).await;
    assert_eq!(failed["runs"].as_array().expect("runs").len(), 0);
    let (code, bad) = app.get("/api/v1/runs?status=fialed", READ).await;
    assert_eq!(code, 400);
    assert!(bad["error"].as_str().unwrap_or("").contains("did you mean `failed`"), "{bad}");

    let (code, _) = app.post("/api/v1/flows/nope/runs", OPERATE, &json!({})).await;
    assert_eq!(code, 404);
    let (_, stats) = app.get("/api/v1/stats?flow=hello", READ).await;
    assert_eq!(stats["flows"][0]["succeeded"], 3, "{stats}");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_need_the_right_scope_and_reveal_nothing() {
    let app = spawn_app("", &[("hello", HELLO)]).await;
    let anon = app.http.get(format!("{}/api/v1/runs", app.base)).send().await.expect("GET");
    assert_eq!(anon.status().as_u16(), 401);
    assert_eq!(anon.headers().get("www-authenticate").map(|v| v.to_str().unwrap_or("")), Some("Bearer"));
    let (code, body) = app.get("/api/v1/runs", "wrong-token-0123456789abcdef").await;
    assert_eq!((code, body.clone()), (401, json!({"error": "unauthorized", "code": "unauthorized"})));
    let (code, body) = app.post("/api/v1/flows/hello/runs", READ, &json!({})).await;
    assert_eq!((code, body), (403, json!({"error": "forbidden", "code": "forbidden"})));
    let (code, _) = app.get("/api/v1/runs", INGEST).await;
    assert_eq!(code, 403);
    let (code, _) = app.post("/api/v1/events", READ, &json!({"events": []})).await;
    assert_eq!(code, 403);
    // operate includes read.
    let (code, _) = app.get("/api/v1/flows", OPERATE).await;
    assert_eq!(code, 200);
    let (code, flows) = app.get("/api/v1/flows/hello", READ).await;
    assert_eq!(code, 200);
    assert_eq!(flows["nodes"][0]["id"], "greet");
    // Health checks and metrics need no token.
    let r = app.http.get(format!("{}/healthz", app.base)).send().await.expect("healthz");
    assert_eq!(r.status().as_u16(), 200);
    let (code, ready) = app.get("/readyz", "").await;
    assert_eq!(code, 200, "{ready}");
    assert_eq!(ready, json!({"ready": true, "database": "ok", "scheduler": "ok"}));
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_body_size_malformed_json_and_rate() {
    let app = spawn_app("  max_body_bytes: 2048\n  rate_limit: { per_second: 0.01, burst: 3 }", &[("hello", HELLO)]).await;
    let big = json!({"inputs": {"who": "x".repeat(4096)}});
    let (code, _) = app.post("/api/v1/flows/hello/runs", OPERATE, &big).await;
    assert_eq!(code, 413);
    let r = app
        .http
        .post(format!("{}/api/v1/events", app.base))
        .bearer_auth(INGEST)
        .header("content-type", "application/json")
        .body("{\"events\": [\n  {\"id\": \"a\",}\n]}")
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status().as_u16(), 400);
    let body: Value = r.json().await.expect("json");
    assert!(body["error"].as_str().unwrap_or("").contains("line 2, column"), "{body}");
    let (code, body) = app.post("/api/v1/flows/hello/runs", OPERATE, &json!({"inputs": 3})).await;
    assert_eq!(code, 400);
    assert!(body["error"].as_str().unwrap_or("").contains("field `inputs`"), "{body}");
    // The operator token has spent 1 of its 3 (the body cap answers before the token is checked);
    // the reader has its own bucket.
    let (c1, _) = app.get("/api/v1/flows", OPERATE).await;
    let (c2, _) = app.get("/api/v1/flows", OPERATE).await;
    let r = app.http.get(format!("{}/api/v1/flows", app.base)).bearer_auth(OPERATE).send().await.expect("GET");
    assert_eq!((c1, c2, r.status().as_u16()), (200, 200, 429));
    assert!(r.headers().get("retry-after").is_some());
    let (code, _) = app.get("/api/v1/flows", READ).await;
    assert_eq!(code, 200);
    app.shutdown().await;
}

fn ev(id: &str, ty: &str, run: &str, extra: Value) -> Value {
    let mut e = json!({"id": id, "type": ty, "flow": "coze_script", "run_id": run});
    e.as_object_mut().expect("object").extend(extra.as_object().cloned().unwrap_or_default());
    e
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingestion_records_external_runs_idempotently_in_any_order() {
    let app = spawn_app("", &[("hello", HELLO)]).await;
    let t = 1_795_000_000_000i64;
    let batch = json!({"events": [
        ev("e1", "run.started", "ext-1", json!({"ts": t, "inputs": {"topic": "cats"}})),
        ev("e2", "node.finished", "ext-1", json!({"node": "llm", "kind": "llm", "started_at": t + 10, "ended_at": t + 1210, "status": "succeeded", "model": "doubao-pro", "tokens_in": 120, "tokens_out": 300, "output": "a script"})),
        ev("e3", "node.finished", "ext-1", json!({"node": "publish", "started_at": jiff::Timestamp::from_millisecond(t + 1300).expect("time").to_string(), "duration_ms": 500, "status": "failed", "error_kind": "publish_failed", "error": "HTTP 500"})),
        ev("e4", "run.finished", "ext-1", json!({"ts": t + 2000, "status": "failed", "error_kind": "publish_failed", "failed_node": "publish"})),
    ]});
    let (code, res) = app.post("/api/v1/events", INGEST, &batch).await;
    assert_eq!(code, 200, "{res}");
    assert_eq!((res["accepted"].as_u64(), res["rejected"].as_u64()), (Some(4), Some(0)), "{res}");
    let (_, run) = app.get("/api/v1/runs/ext-1", READ).await;
    assert_eq!(run["trigger"], "external");
    assert_eq!(run["status"], "failed");
    assert_eq!(run["duration_ms"], 2000);
    assert_eq!(run["severity"], "medium");
    let attempts = run["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[0]["tokens_out"], 300);
    assert_eq!(attempts[0]["output_bytes"], 8);
    assert_eq!(attempts[1]["error_kind"], "publish_failed");

    // The same batch again: every event is a duplicate, nothing is applied twice.
    let (_, again) = app.post("/api/v1/events", INGEST, &batch).await;
    assert_eq!((again["accepted"].as_u64(), again["duplicates"].as_u64()), (Some(0), Some(4)), "{again}");
    let (_, run) = app.get("/api/v1/runs/ext-1", READ).await;
    assert_eq!(run["attempts"].as_array().map(Vec::len), Some(2));

    // Out of order: a node event first, then the finish, then the start (one per request).
    let posts = [
        ev("o1", "node.finished", "ext-2", json!({"node": "llm", "started_at": t + 100, "duration_ms": 50, "status": "succeeded"})),
        ev("o2", "run.finished", "ext-2", json!({"ts": t + 400, "status": "succeeded"})),
        ev("o3", "run.started", "ext-2", json!({"ts": t})),
    ];
    for (i, p) in posts.iter().enumerate() {
        let (_, r) = app.post("/api/v1/events", INGEST, p).await;
        assert_eq!(r["accepted"], 1, "{r}");
        if i == 0 {
            let (_, run) = app.get("/api/v1/runs/ext-2", READ).await;
            assert_eq!(run["status"], "running", "a node event before its run creates the run: {run}");
        }
    }
    let (_, run) = app.get("/api/v1/runs/ext-2", READ).await;
    assert_eq!((run["status"].as_str(), run["started_at"].as_i64(), run["duration_ms"].as_i64()), (Some("succeeded"), Some(t), Some(400)));

    // Bad items are rejected one by one, with their reasons; the good one in the batch is kept.
    let mixed = json!([
        ev("b1", "run.finished", "ext-3", json!({"ts": t, "status": "done"})),
        ev("b2", "node.finshed", "ext-3", json!({})),
        {"type": "run.started", "flow": "coze_script", "run_id": "ext-3", "ts": t},
        ev("b4", "node.finished", "ext-3", json!({"node": "x", "status": "failed", "error_kind": "oops", "duration_ms": 1, "ts": t})),
        ev("b5", "node.finished", "ext-3", json!({"node": "x", "status": "failed", "ts": t})),
        ev("b6", "run.started", "ext-3", json!({"ts": t})),
        ev("b7", "run.started", "ext-1", json!({"ts": t, "flow": "other"})),
        "not an event",
    ]);
    let (code, res) = app.post("/api/v1/events", INGEST, &mixed).await;
    assert_eq!(code, 200);
    let results = res["results"].as_array().expect("results");
    let by = |i: usize| (results[i]["result"].as_str().unwrap_or(""), results[i]["error"].as_str().unwrap_or("").to_owned());
    assert!(by(0).1.contains("unknown runstatus `done`"), "{:?}", by(0));
    assert!(by(1).1.contains("did you mean `node.finished`"), "{:?}", by(1));
    assert!(by(2).1.contains("`id` is required"), "{:?}", by(2));
    assert!(by(3).1.contains("`error_kind`"), "{:?}", by(3));
    assert!(by(4).1.contains("`started_at` or `duration_ms`"), "{:?}", by(4));
    assert_eq!(by(5).0, "accepted");
    assert!(by(6).1.contains("belongs to flow `coze_script`"), "{:?}", by(6));
    assert!(by(7).1.contains("JSON object"), "{:?}", by(7));
    assert_eq!((res["accepted"].as_u64(), res["rejected"].as_u64()), (Some(1), Some(7)));

    // External runs count in statistics like native ones.
    let (_, stats) = app.get("/api/v1/stats?flow=coze_script&since=2026-01-01", READ).await;
    let f = &stats["flows"][0];
    assert_eq!((f["succeeded"].as_u64(), f["failed"].as_u64()), (Some(1), Some(1)), "{stats}");
    assert_eq!(f["failures_by_kind"]["publish_failed"], 1);
    app.shutdown().await;
}

/// Checks the Prometheus text format line by line; returns (series, value).
fn parse_metrics(text: &str) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with("# HELP ") || line.starts_with("# TYPE ") || line.is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("not a sample: {line}"));
        let name_end = series.find('{').unwrap_or(series.len());
        assert!(series[..name_end].chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "bad name: {line}");
        if name_end < series.len() {
            assert!(series.ends_with('}'), "bad labels: {line}");
        }
        let v: f64 = value.parse().unwrap_or_else(|_| panic!("bad value: {line}"));
        out.push((series.to_owned(), v));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_metrics_reflect_runs() {
    let app = spawn_app("", &[("hello", HELLO)]).await;
    let (_, b) = app.post("/api/v1/flows/hello/runs", OPERATE, &json!({})).await;
    let id = b["run_id"].as_str().expect("id").to_owned();
    app.wait_run(&id).await;
    let ev = json!({"id": "m1", "type": "node.finished", "flow": "coze", "run_id": "x1", "node": "llm", "duration_ms": 700, "ts": 1_795_000_000_000i64, "status": "failed", "retried": true, "error_kind": "timeout"});
    app.post("/api/v1/events", INGEST, &ev).await;

    let (code, health) = app.get("/api/v1/health", READ).await;
    assert_eq!(code, 200);
    let hello = &health["flows"][0];
    assert_eq!((hello["flow"].as_str(), hello["last_run"]["id"].as_str()), (Some("hello"), Some(id.as_str())), "{health}");
    assert_eq!((hello["blocked"].as_bool(), health["outbox_backlog"].as_i64()), (Some(false), Some(0)));

    let text = app.http.get(format!("{}/metrics", app.base)).send().await.expect("metrics").text().await.expect("text");
    let samples = parse_metrics(&text);
    let get = |s: &str| samples.iter().find(|(k, _)| k == s).map(|(_, v)| *v);
    assert_eq!(get(r#"flowguard_runs_total{flow="hello",status="succeeded"}"#), Some(1.0), "{text}");
    assert_eq!(get(r#"flowguard_node_duration_seconds_count{flow="hello",node="greet"}"#), Some(1.0));
    assert_eq!(get(r#"flowguard_node_duration_seconds_bucket{flow="coze",node="llm",le="0.5"}"#), Some(0.0));
    assert_eq!(get(r#"flowguard_node_duration_seconds_bucket{flow="coze",node="llm",le="1"}"#), Some(1.0));
    assert_eq!(get(r#"flowguard_node_retries_total{flow="coze",node="llm"}"#), Some(1.0));
    assert_eq!(get(r#"flowguard_ingested_events_total{result="accepted"}"#), Some(1.0));
    assert_eq!(get("flowguard_outbox_backlog"), Some(0.0));

    // promtool, when present (CI installs it and requires it).
    let promtool = std::process::Command::new("promtool").arg("--version").output().is_ok();
    if std::env::var("CI").as_deref() == Ok("true") {
        assert!(promtool, "CI must have promtool (Debian package `prometheus`)");
    }
    if promtool {
        use std::io::Write;
        let mut child = std::process::Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("promtool");
        child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("write");
        let out = child.wait_with_output().expect("promtool");
        assert!(out.status.success(), "promtool: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    }
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_served_is_in_the_openapi_document() {
    let app = spawn_app("", &[("hello", HELLO)]).await;
    let (code, doc) = app.get("/api/v1/openapi.json", "").await;
    assert_eq!(code, 200);
    for (method, path) in flowguard::server::api::ROUTES {
        assert!(doc["paths"][path][method].is_object(), "{method} {path} is not in openapi.json");
        // And it is really served: a route that does not exist answers "no such route".
        let url = format!("{}{}", app.base, path.replace("{name}", "hello").replace("{id}", "none"));
        let r = if *method == "get" { app.http.get(url) } else { app.http.post(url).json(&json!({})) };
        let body = r.bearer_auth(OPERATE).send().await.expect("send").text().await.unwrap_or_default();
        assert!(!body.contains("no such route"), "{method} {path} is documented but not served");
    }
    let documented: usize = doc["paths"].as_object().expect("paths").values().map(|p| p.as_object().map(|m| m.len()).unwrap_or(0)).sum();
    assert_eq!(documented, flowguard::server::api::ROUTES.len(), "openapi.json documents a route that is not served");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cron_and_canary_runs_fire_and_canaries_stay_out_of_statistics() {
    let flow = format!(
        "{HELLO}schedule: {{ cron: \"* * * * * *\", overlap: skip }}\ncanary: {{ cron: \"* * * * * *\", inputs: {{ who: canary }} }}\n"
    );
    let app = spawn_app("", &[("hello", &flow)]).await;
    let mut seen = (false, false);
    for _ in 0..300 {
        let (_, runs) = app.get("/api/v1/runs?canary=true&flow=hello", READ).await;
        for r in runs["runs"].as_array().into_iter().flatten() {
            match (r["trigger"].as_str(), r["canary"].as_bool()) {
                (Some("cron"), Some(false)) => seen.0 = true,
                (Some("canary"), Some(true)) => seen.1 = true,
                _ => {}
            }
        }
        if seen == (true, true) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, all) = app.get("/api/v1/runs?canary=true", READ).await;
    assert_eq!(seen, (true, true), "a cron run and a canary run: {all}");
    let (_, plain) = app.get("/api/v1/runs?flow=hello", READ).await;
    assert!(plain["runs"].as_array().expect("runs").iter().all(|r| r["canary"] == false));
    // Canaries fire every second: the newest may still be running; one that finished passed.
    let mut health = Value::Null;
    for _ in 0..150 {
        health = app.get("/api/v1/health", READ).await.1;
        if health["flows"][0]["last_canary"]["ok"] == true {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(health["flows"][0]["last_canary"]["ok"], true, "{health}");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flow_concurrency_limit_queues_the_second_run() {
    let flow = "name: one_at_a_time\nconcurrency: 1\nnodes:\n  - id: think\n    kind: llm\n    model: slow\n    prompt: hi\n";
    let app = spawn_app("", &[("one_at_a_time", flow)]).await;
    let (_, a) = app.post("/api/v1/flows/one_at_a_time/runs", OPERATE, &json!({})).await;
    let (_, b) = app.post("/api/v1/flows/one_at_a_time/runs", OPERATE, &json!({})).await;
    let (a, b) = (a["run_id"].as_str().expect("a").to_owned(), b["run_id"].as_str().expect("b").to_owned());
    // Which of the two takes the slot first is up to the runtime; the other waits, queued.
    let (mut first, mut second) = (Value::Null, Value::Null);
    for _ in 0..50 {
        first = app.get(&format!("/api/v1/runs/{a}"), READ).await.1;
        second = app.get(&format!("/api/v1/runs/{b}"), READ).await.1;
        if first["status"] == "running" || second["status"] == "running" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let queued = [&first, &second].iter().filter(|r| r["status"] == "queued").count();
    assert_eq!(queued, 1, "one runs, one waits: {first} {second}");
    let (ra, rb) = (app.wait_run(&a).await, app.wait_run(&b).await);
    let (ra, rb) = if ra["started_at"].as_i64() <= rb["started_at"].as_i64() { (ra, rb) } else { (rb, ra) };
    let end_first = ra["ended_at"].as_i64().expect("ended");
    assert!(rb["started_at"].as_i64().expect("started") >= end_first, "the second run starts after the first ends: {ra} {rb}");
    app.shutdown().await;
}

/// The serve queries on MariaDB and PostgreSQL (when their admin URLs are set, as in CI).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_queries_work_on_every_backend() {
    use flowguard::store::{Cursor, IngestWrite, Pool, RunFilter, RunRecord, Store};
    let urls: Vec<String> =
        ["FLOWGUARD_TEST_MYSQL_URL", "FLOWGUARD_TEST_POSTGRES_URL"].iter().filter_map(|v| std::env::var(v).ok()).collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
    let mut targets = vec![(None, sqlite)];
    for admin in urls {
        let name = format!("fg_serve_{}", uuid::Uuid::now_v7().simple());
        let pool = Pool::connect(&admin, &Default::default()).await.expect("admin connection");
        pool.exec(&format!("CREATE DATABASE {name}"), &[]).await.expect("create database");
        targets.push((Some((pool, name.clone())), format!("{}/{name}", admin.trim_end_matches('/'))));
    }
    for (admin, url) in &targets {
        let store = Store::open(url, 2, Duration::from_secs(5)).await.expect("open");
        assert!(store.schema_current().await.expect("schema"));
        let run = |i: i64| RunRecord {
            id: format!("r{i}"),
            flow: "f".into(),
            flow_hash: "external".into(),
            trigger: "external".into(),
            status: flowguard::vocab::RunStatus::Succeeded,
            canary: false,
            inputs: None,
            started_at: 1000 + i / 2,
            ended_at: None,
            duration_ms: None,
            failed_node: None,
            error_kind: None,
            error_message: None,
            severity: None,
        };
        let w = IngestWrite {
            events: (0..5).map(|i| (format!("e{i}"), format!("r{i}"))).collect(),
            runs: (0..5).map(run).collect(),
            ..Default::default()
        };
        store.apply_ingest(&w, 1).await.expect("ingest");
        // Written again whole (the ingestion merge), not duplicated.
        store.apply_ingest(&IngestWrite { runs: vec![run(4)], ..Default::default() }, 2).await.expect("rewrite");
        let known = store.known_events(&["e1".into(), "x".into()]).await.expect("known");
        assert_eq!(known.into_iter().collect::<Vec<_>>(), vec!["e1".to_owned()], "{url}");
        let f = RunFilter { flow: Some("f".into()), ..Default::default() };
        let (page, next) = store.runs_page(&f, None, 2).await.expect("page");
        assert_eq!(page.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), vec!["r4", "r3"], "{url}");
        let next: Cursor = next.expect("more");
        let (rest, _) = store.runs_page(&f, Some(&next), 10).await.expect("page 2");
        assert_eq!(rest.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), vec!["r2", "r1", "r0"], "{url}");
        // External runs gone silent: found by the time of their last event, ended once.
        let running = |id: &str| RunRecord { id: id.into(), status: flowguard::vocab::RunStatus::Running, ..run(0) };
        store
            .apply_ingest(&IngestWrite { events: vec![("es".into(), "s".into())], runs: vec![running("s")], ..Default::default() }, 2)
            .await
            .expect("s");
        store
            .apply_ingest(&IngestWrite { events: vec![("et".into(), "t".into())], runs: vec![running("t")], ..Default::default() }, 9000)
            .await
            .expect("t");
        let silent = store.silent_external_runs(5000).await.expect("silent");
        assert_eq!(silent.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), vec!["s"], "{url}");
        assert!(store.interrupt_external(&silent[0], 6000, "no event for 1h").await.expect("interrupt"), "{url}");
        assert!(!store.interrupt_external(&silent[0], 6001, "no event for 1h").await.expect("again"), "only once: {url}");
        let s_run = store.get_run("s").await.expect("get").expect("s");
        assert_eq!((s_run.status, s_run.error_kind.as_deref()), (flowguard::vocab::RunStatus::Interrupted, Some("interrupted")), "{url}");
        store.set_last_fire("cron:f", 5).await.expect("fire");
        store.set_last_fire("cron:f", 7).await.expect("fire again");
        assert_eq!(store.last_fire("cron:f").await.expect("last"), Some(7));
        store.close().await;
        if let Some((pool, name)) = admin {
            pool.exec(&format!("DROP DATABASE {name}"), &[]).await.expect("drop");
        }
    }
}

/// The operator routes: block/unblock, the manual queue, alerts, silences and reports over HTTP.
#[tokio::test]
async fn operators_act_over_the_api() {
    let parked = "name: parked\ninputs: { who: x }\nnodes:\n  - id: a\n    kind: template\n    text: 'a'\n  - id: b\n    kind: template\n    text: 'b'\n    expect: [{ if: 'input.who == \"ok\"' }]\n    on_error: manual\n  - id: c\n    kind: template\n    text: 'c after {{ nodes.b }}'\n";
    let app = spawn_app("channels:\n  terminal:\n    type: console\n", &[("hello", HELLO), ("parked", parked)]).await;

    // Block: triggers are refused (recorded), health says so; unblock lets runs through again.
    let (code, _) = app.post("/api/v1/flows/hello/block", READ, &json!({})).await;
    assert_eq!(code, 403, "read scope cannot block");
    let (code, b) = app.post("/api/v1/flows/hello/block", OPERATE, &json!({"note": "maintenance"})).await;
    assert_eq!((code, b["blocked"].as_bool()), (200, Some(true)));
    let (_, health) = app.get("/api/v1/health", READ).await;
    let hello = health["flows"].as_array().unwrap().iter().find(|f| f["flow"] == "hello").unwrap().clone();
    assert_eq!((hello["blocked"].as_bool(), hello["block"]["reason"].as_str()), (Some(true), Some("maintenance")));
    let (code, _) = app.post("/api/v1/flows/hello/unblock", OPERATE, &json!({})).await;
    assert_eq!(code, 200);
    let (code, _) = app.post("/api/v1/flows/hello/unblock", OPERATE, &json!({})).await;
    assert_eq!(code, 404, "not blocked any more");

    // A parked run shows in the manual queue; skip it with an output over the API.
    let (code, started) = app.post("/api/v1/flows/parked/runs", OPERATE, &json!({})).await;
    assert_eq!(code, 202);
    let run_id = started["run_id"].as_str().unwrap().to_owned();
    let mut tasks = Value::Null;
    for _ in 0..100 {
        tasks = app.get("/api/v1/manual", READ).await.1;
        if tasks["tasks"].as_array().is_some_and(|t| !t.is_empty()) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let task = tasks["tasks"][0].clone();
    assert_eq!((task["run_id"].as_str(), task["node_id"].as_str()), (Some(run_id.as_str()), Some("b")));
    // Alerts: the parked run raised one; acknowledge it (before the run recovers and resolves it).
    let mut alerts = Value::Null;
    for _ in 0..100 {
        alerts = app.get("/api/v1/alerts", READ).await.1;
        if alerts["alerts"].as_array().is_some_and(|a| !a.is_empty()) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let alert_id = alerts["alerts"][0]["id"].as_str().expect("an alert for the parked run").to_owned();
    let (code, acked) = app.post(&format!("/api/v1/alerts/{alert_id}/ack"), OPERATE, &json!({"by": "bob"})).await;
    assert_eq!(code, 200, "{acked}");

    let id = task["id"].as_str().unwrap();
    let (code, _) = app.post(&format!("/api/v1/manual/{id}/skip"), OPERATE, &json!({})).await;
    assert_eq!(code, 400, "skip needs an output");
    let (code, _) =
        app.post(&format!("/api/v1/manual/{id}/skip"), OPERATE, &json!({"output": "人工", "by": "alice", "note": "by hand"})).await;
    assert_eq!(code, 202);
    let mut run = Value::Null;
    for _ in 0..100 {
        run = app.get(&format!("/api/v1/runs/{run_id}"), READ).await.1;
        if run["run"]["status"] == "recovered" || run["status"] == "recovered" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(run.to_string().contains("c after 人工"), "{run}");
    let (_, shown) = app.get(&format!("/api/v1/manual/{id}"), READ).await;
    assert_eq!((shown["task"]["status"].as_str(), shown["actions"][0]["actor"].as_str()), (Some("skipped"), Some("alice")));
    // A task already closed is a conflict, an unknown one is not found (neither is a bad request).
    let (code, again) = app.post(&format!("/api/v1/manual/{id}/abort"), OPERATE, &json!({})).await;
    assert_eq!(code, 409, "{again}");
    assert!(again.to_string().contains("already skipped"), "{again}");
    assert_eq!(app.post("/api/v1/manual/no-such-task/abort", OPERATE, &json!({})).await.0, 404);

    // Silences: create, list, expire; a bad label is a 400 naming it.
    let (code, bad) = app.post("/api/v1/silences", OPERATE, &json!({"matchers": {"flwo": "hello"}, "duration": "1h"})).await;
    assert_eq!(code, 400);
    assert!(bad.to_string().contains("flwo"), "{bad}");
    let (code, made) =
        app.post("/api/v1/silences", OPERATE, &json!({"matchers": {"flow": "hello"}, "duration": "1h", "comment": "deploy"})).await;
    assert_eq!(code, 201, "{made}");
    let sid = made["silence"]["id"].as_str().unwrap().to_owned();
    assert_eq!(app.get("/api/v1/silences", READ).await.1["silences"].as_array().unwrap().len(), 1);
    assert_eq!(app.post(&format!("/api/v1/silences/{sid}/expire"), OPERATE, &json!({})).await.0, 200);
    assert!(app.get("/api/v1/silences", READ).await.1["silences"].as_array().unwrap().is_empty());

    // Reports: send the daily report now, then read it back.
    let (code, sent) = app.post("/api/v1/reports/daily/send", OPERATE, &json!({})).await;
    assert_eq!(code, 200, "{sent}");
    let period = sent["period"].as_str().unwrap().to_owned();
    let (code, report) = app.get(&format!("/api/v1/reports/daily/{period}"), READ).await;
    assert_eq!(code, 200, "{report}");
    assert!(report["markdown"].as_str().is_some_and(|m| !m.is_empty()));
    assert_eq!(app.get("/api/v1/reports/daily/1999-01-01", READ).await.0, 404);

    // The outbox shows in /metrics by channel and result.
    let text = app.http.get(format!("{}/metrics", app.base)).send().await.expect("metrics").text().await.expect("text");
    let notes: f64 = parse_metrics(&text)
        .iter()
        .filter(|(k, _)| k.starts_with("flowguard_notifications_total{channel=\"terminal\""))
        .map(|(_, v)| v)
        .sum();
    assert!(notes >= 1.0, "{text}");
    app.shutdown().await;
}
