//! Many processes on one database: run leases with fencing, the run queue, and what happens once.
//! Real `serve` and `run` processes are killed (SIGKILL), stopped (SIGSTOP) and continued; the
//! tests wait on the database, never on fixed sleeps.

use crate::serve::{OPERATE, READ};
use crate::support::db::{Kind, TestDb, backends};
use crate::support::fake_publisher::{Answer, FakePublisher};
use crate::support::{Project, bin, count, spawn_serve, stderr, trigger};
use flowguard::store::{Store, Ty};
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// Short leases so that takeovers happen within a test.
fn config(url: &str, extra: &str) -> String {
    format!(
        r#"
storage:
  url: "{url}"
  lease: 1s
  lease_heartbeat: 200ms
timezone: UTC
models:
  slow:
    provider: simulated
    simulate: {{ latency: 1500ms }}
  quick:
    provider: simulated
    simulate: {{ latency: 150ms }}
server:
  listen: 127.0.0.1:0
  watch_interval: 0s
  shutdown_grace: 100ms
  tokens:
    - {{ name: reader, token: "{READ}", scopes: [read] }}
    - {{ name: operator, token: "{OPERATE}", scopes: [operate] }}
{extra}
"#
    )
}

/// greet → think (a slow model) → done; resumed from its last completed node after a takeover.
const SLOW: &str = r#"
name: slow
on_interrupt: resume
inputs: { topic: cats }
nodes:
  - id: greet
    kind: template
    value: { topic: "{{ input.topic }}" }
  - id: think
    kind: llm
    model: slow
    prompt: "write about {{ nodes.greet.topic }}"
  - id: done
    kind: template
    text: "{{ nodes.greet.topic }}: {{ nodes.think }}"
"#;

/// A `flowguard serve` process.
struct Worker {
    child: Child,
    base: String,
}

impl Worker {
    fn start(p: &Project) -> Worker {
        let (child, base, _) = spawn_serve(p);
        Worker { child, base }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    async fn trigger(&self, flow: &str) -> String {
        trigger(&self.base, flow, OPERATE).await
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.kill();
    }
}

fn signal(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill").args([sig, &pid.to_string()]).status().expect("kill");
    assert!(ok.success(), "kill {sig} {pid}");
}

async fn strings(store: &Store, sql: &str) -> Vec<String> {
    store.pool().fetch(sql, &[], &[Ty::Str]).await.expect(sql).into_iter().filter_map(|r| r[0].str()).collect()
}

/// Polls until `pred` holds (up to two minutes).
async fn until<F: std::future::Future<Output = bool>>(what: &str, mut pred: impl FnMut() -> F) {
    let start = Instant::now();
    while !pred().await {
        assert!(start.elapsed() < Duration::from_secs(120), "gave up waiting: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn wall_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("time").as_millis() as i64
}

/// `flowguard run slow` in its own process.
fn spawn_run(p: &Project) -> Child {
    bin()
        .current_dir(p.path())
        .args(["run", "slow", "--format", "json"])
        .env("FLOWGUARD_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn flowguard run")
}

backends! {
    async fn a_cli_run_alive_while_serve_starts_is_left_alone(db: TestDb) {
        let p = Project::with_config(&config(db.url(), ""));
        p.write("flows/slow.yaml", SLOW);
        let store = db.open().await;
        let cli = spawn_run(&p);
        until("the CLI run records its first node", || async { count(&store, "SELECT COUNT(*) FROM node_attempts WHERE node_id = 'greet'").await == 1 }).await;
        // serve starts while the run thinks (1.5 s, longer than the 1 s lease: only the heartbeat keeps it).
        let _serve = Worker::start(&p);
        let o = cli.wait_with_output().expect("wait");
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        assert_eq!(count(&store, "SELECT COUNT(*) FROM runs").await, 1, "one run");
        assert_eq!(strings(&store, "SELECT status FROM runs").await, ["succeeded"], "one final status");
        assert_eq!(count(&store, "SELECT COUNT(*) FROM node_attempts").await, 3, "one set of attempts");
        assert_eq!(count(&store, "SELECT epoch FROM runs").await, 1, "never taken over");
        store.close().await;
    }

    async fn a_stopped_process_past_its_lease_is_refused_and_the_new_owner_stands(db: TestDb) {
        let p = Project::with_config(&config(db.url(), ""));
        p.write("flows/slow.yaml", SLOW);
        let store = db.open().await;
        let cli = spawn_run(&p);
        until("the CLI run records its first node", || async { count(&store, "SELECT COUNT(*) FROM node_attempts WHERE node_id = 'greet'").await == 1 }).await;
        signal(cli.id(), "-STOP");
        let _serve = Worker::start(&p);
        // serve takes the run over once the stopped process's lease expires, and finishes it.
        until("serve finishes the run", || async { strings(&store, "SELECT status FROM runs").await == ["succeeded"] }).await;
        assert_eq!(count(&store, "SELECT epoch FROM runs").await, 2, "taken over once");
        let before = count(&store, "SELECT COUNT(*) FROM node_attempts").await;
        signal(cli.id(), "-CONT");
        let o = cli.wait_with_output().expect("wait");
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert!(err.contains("taken over by another process"), "{err}");
        // Its late writes were refused: the new owner's result stands.
        assert_eq!(strings(&store, "SELECT status FROM runs").await, ["succeeded"]);
        assert_eq!(count(&store, "SELECT COUNT(*) FROM node_attempts").await, before);
        assert_eq!(count(&store, "SELECT COUNT(*) FROM node_attempts WHERE node_id = 'think'").await, 1);
        assert_eq!(count(&store, "SELECT COUNT(*) FROM node_attempts WHERE node_id = 'greet'").await, 1, "the finished node is kept, not run again");
        store.close().await;
    }
}

/// SQLite is single-worker: the second `serve` names the first; CLI commands still work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_serve_on_one_sqlite_file_is_refused() {
    crate::support::db::with_backend(Kind::Sqlite, |db: TestDb| async move {
        let p = Project::with_config(&config(db.url(), ""));
        p.write("flows/slow.yaml", SLOW);
        let first = Worker::start(&p);
        let o = p.run(&["serve", "--listen", "127.0.0.1:0"]);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(err.contains("another `flowguard serve`") && err.contains(&format!("pid {}", first.pid())), "{err}");
        let o = p.run(&["runs"]);
        assert!(o.status.success(), "{}", stderr(&o));
    })
    .await
}

/// A flow with a side effect: publish is called with the run's idempotency key.
fn publish_flow() -> String {
    r#"
name: pub
on_interrupt: resume
nodes:
  - id: greet
    kind: template
    text: hello
  - id: think
    kind: llm
    model: quick
    prompt: "{{ nodes.greet }}"
  - id: publish
    kind: http
    endpoint: p
    path: /v1/videos
    body: { title: "{{ nodes.think }}" }
    side_effect: true
    idempotent: true
  - id: done
    kind: template
    text: "{{ nodes.greet }}"
"#
    .to_owned()
}

backends! {
    networked async fn workers_killed_mid_run_lose_nothing_and_publish_once(db: TestDb) {
        let publisher = FakePublisher::start(vec![Answer::Slow(Duration::from_millis(200))]).await;
        let endpoints = format!("endpoints:\n  p:\n    base_url: {}\n", publisher.base_url);
        let p = Project::with_config(&config(db.url(), &endpoints));
        p.write("flows/pub.yaml", &publish_flow());
        let store = db.open().await;
        let mut workers: Vec<Worker> = (0..2).map(|_| Worker::start(&p)).collect();
        let mut runs: Vec<String> = Vec::new();
        let mut kills = 0;
        // Takeovers seen: (the dead owner's lease end, when the new epoch was first seen).
        let mut takeovers: Vec<(i64, i64)> = Vec::new();
        while kills < 20 {
            for _ in 0..2 {
                runs.push(workers[0].trigger("pub").await);
            }
            // Kill the owner of a running run, as soon as there is one.
            let pids: Vec<u32> = workers.iter().map(Worker::pid).collect();
            let started = Instant::now();
            let (run_id, pid) = loop {
                let running = store
                    .pool()
                    .fetch("SELECT id, owner FROM runs WHERE status = 'running'", &[], &[Ty::Str, Ty::Str])
                    .await
                    .expect("running runs");
                let found = running.into_iter().find_map(|r| {
                    let owner = r[1].str().unwrap_or_default();
                    let pid: u32 = owner.rsplit(':').nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
                    pids.contains(&pid).then(|| (r[0].str().unwrap_or_default(), pid))
                });
                if let Some(v) = found {
                    break v;
                }
                assert!(started.elapsed() < Duration::from_secs(120), "no run ever ran");
                tokio::time::sleep(Duration::from_millis(10)).await;
            };
            let i = workers.iter().position(|w| w.pid() == pid).expect("the owner is ours");
            let epoch = count(&store, &format!("SELECT epoch FROM runs WHERE id = '{run_id}'")).await;
            workers[i].kill();
            kills += 1;
            // Dead: its lease end is final until a takeover moves the epoch on.
            let lease_end = count(&store, &format!("SELECT lease_until FROM runs WHERE id = '{run_id}' AND epoch = {epoch}")).await;
            workers[i] = Worker::start(&p);
            let started = Instant::now();
            let seen = loop {
                let e = count(&store, &format!("SELECT epoch FROM runs WHERE id = '{run_id}'")).await;
                let now = wall_ms();
                if e > epoch {
                    break now;
                }
                // It may have ended just before the kill.
                if count(&store, &format!("SELECT COUNT(*) FROM runs WHERE id = '{run_id}' AND status = 'running'")).await == 0 {
                    break i64::MAX;
                }
                assert!(started.elapsed() < Duration::from_secs(120), "run {run_id} was never taken over");
                tokio::time::sleep(Duration::from_millis(10)).await;
            };
            if lease_end > 0 && seen < i64::MAX {
                takeovers.push((lease_end, seen));
            }
        }
        until("every run reaches a final state", || async {
            count(&store, "SELECT COUNT(*) FROM runs WHERE status IN ('queued', 'running')").await == 0
        })
        .await;
        assert_eq!(count(&store, "SELECT COUNT(*) FROM runs").await, runs.len() as i64);
        let statuses = strings(&store, "SELECT DISTINCT status FROM runs").await;
        assert!(statuses.iter().all(|s| s == "succeeded" || s == "recovered"), "{statuses:?}");
        for (lease_end, seen) in &takeovers {
            assert!(seen >= lease_end, "a run was taken over before its lease expired ({seen} < {lease_end})");
        }
        // Finished attempts are kept and never doubled; each node completed once per run.
        for node in ["greet", "think", "publish", "done"] {
            let sql = format!("SELECT COUNT(*) FROM node_attempts WHERE node_id = '{node}' AND status = 'succeeded'");
            assert_eq!(count(&store, &sql).await, runs.len() as i64, "{node}");
        }
        // Publish: one publication per run; a second call only for a run taken over, with the same key.
        let keys = publisher.keys();
        let mut calls: HashMap<String, usize> = HashMap::new();
        for k in &keys {
            *calls.entry(k.clone().expect("every call carries a key")).or_default() += 1;
        }
        assert_eq!(publisher.published(), runs.len());
        let ids: HashSet<String> = runs.iter().map(|r| format!("{r}:publish")).collect();
        for (key, n) in &calls {
            assert!(ids.contains(key), "an unknown key {key}");
            if *n > 1 {
                let run_id = key.trim_end_matches(":publish");
                let epoch = count(&store, &format!("SELECT epoch FROM runs WHERE id = '{run_id}'")).await;
                assert!(epoch > 1, "run {run_id} published {n} times without a takeover");
            }
        }
        store.close().await;
    }

    networked async fn one_cron_fire_and_one_daily_report_across_three_workers(db: TestDb) {
        let extra = "channels:\n  terminal:\n    type: console\nreports:\n  channels: [terminal]\n  daily: { cron: \"* * * * *\", jitter: 0s }\n  weekly: { enabled: false, cron: \"0 9 * * 1\" }\n";
        let p = Project::with_config(&config(db.url(), extra));
        p.write("flows/tick.yaml", "name: tick\nschedule: { cron: \"* * * * * *\", overlap: allow }\nnodes:\n  - id: t\n    kind: template\n    text: tick\n");
        let store = db.open().await;
        let workers: Vec<Worker> = (0..3).map(|_| Worker::start(&p)).collect();
        until("three fires", || async { count(&store, "SELECT COUNT(*) FROM cron_fires").await >= 3 }).await;
        drop(workers);
        let fires = count(&store, "SELECT COUNT(*) FROM cron_fires WHERE job = 'cron:tick'").await;
        let runs = count(&store, "SELECT COUNT(*) FROM runs WHERE trigger_kind = 'cron'").await;
        // One run per fire, whatever the number of workers, even killed: a fire is recorded in the
        // transaction that queues its run.
        assert_eq!(runs, fires, "{runs} runs for {fires} fires");
        assert_eq!(count(&store, "SELECT COUNT(*) FROM reports WHERE kind = 'daily' AND sent_at IS NOT NULL").await, 1);
        assert_eq!(count(&store, "SELECT COUNT(*) FROM notifications WHERE purpose = 'report'").await, 1, "the report is sent once");
        store.close().await;
    }
}

/// A model that counts its calls in flight and the most it saw at once.
#[derive(Default)]
struct Counting {
    now: std::sync::atomic::AtomicUsize,
    peak: std::sync::atomic::AtomicUsize,
    calls: std::sync::atomic::AtomicUsize,
}

impl flowguard::model::ModelClient for Counting {
    fn chat<'a>(
        &'a self,
        _req: &'a flowguard::model::ChatRequest,
        _clock: &'a flowguard::clock::SharedClock,
    ) -> futures::future::BoxFuture<'a, Result<flowguard::model::ChatReply, flowguard::nodes::NodeError>> {
        use std::sync::atomic::Ordering::SeqCst;
        Box::pin(async move {
            let n = self.now.fetch_add(1, SeqCst) + 1;
            self.peak.fetch_max(n, SeqCst);
            tokio::time::sleep(Duration::from_millis(60)).await;
            self.now.fetch_sub(1, SeqCst);
            self.calls.fetch_add(1, SeqCst);
            Ok(flowguard::model::ChatReply { content: "ok".into(), status: 200, ..Default::default() })
        })
    }
    fn label(&self) -> String {
        "counting:m".into()
    }
}

// `server.model_concurrency` holds across processes: three stores on one database (as three
// processes would have), each calling the model eight times at once, never have more than the
// limit in flight together.
backends! {
    async fn model_concurrency_holds_across_processes(db: TestDb) {
        use flowguard::model::ModelClient;
        use std::sync::Arc;
        use std::sync::atomic::Ordering::SeqCst;
        let inner = Arc::new(Counting::default());
        let limits = std::collections::BTreeMap::from([("m".to_string(), 2usize)]);
        let mut stores = Vec::new();
        let mut calls = tokio::task::JoinSet::new();
        for _ in 0..3 {
            let store = db.open().await;
            let mut models = std::collections::BTreeMap::from([("m".to_string(), inner.clone() as Arc<dyn ModelClient>)]);
            flowguard::model::limited::apply(&mut models, &limits, &store).unwrap();
            for _ in 0..8 {
                let m = models["m"].clone();
                calls.spawn(async move {
                    let clock: flowguard::clock::SharedClock = Arc::new(flowguard::clock::SystemClock);
                    m.chat(&flowguard::model::ChatRequest::default(), &clock).await.map(|r| r.content)
                });
            }
            stores.push(store);
        }
        while let Some(r) = calls.join_next().await {
            assert_eq!(r.unwrap().unwrap(), "ok");
        }
        assert_eq!(inner.calls.load(SeqCst), 24);
        let peak = inner.peak.load(SeqCst);
        assert!(peak <= 2, "{peak} calls in flight at once across the processes, over the limit of 2");
        assert_eq!(peak, 2, "the limit was never reached: the calls did not overlap");
        // Every slot is given back.
        until("the slots are given back", || async { count(&stores[0], "SELECT COUNT(*) FROM process_locks WHERE name LIKE 'model:%'").await == 0 }).await;
        for s in stores {
            s.close().await;
        }
    }
}

// 3 `serve` workers and 2 `flowguard run` lanes, 300 runs failing with one fingerprint (a flow
// whose only node gets HTTP 500): the alert counts exactly 300, one alert is open, every
// notification reaches the Feishu bot once, nothing fires after the resolved message, and the
// bot's 5/s and 100/min hold across the five kinds of process.
backends! {
    networked async fn three_workers_and_cli_runs_count_300_failures_and_deliver_each_message_once(db: TestDb) {
        use crate::support::fake_feishu::{self, FakeFeishu};
        let fake = FakeFeishu::start().await;
        let publisher = FakePublisher::start(vec![Answer::Status(500, json!({"error": "down"}))]).await;
        let extra = format!(
            "locale: zh-CN\nendpoints:\n  p:\n    base_url: {}\nchannels:\n  ops:\n    type: feishu\n    webhook: \"{}\"\n    secret: \"{}\"\n    keyword: {}\n    rate_limit: {{ per_second: 5, per_minute: 100 }}\nalerting:\n  group_interval: 1s\nroutes:\n  - channels: [ops]\n",
            publisher.base_url, fake.url, fake_feishu::SECRET, fake_feishu::KEYWORD
        );
        // The default lease: on a loaded machine a 1 s lease would see live runs taken over.
        let p = Project::with_config(&config(db.url(), &extra).replace("  lease: 1s\n  lease_heartbeat: 200ms\n", ""));
        p.write("flows/douyin.yaml", "name: douyin\nnodes:\n  - id: topics\n    kind: http\n    endpoint: p\n    path: /topics\n    retry: { policy: none }\n");
        let store = db.open().await;
        let workers: Vec<Worker> = (0..3).map(|_| Worker::start(&p)).collect();
        let cli: Vec<_> = (0..2)
            .map(|_| {
                let dir = p.path().to_path_buf();
                std::thread::spawn(move || {
                    for _ in 0..10 {
                        let o = bin().current_dir(&dir).args(["run", "douyin"]).env("FLOWGUARD_LOG", "warn").output().unwrap();
                        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
                    }
                })
            })
            .collect();
        let mut triggers = tokio::task::JoinSet::new();
        let bases: Vec<String> = workers.iter().map(|w| w.base.clone()).collect();
        for i in 0..280 {
            let base = bases[i % 3].clone();
            triggers.spawn(async move { trigger(&base, "douyin", OPERATE).await });
        }
        while let Some(r) = triggers.join_next().await {
            r.unwrap();
        }
        for c in cli {
            c.join().unwrap();
        }
        let started = Instant::now();
        while count(&store, "SELECT COUNT(*) FROM runs WHERE status = 'failed'").await < 300 {
            let by_status = strings(&store, "SELECT CONCAT(status, ':', CAST(COUNT(*) AS CHAR(12))) FROM runs GROUP BY status").await;
            assert!(started.elapsed() < Duration::from_secs(120), "300 runs did not fail: {by_status:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        until("300 failures counted", || async {
            count(&store, "SELECT COALESCE(MAX(count), 0) FROM alerts WHERE flow = 'douyin'").await >= 300
        })
        .await;
        assert_eq!(count(&store, "SELECT COUNT(*) FROM alerts WHERE flow = 'douyin'").await, 1, "one alert for one fingerprint");
        assert_eq!(count(&store, "SELECT count FROM alerts WHERE flow = 'douyin'").await, 300, "every failure counted once");
        // The flow recovers (a CLI run): resolved once, after every firing message.
        publisher.set_script(vec![Answer::Ok(json!({"topics": ["露营"]}))]);
        let o = p.run(&["run", "douyin"]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        until("every notification is sent", || async {
            count(&store, "SELECT COUNT(*) FROM notifications WHERE status <> 'sent'").await == 0
                && count(&store, "SELECT COUNT(*) FROM notifications WHERE purpose = 'resolved' AND status = 'sent'").await == 1
        })
        .await;
        drop(workers);
        let ids = strings(&store, "SELECT id FROM notifications").await;
        for id in &ids {
            let sent = count(&store, &format!("SELECT COUNT(*) FROM deliveries WHERE notification_id = '{id}' AND outcome = 'sent'")).await;
            assert_eq!(sent, 1, "notification {id} sent {sent} times");
        }
        let msgs: Vec<String> = fake.messages().iter().map(|m| m.to_string()).collect();
        assert_eq!(msgs.len(), ids.len(), "the bot received each notification once");
        let resolved_at = msgs.iter().position(|t| t.contains("[恢复]")).expect("a resolved message");
        assert_eq!(resolved_at, msgs.len() - 1, "no firing message after the resolved one: {msgs:?}");
        assert!(fake.rejected().is_empty(), "the bot refused: {:?}", fake.rejected().iter().map(|r| r.0).collect::<Vec<_>>());
        assert!(fake.peak(Duration::from_secs(1)) <= 5, "5/s kept across processes");
        assert!(fake.peak(Duration::from_secs(60)) <= 100, "100/min kept across processes");
        store.close().await;
    }
}

// The queue's claim on every backend, by two workers at once: the oldest claimable runs (none
// younger is taken while an older one could be), a capped flow never
// over its `concurrency:`, an `overlap: queue` flow one run at a time, every free run taken once,
// each with its whole inputs and whether its flow is blocked.
backends! {
    async fn two_workers_claim_the_queue_within_caps_and_overlap(db: TestDb) {
        use flowguard::store::{FlowBlock, RunRecord};
        use flowguard::vocab::RunStatus;
        let stores = [db.open().await, db.open().await];
        let queue = [("capped", false), ("capped", false), ("serial", true), ("free", false), ("serial", true), ("free", false), ("capped", false), ("shut", false), ("free", false)];
        let mut ids = Vec::new();
        for (i, (flow, serial)) in queue.iter().enumerate() {
            let id = format!("q{i}");
            let r = RunRecord {
                id: id.clone(),
                flow: flow.to_string(),
                flow_hash: "h".into(),
                trigger: "api".into(),
                status: RunStatus::Queued,
                canary: false,
                inputs: Some("{\"n\":\"cut\"}".into()),
                started_at: 1_000 + i as i64,
                ended_at: None,
                duration_ms: None,
                failed_node: None,
                error_kind: None,
                error_message: None,
                severity: None,
            };
            stores[0].enqueue(&r, *serial, &format!("{{\"n\":{i}}}")).await.unwrap();
            ids.push(id);
        }
        let block = FlowBlock { flow: "shut".into(), blocked_at: 1, run_id: None, reason: None, blocked_by: "test".into() };
        stores[0].block_flow(&block).await.unwrap();
        let caps = std::collections::BTreeMap::from([("capped".to_string(), 1usize)]);
        // Rounds of two claims at once, two runs each at most, until nothing more fits.
        let mut claimed = Vec::new();
        loop {
            let (a, b) = tokio::join!(stores[0].claim_queued(2, &caps), stores[1].claim_queued(2, &caps));
            let (a, b) = (a.unwrap(), b.unwrap());
            assert!(a.len() <= 2 && b.len() <= 2, "claimed more than asked");
            if a.is_empty() && b.is_empty() {
                break;
            }
            claimed.extend(a.into_iter().chain(b));
        }
        let mut got: Vec<String> = claimed.iter().map(|c| c.run.id.clone()).collect();
        got.sort();
        let unique: HashSet<&String> = got.iter().collect();
        assert_eq!(unique.len(), got.len(), "a run claimed twice: {got:?}");
        // q0 (capped, 1 allowed), q2 (serial, one at a time), q3, q5, q8 (free) and q7 (blocked flow).
        assert_eq!(got, ["q0", "q2", "q3", "q5", "q7", "q8"], "claimed: {got:?}");
        for c in &claimed {
            let n: usize = c.run.id[1..].parse().unwrap();
            assert_eq!(c.inputs.as_deref(), Some(format!("{{\"n\":{n}}}").as_str()), "{}: the whole inputs", c.run.id);
            assert_eq!(c.blocked, c.run.flow == "shut", "{}: blocked flag", c.run.id);
            assert_eq!(c.run.status, RunStatus::Running);
            assert_eq!(c.epoch, 1);
        }
        let queued = strings(&stores[0], "SELECT id FROM runs WHERE status = 'queued' ORDER BY id").await;
        assert_eq!(queued, ["q1", "q4", "q6"]);
        for s in stores {
            s.close().await;
        }
    }
}
