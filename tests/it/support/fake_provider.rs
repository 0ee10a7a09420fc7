//! A fake OpenAI-compatible provider that answers each request with a scripted raw HTTP answer
//! (status, headers, body) — the error answers providers document, copied byte for byte — after
//! checking the bearer key as the real APIs do.

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::post;
use std::sync::{Arc, Mutex};

pub const KEY: &str = "sk-provider-0123456789abcdef";

/// One scripted answer.
#[derive(Debug, Clone)]
pub struct Raw {
    pub status: u16,
    pub headers: Vec<(&'static str, &'static str)>,
    pub body: String,
}

impl Raw {
    pub fn json(status: u16, body: &str) -> Raw {
        Raw { status, headers: vec![("content-type", "application/json")], body: body.to_owned() }
    }
    pub fn with_header(mut self, name: &'static str, value: &'static str) -> Raw {
        self.headers.push((name, value));
        self
    }
}

#[derive(Clone)]
struct Shared {
    answer: Raw,
    calls: Arc<Mutex<usize>>,
}

pub struct FakeProvider {
    pub base_url: String,
    calls: Arc<Mutex<usize>>,
}

impl FakeProvider {
    pub async fn start(answer: Raw) -> FakeProvider {
        let shared = Shared { answer, calls: Arc::default() };
        let calls = shared.calls.clone();
        let app = Router::new().route("/v1/chat/completions", post(chat)).with_state(shared);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            axum::serve(listener, app).await.ok();
        });
        FakeProvider { base_url: format!("http://{addr}/v1"), calls }
    }

    /// Requests that passed the key check.
    pub fn calls(&self) -> usize {
        *self.calls.lock().unwrap()
    }
}

async fn chat(State(s): State<Shared>, headers: HeaderMap) -> Response {
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("");
    if auth != format!("Bearer {KEY}") {
        let body =
            r#"{"error":{"message":"Incorrect API key provided","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}"#;
        return Response::builder().status(401).header("content-type", "application/json").body(Body::from(body)).unwrap();
    }
    *s.calls.lock().unwrap() += 1;
    let mut b = Response::builder().status(s.answer.status);
    for (k, v) in &s.answer.headers {
        b = b.header(*k, *v);
    }
    b.body(Body::from(s.answer.body.clone())).unwrap()
}
