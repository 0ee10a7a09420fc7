//! A fake publishing platform (`POST /v1/videos`, `GET /topics`). It records every request's
//! `Idempotency-Key` and, like a platform that honours idempotency, publishes a key only once.
//! Answers follow a script, one per request, repeating the last.

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::{get, post};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone)]
pub enum Answer {
    /// 200 with this JSON body.
    Ok(Value),
    /// This status with this JSON body.
    Status(u16, Value),
    /// Waits, then 200.
    Slow(Duration),
    /// 200 with a body that is not UTF-8.
    NotUtf8,
}

#[derive(Clone, Default)]
struct Shared {
    script: Arc<Mutex<Vec<Answer>>>,
    keys: Arc<Mutex<Vec<Option<String>>>>,
    published: Arc<Mutex<HashSet<String>>>,
    headers: Arc<Mutex<Vec<HeaderMap>>>,
}

pub struct FakePublisher {
    pub base_url: String,
    shared: Shared,
}

impl FakePublisher {
    pub async fn start(script: Vec<Answer>) -> FakePublisher {
        let shared = Shared { script: Arc::new(Mutex::new(script)), ..Default::default() };
        let app = Router::new().route("/v1/videos", post(publish)).route("/topics", get(topics)).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            axum::serve(listener, app).await.ok();
        });
        FakePublisher { base_url: format!("http://{addr}"), shared }
    }

    /// Answers with `script` from now on (the last answer repeats).
    pub fn set_script(&self, script: Vec<Answer>) {
        *self.shared.script.lock().unwrap() = script;
    }

    /// The Idempotency-Key of each request, in order.
    pub fn keys(&self) -> Vec<Option<String>> {
        self.shared.keys.lock().unwrap().clone()
    }

    /// How many distinct publications took effect.
    pub fn published(&self) -> usize {
        self.shared.published.lock().unwrap().len()
    }

    pub fn headers(&self) -> Vec<HeaderMap> {
        self.shared.headers.lock().unwrap().clone()
    }
}

fn next(s: &Shared) -> Answer {
    let mut script = s.script.lock().unwrap();
    if script.len() > 1 { script.remove(0) } else { script[0].clone() }
}

async fn answer(s: &Shared, a: Answer) -> Response {
    let json = |status: u16, v: Value| {
        Response::builder().status(status).header("content-type", "application/json").body(Body::from(v.to_string())).unwrap()
    };
    match a {
        Answer::Ok(v) => json(200, v),
        Answer::Status(code, v) => json(code, v),
        Answer::Slow(d) => {
            tokio::time::sleep(d).await;
            let _ = s;
            json(200, json!({"id": "late"}))
        }
        Answer::NotUtf8 => Response::builder().status(200).body(Body::from(vec![0xffu8, 0xfe, 0x41])).unwrap(),
    }
}

async fn publish(State(s): State<Shared>, headers: HeaderMap, _body: String) -> Response {
    let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).map(str::to_owned);
    s.keys.lock().unwrap().push(key.clone());
    s.headers.lock().unwrap().push(headers);
    let a = next(&s);
    if let (Some(k), Answer::Ok(_) | Answer::Slow(_)) = (&key, &a) {
        s.published.lock().unwrap().insert(k.clone());
    }
    answer(&s, a).await
}

async fn topics(State(s): State<Shared>, headers: HeaderMap) -> Response {
    s.headers.lock().unwrap().push(headers);
    let a = next(&s);
    answer(&s, a).await
}
