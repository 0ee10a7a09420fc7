//! Fake DingTalk and WeCom group bots that judge requests like the real services.
//!
//! DingTalk: `POST /robot/send?access_token=…&timestamp={ms}&sign={urlencoded base64(HMAC-SHA256(secret, "{ms}\n{secret}"))}`;
//! `{"errcode": 300005, "errmsg": "token is not exist"}`, `310000` for a bad sign or a missing keyword,
//! `130101` "send too fast, exceed 20 times per minute". WeCom: `POST /cgi-bin/webhook/send?key=…`;
//! `93000` "invalid webhook url", `45009` "api freq out of limit" past 20 per minute.
//! Both answer HTTP 200 with `errcode` in the body, and check each message type's required fields:
//! DingTalk `text`, `markdown`, `link` (`title`, `text`, `messageUrl`) and `actionCard` (`title`,
//! `text`, and `singleTitle` + `singleURL` or `btns`), else `40035` "缺少参数"; WeCom `text`,
//! `markdown` and `markdown_v2` (`content`, at most 4096 bytes), else `40008` "invalid message type".

use axum::Router;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const DING_TOKEN: &str = "ding-access-token-77aa11";
pub const DING_SECRET: &str = "SECding-secret-0b9e3c";
pub const DING_KEYWORD: &str = "告警";
pub const WECOM_KEY: &str = "wecom-key-693a-4e2b";

#[derive(Default)]
struct Inner {
    ding: Mutex<Vec<Value>>,
    wecom: Mutex<Vec<Value>>,
    errors: Mutex<Vec<i64>>,
    ding_window: Mutex<VecDeque<Instant>>,
    wecom_window: Mutex<VecDeque<Instant>>,
}

#[derive(Clone)]
pub struct FakeBots {
    pub ding_url: String,
    pub wecom_base: String,
    inner: Arc<Inner>,
}

fn per_minute(w: &Mutex<VecDeque<Instant>>, limit: usize) -> bool {
    let now = Instant::now();
    let mut w = w.lock().unwrap();
    while w.front().is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(60)) {
        w.pop_front();
    }
    if w.len() >= limit {
        return false;
    }
    w.push_back(now);
    true
}

fn err(code: i64, msg: &str) -> Response {
    axum::Json(json!({"errcode": code, "errmsg": msg})).into_response()
}

impl FakeBots {
    pub async fn start() -> FakeBots {
        let inner = Arc::new(Inner::default());
        let app = Router::new().route("/robot/send", post(ding)).route("/cgi-bin/webhook/send", post(wecom)).with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            axum::serve(listener, app).await.ok();
        });
        FakeBots {
            ding_url: format!("http://{addr}/robot/send?access_token={DING_TOKEN}"),
            wecom_base: format!("http://{addr}/cgi-bin/webhook/send"),
            inner,
        }
    }

    pub fn ding(&self) -> Vec<Value> {
        self.inner.ding.lock().unwrap().clone()
    }
    pub fn wecom(&self) -> Vec<Value> {
        self.inner.wecom.lock().unwrap().clone()
    }
    pub fn errors(&self) -> Vec<i64> {
        self.inner.errors.lock().unwrap().clone()
    }
}

async fn ding(State(s): State<Arc<Inner>>, Query(q): Query<HashMap<String, String>>, body: String) -> Response {
    let fail = |code: i64, msg: &str| {
        s.errors.lock().unwrap().push(code);
        err(code, msg)
    };
    if q.get("access_token").map(String::as_str) != Some(DING_TOKEN) {
        return fail(300005, "token is not exist");
    }
    let ts = q.get("timestamp").cloned().unwrap_or_default();
    let mut m = <Hmac<sha2::Sha256> as Mac>::new_from_slice(DING_SECRET.as_bytes()).unwrap();
    m.update(format!("{ts}\n{DING_SECRET}").as_bytes());
    let want = base64::engine::general_purpose::STANDARD.encode(m.finalize().into_bytes());
    let fresh = ts.parse::<i64>().is_ok_and(|t| (t - jiff::Timestamp::now().as_millisecond()).abs() <= 3_600_000);
    if !fresh || q.get("sign") != Some(&want) {
        return fail(310000, "sign not match, more: [https://ding-doc.dingtalk.com/doc#/serverapi2/qf2nxq]");
    }
    let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    if !body.contains(DING_KEYWORD) && !v.to_string().contains(DING_KEYWORD) {
        return fail(310000, "keywords not in content");
    }
    let has = |p: &str| v.pointer(p).and_then(Value::as_str).is_some_and(|x| !x.is_empty());
    let complete = match v["msgtype"].as_str().unwrap_or("") {
        "text" => has("/text/content"),
        "markdown" => has("/markdown/title") && has("/markdown/text"),
        "link" => has("/link/title") && has("/link/text") && has("/link/messageUrl"),
        "actionCard" => {
            has("/actionCard/title")
                && has("/actionCard/text")
                && ((has("/actionCard/singleTitle") && has("/actionCard/singleURL")) || v["actionCard"]["btns"].is_array())
        }
        _ => false,
    };
    if !complete {
        return fail(40035, "缺少参数 json");
    }
    if !per_minute(&s.ding_window, 20) {
        return fail(130101, "send too fast, exceed 20 times per minute");
    }
    s.ding.lock().unwrap().push(v);
    err(0, "ok")
}

async fn wecom(State(s): State<Arc<Inner>>, Query(q): Query<HashMap<String, String>>, body: String) -> Response {
    let fail = |code: i64, msg: &str| {
        s.errors.lock().unwrap().push(code);
        err(code, msg)
    };
    if q.get("key").map(String::as_str) != Some(WECOM_KEY) {
        return fail(93000, "invalid webhook url, hint: [1700000000_1_abc], from ip: 127.0.0.1");
    }
    let v: Value = match serde_json::from_str(&body) {
        Ok(v) => v,
        Err(_) => return fail(40035, "invalid parameter"),
    };
    let kind = v["msgtype"].as_str().unwrap_or("");
    let content = v.pointer(&format!("/{kind}/content")).and_then(Value::as_str).unwrap_or("");
    let limit = if kind == "text" { 2048 } else { 4096 };
    if !["text", "markdown", "markdown_v2"].contains(&kind) || content.is_empty() || content.len() > limit {
        return fail(40008, "Warning: wrong json format. invalid message type");
    }
    if !per_minute(&s.wecom_window, 20) {
        return fail(45009, "api freq out of limit");
    }
    s.wecom.lock().unwrap().push(v);
    err(0, "ok")
}
