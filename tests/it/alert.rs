//! Alerting against fake Feishu / DingTalk / WeCom / Aliyun / Tencent servers that check
//! signatures like the real services, and a real SMTP server. Grouping windows, backoff and
//! escalation run on the injected clock: the pump is driven with `step()`, never by sleeping.

use crate::support::db::{TestDb, backends};
use crate::support::fake_bots::{self, FakeBots};
use crate::support::fake_feishu::{self, FakeFeishu};
use crate::support::fake_sms::{self, FakeSms};
use crate::support::fake_smtp::Smtp;
use crate::support::{Project, stderr, stdout};
use flowguard::alert::{AlertInput, Alerter};
use flowguard::clock::{SharedClock, TestClock};
use flowguard::config::Config;
use flowguard::store::{AlertFilter, Store};
use flowguard::vocab::Severity;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const T0: i64 = 1_800_000_000_000;

struct Rig {
    alerter: Alerter,
    clock: TestClock,
    store: Store,
    dir: tempfile::TempDir,
    cfg: Config,
}

fn config(yaml: &str, env: &[(&str, &str)]) -> Config {
    let env: BTreeMap<String, String> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    Config::parse(Path::new("flowguard.yaml"), yaml, Path::new("/tmp"), &|k| env.get(k).cloned()).unwrap_or_else(|d| panic!("{d}"))
}

async fn rig(yaml: &str, env: &[(&str, &str)]) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    rig_in(dir, yaml, env).await
}

async fn rig_in(dir: tempfile::TempDir, yaml: &str, env: &[(&str, &str)]) -> Rig {
    let cfg = config(yaml, env);
    let url = format!("sqlite://{}", dir.path().join("fg.db").display());
    let store = Store::open(&url, 4, Duration::from_secs(5)).await.unwrap();
    rig_on(store, dir, cfg)
}

fn rig_on(store: Store, dir: tempfile::TempDir, cfg: Config) -> Rig {
    let clock = TestClock::new(T0);
    let shared: SharedClock = Arc::new(clock.clone());
    let alerter = Alerter::new(&cfg, store.clone(), shared).unwrap();
    Rig { alerter, clock, store, dir, cfg }
}

/// A rig on a fresh test database of any backend.
async fn rig_db(db: &TestDb, yaml: &str, env: &[(&str, &str)]) -> Rig {
    rig_on(db.open().await, tempfile::tempdir().unwrap(), config(yaml, env))
}

fn input(flow: &str, node: &str, kind: &str, sev: Severity) -> AlertInput {
    AlertInput {
        flow: flow.into(),
        node: node.into(),
        error_kind: kind.into(),
        severity: sev,
        status: "failed".into(),
        run_id: Some(format!("run-{flow}-{node}")),
        message: format!("{node} broke"),
        attempts: Some(2),
        labels: BTreeMap::new(),
    }
}

fn feishu_yaml(url: &str, extra: &str) -> String {
    format!(
        "locale: zh-CN\nchannels:\n  ops:\n    type: feishu\n    webhook: \"{url}\"\n    secret: ${{FEISHU_SECRET}}\n    keyword: 告警\n    role: on_call\n    rate_limit: {{ per_second: 5, per_minute: 100 }}\n{extra}"
    )
}

fn card_text(v: &Value) -> String {
    v.to_string()
}

#[tokio::test]
async fn a_failure_reaches_feishu_signed_as_a_card_with_the_seed_text() {
    let fake = FakeFeishu::start().await;
    let r = rig(&feishu_yaml(&fake.url, ""), &[("FEISHU_SECRET", fake_feishu::SECRET)]).await;
    let raised = r.alerter.raise(input("douyin_script", "publish", "auth_expired", Severity::High)).await.unwrap();
    assert_eq!(raised.notifications.len(), 1, "group_wait 0 sends at once");
    let rep = r.alerter.step().await.unwrap();
    assert_eq!(rep.sent, 1, "{rep:?} rejected: {:?}", fake.rejected());
    let msgs = fake.messages();
    assert_eq!(msgs.len(), 1);
    let m = &msgs[0];
    assert_eq!(m["msg_type"], "interactive");
    assert_eq!(m["card"]["header"]["template"], "red");
    let t = card_text(m);
    for want in ["[告警] 流程失败", "步骤", "publish", "原因", "auth_expired", "时间", "<at id=all></at>"] {
        assert!(t.contains(want), "missing {want}: {t}");
    }
    let notes = r.store.list_notifications(None, 10).await.unwrap();
    assert_eq!(notes[0].status, "sent");
    let d = r.store.deliveries(&notes[0].id).await.unwrap();
    assert_eq!(d.len(), 1);
    assert!(d[0].answer.as_deref().unwrap_or("").contains("\"code\":0"), "{d:?}");
}

#[tokio::test]
async fn a_wrong_secret_is_judged_by_the_body_code_not_the_http_status() {
    let fake = FakeFeishu::start().await;
    let r = rig(&feishu_yaml(&fake.url, ""), &[("FEISHU_SECRET", "not-the-secret")]).await;
    r.alerter.raise(input("f", "n", "internal", Severity::High)).await.unwrap();
    let rep = r.alerter.step().await.unwrap();
    assert_eq!((rep.sent, rep.dead), (0, 1), "19021 is permanent: {rep:?}");
    assert_eq!(fake.rejected()[0].0, 19021);
    let n = &r.store.list_notifications(Some("dead"), 10).await.unwrap()[0];
    assert!(n.last_error.as_deref().unwrap().contains("19021"), "{n:?}");
}

#[tokio::test]
async fn a_new_failure_goes_out_ahead_of_a_backlog_in_the_outbox() {
    let fake = FakeFeishu::start().await;
    let r = rig(&feishu_yaml(&fake.url, ""), &[("FEISHU_SECRET", fake_feishu::SECRET)]).await;
    // Another process on the database left 70 messages due (its pump never ran); the channel
    // takes 5 a second.
    let other = Alerter::new(&r.cfg, r.store.clone(), Arc::new(r.clock.clone())).unwrap();
    for i in 0..70 {
        other.raise(input(&format!("old{i}"), "n", "internal", Severity::High)).await.unwrap();
    }
    let raised = r.alerter.raise(input("douyin_script", "publish", "auth_expired", Severity::High)).await.unwrap();
    let rep = r.alerter.step().await.unwrap();
    assert_eq!(rep.sent, 5, "the rate limit holds: {rep:?}");
    let sent: Vec<String> = r.store.list_notifications(Some("sent"), 100).await.unwrap().into_iter().map(|n| n.id).collect();
    assert!(sent.contains(&raised.notifications[0]), "this process's new failure went out in the first step");
    assert!(fake.messages().iter().any(|m| card_text(m).contains("douyin_script")));
    // Sent once: the outbox's own scan in later steps does not send it again.
    for _ in 0..3 {
        r.clock.advance(Duration::from_secs(2));
        r.alerter.step().await.unwrap();
    }
    let ours = fake.messages().iter().filter(|m| card_text(m).contains("douyin_script")).count();
    assert_eq!(ours, 1);
}

backends! {
    async fn one_message_per_group_per_interval_listing_each_fingerprint_with_its_count(db: TestDb) {
        let fake = FakeFeishu::start().await;
        let r = rig_db(&db, &feishu_yaml(&fake.url, "alerting:\n  group_interval: 5m\n"), &[("FEISHU_SECRET", fake_feishu::SECRET)]).await;
        for _ in 0..10 {
            r.alerter.raise(input("douyin", "publish", "auth_expired", Severity::High)).await.unwrap();
        }
        for _ in 0..3 {
            r.alerter.raise(input("douyin", "script", "quota_exhausted", Severity::High)).await.unwrap();
        }
        r.alerter.step().await.unwrap();
        assert_eq!(fake.messages().len(), 1, "the rest waits for group_interval");
        r.clock.advance(Duration::from_secs(299));
        r.alerter.step().await.unwrap();
        assert_eq!(fake.messages().len(), 1, "not before the interval");
        r.clock.advance(Duration::from_secs(1));
        r.alerter.step().await.unwrap();
        let msgs = fake.messages();
        assert_eq!(msgs.len(), 2);
        let t = card_text(&msgs[1]);
        assert!(t.contains("publish") && t.contains("×10"), "{t}");
        assert!(t.contains("script") && t.contains("×3"), "{t}");
        let alerts = r.store.list_alerts(&AlertFilter::default()).await.unwrap();
        assert_eq!(alerts.len(), 2, "one alert per fingerprint");
        // A different flow is another group: told at once.
        r.alerter.raise(input("other", "publish", "auth_expired", Severity::High)).await.unwrap();
        r.alerter.step().await.unwrap();
        assert_eq!(fake.messages().len(), 3);
    }
}

backends! {
    async fn the_flow_succeeding_again_sends_a_resolved_message(db: TestDb) {
        let fake = FakeFeishu::start().await;
        let r = rig_db(&db, &feishu_yaml(&fake.url, ""), &[("FEISHU_SECRET", fake_feishu::SECRET)]).await;
        r.alerter.raise(input("douyin", "publish", "auth_expired", Severity::High)).await.unwrap();
        r.alerter.step().await.unwrap();
        r.alerter.resolve("unrelated").await.unwrap();
        r.alerter.resolve("douyin").await.unwrap();
        r.alerter.step().await.unwrap();
        let msgs = fake.messages();
        assert_eq!(msgs.len(), 2);
        assert_eq!(msgs[1]["card"]["header"]["template"], "green");
        assert!(card_text(&msgs[1]).contains("[恢复]"), "{}", msgs[1]);
        assert_eq!(r.store.list_alerts(&AlertFilter { status: Some("resolved".into()), ..Default::default() }).await.unwrap().len(), 1);
    }
}

#[tokio::test]
async fn silenced_alerts_are_recorded_but_nobody_is_paged() {
    let fake = FakeFeishu::start().await;
    let r = rig(&feishu_yaml(&fake.url, ""), &[("FEISHU_SECRET", fake_feishu::SECRET)]).await;
    r.store
        .insert_silence(&flowguard::store::SilenceRecord {
            id: "s1".into(),
            matchers: r#"{"flow":"douyin","error_kind":"auth_expired"}"#.into(),
            comment: None,
            created_by: None,
            created_at: T0,
            ends_at: T0 + 3_600_000,
            expired_at: None,
        })
        .await
        .unwrap();
    let raised = r.alerter.raise(input("douyin", "publish", "auth_expired", Severity::High)).await.unwrap();
    assert!(raised.silenced && raised.notifications.is_empty());
    r.alerter.raise(input("douyin", "script", "quota_exhausted", Severity::High)).await.unwrap();
    r.alerter.step().await.unwrap();
    assert_eq!(fake.messages().len(), 1, "only the unsilenced one");
    r.clock.advance(Duration::from_secs(3601));
    r.alerter.raise(input("douyin", "publish", "auth_expired", Severity::High)).await.unwrap();
    r.clock.advance(Duration::from_secs(300));
    r.alerter.step().await.unwrap();
    assert_eq!(fake.messages().len(), 2, "after expiry it pages again");
    let a = r.store.find_alerts(&flowguard::alert::fingerprint("douyin", "publish", "auth_expired")).await.unwrap();
    assert_eq!(a[0].count, 2);
}

backends! {
    async fn an_unacknowledged_high_alert_escalates_to_sms_and_an_acknowledged_one_does_not(db: TestDb) {
        let fake = FakeFeishu::start().await;
        let sms = FakeSms::start().await;
        let extra = format!(
            "  oncall_sms:\n    type: sms\n    provider: aliyun\n    endpoint: \"{}\"\n    access_key_id: {}\n    access_key_secret: ${{ALI_SECRET}}\n    sign_name: 流程卫士\n    template_id: SMS_123\n    phones: [\"13800000000\"]\nroutes:\n  - match: {{ severity: [high] }}\n    channels: [ops]\n    escalate: {{ after: 10m, to: [oncall_sms] }}\n",
            sms.aliyun_url,
            fake_sms::ALI_KEY_ID
        );
        let r = rig_db(&db, &feishu_yaml(&fake.url, &extra), &[("FEISHU_SECRET", fake_feishu::SECRET), ("ALI_SECRET", fake_sms::ALI_SECRET)]).await;
        r.alerter.raise(input("a", "publish", "auth_expired", Severity::High)).await.unwrap();
        let acked = r.alerter.raise(input("b", "publish", "auth_expired", Severity::High)).await.unwrap();
        r.alerter.step().await.unwrap();
        r.alerter.ack(&acked.alert_id, "alice").await.unwrap();
        r.clock.advance(Duration::from_secs(9 * 60));
        r.alerter.step().await.unwrap();
        assert!(sms.aliyun().is_empty(), "not before 10 minutes");
        r.clock.advance(Duration::from_secs(61));
        let rep = r.alerter.step().await.unwrap();
        assert_eq!(rep.escalated, 1, "{rep:?}");
        r.alerter.step().await.unwrap();
        let sent = sms.aliyun();
        assert_eq!(sent.len(), 1, "only the unacknowledged alert escalates");
        let params: Value = serde_json::from_str(&sent[0]["TemplateParam"]).unwrap();
        assert_eq!(params["flow"], "a");
        assert_eq!(sent[0]["SignName"], "流程卫士");
        r.clock.advance(Duration::from_secs(3600));
        r.alerter.step().await.unwrap();
        assert_eq!(sms.aliyun().len(), 1, "escalates once");
    }
}

#[tokio::test]
async fn the_bot_rate_limit_queues_messages_instead_of_dropping_them() {
    let fake = FakeFeishu::start().await;
    let r = rig(&feishu_yaml(&fake.url, ""), &[("FEISHU_SECRET", fake_feishu::SECRET)]).await;
    for i in 0..8 {
        r.alerter.raise(input(&format!("flow{i}"), "n", "internal", Severity::High)).await.unwrap();
    }
    let rep = r.alerter.step().await.unwrap();
    assert_eq!(rep.sent, 5, "{rep:?}");
    assert_eq!(rep.rate_limited, 3);
    r.alerter.step().await.unwrap();
    assert_eq!(fake.messages().len(), 5, "still within the same second");
    r.clock.advance(Duration::from_millis(1100));
    // The fake's own window is in real time: wait until it has room, so it does not refuse.
    fake.until_room_for(3).await;
    r.alerter.step().await.unwrap();
    assert_eq!(fake.messages().len(), 8, "rejected: {:?}", fake.rejected());
    assert!(fake.rejected().is_empty());
    assert!(fake.peak(Duration::from_secs(1)) <= 5);
}

#[tokio::test]
async fn feishu_frequency_limited_11232_is_retried_after_the_wait() {
    let fake = FakeFeishu::start().await;
    let r = rig(&feishu_yaml(&fake.url, ""), &[("FEISHU_SECRET", fake_feishu::SECRET)]).await;
    fake.force_frequency_limit(1);
    r.alerter.raise(input("f", "n", "internal", Severity::High)).await.unwrap();
    let rep = r.alerter.step().await.unwrap();
    assert_eq!((rep.sent, rep.rate_limited), (0, 1));
    r.alerter.step().await.unwrap();
    assert!(fake.messages().is_empty(), "waits before trying again");
    r.clock.advance(Duration::from_secs(3));
    r.alerter.step().await.unwrap();
    assert_eq!(fake.messages().len(), 1);
    let n = &r.store.list_notifications(None, 1).await.unwrap()[0];
    let outcomes: Vec<String> = r.store.deliveries(&n.id).await.unwrap().into_iter().map(|d| d.outcome).collect();
    assert_eq!(outcomes, ["rate_limited", "sent"]);
}

#[tokio::test]
async fn a_channel_down_then_up_delivers_with_backoff() {
    let fake = FakeFeishu::start().await;
    let r = rig(&feishu_yaml(&fake.url, "alerting:\n  backoff: 2s\n  max_attempts: 5\n"), &[("FEISHU_SECRET", fake_feishu::SECRET)]).await;
    fake.set_down(true);
    r.alerter.raise(input("f", "n", "internal", Severity::High)).await.unwrap();
    assert_eq!(r.alerter.step().await.unwrap().retried, 1);
    r.clock.advance(Duration::from_millis(1999));
    assert_eq!(r.alerter.step().await.unwrap(), Default::default(), "backoff 2s");
    r.clock.advance(Duration::from_millis(1));
    assert_eq!(r.alerter.step().await.unwrap().retried, 1);
    fake.set_down(false);
    r.clock.advance(Duration::from_secs(3));
    assert_eq!(r.alerter.step().await.unwrap().sent, 0, "second backoff is 4s");
    r.clock.advance(Duration::from_secs(1));
    assert_eq!(r.alerter.step().await.unwrap().sent, 1);
    let n = &r.store.list_notifications(None, 1).await.unwrap()[0];
    assert_eq!((n.status.as_str(), n.attempts), ("sent", 3));
}

backends! {
    async fn after_n_failures_the_notification_is_dead_and_raised_on_the_backup_channel(db: TestDb) {
        let fake = FakeFeishu::start().await;
        let bots = FakeBots::start().await;
        let extra = format!(
            "    backup: team_wecom\n  team_wecom:\n    type: wecom\n    key: ${{WECOM_KEY}}\n    endpoint: \"{}\"\nalerting:\n  max_attempts: 2\n  backoff: 1s\nroutes:\n  - match: {{ severity: [high] }}\n    channels: [ops]\n",
            bots.wecom_base
        );
        let r = rig_db(&db, &feishu_yaml(&fake.url, &extra), &[("FEISHU_SECRET", fake_feishu::SECRET), ("WECOM_KEY", fake_bots::WECOM_KEY)]).await;
        fake.set_down(true);
        r.alerter.raise(input("f", "publish", "auth_expired", Severity::High)).await.unwrap();
        r.alerter.step().await.unwrap();
        r.clock.advance(Duration::from_secs(1));
        let rep = r.alerter.step().await.unwrap();
        assert_eq!(rep.dead, 1, "{rep:?}");
        r.alerter.step().await.unwrap();
        let got = bots.wecom();
        assert_eq!(got.len(), 1, "errors: {:?}", bots.errors());
        let text = got[0]["text"]["content"].as_str().unwrap();
        assert!(text.starts_with("[转发]") && text.contains("ops") && text.contains("publish"), "{text}");
        let counts: BTreeMap<String, i64> = r.store.notification_counts().await.unwrap().into_iter().collect();
        assert_eq!(counts.get("dead"), Some(&1));
        assert_eq!(counts.get("sent"), Some(&1));
        assert_eq!(counts.get("pending"), None, "every notification ends sent or dead");
    }
}

#[tokio::test]
async fn pending_notifications_are_sent_after_a_restart() {
    let fake = FakeFeishu::start().await;
    let yaml = feishu_yaml(&fake.url, "");
    let env = [("FEISHU_SECRET", fake_feishu::SECRET)];
    let r = rig(&yaml, &env).await;
    fake.set_down(true);
    r.alerter.raise(input("f", "n", "internal", Severity::High)).await.unwrap();
    r.alerter.step().await.unwrap();
    let dir = r.dir;
    r.store.close().await;
    drop(r.alerter);
    fake.set_down(false);
    // A new process: a new store and alerter on the same database.
    let r2 = rig_in(dir, &yaml, &env).await;
    r2.clock.advance(Duration::from_secs(5));
    let rep = r2.alerter.step().await.unwrap();
    assert_eq!(rep.sent, 1, "{rep:?}");
    assert_eq!(fake.messages().len(), 1);
}

#[tokio::test]
async fn dingtalk_signed_in_the_query_and_wecom_judged_by_errcode() {
    let bots = FakeBots::start().await;
    let yaml = format!(
        "locale: en\nchannels:\n  ding:\n    type: dingtalk\n    webhook: \"{}\"\n    secret: ${{DING_SECRET}}\n    keyword: 告警\n    mention: [\"13800000000\"]\n  wx:\n    type: wecom\n    key: ${{WECOM_KEY}}\n    endpoint: \"{}\"\n    rate_limit: {{ per_minute: 1000 }}\n  wx_bad:\n    type: wecom\n    key: wrong-key-123456\n    endpoint: \"{}\"\nalerting:\n  dead_letter: ding\nroutes:\n  - match: {{ flow: [ding] }}\n    channels: [ding]\n  - match: {{ flow: [bad] }}\n    channels: [wx_bad]\n  - channels: [wx]\n",
        bots.ding_url, bots.wecom_base, bots.wecom_base
    );
    let r = rig(&yaml, &[("DING_SECRET", fake_bots::DING_SECRET), ("WECOM_KEY", fake_bots::WECOM_KEY)]).await;
    r.alerter.raise(input("ding", "n", "timeout", Severity::Medium)).await.unwrap();
    r.alerter.raise(input("bad", "n", "timeout", Severity::Medium)).await.unwrap();
    // The dead one is raised on the dead-letter channel, and that message leaves in the same step.
    let rep = r.alerter.step().await.unwrap();
    assert_eq!((rep.sent, rep.dead), (2, 1), "{rep:?} {:?}", bots.errors());
    let d = &bots.ding()[0];
    assert!(d["text"]["content"].as_str().unwrap().contains("告警 [ALERT] Flow failed"), "{d}");
    assert_eq!(d["at"]["atMobiles"][0], "13800000000");
    assert_eq!(bots.errors(), [93000]);
    let dead = bots.ding()[1]["text"]["content"].as_str().unwrap().to_owned();
    assert!(dead.contains("[FAILOVER]") && dead.contains("wx_bad") && dead.contains("alerts resend"), "{dead}");
    // WeCom's own limit of 20 per minute answers 45009: queued, not lost.
    for i in 0..21 {
        r.alerter.raise(input(&format!("w{i}"), "n", "timeout", Severity::Medium)).await.unwrap();
    }
    let rep = r.alerter.step().await.unwrap();
    assert_eq!(rep.sent, 20, "{rep:?}");
    assert_eq!(rep.rate_limited, 1);
    assert!(bots.errors().contains(&45009));
    let pending = r.store.list_notifications(Some("pending"), 100).await.unwrap();
    assert_eq!(pending.len(), 1, "kept for after the minute");
    assert!(pending[0].next_attempt_at >= T0 + 60_000);
}

#[tokio::test]
async fn sms_through_aliyun_and_tencent_with_signatures_the_fakes_verify() {
    let sms = FakeSms::start().await;
    let yaml = format!(
        "channels:\n  ali:\n    type: sms\n    provider: aliyun\n    endpoint: \"{a}\"\n    access_key_id: {ak}\n    access_key_secret: ${{ALI}}\n    sign_name: 流程卫士\n    template_id: SMS_1\n    phones: [\"13800000000\"]\n    params: {{ flow: \"{{{{ flow }}}}\", step: \"{{{{ node }}}}\" }}\n  ali_bad:\n    type: sms\n    provider: aliyun\n    endpoint: \"{a}\"\n    access_key_id: {ak}\n    access_key_secret: wrong-secret-000\n    sign_name: x\n    template_id: SMS_1\n    phones: [\"13800000000\"]\n  tc:\n    type: sms\n    provider: tencent\n    endpoint: \"{t}\"\n    access_key_id: {tid}\n    access_key_secret: ${{TC}}\n    app_id: \"1400000000\"\n    sign_name: 流程卫士\n    template_id: \"123456\"\n    phones: [\"+8613800000000\"]\nroutes:\n  - match: {{ flow: [bad] }}\n    channels: [ali_bad]\n  - channels: [ali, tc]\n",
        a = sms.aliyun_url,
        t = sms.tencent_url,
        ak = fake_sms::ALI_KEY_ID,
        tid = fake_sms::TC_ID
    );
    let r = rig(&yaml, &[("ALI", fake_sms::ALI_SECRET), ("TC", fake_sms::TC_KEY)]).await;
    r.alerter.raise(input("douyin", "publish", "auth_expired", Severity::High)).await.unwrap();
    r.alerter.raise(input("bad", "publish", "auth_expired", Severity::High)).await.unwrap();
    // The dead one is raised on another channel, and that message leaves in the same step.
    let rep = r.alerter.step().await.unwrap();
    assert_eq!((rep.sent, rep.dead), (3, 1), "{rep:?}");
    let ali = sms.aliyun();
    assert_eq!(ali[0]["TemplateParam"], r#"{"flow":"douyin","step":"publish"}"#);
    let tc = sms.tencent();
    assert_eq!(
        tc[0]["TemplateParamSet"],
        serde_json::json!(["douyin", "publish", "auth_expired"]),
        "the default parameters in their order: flow, node, reason"
    );
    let dead = &r.store.list_notifications(Some("dead"), 1).await.unwrap()[0];
    assert!(dead.last_error.as_deref().unwrap().contains("SignatureDoesNotMatch"), "{dead:?}");
    assert!(!serde_json::to_string(dead).unwrap().contains("wrong-secret-000"), "the secret is masked");
}

fn tencent_yaml(sms: &FakeSms, phones: &str, extra: &str) -> String {
    format!(
        "channels:\n  tc:\n    type: sms\n    provider: tencent\n    endpoint: \"{}\"\n    access_key_id: {}\n    access_key_secret: ${{TC}}\n    app_id: \"1400000000\"\n    sign_name: 流程卫士\n    template_id: \"123456\"\n    phones: {phones}\n{extra}alerting: {{ max_attempts: 3, backoff: 1s }}\n",
        sms.tencent_url,
        fake_sms::TC_ID
    )
}

fn sent_to(requests: &[Value], field: &str) -> Vec<Vec<String>> {
    requests
        .iter()
        .map(|r| match &r[field] {
            Value::Array(a) => a.iter().map(|p| p.as_str().unwrap().to_owned()).collect(),
            Value::String(s) => s.split(',').map(str::to_owned).collect(),
            _ => vec![],
        })
        .collect()
}

#[tokio::test]
async fn tencent_partial_success_retries_only_the_numbers_that_failed() {
    let sms = FakeSms::start().await;
    let (a, b) = ("+8613800000001", "+8613800000002");
    sms.script(b, &["LimitExceeded.PhoneNumberThirtySecondLimit"]);
    let r = rig(&tencent_yaml(&sms, &format!("[\"{a}\", \"{b}\"]"), ""), &[("TC", fake_sms::TC_KEY)]).await;
    r.alerter.raise(input("douyin", "publish", "auth_expired", Severity::High)).await.unwrap();
    let rep = r.alerter.step().await.unwrap();
    assert_eq!((rep.sent, rep.retried, rep.rate_limited), (0, 1, 0), "{rep:?}");
    let n = &r.store.list_notifications(None, 1).await.unwrap()[0];
    assert_eq!(n.attempts, 1, "a per-number limit counts as an attempt");
    assert!(n.last_error.as_deref().unwrap().contains("sent to 1 of 2"), "{n:?}");
    r.clock.advance(Duration::from_secs(2));
    let rep = r.alerter.step().await.unwrap();
    assert_eq!(rep.sent, 1, "{rep:?}");
    assert_eq!(sent_to(&sms.tencent(), "PhoneNumberSet"), [vec![a, b], vec![b]], "A is not sent the message twice");
}

#[tokio::test]
async fn tencent_numbers_that_keep_failing_count_every_attempt_and_stop_when_the_budget_is_spent() {
    let sms = FakeSms::start().await;
    let (a, b) = ("+8613800000001", "+8613800000002");
    sms.script(b, &["LimitExceeded.PhoneNumberThirtySecondLimit"; 10]);
    let yaml =
        tencent_yaml(&sms, &format!("[\"{a}\", \"{b}\"]"), "").replace("max_attempts: 3,", "max_attempts: 3, delivery_budget: 250s,");
    let r = rig(&yaml, &[("TC", fake_sms::TC_KEY)]).await;
    r.alerter.raise(input("douyin", "publish", "auth_expired", Severity::High)).await.unwrap();
    for _ in 0..6 {
        r.alerter.step().await.unwrap();
        r.clock.advance(Duration::from_secs(120));
    }
    // Without a backup channel the budget, not max_attempts, ends it; every per-number try counts.
    let n = &r.store.list_notifications(None, 1).await.unwrap()[0];
    let calls = sent_to(&sms.tencent(), "PhoneNumberSet");
    assert_eq!(n.status, "dead", "{n:?}");
    assert_eq!(n.attempts as usize, calls.len(), "{n:?}");
    assert!(calls.len() >= 3, "{calls:?}");
    assert_eq!(calls.iter().filter(|c| c.contains(&a.to_string())).count(), 1, "{calls:?}");
}

#[tokio::test]
async fn a_partial_sms_that_fails_over_reaches_every_number_of_the_backup() {
    let sms = FakeSms::start().await;
    let (a, b, c) = ("+8613800000001", "+8613800000002", "+8613800000003");
    sms.script(b, &["LimitExceeded.PhoneNumberThirtySecondLimit", "InvalidParameterValue.IncorrectPhoneNumber"]);
    let backup = format!(
        "    backup: tc2\n  tc2:\n    type: sms\n    provider: tencent\n    endpoint: \"{}\"\n    access_key_id: {}\n    access_key_secret: ${{TC}}\n    app_id: \"1400000000\"\n    sign_name: 流程卫士\n    template_id: \"123456\"\n    phones: [\"{c}\"]\nroutes:\n  - channels: [tc]\n",
        sms.tencent_url,
        fake_sms::TC_ID
    );
    let r = rig(&tencent_yaml(&sms, &format!("[\"{a}\", \"{b}\"]"), &backup), &[("TC", fake_sms::TC_KEY)]).await;
    r.alerter.raise(input("douyin", "publish", "auth_expired", Severity::High)).await.unwrap();
    assert_eq!(r.alerter.step().await.unwrap().retried, 1);
    r.clock.advance(Duration::from_secs(2));
    let rep = r.alerter.step().await.unwrap();
    assert_eq!(rep.dead, 1, "a wrong number is not retried: {rep:?}");
    r.alerter.step().await.unwrap();
    assert_eq!(sent_to(&sms.tencent(), "PhoneNumberSet"), [vec![a, b], vec![b], vec![c]], "the backup sends to all of its numbers");
}

#[tokio::test]
async fn tencent_template_parameters_keep_the_order_written() {
    let sms = FakeSms::start().await;
    let map = "    params: { reason: \"{{ error_kind }}\", flow: \"{{ flow }}\" }\n";
    let r = rig(&tencent_yaml(&sms, "[\"+8613800000001\"]", map), &[("TC", fake_sms::TC_KEY)]).await;
    r.alerter.raise(input("douyin", "publish", "auth_expired", Severity::High)).await.unwrap();
    r.alerter.step().await.unwrap();
    assert_eq!(sms.tencent()[0]["TemplateParamSet"], serde_json::json!(["auth_expired", "douyin"]), "slot {{1}} is the first written");
    let list = "    params: [\"{{ node }}\", \"{{ flow }}\"]\n";
    let r = rig(&tencent_yaml(&sms, "[\"+8613800000001\"]", list), &[("TC", fake_sms::TC_KEY)]).await;
    r.alerter.raise(input("douyin", "publish", "auth_expired", Severity::High)).await.unwrap();
    r.alerter.step().await.unwrap();
    assert_eq!(sms.tencent()[1]["TemplateParamSet"], serde_json::json!(["publish", "douyin"]));
}

#[tokio::test]
async fn aliyun_asks_per_number_and_retries_only_the_number_that_was_limited() {
    let sms = FakeSms::start().await;
    let (a, b) = ("13800000001", "13800000002");
    sms.script(b, &["isv.BUSINESS_LIMIT_CONTROL"]);
    let yaml = format!(
        "channels:\n  ali:\n    type: sms\n    provider: aliyun\n    endpoint: \"{}\"\n    access_key_id: {}\n    access_key_secret: ${{ALI}}\n    sign_name: 流程卫士\n    template_id: SMS_1\n    phones: [\"{a}\", \"{b}\"]\nalerting: {{ max_attempts: 3, backoff: 1s }}\n",
        sms.aliyun_url,
        fake_sms::ALI_KEY_ID
    );
    let r = rig(&yaml, &[("ALI", fake_sms::ALI_SECRET)]).await;
    r.alerter.raise(input("douyin", "publish", "auth_expired", Severity::High)).await.unwrap();
    let rep = r.alerter.step().await.unwrap();
    assert_eq!(rep.retried, 1, "{rep:?}");
    assert_eq!(r.store.list_notifications(None, 1).await.unwrap()[0].attempts, 1);
    r.clock.advance(Duration::from_secs(2));
    assert_eq!(r.alerter.step().await.unwrap().sent, 1);
    let calls: Vec<Value> = sms.aliyun().iter().map(|p| serde_json::to_value(p).unwrap()).collect();
    assert_eq!(sent_to(&calls, "PhoneNumbers"), [vec![a], vec![b], vec![b]]);
}

#[test]
fn reports_stay_off_sms_and_check_says_so() {
    let yaml = "channels:\n  chat:\n    type: console\n  sms:\n    type: sms\n    provider: http\n    endpoint: http://127.0.0.1:9/\n    phones: [\"+8613800000001\"]\n";
    let cfg = config(yaml, &[]);
    assert_eq!(cfg.reports.report_channels(&cfg.channels), ["chat"], "by default: every channel that can carry a report");
    assert!(cfg.reports.warnings(&cfg.channels).is_empty());
    let cfg = config(&format!("{yaml}reports:\n  channels: [chat, sms]\n"), &[]);
    assert_eq!(cfg.reports.report_channels(&cfg.channels), ["chat"]);
    let w = cfg.reports.warnings(&cfg.channels);
    assert!(w.len() == 1 && w[0].contains("`sms`") && w[0].contains("cannot carry a report"), "{w:?}");
}

#[test]
fn channel_settings_are_checked_by_their_type_with_positions() {
    let env: BTreeMap<String, String> = BTreeMap::new();
    let yaml = "channels:\n  a:\n    type: feishu\n    webhok: http://x\n  b:\n    type: dingtalk\n    webhook: http://x\n    format: cards\n  c:\n    type: emial\n  d:\n    type: sms\n    provider: aliyun\n    phones: []\n    params: [\"{{ flow }}\"]\n";
    let err = Config::parse(Path::new("flowguard.yaml"), yaml, Path::new("/tmp"), &|k| env.get(k).cloned()).unwrap_err().to_string();
    for want in [
        "flowguard.yaml:4:5: channels.a.webhok: unknown field `webhok` (did you mean `webhook`?)",
        "channels.b.format: unknown variant `cards`",
        "flowguard.yaml:10:11: channels.c.type: unknown channel type `emial` (did you mean `email`?)",
        "channels.d.phones: an `sms` channel needs at least one number",
        "channels.d: provider `aliyun` needs `access_key_id`",
        "channels.d.params: Aliyun templates name their variables",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
}

#[tokio::test]
async fn dingtalk_action_card_has_a_button_to_the_run_and_wecom_speaks_markdown_v2() {
    let bots = FakeBots::start().await;
    let yaml = format!(
        "locale: en\nchannels:\n  ding:\n    type: dingtalk\n    webhook: \"{}\"\n    secret: ${{DING_SECRET}}\n    keyword: 告警\n    format: actionCard\n  link:\n    type: dingtalk\n    webhook: \"{}\"\n    secret: ${{DING_SECRET}}\n    keyword: 告警\n    format: link\n  wx:\n    type: wecom\n    key: ${{WECOM_KEY}}\n    endpoint: \"{}\"\n    format: markdown_v2\nroutes:\n  - channels: [ding, link, wx]\nalerting:\n  run_url: \"http://dash.local/runs/{{run_id}}\"\n",
        bots.ding_url, bots.ding_url, bots.wecom_base
    );
    let r = rig(&yaml, &[("DING_SECRET", fake_bots::DING_SECRET), ("WECOM_KEY", fake_bots::WECOM_KEY)]).await;
    r.alerter.raise(input("douyin", "publish", "timeout", Severity::Medium)).await.unwrap();
    let rep = r.alerter.step().await.unwrap();
    assert_eq!(rep.sent, 3, "{rep:?} {:?}", bots.errors());
    let ding = bots.ding();
    let card = ding.iter().find(|d| d["msgtype"] == "actionCard").expect("an action card");
    assert_eq!(card["actionCard"]["singleURL"], "http://dash.local/runs/run-douyin-publish");
    assert_eq!(card["actionCard"]["singleTitle"], "Open the run");
    let link = ding.iter().find(|d| d["msgtype"] == "link").expect("a link message");
    assert_eq!(link["link"]["messageUrl"], "http://dash.local/runs/run-douyin-publish");
    let wx = &bots.wecom()[0];
    assert_eq!(wx["msgtype"], "markdown_v2");
    assert!(wx["markdown_v2"]["content"].as_str().unwrap().contains("Flow failed"), "{wx}");
}

#[tokio::test]
async fn email_without_starttls_on_the_server_fails_for_good_with_a_clear_error() {
    let smtp = Smtp::start();
    let yaml = format!(
        "locale: en\nchannels:\n  mail:\n    type: email\n    smtp_host: 127.0.0.1\n    smtp_port: {}\n    from: \"fg@example.com\"\n    to: [\"ops@example.com\"]\n",
        smtp.port
    );
    let r = rig(&yaml, &[]).await;
    r.alerter.raise(input("douyin", "publish", "publish_failed", Severity::Medium)).await.unwrap();
    let rep = r.alerter.step().await.unwrap();
    assert_eq!((rep.retried, rep.dead), (0, 1), "{rep:?}");
    let n = &r.store.list_notifications(None, 1).await.unwrap()[0];
    assert!(n.last_error.as_deref().unwrap().contains("does not offer STARTTLS"), "{n:?}");
    assert_eq!(r.store.deliveries(&n.id).await.unwrap()[0].outcome, "failed");
    assert!(smtp.messages().is_empty(), "nothing is sent in clear");
}

#[tokio::test]
async fn email_reaches_a_real_smtp_server_as_text_and_html() {
    let smtp = Smtp::start();
    let yaml = format!(
        "locale: en\nchannels:\n  mail:\n    type: email\n    smtp_host: 127.0.0.1\n    smtp_port: {}\n    smtp_security: none\n    from: \"flowguard <fg@example.com>\"\n    to: [\"ops@example.com\"]\nalerting:\n  run_url: \"http://dash.local/runs/{{run_id}}\"\n",
        smtp.port
    );
    let r = rig(&yaml, &[]).await;
    r.alerter.raise(input("douyin", "publish", "publish_failed", Severity::Medium)).await.unwrap();
    let rep = r.alerter.step().await.unwrap();
    assert_eq!(rep.sent, 1, "{rep:?}");
    let mails = smtp.messages();
    assert_eq!(mails.len(), 1);
    let m = &mails[0];
    assert!(m.contains("Subject: [ALERT] Flow failed"), "{m}");
    assert!(m.contains("text/plain") && m.contains("text/html"), "{m}");
    assert!(m.contains("ops@example.com") && m.contains("http://dash.local/runs/run-douyin-publish"), "{m}");
    let id = m.lines().find_map(|l| l.strip_prefix("Message-ID: ")).unwrap_or_else(|| panic!("no Message-ID in {m}"));
    assert!(id.starts_with('<') && id.trim_end().ends_with("@example.com>"), "RFC 5322 id on the sender's domain: {id}");
    let n = &r.store.list_notifications(None, 1).await.unwrap()[0];
    assert!(r.store.deliveries(&n.id).await.unwrap()[0].answer.as_deref().unwrap().starts_with("250"));
}

#[tokio::test]
async fn routes_first_match_wins_unless_continue_and_low_is_recorded_only() {
    let fake = FakeFeishu::start_with(None, None).await;
    let bots = FakeBots::start().await;
    let yaml = format!(
        "channels:\n  ops:\n    type: feishu\n    webhook: \"{}\"\n    format: text\n    role: on_call\n  team:\n    type: wecom\n    key: {}\n    endpoint: \"{}\"\n    role: team\n",
        fake.url,
        fake_bots::WECOM_KEY,
        bots.wecom_base
    );
    // Default routes: high → on_call with @all, medium → team, low → nobody.
    let r = rig(&yaml, &[]).await;
    r.alerter.raise(input("a", "n", "auth_expired", Severity::High)).await.unwrap();
    r.alerter.raise(input("b", "n", "timeout", Severity::Medium)).await.unwrap();
    let low = r.alerter.raise(input("c", "n", "quality_rejected", Severity::Low)).await.unwrap();
    assert!(low.notifications.is_empty());
    r.alerter.step().await.unwrap();
    assert_eq!(fake.messages().len(), 1);
    assert!(fake.messages()[0]["content"]["text"].as_str().unwrap().contains("<at user_id=\"all\">"));
    assert_eq!(bots.wecom().len(), 1);
    assert_eq!(r.store.list_alerts(&AlertFilter::default()).await.unwrap().len(), 3, "low is recorded");

    let yaml2 = format!(
        "{yaml}routes:\n  - match: {{ error_kind: [auth_expired] }}\n    channels: [ops]\n    continue: true\n  - match: {{ flow: [a] }}\n    channels: [team]\n  - channels: [ops]\n"
    );
    let r2 = rig(&yaml2, &[]).await;
    let both = r2.alerter.raise(input("a", "n", "auth_expired", Severity::High)).await.unwrap();
    assert_eq!(both.notifications.len(), 2, "continue goes on to the next match");
    let one = r2.alerter.raise(input("a", "m", "timeout", Severity::Medium)).await.unwrap();
    assert_eq!(one.notifications.len(), 1, "first match wins");
    let _ = r2.cfg;
}

#[test]
fn config_errors_name_the_field_and_the_unknown_channel() {
    let yaml = "channels:\n  ops:\n    type: feishu\n  x:\n    type: fax\nroutes:\n  - channels: [opz]\n    group_wait: soon\n";
    let err = Config::parse(Path::new("flowguard.yaml"), yaml, Path::new("/tmp"), &|_| None).unwrap_err().to_string();
    assert!(err.contains("flowguard.yaml:3:5: channels.ops: missing field `webhook`"), "{err}");
    assert!(err.contains("unknown channel type `fax`"), "{err}");
    assert!(err.contains("unknown channel `opz` (did you mean `ops`?)"), "{err}");
    assert!(err.contains("bad duration `soon`"), "{err}");
}

/// The binary: a failing `flowguard run` delivers its alert before exiting; with the bot down it
/// leaves the alert pending, and the next process delivers it.
#[test]
fn flowguard_run_delivers_its_alert_and_a_later_run_delivers_what_was_left() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let fake = rt.block_on(FakeFeishu::start());
    let p = Project::with_config(&format!(
        "storage:\n  url: sqlite://fg.db\nendpoints:\n  dead:\n    base_url: http://127.0.0.1:1\nchannels:\n  ops:\n    type: feishu\n    webhook: \"{}\"\n    secret: ${{FEISHU_SECRET}}\n    keyword: 告警\nalerting:\n  group_interval: 0s\n  drain: 1s\n  backoff: 100ms\n  max_backoff: 200ms\n  max_attempts: 50\n",
        fake.url
    ));
    p.write(
        "flows/broken.yaml",
        "name: broken\nnodes:\n  - id: publish\n    kind: http\n    endpoint: dead\n    path: /publish\n    retry: { policy: none }\n",
    );
    p.write("flows/fine.yaml", "name: fine\nnodes:\n  - id: hello\n    kind: template\n    text: hi\n");
    let run = |flow: &str| {
        crate::support::bin().current_dir(p.path()).env("FEISHU_SECRET", fake_feishu::SECRET).args(["run", flow]).output().unwrap()
    };
    let o = run("broken");
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(fake.messages().len(), 1, "delivered before the process exited: {:?}", fake.rejected());
    assert!(fake.messages()[0].to_string().contains("publish"));

    fake.set_down(true);
    let o = run("broken");
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(fake.messages().len(), 1);
    let list = crate::support::bin()
        .current_dir(p.path())
        .env("FEISHU_SECRET", fake_feishu::SECRET)
        .args(["alerts", "list", "--notifications", "--format", "json"])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&list.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(&list)));
    assert_eq!(v["counts"]["sent"], 1, "{v}");
    assert!(!stdout(&list).contains(fake_feishu::SECRET) && !stdout(&list).contains(fake_feishu::TOKEN));
    fake.set_down(false);
    let o = run("fine");
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(fake.messages().len(), 2, "the next process delivered the pending alert");
    drop(rt);
}

fn outcome(flow: &str, status: flowguard::vocab::RunStatus, kind: Option<flowguard::vocab::ErrorKind>) -> flowguard::engine::RunOutcome {
    flowguard::engine::RunOutcome {
        run_id: uuid::Uuid::now_v7().to_string(),
        flow: flow.into(),
        status,
        duration_ms: 10,
        failed_node: kind.map(|_| "publish".to_string()),
        error_kind: kind,
        error_message: kind.map(|k| format!("{k} happened")),
        outputs: Default::default(),
        severity: None,
    }
}

#[tokio::test]
async fn the_engine_observer_alerts_on_final_outcomes_and_latency_not_on_recovered_runs() {
    use flowguard::engine::Event;
    use flowguard::vocab::{ErrorKind, RunStatus};
    let fake = FakeFeishu::start().await;
    let r = rig(&feishu_yaml(&fake.url, "routes:\n  - channels: [ops]\n"), &[("FEISHU_SECRET", fake_feishu::SECRET)]).await;
    let obs = r.alerter.observer();
    obs(&Event::RunFinished(outcome("f", RunStatus::Recovered, None)));
    obs(&Event::RunFinished(outcome("g", RunStatus::TimedOut, Some(ErrorKind::FlowTimeout))));
    obs(&Event::LatencyWarning { run_id: "r1".into(), flow: "h".into(), threshold_ms: 90_000 });
    r.alerter.settle().await;
    let alerts = r.store.list_alerts(&AlertFilter::default()).await.unwrap();
    let mut kinds: Vec<(String, String)> = alerts.iter().map(|a| (a.flow.clone(), a.error_kind.clone())).collect();
    kinds.sort();
    assert_eq!(kinds, [("g".to_string(), "flow_timeout".to_string()), ("h".to_string(), "latency_warning".to_string())]);
    r.alerter.step().await.unwrap();
    let texts: Vec<String> = fake.messages().iter().map(|m| m.to_string()).collect();
    assert!(texts.iter().any(|t| t.contains("流程超时")), "{texts:?}");
    assert!(texts.iter().any(|t| t.contains("流程延迟预警") && t.contains("90")), "{texts:?}");
    // g succeeds again: resolved.
    obs(&Event::RunFinished(outcome("g", RunStatus::Succeeded, None)));
    r.alerter.settle().await;
    r.alerter.step().await.unwrap();
    assert!(fake.messages().last().unwrap().to_string().contains("[恢复]"));
}

#[test]
fn a_notify_node_sends_through_the_outbox_and_the_cli_acks_and_silences() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let fake = rt.block_on(FakeFeishu::start_with(None, Some("告警")));
    let p = Project::with_config(&format!(
        "storage:\n  url: sqlite://fg.db\nendpoints:\n  dead:\n    base_url: http://127.0.0.1:1\nchannels:\n  ops:\n    type: feishu\n    webhook: \"{}\"\n    format: post\nroutes:\n  - channels: [ops]\n",
        fake.url
    ));
    p.write("flows/tell.yaml", "name: tell\ninputs:\n  who: ops\nnodes:\n  - id: say\n    kind: notify\n    channel: ops\n    title: \"[告警] 手动通知\"\n    text: \"hello {{ input.who }}\"\n");
    let o = p.run(&["run", "tell"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let m = fake.messages();
    assert_eq!(m.len(), 1, "{:?}", fake.rejected());
    assert_eq!(m[0]["msg_type"], "post");
    assert!(m[0].to_string().contains("hello ops"), "{}", m[0]);

    p.write(
        "flows/broken.yaml",
        "name: broken\nnodes:\n  - id: publish\n    kind: http\n    endpoint: dead\n    path: /x\n    retry: { policy: none }\n",
    );
    let o = p.run(&["silences", "add", "--match", "flow=broken", "--for", "1h", "--comment", "maintenance"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = p.run(&["run", "broken"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(fake.messages().len(), 1, "silenced");
    let list = p.json(&["silences", "list"]);
    let id = list[0]["id"].as_str().unwrap().to_string();
    assert_eq!(p.run(&["silences", "expire", &id[..8]]).status.code(), Some(0));
    let o = p.run(&["run", "broken"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(fake.messages().len(), 2, "pages again once the silence is expired");
    let alerts = p.json(&["alerts", "list"]);
    let fp = alerts.as_array().unwrap().iter().find(|a| a["flow"] == "broken").unwrap()["fingerprint"].as_str().unwrap().to_string();
    let o = p.run(&["alerts", "ack", &fp, "--by", "alice"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let alerts = p.json(&["alerts", "list"]);
    assert_eq!(alerts.as_array().unwrap().iter().find(|a| a["flow"] == "broken").unwrap()["acked_by"], "alice");
    assert_eq!(p.run(&["alerts", "ack", "nope-nope"]).status.code(), Some(2));
    drop(rt);
}

#[tokio::test]
async fn group_wait_collects_a_burst_and_repeat_interval_reminds_until_acknowledged() {
    let fake = FakeFeishu::start().await;
    let extra = "routes:\n  - channels: [ops]\n    group_wait: 30s\n    group_interval: 5m\n    repeat_interval: 1h\n";
    let r = rig(&feishu_yaml(&fake.url, extra), &[("FEISHU_SECRET", fake_feishu::SECRET)]).await;
    let first = r.alerter.raise(input("douyin", "publish", "publish_failed", Severity::Medium)).await.unwrap();
    assert!(first.notifications.is_empty(), "group_wait holds the first message");
    r.clock.advance(Duration::from_secs(10));
    r.alerter.raise(input("douyin", "script", "timeout", Severity::Medium)).await.unwrap();
    r.alerter.step().await.unwrap();
    assert!(fake.messages().is_empty());
    r.clock.advance(Duration::from_secs(20));
    r.alerter.step().await.unwrap();
    r.alerter.step().await.unwrap();
    let msgs = fake.messages();
    assert_eq!(msgs.len(), 1, "one message for the burst");
    assert!(card_text(&msgs[0]).contains("publish") && card_text(&msgs[0]).contains("script"));
    // Nothing new: a reminder after repeat_interval, not before.
    r.clock.advance(Duration::from_secs(3599));
    r.alerter.step().await.unwrap();
    assert_eq!(fake.messages().len(), 1);
    r.clock.advance(Duration::from_secs(1));
    r.alerter.step().await.unwrap();
    r.alerter.step().await.unwrap();
    assert_eq!(fake.messages().len(), 2, "reminder");
    // Acknowledged alerts are not repeated.
    r.alerter.ack(&first.alert_id, "bob").await.unwrap();
    let other = fingerprint_of("douyin", "script", "timeout");
    r.alerter.ack(&other, "bob").await.unwrap();
    r.clock.advance(Duration::from_secs(3600));
    r.alerter.step().await.unwrap();
    r.alerter.step().await.unwrap();
    assert_eq!(fake.messages().len(), 2, "no reminder once acknowledged");
}

fn fingerprint_of(flow: &str, node: &str, kind: &str) -> String {
    flowguard::alert::fingerprint(flow, node, kind)
}

/// Full engine runs (not the alert entry point): the observer raises on the final outcome and
/// resolves when the flow succeeds again.
#[tokio::test]
async fn engine_runs_raise_and_resolve_through_the_observer() {
    use crate::support::fake_openai::{FakeOpenAi, Reply};
    use crate::support::harness::{harness_with, openai_config};
    let ai = FakeOpenAi::start(vec![Reply::Error(500, None, None), Reply::Content("{\"ok\": true}".into())]).await;
    let fake = FakeFeishu::start().await;
    let cfg_text = format!(
        "{}{}",
        openai_config(&ai.base_url),
        feishu_yaml(&fake.url, "routes:\n  - channels: [ops]\n").replace("locale: zh-CN\n", "")
    );
    let env = [("FEISHU_SECRET", fake_feishu::SECRET)];
    let flow = "name: writer\nnodes:\n  - id: write\n    kind: llm\n    model: m\n    prompt: hi\n    retry: { policy: none }\n";
    let h = harness_with(&cfg_text, flow, &env, None).await;
    let shared: SharedClock = Arc::new(h.clock.clone());
    let alerter = Alerter::new(&config(&cfg_text, &env), h.engine.store.clone(), shared).unwrap();
    let engine = h.engine.clone().with_observer(alerter.observer());
    let req = || flowguard::engine::RunRequest { flow: h.flow.clone(), inputs: Default::default(), trigger: "test".into(), canary: false };
    let failed = engine.run(req()).await.unwrap();
    assert_eq!(failed.status, flowguard::vocab::RunStatus::Failed);
    alerter.drain(Duration::from_secs(5)).await.unwrap();
    let msgs = fake.messages();
    assert_eq!(msgs.len(), 1, "{:?}", fake.rejected());
    let t = card_text(&msgs[0]);
    assert!(
        t.contains("writer") && t.contains("write") && t.contains("upstream_5xx") && t.contains("尝试 1 次"),
        "attempts counted from the events: {t}"
    );
    assert_eq!(msgs[0]["card"]["header"]["template"], "orange", "upstream_5xx is medium");
    let ok = engine.run(req()).await.unwrap();
    assert!(ok.status.is_success());
    alerter.drain(Duration::from_secs(5)).await.unwrap();
    assert_eq!(fake.messages().len(), 2);
    assert!(card_text(&fake.messages()[1]).contains("[恢复]"));
}
