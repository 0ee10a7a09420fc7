//! A fake Feishu custom bot (`POST /open-apis/bot/v2/hook/{token}`) that judges requests the way
//! the real service does: the token (19001), the signature `timestamp` + `sign` =
//! base64(HMAC-SHA256(key = "timestamp\nsecret", message = "")) within an hour (19021), the keyword
//! (19024), the 20 KB body limit (9499), and the bot's rate limit of 5/s and 100/min (11232,
//! "frequency limited"). It answers HTTP 200 with a `code` in the body, as Feishu does. It can be
//! taken down (HTTP 503) and brought back, and records what it accepted and when.

use axum::Router;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const TOKEN: &str = "feishu-token-5f1c2a9b7e";
pub const SECRET: &str = "feishu-sign-secret-8d7c";
pub const KEYWORD: &str = "告警";

#[derive(Default)]
struct Inner {
    accepted: Mutex<Vec<(Instant, Value)>>,
    rejected: Mutex<Vec<(i64, Value)>>,
    window: Mutex<VecDeque<Instant>>,
    down: AtomicBool,
    /// Answer 11232 to this many requests, whatever the rate.
    force_limited: AtomicUsize,
    secret: Option<String>,
    keyword: Option<String>,
}

#[derive(Clone)]
pub struct FakeFeishu {
    pub url: String,
    inner: Arc<Inner>,
}

fn sign(ts: &str, secret: &str) -> String {
    let mut m = <Hmac<sha2::Sha256> as Mac>::new_from_slice(format!("{ts}\n{secret}").as_bytes()).unwrap();
    m.update(b"");
    base64::engine::general_purpose::STANDARD.encode(m.finalize().into_bytes())
}

fn texts(v: &Value, out: &mut String) {
    match v {
        Value::String(s) => {
            out.push_str(s);
            out.push('\n');
        }
        Value::Array(a) => a.iter().for_each(|x| texts(x, out)),
        Value::Object(o) => o.iter().filter(|(k, _)| *k != "sign" && *k != "timestamp").for_each(|(_, x)| texts(x, out)),
        _ => {}
    }
}

impl FakeFeishu {
    /// Signed and keyword-protected bot.
    pub async fn start() -> FakeFeishu {
        Self::start_with(Some(SECRET), Some(KEYWORD)).await
    }

    pub async fn start_with(secret: Option<&str>, keyword: Option<&str>) -> FakeFeishu {
        let inner = Arc::new(Inner { secret: secret.map(str::to_owned), keyword: keyword.map(str::to_owned), ..Default::default() });
        let app = Router::new().route("/open-apis/bot/v2/hook/{token}", post(hook)).with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            axum::serve(listener, app).await.ok();
        });
        FakeFeishu { url: format!("http://{addr}/open-apis/bot/v2/hook/{TOKEN}"), inner }
    }

    pub fn set_down(&self, down: bool) {
        self.inner.down.store(down, Ordering::SeqCst);
    }

    pub fn force_frequency_limit(&self, n: usize) {
        self.inner.force_limited.store(n, Ordering::SeqCst);
    }

    /// Bodies accepted (code 0), in order.
    pub fn messages(&self) -> Vec<Value> {
        self.inner.accepted.lock().unwrap().iter().map(|(_, v)| v.clone()).collect()
    }

    pub fn accepted_at(&self) -> Vec<Instant> {
        self.inner.accepted.lock().unwrap().iter().map(|(t, _)| *t).collect()
    }

    /// (code, body) of requests refused.
    pub fn rejected(&self) -> Vec<(i64, Value)> {
        self.inner.rejected.lock().unwrap().clone()
    }

    /// Waits until the bot's own per-second window (real time) would take `n` more messages.
    pub async fn until_room_for(&self, n: usize) {
        loop {
            let busy = {
                let w = self.inner.window.lock().unwrap();
                w.iter().filter(|t| t.elapsed() < Duration::from_secs(1)).count()
            };
            if busy + n <= 5 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until the bot's per-second limit (which counts real time) has room again: nothing
    /// accepted in the last second. A test on virtual time sends faster than the real clock moves.
    pub async fn until_second_is_free(&self) {
        while self.inner.window.lock().unwrap().back().is_some_and(|t| t.elapsed() < Duration::from_secs(1)) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The most requests accepted within any window of this length.
    pub fn peak(&self, window: Duration) -> usize {
        let t = self.accepted_at();
        let mut best = 0;
        let mut j = 0;
        for i in 0..t.len() {
            while t[i].duration_since(t[j]) >= window {
                j += 1;
            }
            best = best.max(i - j + 1);
        }
        best
    }
}

fn answer(code: i64, msg: &str) -> Response {
    axum::Json(json!({"code": code, "msg": msg, "data": {}})).into_response()
}

async fn hook(State(s): State<Arc<Inner>>, Path(token): Path<String>, body: String) -> Response {
    if s.down.load(Ordering::SeqCst) {
        return (axum::http::StatusCode::SERVICE_UNAVAILABLE, "upstream unavailable").into_response();
    }
    let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let reject = |code: i64, msg: &str| {
        s.rejected.lock().unwrap().push((code, v.clone()));
        answer(code, msg)
    };
    if token != TOKEN {
        return reject(19001, "param invalid: incoming webhook access token invalid");
    }
    if body.len() > 20 * 1024 {
        return reject(9499, "Bad Request");
    }
    if let Some(secret) = &s.secret {
        let ts = v["timestamp"].as_str().unwrap_or("");
        let fresh = ts.parse::<i64>().is_ok_and(|t| (t - jiff::Timestamp::now().as_second()).abs() <= 3600);
        if !fresh || v["sign"].as_str() != Some(sign(ts, secret).as_str()) {
            return reject(19021, "sign match fail or timestamp is not within one hour from current time");
        }
    }
    if let Some(k) = &s.keyword {
        let mut all = String::new();
        texts(&v, &mut all);
        if !all.contains(k.as_str()) {
            return reject(19024, "Key Words Not Found");
        }
    }
    if s.force_limited.load(Ordering::SeqCst) > 0 {
        s.force_limited.fetch_sub(1, Ordering::SeqCst);
        return reject(11232, "frequency limited psm[lark.oapi.app_platform_runtime]appID[1]");
    }
    {
        // 5 per second and 100 per minute per bot.
        let now = Instant::now();
        let mut w = s.window.lock().unwrap();
        while w.front().is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(60)) {
            w.pop_front();
        }
        let last_second = w.iter().filter(|t| now.duration_since(**t) < Duration::from_secs(1)).count();
        if last_second >= 5 || w.len() >= 100 {
            drop(w);
            return reject(11232, "frequency limited psm[lark.oapi.app_platform_runtime]appID[1]");
        }
        w.push_back(now);
    }
    s.accepted.lock().unwrap().push((Instant::now(), v));
    answer(0, "success")
}
