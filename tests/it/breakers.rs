//! A breaker per model, shared through the database: two engines with their own stores on one
//! database (as two processes) drive a primary model over its threshold on the virtual clock;
//! calls then skip it for the backup, one probe goes after the cooldown, its success closes the
//! breaker; the open is a firing alert on the model and the close resolves it. With every model
//! of a chain open, the node fails `no_healthy_model` at once.

use crate::support::db::{TestDb, backends};
use crate::support::fake_openai::{FakeOpenAi, KEY, Reply};
use flowguard::alert::Alerter;
use flowguard::clock::{SharedClock, TestClock};
use flowguard::config::Config;
use flowguard::engine::{Engine, RunOutcome, RunRequest};
use flowguard::flow::Flow;
use flowguard::nodes::Registry;
use flowguard::store::{AlertFilter, Store};
use flowguard::vocab::{AttemptStatus, ErrorKind, RunStatus, Severity};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const T0: i64 = 1_800_000_000_000;
const GOOD: &str = r#"{"title":"露营"}"#;

fn config(primary_url: &str) -> Config {
    let yaml = format!(
        "defaults:\n  breaker: {{ min_calls: 4, failure_rate: 50, window: 10m, cooldown: 30s }}\nmodels:\n  primary:\n    provider: openai\n    base_url: {primary_url}\n    model: fake-model\n    api_key: {KEY}\n    fallback: [backup]\n  backup:\n    provider: simulated\n    simulate: {{ latency: 10ms }}\n"
    );
    Config::parse(Path::new("flowguard.yaml"), &yaml, Path::new("/tmp"), &|_| None).unwrap_or_else(|d| panic!("{d}"))
}

/// One "process": its own store on the database, its own engine and alerter, the shared clock.
struct Proc {
    engine: Engine,
    alerter: Alerter,
    chain: Arc<Flow>,
    alone: Arc<Flow>,
}

async fn process(cfg: &Config, db: &TestDb, clock: &TestClock, dir: &Path) -> Proc {
    let reg = Arc::new(Registry::from_config(cfg).expect("registry"));
    let load = |name: &str, model: &str| {
        let path = dir.join(format!("{name}.yaml"));
        std::fs::write(
            &path,
            format!("name: {name}\nnodes:\n  - id: script\n    kind: llm\n    {model}\n    prompt: 写一个脚本\n    json: true\n"),
        )
        .unwrap();
        Arc::new(flowguard::flow::load(&path, &reg).unwrap_or_else(|e| panic!("{e}")))
    };
    let chain = load("chain", "model: primary");
    let alone = load("alone", "models: [primary]");
    let store: Store = db.open().await;
    let shared: SharedClock = Arc::new(clock.clone());
    let alerter = Alerter::new(cfg, store.clone(), shared.clone()).unwrap();
    let engine = Engine::new(store, reg, shared, 65536).with_observer(alerter.observer());
    Proc { engine, alerter, chain, alone }
}

impl Proc {
    async fn run(&self, flow: &Arc<Flow>) -> RunOutcome {
        let req = RunRequest { flow: flow.clone(), inputs: Default::default(), trigger: "test".into(), canary: false };
        let o = self.engine.run(req).await.expect("run");
        self.alerter.settle().await;
        o
    }
}

backends! {
    async fn a_failing_model_is_skipped_while_its_breaker_is_open_then_one_probe_closes_it(db: TestDb) {
        let fake = FakeOpenAi::start(vec![Reply::Error(500, None, None)]).await;
        let cfg = config(&fake.base_url);
        let dir = tempfile::tempdir().unwrap();
        let clock = TestClock::new(T0);
        let a = process(&cfg, &db, &clock, dir.path()).await;
        let b = process(&cfg, &db, &clock, dir.path()).await;
        let store = a.engine.store.clone();

        // Three failed calls in A: under min_calls, the breaker stays closed.
        let first = a.run(&a.chain).await;
        assert_eq!(first.status, RunStatus::Recovered);
        assert_eq!(fake.requests().len(), 3);
        assert_eq!(store.breaker("primary").await.unwrap().state, "closed");
        // B's first failure is the fourth of the window (4/4 ≥ 50 %): B opens the breaker, and
        // its run goes to the backup without paying the other retries.
        let second = b.run(&b.chain).await;
        assert_eq!(second.status, RunStatus::Recovered);
        assert_eq!(fake.requests().len(), 4, "the retries after the open skipped the primary");
        let row = store.breaker("primary").await.unwrap();
        assert_eq!((row.state.as_str(), row.calls, row.failures), ("open", 4, 4));
        let atts = b.engine.store.attempts(&second.run_id).await.unwrap();
        let skipped = atts.iter().find(|a| a.status == AttemptStatus::Skipped).expect("a skipped attempt");
        assert_eq!(skipped.action.as_deref(), Some("next_model"));
        assert!(skipped.error_message.as_deref().unwrap().starts_with("breaker_open"), "{skipped:?}");
        assert_eq!(skipped.model.as_deref(), Some("openai:fake-model"));

        // A sees the open breaker (shared through the database): straight to the backup.
        let third = a.run(&a.chain).await;
        assert_eq!(third.status, RunStatus::Recovered);
        assert_eq!(fake.requests().len(), 4, "no call to the open model");
        let atts = a.engine.store.attempts(&third.run_id).await.unwrap();
        assert_eq!(atts.len(), 2, "{atts:?}");
        assert_eq!((atts[0].status, atts[0].action.as_deref()), (AttemptStatus::Skipped, Some("next_model")));
        assert_eq!((atts[1].status, atts[1].model.as_deref()), (AttemptStatus::Succeeded, Some("simulated:backup")));

        // Every model of the chain open: the node fails `no_healthy_model` at once, high.
        let alone = a.run(&a.alone).await;
        assert_eq!((alone.status, alone.error_kind, alone.severity), (RunStatus::Failed, Some(ErrorKind::NoHealthyModel), Some(Severity::High)));
        assert_eq!(fake.requests().len(), 4);
        assert!(alone.error_message.as_deref().unwrap().contains("breaker_open"), "{alone:?}");

        // One open, one firing alert on the model (not one per process).
        let events = store.breaker_events(Some("primary"), 10).await.unwrap();
        assert_eq!(events.iter().filter(|e| e.event == "opened").count(), 1, "{events:?}");
        let opened = events.iter().find(|e| e.event == "opened").unwrap();
        assert_eq!((opened.calls, opened.failures, opened.at), (4, 4, row.since));
        let alerts = store.list_alerts(&AlertFilter { flow: Some("model:primary".into()), ..Default::default() }).await.unwrap();
        assert_eq!(alerts.len(), 1, "{alerts:?}");
        assert_eq!((alerts[0].status.as_str(), alerts[0].error_kind.as_str(), alerts[0].count), ("firing", "breaker_open", 1));

        // Before the cooldown is over nothing probes.
        clock.advance(Duration::from_secs(10));
        a.run(&a.chain).await;
        assert_eq!(fake.requests().len(), 4);

        // After it, the provider is back: runs start in both processes at once and exactly one
        // call probes the model (the other skips it while the probe is out); its success closes it.
        clock.advance(Duration::from_secs(30));
        fake.set_script(vec![Reply::Slow(Duration::from_millis(300), GOOD.into())]);
        let (ra, rb) = tokio::join!(a.run(&a.chain), b.run(&b.chain));
        assert!(ra.status.is_success() && rb.status.is_success(), "{ra:?} {rb:?}");
        assert_eq!(fake.requests().len(), 5, "one probe call");
        let events = store.breaker_events(Some("primary"), 10).await.unwrap();
        let names: Vec<&str> = events.iter().rev().map(|e| e.event.as_str()).collect();
        assert_eq!(names, ["opened", "probe", "closed"], "{events:?}");
        assert_eq!(store.breaker("primary").await.unwrap().state, "closed");
        let alerts = store.list_alerts(&AlertFilter { flow: Some("model:primary".into()), ..Default::default() }).await.unwrap();
        assert_eq!(alerts.len(), 1);
        assert_eq!(alerts[0].status, "resolved", "{alerts:?}");

        // Closed: calls go to the primary again, in both processes, from a fresh window.
        fake.set_script(vec![Reply::Content(GOOD.into())]);
        let ok = b.run(&b.chain).await;
        assert_eq!(ok.status, RunStatus::Succeeded);
        assert_eq!(fake.requests().len(), 6);
    }

    async fn a_failed_probe_opens_the_breaker_again_and_alerts_once_more(db: TestDb) {
        let fake = FakeOpenAi::start(vec![Reply::Error(503, None, None)]).await;
        let cfg = config(&fake.base_url);
        let dir = tempfile::tempdir().unwrap();
        let clock = TestClock::new(T0);
        let a = process(&cfg, &db, &clock, dir.path()).await;
        let store = a.engine.store.clone();
        a.run(&a.chain).await;
        a.run(&a.chain).await;
        assert_eq!(store.breaker("primary").await.unwrap().state, "open");
        let calls = fake.requests().len();
        clock.advance(Duration::from_secs(31));
        // The probe fails: open again, no retry on the model, the backup answers.
        let o = a.run(&a.chain).await;
        assert_eq!(o.status, RunStatus::Recovered);
        assert_eq!(fake.requests().len(), calls + 1, "only the probe");
        let names: Vec<String> = store.breaker_events(Some("primary"), 10).await.unwrap().into_iter().rev().map(|e| e.event).collect();
        assert_eq!(names, ["opened", "probe", "reopened"]);
        let alerts = store.list_alerts(&AlertFilter { flow: Some("model:primary".into()), ..Default::default() }).await.unwrap();
        assert_eq!((alerts.len(), alerts[0].status.as_str(), alerts[0].count), (1, "firing", 2), "{alerts:?}");
        let status = a.engine.reg.breakers.status(&store, clock_now(&clock)).await.unwrap();
        let primary = status.iter().find(|s| s.model == "primary").unwrap();
        assert_eq!((primary.state.as_str(), primary.probe_at), ("open", Some(primary.since.unwrap() + 30_000)));
    }

    async fn replies_that_are_not_what_was_asked_for_do_not_count_against_the_model(db: TestDb) {
        // Malformed JSON is the text's fault (generation_malformed), not the provider's.
        let fake = FakeOpenAi::start(vec![Reply::Content("不是 JSON".into())]).await;
        let cfg = config(&fake.base_url);
        let dir = tempfile::tempdir().unwrap();
        let clock = TestClock::new(T0);
        let a = process(&cfg, &db, &clock, dir.path()).await;
        for _ in 0..3 {
            a.run(&a.chain).await;
        }
        assert!(fake.requests().len() >= 6, "{}", fake.requests().len());
        assert_eq!(a.engine.store.breaker("primary").await.unwrap().state, "closed");
        assert!(a.engine.store.breaker_events(None, 10).await.unwrap().is_empty());
    }
}

fn clock_now(c: &TestClock) -> i64 {
    use flowguard::clock::Clock;
    c.now_ms()
}

/// What users see of a breaker: a primary that always fails opens after one run; `/api/v1/health`
/// says `degraded` with the model `open`, `/metrics` gives its state and failure rate, and
/// `flowguard models` shows it from the same database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_breaker_shows_in_health_metrics_and_flowguard_models() {
    use crate::serve::{OPERATE, READ, spawn_app_with};
    let text = crate::serve::config("defaults:\n  breaker: { min_calls: 2, failure_rate: 50, window: 10m, cooldown: 10m }\n").replace(
        "models:\n",
        "models:\n  primary:\n    provider: simulated\n    simulate: { latency: 5ms, faults: { server_error: 1.0 } }\n    fallback: [backup]\n  backup:\n    provider: simulated\n    simulate: { latency: 5ms }\n",
    );
    let flow = "name: script\nnodes:\n  - id: write\n    kind: llm\n    model: primary\n    prompt: 写一个脚本\n    retry: { policy: fixed, max_attempts: 3, delay: 10ms }\n";
    let app = spawn_app_with(&text, &[("script", flow)]).await;
    let (code, r) = app.post("/api/v1/flows/script/runs", OPERATE, &serde_json::json!({})).await;
    assert_eq!(code, 202, "{r}");
    let run = app.wait_run(r["run_id"].as_str().unwrap()).await;
    assert_eq!(run["status"], "recovered", "the backup answered: {run}");

    let (_, health) = app.get("/api/v1/health", READ).await;
    assert_eq!(health["status"], "degraded", "{health}");
    let primary = health["models"].as_array().unwrap().iter().find(|m| m["model"] == "primary").cloned().unwrap_or_default();
    assert_eq!(primary["state"], "open", "{health}");

    let metrics = app.http.get(format!("{}/metrics", app.base)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("flowguard_model_breaker_state{model=\"primary\",state=\"open\"} 1"), "{metrics}");
    assert!(metrics.contains("flowguard_model_failure_rate{model=\"primary\"} 1"), "{metrics}");

    let o = app.project.run(&["models", "--format", "json"]);
    assert_eq!(o.status.code(), Some(0), "{}", crate::support::stderr(&o));
    let models: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    let text = models.to_string();
    assert!(text.contains("\"primary\"") && text.contains("\"open\""), "{text}");
    app.shutdown().await;
}
