//! Reports and statistics: a generated history written through the store, every figure checked
//! against a plain recomputation from the raw rows; time-zone day edges; empty and canary-only
//! days; runs that end twice; sending once; retention; the CLI.

use crate::support::fake_bots::{self, FakeBots};
use crate::support::fake_feishu::FakeFeishu;
use crate::support::fake_smtp::Smtp;
use crate::support::{Project, stderr, stdout};
use flowguard::report::{self, Kind, ReportCtx, ReportsConfig, schedule};
use flowguard::stats::{self, Stats, nearest_rank};
use flowguard::store::{AttemptRecord, RunEnd, RunFilter, RunRecord, Store};
use flowguard::vocab::{AttemptStatus, RunStatus};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

const SH: &str = "Asia/Shanghai";

fn tz() -> jiff::tz::TimeZone {
    jiff::tz::TimeZone::get(SH).unwrap()
}

/// Local Shanghai time → UTC ms.
fn at(s: &str) -> i64 {
    s.parse::<jiff::civil::DateTime>().unwrap().to_zoned(tz()).unwrap().timestamp().as_millisecond()
}

/// A fresh store: SQLite in `dir`, or with `FLOWGUARD_TEST_BACKEND=mysql|postgres` a new database
/// on the local MariaDB / PostgreSQL (until the shared harness covers every backend).
async fn store(dir: &tempfile::TempDir) -> Store {
    let name = format!("fg_report_{}", uuid::Uuid::now_v7().simple());
    let (admin, url) = match std::env::var("FLOWGUARD_TEST_BACKEND").as_deref() {
        Ok("mysql") => ("mysql://root@127.0.0.1:3306/mysql".to_owned(), format!("mysql://root@127.0.0.1:3306/{name}")),
        Ok("postgres") => ("postgres://postgres@127.0.0.1:5432/postgres".to_owned(), format!("postgres://postgres@127.0.0.1:5432/{name}")),
        _ => return Store::open(&format!("sqlite://{}", dir.path().join("fg.db").display()), 4, Duration::from_secs(5)).await.unwrap(),
    };
    let a = flowguard::store::Pool::connect(&admin, &Default::default()).await.unwrap();
    a.exec(&format!("CREATE DATABASE {name}"), &[]).await.unwrap();
    a.close().await;
    Store::open(&url, 4, Duration::from_secs(5)).await.unwrap()
}

fn ctx(store: &Store, locale: &str) -> ReportCtx {
    ReportCtx {
        store: store.clone(),
        cfg: ReportsConfig::default(),
        tz: tz(),
        tz_name: SH.into(),
        locale: locale.into(),
        limits: BTreeMap::from([(("douyin".into(), "write".into()), Duration::from_secs(30))]),
    }
}

fn attempt(run: &RunRecord, node: &str, kind: &str, seq: i64, t: i64, dur: i64, status: AttemptStatus) -> AttemptRecord {
    AttemptRecord {
        run_id: run.id.clone(),
        flow: run.flow.clone(),
        node_id: node.into(),
        kind: kind.into(),
        seq,
        attempt: 1,
        iteration: None,
        status,
        started_at: t,
        ended_at: t + dur,
        duration_ms: dur,
        input_bytes: 10,
        output_bytes: 20,
        input: None,
        output: None,
        retried: false,
        action: Some("continue".into()),
        error_kind: None,
        error_message: None,
        model: None,
        tokens_in: None,
        tokens_out: None,
        http_status: None,
        cost_nanos: None,
        currency: None,
    }
}

fn run_record(id: String, flow: &str, started: i64, canary: bool) -> RunRecord {
    RunRecord {
        id,
        flow: flow.into(),
        flow_hash: "h".into(),
        trigger: if canary { "canary".into() } else { "cron".into() },
        status: RunStatus::Running,
        canary,
        inputs: None,
        started_at: started,
        ended_at: None,
        duration_ms: None,
        failed_node: None,
        error_kind: None,
        error_message: None,
        severity: None,
    }
}

/// Writes one run the way the engine does: the run, its attempts one by one, then its end with
/// the last attempt.
async fn write_run(store: &Store, run: &RunRecord, attempts: &[AttemptRecord], end: RunEnd) {
    store.insert_run(run).await.unwrap();
    let (last, before) = attempts.split_last().map(|(l, b)| (vec![l.clone()], b)).unwrap_or((vec![], &[]));
    for a in before {
        store.insert_attempt(a).await.unwrap();
    }
    store.finish_run(&run.id, &end, &last).await.unwrap();
}

/// (node, kind, typical ms, model).
type NodeDef = (&'static str, &'static str, i64, Option<&'static str>);

const FLOWS: &[(&str, &[NodeDef])] = &[
    (
        "douyin",
        &[
            ("fetch", "http", 300, None),
            ("write", "llm", 9000, Some("deepseek")),
            ("qc", "quality_check", 40, None),
            ("publish", "http", 800, None),
        ],
    ),
    ("news", &[("write", "llm", 4000, Some("qwen")), ("publish", "http", 500, None)]),
];

/// A deterministic history: `n` runs spread over `[start, start + span)`, with retries, model
/// switches, timeouts, failures, runs waiting for a human, refusals and canaries.
async fn generate(store: &Store, seed: u64, start: i64, span: i64, n: usize) {
    let mut rng = fastrand::Rng::with_seed(seed);
    for i in 0..n {
        let (flow, nodes) = FLOWS[rng.usize(0..FLOWS.len())];
        let t0 = start + rng.i64(0..span);
        let canary = rng.f64() < 0.05;
        let mut run = run_record(format!("r{seed}-{i:06}"), flow, t0, canary);
        if rng.f64() < 0.03 && !canary {
            run.status = RunStatus::Refused;
            run.ended_at = Some(t0);
            run.duration_ms = Some(0);
            run.error_kind = Some("auth_expired".into());
            store.insert_run(&run).await.unwrap();
            continue;
        }
        let mut t = t0;
        let mut seq = 0;
        let mut attempts = Vec::new();
        let mut recovered = false;
        let mut failure: Option<(String, String)> = None;
        let mut waiting = false;
        for (node, kind, base, model) in nodes.iter() {
            if failure.is_some() || waiting {
                seq += 1;
                let mut a = attempt(&run, node, kind, seq, t, 0, AttemptStatus::Skipped);
                a.action = Some("skip".into());
                attempts.push(a);
                continue;
            }
            let mut try_no = 0;
            loop {
                try_no += 1;
                seq += 1;
                let dur = (*base as f64 * (0.5 + rng.f64() * rng.f64() * 4.0)) as i64 + rng.i64(0..3);
                let mut a = attempt(&run, node, kind, seq, t, dur, AttemptStatus::Succeeded);
                a.attempt = try_no;
                a.model = model.map(|m| if try_no > 2 { format!("{m}-backup") } else { m.to_owned() });
                t += dur;
                let roll = rng.f64();
                let fail_p = if *node == "write" { 0.25 } else { 0.1 };
                if roll < fail_p {
                    let timeout = rng.f64() < 0.4;
                    a.status = if timeout { AttemptStatus::TimedOut } else { AttemptStatus::Failed };
                    let k = if timeout {
                        "timeout"
                    } else if *kind == "llm" {
                        ["generation_empty", "rate_limited", "upstream_5xx"][rng.usize(0..3)]
                    } else {
                        ["network", "publish_failed"][rng.usize(0..2)]
                    };
                    a.error_kind = Some(k.into());
                    if try_no < 3 && rng.f64() < 0.7 {
                        a.retried = try_no < 2;
                        a.action = Some(if try_no < 2 { "retry".into() } else { "next_model".into() });
                        recovered = true;
                        attempts.push(a);
                        continue;
                    }
                    a.action = Some("fail".into());
                    if *node == "publish" && rng.f64() < 0.5 {
                        waiting = true;
                    }
                    failure = Some((node.to_string(), k.to_owned()));
                    attempts.push(a);
                    break;
                }
                if *kind == "quality_check" && rng.f64() < 0.05 {
                    a.status = AttemptStatus::Defaulted;
                }
                attempts.push(a);
                break;
            }
        }
        let (status, node, kind) = match (&failure, waiting) {
            (Some((n, k)), true) => (RunStatus::WaitingManual, Some(n.clone()), Some(k.clone())),
            (Some((n, _)), false) if rng.f64() < 0.1 => (RunStatus::TimedOut, Some(n.clone()), Some("flow_timeout".into())),
            (Some((n, k)), false) => (RunStatus::Failed, Some(n.clone()), Some(k.clone())),
            (None, _) if recovered => (RunStatus::Recovered, None, None),
            (None, _) => (RunStatus::Succeeded, None, None),
        };
        let end =
            RunEnd { status: Some(status), ended_at: t, duration_ms: t - t0, failed_node: node, error_kind: kind, ..Default::default() };
        write_run(store, &run, &attempts, end).await;
    }
}

/// The statistics recomputed from raw rows, the plain way.
struct Reference {
    flows: BTreeMap<String, RefFlow>,
    canaries: u64,
}

#[derive(Default, Debug)]
struct RefFlow {
    by_status: BTreeMap<String, u64>,
    durations: Vec<i64>,
    failures_by_kind: BTreeMap<String, u64>,
    backup_runs: u64,
    nodes: BTreeMap<String, RefNode>,
}

#[derive(Default, Debug)]
struct RefNode {
    attempts: u64,
    failed: u64,
    timed_out: u64,
    retries: u64,
    durations: Vec<i64>,
    kinds: BTreeMap<String, u64>,
    runs_failed: u64,
}

async fn reference(store: &Store, since: i64, until: i64) -> Reference {
    let runs = store
        .list_runs(&RunFilter { since_ms: Some(since), until_ms: Some(until), include_canary: true, ..Default::default() })
        .await
        .unwrap();
    let attempts = store.attempts_between(None, since, until).await.unwrap();
    let mut r = Reference { flows: BTreeMap::new(), canaries: runs.iter().filter(|r| r.canary).count() as u64 };
    let backup: BTreeSet<&str> = attempts.iter().filter(|a| a.action.as_deref() == Some("next_model")).map(|a| a.run_id.as_str()).collect();
    for run in runs.iter().filter(|r| !r.canary) {
        let f = r.flows.entry(run.flow.clone()).or_default();
        *f.by_status.entry(run.status.to_string()).or_default() += 1;
        if run.status.is_final() && run.status != RunStatus::Refused {
            f.durations.push(run.duration_ms.unwrap());
        }
        if !run.status.is_success()
            && let Some(k) = &run.error_kind
        {
            *f.failures_by_kind.entry(k.clone()).or_default() += 1;
            if let Some(n) = &run.failed_node {
                f.nodes.entry(n.clone()).or_default().runs_failed += 1;
            }
        }
        f.backup_runs += backup.contains(run.id.as_str()) as u64;
    }
    for a in attempts.iter().filter(|a| a.status != AttemptStatus::Skipped) {
        let n = r.flows.entry(a.flow.clone()).or_default().nodes.entry(a.node_id.clone()).or_default();
        n.attempts += 1;
        let ok = matches!(a.status, AttemptStatus::Succeeded | AttemptStatus::Defaulted);
        n.failed += !ok as u64;
        n.timed_out += (a.status == AttemptStatus::TimedOut) as u64;
        n.retries += a.retried as u64;
        n.durations.push(a.duration_ms);
        if !ok {
            *n.kinds.entry(a.error_kind.clone().unwrap()).or_default() += 1;
        }
    }
    r
}

fn close(got: Option<i64>, exact: &mut [i64], p: f64, what: &str) {
    exact.sort_unstable();
    match got {
        None => assert!(exact.is_empty(), "{what}: no percentile but {} values", exact.len()),
        Some(g) => {
            let e = nearest_rank(exact, p);
            assert!((g - e).abs() as f64 <= 0.01 * e as f64, "{what} p{p}: {g} vs exact {e}");
        }
    }
}

fn check_against(s: &Stats, r: &mut Reference) {
    assert_eq!(s.canary_runs, r.canaries);
    let names: Vec<&String> = s.flows.iter().map(|f| &f.flow).collect();
    assert_eq!(names, r.flows.keys().collect::<Vec<_>>());
    let mut all_durations = Vec::new();
    for f in &s.flows {
        let rf = r.flows.get_mut(&f.flow).unwrap();
        let c = |k: &str| rf.by_status.get(k).copied().unwrap_or(0);
        assert_eq!(
            (f.succeeded, f.recovered, f.failed, f.timed_out, f.waiting_manual, f.refused),
            (c("succeeded"), c("recovered"), c("failed"), c("timed_out"), c("waiting_manual"), c("refused")),
            "{}",
            f.flow
        );
        let finals = rf.by_status.iter().filter(|(k, _)| *k != "refused").map(|(_, n)| n).sum::<u64>();
        assert_eq!(f.runs, finals);
        let rate = (finals > 0).then(|| (c("succeeded") + c("recovered")) as f64 / finals as f64);
        assert_eq!(f.success_rate, rate);
        assert_eq!(f.recovered_rate, (finals > 0).then(|| c("recovered") as f64 / finals as f64));
        assert_eq!(f.failures_by_kind, rf.failures_by_kind, "{}", f.flow);
        assert_eq!(f.backup_model_runs, rf.backup_runs);
        assert_eq!(f.duration.count as usize, rf.durations.len());
        assert_eq!(f.duration.total_ms, rf.durations.iter().sum::<i64>());
        for p in [0.5, 0.95, 0.99] {
            let got = match p {
                0.5 => f.duration.p50_ms,
                0.95 => f.duration.p95_ms,
                _ => f.duration.p99_ms,
            };
            close(got, &mut rf.durations, p, &f.flow);
        }
        all_durations.extend(rf.durations.iter().copied());
        let all_time: i64 = rf.nodes.values().flat_map(|n| n.durations.iter()).sum();
        let node_names: BTreeSet<&String> = f.nodes.iter().map(|n| &n.node).collect();
        assert_eq!(node_names, rf.nodes.keys().collect());
        for n in &f.nodes {
            let rn = rf.nodes.get_mut(&n.node).unwrap();
            let what = format!("{}/{}", f.flow, n.node);
            assert_eq!(
                (n.attempts, n.failed_attempts, n.timed_out, n.retries),
                (rn.attempts, rn.failed, rn.timed_out, rn.retries),
                "{what}"
            );
            assert_eq!(n.failures_by_kind, rn.kinds, "{what}");
            assert_eq!(n.runs_failed, rn.runs_failed, "{what}");
            let total: i64 = rn.durations.iter().sum();
            assert_eq!(n.duration.total_ms, total, "{what}");
            assert_eq!(n.time_share, (all_time > 0).then(|| total as f64 / all_time as f64), "{what}");
            assert_eq!(n.duration.avg_ms, (rn.attempts > 0).then(|| total as f64 / rn.attempts as f64));
            close(n.duration.p50_ms, &mut rn.durations, 0.5, &what);
            close(n.duration.p95_ms, &mut rn.durations, 0.95, &what);
            close(n.duration.p99_ms, &mut rn.durations, 0.99, &what);
        }
    }
    close(s.total.duration.p95_ms, &mut all_durations, 0.95, "all flows");
    let total_runs: u64 = s.flows.iter().map(|f| f.runs).sum();
    assert_eq!(s.total.runs, total_runs);
    // Top failing nodes: by failed attempts, most first.
    let mut expect: Vec<(u64, String)> = r
        .flows
        .iter()
        .flat_map(|(f, rf)| {
            rf.nodes.iter().filter(|(_, n)| n.failed > 0 || n.runs_failed > 0).map(move |(n, rn)| (rn.failed, format!("{f}/{n}")))
        })
        .collect();
    expect.sort_by_key(|e| std::cmp::Reverse(e.0));
    let got: Vec<u64> = s.top_failing_nodes.iter().map(|n| n.failed_attempts).collect();
    assert_eq!(got, expect.iter().map(|e| e.0).collect::<Vec<_>>());
}

#[tokio::test]
async fn daily_figures_match_the_raw_rows() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir).await;
    let day1 = at("2026-11-26T00:00:00");
    generate(&store, 1, day1, 2 * 86_400_000, 600).await;
    let period = schedule::day("2026-11-27".parse().unwrap(), &tz());
    assert_eq!(period.since_ms, at("2026-11-27T00:00:00"));
    let (rep, rendered) = report::generate(&ctx(&store, "zh-CN"), &period, at("2026-11-28T09:00:30")).await.unwrap();
    let mut r = reference(&store, period.since_ms, period.until_ms).await;
    assert!(rep.stats.total.runs > 200 && rep.stats.total.failed > 5, "history too thin: {:?}", rep.stats.total);
    check_against(&rep.stats, &mut r);
    // Day over day against a plain recount of the day before.
    let mut before = reference(&store, period.since_ms - 86_400_000, period.since_ms).await;
    let prev_runs: u64 =
        before.flows.values().map(|f| f.by_status.iter().filter(|(k, _)| *k != "refused").map(|(_, n)| n).sum::<u64>()).sum();
    let ch = rep.stats.total.change.clone().unwrap();
    assert_eq!(ch.prev_runs, prev_runs);
    assert_eq!(ch.runs, rep.stats.total.runs as i64 - prev_runs as i64);
    let prev_stats = stats::collect(&store, None, period.since_ms - 86_400_000, period.since_ms).await.unwrap();
    check_against(&prev_stats, &mut before);
    assert_eq!(ch.prev_success_rate, prev_stats.total.success_rate);
    // Top 3, failure causes, and the renderings say the same.
    assert_eq!(rep.top_failing_nodes.len(), 3);
    assert_eq!(rep.top_failing_nodes, rep.stats.top_failing_nodes[..3].to_vec());
    let failed_runs: u64 = rep.stats.total.failures_by_kind.values().sum();
    assert_eq!(rep.causes.iter().map(|c| c.count).sum::<u64>(), failed_runs);
    let top = &rep.top_failing_nodes[0];
    assert!(rendered.markdown.contains(&format!("| {}/{} | {} |", top.flow, top.node, top.failed_attempts)), "{}", rendered.markdown);
    assert!(rendered.markdown.contains(&format!("{:.1}%", rep.stats.total.success_rate.unwrap() * 100.0)));
    assert!(rendered.html.contains("<table") && rendered.text.contains(&top.node));
    assert_eq!(rendered.feishu_card["msg_type"], "interactive");
    assert!(rendered.feishu_card.to_string().len() < 20 * 1024);
    assert!(rendered.feishu_card["card"]["elements"].to_string().contains(&top.node));
    // Stored, and read back the same.
    let (body, md, sent) = store.load_report("daily", "2026-11-27").await.unwrap().unwrap();
    assert_eq!(serde_json::from_str::<serde_json::Value>(&body).unwrap(), rendered.json);
    assert_eq!((md, sent), (rendered.markdown.clone(), None));
}

#[tokio::test]
async fn bulk_import_rolls_up_like_finished_runs() {
    let dir = tempfile::tempdir().unwrap();
    let a = store(&dir).await;
    generate(&a, 5, at("2026-11-27T00:00:00"), 86_400_000, 150).await;
    let runs = a.list_runs(&RunFilter { include_canary: true, ..Default::default() }).await.unwrap();
    let mut attempts = Vec::new();
    for r in &runs {
        attempts.extend(a.attempts(&r.id).await.unwrap());
    }
    let dir2 = tempfile::tempdir().unwrap();
    let b = store(&dir2).await;
    b.import_finished(&runs, &attempts).await.unwrap();
    let (since, until) = (at("2026-11-27T00:00:00"), at("2026-11-28T00:00:00"));
    let sa = stats::collect(&a, None, since, until).await.unwrap();
    let sb = stats::collect(&b, None, since, until).await.unwrap();
    assert_eq!(sa, sb);
    assert_eq!(b.rollup_backfill(100).await.unwrap(), 0, "imported runs are already rolled up");
}

#[tokio::test]
async fn local_midnight_splits_days() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir).await;
    for (id, t, status) in [("late", "2026-11-27T23:59:00", RunStatus::Succeeded), ("early", "2026-11-28T00:01:00", RunStatus::Failed)] {
        let run = run_record(id.into(), "douyin", at(t), false);
        let a = attempt(&run, "write", "llm", 1, at(t), 500, AttemptStatus::Succeeded);
        let end = RunEnd {
            status: Some(status),
            ended_at: at(t) + 500,
            duration_ms: 500,
            error_kind: (status == RunStatus::Failed).then(|| "network".into()),
            failed_node: Some("write".into()),
            ..Default::default()
        };
        write_run(&store, &run, &[a], end).await;
    }
    let c = ctx(&store, "en");
    let d27 = report::build(&c, &schedule::day("2026-11-27".parse().unwrap(), &tz()), 0).await.unwrap();
    let d28 = report::build(&c, &schedule::day("2026-11-28".parse().unwrap(), &tz()), 0).await.unwrap();
    assert_eq!((d27.stats.total.runs, d27.stats.total.succeeded, d27.stats.total.failed), (1, 1, 0));
    assert_eq!((d28.stats.total.runs, d28.stats.total.succeeded, d28.stats.total.failed), (1, 0, 1));
    // In UTC both fall on 2026-11-27 (15:59 and 16:01).
    let utc = schedule::day("2026-11-27".parse().unwrap(), &jiff::tz::TimeZone::UTC);
    assert_eq!(stats::collect(&store, None, utc.since_ms, utc.until_ms).await.unwrap().total.runs, 2);
    assert_eq!(d28.stats.total.change.as_ref().unwrap().success_rate_pts, Some(-100.0));
}

#[tokio::test]
async fn empty_and_canary_only_days() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir).await;
    let c = ctx(&store, "zh-CN");
    let empty = schedule::day("2026-11-20".parse().unwrap(), &tz());
    let (rep, r) = report::generate(&c, &empty, 0).await.unwrap();
    assert_eq!((rep.stats.total.runs, rep.stats.total.success_rate, rep.stats.flows.len()), (0, None, 0));
    assert!(rep.top_failing_nodes.is_empty() && rep.causes.is_empty());
    assert!(r.markdown.contains("本期没有运行记录"), "{}", r.markdown);
    for i in 0..4 {
        let t = at("2026-11-21T10:00:00") + i * 60_000;
        let run = run_record(format!("c{i}"), "douyin", t, true);
        let a = attempt(&run, "write", "llm", 1, t, 100, AttemptStatus::Failed);
        let end = RunEnd {
            status: Some(RunStatus::Failed),
            ended_at: t + 100,
            duration_ms: 100,
            error_kind: Some("network".into()),
            ..Default::default()
        };
        write_run(&store, &run, &[a], end).await;
    }
    let (rep, r) = report::generate(&c, &schedule::day("2026-11-21".parse().unwrap(), &tz()), 0).await.unwrap();
    assert_eq!((rep.stats.total.runs, rep.stats.canary_runs, rep.stats.flows.len()), (0, 4, 0));
    assert!(rep.top_failing_nodes.is_empty() && rep.causes.is_empty());
    assert!(r.markdown.contains("canary") && r.markdown.contains(": 4"), "{}", r.markdown);
}

#[tokio::test]
async fn a_run_that_ends_twice_moves_its_counts() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir).await;
    let t = at("2026-11-27T10:00:00");
    let run = run_record("m1".into(), "douyin", t, false);
    let a = attempt(&run, "publish", "http", 1, t, 700, AttemptStatus::Failed);
    let parked = RunEnd {
        status: Some(RunStatus::WaitingManual),
        ended_at: t + 700,
        duration_ms: 700,
        failed_node: Some("publish".into()),
        error_kind: Some("publish_failed".into()),
        ..Default::default()
    };
    let mut a = a;
    a.error_kind = Some("publish_failed".into());
    write_run(&store, &run, &[a], parked).await;
    let day = schedule::day("2026-11-27".parse().unwrap(), &tz());
    let s = stats::collect(&store, None, day.since_ms, day.until_ms).await.unwrap();
    assert_eq!((s.total.waiting_manual, s.total.pending_manual, s.total.success_rate), (1, 1, Some(0.0)));
    assert_eq!(s.total.duration.count, 0, "a parked run has no final duration yet");
    // A human resolves it: the publish is retried and succeeds.
    let b = attempt(&run, "publish", "http", 2, t + 60_000, 300, AttemptStatus::Succeeded);
    let done = RunEnd { status: Some(RunStatus::Recovered), ended_at: t + 60_300, duration_ms: 60_300, ..Default::default() };
    store.finish_run(&run.id, &done, &[b]).await.unwrap();
    let s = stats::collect(&store, None, day.since_ms, day.until_ms).await.unwrap();
    assert_eq!((s.total.runs, s.total.waiting_manual, s.total.recovered, s.total.pending_manual), (1, 0, 1, 0));
    assert!(s.total.failures_by_kind.is_empty());
    assert_eq!((s.total.duration.count, s.total.duration.total_ms), (1, 60_300));
    let n = &s.flows[0].nodes[0];
    assert_eq!((n.attempts, n.failed_attempts), (2, 1), "each attempt counted once");
    assert_eq!(store.rollup_backfill(10).await.unwrap(), 0);
}

#[tokio::test]
async fn due_reports_are_sent_once() {
    struct Collect(std::sync::Mutex<Vec<String>>);
    impl report::ReportSink for Collect {
        fn send<'a>(&'a self, r: &'a report::Rendered) -> futures::future::BoxFuture<'a, anyhow::Result<()>> {
            self.0.lock().unwrap().push(r.title.clone());
            Box::pin(async { Ok(()) })
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir).await;
    generate(&store, 3, at("2026-11-27T00:00:00"), 86_400_000, 40).await;
    let mut c = ctx(&store, "en");
    c.cfg.weekly.enabled = false;
    let sink = Collect(Default::default());
    // 08:59: yesterday's 09:00 report (for the 26th) is due; it was never sent.
    let sent = report::send_due(&c, &sink, at("2026-11-28T08:59:00")).await.unwrap();
    assert_eq!(sent.iter().map(|p| p.key.as_str()).collect::<Vec<_>>(), ["2026-11-26"]);
    let start = at("2026-11-28T09:00:00");
    let fire = schedule::next_fire(&c.cfg, Kind::Daily, &tz(), at("2026-11-28T08:59:00")).unwrap();
    assert!(fire >= start && fire < start + 120_000, "jitter inside 2 minutes: {}", fire - start);
    assert!(report::send_due(&c, &sink, fire - 1).await.unwrap().is_empty(), "not before the jittered time");
    let sent = report::send_due(&c, &sink, fire).await.unwrap();
    assert_eq!(sent[0].key, "2026-11-27");
    assert!(report::send_due(&c, &sink, fire + 3_600_000).await.unwrap().is_empty(), "once");
    // A second process sharing the database does not send it again.
    let other = ctx(&store, "en");
    assert!(!report::deliver(&other, &sent[0], &report::generate(&other, &sent[0], fire).await.unwrap().1, &sink, fire).await.unwrap());
    assert_eq!(sink.0.lock().unwrap().len(), 2);
    assert!(store.report_sent_at("daily", "2026-11-27").await.unwrap().is_some());
}

#[tokio::test]
async fn retention_prunes_raw_attempts_but_not_waiting_runs_or_rollups() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir).await;
    generate(&store, 4, at("2026-10-01T00:00:00"), 86_400_000, 80).await;
    let t = at("2026-10-01T12:00:00");
    let parked = run_record("parked".into(), "douyin", t, false);
    let a = attempt(&parked, "publish", "http", 1, t, 100, AttemptStatus::Failed);
    let end = RunEnd {
        status: Some(RunStatus::WaitingManual),
        ended_at: t + 100,
        duration_ms: 100,
        error_kind: Some("publish_failed".into()),
        ..Default::default()
    };
    write_run(&store, &parked, &[a], end).await;
    let day = schedule::day("2026-10-01".parse().unwrap(), &tz());
    let before = stats::collect(&store, None, day.since_ms, day.until_ms).await.unwrap();
    assert!(before.total.waiting_manual > 0, "the history has parked runs");
    let mut c = ctx(&store, "en");
    c.cfg.retention.node_attempts = Some("30d".parse().unwrap());
    let pruned = report::prune(&c, at("2026-11-28T00:00:00")).await.unwrap();
    assert!(pruned.attempts_of > 50 && pruned.runs == 0);
    let after = stats::collect(&store, None, day.since_ms, day.until_ms).await.unwrap();
    assert_eq!(before, after, "rollups stay");
    for r in store.list_runs(&RunFilter { include_canary: true, ..Default::default() }).await.unwrap() {
        let n = store.attempts(&r.id).await.unwrap().len();
        assert_eq!(n > 0, r.status == RunStatus::WaitingManual, "{} {}", r.id, r.status);
    }
    c.cfg.retention.runs = Some("30d".parse().unwrap());
    let deleted = report::prune(&c, at("2026-11-28T00:00:00")).await.unwrap().runs;
    let left = store.list_runs(&RunFilter { include_canary: true, ..Default::default() }).await.unwrap();
    assert!(deleted > 0 && left.iter().all(|r| r.status == RunStatus::WaitingManual));
    assert_eq!(stats::collect(&store, None, day.since_ms, day.until_ms).await.unwrap(), after);
}

#[tokio::test]
async fn retention_keeps_runs_an_open_alert_refers_to() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir).await;
    let t = at("2026-10-01T12:00:00");
    let failed = run_record("alerted".into(), "douyin", t, false);
    let a = attempt(&failed, "publish", "http", 1, t, 100, AttemptStatus::Failed);
    let end = RunEnd {
        status: Some(RunStatus::Failed),
        ended_at: t + 100,
        duration_ms: 100,
        error_kind: Some("quota_exhausted".into()),
        ..Default::default()
    };
    write_run(&store, &failed, &[a], end).await;
    let cfg = flowguard::config::Config::parse(std::path::Path::new("flowguard.yaml"), "{}", dir.path(), &|_| None).unwrap();
    let clock: flowguard::clock::SharedClock = std::sync::Arc::new(flowguard::clock::SystemClock);
    let alerter = flowguard::alert::Alerter::new(&cfg, store.clone(), clock).unwrap();
    let input = flowguard::alert::AlertInput {
        flow: "douyin".into(),
        node: "publish".into(),
        error_kind: "quota_exhausted".into(),
        severity: flowguard::vocab::Severity::High,
        status: "failed".into(),
        run_id: Some("alerted".into()),
        message: "quota".into(),
        attempts: Some(1),
        labels: Default::default(),
    };
    alerter.raise(input).await.unwrap();
    let mut c = ctx(&store, "en");
    c.cfg.retention.node_attempts = Some("30d".parse().unwrap());
    c.cfg.retention.runs = Some("30d".parse().unwrap());
    report::prune(&c, at("2026-11-28T00:00:00")).await.unwrap();
    assert_eq!(store.attempts("alerted").await.unwrap().len(), 1, "an open alert keeps its run whole");
    assert!(store.get_run("alerted").await.unwrap().is_some());
    alerter.resolve("douyin").await.unwrap();
    report::prune(&c, at("2026-11-28T00:00:00")).await.unwrap();
    assert!(store.get_run("alerted").await.unwrap().is_none(), "once resolved, retention applies");
}

#[tokio::test]
async fn weekly_suggestions_cite_their_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir).await;
    let week = schedule::week("2026-11-16".parse().unwrap(), &tz());
    let prev_week = week.since_ms - 7 * 86_400_000;
    let mut rng = fastrand::Rng::with_seed(9);
    // Last week: healthy. This week: `write` often times out near its 30 s limit, is retried,
    // takes most of the time; model `deepseek` fails far more; success falls.
    for (base, bad) in [(prev_week, false), (week.since_ms, true)] {
        for i in 0..100 {
            let t = base + i * 3_600_000;
            let run = run_record(format!("w{bad}{i}"), "douyin", t, false);
            let mut seq = 0;
            let mut atts = Vec::new();
            seq += 1;
            atts.push(attempt(&run, "fetch", "http", seq, t, 200, AttemptStatus::Succeeded));
            let fails = bad && i % 3 == 0;
            seq += 1;
            let mut w = attempt(
                &run,
                "write",
                "llm",
                seq,
                t,
                if bad { 28_000 + rng.i64(0..1500) } else { 5_000 },
                if fails { AttemptStatus::TimedOut } else { AttemptStatus::Succeeded },
            );
            w.model = Some("deepseek".into());
            if fails {
                w.error_kind = Some("timeout".into());
                w.retried = true;
                w.action = Some("retry".into());
            }
            if !bad && i % 10 == 0 {
                w.status = AttemptStatus::Failed;
                w.error_kind = Some("rate_limited".into());
                w.retried = true;
                w.action = Some("retry".into());
            }
            atts.push(w);
            let failed = fails && i % 2 == 0;
            if fails || (!bad && i % 10 == 0) {
                seq += 1;
                let mut w2 =
                    attempt(&run, "write", "llm", seq, t, 10_000, if failed { AttemptStatus::TimedOut } else { AttemptStatus::Succeeded });
                w2.model = Some("deepseek".into());
                if failed {
                    w2.error_kind = Some("timeout".into());
                }
                atts.push(w2);
            }
            let end = RunEnd {
                status: Some(if failed {
                    RunStatus::Failed
                } else if fails {
                    RunStatus::Recovered
                } else {
                    RunStatus::Succeeded
                }),
                ended_at: t + 40_000,
                duration_ms: 40_000,
                failed_node: failed.then(|| "write".into()),
                error_kind: failed.then(|| "timeout".into()),
                ..Default::default()
            };
            write_run(&store, &run, &atts, end).await;
        }
    }
    let (rep, rendered) = report::generate(&ctx(&store, "en"), &week, 0).await.unwrap();
    let rules: BTreeSet<&str> = rep.suggestions.iter().map(|s| s.rule).collect();
    for rule in
        ["timeout_near_limit", "dominant_node", "retry_hot_spot", "dominant_error_kind", "model_failure_doubled", "success_rate_fell"]
    {
        assert!(rules.contains(rule), "{rule} missing: {:#?}", rep.suggestions);
    }
    let write = rep.stats.flows[0].nodes.iter().find(|n| n.node == "write").unwrap();
    let s = rep.suggestions.iter().find(|s| s.rule == "timeout_near_limit").unwrap();
    assert_eq!(s.figures["timeout_rate"], write.timeout_rate.unwrap());
    assert_eq!(s.figures["limit_ms"], 30_000.0);
    assert!(s.text.contains(&format!("{:.1}%", write.timeout_rate.unwrap() * 100.0)) && s.text.contains("30000 ms"), "{}", s.text);
    let m = rep.suggestions.iter().find(|s| s.rule == "model_failure_doubled").unwrap();
    assert_eq!(m.subject, "deepseek");
    assert!(m.figures["failure_rate"] >= 2.0 * m.figures["prev_failure_rate"]);
    assert!(rendered.markdown.contains("Suggestions") && rendered.markdown.contains(&s.text));
    assert_eq!(rep.causes[0].error_kind, "timeout");
    assert_eq!(rep.retry_hot_spots[0].node, "write");
    assert_eq!(rep.slowest_nodes[0].node, "write");
    // The healthy week fires nothing.
    let quiet = report::build(&ctx(&store, "en"), &schedule::week("2026-11-09".parse().unwrap(), &tz()), 0).await.unwrap();
    assert!(quiet.suggestions.iter().all(|s| s.rule != "timeout_near_limit" && s.rule != "success_rate_fell"), "{:#?}", quiet.suggestions);
}

#[test]
fn cli_daily_report_stats_and_export() {
    let p = Project::with_config(
        "timezone: Asia/Shanghai\nlocale: en\nstorage:\n  url: sqlite://fg.db\nreports:\n  daily:\n    cron: \"30 8 * * *\"\n",
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let s = Store::open(&format!("sqlite://{}", p.path().join("fg.db").display()), 2, Duration::from_secs(5)).await.unwrap();
        generate(&s, 8, at("2026-11-27T00:00:00"), 86_400_000, 30).await;
        s.close().await;
    });
    let j = p.json(&["report", "daily", "--date", "2026-11-27"]);
    assert_eq!(j["period"]["key"], "2026-11-27");
    let runs = j["stats"]["total"]["runs"].as_u64().unwrap();
    assert!(runs > 20);
    let o = p.run(&["report", "daily", "--date", "2026-11-27", "--send"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("# flowguard daily report 2026-11-27"));
    let o = p.run(&["report", "daily", "--date", "2026-11-27", "--send"]);
    assert!(stderr(&o).contains("already sent"), "{}", stderr(&o));
    let shown = p.run(&["report", "show", "daily", "2026-11-27"]);
    assert!(stdout(&shown).contains("Success rate"));
    let o = p.run(&["report", "export", "--what", "runs", "--since", "2026-11-27", "--until", "2026-11-28"]);
    let csv = stdout(&o);
    assert!(csv.starts_with("id,flow,"), "{csv}{}", stderr(&o));
    assert_eq!(csv.lines().count(), 31, "header and 30 runs");
    let o = p.run(&["report", "export", "--what", "attempts", "--since", "2026-11-27", "--until", "2026-11-28", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v.as_array().unwrap().len() > 30);
    let bad = Project::with_config("reports:\n  daily:\n    cron: \"61 9 * * *\"\n");
    let o = bad.run(&["report", "daily"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&bad.run(&["check"])).contains("reports.daily.cron"), "{}", stderr(&o));
}

#[test]
fn report_send_delivers_what_format_previews_per_channel_type() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let feishu = rt.block_on(FakeFeishu::start_with(None, None));
    let bots = rt.block_on(FakeBots::start());
    let smtp = Smtp::start();
    let p = Project::with_config(&format!(
        "timezone: Asia/Shanghai\nlocale: en\nstorage:\n  url: sqlite://fg.db\nchannels:\n  fs:\n    type: feishu\n    webhook: \"{}\"\n    format: text\n  wx:\n    type: wecom\n    key: {}\n    endpoint: \"{}\"\n  mail:\n    type: email\n    smtp_host: 127.0.0.1\n    smtp_port: {}\n    smtp_security: none\n    from: fg@example.com\n    to: [ops@example.com]\n  pager:\n    type: sms\n    provider: http\n    endpoint: http://127.0.0.1:9/\n    phones: [\"+8613800000001\"]\n",
        feishu.url,
        fake_bots::WECOM_KEY,
        bots.wecom_base,
        smtp.port
    ));
    let db = format!("sqlite://{}", p.path().join("fg.db").display());
    rt.block_on(async {
        let s = Store::open(&db, 2, Duration::from_secs(5)).await.unwrap();
        generate(&s, 8, at("2026-11-27T00:00:00"), 86_400_000, 30).await;
        s.close().await;
    });
    let preview = |f: &str| stdout(&p.run(&["report", "daily", "--date", "2026-11-27", "--format", f]));
    let card: serde_json::Value = serde_json::from_str(&preview("feishu")).unwrap();
    let (markdown, html) = (preview("markdown"), preview("html"));
    let o = p.run(&["report", "daily", "--date", "2026-11-27", "--send"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let sent = feishu.messages();
    assert_eq!(sent.len(), 1);
    assert_eq!(
        undated(&sent[0].to_string()),
        undated(&card.to_string()),
        "Feishu gets the card the preview shows, whatever the alert format"
    );
    let wx = &bots.wecom()[0];
    assert_eq!(wx["msgtype"], "markdown_v2", "WeCom's markdown_v2 renders the report's tables");
    assert_eq!(undated(wx["markdown_v2"]["content"].as_str().unwrap().trim_end()), undated(markdown.trim_end()));
    let mails = smtp.messages();
    assert!(mails.len() == 1 && mails[0].contains("text/html"), "{mails:?}");
    let notes = rt.block_on(async {
        let s = Store::open(&db, 2, Duration::from_secs(5)).await.unwrap();
        s.list_notifications(None, 10).await.unwrap()
    });
    let channels: BTreeSet<&str> = notes.iter().map(|n| n.channel.as_str()).collect();
    assert_eq!(channels, BTreeSet::from(["fs", "mail", "wx"]), "never the SMS channel");
    let mail: serde_json::Value = serde_json::from_str(&notes.iter().find(|n| n.channel == "mail").unwrap().message).unwrap();
    assert_eq!(undated(mail["html"].as_str().unwrap().trim_end()), undated(html.trim_end()), "the mail's HTML is the preview's");
}

/// The text without the second-precise "Generated …" stamp (preview and send run apart).
fn undated(s: &str) -> String {
    let mut out = s.to_owned();
    if let Some(i) = out.find("Generated ") {
        let end = (i + "Generated 2026-12-03 20:08:09".len()).min(out.len());
        out.replace_range(i..end, "Generated");
    }
    out
}

#[test]
fn check_warns_when_reports_name_a_channel_that_cannot_carry_them() {
    let p = Project::with_config(
        "channels:\n  pager:\n    type: sms\n    provider: http\n    endpoint: http://127.0.0.1:9/\n    phones: [\"+8613800000001\"]\n  chat:\n    type: console\nreports:\n  channels: [pager, chat]\n",
    );
    let o = p.run(&["check"]);
    assert_eq!(o.status.code(), Some(0), "a warning, not an error: {}", stderr(&o));
    assert!(stderr(&o).contains("warning: reports.channels: `pager` (type `sms`) cannot carry a report"), "{}", stderr(&o));
}
