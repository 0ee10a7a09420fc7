//! A fake OpenTelemetry collector: `POST /v1/traces` with the OTLP/HTTP JSON encoding
//! (`application/json`, an ExportTraceServiceRequest). It checks a header key, decodes every
//! span the way the protobuf JSON mapping says (hex `traceId` of 16 bytes and `spanId` of 8,
//! nanosecond times as decimal strings, typed attribute values), answers 503 while down and 429
//! with Retry-After on demand, and keeps the spans by id with how many times each arrived.

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

pub const KEY: &str = "otel-ingest-key-3b9f0c";

#[derive(Default)]
struct Inner {
    spans: Mutex<BTreeMap<String, (Value, usize)>>,
    down: AtomicBool,
    throttle: AtomicUsize,
}

#[derive(Clone)]
pub struct FakeCollector {
    pub url: String,
    inner: Arc<Inner>,
}

fn is_hex(s: &Value, len: usize) -> bool {
    s.as_str().is_some_and(|s| s.len() == len && s.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()))
}

fn bad(msg: &str) -> Response {
    (StatusCode::BAD_REQUEST, axum::Json(json!({"code": 3, "message": msg}))).into_response()
}

async fn traces(State(s): State<Arc<Inner>>, h: HeaderMap, body: Bytes) -> Response {
    if s.down.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "collector unavailable").into_response();
    }
    if h.get("x-api-key").and_then(|v| v.to_str().ok()) != Some(KEY) {
        return (StatusCode::UNAUTHORIZED, axum::Json(json!({"code": 16, "message": "unauthenticated"}))).into_response();
    }
    if s.throttle.load(Ordering::SeqCst) > 0 {
        s.throttle.fetch_sub(1, Ordering::SeqCst);
        return (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "0")], axum::Json(json!({"code": 8, "message": "throttled"})))
            .into_response();
    }
    if h.get("content-type").and_then(|v| v.to_str().ok()) != Some("application/json") {
        return (StatusCode::UNSUPPORTED_MEDIA_TYPE, "expected application/json").into_response();
    }
    let Ok(req) = serde_json::from_slice::<Value>(&body) else { return bad("not JSON") };
    let mut decoded = Vec::new();
    for rs in req["resourceSpans"].as_array().into_iter().flatten() {
        if rs["resource"]["attributes"].as_array().is_none_or(|a| !a.iter().any(|x| x["key"] == "service.name")) {
            return bad("resource without service.name");
        }
        for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
            for span in ss["spans"].as_array().into_iter().flatten() {
                if !is_hex(&span["traceId"], 32) || !is_hex(&span["spanId"], 16) {
                    return bad("traceId/spanId must be lowercase hex of 16/8 bytes");
                }
                if span.get("parentSpanId").is_some_and(|p| p != "" && !is_hex(p, 16)) {
                    return bad("parentSpanId must be hex of 8 bytes");
                }
                let t = |k: &str| span[k].as_str().and_then(|s| s.parse::<u128>().ok());
                match (t("startTimeUnixNano"), t("endTimeUnixNano")) {
                    (Some(a), Some(b)) if a <= b => {}
                    _ => return bad("start/end times must be decimal nanoseconds, start <= end"),
                }
                for a in span["attributes"].as_array().into_iter().flatten() {
                    let v = &a["value"];
                    let typed = v.get("stringValue").is_some_and(Value::is_string)
                        || v.get("boolValue").is_some_and(Value::is_boolean)
                        || v.get("intValue").is_some_and(|i| i.as_str().is_some_and(|s| s.parse::<i64>().is_ok()))
                        || v.get("doubleValue").is_some_and(Value::is_number);
                    if !typed {
                        return bad("an attribute value is not a typed AnyValue");
                    }
                }
                decoded.push(span.clone());
            }
        }
    }
    let mut spans = s.spans.lock().unwrap();
    for span in decoded {
        let id = span["spanId"].as_str().unwrap_or("").to_owned();
        let n = spans.get(&id).map_or(0, |e| e.1);
        spans.insert(id, (span, n + 1));
    }
    axum::Json(json!({})).into_response()
}

impl FakeCollector {
    pub async fn start() -> FakeCollector {
        let inner = Arc::new(Inner::default());
        let app = Router::new().route("/v1/traces", post(traces)).with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
        FakeCollector { url, inner }
    }

    pub fn set_down(&self, down: bool) {
        self.inner.down.store(down, Ordering::SeqCst);
    }

    pub fn throttle_next(&self, n: usize) {
        self.inner.throttle.store(n, Ordering::SeqCst);
    }

    /// Spans by span id, with how many times each arrived.
    pub fn spans(&self) -> BTreeMap<String, (Value, usize)> {
        self.inner.spans.lock().unwrap().clone()
    }

    /// An attribute of a span, as a plain JSON value (intValue as a number).
    pub fn attr(&self, span: &Value, key: &str) -> Option<Value> {
        let a = span["attributes"].as_array()?.iter().find(|a| a["key"] == key)?;
        let v = &a["value"];
        if let Some(s) = v.get("stringValue") {
            return Some(s.clone());
        }
        if let Some(i) = v.get("intValue").and_then(Value::as_str) {
            return i.parse::<i64>().ok().map(Value::from);
        }
        v.get("boolValue").or_else(|| v.get("doubleValue")).cloned()
    }
}
