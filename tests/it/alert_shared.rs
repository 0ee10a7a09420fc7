//! Alerting with several processes on one database: each alerter here has its own `Store` on the
//! same database, as separate processes would. Counts add up, one alert is open per fingerprint,
//! every notification is delivered once, the bots' limits hold across all of them, a later
//! resolution wins over an older failure, and a bot that is down for hours loses nothing.

use crate::support::db::{TestDb, backends};
use crate::support::fake_bots::{self, FakeBots};
use crate::support::fake_feishu::{self, FakeFeishu};
use crate::support::fake_sms::{self, FakeSms};
use crate::support::{Project, stderr, stdout};
use flowguard::alert::{AlertInput, Alerter};
use flowguard::clock::{Clock, SharedClock, SystemClock, TestClock};
use flowguard::config::Config;
use flowguard::store::{AlertFilter, RunRecord};
use flowguard::vocab::{RunStatus, Severity};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

const T0: i64 = 1_800_000_000_000;

fn config(yaml: &str, env: &[(&str, &str)]) -> Config {
    let env: BTreeMap<String, String> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    Config::parse(Path::new("flowguard.yaml"), yaml, Path::new("/tmp"), &|k| env.get(k).cloned()).unwrap_or_else(|d| panic!("{d}"))
}

fn feishu_yaml(url: &str, extra: &str) -> String {
    format!(
        "locale: zh-CN\nchannels:\n  ops:\n    type: feishu\n    webhook: \"{url}\"\n    secret: ${{FEISHU_SECRET}}\n    keyword: 告警\n    role: on_call\n    rate_limit: {{ per_second: 5, per_minute: 100 }}\n{extra}"
    )
}

fn input(flow: &str, node: &str, kind: &str, sev: Severity) -> AlertInput {
    AlertInput {
        flow: flow.into(),
        node: node.into(),
        error_kind: kind.into(),
        severity: sev,
        status: "failed".into(),
        run_id: None,
        message: format!("{node} broke"),
        attempts: Some(1),
        labels: BTreeMap::new(),
    }
}

backends! {
    async fn four_alerters_raising_300_failures_count_300_and_deliver_each_message_once(db: TestDb) {
        let fake = FakeFeishu::start().await;
        let cfg = config(
            &feishu_yaml(&fake.url, "alerting:\n  group_interval: 1s\nroutes:\n  - channels: [ops]\n"),
            &[("FEISHU_SECRET", fake_feishu::SECRET)],
        );
        let clock: SharedClock = Arc::new(SystemClock);
        let mut alerters = Vec::new();
        for _ in 0..4 {
            alerters.push(Alerter::new(&cfg, db.open().await, clock.clone()).unwrap());
        }
        let store = alerters[0].store().clone();
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let mut pumps = Vec::new();
        for a in &alerters {
            let a = a.clone();
            let mut stopped = stopped.clone();
            pumps.push(tokio::spawn(async move {
                a.run_loop(async move {
                    let _ = stopped.wait_for(|s| *s).await;
                })
                .await
            }));
        }
        // 300 failures with one fingerprint and 12 other flows (a burst of messages for the
        // rate limits), raised at once from the four alerters while they all pump. Each raises
        // its share in order, as a process's observer does.
        let mut raises = tokio::task::JoinSet::new();
        for (k, a) in alerters.iter().enumerate() {
            let a = a.clone();
            raises.spawn(async move {
                for i in (k..312).step_by(4) {
                    let flow = if i < 300 { "douyin".to_string() } else { format!("other{i}") };
                    a.raise(input(&flow, "publish", "auth_expired", Severity::High)).await.unwrap_or_else(|e| panic!("raise failed: {e:#}"));
                }
            });
        }
        while let Some(r) = raises.join_next().await {
            r.unwrap();
        }
        let open = store.list_alerts(&AlertFilter { flow: Some("douyin".into()), ..Default::default() }).await.unwrap();
        assert_eq!(open.len(), 1, "one open alert per fingerprint: {open:?}");
        assert_eq!(open[0].count, 300, "every failure counted once");
        assert_eq!(open[0].status, "firing");
        // The flow recovers; two processes see it at once: one resolution.
        let (a, b) = (alerters[1].clone(), alerters[2].clone());
        let (ra, rb) = tokio::join!(a.resolve("douyin"), b.resolve("douyin"));
        assert_eq!(ra.unwrap() + rb.unwrap(), 1, "resolved once");
        let start = Instant::now();
        loop {
            let pending = store.list_notifications(Some("pending"), 100).await.unwrap();
            if pending.is_empty() {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(90), "the outbox did not empty: {pending:#?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        stop.send(true).unwrap();
        for p in pumps {
            p.await.unwrap();
        }
        let notes = store.list_notifications(None, 1000).await.unwrap();
        assert!(notes.iter().all(|n| n.status == "sent"), "{notes:?}");
        for n in &notes {
            let sent = store.deliveries(&n.id).await.unwrap().into_iter().filter(|d| d.outcome == "sent").count();
            assert_eq!(sent, 1, "notification {} ({}) sent {sent} times", n.id, n.purpose);
        }
        let msgs = fake.messages();
        assert_eq!(msgs.len(), notes.len(), "the bot received each notification once");
        assert_eq!(notes.iter().filter(|n| n.purpose == "resolved").count(), 1);
        let douyin: Vec<String> = msgs.iter().map(Value::to_string).filter(|t| t.contains("douyin")).collect();
        let resolved_at = douyin.iter().position(|t| t.contains("[恢复]")).expect("a resolved message");
        assert_eq!(resolved_at, douyin.len() - 1, "no firing message after the resolved one: {douyin:?}");
        assert!(fake.rejected().is_empty(), "the bot refused: {:?}", fake.rejected().iter().map(|r| r.0).collect::<Vec<_>>());
        assert!(fake.peak(Duration::from_secs(1)) <= 5, "5/s kept across processes");
        assert!(fake.peak(Duration::from_secs(60)) <= 100, "100/min kept across processes");
        assert!(msgs.len() > 12, "the burst exercised the limits: {}", msgs.len());
    }
}

backends! {
    async fn a_bot_down_for_hours_loses_nothing_within_the_budget_and_a_dead_one_can_be_resent(db: TestDb) {
        let fake = FakeFeishu::start().await;
        let bots = FakeBots::start().await;
        let extra = format!(
            "  team_wecom:\n    type: wecom\n    key: ${{WECOM_KEY}}\n    endpoint: \"{}\"\nalerting:\n  backoff: 2s\n  max_backoff: 5m\n  delivery_budget: 6h\nroutes:\n  - match: {{ flow: [late] }}\n    channels: [team_wecom]\n  - channels: [ops]\n",
            bots.wecom_base
        );
        let cfg = config(&feishu_yaml(&fake.url, &extra), &[("FEISHU_SECRET", fake_feishu::SECRET), ("WECOM_KEY", fake_bots::WECOM_KEY)]);
        let clock = TestClock::new(T0);
        let a = Alerter::new(&cfg, db.open().await, Arc::new(clock.clone()) as SharedClock).unwrap();
        fake.set_down(true);
        for i in 0..4 {
            a.raise(input(&format!("f{i}"), "publish", "auth_expired", Severity::High)).await.unwrap();
        }
        // Down for three hours: retried with capped backoff, never dead.
        let mut tries = 0;
        for _ in 0..180 {
            let rep = a.step().await.unwrap();
            assert_eq!(rep.dead, 0, "dead before the budget was spent: {rep:?}");
            tries += rep.retried;
            clock.advance(Duration::from_secs(60));
        }
        assert!(tries >= 4 * 30, "kept trying: {tries}");
        let n = &a.store().list_notifications(Some("pending"), 10).await.unwrap();
        assert_eq!(n.len(), 4);
        assert!(n.iter().all(|n| n.next_attempt_at - clock.now_ms() <= 5 * 60_000), "backoff capped at max_backoff: {n:?}");
        // Back: everything is delivered.
        fake.set_down(false);
        clock.advance(Duration::from_secs(5 * 60));
        let rep = a.step().await.unwrap();
        assert_eq!(rep.sent, 4, "{rep:?} {:?}", fake.rejected());
        assert_eq!(fake.messages().len(), 4);

        // Down past the budget: dead at its end, raised on another channel, and re-sent by hand.
        fake.set_down(true);
        let started = clock.now_ms();
        a.raise(input("g", "publish", "auth_expired", Severity::High)).await.unwrap();
        let mut dead_at = None;
        while dead_at.is_none() {
            if a.step().await.unwrap().dead > 0 {
                dead_at = Some(clock.now_ms());
            }
            clock.advance(Duration::from_secs(60));
            assert!(clock.now_ms() - started < 7 * 3600 * 1000, "never dead");
        }
        assert!(dead_at.unwrap() - started >= 6 * 3600 * 1000, "dead only after the 6h budget");
        let dead = a.store().list_notifications(Some("dead"), 10).await.unwrap();
        assert_eq!(dead.len(), 1);
        a.step().await.unwrap();
        let wx = bots.wecom();
        assert_eq!(wx.len(), 1, "the dead one is raised on another routed channel: {:?}", bots.errors());
        assert!(wx[0]["text"]["content"].as_str().unwrap().contains(&dead[0].id), "{:?}", wx[0]);
        fake.set_down(false);
        // The four delivered on the bot's return may still count against its 5/s (real time).
        fake.until_second_is_free().await;
        let again = a.resend(&dead[0].id[..12]).await.unwrap();
        assert_eq!(again.failover_of.as_deref(), Some(dead[0].id.as_str()));
        assert!(a.resend(&again.id).await.is_err(), "only dead notifications are re-sent");
        // It goes out after the group's older messages (a repeat made while the bot was down).
        for _ in 0..10 {
            a.step().await.unwrap();
            clock.advance(Duration::from_secs(60));
        }
        let again = a.store().find_notifications(&again.id).await.unwrap().remove(0);
        assert_eq!(again.status, "sent", "{again:?}");
    }
}

fn sms_extra(sms: &FakeSms, route: &str) -> String {
    format!(
        "  oncall_sms:\n    type: sms\n    provider: aliyun\n    endpoint: \"{}\"\n    access_key_id: {}\n    access_key_secret: ${{ALI_SECRET}}\n    sign_name: 流程卫士\n    template_id: SMS_123\n    phones: [\"13800000000\"]\nroutes:\n{route}",
        sms.aliyun_url,
        fake_sms::ALI_KEY_ID
    )
}

backends! {
    async fn escalation_fires_for_the_severity_its_route_matches_once_across_processes(db: TestDb) {
        let fake = FakeFeishu::start().await;
        let sms = FakeSms::start().await;
        let route = "  - match: { severity: [medium] }\n    channels: [ops]\n    escalate: { after: 10m, to: [oncall_sms] }\n";
        let cfg = config(
            &feishu_yaml(&fake.url, &sms_extra(&sms, route)),
            &[("FEISHU_SECRET", fake_feishu::SECRET), ("ALI_SECRET", fake_sms::ALI_SECRET)],
        );
        let clock = TestClock::new(T0);
        let shared: SharedClock = Arc::new(clock.clone());
        let a = Alerter::new(&cfg, db.open().await, shared.clone()).unwrap();
        let b = Alerter::new(&cfg, db.open().await, shared).unwrap();
        a.raise(input("m", "publish", "timeout", Severity::Medium)).await.unwrap();
        a.step().await.unwrap();
        assert_eq!(fake.messages().len(), 1);
        clock.advance(Duration::from_secs(601));
        let (ra, rb) = tokio::join!(a.step(), b.step());
        assert_eq!(ra.unwrap().escalated + rb.unwrap().escalated, 1, "a medium alert escalates, once");
        a.step().await.unwrap();
        b.step().await.unwrap();
        assert_eq!(sms.aliyun().len(), 1);
    }
}

fn run_record(id: &str, flow: &str, status: RunStatus, ended_at: i64) -> RunRecord {
    RunRecord {
        id: id.into(),
        flow: flow.into(),
        flow_hash: "h".into(),
        trigger: "cli".into(),
        status,
        canary: false,
        inputs: None,
        started_at: ended_at - 1_000,
        ended_at: Some(ended_at),
        duration_ms: Some(1_000),
        failed_node: (status == RunStatus::Failed).then(|| "publish".into()),
        error_kind: (status == RunStatus::Failed).then(|| "quota_exhausted".into()),
        error_message: None,
        severity: (status == RunStatus::Failed).then(|| "high".into()),
    }
}

backends! {
    async fn the_sweep_raises_an_owed_alert_once_and_never_over_a_later_success(db: TestDb) {
        let fake = FakeFeishu::start().await;
        let cfg = config(&feishu_yaml(&fake.url, "routes:\n  - channels: [ops]\n"), &[("FEISHU_SECRET", fake_feishu::SECRET)]);
        let clock = TestClock::new(T0);
        let shared: SharedClock = Arc::new(clock.clone());
        let store = db.open().await;
        // `old` failed, then succeeded: its failure is owed no alert. `owed` failed and stays so.
        store.insert_run(&run_record("r-old-failed", "old", RunStatus::Failed, T0 - 120_000)).await.unwrap();
        store.insert_run(&run_record("r-old-ok", "old", RunStatus::Succeeded, T0 - 60_000)).await.unwrap();
        store.insert_run(&run_record("r-owed", "owed", RunStatus::Failed, T0 - 90_000)).await.unwrap();
        let sweepers: Vec<Alerter> = vec![
            Alerter::new(&cfg, store.clone(), shared.clone()).unwrap(),
            Alerter::new(&cfg, db.open().await, shared.clone()).unwrap(),
            Alerter::new(&cfg, db.open().await, shared.clone()).unwrap(),
        ];
        let swept = futures::future::join_all(sweepers.iter().map(|s| s.sweep(T0 - 3_600_000, T0))).await;
        let raised: usize = swept.into_iter().map(|r| r.unwrap()).sum();
        assert_eq!(raised, 1, "the owed alert is raised by one of the sweeping processes");
        let alerts = store.list_alerts(&AlertFilter::default()).await.unwrap();
        assert_eq!(alerts.len(), 1, "{alerts:?}");
        assert_eq!((alerts[0].flow.as_str(), alerts[0].count), ("owed", 1));
        // The live path of the process that ran it, late: the sweep raised it already.
        let late = AlertInput { run_id: Some("r-owed".into()), ..input("owed", "publish", "quota_exhausted", Severity::High) };
        assert!(sweepers[0].raise(late).await.unwrap().superseded);
        // A failure recorded after the flow's later success: the success wins.
        let stale = AlertInput { run_id: Some("r-old-failed".into()), ..input("old", "publish", "quota_exhausted", Severity::High) };
        assert!(sweepers[1].raise(stale).await.unwrap().superseded);
        assert_eq!(store.list_alerts(&AlertFilter::default()).await.unwrap()[0].count, 1);
        sweepers[0].step().await.unwrap();
        assert_eq!(fake.messages().len(), 1);
    }
}

/// The binary: four `flowguard run` processes at once, each failing five times with one
/// fingerprint, on one SQLite file: the alert counts all twenty.
#[test]
fn four_flowguard_run_processes_failing_at_once_count_every_failure() {
    let p = Project::with_config("storage:\n  url: sqlite://fg.db\nendpoints:\n  dead:\n    base_url: http://127.0.0.1:1\n");
    p.write(
        "flows/broken.yaml",
        "name: broken\nnodes:\n  - id: publish\n    kind: http\n    endpoint: dead\n    path: /publish\n    retry: { policy: none }\n",
    );
    let racers: Vec<_> = (0..4)
        .map(|_| {
            let dir = p.path().to_path_buf();
            std::thread::spawn(move || {
                for _ in 0..5 {
                    let o = crate::support::bin().current_dir(&dir).args(["run", "broken"]).output().unwrap();
                    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
                }
            })
        })
        .collect();
    for r in racers {
        r.join().unwrap();
    }
    let alerts = p.json(&["alerts", "list"]);
    let list = alerts.as_array().unwrap();
    assert_eq!(list.len(), 1, "one alert for one fingerprint: {alerts}");
    assert_eq!(list[0]["count"], 20, "{alerts}");
}

/// The binary: under `flowguard run` a latency warning reaches the channel while the run is still
/// going, as under `serve` (the raise wakes the outbox).
#[test]
fn a_latency_warning_under_flowguard_run_is_sent_while_the_run_goes_on() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let fake = rt.block_on(FakeFeishu::start());
    // An endpoint that accepts and never answers: the node runs until its timeout.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let p = Project::with_config(&format!(
        "storage:\n  url: sqlite://fg.db\nendpoints:\n  slow:\n    base_url: http://{}\nchannels:\n  ops:\n    type: feishu\n    webhook: \"{}\"\n    secret: ${{FEISHU_SECRET}}\n    keyword: 告警\nroutes:\n  - channels: [ops]\nalerting:\n  drain: 1s\n",
        silent.local_addr().unwrap(),
        fake.url
    ));
    p.write(
        "flows/slow.yaml",
        "name: slow\nlatency_warning: 1s\ntimeout: 60s\nnodes:\n  - id: wait\n    kind: http\n    endpoint: slow\n    path: /wait\n    timeout: 8s\n    retry: { policy: none }\n",
    );
    let mut child = crate::support::bin()
        .current_dir(p.path())
        .env("FEISHU_SECRET", fake_feishu::SECRET)
        .args(["run", "slow"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        if fake.messages().iter().any(|m| m.to_string().contains("流程延迟预警")) {
            // The run is still going (its node waits for 8 s): the warning did not wait for its end.
            let o = crate::support::bin()
                .current_dir(p.path())
                .env("FEISHU_SECRET", fake_feishu::SECRET)
                .args(["runs", "--format", "json"])
                .output()
                .unwrap();
            let runs: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}{}", stdout(&o), stderr(&o)));
            assert_eq!(runs[0]["status"], "running", "the warning arrived only after the run ended: {runs}");
            break;
        }
        if let Some(s) = child.try_wait().unwrap() {
            panic!("the run ended ({s}) before its latency warning reached the channel: {:?}", fake.messages());
        }
        assert!(start.elapsed() < Duration::from_secs(30), "no latency warning");
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    drop(silent);
    drop(rt);
}

/// The binary: a dead notification is re-sent with `flowguard alerts resend ID`.
#[test]
fn alerts_resend_puts_a_dead_notification_back_and_it_is_delivered() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let fake = rt.block_on(FakeFeishu::start());
    let p = Project::with_config(&format!(
        "storage:\n  url: sqlite://fg.db\nendpoints:\n  dead:\n    base_url: http://127.0.0.1:1\nchannels:\n  ops:\n    type: feishu\n    webhook: \"{}\"\n    secret: ${{FEISHU_SECRET}}\n    keyword: 告警\nroutes:\n  - channels: [ops]\nalerting:\n  delivery_budget: 0s\n  drain: 2s\n",
        fake.url
    ));
    p.write(
        "flows/broken.yaml",
        "name: broken\nnodes:\n  - id: publish\n    kind: http\n    endpoint: dead\n    path: /publish\n    retry: { policy: none }\n",
    );
    let cmd =
        |args: &[&str]| crate::support::bin().current_dir(p.path()).env("FEISHU_SECRET", fake_feishu::SECRET).args(args).output().unwrap();
    fake.set_down(true);
    assert_eq!(cmd(&["run", "broken"]).status.code(), Some(1));
    let o = cmd(&["alerts", "list", "--notifications", "--status", "dead", "--format", "json"]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(&o)));
    let id = v["notifications"][0]["id"].as_str().unwrap_or_else(|| panic!("a dead notification: {v}")).to_owned();
    fake.set_down(false);
    let o = cmd(&["alerts", "resend", &id]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("sent"), "{}", stdout(&o));
    assert_eq!(fake.messages().len(), 1, "{:?}", fake.rejected());
    let o = cmd(&["alerts", "resend", "no-such-id"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("no notification"), "{}", stderr(&o));
    drop(rt);
}

/// The API: `POST /api/v1/notifications/{id}/resend` needs the operate scope and names what it
/// cannot find.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_resends_with_the_operate_token_only() {
    use crate::serve::{OPERATE, READ, spawn_app};
    let app = spawn_app("", &[]).await;
    let (code, body) = app.post("/api/v1/notifications/nope/resend", READ, &serde_json::json!({})).await;
    assert_eq!(code, 403, "{body}");
    let (code, body) = app.post("/api/v1/notifications/nope/resend", OPERATE, &serde_json::json!({})).await;
    assert_eq!(code, 404, "{body}");
    assert!(body.to_string().contains("no notification"), "{body}");
    app.shutdown().await;
}
