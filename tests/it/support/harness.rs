//! Drives the library directly: a config and a flow from text, a real SQLite store in a temp dir,
//! the injected clock, and a record of the engine's events.

use flowguard::clock::{Clock, SharedClock, TestClock};
use flowguard::config::Config;
use flowguard::engine::{Engine, Event, RunOutcome, RunRequest};
use flowguard::flow::Flow;
use flowguard::nodes::Registry;
use flowguard::store::{AttemptRecord, RunRecord, Store};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct Harness {
    pub engine: Engine,
    pub flow: Arc<Flow>,
    pub clock: TestClock,
    pub events: Arc<Mutex<Vec<Event>>>,
    /// Keeps the project directory (and its database) alive as long as the harness.
    _dir: tempfile::TempDir,
}

/// Builds a harness with the virtual clock. `env` feeds `${VARS}` in the config.
pub async fn harness(config: &str, flow: &str) -> Harness {
    harness_with(config, flow, &[], None).await
}

pub async fn harness_with(config: &str, flow: &str, env: &[(&str, &str)], clock: Option<SharedClock>) -> Harness {
    let dir = tempfile::tempdir().expect("tempdir");
    let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let cfg = Config::parse(&dir.path().join("flowguard.yaml"), config, dir.path(), &|k| {
        env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    })
    .unwrap_or_else(|e| panic!("config: {e}"));
    let reg = Arc::new(Registry::from_config(&cfg).expect("registry"));
    let flow_path = dir.path().join("flow.yaml");
    std::fs::write(&flow_path, flow).expect("write flow");
    let flow = Arc::new(flowguard::flow::load(&flow_path, &reg).unwrap_or_else(|e| panic!("flow: {e}")));
    let store = Store::open(&format!("sqlite://{}", dir.path().join("fg.db").display()), 4, Duration::from_secs(5)).await.expect("store");
    let test_clock = TestClock::new(1_764_000_000_000);
    let clock: SharedClock = clock.unwrap_or_else(|| Arc::new(test_clock.clone()));
    let events: Arc<Mutex<Vec<Event>>> = Arc::default();
    let sink = events.clone();
    let engine = Engine::new(store, reg, clock, cfg.storage.max_payload_bytes).with_observer(Arc::new(move |e: &Event| {
        sink.lock().unwrap().push(e.clone());
    }));
    Harness { engine, flow, clock: test_clock, events, _dir: dir }
}

impl Harness {
    pub async fn run(&self) -> RunOutcome {
        self.run_with(serde_json::Map::new()).await
    }

    pub async fn run_with(&self, inputs: serde_json::Map<String, serde_json::Value>) -> RunOutcome {
        self.engine.run(RunRequest { flow: self.flow.clone(), inputs, trigger: "test".into(), canary: false }).await.expect("run")
    }

    pub async fn attempts(&self, run_id: &str) -> Vec<AttemptRecord> {
        self.engine.store.attempts(run_id).await.expect("attempts")
    }

    pub async fn record(&self, run_id: &str) -> RunRecord {
        self.engine.store.get_run(run_id).await.expect("get_run").expect("run exists")
    }

    /// The project directory (its database is `fg.db`).
    pub fn dir(&self) -> &std::path::Path {
        self._dir.path()
    }

    pub fn now(&self) -> i64 {
        self.clock.now_ms()
    }
}

/// A config with one OpenAI-compatible model `m` at `base_url` using the fake's key.
pub fn openai_config(base_url: &str) -> String {
    format!(
        "models:\n  m:\n    provider: openai\n    base_url: {base_url}\n    model: fake-model\n    api_key: {}\n",
        super::fake_openai::KEY
    )
}
