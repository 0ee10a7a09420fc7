//! Flows that run elsewhere (Coze, Dify, n8n) as flowguard sees them through `POST /api/v1/events`:
//! their failures alert like native ones, a failure sent without an error kind is explained and
//! counted, inconsistent timings are reconciled, a run that goes silent ends `interrupted`.

use crate::serve::{INGEST, READ, TestApp, config, spawn_app, spawn_app_with};
use crate::support::fake_feishu::{FakeFeishu, KEYWORD};
use crate::support::{stderr, stdout};
use serde_json::{Value, json};
use std::time::Duration;

/// Polls `f` until it gives Some, for at most 15 s.
async fn until<T>(what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    for _ in 0..750 {
        if let Some(v) = f().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("never happened: {what}");
}

fn finished_run(run: &str, status: &str, extra: Value) -> Value {
    let mut e = json!({"id": format!("{run}-end"), "type": "run.finished", "flow": "coze_demo", "run_id": run,
        "ts": "2026-11-28T09:00:05+08:00", "status": status});
    e.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    e
}

fn failed_node(run: &str, error: &str) -> Value {
    json!({"id": format!("{run}-llm"), "type": "node.finished", "flow": "coze_demo", "run_id": run, "node": "write_script",
        "kind": "llm", "started_at": "2026-11-28T09:00:01+08:00", "duration_ms": 2300, "status": "failed", "error": error})
}

async fn alerts(app: &TestApp) -> Vec<Value> {
    app.get("/api/v1/alerts", READ).await.1["alerts"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ingested_failure_alerts_and_its_flow_succeeding_again_resolves_it() {
    let fake = FakeFeishu::start_with(None, Some(KEYWORD)).await;
    let channel = format!(
        "channels:\n  ops:\n    type: feishu\n    webhook: \"{}\"\n    keyword: {KEYWORD}\nalerting:\n  group_interval: 0s\n",
        fake.url
    );
    let app = spawn_app(&channel, &[]).await;
    let (code, r) = app
        .post(
            "/api/v1/events",
            INGEST,
            &json!([failed_node("r1", "timeout of 10000ms exceeded"), finished_run("r1", "failed", json!({"error_kind": "timeout", "failed_node": "write_script"}))]),
        )
        .await;
    assert_eq!((code, r["accepted"].as_u64()), (200, Some(2)), "{r}");
    let a = alerts(&app).await;
    assert_eq!(a.len(), 1, "{a:?}");
    assert_eq!((a[0]["flow"].as_str(), a[0]["node"].as_str(), a[0]["error_kind"].as_str()), (Some("coze_demo"), Some("write_script"), Some("timeout")));
    // (The channel also gets the daily report, which serve sends when it starts.)
    let said = |what: &'static str| {
        let fake = &fake;
        async move || fake.messages().iter().map(|m| m.to_string()).find(|m| m.contains("coze_demo") && m.contains(what))
    };
    let text = until("the alert reaches Feishu", said("write_script")).await;
    assert!(text.contains("timeout"), "{text}");

    let (_, r) = app.post("/api/v1/events", INGEST, &json!(finished_run("r2", "succeeded", json!({})))).await;
    assert_eq!(r["accepted"], 1, "{r}");
    assert_eq!(alerts(&app).await[0]["status"], "resolved");
    until("the resolved message", said("恢复")).await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_without_error_kind_shows_its_node_and_message_and_counts_in_the_causes() {
    let app = spawn_app("", &[]).await;
    let batch = json!([
        failed_node("odd", "the reviewer rejected the script"),
        finished_run("odd", "failed", json!({})),
        failed_node("slow", "timeout of 10000ms exceeded"),
        finished_run("slow", "failed", json!({})),
    ]);
    let (_, r) = app.post("/api/v1/events", INGEST, &batch).await;
    assert_eq!(r["accepted"], 4, "{r}");
    let (_, odd) = app.get("/api/v1/runs/odd", READ).await;
    assert_eq!(
        (odd["failed_node"].as_str(), odd["error_message"].as_str(), odd["error_kind"].as_str()),
        (Some("write_script"), Some("the reviewer rejected the script"), None),
        "{odd}"
    );
    let (_, slow) = app.get("/api/v1/runs/slow", READ).await;
    assert_eq!((slow["failed_node"].as_str(), slow["error_kind"].as_str()), (Some("write_script"), Some("timeout")), "classified from the message: {slow}");

    // Every failure is in the cause table: the one nothing classifies as `unknown`.
    let stats = crate::support::run_in(app.project.path(), &["stats", "--since", "3000d", "--format", "json"]);
    let stats: Value = serde_json::from_slice(&stats.stdout).unwrap_or_else(|e| panic!("{e}: {}{}", stdout(&stats), stderr(&stats)));
    let kinds = &stats["flows"][0]["failures_by_kind"];
    assert_eq!((kinds["unknown"].as_u64(), kinds["timeout"].as_u64()), (Some(1), Some(1)), "{stats}");

    // `show`: the failed node and message; `#` counts attempts; no `kind:` with nothing after it.
    let o = crate::support::run_in(app.project.path(), &["show", "odd"]);
    let out = stdout(&o);
    assert!(out.contains("write_script") && out.contains("the reviewer rejected the script"), "{out}");
    let row = out.lines().find(|l| l.trim_start().starts_with("1 ") && l.contains("write_script")).unwrap_or_else(|| panic!("{out}"));
    assert!(!row.contains("1764"), "`#` is the attempt's place, not a time: {row}");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timings_that_disagree_are_reconciled_and_said_so() {
    let app = spawn_app("", &[]).await;
    let ev = json!({"id": "t1-llm", "type": "node.finished", "flow": "coze_demo", "run_id": "t1", "node": "llm",
        "started_at": "2026-11-28T09:00:00Z", "ended_at": "2026-11-28T09:00:05Z", "duration_ms": 0, "status": "succeeded"});
    let (_, r) = app.post("/api/v1/events", INGEST, &ev).await;
    assert_eq!(r["accepted"], 1, "{r}");
    assert!(r["results"][0]["warning"].as_str().unwrap_or("").contains("5000 ms"), "{r}");
    let (_, run) = app.get("/api/v1/runs/t1", READ).await;
    assert_eq!(run["attempts"][0]["duration_ms"], 5000, "{run}");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_goes_silent_is_interrupted_and_alerted() {
    let text = config("").replace("  watch_interval: 0s\n", "  watch_interval: 0s\n  external_silence: 300ms\n");
    let app = spawn_app_with(&text, &[]).await;
    let ev = json!({"id": "s1-start", "type": "run.started", "flow": "coze_demo", "run_id": "s1", "ts": jiff::Timestamp::now().as_millisecond()});
    let (_, r) = app.post("/api/v1/events", INGEST, &ev).await;
    assert_eq!(r["accepted"], 1, "{r}");
    let run = until("the silent run is interrupted", async || {
        let (_, run) = app.get("/api/v1/runs/s1", READ).await;
        (run["status"] == "interrupted").then_some(run)
    })
    .await;
    assert!(run["error_message"].as_str().unwrap_or("").contains("no event"), "{run}");
    let a = alerts(&app).await;
    assert!(a.iter().any(|a| a["flow"] == "coze_demo" && a["error_kind"] == "interrupted"), "{a:?}");
    app.shutdown().await;
}

/// `flowguard relay`: events posted while the server is away wait on disk (a new relay process
/// finds them) and reach the server once it answers; a batch the server refuses is set aside.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_keeps_events_while_the_server_is_away_and_forwards_them_later() {
    use flowguard::relay::{Forwarded, Relay};
    let app = spawn_app("", &[]).await;
    let port = app.base.rsplit(':').next().unwrap();
    let proxy = crate::support::proxy::Proxy::start(&format!("127.0.0.1:{port}"));
    let dir = tempfile::tempdir().unwrap();
    let to = format!("http://127.0.0.1:{}", proxy.port);
    proxy.cut();

    let relay = Relay::new(dir.path(), &to, Some(INGEST.into())).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let local = format!("http://{}/api/v1/events", listener.local_addr().unwrap());
    let router = relay.router();
    tokio::spawn(async move { axum::serve(listener, router).await.ok() });
    let http = reqwest::Client::new();
    let post = |body: String| http.post(&local).bearer_auth(INGEST).header("content-type", "application/json").body(body).send();
    let r = post(json!([failed_node("away", "boom"), finished_run("away", "failed", json!({}))]).to_string()).await.unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(post("{\"events\": [".into()).await.unwrap().status(), 400, "a broken body is refused at once");
    let r = http.post(&local).header("content-type", "application/json").body("[]").send().await.unwrap();
    assert_eq!(r.status(), 401, "the relay asks for the same token as the server");

    // The server is away: nothing is lost, and a relay started again finds the batch.
    assert_eq!(relay.forward_once().await.unwrap(), Forwarded { sent: 0, rejected: 0, waiting: 1 });
    drop(relay);
    let relay = Relay::new(dir.path(), &to, Some(INGEST.into())).unwrap();
    assert_eq!(relay.pending().unwrap().len(), 1);

    proxy.restore();
    assert_eq!(relay.forward_once().await.unwrap(), Forwarded { sent: 1, rejected: 0, waiting: 0 });
    let (_, run) = app.get("/api/v1/runs/away", READ).await;
    assert_eq!((run["status"].as_str(), run["failed_node"].as_str()), (Some("failed"), Some("write_script")), "{run}");

    // A batch the server refuses (here: a wrong token) is set aside with its answer, not retried.
    let wrong = Relay::new(dir.path(), &to, Some("wrong-token-0123456789".into())).unwrap();
    wrong.keep(b"[]").unwrap();
    assert_eq!(wrong.forward_once().await.unwrap(), Forwarded { sent: 0, rejected: 1, waiting: 0 });
    assert_eq!(std::fs::read_dir(dir.path().join("rejected")).unwrap().count(), 2, "the batch and the server's answer");
    app.shutdown().await;
}
