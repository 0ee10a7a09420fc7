//! Every error kind the engine can meet, classified as DESIGN.md §4 says: the provider's code in
//! the body first, then the HTTP status, then the transport; against fake servers that answer as
//! the real ones do.

use crate::support::fake_openai::{FakeOpenAi, KEY, Reply};
use crate::support::fake_publisher::{Answer, FakePublisher};
use crate::support::harness::{harness, harness_with, openai_config};
use flowguard::clock::SystemClock;
use flowguard::vocab::{AttemptStatus, ErrorKind, RunStatus};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

/// Runs a one-node llm flow (no retries) against a fake answering `reply`; returns the kind.
async fn llm_kind(reply: Reply, json_mode: bool) -> (ErrorKind, Option<i64>) {
    let fake = FakeOpenAi::start(vec![reply]).await;
    let flow = format!(
        "name: f\nnodes:\n  - id: s\n    kind: llm\n    model: m\n    prompt: hi\n    json: {json_mode}\n    retry: {{ policy: none }}\n"
    );
    let h = harness(&openai_config(&fake.base_url), &flow).await;
    let o = h.run().await;
    assert_eq!(o.status, RunStatus::Failed);
    let a = h.attempts(&o.run_id).await;
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].error_kind.as_deref(), o.error_kind.map(|k| k.as_str()));
    (o.error_kind.unwrap(), a[0].http_status)
}

#[tokio::test]
async fn model_answers_are_classified() {
    let cases = [
        (Reply::NoChoices, false, ErrorKind::GenerationEmpty, Some(200)),
        (Reply::EmptyContent, false, ErrorKind::GenerationEmpty, Some(200)),
        (Reply::Length, false, ErrorKind::GenerationMalformed, Some(200)),
        (Reply::Content("当然！标题是露营，然后……".into()), true, ErrorKind::GenerationMalformed, Some(200)),
        (Reply::BrokenBody, false, ErrorKind::GenerationMalformed, Some(200)),
        (Reply::NotUtf8, false, ErrorKind::GenerationMalformed, Some(200)),
        (Reply::ContentFilter, false, ErrorKind::ContentBlocked, Some(200)),
        (Reply::Error(429, Some("insufficient_quota"), None), false, ErrorKind::QuotaExhausted, Some(429)),
        (Reply::Error(429, None, Some(1)), false, ErrorKind::RateLimited, Some(429)),
        (Reply::Error(429, Some("1302"), None), false, ErrorKind::RateLimited, Some(429)),
        (Reply::Error(402, None, None), false, ErrorKind::QuotaExhausted, Some(402)),
        (Reply::Error(400, Some("data_inspection_failed"), None), false, ErrorKind::ContentBlocked, Some(400)),
        (Reply::Error(500, None, None), false, ErrorKind::Upstream5xx, Some(500)),
        (Reply::Error(503, None, None), false, ErrorKind::Upstream5xx, Some(503)),
        (Reply::Error(404, None, None), false, ErrorKind::Upstream4xx, Some(404)),
    ];
    for (reply, json_mode, kind, status) in cases {
        let label = format!("{reply:?}");
        assert_eq!(llm_kind(reply, json_mode).await, (kind, status), "{label}");
    }
}

#[tokio::test]
async fn a_wrong_key_is_auth_expired_and_high() {
    let fake = FakeOpenAi::start(vec![Reply::Content("x".into())]).await;
    let cfg = openai_config(&fake.base_url).replace(KEY, "sk-wrong-key-000000");
    let h = harness(&cfg, "name: f\nnodes:\n  - id: s\n    kind: llm\n    model: m\n    prompt: hi\n").await;
    let o = h.run().await;
    assert_eq!(o.error_kind, Some(ErrorKind::AuthExpired));
    assert_eq!(h.attempts(&o.run_id).await.len(), 2, "auth_expired is retried once");
    let r = h.record(&o.run_id).await;
    assert_eq!(r.severity.as_deref(), Some("high"));
    assert!(!format!("{r:?}").contains("sk-wrong-key"), "the key never reaches the record");
}

#[tokio::test]
async fn a_refused_connection_is_network() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let h = harness(&openai_config(&format!("http://127.0.0.1:{port}/v1")), "name: f\nnodes:\n  - id: s\n    kind: llm\n    model: m\n    prompt: hi\n    retry: { policy: fixed, max_attempts: 2, delay: 10ms }\n").await;
    let o = h.run().await;
    assert_eq!(o.error_kind, Some(ErrorKind::Network));
    assert_eq!(h.attempts(&o.run_id).await.len(), 2);
}

fn publish_flow(extra: &str) -> String {
    format!(
        "name: f\nnodes:\n  - id: publish\n    kind: http\n    endpoint: p\n    path: /v1/videos\n    body: {{ title: t }}\n    side_effect: true\n{extra}"
    )
}

fn publisher_config(base: &str) -> String {
    format!("endpoints:\n  p:\n    base_url: {base}\n    headers: {{ Authorization: 'Bearer ${{PUBLISH_TOKEN}}' }}\n")
}

#[tokio::test]
async fn a_rejected_publication_is_publish_failed_and_retried_once_with_the_same_key() {
    let fake = FakePublisher::start(vec![Answer::Status(422, json!({"message": "title too long"}))]).await;
    let h = harness_with(
        &publisher_config(&fake.base_url),
        &publish_flow("    idempotent: true\n"),
        &[("PUBLISH_TOKEN", "tok-123456789")],
        None,
    )
    .await;
    let o = h.run().await;
    assert_eq!(o.error_kind, Some(ErrorKind::PublishFailed));
    assert!(o.error_message.unwrap().contains("title too long"));
    let keys = fake.keys();
    assert_eq!(keys.len(), 2);
    assert!(keys[0].is_some() && keys[0] == keys[1], "one idempotency key per run and node: {keys:?}");
    assert_eq!(fake.headers()[0]["authorization"], "Bearer tok-123456789");
}

#[tokio::test]
async fn an_expired_token_code_in_the_body_is_auth_expired() {
    let fake = FakePublisher::start(vec![Answer::Status(400, json!({"code": "access_token_expired", "message": "token expired"}))]).await;
    let h =
        harness(&publisher_config(&fake.base_url).replace("${PUBLISH_TOKEN}", "x"), &publish_flow("    retry: { policy: none }\n")).await;
    assert_eq!(h.run().await.error_kind, Some(ErrorKind::AuthExpired));
}

#[tokio::test]
async fn a_timeout_on_a_non_idempotent_publication_goes_to_a_human_not_a_retry() {
    let fake = FakePublisher::start(vec![Answer::Slow(Duration::from_secs(5))]).await;
    let cfg = publisher_config(&fake.base_url).replace("${PUBLISH_TOKEN}", "x");
    let h = harness_with(&cfg, &publish_flow("    timeout: 300ms\n"), &[], Some(Arc::new(SystemClock))).await;
    let o = h.run().await;
    assert_eq!(o.error_kind, Some(ErrorKind::PublishAmbiguous));
    let a = h.attempts(&o.run_id).await;
    assert_eq!((a.len(), a[0].status), (1, AttemptStatus::TimedOut), "never retried blindly");
    assert_eq!(fake.published(), 1);

    // An idempotent target is retried after a timeout, with the same key: still one publication.
    let fake = FakePublisher::start(vec![Answer::Slow(Duration::from_secs(5)), Answer::Ok(json!({"id": "v1"}))]).await;
    let cfg = publisher_config(&fake.base_url).replace("${PUBLISH_TOKEN}", "x");
    let h = harness_with(&cfg, &publish_flow("    idempotent: true\n    timeout: 300ms\n"), &[], Some(Arc::new(SystemClock))).await;
    let o = h.run().await;
    assert_eq!(o.status, RunStatus::Recovered);
    assert_eq!(h.attempts(&o.run_id).await[0].error_kind.as_deref(), Some("timeout"));
    assert_eq!(fake.published(), 1);
}

#[tokio::test]
async fn an_empty_knowledge_base_answer_is_data_empty_and_low() {
    let fake = FakePublisher::start(vec![Answer::Ok(json!({"topics": []}))]).await;
    let flow = "name: f\nnodes:\n  - id: topic\n    kind: http\n    endpoint: p\n    path: /topics\n    expect: [{ non_empty: /topics, kind: data_empty }]\n";
    let h = harness(&publisher_config(&fake.base_url).replace("${PUBLISH_TOKEN}", "x"), flow).await;
    let o = h.run().await;
    assert_eq!((o.error_kind, o.failed_node.as_deref()), (Some(ErrorKind::DataEmpty), Some("topic")));
    assert_eq!(h.record(&o.run_id).await.severity.as_deref(), Some("low"));
    assert_eq!(h.attempts(&o.run_id).await.len(), 1, "data_empty is not retried");
}

#[tokio::test]
async fn a_non_utf8_answer_is_a_clear_error() {
    let fake = FakePublisher::start(vec![Answer::NotUtf8]).await;
    let h = harness(
        &publisher_config(&fake.base_url).replace("${PUBLISH_TOKEN}", "x"),
        "name: f\nnodes:\n  - id: t\n    kind: http\n    endpoint: p\n    path: /topics\n",
    )
    .await;
    let o = h.run().await;
    assert_eq!(o.status, RunStatus::Failed);
    assert!(o.error_message.unwrap().contains("not UTF-8"));
}

#[tokio::test]
async fn a_quality_check_lists_every_violation() {
    let dir = tempfile::tempdir().unwrap();
    let words = dir.path().join("words.txt");
    std::fs::write(&words, "# banned\n国家级\n最佳\n").unwrap();
    let flow = format!(
        r#"name: f
inputs:
  script: {{ title: "这是一个特别特别特别长的标题超过了十个字", body: "国 家 级 好物，ＶＩＰ专享", hashtags: [] }}
nodes:
  - id: qc
    kind: quality_check
    target: "{{{{ input.script }}}}"
    required: [title, hook, hashtags]
    max_length: {{ title: 10 }}
    sensitive_words: {}
    words: [vip]
    rules: [{{ field: body, pattern: "抖音", must_match: true, message: body must mention 抖音 }}]
    schema: {{ type: object, required: [title], properties: {{ title: {{ type: string, maxLength: 12 }} }} }}
"#,
        words.display()
    );
    let h = harness("{}", &flow).await;
    let o = h.run().await;
    assert_eq!(o.error_kind, Some(ErrorKind::QualityRejected));
    let a = &h.attempts(&o.run_id).await[0];
    let out: serde_json::Value = serde_json::from_str(a.output.as_deref().unwrap()).unwrap();
    let rules: Vec<&str> = out["violations"].as_array().unwrap().iter().map(|v| v["rule"].as_str().unwrap()).collect();
    assert_eq!(rules, vec!["required", "required", "max_length", "sensitive_word", "sensitive_word", "rule", "schema"], "{out}");
    assert_eq!(h.record(&o.run_id).await.severity.as_deref(), Some("low"));
}

#[tokio::test]
async fn a_slow_model_times_out_is_retried_once_then_waits_for_a_human() {
    let fake = FakeOpenAi::start(vec![Reply::Slow(Duration::from_secs(5), "late".into())]).await;
    let flow = "name: f\nnodes:\n  - id: s\n    kind: llm\n    model: m\n    prompt: hi\n    timeout: 200ms\n";
    let h = harness_with(&openai_config(&fake.base_url), flow, &[], Some(Arc::new(SystemClock))).await;
    let o = h.run().await;
    assert_eq!((o.status, o.error_kind), (RunStatus::WaitingManual, Some(ErrorKind::Timeout)));
    let a = h.attempts(&o.run_id).await;
    assert_eq!(a.iter().map(|a| a.status).collect::<Vec<_>>(), vec![AttemptStatus::TimedOut, AttemptStatus::TimedOut]);
}

/// The model label of an attempt is the same whether it timed out or succeeded.
#[tokio::test]
async fn attempts_on_one_model_carry_one_label() {
    let fake = FakeOpenAi::start(vec![Reply::Slow(Duration::from_secs(5), "late".into()), Reply::Content("ok".into())]).await;
    let flow = "name: f\nnodes:\n  - id: s\n    kind: llm\n    model: m\n    prompt: hi\n    timeout: 200ms\n";
    let h = harness_with(&openai_config(&fake.base_url), flow, &[], Some(Arc::new(SystemClock))).await;
    let o = h.run().await;
    assert_eq!(o.status, RunStatus::Recovered, "{:?}", o.error_message);
    let a = h.attempts(&o.run_id).await;
    let labels: Vec<Option<&str>> = a.iter().map(|a| a.model.as_deref()).collect();
    assert_eq!(labels, vec![Some("openai:fake-model"), Some("openai:fake-model")]);
}
