//! A fake Elasticsearch (and the Kibana saved-objects import) speaking the real protocol:
//! `POST /_bulk` NDJSON with `create` / `index` actions, answered HTTP 200 with `errors` and one
//! item per action (`create` of an existing `_id` is 409 `version_conflict_engine_exception`);
//! API-key auth (401 `security_exception` otherwise); per-item 429
//! `es_rejected_execution_exception` on demand; a mapping conflict (400
//! `document_parsing_exception`) for a document whose field has the wrong type for the installed
//! template; down (503) on demand. `PUT /_index_template/{name}` keeps templates;
//! `POST /api/saved_objects/_import` (Kibana) keeps the multipart file.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{post, put};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

pub const API_KEY: &str = "es-api-key-V2hhdGV2ZXI6c2VjcmV0";

#[derive(Default)]
pub struct Inner {
    /// (index, id) → (document, successful writes of it).
    pub docs: Mutex<BTreeMap<(String, String), (Value, usize)>>,
    pub templates: Mutex<BTreeMap<String, Value>>,
    pub kibana: Mutex<Vec<String>>,
    pub requests: AtomicUsize,
    down: AtomicBool,
    /// Answer 429 es_rejected_execution_exception to this many items.
    reject_items: AtomicUsize,
    /// Refuse this document `node` with a mapping conflict.
    pub bad_node: Mutex<Option<String>>,
    pub rejected_for_mapping: AtomicUsize,
}

#[derive(Clone)]
pub struct FakeEs {
    pub url: String,
    pub inner: Arc<Inner>,
}

impl FakeEs {
    pub async fn start() -> FakeEs {
        let inner = Arc::new(Inner::default());
        let app = Router::new()
            .route("/_bulk", post(bulk))
            .route("/_index_template/{name}", put(template))
            .route("/api/saved_objects/_import", post(kibana))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
        FakeEs { url, inner }
    }

    pub fn set_down(&self, down: bool) {
        self.inner.down.store(down, Ordering::SeqCst);
    }

    pub fn reject_next_items(&self, n: usize) {
        self.inner.reject_items.store(n, Ordering::SeqCst);
    }

    /// Documents of indices whose name starts with `prefix`: id → (document, writes).
    pub fn docs(&self, prefix: &str) -> BTreeMap<String, (Value, usize)> {
        self.inner
            .docs
            .lock()
            .unwrap()
            .iter()
            .filter(|((i, _), _)| i.starts_with(prefix))
            .map(|((_, id), v)| (id.clone(), v.clone()))
            .collect()
    }
}

fn authorized(h: &HeaderMap) -> bool {
    h.get("authorization").and_then(|v| v.to_str().ok()) == Some(&format!("ApiKey {API_KEY}"))
}

fn unauthorized() -> Response {
    let body = json!({"error": {"root_cause": [{"type": "security_exception", "reason": "unable to authenticate with provided credentials"}], "type": "security_exception", "reason": "unable to authenticate with provided credentials"}, "status": 401});
    (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response()
}

async fn bulk(State(s): State<Arc<Inner>>, h: HeaderMap, body: Bytes) -> Response {
    s.requests.fetch_add(1, Ordering::SeqCst);
    if s.down.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "cluster unavailable").into_response();
    }
    if !authorized(&h) {
        return unauthorized();
    }
    if h.get("content-type").and_then(|v| v.to_str().ok()) != Some("application/x-ndjson") {
        return (StatusCode::NOT_ACCEPTABLE, axum::Json(json!({"error": "Content-Type header is not supported", "status": 406})))
            .into_response();
    }
    let text = String::from_utf8_lossy(&body).into_owned();
    if !text.ends_with('\n') {
        let e = json!({"error": {"type": "illegal_argument_exception", "reason": "The bulk request must be terminated by a newline [\\n]"}, "status": 400});
        return (StatusCode::BAD_REQUEST, axum::Json(e)).into_response();
    }
    let lines: Vec<&str> = text.lines().collect();
    let mut items = Vec::new();
    let mut errors = false;
    for pair in lines.chunks(2) {
        let (Ok(meta), Some(Ok(doc))) = (serde_json::from_str::<Value>(pair[0]), pair.get(1).map(|d| serde_json::from_str::<Value>(d)))
        else {
            let e = json!({"error": {"type": "x_content_parse_exception", "reason": "malformed action/metadata line"}, "status": 400});
            return (StatusCode::BAD_REQUEST, axum::Json(e)).into_response();
        };
        let Some((op, m)) = meta.as_object().and_then(|o| o.iter().next()).map(|(k, v)| (k.clone(), v.clone())) else { continue };
        let index = m["_index"].as_str().unwrap_or("").to_owned();
        let id = m["_id"].as_str().unwrap_or("").to_owned();
        let item = |status: u16, error: Option<Value>| {
            let mut r = json!({"_index": index, "_id": id, "status": status});
            if let Some(e) = error {
                r["error"] = e;
            }
            json!({ op.clone(): r })
        };
        if s.reject_items.load(Ordering::SeqCst) > 0 {
            s.reject_items.fetch_sub(1, Ordering::SeqCst);
            errors = true;
            items.push(item(
                429,
                Some(json!({"type": "es_rejected_execution_exception", "reason": "rejected execution of coordinating operation"})),
            ));
            continue;
        }
        if s.bad_node.lock().unwrap().as_deref().is_some_and(|b| doc["node"] == b) {
            errors = true;
            s.rejected_for_mapping.fetch_add(1, Ordering::SeqCst);
            items.push(item(
                400,
                Some(json!({"type": "document_parsing_exception", "reason": "[1:20] failed to parse field [duration_ms] of type [long] in document"})),
            ));
            continue;
        }
        let mut docs = s.docs.lock().unwrap();
        let key = (index.clone(), id.clone());
        match (op.as_str(), docs.get_mut(&key)) {
            ("create", Some(_)) => {
                errors = true;
                items.push(item(
                    409,
                    Some(json!({"type": "version_conflict_engine_exception", "reason": format!("[{id}]: version conflict, document already exists")})),
                ));
            }
            ("create", None) => {
                docs.insert(key, (doc, 1));
                items.push(item(201, None));
            }
            ("index", existing) => {
                let n = existing.map_or(0, |e| e.1);
                docs.insert(key, (doc, n + 1));
                items.push(item(if n == 0 { 201 } else { 200 }, None));
            }
            _ => items.push(item(400, Some(json!({"type": "illegal_argument_exception", "reason": "unsupported action"})))),
        }
    }
    axum::Json(json!({"took": 3, "errors": errors, "items": items})).into_response()
}

async fn template(State(s): State<Arc<Inner>>, h: HeaderMap, Path(name): Path<String>, body: Bytes) -> Response {
    if !authorized(&h) {
        return unauthorized();
    }
    let Ok(v) = serde_json::from_slice::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "not JSON").into_response();
    };
    s.templates.lock().unwrap().insert(name, v);
    axum::Json(json!({"acknowledged": true})).into_response()
}

async fn kibana(State(s): State<Arc<Inner>>, h: HeaderMap, body: Bytes) -> Response {
    if h.get("kbn-xsrf").is_none() {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"statusCode": 400, "error": "Bad Request", "message": "Request must contain a kbn-xsrf header."})),
        )
            .into_response();
    }
    let text = String::from_utf8_lossy(&body).into_owned();
    // The part's content, between its blank line and the closing boundary.
    let Some(start) = text.find("\r\n\r\n") else {
        return (StatusCode::BAD_REQUEST, "no multipart body").into_response();
    };
    let part = &text[start + 4..];
    let part = part[..part.rfind("\r\n--").unwrap_or(part.len())].to_owned();
    let n = part.lines().filter(|l| !l.trim().is_empty()).count();
    s.kibana.lock().unwrap().push(part);
    axum::Json(json!({"success": true, "successCount": n})).into_response()
}
