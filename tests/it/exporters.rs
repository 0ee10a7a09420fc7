//! Exporters follow the run log from a cursor in the database: every record reaches the target
//! exactly once by id whatever the target does (down for a while, 429 on some items, a mapping
//! conflict), one process exports a sink at a time, and the Kibana and Grafana files in the
//! repository query only what flowguard really writes and exports.

use crate::support::db::{TestDb, backends};
use crate::support::fake_es::{API_KEY, FakeEs};
use crate::support::fake_otlp::FakeCollector;
use flowguard::export::config::{ElasticsearchConfig, OtlpConfig};
use flowguard::export::elasticsearch::Elasticsearch;
use flowguard::export::otlp::Otlp;
use flowguard::export::{Exporter, Settings, Sink, Step};
use flowguard::store::{AttemptRecord, ExportProgress, RunEnd, RunRecord, Store};
use flowguard::vocab::{AttemptStatus, RunStatus};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

pub fn es_config(url: &str) -> ElasticsearchConfig {
    ElasticsearchConfig {
        url: url.to_owned(),
        index: "flowguard-attempts".into(),
        runs_index: "flowguard-runs".into(),
        dated: false,
        api_key: Some(API_KEY.into()),
        username: None,
        password: None,
        kibana_url: None,
        timeout: flowguard::config::HumanDuration::secs(10),
    }
}

fn settings(gap_wait: Duration) -> Settings {
    Settings {
        batch_size: 50,
        interval: Duration::from_millis(20),
        gap_wait,
        lease: Duration::from_secs(30),
        max_backoff: Duration::from_millis(100),
        alert_after: Duration::from_secs(3600),
    }
}

/// Records a finished run of `nodes` (one attempt each, an `llm` one with tokens; the node named
/// `retry` fails once first). Returns the run id and the stable ids of its attempts.
pub async fn write_run(store: &Store, flow: &str, nodes: &[&str]) -> (String, Vec<String>) {
    let id = uuid::Uuid::now_v7().to_string();
    let t0 = flowguard::store::leases::wall_ms();
    let run = RunRecord {
        id: id.clone(),
        flow: flow.into(),
        flow_hash: "abc123".into(),
        trigger: "cli".into(),
        status: RunStatus::Running,
        canary: false,
        inputs: None,
        started_at: t0,
        ended_at: None,
        duration_ms: None,
        failed_node: None,
        error_kind: None,
        error_message: None,
        severity: None,
    };
    store.insert_run(&run).await.expect("insert run");
    let mut ids = Vec::new();
    let mut seq = 0;
    for node in nodes {
        let tries = if *node == "retry" { 2 } else { 1 };
        for attempt in 1..=tries {
            seq += 1;
            let failed = attempt < tries;
            let a = AttemptRecord {
                run_id: id.clone(),
                flow: flow.into(),
                node_id: (*node).into(),
                kind: if *node == "write" { "llm".into() } else { "template".into() },
                seq,
                attempt,
                iteration: None,
                status: if failed { AttemptStatus::Failed } else { AttemptStatus::Succeeded },
                started_at: t0 + seq,
                ended_at: t0 + seq + 5,
                duration_ms: 5,
                input_bytes: 10,
                output_bytes: 20,
                input: Some("in".into()),
                output: Some("out".into()),
                retried: failed,
                action: failed.then(|| "retry".into()),
                error_kind: failed.then(|| "upstream_5xx".into()),
                error_message: failed.then(|| "HTTP 503".into()),
                model: (*node == "write").then(|| "deepseek".into()),
                tokens_in: (*node == "write").then_some(12),
                tokens_out: (*node == "write").then_some(34),
                http_status: failed.then_some(503),
                cost_nanos: None,
                currency: None,
            };
            store.record_attempt(&a, None).await.expect("record attempt");
            ids.push(format!("{id}:{seq}"));
        }
    }
    let status = if nodes.contains(&"retry") { RunStatus::Recovered } else { RunStatus::Succeeded };
    let end = RunEnd { status: Some(status), ended_at: t0 + 100, duration_ms: 100, ..Default::default() };
    store.finish_run(&id, &end, &[]).await.expect("finish run");
    (id, ids)
}

/// Steps until the exporter has nothing left to send (bounded).
async fn drain(e: &mut Exporter) -> Vec<Step> {
    let mut steps = Vec::new();
    for _ in 0..200 {
        let s = e.step().await.expect("step");
        steps.push(s.clone());
        if s == Step::Idle {
            return steps;
        }
    }
    panic!("the exporter never caught up: {:?}", &steps[..8]);
}

fn es_exporter(store: &Store, es: &FakeEs, s: Settings) -> Exporter {
    let sink: Arc<dyn Sink> = Arc::new(Elasticsearch::new(&es_config(&es.url)).expect("sink"));
    Exporter::new(store.clone(), sink, s)
}

backends! {
    async fn every_record_reaches_elasticsearch_once_by_id_while_it_goes_down_and_comes_back(db: TestDb) {
        let store = db.open().await;
        let es = FakeEs::start().await;
        let mut e = es_exporter(&store, &es, settings(Duration::ZERO));
        let mut want = BTreeSet::new();
        let mut runs = BTreeSet::new();
        for _ in 0..3 {
            let (run, ids) = write_run(&store, "douyin", &["topic", "write", "retry"]).await;
            want.extend(ids);
            runs.insert(run);
        }
        drain(&mut e).await;
        assert_eq!(es.docs("flowguard-attempts").len(), want.len());

        // Down: runs go on and are recorded; the exporter fails, keeps its cursor, and counts.
        es.set_down(true);
        for _ in 0..4 {
            let (run, ids) = write_run(&store, "douyin", &["topic", "write", "retry", "publish"]).await;
            want.extend(ids);
            runs.insert(run);
        }
        let before = store.export_cursor("elasticsearch").await.unwrap().expect("cursor");
        for _ in 0..3 {
            assert!(matches!(e.step().await.unwrap(), Step::Failed { .. }));
        }
        let during = store.export_cursor("elasticsearch").await.unwrap().expect("cursor");
        assert_eq!((during.attempt_id, during.run_end_seq), (before.attempt_id, before.run_end_seq), "the cursor stays while failing");
        assert_eq!(during.failed, 3);
        assert!(during.failing_since.is_some() && during.last_error.as_deref().is_some_and(|m| m.contains("503")), "{during:?}");

        // Back, refusing a few items with 429 at first, and one document for good.
        es.set_down(false);
        es.reject_next_items(5);
        *es.inner.bad_node.lock().unwrap() = Some("poison".into());
        let (run, ids) = write_run(&store, "douyin", &["topic", "poison"]).await;
        runs.insert(run);
        let poison = ids[1].clone();
        want.insert(ids[0].clone());
        let steps = drain(&mut e).await;
        assert!(steps.iter().any(|s| matches!(s, Step::Failed { .. })), "the 429 items made a batch go again: {steps:?}");

        let got = es.docs("flowguard-attempts");
        let got_ids: BTreeSet<String> = got.keys().cloned().collect();
        assert_eq!(got_ids, want, "every attempt arrives, by its stable id");
        assert!(got.values().all(|(_, writes)| *writes == 1), "each created once");
        assert!(!got.contains_key(&poison));
        let run_docs = es.docs("flowguard-runs");
        assert_eq!(run_docs.keys().cloned().collect::<BTreeSet<_>>(), runs);
        let c = store.export_cursor("elasticsearch").await.unwrap().expect("cursor");
        assert_eq!(c.rejected, 1, "the mapping conflict is counted once, not retried: {c:?}");
        assert_eq!(c.sent as usize, want.len() + runs.len());
        assert!(c.failing_since.is_none() && c.last_error.is_none());
        assert_eq!(store.export_lag(c.attempt_id, c.run_end_seq).await.unwrap(), 0);

        // A restart (a new exporter on the same cursor) sends nothing again.
        let requests = es.inner.requests.load(std::sync::atomic::Ordering::SeqCst);
        e.release().await;
        let mut again = es_exporter(&store, &es, settings(Duration::ZERO));
        assert_eq!(drain(&mut again).await, vec![Step::Idle]);
        assert_eq!(es.inner.requests.load(std::sync::atomic::Ordering::SeqCst), requests);
    }

    async fn one_exporter_holds_a_sink_and_a_stale_holder_cannot_move_its_cursor(db: TestDb) {
        let store = db.open().await;
        let other = db.open().await;
        let es = FakeEs::start().await;
        write_run(&store, "f", &["a", "b"]).await;
        let mut first = es_exporter(&store, &es, settings(Duration::ZERO));
        let mut second = es_exporter(&other, &es, settings(Duration::ZERO));
        assert!(matches!(first.step().await.unwrap(), Step::Sent { sent: 3, .. }));
        assert_eq!(second.step().await.unwrap(), Step::NotHolder);

        // The holder stops answering and its lease runs out: another takes the sink, with a new
        // epoch, and the old holder's writes are refused.
        let held = store.export_cursor("elasticsearch").await.unwrap().expect("cursor");
        assert!(store.export_claim("elasticsearch", "other-process", flowguard::store::leases::wall_ms() + 3_600_000, 1000).await.unwrap().is_some());
        let p = ExportProgress { attempt_id: held.attempt_id + 100, run_end_seq: held.run_end_seq, sent: 1, rejected: 0 };
        assert!(!store.export_advance("elasticsearch", held.epoch, &p, flowguard::store::leases::wall_ms(), 1000).await.unwrap());
        let now = store.export_cursor("elasticsearch").await.unwrap().expect("cursor");
        assert_eq!(now.attempt_id, held.attempt_id);
        assert_eq!(now.epoch, held.epoch + 1);
        assert_eq!(first.step().await.unwrap(), Step::NotHolder);

        // Given back, the next exporter carries on from the cursor.
        store.export_release("elasticsearch", now.epoch).await.unwrap();
        write_run(&other, "f", &["c"]).await;
        assert!(matches!(second.step().await.unwrap(), Step::Sent { sent: 2, .. }));
        assert!(es.docs("flowguard-attempts").values().all(|(_, n)| *n == 1));
    }

    async fn two_exporters_following_concurrent_writers_deliver_each_record_once(db: TestDb) {
        let a = db.open().await;
        let b = db.open().await;
        let es = FakeEs::start().await;
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        let s = Settings { gap_wait: Duration::from_millis(500), ..settings(Duration::ZERO) };
        let t1 = tokio::spawn(es_exporter(&a, &es, s).run(stop.clone()));
        let t2 = tokio::spawn(es_exporter(&b, &es, s).run(stop.clone()));
        let mut writers = Vec::new();
        for store in [a.clone(), b.clone(), a.clone()] {
            writers.push(tokio::spawn(async move {
                let mut ids = Vec::new();
                for _ in 0..8 {
                    ids.extend(write_run(&store, "f", &["x", "write", "retry"]).await.1);
                }
                ids
            }));
        }
        let mut want = BTreeSet::new();
        for w in writers {
            want.extend(w.await.unwrap());
        }
        let mut got = BTreeMap::new();
        for _ in 0..1000 {
            got = es.docs("flowguard-attempts");
            if got.len() >= want.len() && es.docs("flowguard-runs").len() == 24 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = stop_tx.send(true);
        let _ = tokio::join!(t1, t2);
        assert_eq!(got.keys().cloned().collect::<BTreeSet<_>>(), want);
        assert!(got.values().all(|(_, n)| *n == 1));
    }

    async fn otlp_spans_reach_the_collector_once_by_id_after_it_was_down(db: TestDb) {
        let store = db.open().await;
        let otel = FakeCollector::start().await;
        let cfg = OtlpConfig {
            endpoint: format!("{}/v1/traces", otel.url),
            headers: [("x-api-key".to_owned(), crate::support::fake_otlp::KEY.to_owned())].into_iter().collect(),
            service_name: "flowguard".into(),
            timeout: flowguard::config::HumanDuration::secs(10),
        };
        let providers = [("deepseek".to_owned(), "deepseek".to_owned())].into_iter().collect();
        let sink: Arc<dyn Sink> = Arc::new(Otlp::new(&cfg, providers).unwrap());
        let mut e = Exporter::new(store.clone(), sink, settings(Duration::ZERO));
        let (run, ids) = write_run(&store, "douyin", &["topic", "write", "retry"]).await;
        otel.set_down(true);
        assert!(matches!(e.step().await.unwrap(), Step::Failed { .. }));
        otel.set_down(false);
        otel.throttle_next(1);
        drain(&mut e).await;

        let spans = otel.spans();
        let trace = flowguard::export::otlp::trace_id(&run);
        let root = flowguard::export::otlp::run_span_id(&run);
        assert_eq!(spans.len(), ids.len() + 1, "one span per attempt and one for the run: {spans:#?}");
        assert!(spans.values().all(|(s, n)| *n == 1 && s["traceId"] == trace.as_str()));
        let root_span = &spans[&root].0;
        assert!(root_span.get("parentSpanId").is_none_or(|p| p == ""));
        assert_eq!(otel.attr(root_span, "flowguard.status"), Some(Value::String("recovered".into())));
        let children: Vec<&Value> = spans.values().map(|(s, _)| s).filter(|s| s["parentSpanId"] == root.as_str()).collect();
        assert_eq!(children.len(), ids.len());
        let llm = children.iter().find(|s| otel.attr(s, "gen_ai.operation.name").is_some()).expect("an LLM span");
        assert_eq!(otel.attr(llm, "gen_ai.operation.name"), Some(Value::String("chat".into())));
        assert_eq!(otel.attr(llm, "gen_ai.provider.name"), Some(Value::String("deepseek".into())));
        assert_eq!(otel.attr(llm, "gen_ai.request.model"), Some(Value::String("deepseek".into())));
        assert_eq!(otel.attr(llm, "gen_ai.usage.input_tokens"), Some(Value::from(12)));
        assert_eq!(otel.attr(llm, "gen_ai.usage.output_tokens"), Some(Value::from(34)));
        // The retried node: two sibling spans, the first failed with its error kind.
        let retries: Vec<&&Value> = children.iter().filter(|s| otel.attr(s, "flowguard.node") == Some(Value::String("retry".into()))).collect();
        assert_eq!(retries.len(), 2);
        let failed = retries.iter().find(|s| s["status"]["code"] == 2).expect("a failed attempt span");
        assert_eq!(otel.attr(failed, "error.type"), Some(Value::String("upstream_5xx".into())));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hole_in_the_log_is_waited_for_then_passed() {
    let db = TestDb::create(crate::support::db::Kind::Sqlite).await.expect("sqlite");
    let store = db.open().await;
    let es = FakeEs::start().await;
    let (_, first) = write_run(&store, "f", &["a"]).await;
    let (_, second) = write_run(&store, "f", &["b"]).await;
    let (_, third) = write_run(&store, "f", &["c"]).await;
    // A number never used (a rolled-back insert) looks like one still being committed.
    store.pool().exec("DELETE FROM node_attempts WHERE node_id = 'b'", &[]).await.unwrap();
    let mut e = es_exporter(&store, &es, settings(Duration::from_millis(200)));
    assert!(matches!(e.step().await.unwrap(), Step::Sent { .. }));
    let got = es.docs("flowguard-attempts");
    assert!(got.contains_key(&first[0]) && !got.contains_key(&third[0]), "stops at the hole: {got:?}");
    for _ in 0..200 {
        e.step().await.unwrap();
        if es.docs("flowguard-attempts").contains_key(&third[0]) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let got = es.docs("flowguard-attempts");
    assert!(got.contains_key(&third[0]) && !got.contains_key(&second[0]));
}

/// A `field :` term of a KQL query.
fn kql_field() -> &'static regex::Regex {
    static RE: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    RE.get_or_init(|| regex::Regex::new(r"([A-Za-z_@][A-Za-z0-9_.]*)\s*:").unwrap())
}

/// Fields a Kibana saved object reads: aggregation fields and query terms.
fn kibana_fields(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(o) => {
            for (k, x) in o {
                if k == "field"
                    && let Some(f) = x.as_str()
                {
                    out.insert(f.to_owned());
                }
                if let Some(s) = x.as_str()
                    && (k.ends_with("JSON") || k == "query" || k == "visState")
                {
                    if let Ok(inner) = serde_json::from_str::<Value>(s) {
                        kibana_fields(&inner, out);
                    } else {
                        // KQL: `field : value` terms.
                        out.extend(kql_field().captures_iter(s).map(|c| c[1].to_owned()));
                    }
                }
                kibana_fields(x, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| kibana_fields(x, out)),
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kibana_objects_read_only_fields_flowguard_writes_and_maps() {
    use flowguard::export::elasticsearch::{ATTEMPT_FIELDS, RUN_FIELDS};
    let db = TestDb::create(crate::support::db::Kind::Sqlite).await.expect("sqlite");
    let store = db.open().await;
    let es = FakeEs::start().await;
    write_run(&store, "douyin", &["topic", "write", "retry"]).await;
    let mut e = es_exporter(&store, &es, settings(Duration::ZERO));
    drain(&mut e).await;
    let written = |prefix: &str| -> BTreeSet<String> {
        es.docs(prefix).values().flat_map(|(d, _)| d.as_object().unwrap().keys().cloned().collect::<Vec<_>>()).collect()
    };
    let (attempt_keys, run_keys) = (written("flowguard-attempts"), written("flowguard-runs"));
    let mapped = |fields: &[(&str, &str)]| fields.iter().map(|(f, _)| f.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(attempt_keys, mapped(ATTEMPT_FIELDS), "the attempt documents and their template agree");
    assert_eq!(run_keys, mapped(RUN_FIELDS), "the run documents and their template agree");

    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/dashboards/kibana.ndjson")).unwrap();
    let objects: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .filter(|o: &Value| o.get("type").is_some())
        .collect();
    let views: BTreeMap<String, String> = objects
        .iter()
        .filter(|o| o["type"] == "index-pattern")
        .map(|o| (o["id"].as_str().unwrap().to_owned(), o["attributes"]["title"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(views.values().cloned().collect::<BTreeSet<_>>(), ["flowguard-attempts*".to_owned(), "flowguard-runs*".to_owned()].into());
    let ids: BTreeSet<String> = objects.iter().map(|o| o["id"].as_str().unwrap().to_owned()).collect();
    let mut titles = Vec::new();
    for o in &objects {
        for r in o["references"].as_array().into_iter().flatten() {
            assert!(ids.contains(r["id"].as_str().unwrap()), "{} refers to a missing object {}", o["id"], r["id"]);
        }
        if o["type"] != "visualization" {
            continue;
        }
        titles.push(o["attributes"]["title"].as_str().unwrap().to_owned());
        let view = o["references"].as_array().unwrap().iter().find(|r| r["type"] == "index-pattern").expect("a data view");
        let fields = if views[view["id"].as_str().unwrap()].starts_with("flowguard-runs") { &run_keys } else { &attempt_keys };
        let mut used = BTreeSet::new();
        kibana_fields(o, &mut used);
        assert!(!used.is_empty(), "{} reads no field", o["id"]);
        for f in used {
            assert!(fields.contains(&f), "{} reads `{f}`, which flowguard does not write there", o["id"]);
        }
    }
    let dashboard = objects.iter().find(|o| o["type"] == "dashboard").expect("a dashboard");
    let panels: Vec<Value> = serde_json::from_str(dashboard["attributes"]["panelsJSON"].as_str().unwrap()).unwrap();
    assert_eq!(panels.len(), titles.len(), "every visualization is on the dashboard");
    for want in ["Success rate", "p95", "Failures by error kind", "Top failing nodes"] {
        assert!(titles.iter().any(|t| t.contains(want)), "no panel `{want}` in {titles:?}");
    }
}

#[test]
fn the_grafana_dashboard_queries_only_metrics_the_server_exports() {
    use flowguard::export::{SinkStatus, render_metrics};
    let m = flowguard::server::metrics::Metrics::default();
    let a = AttemptRecord {
        run_id: "r".into(),
        flow: "f".into(),
        node_id: "n".into(),
        kind: "llm".into(),
        seq: 1,
        attempt: 1,
        iteration: None,
        status: AttemptStatus::Failed,
        started_at: 0,
        ended_at: 1,
        duration_ms: 1,
        input_bytes: 0,
        output_bytes: 0,
        input: None,
        output: None,
        retried: true,
        action: None,
        error_kind: None,
        error_message: None,
        model: None,
        tokens_in: None,
        tokens_out: None,
        http_status: None,
        cost_nanos: None,
        currency: None,
    };
    m.attempt(&a);
    m.run_finished("f", "failed", Some("timeout"));
    m.ingested("accepted", 1);
    m.fired("f", "cron");
    m.fires_skipped("f", "cron", 1);
    let mut text = m.render(0, &[("feishu".into(), "sent".into(), 1)]);
    text.push_str(&render_metrics(&[SinkStatus { sink: "elasticsearch".into(), configured: true, lag: 0, cursor: None }]));
    // Every family the server declares (`# TYPE`), with a histogram's series, and every sample.
    let mut exported: BTreeSet<String> =
        text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()).map(|l| l.split(['{', ' ']).next().unwrap().to_owned()).collect();
    for l in text.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
        let mut w = l.split(' ');
        let (name, ty) = (w.next().unwrap(), w.next().unwrap());
        exported.insert(name.to_owned());
        if ty == "histogram" {
            exported.extend(["_bucket", "_sum", "_count"].map(|s| format!("{name}{s}")));
        }
    }

    let dash: Value =
        serde_json::from_str(&std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/dashboards/grafana.json")).unwrap()).unwrap();
    let re = regex::Regex::new(r"\bflowguard_[a-z0-9_]+").unwrap();
    let mut queried = BTreeSet::new();
    let mut panels = 0;
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            panels += 1;
            let expr = t["expr"].as_str().unwrap();
            queried.extend(re.find_iter(expr).map(|m| m.as_str().to_owned()));
        }
    }
    assert!(panels >= 6, "a dashboard with a handful of panels");
    for q in &queried {
        assert!(exported.contains(q), "the Grafana dashboard queries `{q}`, which /metrics does not export");
    }
    for must in ["flowguard_runs_total", "flowguard_node_duration_seconds_bucket", "flowguard_exporter_lag_records"] {
        assert!(queried.contains(must), "the dashboard should chart {must}");
    }
}

const HELLO: &str =
    "name: hello\nnodes:\n  - id: greet\n    kind: template\n    text: hello\n  - id: shout\n    kind: template\n    text: HELLO\n";

async fn wait_for<F: std::future::Future<Output = bool>>(what: &str, mut f: impl FnMut() -> F) {
    for _ in 0..1500 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_exports_counts_in_metrics_and_health_and_alerts_on_a_sink_that_stays_down() {
    use crate::serve::{OPERATE, READ, config, spawn_app_with};
    let es = FakeEs::start().await;
    let extra = format!(
        "exporters:\n  interval: 20ms\n  max_backoff: 50ms\n  alert_after: 0s\n  elasticsearch:\n    url: {}\n    api_key: \"{API_KEY}\"\n",
        es.url
    );
    let app = spawn_app_with(&config(&extra), &[("hello", HELLO)]).await;
    for _ in 0..3 {
        let (_, b) = app.post("/api/v1/flows/hello/runs", OPERATE, &serde_json::json!({})).await;
        app.wait_run(b["run_id"].as_str().expect("id")).await;
    }
    wait_for("6 attempts and 3 runs in Elasticsearch", || async {
        es.docs("flowguard-attempts").len() == 6 && es.docs("flowguard-runs").len() == 3
    })
    .await;
    let metrics = |app: &crate::serve::TestApp| {
        let url = format!("{}/metrics", app.base);
        let http = app.http.clone();
        async move { http.get(url).send().await.unwrap().text().await.unwrap() }
    };
    wait_for("the sent count", || async { metrics(&app).await.contains("flowguard_exporter_sent_total{sink=\"elasticsearch\"} 9") }).await;
    let m = metrics(&app).await;
    assert!(m.contains("flowguard_exporter_lag_records{sink=\"elasticsearch\"} 0"), "{m}");
    assert!(m.contains("flowguard_exporter_failing{sink=\"elasticsearch\"} 0"), "{m}");
    let (code, health) = app.get("/api/v1/health", READ).await;
    assert_eq!(code, 200);
    let sink = &health["exporters"][0];
    assert_eq!((sink["sink"].as_str(), sink["lag"].as_i64(), sink["sent"].as_i64()), (Some("elasticsearch"), Some(0), Some(9)), "{health}");

    // The target goes down: runs are not held up, the exporter alerts through the routes.
    es.set_down(true);
    let (_, b) = app.post("/api/v1/flows/hello/runs", OPERATE, &serde_json::json!({})).await;
    let run = app.wait_run(b["run_id"].as_str().expect("id")).await;
    assert_eq!(run["status"], "succeeded");
    wait_for("the exporter alert", || async {
        let (_, alerts) = app.get("/api/v1/alerts", READ).await;
        alerts["alerts"].as_array().is_some_and(|a| a.iter().any(|x| x["node"] == "exporter:elasticsearch" && x["flow"] == "flowguard"))
    })
    .await;
    let m = metrics(&app).await;
    assert!(m.contains("flowguard_exporter_failing{sink=\"elasticsearch\"} 1"), "{m}");
    let (_, health) = app.get("/api/v1/health", READ).await;
    assert!(health["exporters"][0]["lag"].as_i64().unwrap_or(0) >= 3, "{health}");
    for text in [m, health.to_string()] {
        assert!(!text.contains(API_KEY), "the API key leaked: {text}");
    }

    es.set_down(false);
    wait_for("the backlog delivered", || async { es.docs("flowguard-attempts").len() == 8 && es.docs("flowguard-runs").len() == 4 }).await;
    assert!(es.docs("flowguard-attempts").values().all(|(_, n)| *n == 1));
    wait_for("the exporter alert resolved", || async {
        let (_, alerts) = app.get("/api/v1/alerts", READ).await;
        alerts["alerts"].as_array().is_some_and(|a| {
            let mine: Vec<&Value> = a.iter().filter(|x| x["node"] == "exporter:elasticsearch").collect();
            !mine.is_empty() && mine.iter().all(|x| x["status"] == "resolved")
        })
    })
    .await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_installs_the_templates_and_the_kibana_objects_and_status_shows_the_cursor() {
    use crate::support::{Project, bin, stderr, stdout};
    let es = FakeEs::start().await;
    let p = Project::with_config(&format!(
        "storage:\n  url: sqlite://fg.db\nexporters:\n  elasticsearch:\n    url: {url}\n    api_key: ${{ES_API_KEY}}\n    kibana_url: {url}\n",
        url = es.url
    ));
    let run = |args: &[&str], key: &str| {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let dir = p.path().to_path_buf();
        let key = key.to_owned();
        async move {
            tokio::task::spawn_blocking(move || bin().current_dir(dir).args(&args).env("ES_API_KEY", key).output().unwrap()).await.unwrap()
        }
    };
    let o = run(&["exporters", "setup", "elasticsearch"], API_KEY).await;
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let templates = es.inner.templates.lock().unwrap().clone();
    let attempts = &templates["flowguard-attempts"];
    assert_eq!(attempts["index_patterns"][0], "flowguard-attempts*");
    assert_eq!(attempts["template"]["mappings"]["dynamic"], false);
    assert_eq!(attempts["template"]["mappings"]["properties"]["node"]["type"], "keyword");
    assert_eq!(attempts["template"]["mappings"]["properties"]["duration_ms"]["type"], "long");
    assert_eq!(attempts["template"]["mappings"]["properties"]["@timestamp"]["type"], "date");
    assert_eq!(templates["flowguard-runs"]["template"]["mappings"]["properties"]["status"]["type"], "keyword");
    let kibana = es.inner.kibana.lock().unwrap().clone();
    assert_eq!(kibana.len(), 1);
    assert_eq!(kibana[0].trim(), std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/dashboards/kibana.ndjson")).unwrap().trim());
    assert!(stdout(&o).contains("Kibana saved objects imported"), "{}", stdout(&o));

    // A refused key: a clear error, and the key is never printed.
    let o = run(&["exporters", "setup", "elasticsearch"], "wrong-key-9f8e7d6c5b").await;
    assert_eq!(o.status.code(), Some(1));
    let all = format!("{}{}", stdout(&o), stderr(&o));
    assert!(all.contains("401") && !all.contains("wrong-key-9f8e7d6c5b"), "{all}");

    let o = run(&["exporters", "status", "--format", "json"], API_KEY).await;
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[0]["sink"], "elasticsearch");
    assert_eq!(v[0]["configured"], true);
    assert_eq!(v[0]["lag"], 0);
    let o = run(&["exporters", "status"], API_KEY).await;
    assert!(stdout(&o).contains("elasticsearch") && stdout(&o).contains("(not started)"), "{}", stdout(&o));
}

fn bitable_config(url: &str) -> flowguard::export::config::BitableConfig {
    use crate::support::fake_feishu_open::{APP_ID, APP_SECRET, APP_TOKEN, TABLE};
    flowguard::export::config::BitableConfig {
        base_url: url.to_owned(),
        app_id: APP_ID.into(),
        app_secret: APP_SECRET.into(),
        app_token: APP_TOKEN.into(),
        table_id: TABLE.into(),
        run_url: Some("https://flowguard.example.com/runs/{run_id}".into()),
        timeout: flowguard::config::HumanDuration::secs(10),
    }
}

backends! {
    async fn bitable_gets_each_node_attempt_once_through_token_expiry_rate_limits_outages_and_a_lost_answer(db: TestDb) {
        use crate::support::fake_feishu_open::FakeFeishuOpen;
        use flowguard::export::bitable::{Bitable, FIELDS};
        let store = db.open().await;
        let fs = FakeFeishuOpen::start().await;
        let cfg = bitable_config(&fs.url);
        let sink: Arc<dyn Sink> = Arc::new(Bitable::new(&cfg).unwrap());
        let mut e = Exporter::new(store.clone(), sink, settings(Duration::ZERO));
        let mut want = BTreeSet::new();
        want.extend(write_run(&store, "douyin", &["topic", "write", "retry"]).await.1);

        // Fields missing: refused, nothing lost; `setup` creates them (paging through the list).
        fs.inner.fields.lock().unwrap().insert("Record ID".into(), 1);
        let failed = e.step().await.unwrap();
        assert!(matches!(failed, Step::Failed { .. }), "{failed:?}");
        let c = store.export_cursor("bitable").await.unwrap().unwrap();
        assert!(c.last_error.as_deref().is_some_and(|m| m.contains("1254045") && m.contains("setup bitable")), "{c:?}");
        let done = flowguard::export::bitable::setup(&cfg).await.unwrap();
        assert_eq!(done.len(), FIELDS.len() - 1, "{done:?}");
        assert_eq!(fs.inner.fields.lock().unwrap().len(), FIELDS.len());
        assert_eq!(fs.inner.fields.lock().unwrap()["Status"], 3);
        assert!(flowguard::export::bitable::setup(&cfg).await.unwrap()[0].contains("every field"));
        drain(&mut e).await;
        assert_eq!(fs.records().len(), want.len());

        // The token expires: fetched again, once.
        let issued = fs.inner.tokens_issued.load(std::sync::atomic::Ordering::SeqCst);
        fs.expire_tokens();
        want.extend(write_run(&store, "douyin", &["topic", "write"]).await.1);
        drain(&mut e).await;
        assert_eq!(fs.inner.tokens_issued.load(std::sync::atomic::Ordering::SeqCst), issued + 1);

        // Rate limited (the table's 1254290 at HTTP 200, the platform's 99991400 at HTTP 429),
        // data not ready (1254607), down, then an answer lost after the write: the retry carries
        // the same client_token and adds nothing.
        fs.limit_next(1);
        want.extend(write_run(&store, "douyin", &["a", "retry"]).await.1);
        assert!(matches!(e.step().await.unwrap(), Step::Failed { .. }));
        let c = store.export_cursor("bitable").await.unwrap().unwrap();
        assert!(c.last_error.as_deref().is_some_and(|m| m.contains("1254290") && m.contains("rate limited")), "{c:?}");
        fs.throttle_next(1);
        assert!(matches!(e.step().await.unwrap(), Step::Failed { .. }));
        let c = store.export_cursor("bitable").await.unwrap().unwrap();
        assert!(c.last_error.as_deref().is_some_and(|m| m.contains("99991400") && m.contains("rate limited")), "{c:?}");
        fs.not_ready_next(1);
        assert!(matches!(e.step().await.unwrap(), Step::Failed { .. }));
        let c = store.export_cursor("bitable").await.unwrap().unwrap();
        assert!(c.last_error.as_deref().is_some_and(|m| m.contains("1254607") && m.contains("not ready")), "{c:?}");
        fs.set_down(true);
        assert!(matches!(e.step().await.unwrap(), Step::Failed { .. }));
        fs.set_down(false);
        fs.lose_next_answer();
        assert!(matches!(e.step().await.unwrap(), Step::Failed { .. }));
        want.extend(write_run(&store, "douyin", &["b"]).await.1);
        drain(&mut e).await;

        let records = fs.records();
        let ids: Vec<String> = records.iter().map(|r| r["Record ID"].as_str().unwrap().to_owned()).collect();
        assert_eq!(ids.len(), want.len(), "no record twice: {ids:?}");
        assert_eq!(ids.into_iter().collect::<BTreeSet<_>>(), want);
        let llm = records.iter().find(|r| r["Node"] == "write").unwrap();
        assert_eq!(llm["Tokens in"], 12);
        assert_eq!(llm["Status"], "succeeded");
        assert!(llm["Started"].as_i64().unwrap() > 1_600_000_000_000, "dates in ms");
        assert!(llm["Run link"]["link"].as_str().unwrap().starts_with("https://flowguard.example.com/runs/"));
        let failed = records.iter().find(|r| r["Status"] == "failed").unwrap();
        assert_eq!(failed["Error kind"], "upstream_5xx");
    }
}

fn bitable_exporter(store: &Store, cfg: &flowguard::export::config::BitableConfig, s: Settings) -> Exporter {
    let sink: Arc<dyn Sink> = Arc::new(flowguard::export::bitable::Bitable::new(cfg).expect("sink"));
    Exporter::new(store.clone(), sink, s)
}

/// The Record IDs in the table, each with how many times it is there.
fn bitable_counts(fs: &crate::support::fake_feishu_open::FakeFeishuOpen) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for r in fs.records() {
        *out.entry(r["Record ID"].as_str().unwrap_or_default().to_owned()).or_insert(0) += 1;
    }
    out
}

backends! {
    // Feishu stores a batch and its answer is lost (a 504 after the write; then no answer before
    // the client's timeout), and the exporter stops (a restart; then a crash, its lease left to
    // run out) while runs go on. Whoever holds the sink next sends exactly that extent again,
    // with the same client_token, before anything new: every record is in the table once.
    async fn bitable_after_a_lost_answer_and_a_restart_sends_the_same_extent_again_and_adds_nothing(db: TestDb) {
        use crate::support::fake_feishu_open::FakeFeishuOpen;
        let store = db.open().await;
        let other = db.open().await;
        let fs = FakeFeishuOpen::start().await;
        let cfg = bitable_config(&fs.url);
        flowguard::export::bitable::setup(&cfg).await.unwrap();
        let mut want = BTreeSet::new();
        want.extend(write_run(&store, "douyin", &["topic", "write", "retry"]).await.1);

        fs.lose_next_answer();
        let mut e = bitable_exporter(&store, &cfg, settings(Duration::ZERO));
        assert!(matches!(e.step().await.unwrap(), Step::Failed { .. }));
        assert_eq!(fs.records().len(), want.len(), "Feishu stored the batch whose answer was lost");
        e.release().await;
        drop(e);
        want.extend(write_run(&other, "douyin", &["topic", "write"]).await.1);
        let mut restarted = bitable_exporter(&other, &cfg, settings(Duration::ZERO));
        drain(&mut restarted).await;
        let counts = bitable_counts(&fs);
        assert_eq!(counts.keys().cloned().collect::<BTreeSet<_>>(), want);
        assert!(counts.values().all(|n| *n == 1), "a record twice after the restart: {counts:?}");
        restarted.release().await;

        // No answer at all: the client gives up after its timeout, and the process dies without
        // giving the sink back; another takes it over once the lease has run out.
        let quick = flowguard::export::config::BitableConfig { timeout: flowguard::config::HumanDuration::millis(300), ..cfg.clone() };
        let short = Settings { lease: Duration::from_millis(300), ..settings(Duration::ZERO) };
        want.extend(write_run(&store, "douyin", &["a", "retry", "b"]).await.1);
        fs.hang_next_answer();
        let mut dying = bitable_exporter(&store, &quick, short);
        assert!(matches!(dying.step().await.unwrap(), Step::Failed { .. }));
        drop(dying);
        assert_eq!(fs.records().len(), want.len(), "Feishu stored the batch it never answered");
        want.extend(write_run(&store, "douyin", &["c", "d"]).await.1);
        let mut next = bitable_exporter(&other, &quick, short);
        let mut held = false;
        for _ in 0..200 {
            if next.step().await.unwrap() != Step::NotHolder {
                held = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(held, "the dead holder's lease never ran out");
        drain(&mut next).await;
        let counts = bitable_counts(&fs);
        assert_eq!(counts.keys().cloned().collect::<BTreeSet<_>>(), want);
        assert!(counts.values().all(|n| *n == 1), "a record twice after the takeover: {counts:?}");
        let c = other.export_cursor("bitable").await.unwrap().unwrap();
        assert_eq!(c.inflight, None, "the extent is cleared once delivered");
    }
}

backends! {
    // A sink down past alert_after raises one alert, told through the routes; when it delivers
    // again — here in another process that took the sink over, with its own alerter — exactly
    // that alert is resolved and one resolved message goes out; another open alert of flow
    // `flowguard` (a config reload failure) stays firing.
    async fn a_failing_sink_alert_resolves_once_when_the_sink_delivers_again_even_in_another_process(db: TestDb) {
        use crate::support::fake_feishu::{self, FakeFeishu};
        use flowguard::alert::{AlertInput, Alerter};
        use flowguard::store::AlertFilter;
        let fake = FakeFeishu::start().await;
        let yaml = format!(
            "channels:\n  ops:\n    type: feishu\n    webhook: \"{}\"\n    secret: ${{FEISHU_SECRET}}\n    keyword: 告警\nalerting:\n  group_wait: 0s\nroutes:\n  - channels: [ops]\n",
            fake.url
        );
        let cfg = flowguard::config::Config::parse(std::path::Path::new("flowguard.yaml"), &yaml, std::path::Path::new("/tmp"), &|k| {
            (k == "FEISHU_SECRET").then(|| fake_feishu::SECRET.to_owned())
        })
        .unwrap_or_else(|d| panic!("{d}"));
        let clock: flowguard::clock::SharedClock = Arc::new(flowguard::clock::SystemClock);
        let (store, other) = (db.open().await, db.open().await);
        let (alerter, other_alerter) =
            (Alerter::new(&cfg, store.clone(), clock.clone()).unwrap(), Alerter::new(&cfg, other.clone(), clock.clone()).unwrap());
        let pump = |a: Alerter| async move {
            for _ in 0..500 {
                a.step().await.unwrap();
                if a.store().list_notifications(Some("pending"), 100).await.unwrap().is_empty() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            panic!("the outbox did not empty");
        };
        alerter
            .raise(AlertInput {
                flow: "flowguard".into(),
                node: "config".into(),
                error_kind: "internal".into(),
                severity: flowguard::vocab::Severity::High,
                status: "config_reload_failed".into(),
                run_id: None,
                message: "flowguard.yaml did not parse".into(),
                attempts: None,
                labels: Default::default(),
            })
            .await
            .unwrap();

        let es = FakeEs::start().await;
        es.set_down(true);
        write_run(&store, "douyin", &["topic", "write"]).await;
        let alerting = Settings { alert_after: Duration::ZERO, ..settings(Duration::ZERO) };
        let mut e = es_exporter(&store, &es, alerting).with_alerter(alerter.clone());
        for _ in 0..3 {
            assert!(matches!(e.step().await.unwrap(), Step::Failed { .. }));
        }
        pump(alerter.clone()).await;
        let exporter_alerts = |store: Store| async move {
            let all = store.list_alerts(&AlertFilter { flow: Some("flowguard".into()), ..Default::default() }).await.unwrap();
            let (mine, others): (Vec<_>, Vec<_>) = all.into_iter().partition(|a| a.node == "exporter:elasticsearch");
            (mine, others)
        };
        let (mine, _) = exporter_alerts(store.clone()).await;
        assert_eq!(mine.len(), 1, "one alert for the failing sink: {mine:?}");
        assert_eq!((mine[0].status.as_str(), mine[0].error_kind.as_str()), ("firing", "upstream_5xx"));
        assert_eq!(fake.messages().len(), 2, "the config alert and the exporter alert were told: {:?}", fake.messages());

        // The process stops; another takes the sink over and the target answers again.
        e.release().await;
        drop(e);
        es.set_down(false);
        let mut next = es_exporter(&other, &es, alerting).with_alerter(other_alerter.clone());
        drain(&mut next).await;
        write_run(&other, "douyin", &["publish"]).await;
        drain(&mut next).await;
        pump(other_alerter.clone()).await;
        let (mine, others) = exporter_alerts(other.clone()).await;
        assert_eq!(mine.len(), 1);
        assert_eq!(mine[0].status, "resolved", "{mine:?}");
        assert_eq!(others.len(), 1);
        assert_eq!(others[0].status, "firing", "the flow's other alert stays open: {others:?}");
        let notes = other.list_notifications(None, 100).await.unwrap();
        assert_eq!(notes.iter().filter(|n| n.purpose == "resolved").count(), 1, "{notes:?}");
        assert!(notes.iter().all(|n| n.status == "sent"), "{notes:?}");
        assert_eq!(fake.messages().len(), 3, "one resolved message: {:?}", fake.messages());
    }
}
