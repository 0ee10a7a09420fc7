//! A fake Feishu open platform for Bitable: `tenant_access_token/internal` (app_id + app_secret,
//! `expire` 7200; tokens can be expired on demand, then calls answer 99991663), the table's
//! `fields` (list with paging, create), and `records/batch_create` the way Feishu judges it, with
//! the codes of its Bitable error tables (see `flowguard::export::bitable::judge` for the
//! sources): the body `code`, at most 500 records a call (1254104), unknown field names
//! (1254045), values of the wrong type for the field (1254015; dates in ms, URL as
//! `{link, text}`), `client_token` idempotency (the same token answers the first call's result and
//! adds nothing), the table's rate limit (HTTP 200, code 1254290), the open platform's rate limit
//! (HTTP 429, code 99991400, `x-ogw-ratelimit-reset`), data not ready (HTTP 400, 1254607), down
//! (503), and an answer lost after the write: a 504 once the records are in, or no answer at all
//! (the client times out).

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

pub const APP_ID: &str = "cli_a1b2c3d4e5f6";
pub const APP_SECRET: &str = "feishu-app-secret-7d6c5b4a3f2e";
pub const APP_TOKEN: &str = "bascnFlowguardTest";
pub const TABLE: &str = "tblFlowguard01";

#[derive(Default)]
pub struct Inner {
    pub tokens_issued: AtomicUsize,
    valid: Mutex<BTreeSet<String>>,
    /// field name → type.
    pub fields: Mutex<BTreeMap<String, u64>>,
    pub records: Mutex<Vec<Value>>,
    client_tokens: Mutex<HashMap<String, Value>>,
    down: AtomicBool,
    limited: AtomicUsize,
    throttled: AtomicUsize,
    not_ready: AtomicUsize,
    lose_answer: AtomicUsize,
    hang_answer: AtomicUsize,
    pub calls: AtomicUsize,
}

#[derive(Clone)]
pub struct FakeFeishuOpen {
    pub url: String,
    pub inner: Arc<Inner>,
}

fn code(status: StatusCode, code: i64, msg: &str) -> Response {
    (status, axum::Json(json!({"code": code, "msg": msg}))).into_response()
}

fn bearer_ok(s: &Inner, h: &HeaderMap) -> bool {
    let t = h.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer ")).unwrap_or("");
    s.valid.lock().unwrap().contains(t)
}

async fn token(State(s): State<Arc<Inner>>, body: Bytes) -> Response {
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if v["app_id"] != APP_ID || v["app_secret"] != APP_SECRET {
        return code(StatusCode::OK, 10014, "app secret invalid");
    }
    let n = s.tokens_issued.fetch_add(1, Ordering::SeqCst);
    let t = format!("t-g1044{n:04}FAKETOKEN");
    s.valid.lock().unwrap().insert(t.clone());
    axum::Json(json!({"code": 0, "msg": "ok", "tenant_access_token": t, "expire": 7200})).into_response()
}

fn table_ok(app: &str, table: &str) -> bool {
    app == APP_TOKEN && table == TABLE
}

async fn list_fields(
    State(s): State<Arc<Inner>>,
    h: HeaderMap,
    Path((app, table)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if !bearer_ok(&s, &h) {
        return code(
            StatusCode::BAD_REQUEST,
            99991663,
            "Invalid access token for authorization. Please make a request with token attached.",
        );
    }
    if !table_ok(&app, &table) {
        return code(StatusCode::OK, 1254004, "WrongTableId");
    }
    let size: usize = q.get("page_size").and_then(|p| p.parse().ok()).unwrap_or(20).min(5);
    let start: usize = q.get("page_token").and_then(|p| p.parse().ok()).unwrap_or(0);
    let fields = s.fields.lock().unwrap().clone();
    let items: Vec<Value> =
        fields.iter().skip(start).take(size).map(|(n, t)| json!({"field_name": n, "type": t, "field_id": format!("fld{n}")})).collect();
    let more = start + size < fields.len();
    axum::Json(json!({"code": 0, "msg": "success", "data": {"items": items, "has_more": more, "page_token": (start + size).to_string(), "total": fields.len()}})).into_response()
}

async fn create_field(State(s): State<Arc<Inner>>, h: HeaderMap, Path((app, table)): Path<(String, String)>, body: Bytes) -> Response {
    if !bearer_ok(&s, &h) {
        return code(StatusCode::BAD_REQUEST, 99991663, "Invalid access token for authorization.");
    }
    if !table_ok(&app, &table) {
        return code(StatusCode::OK, 1254004, "WrongTableId");
    }
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let (Some(name), Some(ty)) = (v["field_name"].as_str(), v["type"].as_u64()) else {
        return code(StatusCode::BAD_REQUEST, 1254001, "WrongRequestBody");
    };
    if ![1, 2, 3, 5, 7, 15].contains(&ty) {
        return code(StatusCode::BAD_REQUEST, 1254080, "field type not supported here");
    }
    if ty == 3 && v["property"]["options"].as_array().is_none_or(|o| o.is_empty()) {
        // Allowed by Feishu; the fake asks for options so the test sees them sent.
        return code(StatusCode::BAD_REQUEST, 1254001, "single select without options");
    }
    let mut f = s.fields.lock().unwrap();
    if f.contains_key(name) {
        return code(StatusCode::BAD_REQUEST, 1254014, "FieldNameDuplicated");
    }
    f.insert(name.to_owned(), ty);
    axum::Json(json!({"code": 0, "msg": "success", "data": {"field": {"field_name": name, "type": ty}}})).into_response()
}

fn value_fits(ty: u64, v: &Value) -> bool {
    match ty {
        1 | 3 => v.is_string(),
        2 => v.is_number(),
        5 => v.as_i64().is_some_and(|ms| ms > 100_000_000_000),
        7 => v.is_boolean(),
        15 => v["link"].is_string() && v["text"].is_string(),
        _ => false,
    }
}

async fn batch_create(
    State(s): State<Arc<Inner>>,
    h: HeaderMap,
    Path((app, table)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    s.calls.fetch_add(1, Ordering::SeqCst);
    if s.down.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "upstream unavailable").into_response();
    }
    if !bearer_ok(&s, &h) {
        return code(
            StatusCode::BAD_REQUEST,
            99991663,
            "Invalid access token for authorization. Please make a request with token attached.",
        );
    }
    if !table_ok(&app, &table) {
        return code(StatusCode::OK, 1254004, "WrongTableId");
    }
    if s.throttled.load(Ordering::SeqCst) > 0 {
        s.throttled.fetch_sub(1, Ordering::SeqCst);
        let body = axum::Json(json!({"code": 99991400, "msg": "request trigger frequency limit"}));
        return (StatusCode::TOO_MANY_REQUESTS, [("x-ogw-ratelimit-limit", "50"), ("x-ogw-ratelimit-reset", "0")], body).into_response();
    }
    if s.limited.load(Ordering::SeqCst) > 0 {
        s.limited.fetch_sub(1, Ordering::SeqCst);
        return code(StatusCode::OK, 1254290, "TooManyRequest");
    }
    if s.not_ready.load(Ordering::SeqCst) > 0 {
        s.not_ready.fetch_sub(1, Ordering::SeqCst);
        return code(StatusCode::BAD_REQUEST, 1254607, "Data not ready, please try again later");
    }
    if let Some(answer) = q.get("client_token").and_then(|t| s.client_tokens.lock().unwrap().get(t).cloned()) {
        return axum::Json(answer).into_response();
    }
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let Some(records) = v["records"].as_array() else { return code(StatusCode::OK, 1254001, "WrongRequestBody") };
    if records.len() > 500 {
        return code(StatusCode::OK, 1254104, "RecordAddOnceExceedLimit");
    }
    let fields = s.fields.lock().unwrap().clone();
    for r in records {
        for (name, value) in r["fields"].as_object().into_iter().flatten() {
            let Some(ty) = fields.get(name) else { return code(StatusCode::OK, 1254045, "FieldNameNotFound") };
            if !value_fits(*ty, value) {
                return code(StatusCode::OK, 1254015, "FieldTypeValueNotMatch");
            }
        }
    }
    let mut out = Vec::new();
    {
        let mut stored = s.records.lock().unwrap();
        for r in records {
            let id = format!("rec{:06}", stored.len());
            stored.push(r["fields"].clone());
            out.push(json!({"record_id": id, "fields": r["fields"]}));
        }
    }
    let answer = json!({"code": 0, "msg": "success", "data": {"records": out}});
    if let Some(t) = q.get("client_token") {
        s.client_tokens.lock().unwrap().insert(t.clone(), answer.clone());
    }
    if s.lose_answer.load(Ordering::SeqCst) > 0 {
        s.lose_answer.fetch_sub(1, Ordering::SeqCst);
        return (StatusCode::GATEWAY_TIMEOUT, "gateway timeout").into_response();
    }
    if s.hang_answer.load(Ordering::SeqCst) > 0 {
        s.hang_answer.fetch_sub(1, Ordering::SeqCst);
        std::future::pending::<()>().await;
    }
    axum::Json(answer).into_response()
}

impl FakeFeishuOpen {
    pub async fn start() -> FakeFeishuOpen {
        let inner = Arc::new(Inner::default());
        let app = Router::new()
            .route("/open-apis/auth/v3/tenant_access_token/internal", post(token))
            .route("/open-apis/bitable/v1/apps/{app}/tables/{table}/fields", get(list_fields).post(create_field))
            .route("/open-apis/bitable/v1/apps/{app}/tables/{table}/records/batch_create", post(batch_create))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
        FakeFeishuOpen { url, inner }
    }

    pub fn set_down(&self, down: bool) {
        self.inner.down.store(down, Ordering::SeqCst);
    }
    pub fn limit_next(&self, n: usize) {
        self.inner.limited.store(n, Ordering::SeqCst);
    }
    /// The next `n` batch_create calls answer the open platform's rate limit (HTTP 429, 99991400).
    pub fn throttle_next(&self, n: usize) {
        self.inner.throttled.store(n, Ordering::SeqCst);
    }
    /// The next `n` batch_create calls answer 1254607 (data not ready).
    pub fn not_ready_next(&self, n: usize) {
        self.inner.not_ready.store(n, Ordering::SeqCst);
    }
    /// The next write is stored and answered 504.
    pub fn lose_next_answer(&self) {
        self.inner.lose_answer.store(1, Ordering::SeqCst);
    }
    /// The next write is stored and never answered (the client times out).
    pub fn hang_next_answer(&self) {
        self.inner.hang_answer.store(1, Ordering::SeqCst);
    }
    /// Every token issued so far stops working (as when it expires).
    pub fn expire_tokens(&self) {
        self.inner.valid.lock().unwrap().clear();
    }
    pub fn records(&self) -> Vec<Value> {
        self.inner.records.lock().unwrap().clone()
    }
}
