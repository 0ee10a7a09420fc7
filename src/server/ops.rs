//! Operator routes of `/api/v1`: block and unblock flows, act on the manual queue, list and
//! acknowledge alerts, manage silences, read and send reports. Each calls the same library
//! functions as the CLI.

use super::Shared;
use super::api::{ApiError, ApiResult, auth, parse_json};
use super::config::Scope;
use crate::engine::manual::{self, Act, Acted};
use crate::store::{AlertFilter, FlowBlock, SilenceRecord};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;

/// `{by, note}` and the action's own fields; an empty body is fine.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    by: Option<String>,
    note: Option<String>,
    /// `skip`: the output the node is taken to have produced.
    output: Option<Value>,
    /// `retry`: the node to resume from (default: the failed node).
    from: Option<String>,
}

fn body(b: &Bytes) -> Result<Body, ApiError> {
    if b.iter().all(u8::is_ascii_whitespace) { Ok(Body::default()) } else { parse_json(b) }
}

fn manual_error(e: manual::ManualError) -> ApiError {
    use manual::ManualError::*;
    match e {
        NoTask(_) | RunGone(_) => ApiError::NotFound(e.to_string()),
        NotOpen { .. } | ClosedMeanwhile(_) | FlowNotLoaded(_) => ApiError::Conflict(e.to_string()),
        Store(e) => e.into(),
    }
}

/// Who acts: the body's `by`, else the name of the API token.
fn actor(body: &Body, token: String) -> String {
    body.by.clone().unwrap_or(token)
}

pub async fn block(State(s): State<Arc<Shared>>, h: HeaderMap, Path(name): Path<String>, b: Bytes) -> ApiResult {
    let token = auth(&s, &h, Scope::Operate)?;
    let b = body(&b)?;
    if !s.loaded().flows.contains_key(&name) {
        return Err(ApiError::NotFound(format!("no flow named `{name}`")));
    }
    let block =
        FlowBlock { flow: name.clone(), blocked_at: s.clock.now_ms(), run_id: None, reason: b.note.clone(), blocked_by: actor(&b, token) };
    s.store.block_flow(&block).await?;
    Ok(Json(json!({"flow": name, "blocked": true})).into_response())
}

pub async fn unblock(State(s): State<Arc<Shared>>, h: HeaderMap, Path(name): Path<String>, b: Bytes) -> ApiResult {
    let token = auth(&s, &h, Scope::Operate)?;
    let b = body(&b)?;
    if !s.store.unblock_flow(&name, &actor(&b, token), b.note.as_deref(), s.clock.now_ms()).await? {
        return Err(ApiError::NotFound(format!("flow `{name}` is not blocked")));
    }
    Ok(Json(json!({"flow": name, "blocked": false})).into_response())
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    all: bool,
    status: Option<String>,
    flow: Option<String>,
    limit: Option<i64>,
}

pub async fn manual_list(State(s): State<Arc<Shared>>, h: HeaderMap, Query(q): Query<ListQuery>) -> ApiResult {
    auth(&s, &h, Scope::Read)?;
    let tasks = s.store.manual_tasks(!q.all, q.limit.unwrap_or(200).clamp(1, 1000)).await?;
    Ok(Json(json!({"tasks": tasks})).into_response())
}

pub async fn manual_show(State(s): State<Arc<Shared>>, h: HeaderMap, Path(id): Path<String>) -> ApiResult {
    auth(&s, &h, Scope::Read)?;
    let task = s.store.manual_task(&id).await?.ok_or_else(|| ApiError::NotFound(format!("no manual task `{id}`")))?;
    let actions = s.store.manual_actions(&task.id).await?;
    Ok(Json(json!({"task": task, "actions": actions})).into_response())
}

/// `retry` and `skip` answer 202 at once and go on with the run in the background; `resolve` and
/// `abort` answer 200 when done.
pub async fn manual_act(State(s): State<Arc<Shared>>, h: HeaderMap, Path((id, action)): Path<(String, String)>, b: Bytes) -> ApiResult {
    let token = auth(&s, &h, Scope::Operate)?;
    let b = body(&b)?;
    let what = match action.as_str() {
        "retry" => Act::Retry(b.from.clone()),
        "skip" => Act::Skip(b.output.clone().ok_or_else(|| ApiError::BadRequest("`skip` needs `output`".into()))?),
        "resolve" => Act::Resolve,
        "abort" => Act::Abort,
        other => return Err(ApiError::NotFound(format!("no action `{other}`; expected retry, skip, resolve or abort"))),
    };
    let l = s.loaded();
    let engine = l.engine.clone();
    let flows = l.flows.clone();
    drop(l);
    let task = manual::open_task(&engine, &id).await.map_err(manual_error)?;
    let who = actor(&b, token);
    if let Act::Retry(_) | Act::Skip(_) = what {
        let run_id = task.run_id.clone();
        let task_id = task.id.clone();
        let logged = task_id.clone();
        tokio::spawn(async move {
            if let Err(e) = manual::act(&engine, &flows, task, what, &who, b.note).await {
                tracing::error!(error = %format!("{e:#}"), task = %logged, "a manual action failed");
            }
        });
        return Ok((
            StatusCode::ACCEPTED,
            Json(json!({"task": task_id, "action": action, "run_id": run_id, "url": format!("/api/v1/runs/{run_id}")})),
        )
            .into_response());
    }
    match manual::act(&engine, &flows, task, what, &who, b.note).await.map_err(manual_error)? {
        Acted::Closed { task, run_status } => {
            Ok(Json(json!({"task": task.id, "action": action, "run_id": task.run_id, "run_status": run_status})).into_response())
        }
        Acted::Resumed { task, outcome } => {
            Ok(Json(json!({"task": task.id, "run_id": outcome.run_id, "run_status": outcome.status})).into_response())
        }
    }
}

pub async fn alerts(State(s): State<Arc<Shared>>, h: HeaderMap, Query(q): Query<ListQuery>) -> ApiResult {
    auth(&s, &h, Scope::Read)?;
    let list =
        s.store.list_alerts(&AlertFilter { status: q.status, flow: q.flow, limit: Some(q.limit.unwrap_or(100).clamp(1, 1000)) }).await?;
    Ok(Json(json!({"alerts": list})).into_response())
}

pub async fn ack(State(s): State<Arc<Shared>>, h: HeaderMap, Path(id): Path<String>, b: Bytes) -> ApiResult {
    let token = auth(&s, &h, Scope::Operate)?;
    let b = body(&b)?;
    let alerter = s.loaded().alerter.clone();
    let acked = alerter.ack(&id, &actor(&b, token)).await?;
    if acked.is_empty() {
        return Err(ApiError::NotFound(format!("no open alert `{id}`")));
    }
    Ok(Json(json!({"acknowledged": acked})).into_response())
}

pub async fn resend(State(s): State<Arc<Shared>>, h: HeaderMap, Path(id): Path<String>) -> ApiResult {
    auth(&s, &h, Scope::Operate)?;
    let alerter = s.loaded().alerter.clone();
    let fresh = alerter.resend(&id).await.map_err(|e| match e {
        crate::alert::ResendError::NotFound(_) => ApiError::NotFound(e.to_string()),
        crate::alert::ResendError::Store(e) => ApiError::from(e),
        e => ApiError::BadRequest(e.to_string()),
    })?;
    Ok(Json(json!({"notification": fresh})).into_response())
}

pub async fn silences(State(s): State<Arc<Shared>>, h: HeaderMap, Query(q): Query<ListQuery>) -> ApiResult {
    auth(&s, &h, Scope::Read)?;
    let list = s.store.silences(s.clock.now_ms(), q.all).await?;
    Ok(Json(json!({"silences": list})).into_response())
}

/// Longest silence: a longer one is a typo, and would overflow the end time.
const MAX_SILENCE: std::time::Duration = std::time::Duration::from_secs(366 * 24 * 3600);

/// A silence's length, as the API and the CLI accept it: from 1 second to 366 days.
pub fn silence_duration(text: &str) -> Result<std::time::Duration, String> {
    let d = crate::config::parse_duration(text)?;
    if d.is_zero() || d > MAX_SILENCE {
        return Err(format!("`{text}` is not between 1s and 366 days"));
    }
    Ok(d)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewSilence {
    /// label → value, e.g. `{"flow": "douyin_script", "error_kind": "timeout"}`.
    matchers: BTreeMap<String, String>,
    /// e.g. `2h`.
    duration: String,
    comment: Option<String>,
    by: Option<String>,
}

pub async fn silence_add(State(s): State<Arc<Shared>>, h: HeaderMap, b: Bytes) -> ApiResult {
    let token = auth(&s, &h, Scope::Operate)?;
    let n: NewSilence = parse_json(&b)?;
    if n.matchers.is_empty() {
        return Err(ApiError::BadRequest("`matchers` needs at least one label".into()));
    }
    if let Some(k) = n.matchers.keys().find(|k| !crate::alert::config::GROUP_LABELS.contains(&k.as_str())) {
        return Err(ApiError::BadRequest(format!(
            "unknown label `{k}`; expected one of: {}",
            crate::alert::config::GROUP_LABELS.join(", ")
        )));
    }
    let d = silence_duration(&n.duration).map_err(|e| ApiError::BadRequest(format!("`duration`: {e}")))?;
    let now = s.clock.now_ms();
    let rec = SilenceRecord {
        id: uuid::Uuid::now_v7().to_string(),
        matchers: serde_json::to_string(&n.matchers).map_err(|e| ApiError::Internal(e.to_string()))?,
        comment: n.comment,
        created_by: Some(n.by.unwrap_or(token)),
        created_at: now,
        ends_at: now + d.as_millis() as i64,
        expired_at: None,
    };
    s.store.insert_silence(&rec).await?;
    Ok((StatusCode::CREATED, Json(json!({"silence": rec}))).into_response())
}

pub async fn silence_expire(State(s): State<Arc<Shared>>, h: HeaderMap, Path(id): Path<String>) -> ApiResult {
    auth(&s, &h, Scope::Operate)?;
    let n = s.store.expire_silence(&id, s.clock.now_ms()).await?;
    if n == 0 {
        return Err(ApiError::NotFound(format!("no active silence `{id}`")));
    }
    Ok(Json(json!({"expired": id})).into_response())
}

pub async fn report_show(State(s): State<Arc<Shared>>, h: HeaderMap, Path((kind, period)): Path<(String, String)>) -> ApiResult {
    auth(&s, &h, Scope::Read)?;
    let Some((body, markdown, sent_at)) = s.store.load_report(&kind, &period).await? else {
        return Err(ApiError::NotFound(format!("no stored {kind} report for `{period}`")));
    };
    let report: Value = serde_json::from_str(&body).unwrap_or(Value::String(body));
    Ok(Json(json!({"kind": kind, "period": period, "sent_at": sent_at, "report": report, "markdown": markdown})).into_response())
}

/// Sends the latest due-or-not report of `kind` (`daily`: yesterday; `weekly`: last week) now.
pub async fn report_send(State(s): State<Arc<Shared>>, h: HeaderMap, Path(kind): Path<String>) -> ApiResult {
    auth(&s, &h, Scope::Operate)?;
    let kind = match kind.as_str() {
        "daily" => crate::report::schedule::Kind::Daily,
        "weekly" => crate::report::schedule::Kind::Weekly,
        other => return Err(ApiError::NotFound(format!("no report kind `{other}`; expected daily or weekly"))),
    };
    let l = s.loaded();
    let ctx = crate::report::ReportCtx::new(s.store.clone(), &l.config, &l.flows);
    let sink = crate::report::outbox::OutboxSink::new(l.alerter.clone(), &l.config);
    drop(l);
    let now = s.clock.now_ms();
    let fire = jiff::Timestamp::from_millisecond(now).map_err(|e| ApiError::Internal(e.to_string()))?.to_zoned(ctx.tz.clone());
    let period = crate::report::schedule::period_for(kind, &fire);
    let (_, rendered) = crate::report::generate(&ctx, &period, now).await?;
    let sent = crate::report::deliver(&ctx, &period, &rendered, &sink, now).await?;
    Ok(Json(json!({"kind": period.kind.as_str(), "period": period.key, "sent": sent, "title": rendered.title})).into_response())
}
