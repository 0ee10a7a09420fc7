//! A fake OpenAI-compatible chat completions server (`POST /v1/chat/completions`). It checks the
//! bearer key like the real API (401 `invalid_api_key` otherwise) and answers from a script of
//! behaviours, one per request, repeating the last: real answers, empty choices, malformed JSON,
//! finish_reason=length, content filter, 429 with Retry-After, 429 insufficient_quota, 5xx, slow
//! answers, broken bodies, and answers held until a number of requests wait at once. It counts the
//! connections its requests came over.

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::post;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const KEY: &str = "sk-test-0123456789abcdef";

#[derive(Debug, Clone)]
pub enum Reply {
    /// A normal answer with this content.
    Content(String),
    NoChoices,
    EmptyContent,
    /// finish_reason=length.
    Length,
    /// finish_reason=content_filter.
    ContentFilter,
    /// An HTTP error with an OpenAI-style error body: (status, code, Retry-After seconds).
    Error(u16, Option<&'static str>, Option<u64>),
    /// HTTP 200 whose body is not JSON.
    BrokenBody,
    /// HTTP 200 whose body is not UTF-8.
    NotUtf8,
    /// Waits this long, then answers with the content.
    Slow(Duration, String),
    /// Holds the request until this many wait at once (as callers running side by side do),
    /// then answers them all with the content.
    Together(usize, String),
}

#[derive(Clone)]
struct Shared {
    script: Arc<Mutex<Vec<Reply>>>,
    requests: Arc<Mutex<Vec<Value>>>,
    /// The client ends of the connections requests came over.
    peers: Arc<Mutex<HashSet<SocketAddr>>>,
    /// Where `Together` replies wait for each other (it lets them go in rounds of its size).
    together: Arc<Mutex<Option<Arc<tokio::sync::Barrier>>>>,
}

pub struct FakeOpenAi {
    pub base_url: String,
    shared: Shared,
}

impl FakeOpenAi {
    pub async fn start(script: Vec<Reply>) -> FakeOpenAi {
        let shared =
            Shared { script: Arc::new(Mutex::new(script)), requests: Arc::default(), peers: Arc::default(), together: Arc::default() };
        let app = Router::new().route("/v1/chat/completions", post(chat)).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await.ok();
        });
        FakeOpenAi { base_url: format!("http://{addr}/v1"), shared }
    }

    /// Answers from now on with this script instead (the provider went down, or came back).
    #[allow(dead_code)]
    pub fn set_script(&self, script: Vec<Reply>) {
        *self.shared.script.lock().unwrap() = script;
    }

    /// The JSON bodies received so far.
    pub fn requests(&self) -> Vec<Value> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// How many connections the requests so far came over.
    pub fn connections(&self) -> usize {
        self.shared.peers.lock().unwrap().len()
    }
}

fn completion(content: Option<&str>, finish: &str) -> Value {
    json!({
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "model": "fake-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 34, "total_tokens": 46}
    })
}

fn respond(status: u16, body: Vec<u8>, retry_after: Option<u64>) -> Response {
    let mut b = Response::builder().status(status).header("content-type", "application/json");
    if let Some(s) = retry_after {
        b = b.header("retry-after", s.to_string());
    }
    b.body(Body::from(body)).unwrap()
}

async fn chat(State(s): State<Shared>, ConnectInfo(peer): ConnectInfo<SocketAddr>, headers: HeaderMap, body: String) -> Response {
    let req: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    s.requests.lock().unwrap().push(req);
    s.peers.lock().unwrap().insert(peer);
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("");
    if auth != format!("Bearer {KEY}") {
        let err = json!({"error": {"message": "Incorrect API key provided", "type": "invalid_request_error", "code": "invalid_api_key"}});
        return respond(401, err.to_string().into_bytes(), None);
    }
    let reply = {
        let mut script = s.script.lock().unwrap();
        if script.len() > 1 { script.remove(0) } else { script[0].clone() }
    };
    let ok = |v: Value| respond(200, v.to_string().into_bytes(), None);
    match reply {
        Reply::Content(c) => ok(completion(Some(&c), "stop")),
        Reply::NoChoices => ok(json!({"id": "x", "choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 0}})),
        Reply::EmptyContent => ok(completion(Some(""), "stop")),
        Reply::Length => ok(completion(Some("{\"title\": \"cut"), "length")),
        Reply::ContentFilter => ok(completion(None, "content_filter")),
        Reply::Error(status, code, retry) => {
            let err = json!({"error": {"message": format!("fake error {status}"), "type": code.unwrap_or("server_error"), "code": code}});
            respond(status, err.to_string().into_bytes(), retry)
        }
        Reply::BrokenBody => respond(200, b"<html>502 Bad Gateway</html>".to_vec(), None),
        Reply::NotUtf8 => respond(200, vec![0xff, 0xfe, 0x00, 0x7b], None),
        Reply::Slow(d, c) => {
            tokio::time::sleep(d).await;
            ok(completion(Some(&c), "stop"))
        }
        Reply::Together(n, c) => {
            let barrier = s.together.lock().unwrap().get_or_insert_with(|| Arc::new(tokio::sync::Barrier::new(n))).clone();
            barrier.wait().await;
            ok(completion(Some(&c), "stop"))
        }
    }
}
