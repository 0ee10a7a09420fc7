//! `POST /api/v1/events`: run and node events of flows that run elsewhere (Coze, Dify, n8n).
//! External runs get the same records as native ones (runs with trigger `external`, node
//! attempts), so statistics, reports and alerts treat them alike.
//!
//! Each event has an `id`; a repeated id is answered `duplicate` and not applied again. Events may
//! come in any order: a node event before its run's start creates the run, a finish before the
//! start is kept and the start only fills in what is missing. Every item gets its own result;
//! a bad one is rejected with its reason, never dropped in silence.

use super::Shared;
use super::api::{ApiError, parse_json};
use super::config::Scope;
use crate::store::{AttemptRecord, IngestWrite, RunRecord};
use crate::vocab::{AttemptStatus, ErrorKind, RunStatus};
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// Most events one request may carry.
pub const MAX_EVENTS: usize = 1000;

/// One event, checked.
#[derive(Debug, Clone)]
struct Event {
    id: String,
    flow: String,
    run_id: String,
    body: Body,
    /// What was reconciled in the event (answered with it; the event is accepted).
    warning: Option<String>,
}

#[derive(Debug, Clone)]
enum Body {
    RunStarted {
        at: i64,
        inputs: Option<String>,
    },
    RunFinished {
        at: i64,
        started_at: Option<i64>,
        status: RunStatus,
        error_kind: Option<ErrorKind>,
        error: Option<String>,
        failed_node: Option<String>,
    },
    NodeStarted {
        at: i64,
    },
    NodeFinished(Box<AttemptRecord>),
}

/// One item's answer.
#[derive(Debug, Clone, Serialize)]
struct ItemResult {
    index: usize,
    /// The event's id as sent (null when it had none).
    id: Value,
    /// `accepted`, `duplicate` or `rejected`.
    result: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    warning: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

fn reject(i: usize, id: Value, why: String) -> ItemResult {
    ItemResult { index: i, id, result: "rejected", warning: None, error: Some(why) }
}

/// Ingestion to itself (see [`exclusive`]), and the requests waiting to be merged: whoever holds
/// it merges every request waiting, in order, and commits them in one transaction (a group commit
/// of requests: concurrent clients share the reads and the commit instead of queueing for them).
///
/// On SQLite (one `serve` ingests per file) a merge does not wait for its commit: the next one
/// starts while the writer commits it, unless it holds a run or an event id of a write still in
/// flight, in which case it waits for that write first (its reads must see it). On MySQL and
/// PostgreSQL a merge holds the database-wide lock until its commit, for the other servers.
#[derive(Default)]
pub struct Gate {
    lock: tokio::sync::Mutex<()>,
    waiting: std::sync::Mutex<Vec<Job>>,
    in_flight: std::sync::Mutex<Vec<Arc<Flight>>>,
}

/// A merged write handed to the store and not answered yet: the runs and event ids it holds.
struct Flight {
    runs: HashSet<String>,
    events: HashSet<String>,
    landed: tokio::sync::watch::Sender<bool>,
}

/// One request's checked events, waiting for a merge.
struct Job {
    checked: Vec<(usize, Event)>,
    results: Vec<ItemResult>,
    done: tokio::sync::oneshot::Sender<Result<Merged, GroupFailed>>,
}

/// What a request's merge answers: its items' results, the runs it ended, how many it accepted.
struct Merged {
    results: Vec<ItemResult>,
    ended: Vec<crate::engine::RunOutcome>,
    accepted: u64,
}

/// The merge of a group of requests failed: each of them answers the one error (its chain kept,
/// so that an unreachable database is still told apart).
#[derive(Debug, Clone)]
struct GroupFailed(Arc<anyhow::Error>);

impl std::fmt::Display for GroupFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("merging the events failed")
    }
}

impl std::error::Error for GroupFailed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some((*self.0).as_ref())
    }
}

pub async fn events(State(s): State<Arc<Shared>>, h: HeaderMap, body: Bytes) -> Result<Response, ApiError> {
    s.authorize(h.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()), Scope::Ingest)?;
    // The plain parser first (path tracking costs a third of the parse); a body it refuses is
    // parsed again for the answer, which names where it went wrong.
    let doc: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(_) => parse_json(&body)?,
    };
    let items = match doc {
        Value::Object(mut m) if m.contains_key("events") => match m.remove("events") {
            Some(Value::Array(a)) => a,
            _ => return Err(ApiError::BadRequest("field `events`: must be a list of events".into())),
        },
        // One event alone, as low-code HTTP nodes most easily send it.
        Value::Object(m) => vec![Value::Object(m)],
        Value::Array(a) => a,
        _ => return Err(ApiError::BadRequest("the body must be {\"events\": [...]}, a list of events, or one event".into())),
    };
    if items.len() > MAX_EVENTS {
        return Err(ApiError::BadRequest(format!("{} events in one request; at most {MAX_EVENTS}", items.len())));
    }
    let loaded = s.loaded();
    let redactor = loaded.config.redactor.clone();
    let max_payload = loaded.config.storage.max_payload_bytes;
    drop(loaded);

    let mut results: Vec<ItemResult> = Vec::with_capacity(items.len());
    let mut checked: Vec<(usize, Event)> = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        match check(&item, &redactor, max_payload) {
            Ok(mut e) => {
                let warning = e.warning.take();
                results.push(ItemResult { index: i, id: e.id.as_str().into(), result: "accepted", warning, error: None });
                checked.push((i, e));
            }
            Err(why) => {
                let id = match item {
                    Value::Object(mut m) => m.remove("id").unwrap_or(Value::Null),
                    _ => Value::Null,
                };
                results.push(reject(i, id, why))
            }
        }
    }

    let (done, merged) = tokio::sync::oneshot::channel();
    s.ingest_lock.waiting().push(Job { checked, results, done });
    // Spawned at once (no await since the push): the job is merged even if the client hangs up.
    let gate = s.clone();
    tokio::spawn(async move {
        let _here = gate.ingest_lock.lock.lock().await;
        if gate.ingest_lock.requests_waiting() > 0 {
            let inner = gate.clone();
            // Errors go to the requests merged (merge_waiting).
            let _ = gate.store.with_db_lock("ingest", async move || merge_waiting(inner).await).await;
        }
    });
    let Merged { results, ended, accepted } =
        merged.await.map_err(|_| anyhow::anyhow!("ingestion stopped before merging the request"))?.map_err(anyhow::Error::new)?;
    let alerter = s.loaded().alerter.clone();
    for o in &ended {
        s.metrics.run_finished(&o.flow, o.status.as_str(), o.error_kind.map(|k| k.as_str()));
        // An external run's final outcome alerts like a native one's.
        super::external::alert(&alerter, o).await;
    }
    let count = |r: &str| results.iter().filter(|v| v.result == r).count() as u64;
    let (duplicates, rejected) = (count("duplicate"), count("rejected"));
    s.metrics.ingested("accepted", accepted);
    s.metrics.ingested("duplicate", duplicates);
    s.metrics.ingested("rejected", rejected);
    Ok(Json(Answer { accepted, duplicates, rejected, results }).into_response())
}

/// The answer to a request: counts, and each item's result in the order sent.
#[derive(Serialize)]
struct Answer {
    accepted: u64,
    duplicates: u64,
    rejected: u64,
    results: Vec<ItemResult>,
}

impl Gate {
    fn waiting(&self) -> std::sync::MutexGuard<'_, Vec<Job>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Requests checked and waiting to be merged.
    pub fn requests_waiting(&self) -> usize {
        self.waiting().len()
    }

    fn flights(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Flight>>> {
        self.in_flight.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until no write in flight holds any of these runs or event ids (`None`: until none
    /// is in flight at all).
    async fn settle(&self, keys: Option<(&HashSet<String>, &[String])>) {
        let waits: Vec<_> = self
            .flights()
            .iter()
            .filter(|f| keys.is_none_or(|(runs, events)| !f.runs.is_disjoint(runs) || events.iter().any(|e| f.events.contains(e))))
            .map(|f| f.landed.subscribe())
            .collect();
        for mut w in waits {
            let _ = w.wait_for(|landed| *landed).await;
        }
    }

    fn take_off(&self, runs: HashSet<String>, events: Vec<String>) -> Arc<Flight> {
        let f = Arc::new(Flight { runs, events: events.into_iter().collect(), landed: tokio::sync::watch::channel(false).0 });
        self.flights().push(f.clone());
        f
    }

    fn land(&self, f: &Arc<Flight>) {
        self.flights().retain(|g| !Arc::ptr_eq(g, f));
        f.landed.send_replace(true);
    }
}

/// Takes every request waiting and merges them as one (none: a merge before this one took them).
async fn merge_waiting(s: Arc<Shared>) -> anyhow::Result<()> {
    let jobs = std::mem::take(&mut *s.ingest_lock.waiting());
    if jobs.is_empty() {
        return Ok(());
    }
    let (parts, dones): (Vec<Part>, Vec<_>) = jobs.into_iter().map(|j| ((j.checked, j.results), j.done)).unzip();
    // Kept to merge each request alone should the database refuse the group's write: one request
    // it refuses must not fail the others merged with it.
    let alone: Option<Vec<Part>> = (parts.len() > 1).then(|| parts.clone());
    let (merged, sent) = match merge(&s, parts).await {
        Ok(m) => m,
        Err(e) => {
            refused(&s, e, alone, dones).await;
            return Ok(());
        }
    };
    if s.store.backend() != crate::store::Backend::Sqlite {
        match sent.commit.await {
            Ok(()) => answer(&s, merged, &sent.attempts, dones),
            Err(e) => refused(&s, e, alone, dones).await,
        }
        return Ok(());
    }
    let flight = s.ingest_lock.take_off(sent.runs, sent.events);
    tokio::spawn(async move {
        let r = sent.commit.await;
        s.ingest_lock.land(&flight);
        match r {
            Ok(()) => answer(&s, merged, &sent.attempts, dones),
            // Merged again under the gate (as `exclusive` runs), this one no longer in flight.
            Err(e) => {
                let again = move |s: Arc<Shared>| -> futures::future::BoxFuture<'static, anyhow::Result<()>> {
                    Box::pin(async move {
                        refused(&s, e, alone, dones).await;
                        Ok(())
                    })
                };
                let _ = exclusive(&s, again).await;
            }
        }
    });
    Ok(())
}

/// Answers the requests of a group whose write is committed, and counts its attempts (only then:
/// a group the database refused is merged again request by request).
fn answer(s: &Shared, merged: Vec<Merged>, attempts: &[AttemptRecord], dones: Vec<Done>) {
    for a in attempts {
        s.metrics.attempt(a);
    }
    for (done, m) in dones.into_iter().zip(merged) {
        let _ = done.send(Ok(m));
    }
}

/// A group's merge or write failed: each request is merged alone (with ingestion to itself), so
/// that one the database refuses fails alone; while the database is away, each request alone
/// would wait out the patience again, so all answer the one error.
async fn refused(s: &Arc<Shared>, e: anyhow::Error, alone: Option<Vec<Part>>, dones: Vec<Done>) {
    match alone {
        Some(parts) if !super::api::store_unreachable(&e) => {
            tracing::warn!(error = %format!("{e:#}"), requests = dones.len(), "the database refused a group of ingestion requests; merging each alone");
            for (part, done) in parts.into_iter().zip(dones) {
                let r = async {
                    let (merged, sent) = merge(s, vec![part]).await?;
                    sent.commit.await?;
                    Ok((merged, sent.attempts))
                };
                match r.await {
                    Ok((merged, attempts)) => answer(s, merged, &attempts, vec![done]),
                    Err(e) => {
                        let _ = done.send(Err(GroupFailed(Arc::new(e))));
                    }
                }
            }
        }
        _ => {
            let e = GroupFailed(Arc::new(e));
            for done in dones {
                let _ = done.send(Err(e.clone()));
            }
        }
    }
}

type Done = tokio::sync::oneshot::Sender<Result<Merged, GroupFailed>>;

/// A merged write handed to the store: its commit, the attempts it records (counted in the
/// metrics once committed), and the runs and event ids it holds.
struct Sent {
    commit: futures::future::BoxFuture<'static, anyhow::Result<()>>,
    attempts: Vec<AttemptRecord>,
    runs: HashSet<String>,
    events: Vec<String>,
}

/// One request's checked events (with their index in the request) and its items' results.
type Part = (Vec<(usize, Event)>, Vec<ItemResult>);

/// Merges checked events into their runs and hands them to the store: reads the runs, applies the
/// events (request after request, each in its order), and writes runs, attempts, event ids and
/// the rollups of ended runs in one transaction. Runs with ingestion to itself (see
/// [`exclusive`]), after any write in flight that holds one of its runs or event ids.
async fn merge(s: &Arc<Shared>, parts: Vec<Part>) -> anyhow::Result<(Vec<Merged>, Sent)> {
    let mut ids: Vec<String> = Vec::new();
    let mut run_ids: HashSet<String> = HashSet::new();
    for (checked, _) in &parts {
        ids.extend(checked.iter().map(|(_, e)| e.id.clone()));
        run_ids.extend(checked.iter().map(|(_, e)| e.run_id.clone()));
    }
    s.ingest_lock.settle(Some((&run_ids, &ids))).await;
    let known = s.store.known_events(&ids).await?;
    let listed: Vec<String> = run_ids.iter().cloned().collect();
    let mut runs: HashMap<String, RunRecord> = s.store.runs_by_ids(&listed).await?.into_iter().map(|r| (r.id.clone(), r)).collect();
    let fresh = listed.into_iter().filter(|id| !runs.contains_key(id)).collect();
    let mut write = IngestWrite { fresh, ..Default::default() };
    let mut dirty: HashSet<String> = HashSet::new();
    let mut seen: HashSet<String> = HashSet::new();
    // Run id → the request whose run.finished ended it last (that request alerts on it).
    let mut finished: HashMap<String, usize> = HashMap::new();
    let mut out: Vec<Merged> = Vec::with_capacity(parts.len());
    for (job, (checked, mut results)) in parts.into_iter().enumerate() {
        let mut accepted = 0;
        for (i, e) in checked {
            if known.contains(&e.id) || !seen.insert(e.id.clone()) {
                results[i].result = "duplicate";
                continue;
            }
            if let Some(r) = runs.get(&e.run_id) {
                if r.flow != e.flow {
                    let why = format!("run `{}` belongs to flow `{}`, not `{}`", e.run_id, r.flow, e.flow);
                    results[i] = reject(i, e.id.into(), why);
                    continue;
                }
                if r.trigger != "external" {
                    let why = format!("run `{}` is a flowguard run, not an external one", e.run_id);
                    results[i] = reject(i, e.id.into(), why);
                    continue;
                }
            }
            let at = match &e.body {
                Body::RunStarted { at, .. } | Body::RunFinished { at, .. } | Body::NodeStarted { at } => *at,
                Body::NodeFinished(a) => a.started_at,
            };
            let run = runs.entry(e.run_id.clone()).or_insert_with(|| placeholder(&e, at));
            match e.body {
                Body::RunStarted { at, inputs } => {
                    run.started_at = run.started_at.min(at);
                    if inputs.is_some() {
                        run.inputs = inputs;
                    }
                }
                Body::NodeStarted { at } => run.started_at = run.started_at.min(at),
                Body::NodeFinished(a) => {
                    run.started_at = run.started_at.min(a.started_at);
                    write.attempts.push(*a);
                }
                Body::RunFinished { at, started_at, status, error_kind, error, failed_node } => {
                    if let Some(t) = started_at {
                        run.started_at = run.started_at.min(t);
                    }
                    run.status = status;
                    run.ended_at = Some(at);
                    run.duration_ms = Some((at - run.started_at).max(0));
                    run.error_kind = error_kind.map(|k| k.as_str().to_owned());
                    run.severity = error_kind.filter(|_| !status.is_success()).map(|k| k.default_severity().as_str().to_owned());
                    run.error_message = error;
                    run.failed_node = failed_node;
                    finished.insert(e.run_id.clone(), job);
                }
            }
            if let Some(end) = run.ended_at {
                run.duration_ms = Some((end - run.started_at).max(0));
            }
            accepted += 1;
            dirty.insert(e.run_id.clone());
            write.events.push((e.id, e.run_id));
        }
        out.push(Merged { results, ended: Vec::new(), accepted });
    }
    write.runs = dirty.iter().filter_map(|id| runs.remove(id)).collect();
    super::external::explain_failures(&s.store, &mut write).await?;
    for r in write.runs.iter().filter(|r| r.status.is_final()) {
        if let Some(job) = finished.get(&r.id) {
            out[*job].ended.push(super::external::outcome(r));
        }
    }
    let commit = Box::pin(s.store.send_ingest(&write, s.clock.now_ms()).await?);
    Ok((out, Sent { commit, attempts: write.attempts, runs: run_ids, events: ids }))
}

/// Runs `f` with ingestion to itself: no other merge in this process nor in any other process on
/// the database (the events of one run can reach two servers at once), in a task of its own, so
/// a client that hangs up cannot stop it half-way with the database lock held.
pub async fn exclusive<T: Send + 'static>(
    s: &Arc<Shared>,
    f: impl FnOnce(Arc<Shared>) -> futures::future::BoxFuture<'static, anyhow::Result<T>> + Send + 'static,
) -> anyhow::Result<T> {
    let s = s.clone();
    tokio::spawn(async move {
        let _here = s.ingest_lock.lock.lock().await;
        s.ingest_lock.settle(None).await;
        let inner = s.clone();
        s.store.with_db_lock("ingest", async move || f(inner).await).await
    })
    .await
    .map_err(|e| anyhow::anyhow!("ingestion stopped: {e}"))?
}

fn placeholder(e: &Event, at: i64) -> RunRecord {
    RunRecord {
        id: e.run_id.clone(),
        flow: e.flow.clone(),
        flow_hash: "external".into(),
        trigger: "external".into(),
        status: RunStatus::Running,
        canary: false,
        inputs: None,
        started_at: at,
        ended_at: None,
        duration_ms: None,
        failed_node: None,
        error_kind: None,
        error_message: None,
        severity: None,
    }
}

/// Times accepted: from 2000-01-01 to 2200-01-01 UTC (epoch milliseconds). Anything outside is
/// a client's bug (a zero, seconds taken for milliseconds twice, a overflowed counter) that would
/// otherwise sort first everywhere or break durations.
pub const MIN_TIME_MS: i64 = 946_684_800_000;
pub const MAX_TIME_MS: i64 = 7_258_118_400_000;
/// Longest node or run an event may describe.
pub const MAX_DURATION_MS: i64 = 30 * 24 * 3600 * 1000;

/// A time: epoch milliseconds, epoch seconds (a number below 10^11), or RFC 3339 text, within
/// [`MIN_TIME_MS`]..[`MAX_TIME_MS`].
fn time(v: &Value, field: &str) -> Result<i64, String> {
    let ms = match v {
        Value::Number(n) => {
            let f = n.as_f64().filter(|f| f.is_finite()).ok_or_else(|| format!("`{field}`: not a time"))?;
            if f < 0.0 {
                return Err(format!("`{field}`: a time cannot be negative"));
            }
            if f < 1e11 { f * 1000.0 } else { f }
        }
        Value::String(s) => s
            .parse::<jiff::Timestamp>()
            .map(|t| t.as_millisecond() as f64)
            .map_err(|e| format!("`{field}`: `{s}` is not an RFC 3339 time ({e})"))?,
        _ => return Err(format!("`{field}`: a time is epoch milliseconds or RFC 3339 text")),
    };
    if !(MIN_TIME_MS as f64..=MAX_TIME_MS as f64).contains(&ms) {
        return Err(format!("`{field}`: {v} is not a time between the years 2000 and 2200 (epoch milliseconds or seconds, or RFC 3339)"));
    }
    Ok(ms as i64)
}

/// Longest identifier (ids, names); longer text fields are free text.
const MAX_IDENT: usize = 191;

fn text<'a>(m: &'a Map<String, Value>, field: &str, max: usize) -> Result<Option<&'a str>, String> {
    match m.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) if s.len() > max => Err(format!("`{field}`: longer than {max} bytes")),
        // An identifier is matched as sent: one with a NUL could not be stored as it is.
        Some(Value::String(s)) if max <= MAX_IDENT && s.contains('\0') => Err(format!("`{field}`: contains a NUL character")),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("`{field}`: must be text")),
    }
}

fn required<'a>(m: &'a Map<String, Value>, field: &str, max: usize) -> Result<&'a str, String> {
    text(m, field, max)?.ok_or_else(|| format!("`{field}` is required"))
}

fn int(m: &Map<String, Value>, field: &str) -> Result<Option<i64>, String> {
    match m.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_i64().filter(|n| *n >= 0).map(Some).ok_or_else(|| format!("`{field}`: must be a whole number ≥ 0")),
    }
}

/// A payload as stored: redacted, cut at the size limit, with its full size.
fn payload(v: Option<&Value>, redactor: &crate::redact::Redactor, max: usize) -> (Option<String>, i64) {
    let Some(v) = v.filter(|v| !v.is_null()) else { return (None, 0) };
    let full = match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let size = full.len() as i64;
    let mut t = redactor.redact(&full);
    if t.len() > max {
        let mut cut = max;
        while !t.is_char_boundary(cut) {
            cut -= 1;
        }
        t.truncate(cut);
        t.push_str("…[truncated]");
    }
    (Some(t), size)
}

fn check(item: &Value, redactor: &crate::redact::Redactor, max_payload: usize) -> Result<Event, String> {
    let m = item.as_object().ok_or("an event must be a JSON object")?;
    let id = required(m, "id", 191)?.to_owned();
    let ty = required(m, "type", 64)?;
    let flow = required(m, "flow", 191)?;
    if !crate::flow::is_ident(flow) {
        return Err(format!("`flow`: `{flow}` is not a valid flow name (letters, digits, `_` and `-`)"));
    }
    let run_id = required(m, "run_id", 64)?.to_owned();
    let ts = |field: &str| m.get(field).filter(|v| !v.is_null()).map(|v| time(v, field)).transpose();
    let at = || ts("ts")?.ok_or_else(|| "`ts` (the time of the event) is required".to_owned());
    let error_kind = |field: &str| text(m, field, 64)?.map(|k| k.parse::<ErrorKind>()).transpose().map_err(|e| format!("`{field}`: {e}"));
    let message = |field: &str| text(m, field, 64 * 1024).map(|t| t.map(|t| redactor.redact(t)));
    let mut warning = None;
    let body = match ty {
        "run.started" => Body::RunStarted { at: at()?, inputs: payload(m.get("inputs"), redactor, max_payload).0 },
        "run.finished" => {
            let status: RunStatus = required(m, "status", 32)?.parse().map_err(|e| format!("`status`: {e}"))?;
            if !status.is_final() {
                return Err(format!("`status`: `{status}` is not a final run status"));
            }
            Body::RunFinished {
                at: at()?,
                started_at: ts("started_at")?,
                status,
                error_kind: error_kind("error_kind")?,
                error: message("error")?,
                failed_node: text(m, "failed_node", 191)?.map(str::to_owned),
            }
        }
        "node.started" => {
            required(m, "node", 191)?;
            Body::NodeStarted { at: at()? }
        }
        "node.finished" => {
            let node = required(m, "node", 191)?.to_owned();
            let status: AttemptStatus = required(m, "status", 32)?.parse().map_err(|e| format!("`status`: {e}"))?;
            let duration = int(m, "duration_ms")?;
            if let Some(d) = duration.filter(|d| *d > MAX_DURATION_MS) {
                return Err(format!("`duration_ms`: {d} is longer than {} days", MAX_DURATION_MS / 86_400_000));
            }
            let (started, ended) = match (ts("started_at")?, ts("ended_at")?.or(ts("ts")?), duration) {
                (Some(s), Some(e), _) => (s, e),
                (Some(s), None, Some(d)) => (s, s + d),
                (None, Some(e), Some(d)) => (e - d, e),
                (Some(_), None, None) => return Err("a node.finished event needs `ended_at` (or `ts`) or `duration_ms`".into()),
                _ => return Err("a node.finished event needs `started_at` or `duration_ms`, and `ended_at` (or `ts`)".into()),
            };
            if started > ended {
                return Err("`started_at` is after the end of the node".into());
            }
            if !(MIN_TIME_MS..=MAX_TIME_MS).contains(&started) {
                return Err("`duration_ms`: the node would have started before the year 2000".into());
            }
            if ended - started > MAX_DURATION_MS {
                return Err(format!("`started_at`: the node would have lasted longer than {} days", MAX_DURATION_MS / 86_400_000));
            }
            // All three given and disagreeing by more than a second (a hard-coded `duration_ms:
            // 0`): the two times win, and the answer says so. Within a second, `duration_ms` is
            // the finer measure (times may come in whole seconds).
            let span = ended - started;
            let (duration, reconciled) = match duration {
                Some(d) if ts("started_at")?.is_some() && (d - span).abs() > 1000 => {
                    (span, Some(format!("`duration_ms` {d} disagrees with `started_at`..`ended_at` ({span} ms); recorded {span} ms")))
                }
                Some(d) => (d, None),
                None => (span, None),
            };
            warning = reconciled;
            let kind = error_kind("error_kind")?;
            if kind.is_some() && status == AttemptStatus::Succeeded {
                return Err("`error_kind` on a succeeded node".into());
            }
            let (input, input_size) = payload(m.get("input"), redactor, max_payload);
            let (output, output_size) = payload(m.get("output"), redactor, max_payload);
            let attempt = int(m, "attempt")?.unwrap_or(1).max(1);
            Body::NodeFinished(Box::new(AttemptRecord {
                run_id: run_id.clone(),
                flow: flow.to_owned(),
                kind: text(m, "kind", 64)?.unwrap_or("external").to_owned(),
                // Attempts of an external run are ordered by their start.
                seq: int(m, "seq")?.unwrap_or(started),
                attempt,
                iteration: int(m, "iteration")?,
                status,
                started_at: started,
                ended_at: ended,
                duration_ms: duration,
                input_bytes: int(m, "input_bytes")?.unwrap_or(input_size),
                output_bytes: int(m, "output_bytes")?.unwrap_or(output_size),
                input,
                output,
                retried: m.get("retried").and_then(Value::as_bool).unwrap_or(false),
                action: None,
                error_kind: kind.map(|k| k.as_str().to_owned()),
                error_message: message("error")?,
                model: text(m, "model", 191)?.map(str::to_owned),
                tokens_in: int(m, "tokens_in")?,
                tokens_out: int(m, "tokens_out")?,
                http_status: int(m, "http_status")?,
                cost_nanos: None,
                currency: None,
                node_id: node,
            }))
        }
        other => {
            let hint = crate::flow::suggest(other, ["run.started", "run.finished", "node.started", "node.finished"])
                .map(|s| format!(" (did you mean `{s}`?)"))
                .unwrap_or_default();
            return Err(format!(
                "`type`: unknown event type `{other}`{hint}; expected run.started, run.finished, node.started or node.finished"
            ));
        }
    };
    Ok(Event { id, flow: flow.to_owned(), run_id, body, warning })
}
