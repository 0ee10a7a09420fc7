//! The HTTP routes: health checks, metrics, and `/api/v1` (JSON, bearer tokens with scopes). The
//! route table below is the one place routes are added; `openapi.json` beside this file documents
//! every one of them (a test checks that it does).

use super::config::Scope;
use super::{Shared, ops};
use crate::scheduler::runs::Launch;
use crate::store::{Cursor, RunFilter};
use crate::vocab::RunStatus;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

pub const OPENAPI: &str = include_str!("openapi.json");

/// Every route served, as (method, path in OpenAPI form).
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/api/v1/openapi.json"),
    ("get", "/api/v1/health"),
    ("get", "/api/v1/flows"),
    ("get", "/api/v1/flows/{name}"),
    ("post", "/api/v1/flows/{name}/runs"),
    ("get", "/api/v1/runs"),
    ("get", "/api/v1/runs/{id}"),
    ("get", "/api/v1/stats"),
    ("post", "/api/v1/events"),
    ("post", "/api/v1/flows/{name}/block"),
    ("post", "/api/v1/flows/{name}/unblock"),
    ("get", "/api/v1/manual"),
    ("get", "/api/v1/manual/{id}"),
    ("post", "/api/v1/manual/{id}/{action}"),
    ("get", "/api/v1/alerts"),
    ("post", "/api/v1/alerts/{id}/ack"),
    ("get", "/api/v1/silences"),
    ("post", "/api/v1/silences"),
    ("post", "/api/v1/silences/{id}/expire"),
    ("get", "/api/v1/reports/{kind}/{period}"),
    ("post", "/api/v1/reports/{kind}/send"),
];

pub fn router(shared: Arc<Shared>) -> Router {
    let cfg = shared.loaded().config.server.clone();
    let timeout = crate::flow::parse_duration(&cfg.request_timeout).unwrap_or(Duration::from_secs(30));
    let api = Router::new()
        .route("/openapi.json", get(openapi))
        .route("/health", get(health))
        .route("/flows", get(flows))
        .route("/flows/{name}", get(flow))
        .route("/flows/{name}/runs", post(trigger))
        .route("/flows/{name}/block", post(ops::block))
        .route("/flows/{name}/unblock", post(ops::unblock))
        .route("/runs", get(runs))
        .route("/runs/{id}", get(run))
        .route("/stats", get(stats))
        .route("/events", post(super::ingest::events))
        .route("/manual", get(ops::manual_list))
        .route("/manual/{id}", get(ops::manual_show))
        .route("/manual/{id}/{action}", post(ops::manual_act))
        .route("/alerts", get(ops::alerts))
        .route("/alerts/{id}/ack", post(ops::ack))
        .route("/silences", get(ops::silences).post(ops::silence_add))
        .route("/silences/{id}/expire", post(ops::silence_expire))
        .route("/reports/{kind}/{period}", get(ops::report_show))
        .route("/reports/{kind}/send", post(ops::report_send));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .nest("/api/v1", api)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(cfg.max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(timeout, time_limit))
        .with_state(shared)
}

async fn time_limit(State(limit): State<Duration>, req: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(r) => r,
        Err(_) => ApiError::Unavailable(format!("the request took longer than {}", humantime::format_duration(limit))).into_response(),
    }
}

/// An answer that is not a success, as JSON `{"error": …}` with the right status.
#[derive(Debug)]
pub enum ApiError {
    Unauthorized,
    Forbidden,
    RateLimited(u64),
    BadRequest(String),
    NotFound(String),
    Unavailable(String),
    Internal(String),
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        tracing::error!(error = %format!("{e:#}"), "request failed");
        ApiError::Internal("internal error; see the server log".into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, msg) = match self {
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized".to_owned()),
            ApiError::Forbidden => (StatusCode::FORBIDDEN, "forbidden".to_owned()),
            ApiError::RateLimited(s) => {
                let mut r = (StatusCode::TOO_MANY_REQUESTS, Json(json!({"error": "rate limited"}))).into_response();
                r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(s));
                return r;
            }
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, m),
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, m),
            ApiError::Unavailable(m) => (StatusCode::SERVICE_UNAVAILABLE, m),
            ApiError::Internal(m) => (StatusCode::INTERNAL_SERVER_ERROR, m),
        };
        let mut r = (status, Json(json!({"error": msg}))).into_response();
        if status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        r
    }
}

pub(super) type ApiResult = Result<Response, ApiError>;

pub(super) fn auth(s: &Shared, h: &HeaderMap, scope: Scope) -> Result<String, ApiError> {
    s.authorize(h.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()), scope)
}

/// Parses a JSON body; an error names the line and column, and the field, where it broke.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize::<_, T>(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let at = if path.is_empty() || path == "." { String::new() } else { format!(" (field `{path}`)") };
        ApiError::BadRequest(format!("invalid JSON at line {}, column {}{at}: {inner}", inner.line(), inner.column()))
    })?;
    de.end().map_err(|e| ApiError::BadRequest(format!("invalid JSON at line {}, column {}: {e}", e.line(), e.column())))?;
    Ok(value)
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such route; see /api/v1/openapi.json".into())
}

async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Ready: the database answers with every migration applied, and the scheduler loop is alive.
async fn readyz(State(s): State<Arc<Shared>>) -> Response {
    let db = match s.store.schema_current().await {
        Ok(true) => "ok".to_owned(),
        Ok(false) => "migrations missing".to_owned(),
        Err(e) => format!("unreachable: {}", s.loaded().config.redactor.redact(&e.to_string())),
    };
    let beat = s.scheduler_beat.load(Ordering::Relaxed);
    let scheduler = if s.clock.now_ms() - beat <= 10_000 { "ok" } else { "stalled" };
    let ready = db == "ok" && scheduler == "ok";
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(json!({"ready": ready, "database": db, "scheduler": scheduler}))).into_response()
}

/// Notifications stored and not yet `sent` or `dead`.
async fn outbox_backlog(store: &crate::store::Store) -> anyhow::Result<i64> {
    Ok(store.notification_counts().await?.into_iter().filter(|(status, _)| status != "sent" && status != "dead").map(|(_, n)| n).sum())
}

async fn metrics(State(s): State<Arc<Shared>>) -> Response {
    let backlog = outbox_backlog(&s.store).await.unwrap_or(-1);
    let notifications = s.store.notification_counts_by_channel().await.unwrap_or_default();
    let body = s.metrics.render(backlog, &notifications);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body).into_response()
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

/// Per flow: last run, last canary, blocked, outbox backlog.
async fn health(State(s): State<Arc<Shared>>, h: HeaderMap) -> ApiResult {
    auth(&s, &h, Scope::Read)?;
    let l = s.loaded();
    let mut flows = Vec::new();
    for name in l.flows.keys() {
        let last = s.store.last_run(name, false).await?;
        let canary = s.store.last_run(name, true).await?;
        let block = s.store.flow_block(name).await?;
        flows.push(json!({
            "flow": name,
            "last_run": last.map(|r| json!({"id": r.id, "status": r.status, "started_at": r.started_at, "ended_at": r.ended_at})),
            "last_canary": canary.map(|r| json!({"id": r.id, "status": r.status, "started_at": r.started_at, "ok": r.status.is_success()})),
            "running": s.runs.active_count(name),
            "blocked": block.is_some(),
            "block": block.map(|b| json!({"since": b.blocked_at, "by": b.blocked_by, "reason": b.reason, "run_id": b.run_id})),
        }));
    }
    Ok(Json(json!({
        "status": "ok",
        "started_at": s.started_ms,
        "reload_error": s.reload_error.lock().expect("reload error").clone(),
        "outbox_backlog": outbox_backlog(&s.store).await?,
        "flows": flows,
    }))
    .into_response())
}

fn flow_json(f: &crate::flow::Flow) -> Value {
    json!({
        "name": f.name,
        "description": f.description,
        "version": f.hash,
        "nodes": f.nodes.iter().map(|n| json!({"id": n.id, "kind": n.kind})).collect::<Vec<_>>(),
        "inputs": f.inputs,
        "schedule": f.serve.schedule.as_ref().map(|s| json!({"cron": s.cron.pattern.to_string(), "overlap": format!("{:?}", s.overlap).to_lowercase(), "catch_up": s.catch_up})),
        "canary": f.serve.canary.as_ref().map(|c| json!({"cron": c.cron.pattern.to_string()})),
        "on_interrupt": format!("{:?}", f.serve.on_interrupt).to_lowercase(),
        "concurrency": f.serve.concurrency,
    })
}

async fn flows(State(s): State<Arc<Shared>>, h: HeaderMap) -> ApiResult {
    auth(&s, &h, Scope::Read)?;
    let l = s.loaded();
    Ok(Json(json!({"flows": l.flows.values().map(|f| flow_json(f)).collect::<Vec<_>>()})).into_response())
}

async fn flow(State(s): State<Arc<Shared>>, h: HeaderMap, Path(name): Path<String>) -> ApiResult {
    auth(&s, &h, Scope::Read)?;
    let l = s.loaded();
    let f = l.flows.get(&name).ok_or_else(|| ApiError::NotFound(format!("no flow named `{name}`")))?;
    Ok(Json(flow_json(f)).into_response())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TriggerBody {
    #[serde(default)]
    inputs: Map<String, Value>,
}

/// Queues a run; answers its id once the run is recorded.
async fn trigger(State(s): State<Arc<Shared>>, h: HeaderMap, Path(name): Path<String>, body: Bytes) -> ApiResult {
    auth(&s, &h, Scope::Operate)?;
    let body: TriggerBody = if body.iter().all(u8::is_ascii_whitespace) { TriggerBody::default() } else { parse_json(&body)? };
    let flow = s.loaded().flows.get(&name).cloned().ok_or_else(|| ApiError::NotFound(format!("no flow named `{name}`")))?;
    let l = Launch { flow, inputs: body.inputs, trigger: "api".into(), canary: false, overlap: None };
    let id = s.queue(l).await?.ok_or_else(|| ApiError::Internal("the run was not started".into()))?;
    Ok((StatusCode::ACCEPTED, Json(json!({"run_id": id, "status": "queued", "url": format!("/api/v1/runs/{id}")}))).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RunsQuery {
    flow: Option<String>,
    status: Option<String>,
    since: Option<String>,
    limit: Option<i64>,
    cursor: Option<String>,
    #[serde(default)]
    canary: bool,
}

async fn runs(
    State(s): State<Arc<Shared>>,
    h: HeaderMap,
    q: Result<Query<RunsQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult {
    auth(&s, &h, Scope::Read)?;
    let Query(q) = q.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let status = q.status.as_deref().map(str::parse::<RunStatus>).transpose().map_err(ApiError::BadRequest)?;
    let since_ms = match q.since.as_deref() {
        Some(t) => {
            let tz = s.loaded().config.time_zone();
            Some(crate::cli::parse_since(t, s.clock.now_ms(), &tz).map_err(|f| ApiError::BadRequest(format!("since: {:#}", f.error)))?)
        }
        None => None,
    };
    let cursor = q
        .cursor
        .as_deref()
        .map(|c| Cursor::decode(c).ok_or_else(|| ApiError::BadRequest("cursor: not a cursor this API gave".into())))
        .transpose()?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::BadRequest("limit: between 1 and 500".into()));
    }
    let f = RunFilter { flow: q.flow, status, since_ms, include_canary: q.canary, ..Default::default() };
    let (runs, next) = s.store.runs_page(&f, cursor.as_ref(), limit).await?;
    Ok(Json(json!({"runs": runs, "next_cursor": next.map(|c| c.encode())})).into_response())
}

async fn run(State(s): State<Arc<Shared>>, h: HeaderMap, Path(id): Path<String>) -> ApiResult {
    auth(&s, &h, Scope::Read)?;
    match s.store.get_run(&id).await? {
        Some(r) => {
            let attempts = s.store.attempts(&id).await?;
            let mut v = serde_json::to_value(&r).map_err(|e| ApiError::Internal(e.to_string()))?;
            v["attempts"] = serde_json::to_value(&attempts).map_err(|e| ApiError::Internal(e.to_string()))?;
            Ok(Json(v).into_response())
        }
        None if s.runs.is_queued(&id) => Ok(Json(json!({"id": id, "status": "queued", "attempts": []})).into_response()),
        None => Err(ApiError::NotFound(format!("no run `{id}`"))),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StatsQuery {
    flow: Option<String>,
    since: Option<String>,
}

async fn stats(
    State(s): State<Arc<Shared>>,
    h: HeaderMap,
    q: Result<Query<StatsQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult {
    auth(&s, &h, Scope::Read)?;
    let Query(q) = q.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let now = s.clock.now_ms();
    let tz = s.loaded().config.time_zone();
    let since = crate::cli::parse_since(q.since.as_deref().unwrap_or("7d"), now, &tz)
        .map_err(|f| ApiError::BadRequest(format!("since: {:#}", f.error)))?;
    let stats = crate::stats::collect(&s.store, q.flow.as_deref(), since, now + 1).await?;
    Ok(Json(stats).into_response())
}
