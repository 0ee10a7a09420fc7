//! Flows that run elsewhere (Coze, Dify, n8n) as flowguard sees them through `POST /api/v1/events`:
//! their failures alert like native ones, a failure sent without an error kind is explained and
//! counted, inconsistent timings are reconciled, a run that goes silent ends `interrupted`.

use crate::serve::{INGEST, READ, TestApp, config, spawn_app, spawn_app_with};
use crate::support::db::{TestDb, backends};
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
            &json!([
                failed_node("r1", "timeout of 10000ms exceeded"),
                finished_run("r1", "failed", json!({"error_kind": "timeout", "failed_node": "write_script"}))
            ]),
        )
        .await;
    assert_eq!((code, r["accepted"].as_u64()), (200, Some(2)), "{r}");
    let a = alerts(&app).await;
    assert_eq!(a.len(), 1, "{a:?}");
    assert_eq!(
        (a[0]["flow"].as_str(), a[0]["node"].as_str(), a[0]["error_kind"].as_str()),
        (Some("coze_demo"), Some("write_script"), Some("timeout"))
    );
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
    assert_eq!(
        (slow["failed_node"].as_str(), slow["error_kind"].as_str()),
        (Some("write_script"), Some("timeout")),
        "classified from the message: {slow}"
    );

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
    // The alert is raised just after the run's end is recorded.
    until("the interrupted run is alerted", async || {
        alerts(&app).await.into_iter().find(|a| a["flow"] == "coze_demo" && a["error_kind"] == "interrupted")
    })
    .await;
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

/// The n8n expression fixture: renders a `jsonBody` as n8n does for one execution. Every
/// `{{ JSON.stringify(EXPR) }}` becomes the JSON text of `values[EXPR]`; an expression the table
/// does not know fails the test (the guide's snippets use only `JSON.stringify(…)`, so whatever a
/// value holds, the body stays JSON).
fn n8n_render(body: &str, values: &[(&str, Value)]) -> String {
    let body = body.strip_prefix('=').expect("an n8n expression starts with `=`");
    let re = regex::Regex::new(r"\{\{\s*(.*?)\s*\}\}").unwrap();
    re.replace_all(body, |c: &regex::Captures| {
        let expr = &c[1];
        let inner =
            expr.strip_prefix("JSON.stringify(").and_then(|e| e.strip_suffix(')')).unwrap_or_else(|| panic!("not JSON.stringify: {expr}"));
        let v = values.iter().find(|(k, _)| *k == inner).unwrap_or_else(|| panic!("the fixture does not know `{inner}`"));
        v.1.to_string()
    })
    .into_owned()
}

fn n8n_node<'a>(workflow: &'a Value, name: &str) -> &'a Value {
    workflow["nodes"].as_array().unwrap().iter().find(|n| n["name"] == name).unwrap_or_else(|| panic!("no node {name}"))
}

/// docs/ingestion.md's n8n snippets, as kept in examples/ingest: authenticated by a Header Auth
/// credential (no `$env`), never failing the monitored flow, and their bodies — rendered for an
/// execution whose error message holds quotes and a new line — accepted by the API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_n8n_guide_snippets_post_what_the_api_accepts() {
    let app = spawn_app("", &[]).await;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/ingest");
    let report: Value = serde_json::from_str(&std::fs::read_to_string(root.join("n8n-report.json")).unwrap()).unwrap();
    let errors: Value = serde_json::from_str(&std::fs::read_to_string(root.join("n8n-error-workflow.json")).unwrap()).unwrap();
    let t0 = 1_764_300_000_000i64;
    let flow = "$workflow.name.replace(/[^A-Za-z0-9_-]/g, '_')";
    let common = |exec: &str| {
        vec![
            ("'n8n-prod-' + $execution.id + '-write_script'", json!(format!("n8n-prod-{exec}-write_script"))),
            ("'n8n-prod-' + $execution.id + '-end'", json!(format!("n8n-prod-{exec}-end"))),
            ("'n8n-prod-' + $execution.id", json!(format!("n8n-prod-{exec}"))),
            (flow, json!("Douyin_script")),
            ("$('flowguard t0').item.json.flowguard_t0", json!(t0)),
            ("$now.toMillis()", json!(t0 + 2300)),
        ]
    };
    let mut ok = common("231");
    ok.push(("$('OpenAI').item.json.usage?.input_tokens ?? $('OpenAI').item.json.usage?.prompt_tokens ?? null", json!(812)));
    ok.push(("$('OpenAI').item.json.usage?.output_tokens ?? $('OpenAI').item.json.usage?.completion_tokens ?? null", json!(355)));
    let mut failed = common("232");
    failed.push(("$json.error?.message ?? String($json.error)", json!("Rate limit reached for \"gpt-4o-mini\"\nretry later")));
    failed.push(("Number($json.error?.httpCode) || null", json!(429)));
    let error_workflow = vec![
        ("'n8n-prod-' + $json.execution.id + '-failed'", json!("n8n-prod-233-failed")),
        ("$json.workflow.name.replace(/[^A-Za-z0-9_-]/g, '_')", json!("Douyin_script")),
        ("'n8n-prod-' + $json.execution.id", json!("n8n-prod-233")),
        ("$now.toMillis()", json!(t0 + 9000)),
        ("$json.execution.lastNodeExecuted ?? null", json!("Publish")),
        ("$json.execution.error?.message ?? null", json!("Request failed with status code 503")),
    ];
    for (wf, node, values) in [
        (&report, "flowguard report", ok),
        (&report, "flowguard report error", failed),
        (&errors, "flowguard report failure", error_workflow),
    ] {
        let n = n8n_node(wf, node);
        assert_eq!(n["onError"], "continueRegularOutput", "{node}: reporting never fails the monitored flow");
        assert_eq!(
            (n["parameters"]["authentication"].as_str(), n["parameters"]["genericAuthType"].as_str()),
            (Some("genericCredentialType"), Some("httpHeaderAuth"))
        );
        let body = n["parameters"]["jsonBody"].as_str().unwrap();
        assert!(!body.contains("$env"), "n8n 2.x blocks $env in nodes");
        let rendered: Value = serde_json::from_str(&n8n_render(body, &values)).unwrap_or_else(|e| panic!("{node}: not JSON: {e}"));
        let (code, r) = app.post("/api/v1/events", INGEST, &rendered).await;
        assert_eq!((code, r["rejected"].as_u64()), (200, Some(0)), "{node}: {r}");
    }
    let (_, run) = app.get("/api/v1/runs/n8n-prod-231", READ).await;
    assert_eq!(
        (run["status"].as_str(), run["attempts"][0]["duration_ms"].as_i64(), run["attempts"][0]["tokens_in"].as_i64()),
        (Some("succeeded"), Some(2300), Some(812)),
        "{run}"
    );
    let (_, run) = app.get("/api/v1/runs/n8n-prod-232", READ).await;
    assert_eq!(
        (run["error_kind"].as_str(), run["failed_node"].as_str()),
        (Some("rate_limited"), Some("write_script")),
        "classified from the status: {run}"
    );
    let (_, run) = app.get("/api/v1/runs/n8n-prod-233", READ).await;
    assert_eq!(
        (run["flow"].as_str(), run["error_kind"].as_str(), run["failed_node"].as_str()),
        (Some("Douyin_script"), Some("upstream_5xx"), Some("Publish")),
        "{run}"
    );
    app.shutdown().await;
}

/// docs/ingestion.md's Dify template, as kept in examples/ingest, rendered as Dify's Jinja2
/// Template node renders it, for a success and a failure whose texts hold quotes and new lines.
/// Runs a Coze Code node of the guide (`examples/ingest/FILE`, JavaScript) as Coze does: its
/// `main({ params })` called with the node's inputs, the promise it returns awaited. Its output.
fn coze_code_node(file: &str, params: &Value) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/ingest").join(file);
    let source = std::fs::read_to_string(path).unwrap();
    let rt = rquickjs::Runtime::new().unwrap();
    let ctx = rquickjs::Context::full(&rt).unwrap();
    ctx.with(|ctx| {
        ctx.eval::<(), _>(source.as_str()).unwrap_or_else(|e| panic!("{file} does not load: {e}"));
        let call = format!(
            "var __out; main({{ params: {params} }}).then(r => {{ __out = JSON.stringify(r); }}, e => {{ __out = 'ERROR ' + e; }});"
        );
        ctx.eval::<(), _>(call).unwrap();
    });
    while rt.execute_pending_job().unwrap_or_else(|_| panic!("{file}: a job threw")) {}
    let out: String = ctx.with(|ctx| ctx.globals().get("__out")).unwrap_or_else(|e| panic!("{file} returned nothing: {e}"));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{file}: {out} ({e})"))
}

/// The Coze guide: the start node's run id and time, then the report node's `body` for a
/// success (an output with quotes and new lines) and for a failure branch (Coze's `errorBody`),
/// posted as the HTTP node sends `{{body}}`: accepted, timed and classified as the guide says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_coze_guide_code_nodes_produce_what_the_api_accepts() {
    let app = spawn_app("", &[]).await;
    let first = coze_code_node("coze-start.js", &json!({}));
    let second = coze_code_node("coze-start.js", &json!({}));
    assert_ne!(first["run_id"], second["run_id"], "run ids are unique");
    let cases = [
        (&first, json!({"output": "标题：\"露营\"\n正文……", "errorBody": ""})),
        (
            &second,
            json!({"output": "", "errorBody": {"errorCode": "720701013", "errorMessage": "Request timed out after 60s: \"upstream\""}}),
        ),
    ];
    let mut ends = Vec::new();
    for (start, extra) in &cases {
        let t0 = start["now"].as_i64().expect("`now` is a number");
        let mut params = json!({"run_id": start["run_id"], "t0": t0});
        params.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        let out = coze_code_node("coze-report.js", &params);
        let text = out["body"].as_str().expect("`body` is a string");
        let body: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}):\n{text}"));
        ends.push(body["events"][0]["ended_at"].as_i64().unwrap() - t0);
        let (code, r) = app.post("/api/v1/events", INGEST, &body).await;
        assert_eq!((code, r["rejected"].as_u64()), (200, Some(0)), "{r}");
    }
    let (_, ok) = app.get(&format!("/api/v1/runs/{}", first["run_id"].as_str().unwrap()), READ).await;
    assert_eq!(ok["status"], "succeeded", "{ok}");
    assert_eq!(ok["attempts"][0]["duration_ms"].as_i64(), Some(ends[0]), "{ok}");
    assert!(ok["attempts"][0]["output"].to_string().contains("露营"), "{ok}");
    let (_, failed) = app.get(&format!("/api/v1/runs/{}", second["run_id"].as_str().unwrap()), READ).await;
    assert_eq!((failed["status"].as_str(), failed["error_kind"].as_str()), (Some("failed"), Some("timeout")), "{failed}");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dify_guide_template_renders_what_the_api_accepts() {
    let app = spawn_app("", &[]).await;
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/ingest/dify-body.jinja2");
    let source = std::fs::read_to_string(path).unwrap();
    let mut env = minijinja::Environment::new();
    env.add_template("body", &source).unwrap();
    let t0 = 1_764_300_000_000i64;
    let cases = [
        json!({"run_id": "d-1", "t0": t0, "t1": t0 + 1800, "text": "标题：\"露营\"\n正文……", "error": "", "tokens_in": 120, "tokens_out": 340}),
        json!({"run_id": "d-2", "t0": t0, "t1": t0 + 60000, "text": "", "error": "Request timed out after 60s: \"upstream\"", "tokens_in": null, "tokens_out": null}),
    ];
    for vars in &cases {
        let text = env.get_template("body").unwrap().render(flowguard::flow::template::to_value(vars)).unwrap();
        let body: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}):\n{text}"));
        let (code, r) = app.post("/api/v1/events", INGEST, &body).await;
        assert_eq!((code, r["rejected"].as_u64()), (200, Some(0)), "{r}");
    }
    let (_, ok) = app.get("/api/v1/runs/d-1", READ).await;
    assert_eq!((ok["status"].as_str(), ok["attempts"][0]["duration_ms"].as_i64()), (Some("succeeded"), Some(1800)), "{ok}");
    let (_, failed) = app.get("/api/v1/runs/d-2", READ).await;
    assert_eq!((failed["status"].as_str(), failed["error_kind"].as_str()), (Some("failed"), Some("timeout")), "{failed}");
    app.shutdown().await;
}

// Two servers on one database receive the events of the same external runs at once (a load
// balancer in front of two `serve`s): one gets the start and the first node, the other the second
// node and the end. Every run ends as its last event says, with both attempts.
backends! {
    networked async fn two_servers_ingesting_one_run_at_once_merge_every_event(db: TestDb) {
        let text = config("").replace("sqlite://flowguard.db", db.url());
        let (a, b) = (spawn_app_with(&text, &[]).await, spawn_app_with(&text, &[]).await);
        let t0 = jiff::Timestamp::now().as_millisecond() - 60_000;
        let mut posts = tokio::task::JoinSet::new();
        for k in 0..40 {
            let run = format!("lb-{k}");
            let first = json!({"events": [
                {"id": format!("{run}-start"), "type": "run.started", "flow": "coze_lb", "run_id": run, "ts": t0},
                {"id": format!("{run}-n1"), "type": "node.finished", "flow": "coze_lb", "run_id": run, "node": "n1",
                 "started_at": t0, "ended_at": t0 + 100, "status": "succeeded"},
            ]});
            let second = json!({"events": [
                {"id": format!("{run}-n2"), "type": "node.finished", "flow": "coze_lb", "run_id": run, "node": "n2",
                 "started_at": t0 + 100, "ended_at": t0 + 300, "status": "failed", "error_kind": "upstream_5xx"},
                {"id": format!("{run}-end"), "type": "run.finished", "flow": "coze_lb", "run_id": run, "ts": t0 + 300,
                 "status": "failed", "error_kind": "upstream_5xx", "failed_node": "n2"},
            ]});
            for (app, body) in [(&a, first), (&b, second)] {
                let (http, url) = (app.http.clone(), format!("{}/api/v1/events", app.base));
                posts.spawn(async move {
                    let r = http.post(url).bearer_auth(INGEST).json(&body).send().await.expect("POST");
                    assert_eq!(r.status().as_u16(), 200, "{}", r.text().await.unwrap_or_default());
                });
            }
        }
        while let Some(r) = posts.join_next().await {
            r.unwrap();
        }
        for k in 0..40 {
            let (_, run) = a.get(&format!("/api/v1/runs/lb-{k}"), READ).await;
            assert_eq!(run["status"], "failed", "run lb-{k} lost its end: {run}");
            assert_eq!(run["attempts"].as_array().map(Vec::len), Some(2), "{run}");
        }
        a.shutdown().await;
        b.shutdown().await;
    }
}

/// The app's SQLite database, opened beside it.
async fn sqlite_of(app: &TestApp) -> flowguard::store::Pool {
    let url = format!("sqlite://{}", app.project.path().join("flowguard.db").display());
    flowguard::store::Pool::connect(&url, &Default::default()).await.expect("open the app's database")
}

async fn sum(db: &flowguard::store::Pool, sql: &str) -> i64 {
    let rows = db.fetch(sql, &[], &[flowguard::store::Ty::I64]).await.expect(sql);
    rows.first().and_then(|r| r[0].i64()).unwrap_or(0)
}

// A batch that ends a run commits its events, the run and the run's report rollups together:
// when the rollups cannot be written, nothing of the batch is, and the batch sent again counts once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ended_runs_rollups_commit_with_its_events_or_nothing_of_the_batch_does() {
    let app = spawn_app("", &[]).await;
    let db = sqlite_of(&app).await;
    db.exec("CREATE TRIGGER no_rollups BEFORE INSERT ON rollup_runs BEGIN SELECT RAISE(ABORT, 'rollups refused'); END", &[])
        .await
        .expect("trigger");
    let batch = json!([
        {"id": "at-n1", "type": "node.finished", "flow": "coze_demo", "run_id": "at-1", "node": "write_script",
         "started_at": "2026-11-28T09:00:01+08:00", "duration_ms": 2300, "status": "succeeded"},
        finished_run("at-1", "succeeded", json!({})),
    ]);
    let (code, r) = app.post("/api/v1/events", INGEST, &batch).await;
    assert!(code >= 500, "the rollups could not be written, yet the batch was acknowledged: {code} {r}");
    let (code, run) = app.get("/api/v1/runs/at-1", READ).await;
    assert_eq!(code, 404, "the run was committed without its rollups: {run}");
    db.exec("DROP TRIGGER no_rollups", &[]).await.expect("drop trigger");
    let (code, r) = app.post("/api/v1/events", INGEST, &batch).await;
    assert_eq!((code, r["accepted"].as_u64(), r["duplicates"].as_u64()), (200, Some(2), Some(0)), "{r}");
    assert_eq!(sum(&db, "SELECT SUM(runs) FROM rollup_runs WHERE flow = 'coze_demo'").await, 1);
    assert_eq!(sum(&db, "SELECT SUM(attempts) FROM rollup_nodes WHERE flow = 'coze_demo'").await, 1);
    db.close().await;
    app.shutdown().await;
}

// Requests that arrive together are merged together: an event sent in several of them at once is
// counted once, every other event of each is kept, and the run's rollups add up exactly, the
// attempts that come after its end included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_batches_sharing_events_count_each_event_once() {
    let app = spawn_app("", &[]).await;
    let t0 = jiff::Timestamp::now().as_millisecond() - 60_000;
    let mut posts = tokio::task::JoinSet::new();
    for k in 0..12 {
        let body = json!([
            {"id": "cc-start", "type": "run.started", "flow": "coze_cc", "run_id": "cc-1", "ts": t0},
            {"id": format!("cc-n{k}"), "type": "node.finished", "flow": "coze_cc", "run_id": "cc-1", "node": format!("n{k}"),
             "started_at": t0 + k * 10, "ended_at": t0 + k * 10 + 5, "status": "succeeded"},
            {"id": "cc-end", "type": "run.finished", "flow": "coze_cc", "run_id": "cc-1", "ts": t0 + 1000, "status": "succeeded"},
        ]);
        let (http, url) = (app.http.clone(), format!("{}/api/v1/events", app.base));
        posts.spawn(async move {
            let r = http.post(url).bearer_auth(INGEST).json(&body).send().await.expect("POST");
            assert_eq!(r.status().as_u16(), 200);
            let v: Value = r.json().await.expect("JSON");
            (v["accepted"].as_u64().unwrap_or(0), v["duplicates"].as_u64().unwrap_or(0))
        });
    }
    let (mut accepted, mut duplicates) = (0, 0);
    while let Some(r) = posts.join_next().await {
        let (a, d) = r.expect("client");
        accepted += a;
        duplicates += d;
    }
    assert_eq!((accepted, duplicates), (12 + 2, 2 * 11));
    let (_, run) = app.get("/api/v1/runs/cc-1", READ).await;
    assert_eq!((run["status"].as_str(), run["attempts"].as_array().map(Vec::len)), (Some("succeeded"), Some(12)), "{run}");
    let db = sqlite_of(&app).await;
    assert_eq!(sum(&db, "SELECT SUM(runs) FROM rollup_runs WHERE flow = 'coze_cc'").await, 1);
    assert_eq!(sum(&db, "SELECT SUM(attempts) FROM rollup_nodes WHERE flow = 'coze_cc'").await, 12);
    assert_eq!(sum(&db, "SELECT COUNT(*) FROM node_attempts WHERE run_id = 'cc-1' AND rolled_up = 0").await, 0);
    db.close().await;
    app.shutdown().await;
}

// Requests merged together whose write the database refuses because of one of them: the others
// are merged again alone and recorded, the one refused answers an error and leaves nothing, and
// the runs of those still being committed when the next requests came are not taken for new.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_the_database_refuses_fails_alone_among_those_merged_with_it() {
    let app = spawn_app("", &[]).await;
    let db = sqlite_of(&app).await;
    db.exec(
        "CREATE TRIGGER no_bad_rollups BEFORE INSERT ON rollup_runs WHEN NEW.flow = 'coze_bad' BEGIN SELECT RAISE(ABORT, 'refused'); END",
        &[],
    )
    .await
    .expect("trigger");
    let t0 = jiff::Timestamp::now().as_millisecond() - 60_000;
    let mut posts = tokio::task::JoinSet::new();
    for k in 0..24 {
        let (flow, run) = if k % 6 == 5 { ("coze_bad", format!("bad-{k}")) } else { ("coze_good", format!("good-{}", k % 3)) };
        let body = json!([
            {"id": format!("{run}-n{k}"), "type": "node.finished", "flow": flow, "run_id": run, "node": format!("n{k}"),
             "started_at": t0 + k, "ended_at": t0 + k + 5, "status": "succeeded"},
            {"id": format!("{run}-end{k}"), "type": "run.finished", "flow": flow, "run_id": run, "ts": t0 + 1000, "status": "succeeded"},
        ]);
        let (http, url) = (app.http.clone(), format!("{}/api/v1/events", app.base));
        posts.spawn(async move {
            let r = http.post(url).bearer_auth(INGEST).json(&body).send().await.expect("POST");
            (flow, r.status().as_u16())
        });
    }
    while let Some(r) = posts.join_next().await {
        match r.expect("client") {
            ("coze_bad", code) => assert!(code >= 500, "a refused request was acknowledged: {code}"),
            (_, code) => assert_eq!(code, 200, "a request merged with a refused one failed with it"),
        }
    }
    for i in 0..3 {
        let sent = (0..24).filter(|k| k % 3 == i && k % 6 != 5).count();
        let (_, run) = app.get(&format!("/api/v1/runs/good-{i}"), READ).await;
        assert_eq!(run["attempts"].as_array().map(Vec::len), Some(sent), "good-{i}: {run}");
    }
    assert_eq!(sum(&db, "SELECT COUNT(*) FROM runs WHERE flow = 'coze_bad'").await, 0);
    assert_eq!(sum(&db, "SELECT SUM(attempts) FROM rollup_nodes WHERE flow = 'coze_good'").await, 20);
    assert_eq!(sum(&db, "SELECT SUM(runs) FROM rollup_runs WHERE flow = 'coze_good'").await, 3);
    db.close().await;
    app.shutdown().await;
}
