//! Error handling as the seed teaches it: try/catch (`goto`), default values, auto-repair with the
//! violations fed back, model fallback, the human queue, blocking, `expect` checks, policy tables,
//! token refresh, cancel and rerun.

use crate::support::fake_openai::{FakeOpenAi, Reply};
use crate::support::harness::{harness, openai_config};
use crate::support::{Project, bin, stderr, stdout};
use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use flowguard::engine::RunRequest;
use flowguard::vocab::{AttemptStatus, ErrorKind, RunStatus, Severity};
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const GOOD: &str = r##"{"title":"露营","hook":"别划走","body":"今天聊聊露营装备。","hashtags":["#露营"]}"##;
const BANNED: &str = r##"{"title":"露营","hook":"别划走","body":"国家级露营装备，亲测好用。","hashtags":["#露营"]}"##;

fn statuses(a: &[flowguard::store::AttemptRecord]) -> Vec<(String, AttemptStatus, Option<String>)> {
    a.iter().map(|a| (a.node_id.clone(), a.status, a.action.clone())).collect()
}

#[tokio::test]
async fn an_empty_knowledge_base_continues_with_the_default_value() {
    let cfg = "endpoints:\n  kb:\n    simulate: { body: { topics: [] } }\n";
    let flow = r#"name: f
nodes:
  - id: topic
    kind: http
    endpoint: kb
    expect: [{ non_empty: /topics, kind: data_empty }]
    default: { topics: ["{{ input.cat }}：默认选题"] }
  - id: use
    kind: template
    text: "{{ nodes.topic.topics[0] }}"
inputs: { cat: 美食 }
"#;
    let h = harness(cfg, flow).await;
    let o = h.run().await;
    assert_eq!(o.status, RunStatus::Recovered);
    assert_eq!(o.outputs["use"], "美食：默认选题");
    let a = h.attempts(&o.run_id).await;
    assert_eq!(
        statuses(&a)[..2],
        [
            ("topic".into(), AttemptStatus::Failed, Some("fallback".into())),
            ("topic".into(), AttemptStatus::Defaulted, Some("continue".into()))
        ]
    );
    assert_eq!(a[1].error_kind.as_deref(), Some("data_empty"));
}

#[tokio::test]
async fn a_catch_node_sees_the_error_and_the_run_is_recovered() {
    let cfg = "models:\n  m:\n    provider: simulated\n    simulate: { faults: { quota: 1.0 } }\n";
    let flow = r#"name: f
nodes:
  - id: script
    kind: llm
    model: m
    prompt: x
    on_error: { action: goto, node: alert }
  - id: publish
    kind: template
    text: never
  - id: alert
    kind: template
    text: "[告警] 流程失败 步骤: {{ error.node }} 原因: {{ error.kind }}"
"#;
    let h = harness(cfg, flow).await;
    let o = h.run().await;
    assert_eq!(o.status, RunStatus::Recovered);
    assert_eq!(o.outputs["alert"], "[告警] 流程失败 步骤: script 原因: quota_exhausted");
    assert_eq!((o.failed_node.as_deref(), o.error_kind), (Some("script"), Some(ErrorKind::QuotaExhausted)));
    let a = h.attempts(&o.run_id).await;
    assert_eq!(
        statuses(&a),
        vec![
            ("script".into(), AttemptStatus::Failed, Some("goto".into())),
            ("publish".into(), AttemptStatus::Skipped, Some("skip".into())),
            ("alert".into(), AttemptStatus::Succeeded, Some("continue".into()))
        ]
    );
}

fn qc_flow(extra: &str) -> String {
    format!(
        r#"name: f
nodes:
  - id: script
    kind: llm
    model: m
    prompt: "主题: 露营"
    json: true
  - id: qc
    kind: quality_check
    target: "{{{{ nodes.script }}}}"
    required: [title, body]
    words: [国家级]
{extra}"#
    )
}

#[tokio::test]
async fn a_rejected_script_is_repaired_with_the_violations_fed_back() {
    let fake = FakeOpenAi::start(vec![Reply::Content(BANNED.into()), Reply::Content(GOOD.into())]).await;
    let h = harness(&openai_config(&fake.base_url), &qc_flow("")).await;
    let o = h.run().await;
    assert_eq!(o.status, RunStatus::Recovered, "{:?}", o.error_message);
    assert_eq!(o.outputs["script"]["body"], "今天聊聊露营装备。");
    let a = h.attempts(&o.run_id).await;
    assert_eq!(
        statuses(&a),
        vec![
            ("script".into(), AttemptStatus::Succeeded, Some("continue".into())),
            ("qc".into(), AttemptStatus::Failed, Some("repair".into())),
            ("script".into(), AttemptStatus::Succeeded, Some("continue".into())),
            ("qc".into(), AttemptStatus::Succeeded, Some("continue".into()))
        ]
    );
    let second = fake.requests()[1]["messages"][1]["content"].as_str().unwrap().to_owned();
    assert!(second.contains("【修正要求】") && second.contains("sensitive word `国家级`"), "{second}");
    let first = fake.requests()[0]["messages"][1]["content"].as_str().unwrap().to_owned();
    assert!(!first.contains("修正"));
    // The repaired attempt records the prompt the model received, feedback included.
    let sent = a[2].input.clone().unwrap_or_default();
    assert!(sent.contains("【修正要求】") && sent.contains("sensitive word `国家级`"), "recorded input: {sent}");
}

#[tokio::test]
async fn repair_gives_up_at_its_cap_with_loop_limit() {
    let fake = FakeOpenAi::start(vec![Reply::Content(BANNED.into())]).await;
    let h = harness(&openai_config(&fake.base_url), &qc_flow("    on_error: { action: repair, target: script, max: 1 }\n")).await;
    let o = h.run().await;
    assert_eq!((o.status, o.error_kind), (RunStatus::Failed, Some(ErrorKind::LoopLimit)));
    assert_eq!(fake.requests().len(), 2, "one repair, then it gives up");
    assert_eq!(o.severity, Some(Severity::Medium));
}

#[tokio::test]
async fn expect_checks_turn_useless_answers_into_failures() {
    let fake = FakeOpenAi::start(vec![Reply::Content(r#"{"score": 0.2}"#.into()), Reply::Content(r#"{"score": 0.9}"#.into())]).await;
    let flow = "name: f\nnodes:\n  - id: s\n    kind: llm\n    model: m\n    prompt: x\n    json: true\n    retry: { policy: fixed, max_attempts: 2, delay: 1s }\n    expect:\n      - present: /score\n      - if: 'output.score >= 0.5'\n        message: score too low\n";
    let h = harness(&openai_config(&fake.base_url), flow).await;
    let o = h.run().await;
    assert_eq!(o.status, RunStatus::Recovered);
    let a = h.attempts(&o.run_id).await;
    assert_eq!(a[0].error_kind.as_deref(), Some("expectation_failed"));
    assert!(a[0].error_message.as_deref().unwrap().starts_with("score too low"));
}

#[tokio::test]
async fn an_explicit_fallback_model_walks_the_chain() {
    let cfg = "models:\n  a:\n    provider: simulated\n    simulate: { latency: 1ms }\n    fallback: [b]\n  b:\n    provider: simulated\n    simulate: { latency: 1ms }\n";
    let flow = "name: f\nnodes:\n  - id: s\n    kind: llm\n    model: a\n    prompt: x\n    retry: { policy: none }\n    expect: [{ if: \"'never' in output\" }]\n    on_error: fallback_model\n";
    let h = harness(cfg, flow).await;
    let o = h.run().await;
    assert_eq!(o.error_kind, Some(ErrorKind::NoHealthyModel));
    let models: Vec<_> = h.attempts(&o.run_id).await.iter().map(|a| a.model.clone().unwrap()).collect();
    assert_eq!(models, vec!["simulated:a", "simulated:b"]);
}

#[tokio::test]
async fn policy_tables_set_severity_and_action_per_flow_and_per_node() {
    let cfg = "models:\n  m:\n    provider: simulated\n    simulate: { latency: 10s }\n";
    let flow = "name: f\npolicy:\n  timeout: { severity: high, action: abort }\nnodes:\n  - id: s\n    kind: llm\n    model: m\n    prompt: x\n    timeout: 1s\n    retry: { policy: none }\n";
    let h = harness(cfg, flow).await;
    let o = h.run().await;
    assert_eq!((o.status, o.severity), (RunStatus::Failed, Some(Severity::High)));
    let node_level = flow.replace(
        "    retry: { policy: none }\n",
        "    retry: { policy: none }\n    policy:\n      timeout: { severity: low, action: manual }\n",
    );
    let h = harness(cfg, &node_level).await;
    let o = h.run().await;
    assert_eq!((o.status, o.severity), (RunStatus::WaitingManual, Some(Severity::Low)));
}

#[tokio::test]
async fn a_parked_run_keeps_its_outputs_and_resumes_from_the_failed_node() {
    let cfg = "models:\n  m:\n    provider: simulated\n    simulate: { latency: 1ms }\n";
    let flow = "name: f\ninputs: { topic: 海边 }\nnodes:\n  - id: a\n    kind: llm\n    model: m\n    prompt: 'Topic: {{ input.topic }}'\n    json: true\n  - id: b\n    kind: template\n    text: '{{ nodes.a.title }}'\n    expect: [{ if: 'input.go' }]\n    on_error: manual\n  - id: c\n    kind: template\n    text: 'done: {{ nodes.b }}'\n";
    let h = harness(cfg, flow).await;
    let o = h.run().await;
    assert_eq!(o.status, RunStatus::WaitingManual);
    let task = h.engine.store.manual_task(&o.run_id).await.unwrap().unwrap();
    assert_eq!((task.node_id.as_str(), task.status.as_str(), task.error_kind.as_str()), ("b", "open", "expectation_failed"));
    // A human supplies b's output; the run goes on with a's kept output.
    let r = h.engine.resume(h.flow.clone(), &o.run_id, "b", Some(json!("人工标题"))).await.unwrap();
    assert_eq!(r.run_id, o.run_id);
    assert_eq!(r.status, RunStatus::Recovered);
    assert_eq!(r.outputs["c"], "done: 人工标题");
    let a = h.attempts(&o.run_id).await;
    let seqs: Vec<i64> = a.iter().map(|a| a.seq).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "sequence continues: {seqs:?}");
    assert!(a.iter().any(|a| a.action.as_deref() == Some("manual_skip")));
    assert_eq!(h.record(&o.run_id).await.status, RunStatus::Recovered);
    // The resumed run's last record (c, a pure node) is counted with its end.
    let w = h.engine.store.rollup_window(Some("f"), 0, 1 << 50, false).await.unwrap();
    assert_eq!(w.nodes.iter().filter(|n| n.1 == "c").map(|n| n.4[0]).sum::<i64>(), 1, "{:?}", w.nodes);
}

#[tokio::test]
async fn auth_expired_blocks_the_flow_until_unblocked_or_a_canary_passes() {
    let cfg = "models:\n  m:\n    provider: simulated\n    simulate: { latency: 1ms, faults: { auth: 1.0 } }\n";
    let flow = "name: f\nunblock_on_canary: true\nnodes:\n  - id: s\n    kind: llm\n    model: m\n    prompt: x\n";
    let h = harness(cfg, flow).await;
    let o = h.run().await;
    assert_eq!((o.status, o.severity), (RunStatus::Failed, Some(Severity::High)));
    let block = h.engine.store.flow_block("f").await.unwrap().expect("blocked");
    assert_eq!(block.run_id.as_deref(), Some(o.run_id.as_str()));
    let refused = h.run().await;
    assert_eq!(refused.status, RunStatus::Refused);
    assert_eq!(refused.status.exit_code(), 4);
    assert_eq!(h.record(&refused.run_id).await.status, RunStatus::Refused, "refusals are recorded");
    assert!(h.attempts(&refused.run_id).await.is_empty());

    // A canary goes through the block; a failing one leaves it, a passing one lifts it.
    let canary = |flow| RunRequest { flow, inputs: Default::default(), trigger: "canary".into(), canary: true };
    let c = h.engine.run(canary(h.flow.clone())).await.unwrap();
    assert_eq!(c.status, RunStatus::Failed);
    assert!(h.engine.store.flow_block("f").await.unwrap().is_some());
    let fixed = harness("models:\n  m:\n    provider: simulated\n    simulate: { latency: 1ms }\n", flow).await;
    let fixed_engine = flowguard::engine::Engine::new(h.engine.store.clone(), fixed.engine.reg.clone(), fixed.engine.clock.clone(), 1000);
    let c = fixed_engine.run(canary(fixed.flow.clone())).await.unwrap();
    assert_eq!(c.status, RunStatus::Succeeded);
    assert!(h.engine.store.flow_block("f").await.unwrap().is_none(), "the passing canary lifted the block");
}

/// A token endpoint and a publisher that accepts only the newest token.
#[derive(Clone, Default)]
struct Tokens {
    issued: Arc<Mutex<u32>>,
    seen: Arc<Mutex<Vec<String>>>,
    /// What the token endpoint says for `expires_in` (default 7200).
    expires_in: Arc<Mutex<Option<serde_json::Value>>>,
}

async fn token(State(t): State<Tokens>, body: String) -> axum::response::Response {
    if !body.contains("client_secret=s3cr3t-client") {
        return axum::response::Response::builder().status(401).body(r#"{"error":"invalid_client"}"#.into()).unwrap();
    }
    let mut n = t.issued.lock().unwrap();
    *n += 1;
    let expires_in = t.expires_in.lock().unwrap().clone().unwrap_or(json!(7200));
    axum::Json(json!({"access_token": format!("tok-{n}"), "expires_in": expires_in})).into_response_ok()
}

trait OkResponse {
    fn into_response_ok(self) -> axum::response::Response;
}
impl<T: serde::Serialize> OkResponse for axum::Json<T> {
    fn into_response_ok(self) -> axum::response::Response {
        axum::response::IntoResponse::into_response(self)
    }
}

async fn videos(State(t): State<Tokens>, headers: HeaderMap) -> axum::response::Response {
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    t.seen.lock().unwrap().push(auth.clone());
    let newest = format!("Bearer tok-{}", t.issued.lock().unwrap());
    if auth != newest || auth == "Bearer tok-1" {
        return axum::response::Response::builder()
            .status(401)
            .body(r#"{"code":"access_token_expired","message":"token expired"}"#.into())
            .unwrap();
    }
    axum::Json(json!({"id": "v1"})).into_response_ok()
}

async fn token_server() -> (String, Tokens) {
    token_server_with(Tokens::default()).await
}

async fn token_server_with(t: Tokens) -> (String, Tokens) {
    let app = Router::new().route("/oauth/token", post(token)).route("/v1/videos", post(videos)).with_state(t.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.ok() });
    (format!("http://{addr}"), t)
}

/// `expires_in` as a float (`3.0`): the token lives 3 s, not the default hour.
#[tokio::test]
async fn a_token_lifetime_sent_as_a_float_is_honoured() {
    let t = Tokens::default();
    *t.expires_in.lock().unwrap() = Some(json!(3.0));
    let (base, t) = token_server_with(t).await;
    let cfg = format!(
        "auth:\n  platform:\n    token_url: {base}/oauth/token\n    client_id: fg\n    client_secret: ${{SECRET}}\nendpoints:\n  p:\n    base_url: {base}\n    auth: platform\n"
    );
    let flow = "name: f\nnodes:\n  - id: publish\n    kind: http\n    endpoint: p\n    path: /v1/videos\n    body: { title: t }\n    retry: { policy: none }\n";
    let h = crate::support::harness::harness_with(&cfg, flow, &[("SECRET", "s3cr3t-client")], None).await;
    h.run().await;
    let first = *t.issued.lock().unwrap();
    h.clock.advance(Duration::from_secs(10));
    h.run().await;
    assert_eq!(*t.issued.lock().unwrap(), first + 1, "the 3 s token expired and a new one was fetched");
}

#[tokio::test]
async fn an_expired_token_is_refreshed_once_and_the_call_retried() {
    let (base, t) = token_server().await;
    let cfg = format!(
        "auth:\n  platform:\n    token_url: {base}/oauth/token\n    client_id: fg\n    client_secret: ${{SECRET}}\nendpoints:\n  p:\n    base_url: {base}\n    auth: platform\n"
    );
    let flow = "name: f\nnodes:\n  - id: publish\n    kind: http\n    endpoint: p\n    path: /v1/videos\n    body: { title: t }\n    side_effect: true\n    idempotent: true\n";
    let h = crate::support::harness::harness_with(&cfg, flow, &[("SECRET", "s3cr3t-client")], None).await;
    let o = h.run().await;
    assert_eq!(o.status, RunStatus::Succeeded, "{:?}", o.error_message);
    assert_eq!(*t.seen.lock().unwrap(), vec!["Bearer tok-1".to_string(), "Bearer tok-2".to_string()]);
    // A second run reuses the cached token.
    h.run().await;
    assert_eq!(*t.issued.lock().unwrap(), 2);

    // Refused credentials: auth_expired, high, and the flow is blocked.
    let h = crate::support::harness::harness_with(&cfg, flow, &[("SECRET", "wrong-secret")], None).await;
    let o = h.run().await;
    assert_eq!((o.error_kind, o.severity), (Some(ErrorKind::AuthExpired), Some(Severity::High)));
    assert!(h.engine.store.flow_block("f").await.unwrap().is_some());
}

const MANUAL_FLOW: &str = "name: f\ninputs: { topic: 露营 }\nnodes:\n  - id: a\n    kind: template\n    text: 'a-{{ input.topic }}'\n  - id: b\n    kind: llm\n    model: flaky\n    prompt: x\n    timeout: 200ms\n  - id: c\n    kind: template\n    text: 'c after {{ nodes.b }}'\n";

fn manual_project(latency: &str) -> Project {
    let p = Project::with_config(&format!("models:\n  flaky:\n    provider: simulated\n    simulate: {{ latency: {latency} }}\n"));
    p.write("flows/f.yaml", MANUAL_FLOW);
    p
}

#[test]
fn the_manual_queue_from_the_command_line() {
    let p = manual_project("5s");
    let o = p.run(&["run", "f"]);
    assert_eq!(o.status.code(), Some(3), "waiting for a human: {}", stdout(&o));
    let tasks = p.json(&["manual", "list"]);
    let task = &tasks[0];
    assert_eq!(
        (task["node_id"].as_str(), task["error_kind"].as_str(), task["status"].as_str()),
        (Some("b"), Some("timeout"), Some("open"))
    );
    let id = task["id"].as_str().unwrap().to_owned();

    // Skip b with a supplied output: the run goes on and ends recovered.
    let o = p.run(&["manual", "skip", &id, "--output", "\"人工稿\"", "--by", "alice", "--note", "wrote it myself"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("recovered"));
    let shown = p.json(&["manual", "show", &id]);
    assert_eq!(shown["task"]["status"], "skipped");
    assert_eq!((shown["actions"][0]["actor"].as_str(), shown["actions"][0]["note"].as_str()), (Some("alice"), Some("wrote it myself")));
    let run = p.json(&["show", task["run_id"].as_str().unwrap()]);
    assert_eq!(run["run"]["status"], "recovered");
    let last = run["attempts"].as_array().unwrap().last().unwrap().clone();
    assert_eq!((last["node_id"].as_str(), last["output"].as_str()), (Some("c"), Some("c after 人工稿")));
    // Acting twice is refused.
    assert_eq!(p.run(&["manual", "abort", &id]).status.code(), Some(2));

    // Resolve and abort close tasks without running.
    for (verb, status, run_status) in [("resolve", "resolved", "failed"), ("abort", "aborted", "cancelled")] {
        assert_eq!(p.run(&["run", "f"]).status.code(), Some(3));
        let id = p.json(&["manual", "list"])[0]["id"].as_str().unwrap().to_owned();
        let o = p.run(&["manual", verb, &id, "--note", "handled"]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let shown = p.json(&["manual", "show", &id]);
        assert_eq!(shown["task"]["status"], status);
        let run = p.json(&["show", shown["task"]["run_id"].as_str().unwrap()]);
        assert_eq!(run["run"]["status"], run_status);
    }
    assert!(p.json(&["manual", "list"]).as_array().unwrap().is_empty());
    assert_eq!(p.json(&["manual", "list", "--all"]).as_array().unwrap().len(), 3);
}

#[test]
fn manual_retry_resumes_once_the_cause_is_fixed() {
    let p = manual_project("5s");
    assert_eq!(p.run(&["run", "f"]).status.code(), Some(3));
    let id = p.json(&["manual", "list"])[0]["id"].as_str().unwrap().to_owned();
    // The operator fixes the model (here: a faster one), then retries from the failed node.
    std::fs::write(p.config(), "models:\n  flaky:\n    provider: simulated\n    simulate: { latency: 1ms }\n").unwrap();
    let o = p.run(&["manual", "retry", &id]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let run = p.json(&["show", p.json(&["manual", "show", &id])["task"]["run_id"].as_str().unwrap()]);
    assert_eq!(run["run"]["status"], "recovered");
    let nodes: Vec<&str> = run["attempts"].as_array().unwrap().iter().map(|a| a["node_id"].as_str().unwrap()).collect();
    assert_eq!(nodes, vec!["a", "b", "b", "b", "c"], "a ran once; b timed out twice, then succeeded on retry");
}

/// A resumed run ends like any run: parked again it alerts again, recovered it resolves the alert
/// and the channel hears so.
#[test]
fn manual_retry_from_the_command_line_alerts_and_resolves() {
    use crate::support::fake_feishu::{FakeFeishu, KEYWORD};
    let rt = tokio::runtime::Runtime::new().unwrap();
    let fake = rt.block_on(FakeFeishu::start_with(None, Some(KEYWORD)));
    let alerting = format!(
        "storage:\n  url: sqlite://fg.db\nchannels:\n  ops:\n    type: feishu\n    webhook: \"{}\"\n    keyword: {KEYWORD}\nalerting:\n  group_interval: 0s\n  drain: 5s\n",
        fake.url
    );
    let models = |latency: &str| format!("models:\n  flaky:\n    provider: simulated\n    simulate: {{ latency: {latency} }}\n{alerting}");
    let p = Project::with_config(&models("5s"));
    p.write("flows/f.yaml", MANUAL_FLOW);
    assert_eq!(p.run(&["run", "f"]).status.code(), Some(3));
    let alert = |p: &Project| p.json(&["alerts", "list"]).as_array().unwrap().iter().find(|a| a["flow"] == "f").cloned().unwrap();
    assert_eq!((alert(&p)["status"].as_str(), alert(&p)["count"].as_i64()), (Some("firing"), Some(1)));
    assert_eq!(alert(&p)["labels"]["status"], "waiting_manual", "labels are an object");
    let id = p.json(&["manual", "list"])[0]["id"].as_str().unwrap().to_owned();

    // Retried while the cause is still there: the run parks again, and that is an alert.
    let o = p.run(&["manual", "retry", &id]);
    assert_eq!(o.status.code(), Some(3), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(alert(&p)["count"], 2, "parking again counts on the open alert");

    // Fixed and retried: the run recovers, the alert is resolved and the channel is told.
    std::fs::write(p.config(), models("1ms")).unwrap();
    let id = p.json(&["manual", "list"])[0]["id"].as_str().unwrap().to_owned();
    let o = p.run(&["manual", "retry", &id]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(alert(&p)["status"], "resolved");
    let last = fake.messages().last().cloned().unwrap_or_default().to_string();
    assert!(last.contains("恢复"), "a resolved message: {last}");
    drop(rt);
}

#[test]
fn blocking_from_the_command_line_refuses_runs_with_exit_4() {
    let p = manual_project("1ms");
    assert_eq!(p.run(&["flow", "block", "f", "--note", "platform maintenance"]).status.code(), Some(0));
    let o = p.run(&["run", "f"]);
    assert_eq!(o.status.code(), Some(4));
    assert!(stdout(&o).contains("refused"), "{}", stdout(&o));
    let blocks = p.json(&["flow", "blocks"]);
    assert_eq!(blocks[0]["reason"], "platform maintenance");
    assert_eq!(p.json(&["runs", "--status", "refused"]).as_array().unwrap().len(), 1);
    assert_eq!(p.run(&["flow", "unblock", "f"]).status.code(), Some(0));
    assert_eq!(p.run(&["flow", "unblock", "f"]).status.code(), Some(2), "not blocked any more");
    assert_eq!(p.run(&["run", "f"]).status.code(), Some(0));
}

#[test]
fn check_explain_says_what_happens_per_node_and_kind() {
    let p = Project::starter();
    let o = p.run(&["check", "--explain", "douyin_script"]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{}", stderr(&o));
    for expected in [
        "qc",
        "quality_rejected",
        "repair: re-run `script`",
        "publish",
        "publish_failed",
        "waiting_manual",
        "auth_expired",
        "block the flow",
        "next model",
        "data_empty",
        "default value",
    ] {
        assert!(out.contains(expected), "missing `{expected}`:\n{out}");
    }
}

#[test]
fn bad_policies_are_check_errors() {
    let p = Project::with_config("models:\n  m:\n    provider: simulated\n");
    p.write(
        "flows/f.yaml",
        "name: f\npolicy:\n  timeot: { action: manual }\nnodes:\n  - id: a\n    kind: template\n    text: x\n    on_error: { action: goto, node: nowhere }\n  - id: b\n    kind: template\n    text: y\n    on_error: { action: repiar }\n",
    );
    let err = stderr(&p.run(&["check"]));
    assert!(err.contains("unknown variant `timeot`") && err.contains("did you mean `timeout`"), "{err}");
    p.write("flows/f.yaml", "name: f\nnodes:\n  - id: a\n    kind: template\n    text: x\n    on_error: { action: goto, node: nowhere }\n  - id: b\n    kind: template\n    text: y\n    on_error: { action: repiar }\n");
    let err = stderr(&p.run(&["check"]));
    assert!(err.contains("goto: unknown node `nowhere`"), "{err}");
    assert!(err.contains("unknown action `repiar` (did you mean `repair`?)"), "{err}");
}

#[test]
fn runs_cancel_stops_a_run_in_another_process_and_rerun_repeats_one() {
    let p = manual_project("60s");
    std::fs::write(p.path().join("flows/f.yaml"), MANUAL_FLOW.replace("timeout: 200ms", "timeout: 120s")).unwrap();
    let mut child = bin().current_dir(p.path()).args(["run", "f", "-i", "topic=雪山"]).stdout(std::process::Stdio::null()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut id = None;
    while Instant::now() < deadline && id.is_none() {
        std::thread::sleep(Duration::from_millis(50));
        let o = p.run(&["runs", "--format", "json"]);
        id = serde_json::from_slice::<serde_json::Value>(&o.stdout).ok().and_then(|v| v[0]["id"].as_str().map(str::to_owned));
    }
    let id = id.expect("the run started");
    let o = p.run(&["runs", "cancel", &id, "--by", "bob"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(1));
    assert_eq!(p.json(&["show", &id])["run"]["status"], "cancelled");

    std::fs::write(p.config(), "models:\n  flaky:\n    provider: simulated\n    simulate: { latency: 1ms }\n").unwrap();
    let o = p.run(&["runs", "rerun", &id]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let newest = &p.json(&["runs"])[0];
    assert_eq!((newest["trigger"].as_str(), newest["status"].as_str()), (Some("rerun"), Some("succeeded")));
    assert_eq!(newest["inputs"]["topic"], "雪山");
}

/// One row per error kind of DESIGN.md §4 that a single node can meet: the final run status, the
/// severity, the action recorded on the last attempt, and whether a manual task is open.
#[tokio::test]
async fn every_row_of_the_policy_table_end_to_end() {
    struct Row {
        kind: ErrorKind,
        config: &'static str,
        node: &'static str,
        status: RunStatus,
        severity: Option<Severity>,
        action: &'static str,
        manual: bool,
    }
    let model = |faults: &str| -> String {
        format!("models:\n  m:\n    provider: simulated\n    simulate: {{ latency: 1ms, faults: {{ {faults}: 1.0 }} }}\n")
    };
    let llm = "  - id: n\n    kind: llm\n    model: m\n    prompt: 'Topic: x'\n    json: true\n    timeout: 1s\n    retry: { policy: fixed, max_attempts: 2, delay: 1ms }\n";
    let endpoint = |faults: &str| -> String {
        format!("endpoints:\n  e:\n    simulate: {{ latency: 1ms, body: {{ items: [] }}, faults: {{ {faults}: 1.0 }} }}\n")
    };
    let publish = "  - id: n\n    kind: http\n    endpoint: e\n    body: { a: 1 }\n    side_effect: true\n    timeout: 1s\n    retry: { policy: fixed, max_attempts: 2, delay: 1ms }\n";
    let query = "  - id: n\n    kind: http\n    endpoint: e\n    expect: [{ non_empty: /items, kind: data_empty }]\n";
    let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
    let rows = vec![
        Row {
            kind: ErrorKind::GenerationEmpty,
            config: leak(model("empty")),
            node: llm,
            status: RunStatus::Failed,
            severity: Some(Severity::Medium),
            action: "fail",
            manual: false,
        },
        Row {
            kind: ErrorKind::GenerationMalformed,
            config: leak(model("malformed")),
            node: llm,
            status: RunStatus::Failed,
            severity: Some(Severity::Medium),
            action: "fail",
            manual: false,
        },
        Row {
            kind: ErrorKind::Timeout,
            config: leak(model("timeout")),
            node: llm,
            status: RunStatus::WaitingManual,
            severity: Some(Severity::Medium),
            action: "manual",
            manual: true,
        },
        Row {
            kind: ErrorKind::RateLimited,
            config: leak(model("rate_limited")),
            node: llm,
            status: RunStatus::Failed,
            severity: Some(Severity::Medium),
            action: "fail",
            manual: false,
        },
        Row {
            kind: ErrorKind::Upstream5xx,
            config: leak(model("server_error")),
            node: llm,
            status: RunStatus::Failed,
            severity: Some(Severity::Medium),
            action: "fail",
            manual: false,
        },
        Row {
            kind: ErrorKind::AuthExpired,
            config: leak(model("auth")),
            node: llm,
            status: RunStatus::Failed,
            severity: Some(Severity::High),
            action: "block",
            manual: false,
        },
        Row {
            kind: ErrorKind::QuotaExhausted,
            config: leak(model("quota")),
            node: llm,
            status: RunStatus::Failed,
            severity: Some(Severity::High),
            action: "fail",
            manual: false,
        },
        Row {
            kind: ErrorKind::ContentBlocked,
            config: leak(model("content_filter")),
            node: llm,
            status: RunStatus::Failed,
            severity: Some(Severity::Medium),
            action: "fail",
            manual: false,
        },
        Row {
            kind: ErrorKind::PublishFailed,
            config: leak(endpoint("rejected")),
            node: publish,
            status: RunStatus::WaitingManual,
            severity: Some(Severity::Medium),
            action: "manual",
            manual: true,
        },
        Row {
            kind: ErrorKind::PublishAmbiguous,
            config: leak(endpoint("timeout")),
            node: publish,
            status: RunStatus::WaitingManual,
            severity: Some(Severity::Medium),
            action: "manual",
            manual: true,
        },
        Row {
            kind: ErrorKind::DataEmpty,
            config: leak(endpoint("empty")),
            node: query,
            status: RunStatus::Failed,
            severity: Some(Severity::Low),
            action: "fail",
            manual: false,
        },
    ];
    for row in rows {
        let h = harness(row.config, &format!("name: f\nnodes:\n{}", row.node)).await;
        let o = h.run().await;
        let label = format!("{}", row.kind);
        assert_eq!((o.status, o.error_kind, o.severity), (row.status, Some(row.kind), row.severity), "{label}: {:?}", o.error_message);
        let a = h.attempts(&o.run_id).await;
        let last = a.last().unwrap();
        assert_eq!((last.error_kind.as_deref(), last.action.as_deref()), (Some(row.kind.as_str()), Some(row.action)), "{label}");
        let task = h.engine.store.manual_task(&o.run_id).await.unwrap();
        assert_eq!(task.as_ref().map(|t| t.status.as_str()), row.manual.then_some("open"), "{label}");
        assert_eq!(h.engine.store.flow_block("f").await.unwrap().is_some(), row.action == "block", "{label}");
        let record = h.record(&o.run_id).await;
        assert_eq!(record.severity.as_deref(), row.severity.map(|s| s.as_str()), "{label}");
    }
}
