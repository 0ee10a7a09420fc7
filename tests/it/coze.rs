//! The `coze` node against a fake Coze Open API that checks the bearer token: a synchronous run,
//! an asynchronous run polled to its end (coze.cn and Coze Studio), Coze's error codes, a failed
//! run, and a run that outlives the node's timeout.

use crate::support::fake_coze::{EXECUTE_ID, End, FakeCoze, Script, TOKEN};
use crate::support::harness::{Harness, harness_with};
use flowguard::vocab::{AttemptStatus, ErrorKind, RunStatus};
use serde_json::{Value, json};
use std::time::Duration;

fn config(base_url: &str) -> String {
    format!("endpoints:\n  coze:\n    base_url: {base_url}\n    headers: {{ Authorization: \"Bearer ${{COZE_API_TOKEN}}\" }}\n")
}

fn flow(extra: &str) -> String {
    format!(
        "name: f\ninputs:\n  topic: 露营\nnodes:\n  - id: board\n    kind: coze\n    endpoint: coze\n    workflow_id: \"7428912345678901234\"\n    parameters: {{ topic: \"{{{{ input.topic }}}}\", count: 3 }}\n{extra}"
    )
}

async fn start(script: Script, extra: &str, token: &str) -> (FakeCoze, Harness) {
    let fake = FakeCoze::start(script).await;
    let h = harness_with(&config(&fake.base_url), &flow(extra), &[("COZE_API_TOKEN", token)], None).await;
    (fake, h)
}

fn output_of(a: &flowguard::store::AttemptRecord) -> Value {
    serde_json::from_str(a.output.as_deref().expect("an output")).expect("JSON output")
}

#[tokio::test]
async fn a_synchronous_run_returns_the_workflow_output_and_records_its_usage() {
    let (fake, h) = start(Script::Sync(r#"{"title":"周末露营","shots":3}"#.into()), "", TOKEN).await;
    let o = h.run().await;
    assert_eq!(o.status, RunStatus::Succeeded, "{:?}", o.error_message);
    let out = &o.outputs["board"];
    assert_eq!(out["output"]["title"], "周末露营");
    assert!(out["debug_url"].as_str().unwrap().contains(EXECUTE_ID));
    assert_eq!(out["usage"]["token_count"], 150);
    assert_eq!(
        fake.runs(),
        vec![json!({"workflow_id": "7428912345678901234", "parameters": {"topic": "露营", "count": 3}})],
        "the parameters are rendered and sent as an object"
    );
    let a = h.attempts(&o.run_id).await;
    assert_eq!((a[0].tokens_in, a[0].tokens_out, a[0].http_status), (Some(50), Some(100), Some(200)));
    assert!(output_of(&a[0])["debug_url"].is_string());
    assert!(fake.polls().is_empty());
}

#[tokio::test]
async fn an_asynchronous_run_is_polled_until_it_succeeds() {
    let output = r#"{"Output":"{\"title\":\"周末露营\"}"}"#.to_string();
    let (fake, h) = start(Script::Async(2, End::Success(output)), "    async: true\n    poll_interval: 5s\n", TOKEN).await;
    let o = h.run().await;
    assert_eq!(o.status, RunStatus::Succeeded, "{:?}", o.error_message);
    assert_eq!(o.outputs["board"]["output"]["title"], "周末露营");
    assert_eq!(o.outputs["board"]["execute_id"], EXECUTE_ID);
    assert_eq!(fake.runs()[0]["is_async"], true);
    let path = format!("/v1/workflows/7428912345678901234/run_histories/{EXECUTE_ID}");
    assert_eq!(fake.polls(), vec![path.clone(), path.clone(), path], "two Running answers, then Success");
    assert_eq!(h.clock.sleeps(), vec![Duration::from_secs(5); 3], "polls wait on the injected clock");
    let a = h.attempts(&o.run_id).await;
    assert_eq!(a.len(), 1);
    assert_eq!(output_of(&a[0])["execute_id"], EXECUTE_ID);
}

#[tokio::test]
async fn a_coze_studio_run_is_polled_through_its_run_history_api() {
    let (fake, h) = start(
        Script::Async(1, End::Success(r#"{"title":"周末露营"}"#.into())),
        "    async: true\n    poll_interval: 1s\n    coze_studio: true\n",
        TOKEN,
    )
    .await;
    let o = h.run().await;
    assert_eq!(o.status, RunStatus::Succeeded, "{:?}", o.error_message);
    assert_eq!(o.outputs["board"]["output"]["title"], "周末露营");
    assert_eq!(o.outputs["board"]["usage"]["token_count"], 321);
    let polls = fake.polls();
    assert_eq!(polls.len(), 2);
    assert_eq!(polls[0], format!("/v1/workflow/get_run_history?workflow_id=7428912345678901234&execute_id={EXECUTE_ID}"));
}

#[tokio::test]
async fn coze_codes_are_classified() {
    // A wrong token: HTTP 401, code 4100.
    let (fake, h) = start(Script::Sync("{}".into()), "    retry: { policy: none }\n", "pat_wrong_token_000000000000000").await;
    let o = h.run().await;
    assert_eq!(o.error_kind, Some(ErrorKind::AuthExpired), "{:?}", o.error_message);
    assert!(fake.runs().is_empty());
    let r = h.record(&o.run_id).await;
    assert_eq!(r.severity.as_deref(), Some("high"));
    let attempts = format!("{:?}{r:?}", h.attempts(&o.run_id).await);
    assert!(!attempts.contains("pat_wrong_token") && !attempts.contains(TOKEN), "no token in the record");

    // HTTP 200 with a non-zero code: the workflow is not published.
    let (_fake, h) = start(Script::Error(200, 6031, "workflow not published"), "    retry: { policy: none }\n", TOKEN).await;
    let o = h.run().await;
    assert_eq!(o.error_kind, Some(ErrorKind::Upstream4xx));
    assert!(o.error_message.as_deref().unwrap().contains("6031"), "{:?}", o.error_message);
    let a = h.attempts(&o.run_id).await;
    assert_eq!(a[0].http_status, Some(200));
    let out = output_of(&a[0]);
    assert_eq!((out["code"].as_i64(), out["debug_url"].is_string()), (Some(6031), true), "{out}");

    // The workflow ran past its own limit.
    let (_fake, h) = start(Script::Error(200, 6023, "workflow timeout"), "    retry: { policy: none }\n", TOKEN).await;
    assert_eq!(h.run().await.error_kind, Some(ErrorKind::Timeout));

    // A code not in the table is classified by the HTTP status.
    let (_fake, h) = start(Script::Error(429, 4999, "too many requests"), "    retry: { policy: none }\n", TOKEN).await;
    assert_eq!(h.run().await.error_kind, Some(ErrorKind::RateLimited));
}

#[tokio::test]
async fn a_failed_asynchronous_run_keeps_its_execute_id_and_debug_url() {
    let (_fake, h) = start(
        Script::Async(1, End::Fail("720701013", "node LLM_1 failed: upstream service unavailable")),
        "    async: true\n    poll_interval: 1s\n    retry: { policy: none }\n",
        TOKEN,
    )
    .await;
    let o = h.run().await;
    assert_eq!(o.status, RunStatus::Failed);
    assert_eq!(o.error_kind, Some(ErrorKind::Upstream5xx));
    assert!(o.error_message.as_deref().unwrap().contains("LLM_1"));
    let out = output_of(&h.attempts(&o.run_id).await[0]);
    assert_eq!((out["execute_id"].as_str(), out["execute_status"].as_str()), (Some(EXECUTE_ID), Some("Fail")));
    assert!(out["debug_url"].is_string());
}

#[tokio::test]
async fn a_run_longer_than_the_node_timeout_times_out_with_its_execute_id_recorded() {
    let (fake, h) = start(
        Script::Async(0, End::Never),
        "    async: true\n    poll_interval: 10s\n    timeout: 35s\n    retry: { policy: none }\n",
        TOKEN,
    )
    .await;
    let t0 = h.now();
    let o = h.run().await;
    assert_eq!(o.error_kind, Some(ErrorKind::Timeout), "{:?}", o.error_message);
    let a = h.attempts(&o.run_id).await;
    assert_eq!((a.len(), a[0].status), (1, AttemptStatus::TimedOut));
    assert_eq!(a[0].ended_at - t0, 35_000, "ended by the node's timeout, on the injected clock");
    assert_eq!(fake.polls().len(), 3, "polled at 10s, 20s and 30s");
    assert!(a[0].input.as_deref().unwrap().contains(EXECUTE_ID), "the timed-out attempt names its Coze run: {:?}", a[0].input);
}

#[tokio::test]
async fn a_failed_poll_is_polled_again_without_starting_the_workflow_again() {
    let (fake, h) = start(
        Script::AsyncAfter503(End::Success(r#"{"title":"周末露营"}"#.into())),
        "    async: true\n    poll_interval: 1s\n    retry: { policy: none }\n",
        TOKEN,
    )
    .await;
    let o = h.run().await;
    assert_eq!(o.status, RunStatus::Succeeded, "{:?}", o.error_message);
    assert_eq!((fake.runs().len(), fake.polls().len()), (1, 2), "one run, polled twice");
}

#[test]
fn a_coze_endpoint_without_a_token_or_workflow_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = flowguard::config::Config::parse(
        &dir.path().join("flowguard.yaml"),
        "endpoints:\n  coze: { base_url: https://api.coze.cn }\n",
        dir.path(),
        &|_| None,
    )
    .unwrap();
    let reg = flowguard::nodes::Registry::from_config(&cfg).unwrap();
    let path = dir.path().join("f.yaml");
    std::fs::write(&path, "name: f\nnodes:\n  - id: c\n    kind: coze\n    endpoint: coze\n    workflow_id: \"\"\n").unwrap();
    let err = flowguard::flow::load(&path, &reg).map(|_| ()).unwrap_err().to_string();
    assert!(err.contains("sends no token") && err.contains("COZE_API_TOKEN"), "{err}");
    assert!(err.contains("workflow_id"), "{err}");
    std::fs::write(&path, "name: f\nnodes:\n  - id: c\n    kind: coze\n    endpoint: cozee\n    workflow_id: \"1\"\n").unwrap();
    let err = flowguard::flow::load(&path, &reg).map(|_| ()).unwrap_err().to_string();
    assert!(err.contains("unknown endpoint `cozee`") && err.contains("did you mean `coze`"), "{err}");
}
