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
    ("post", "/api/v1/notifications/{id}/resend"),
    ("get", "/api/v1/silences"),
    ("post", "/api/v1/silences"),
    ("post", "/api/v1/silences/{id}/expire"),
    ("get", "/api/v1/reports/{kind}/{period}"),
    ("post", "/api/v1/reports/{kind}/send"),
];

pub fn router(shared: Arc<Shared>) -> Router {
    let cfg = shared.loaded().config.server.clone();
    let timeout = cfg.request_timeout.get();
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
        .route("/notifications/{id}/resend", post(ops::resend))
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
        .layer(axum::middleware::from_fn_with_state(Arc::new(tokio::sync::Semaphore::new(cfg.read_concurrency.max(1))), admit_reads))
        .layer(axum::middleware::from_fn_with_state(timeout, time_limit))
        .layer(axum::middleware::from_fn_with_state(shared.clone(), store_guard))
        .layer(axum::middleware::from_fn(json_errors))
        .with_state(shared)
}

/// Reads of the API take a turn (first come, first served) so that any number of readers share
/// the database and the CPU in bounded number, and never starve writes, which do not queue here.
/// A reader that waits longer than the request timeout is answered 503 by [`time_limit`].
async fn admit_reads(State(turns): State<Arc<tokio::sync::Semaphore>>, req: Request, next: Next) -> Response {
    let is_read = req.method() == axum::http::Method::GET && req.uri().path().starts_with("/api/v1/");
    let _turn = if is_read { turns.acquire().await.ok() } else { None };
    next.run(req).await
}

async fn time_limit(State(limit): State<Duration>, req: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(r) => r,
        Err(_) => ApiError::Unavailable(format!("the request took longer than {}", humantime::format_duration(limit))).into_response(),
    }
}

/// An answer that is not a success. Every error of the API, whichever layer makes it, has one
/// shape: `{"error": "<what went wrong>", "code": "<stable kind>"}` ([`json_errors`] rewrites
/// the plain-text answers of axum's own extractors and limits into it).
#[derive(Debug)]
pub enum ApiError {
    Unauthorized,
    Forbidden,
    RateLimited(u64),
    BadRequest(String),
    NotFound(String),
    /// The request is valid but the state it acts on has moved on (e.g. a task already closed).
    Conflict(String),
    Unavailable(String),
    /// The database is known to be unreachable: try again after this many seconds.
    StoreDown(u64),
    Internal(String),
}

/// Marks an answer given because the database could not be reached, so [`store_guard`] knows.
#[derive(Clone, Copy)]
struct StoreUnreachable;

/// Seconds a client is asked to wait while the database is away.
const STORE_RETRY_AFTER: u64 = 5;

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        if store_unreachable(&e) {
            tracing::warn!(error = %format!("{e:#}"), "the database cannot be reached");
            return ApiError::StoreDown(STORE_RETRY_AFTER);
        }
        tracing::error!(error = %format!("{e:#}"), "request failed");
        ApiError::Internal("internal error; see the server log".into())
    }
}

/// The error means the database is away (not that a statement was wrong).
pub(super) fn store_unreachable(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<sqlx::Error>().is_some_and(crate::store::Pool::is_unreachable)
            // The store's writer answers with its message once its patience is spent.
            || c.to_string().contains("did not accept the write within")
    })
}

/// The stable `code` of an HTTP status.
fn code_of(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "bad_request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        405 => "method_not_allowed",
        408 => "request_timeout",
        413 => "payload_too_large",
        415 => "unsupported_media_type",
        422 => "unprocessable",
        429 => "rate_limited",
        503 => "unavailable",
        500..=599 => "internal",
        _ => "error",
    }
}

fn error_response(status: StatusCode, message: String) -> Response {
    (status, Json(json!({"error": message, "code": code_of(status)}))).into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, msg, retry) = match self {
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized".to_owned(), None),
            ApiError::Forbidden => (StatusCode::FORBIDDEN, "forbidden".to_owned(), None),
            ApiError::RateLimited(s) => (StatusCode::TOO_MANY_REQUESTS, "rate limited".to_owned(), Some(s)),
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, m, None),
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, m, None),
            ApiError::Unavailable(m) => (StatusCode::SERVICE_UNAVAILABLE, m, None),
            ApiError::StoreDown(s) => {
                let mut r = error_response(StatusCode::SERVICE_UNAVAILABLE, "the database cannot be reached; try again later".into());
                r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(s));
                r.extensions_mut().insert(StoreUnreachable);
                return r;
            }
            ApiError::Conflict(m) => (StatusCode::CONFLICT, m, None),
            ApiError::Internal(m) => (StatusCode::INTERNAL_SERVER_ERROR, m, None),
        };
        let mut r = error_response(status, msg);
        if let Some(s) = retry {
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        if status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        r
    }
}

/// Rewrites an error answer that is not JSON (axum's extractor rejections, the body limit's 413,
/// 405) into the API's error shape, keeping its status, headers and message.
async fn json_errors(req: Request, next: Next) -> Response {
    let r = next.run(req).await;
    let status = r.status();
    let is_json = r.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return r;
    }
    let (mut parts, body) = r.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024).await.map(|b| String::from_utf8_lossy(&b).trim().to_owned()).unwrap_or_default();
    let message = if text.is_empty() { status.canonical_reason().unwrap_or("error").to_lowercase() } else { text };
    let fresh = error_response(status, message);
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Response::from_parts(parts, fresh.into_body())
}

/// Whether the database is known to be away: set by an answer that found it unreachable,
/// cleared by a probe that finds it back. Meanwhile requests that need it are answered 503 with
/// `Retry-After` at once, instead of each waiting out the connect timeout.
#[derive(Default)]
pub struct StoreHealth {
    down: std::sync::atomic::AtomicBool,
}

impl StoreHealth {
    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::Relaxed)
    }

    /// Marks the database away and, the first time, starts probing it once a second.
    fn mark_down(shared: &Arc<Shared>) {
        if shared.store_health.down.swap(true, Ordering::Relaxed) {
            return;
        }
        let s = shared.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let probe = s.store.pool().fetch("SELECT 1", &[], &[crate::store::Ty::I64]);
                if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(2), probe).await {
                    s.store_health.down.store(false, Ordering::Relaxed);
                    tracing::info!("the database answers again");
                    return;
                }
            }
        });
    }
}

/// Answers 503 at once while the database is known to be away; learns that it is from answers.
async fn store_guard(State(s): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    // Liveness, metrics and the API document do not need the database to answer.
    let needs_store = !matches!(path, "/healthz" | "/metrics" | "/api/v1/openapi.json");
    if needs_store && s.store_health.is_down() {
        return ApiError::StoreDown(STORE_RETRY_AFTER).into_response();
    }
    let r = next.run(req).await;
    if r.extensions().get::<StoreUnreachable>().is_some() {
        StoreHealth::mark_down(&s);
    }
    r
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
    let mut body = s.metrics.render(backlog, &notifications);
    let breakers = s.loaded().engine.reg.breakers.clone();
    // Bounded: /metrics answers while the database is away, without the breakers then.
    let status = tokio::time::timeout(std::time::Duration::from_secs(2), breakers.status(&s.store, s.clock.now_ms())).await;
    if let Ok(Ok(b)) = status {
        super::metrics::Metrics::render_breakers(&mut body, &b);
    }
    let exporters = s.loaded().config.exporters.clone();
    let sinks = tokio::time::timeout(std::time::Duration::from_secs(2), crate::export::status(&s.store, &exporters)).await;
    if let Ok(Ok(sinks)) = sinks {
        body.push_str(&crate::export::render_metrics(&sinks));
    }
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
    let breakers = l.engine.reg.breakers.clone();
    let models = breakers.status(&s.store, s.clock.now_ms()).await?;
    let degraded = models.iter().any(|m| m.state != "closed");
    Ok(Json(json!({
        "status": if degraded { "degraded" } else { "ok" },
        "started_at": s.started_ms,
        "models": models,
        "reload_error": s.reload_error.lock().expect("reload error").clone(),
        "outbox_backlog": outbox_backlog(&s.store).await?,
        "exporters": crate::export::status(&s.store, &l.config.exporters).await?,
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
            Some(crate::app::parse_since(t, s.clock.now_ms(), &tz).map_err(|e| ApiError::BadRequest(format!("since: {e}")))?)
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
            v["cost"] = serde_json::to_value(crate::stats::run_cost(&attempts)).map_err(|e| ApiError::Internal(e.to_string()))?;
            v["attempts"] = serde_json::to_value(&attempts).map_err(|e| ApiError::Internal(e.to_string()))?;
            Ok(Json(v).into_response())
        }
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
    let since =
        crate::app::parse_since(q.since.as_deref().unwrap_or("7d"), now, &tz).map_err(|e| ApiError::BadRequest(format!("since: {e}")))?;
    let stats = crate::stats::collect(&s.store, q.flow.as_deref(), since, now + 1).await?;
    Ok(Json(stats).into_response())
}
