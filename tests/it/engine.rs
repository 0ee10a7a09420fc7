//! The engine's guards on the injected clock: retries and backoff, Retry-After, node and run time
//! limits, latency warnings, the model fallback chain, branching, foreach, cancel, redaction.

use crate::support::fake_openai::{FakeOpenAi, Reply};
use crate::support::harness::{harness, harness_with, openai_config};
use flowguard::engine::Event;
use flowguard::vocab::{AttemptStatus, ErrorKind, RunStatus};
use std::time::Duration;

const SCRIPT: &str = r##"{"title":"露营","hook":"别划走","body":"今天聊聊露营。","hashtags":["#露营"]}"##;

fn llm_flow(extra: &str) -> String {
    format!("name: f\nnodes:\n  - id: script\n    kind: llm\n    model: m\n    prompt: 'topic: camping'\n    json: true\n{extra}")
}

#[tokio::test]
async fn exponential_backoff_then_success_is_recovered() {
    let fake = FakeOpenAi::start(vec![Reply::Error(503, None, None), Reply::Error(502, None, None), Reply::Content(SCRIPT.into())]).await;
    let h =
        harness(&openai_config(&fake.base_url), &llm_flow("    retry: { policy: exponential, max_attempts: 3, delay: 1s, jitter: 0 }\n"))
            .await;
    let o = h.run().await;
    assert_eq!(o.status, RunStatus::Recovered);
    assert_eq!(h.clock.sleeps(), vec![Duration::from_secs(1), Duration::from_secs(2)]);
    let a = h.attempts(&o.run_id).await;
    assert_eq!(
        a.iter().map(|a| (a.attempt, a.status, a.retried)).collect::<Vec<_>>(),
        vec![(1, AttemptStatus::Failed, true), (2, AttemptStatus::Failed, true), (3, AttemptStatus::Succeeded, false)]
    );
    assert_eq!(a[0].error_kind.as_deref(), Some("upstream_5xx"));
    assert_eq!(a[0].http_status, Some(503));
    assert_eq!(a[2].tokens_in, Some(12));
    assert_eq!(a[2].tokens_out, Some(34));
    assert_eq!(o.outputs["script"]["title"], "露营");
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let fake = FakeOpenAi::start(vec![Reply::Error(429, None, Some(7)), Reply::Content(SCRIPT.into())]).await;
    let h =
        harness(&openai_config(&fake.base_url), &llm_flow("    retry: { policy: fixed, max_attempts: 2, delay: 1s, jitter: 0 }\n")).await;
    let o = h.run().await;
    assert_eq!(o.status, RunStatus::Recovered);
    assert_eq!(h.clock.sleeps(), vec![Duration::from_secs(7)]);
}

#[tokio::test]
async fn a_node_past_its_limit_times_out_and_is_retried_once() {
    let cfg = "models:\n  m:\n    provider: simulated\n    simulate: { latency: 60s }\n";
    let h = harness(cfg, &llm_flow("    timeout: 30s\n")).await;
    let start = h.now();
    let o = h.run().await;
    assert_eq!(o.status, RunStatus::WaitingManual, "medium: retry once, then a human");
    assert_eq!(o.error_kind, Some(ErrorKind::Timeout));
    let a = h.attempts(&o.run_id).await;
    assert_eq!(a.len(), 2, "timeout is retried once by default");
    assert!(a.iter().all(|a| a.status == AttemptStatus::TimedOut && a.duration_ms == 30_000));
    assert_eq!(a[0].action.as_deref(), Some("retry"));
    assert_eq!(a[1].action.as_deref(), Some("manual"));
    assert!(h.now() - start >= 60_000);
    assert_eq!(h.record(&o.run_id).await.severity.as_deref(), Some("medium"));
}

#[tokio::test]
async fn the_run_limit_stops_the_run_and_records_the_attempt_in_flight() {
    let cfg = "models:\n  m:\n    provider: simulated\n    simulate: { latency: 100s }\n";
    let flow = "name: f\ntimeout: 45s\nlatency_warning: 10s\nnodes:\n  - id: script\n    kind: llm\n    model: m\n    prompt: x\n    timeout: 30s\n    retry: { policy: fixed, max_attempts: 3, delay: 1s, jitter: 0 }\n";
    let h = harness(cfg, flow).await;
    let o = h.run().await;
    assert_eq!(o.status, RunStatus::TimedOut);
    assert_eq!(o.error_kind, Some(ErrorKind::FlowTimeout));
    assert_eq!(o.failed_node.as_deref(), Some("script"));
    assert_eq!(o.duration_ms, 45_000);
    let a = h.attempts(&o.run_id).await;
    assert_eq!(a.len(), 2);
    assert_eq!((a[1].attempt, a[1].error_kind.as_deref(), a[1].action.as_deref()), (2, Some("flow_timeout"), Some("stop")));
    let warned = h.events.lock().unwrap().iter().any(|e| matches!(e, Event::LatencyWarning { threshold_ms: 10_000, .. }));
    assert!(warned, "the engine's own timer raises the latency warning");
}

#[tokio::test]
async fn no_latency_warning_for_a_fast_run() {
    let cfg = "models:\n  m:\n    provider: simulated\n    simulate: { latency: 1s }\n";
    let h = harness(cfg, "name: f\nlatency_warning: 10s\nnodes:\n  - id: s\n    kind: llm\n    model: m\n    prompt: x\n").await;
    assert_eq!(h.run().await.status, RunStatus::Succeeded);
    assert!(!h.events.lock().unwrap().iter().any(|e| matches!(e, Event::LatencyWarning { .. })));
}

#[tokio::test]
async fn the_fallback_chain_recovers_and_then_runs_out() {
    let cfg = "models:\n  a:\n    provider: simulated\n    simulate: { latency: 1s, faults: { server_error: 1.0 } }\n    fallback: [b]\n  b:\n    provider: simulated\n    simulate: { latency: 1s }\n  c:\n    provider: simulated\n    simulate: { faults: { empty: 1.0 } }\n";
    let flow = "name: f\nnodes:\n  - id: s\n    kind: llm\n    model: a\n    prompt: 'Topic: x'\n    json: true\n    retry: { policy: fixed, max_attempts: 2, delay: 1s }\n";
    let h = harness(cfg, flow).await;
    let o = h.run().await;
    assert_eq!(o.status, RunStatus::Recovered);
    let a = h.attempts(&o.run_id).await;
    let models: Vec<_> = a.iter().map(|a| a.model.clone().unwrap_or_default()).collect();
    assert_eq!(models, vec!["simulated:a", "simulated:a", "simulated:b"]);
    assert_eq!(a[1].action.as_deref(), Some("next_model"));

    let flow = "name: g\nnodes:\n  - id: s\n    kind: llm\n    models: [a, c]\n    prompt: x\n    retry: { policy: none }\n";
    let h = harness(cfg, flow).await;
    let o = h.run().await;
    assert_eq!(o.error_kind, Some(ErrorKind::NoHealthyModel));
    assert_eq!(h.record(&o.run_id).await.severity.as_deref(), Some("high"));
    assert!(o.error_message.unwrap().contains("generation_empty"));
}

#[tokio::test]
async fn conditions_branch_forward_and_record_skipped_nodes() {
    let flow = r#"name: f
inputs: { n: 3 }
nodes:
  - id: check
    kind: condition
    if: "input.n > 2"
    then: big
  - id: small
    kind: template
    text: small
  - id: big
    kind: template
    value: { size: "{{ input.n * 10 }}", label: "big {{ input.n }}" }
"#;
    let h = harness("{}", flow).await;
    let o = h.run().await;
    assert_eq!(o.status, RunStatus::Succeeded, "{:?}", o.error_message);
    assert_eq!(o.outputs["big"]["size"], 30);
    assert_eq!(o.outputs["big"]["label"], "big 3");
    let a = h.attempts(&o.run_id).await;
    assert_eq!(
        a.iter().map(|a| (a.node_id.as_str(), a.status)).collect::<Vec<_>>(),
        vec![("check", AttemptStatus::Succeeded), ("small", AttemptStatus::Skipped), ("big", AttemptStatus::Succeeded)]
    );
    let mut inputs = serde_json::Map::new();
    inputs.insert("n".into(), 1.into());
    let o = h.run_with(inputs).await;
    assert_eq!(o.outputs["small"], "small");
}

#[tokio::test]
async fn foreach_collects_outputs_and_stops_at_its_cap() {
    let flow = "name: f\ninputs: { items: [a, b, c] }\nnodes:\n  - id: each\n    kind: template\n    foreach: '{{ input.items }}'\n    max_iterations: 3\n    text: '{{ index }}={{ item }}'\n";
    let h = harness("{}", flow).await;
    let o = h.run().await;
    assert_eq!(o.outputs["each"], serde_json::json!(["0=a", "1=b", "2=c"]));
    assert_eq!(h.attempts(&o.run_id).await.iter().map(|a| a.iteration).collect::<Vec<_>>(), vec![Some(0), Some(1), Some(2)]);
    let mut inputs = serde_json::Map::new();
    inputs.insert("items".into(), serde_json::json!([1, 2, 3, 4]));
    let o = h.run_with(inputs).await;
    assert_eq!((o.status, o.error_kind), (RunStatus::Failed, Some(ErrorKind::LoopLimit)));
    inputs = serde_json::Map::new();
    inputs.insert("items".into(), "not a list".into());
    let o = h.run_with(inputs).await;
    assert_eq!(o.error_kind, Some(ErrorKind::Internal));
    assert!(o.error_message.unwrap().contains("must give a list"));
}

#[tokio::test]
async fn a_cancelled_run_is_recorded_cancelled() {
    let cfg = "models:\n  m:\n    provider: simulated\n    simulate: { latency: 1s }\n";
    let h = harness(cfg, &llm_flow("")).await;
    let req = flowguard::engine::RunRequest { flow: h.flow.clone(), inputs: Default::default(), trigger: "test".into(), canary: false };
    let o = h.engine.run_until(req, async {}).await.unwrap();
    assert_eq!(o.status, RunStatus::Cancelled);
    assert_eq!(h.record(&o.run_id).await.status, RunStatus::Cancelled);
}

#[tokio::test]
async fn interrupted_runs_are_marked_by_the_store() {
    let h = harness("{}", "name: f\nnodes:\n  - id: t\n    kind: template\n    text: x\n").await;
    let store = &h.engine.store;
    let mut rec = h.record(&h.run().await.run_id).await;
    rec.id = "stale-run".into();
    rec.status = RunStatus::Running;
    rec.ended_at = None;
    store.insert_run(&rec).await.unwrap();
    let ids = store.interrupt_stale(rec.started_at + 1, rec.started_at + 5_000, None).await.unwrap();
    assert_eq!(ids, vec!["stale-run".to_string()]);
    let r = h.record("stale-run").await;
    assert_eq!((r.status, r.error_kind.as_deref()), (RunStatus::Interrupted, Some("interrupted")));
}

#[tokio::test]
async fn secrets_are_masked_and_payloads_cut_before_they_are_stored() {
    let fake = FakeOpenAi::start(vec![Reply::Content("x".repeat(500))]).await;
    let cfg = format!("storage:\n  max_payload_bytes: 100\n{}", openai_config(&fake.base_url));
    let flow = "name: f\nnodes:\n  - id: s\n    kind: llm\n    model: m\n    prompt: 'the token is {{ input.token }}'\n";
    let h = harness_with(&cfg, flow, &[("UNUSED", "")], None).await;
    let mut inputs = serde_json::Map::new();
    inputs.insert("token".into(), format!("Bearer {}", "t0ps3cr3t-abcdefgh").into());
    let o = h.run_with(inputs).await;
    let a = &h.attempts(&o.run_id).await[0];
    let stored = format!("{:?}{:?}", a.input, h.record(&o.run_id).await.inputs);
    assert!(!stored.contains("t0ps3cr3t"), "{stored}");
    assert_eq!(a.output_bytes, 500);
    assert!(a.output.as_ref().unwrap().len() < 130 && a.output.as_ref().unwrap().ends_with("[truncated]"));
    assert!(fake.requests()[0]["messages"][0]["content"].as_str().unwrap().contains("t0ps3cr3t"), "the provider gets the real value");
}

#[tokio::test]
async fn env_secrets_in_the_config_are_masked_in_stored_outputs() {
    let fake = FakeOpenAi::start(vec![Reply::Content("echo: my-webhook-secret-42".into())]).await;
    let cfg = format!(
        "{}endpoints:\n  e:\n    base_url: http://127.0.0.1:9\n    headers: {{ X-Token: '${{HOOK}}' }}\n",
        openai_config(&fake.base_url)
    );
    let h = harness_with(&cfg, &llm_flow("").replace("    json: true\n", ""), &[("HOOK", "my-webhook-secret-42")], None).await;
    let o = h.run().await;
    let a = &h.attempts(&o.run_id).await[0];
    assert_eq!(a.output.as_deref(), Some("echo: ***"));
}

/// Records what `notify` nodes hand it.
#[derive(Default)]
struct Recorder(std::sync::Mutex<Vec<String>>);

impl flowguard::nodes::Notifier for Recorder {
    fn notify<'a>(&'a self, n: flowguard::nodes::Notice<'a>) -> futures::future::BoxFuture<'a, anyhow::Result<String>> {
        let line = format!("{} {} {} {}", n.channel, n.severity, n.title, n.text);
        Box::pin(async move {
            self.0.lock().unwrap().push(line);
            Ok("n-1".into())
        })
    }
}

#[tokio::test]
async fn notify_sends_through_the_engine_that_runs_it_not_a_process_global() {
    let flow = "name: tell\nnodes:\n  - id: say\n    kind: notify\n    channel: ops\n    severity: high\n    title: t\n    text: 'hi {{ run.flow }}'\n";
    let h = harness("locale: en\n", flow).await;
    let (a, b) = (std::sync::Arc::new(Recorder::default()), std::sync::Arc::new(Recorder::default()));
    let req = || flowguard::engine::RunRequest { flow: h.flow.clone(), inputs: Default::default(), trigger: "test".into(), canary: false };
    let with_a = h.engine.clone().with_notifier(a.clone());
    let with_b = h.engine.clone().with_notifier(b.clone());
    assert_eq!(with_a.run(req()).await.unwrap().status, RunStatus::Succeeded);
    assert_eq!(with_b.run(req()).await.unwrap().status, RunStatus::Succeeded);
    assert_eq!(*a.0.lock().unwrap(), vec!["ops high t hi tell"]);
    assert_eq!(b.0.lock().unwrap().len(), 1, "each engine sends through its own alerting");
    let without = h.run().await;
    assert_eq!(without.status, RunStatus::Failed);
    assert!(without.error_message.unwrap_or_default().contains("alerting is not set up"));
}

/// README, "When a record is durable": a pure node's record may still be on its way to the
/// database while the run goes on, but a node that reaches outside starts only once every record
/// of its run before it is committed, and the run's end only once all of them are. Another
/// connection holds SQLite's write lock from the first template node on, so those records cannot
/// commit until it lets go: when the call arrives first, it lets go at once and the test fails.
#[tokio::test]
async fn a_node_that_reaches_outside_starts_only_after_the_records_before_it_are_committed() {
    use axum::routing::post;
    use std::sync::{Arc, OnceLock, mpsc};
    let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel::<usize>();
    let (called_tx, called) = mpsc::channel::<()>();
    let called_tx = Arc::new(std::sync::Mutex::new(called_tx));
    let store = Arc::new(OnceLock::<flowguard::store::Store>::new());
    let reader = store.clone();
    let app = axum::Router::new().route(
        "/publish",
        post(move || {
            let (reader, seen_tx, called_tx) = (reader.clone(), seen_tx.clone(), called_tx.clone());
            async move {
                // What another process would find in the database now: committed rows only.
                let store = reader.get().expect("store");
                let runs = store.list_runs(&Default::default()).await.expect("runs");
                let committed = store.attempts(&runs[0].id).await.expect("attempts").len();
                let _ = called_tx.lock().unwrap().send(());
                let _ = seen_tx.send(committed);
                "{\"ok\":true}"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await.ok() });
    let mut flow = String::from("name: f\nnodes:\n");
    for i in 0..8 {
        flow.push_str(&format!("  - id: t{i}\n    kind: template\n    text: \"step {i}\"\n"));
    }
    flow.push_str(&format!("  - id: publish\n    kind: http\n    url: \"{base}/publish\"\n    method: POST\n    body: {{ a: 1 }}\n"));
    flow.push_str("  - id: after\n    kind: template\n    text: done\n");
    let h = harness("timezone: UTC\n", &flow).await;
    assert!(store.set(h.engine.store.clone()).is_ok(), "set once");
    let url = format!("sqlite://{}", h.dir().join("fg.db").display());
    let called = Arc::new(std::sync::Mutex::new(called));
    let engine = h.engine.clone().with_observer(Arc::new(move |e: &Event| {
        if !matches!(e, Event::NodeStarted { node, .. } if node == "t0") {
            return;
        }
        let (url, called) = (url.clone(), called.clone());
        let (locked_tx, locked) = mpsc::channel::<()>();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(async {
                let pool = flowguard::store::Pool::connect(&url, &Default::default()).await.expect("pool");
                let tx = pool.begin().await.expect("the write lock");
                locked_tx.send(()).expect("locked");
                // Held until the call arrives, or for a second: long enough for a call that does
                // not wait to arrive while the records cannot commit.
                let _ = called.lock().unwrap().recv_timeout(Duration::from_secs(1));
                drop(tx);
                pool.close().await;
            });
        });
        locked.recv().expect("the lock is taken");
    }));
    let o = engine
        .run(flowguard::engine::RunRequest { flow: h.flow.clone(), inputs: Default::default(), trigger: "test".into(), canary: false })
        .await
        .expect("run");
    assert_eq!(o.status, RunStatus::Succeeded);
    assert_eq!(seen.recv().await, Some(8), "the eight template records were committed before the call");
    let a = h.attempts(&o.run_id).await;
    assert_eq!(a.len(), 10, "every record is committed when the run's end is");
}

/// README, "When a record is durable": pure nodes' records are kept at most 16 to a run before
/// they are handed to the writer, so a long stretch of pure nodes is committed as it goes, not
/// only at the run's end. While the run starts its 21st template node (the engine held there),
/// another connection finds at least the first 16 records committed.
#[tokio::test]
async fn a_long_stretch_of_pure_nodes_is_committed_as_it_goes() {
    use std::sync::{Arc, mpsc};
    let mut flow = String::from("name: f\nnodes:\n");
    for i in 0..24 {
        flow.push_str(&format!("  - id: t{i}\n    kind: template\n    text: \"step {i}\"\n"));
    }
    let h = harness("timezone: UTC\n", &flow).await;
    let url = format!("sqlite://{}", h.dir().join("fg.db").display());
    let (seen_tx, seen) = mpsc::channel::<i64>();
    let engine = h.engine.clone().with_observer(Arc::new(move |e: &Event| {
        let Event::NodeStarted { node, run_id, .. } = e else { return };
        if node != "t20" {
            return;
        }
        let (url, run_id, seen_tx) = (url.clone(), run_id.clone(), seen_tx.clone());
        // The engine waits here while another connection watches the records arrive.
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            let committed = rt.block_on(async {
                let pool = flowguard::store::Pool::connect(&url, &Default::default()).await.expect("pool");
                let count = || async {
                    let rows = pool
                        .fetch(
                            "SELECT COUNT(*) FROM node_attempts WHERE run_id = ?",
                            &[run_id.as_str().into()],
                            &[flowguard::store::Ty::I64],
                        )
                        .await
                        .expect("count");
                    rows[0][0].i64().unwrap_or(0)
                };
                let start = std::time::Instant::now();
                let mut n = count().await;
                while n < 16 && start.elapsed() < Duration::from_secs(30) {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    n = count().await;
                }
                pool.close().await;
                n
            });
            seen_tx.send(committed).expect("seen");
        })
        .join()
        .expect("watcher");
    }));
    let o = engine
        .run(flowguard::engine::RunRequest { flow: h.flow.clone(), inputs: Default::default(), trigger: "test".into(), canary: false })
        .await
        .expect("run");
    assert_eq!(o.status, RunStatus::Succeeded);
    let committed = seen.recv().expect("the watcher ran");
    assert!((16..=20).contains(&committed), "{committed} of the 20 records before t20 were committed while it started");
    assert_eq!(h.attempts(&o.run_id).await.len(), 24);
}

/// A run's last pure records go with its end, in one write. When the database refuses that write
/// because of the records, the run is not left `running` with no end: the records go alone, and
/// the run ends `failed` on the node of the first of them (the error names the refusal).
#[tokio::test]
async fn a_run_whose_last_records_are_refused_fails_on_them_and_its_end_is_recorded() {
    let flow = "name: f\nnodes:\n  - id: t0\n    kind: template\n    text: a\n  - id: t1\n    kind: template\n    text: b\n";
    let h = harness("timezone: UTC\n", flow).await;
    h.engine
        .store
        .pool()
        .exec(
            "CREATE TRIGGER no_t1 BEFORE INSERT ON node_attempts WHEN NEW.node_id = 't1' BEGIN SELECT RAISE(ABORT, 't1 refused'); END",
            &[],
        )
        .await
        .expect("trigger");
    let o = h.run().await;
    assert_eq!((o.status, o.failed_node.as_deref(), o.error_kind), (RunStatus::Failed, Some("t0"), Some(ErrorKind::Internal)));
    assert!(o.error_message.as_deref().is_some_and(|m| m.contains("t1 refused")), "{:?}", o.error_message);
    let row = h.record(&o.run_id).await;
    assert_eq!((row.status, row.failed_node.as_deref()), (RunStatus::Failed, Some("t0")));
}

/// A run claimed from the queue (by any process) is counted in the rollups with its last records,
/// which go with its end.
#[tokio::test]
async fn a_claimed_run_counts_its_last_records_in_the_rollups() {
    use flowguard::engine::resume::{Claim, Start};
    let flow = "name: f\nnodes:\n  - id: t0\n    kind: template\n    text: a\n  - id: t1\n    kind: template\n    text: b\n";
    let h = harness("timezone: UTC\n", flow).await;
    let req = || flowguard::engine::RunRequest { flow: h.flow.clone(), inputs: Default::default(), trigger: "test".into(), canary: false };
    let (record, inputs) = h.engine.queued_record(&req(), "claimed-1");
    h.engine.store.enqueue(&record, false, &inputs).await.expect("queue");
    let claimed = h.engine.store.claim_queued(1, &Default::default()).await.expect("claim");
    assert_eq!(claimed.len(), 1);
    let start =
        Start { run_id: Some("claimed-1".into()), resume: None, claimed: Some(Claim { at: claimed[0].run.started_at, blocked: false }) };
    let o = h.engine.start(req(), start, std::future::pending()).await.expect("run");
    assert_eq!(o.status, RunStatus::Succeeded);
    let w = h.engine.store.rollup_window(Some("f"), 0, 1 << 50, false).await.expect("rollups");
    let mut counted: Vec<(String, i64)> = w.nodes.iter().map(|n| (n.1.clone(), n.4[0])).collect();
    counted.sort();
    assert_eq!(counted, [("t0".to_string(), 1), ("t1".to_string(), 1)]);
    assert_eq!(w.runs.iter().map(|r| r.3[0]).sum::<i64>(), 1, "{:?}", w.runs);
}

/// A hundred runs at once, each calling one model twice: the second calls go over the connections
/// the first ones opened, none is opened again (a pool that kept 64 idle connections per host
/// closed the rest after every round of calls and connected again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_to_one_model_keep_their_connections_for_the_next_calls() {
    const RUNS: usize = 100;
    let fake = FakeOpenAi::start(vec![Reply::Together(RUNS, "{\"ok\": true}".into())]).await;
    let node = |id: &str| format!("  - id: {id}\n    kind: llm\n    model: m\n    prompt: write\n    retry: {{ policy: none }}\n");
    let h = harness(&openai_config(&fake.base_url), &format!("name: f\nnodes:\n{}{}", node("a"), node("b"))).await;
    let outcomes = futures::future::join_all((0..RUNS).map(|_| h.run())).await;
    assert!(outcomes.iter().all(|o| o.status == RunStatus::Succeeded), "{:?}", outcomes.iter().map(|o| o.status).collect::<Vec<_>>());
    assert_eq!(fake.requests().len(), 2 * RUNS);
    assert_eq!(fake.connections(), RUNS, "every run's second call reuses a connection");
}
