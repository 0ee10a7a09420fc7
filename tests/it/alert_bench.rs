//! Alert storm benchmark (DESIGN.md §9.5), printed, never asserted on time. Run it with
//! `cargo nextest run --run-ignored ignored-only alert_bench --no-capture`.
//!
//! Alerts enter through `Alerter::raise` (the entry point the engine observer uses), not full
//! engine runs. The pump runs as `serve` will run it (`run_loop`), on the system clock, against
//! the fake Feishu with its real limits (5/s, 100/min).

use crate::support::fake_feishu::{self, FakeFeishu};
use flowguard::alert::{AlertInput, Alerter};
use flowguard::clock::{SharedClock, SystemClock};
use flowguard::config::Config;
use flowguard::store::Store;
use flowguard::vocab::Severity;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn input(flow: String, node: String, kind: &str, sev: Severity) -> AlertInput {
    AlertInput {
        flow,
        node,
        error_kind: kind.into(),
        severity: sev,
        status: "failed".into(),
        run_id: Some(uuid::Uuid::now_v7().to_string()),
        message: "boom".into(),
        attempts: Some(1),
        labels: BTreeMap::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run on purpose, prints figures"]
async fn alert_bench() {
    let fake = FakeFeishu::start().await;
    let yaml = format!(
        "channels:\n  ops:\n    type: feishu\n    webhook: \"{}\"\n    secret: ${{S}}\n    keyword: 告警\nroutes:\n  - channels: [ops]\nalerting:\n  group_wait: 0s\n  group_interval: 10s\n",
        fake.url
    );
    let env: BTreeMap<String, String> = [("S".to_string(), fake_feishu::SECRET.to_string())].into();
    let cfg = Config::parse(Path::new("flowguard.yaml"), &yaml, Path::new("/tmp"), &|k| env.get(k).cloned()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&format!("sqlite://{}", dir.path().join("b.db").display()), 8, Duration::from_secs(10)).await.unwrap();
    let clock: SharedClock = Arc::new(SystemClock);
    let alerter = Alerter::new(&cfg, store.clone(), clock).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let pump = {
        let a = alerter.clone();
        tokio::spawn(async move {
            a.run_loop(async {
                let _ = stopped.await;
            })
            .await
        })
    };

    // 1. Latency: a failure in a new group → its message at the fake (outbox write included).
    let mut lat = Vec::new();
    for i in 0..20 {
        let before = fake.messages().len();
        let t = Instant::now();
        alerter.raise(input(format!("latency{i}"), "publish".into(), "auth_expired", Severity::High)).await.unwrap();
        // The latency is read from the fake's own arrival time; polling only has to notice it.
        while fake.messages().len() == before {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        lat.push(fake.accepted_at()[before].duration_since(t));
        fake.until_room_for(1).await; // stay under the bot's 5/s
    }
    lat.sort();
    let median = lat[lat.len() / 2];

    // 2. The storm: 10,000 failures of one fingerprint and 1,000 distinct ones over 20 flows.
    let sent_before = fake.messages().len();
    let start = Instant::now();
    let first_fail = Instant::now();
    let mut n = 0u64;
    for i in 0..11_000u64 {
        let inp = if i % 11 == 10 {
            input(format!("flow{}", i % 20), format!("node{i}"), "timeout", Severity::Medium)
        } else {
            input("flow0".into(), "publish".into(), "auth_expired", Severity::High)
        };
        alerter.raise(inp).await.unwrap();
        n += 1;
    }
    let fed = start.elapsed();
    // Let the pump work until a minute after the storm began.
    while start.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = stop.send(());
    let _ = pump.await;
    let after_storm: Vec<Instant> = fake.accepted_at()[sent_before..].to_vec();
    let first_msg = after_storm.first().map(|t| t.duration_since(first_fail));
    let counts: BTreeMap<String, i64> = store.notification_counts().await.unwrap().into_iter().collect();
    let alerts = store.list_alerts(&Default::default()).await.unwrap();
    let occurrences: i64 = alerts.iter().filter(|a| !a.flow.starts_with("latency")).map(|a| a.count).sum();
    let created: i64 = counts.values().sum();
    let accounted =
        counts.get("sent").copied().unwrap_or(0) + counts.get("pending").copied().unwrap_or(0) + counts.get("dead").copied().unwrap_or(0);
    let groups_waiting = store.next_group_due().await.unwrap().is_some();
    println!(
        "alert_bench latency_first_message_ms median={:.2} min={:.2} max={:.2} samples={}",
        ms(median),
        ms(lat[0]),
        ms(*lat.last().unwrap()),
        lat.len()
    );
    println!("alert_bench storm raised={n} feed_s={:.2} raise_per_s={:.0}", fed.as_secs_f64(), n as f64 / fed.as_secs_f64());
    println!(
        "alert_bench storm messages_sent_in_60s={} first_message_after_ms={:.2} peak_per_1s={} peak_per_60s={} fake_rejections={}",
        after_storm.len(),
        first_msg.map(ms).unwrap_or(-1.0),
        fake.peak(Duration::from_secs(1)),
        fake.peak(Duration::from_secs(60)),
        fake.rejected().len()
    );
    println!(
        "alert_bench storm occurrences_recorded={occurrences} fingerprints={} notifications={created} sent={} pending={} dead={} lost={} groups_waiting={groups_waiting}",
        alerts.iter().filter(|a| !a.flow.starts_with("latency")).count(),
        counts.get("sent").copied().unwrap_or(0),
        counts.get("pending").copied().unwrap_or(0),
        counts.get("dead").copied().unwrap_or(0),
        (n as i64 - occurrences) + (created - accounted),
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
