//! A fake Coze Open API: `POST /v1/workflow/run` (synchronous and asynchronous runs), the run
//! history of coze.cn / coze.com (`GET /v1/workflows/{workflow_id}/run_histories/{execute_id}`)
//! and of Coze Studio (`GET /v1/workflow/get_run_history`). It checks the bearer token (HTTP 401,
//! `code: 4100` otherwise) and answers errors as Coze does, HTTP 200 with a non-zero `code`.

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub const TOKEN: &str = "pat_coze_test_0123456789abcdefghij";
pub const EXECUTE_ID: &str = "7392658183234600972";

/// How the fake answers runs.
#[derive(Debug, Clone)]
pub enum Script {
    /// A synchronous run that answers this `data` string.
    Sync(String),
    /// `POST /v1/workflow/run` answers HTTP `status` with this code and message.
    Error(u16, i64, &'static str),
    /// An asynchronous run: `Running` for this many polls, then the end.
    Async(usize, End),
    /// An asynchronous run whose first poll answers HTTP 503 (a gateway hiccup), then the end.
    AsyncAfter503(End),
}

#[derive(Debug, Clone)]
pub enum End {
    /// `Success` with this `output` string.
    Success(String),
    /// `Fail` with this error code and message.
    Fail(&'static str, &'static str),
    /// Never ends.
    Never,
}

#[derive(Clone)]
struct Shared {
    script: Script,
    runs: Arc<Mutex<Vec<Value>>>,
    polls: Arc<Mutex<Vec<String>>>,
}

pub struct FakeCoze {
    pub base_url: String,
    shared: Shared,
}

impl FakeCoze {
    pub async fn start(script: Script) -> FakeCoze {
        let shared = Shared { script, runs: Arc::default(), polls: Arc::default() };
        let app = Router::new()
            .route("/v1/workflow/run", post(run))
            .route("/v1/workflows/{workflow_id}/run_histories/{execute_id}", get(history))
            .route("/v1/workflow/get_run_history", get(studio_history))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            axum::serve(listener, app).await.ok();
        });
        FakeCoze { base_url: format!("http://{addr}"), shared }
    }

    /// The bodies of `POST /v1/workflow/run` received with the right token.
    pub fn runs(&self) -> Vec<Value> {
        self.shared.runs.lock().unwrap().clone()
    }

    /// The paths polled, in order.
    pub fn polls(&self) -> Vec<String> {
        self.shared.polls.lock().unwrap().clone()
    }
}

fn debug_url() -> String {
    format!("https://www.coze.cn/work_flow?execute_id={EXECUTE_ID}&space_id=7324&workflow_id=7428912345678901234")
}

fn authorized(headers: &HeaderMap) -> Result<(), (StatusCode, Json<Value>)> {
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("");
    if auth == format!("Bearer {TOKEN}") {
        Ok(())
    } else {
        Err((StatusCode::UNAUTHORIZED, Json(json!({"code": 4100, "msg": "authentication is invalid"}))))
    }
}

async fn run(State(s): State<Shared>, headers: HeaderMap, Json(body): Json<Value>) -> (StatusCode, Json<Value>) {
    if let Err(e) = authorized(&headers) {
        return e;
    }
    s.runs.lock().unwrap().push(body.clone());
    let is_async = body["is_async"].as_bool().unwrap_or(false);
    match &s.script {
        Script::Error(status, code, msg) => {
            (StatusCode::from_u16(*status).unwrap(), Json(json!({"code": code, "msg": msg, "debug_url": debug_url()})))
        }
        Script::Sync(data) if !is_async => (
            StatusCode::OK,
            Json(json!({
                "code": 0,
                "msg": "Success",
                "data": data,
                "debug_url": debug_url(),
                "usage": {"input_count": 50, "output_count": 100, "token_count": 150}
            })),
        ),
        _ => (StatusCode::OK, Json(json!({"code": 0, "msg": "Success", "execute_id": EXECUTE_ID, "debug_url": debug_url()}))),
    }
}

/// The run's state at this poll.
fn entry(s: &Shared, studio: bool) -> Value {
    let n = s.polls.lock().unwrap().len();
    let (running, end) = match &s.script {
        Script::Async(running, end) => (*running, end.clone()),
        Script::AsyncAfter503(end) => (0, end.clone()),
        _ => (0, End::Never),
    };
    let (status, output, code, msg) = match (n < running, end) {
        (true, _) | (_, End::Never) => ("Running", String::new(), "0", ""),
        (false, End::Success(out)) => ("Success", out, "0", ""),
        (false, End::Fail(code, msg)) => ("Fail", String::new(), code, msg),
    };
    let mut e = json!({
        "execute_id": EXECUTE_ID,
        "execute_status": status,
        "bot_id": "0",
        "connector_id": "1024",
        "connector_uid": "2437",
        "run_mode": 2,
        "logid": "20241029152003BC531DC784F1897B8F0A",
        "create_time": 1730186403,
        "update_time": 1730186410,
        "output": output,
        "error_code": code,
        "error_message": msg,
        "debug_url": debug_url(),
    });
    if studio {
        // Coze Studio's history: 64-bit IDs as numbers, `token` for the usage, `error_msg`.
        e["execute_id"] = json!(EXECUTE_ID.parse::<i64>().unwrap());
        e["token"] = json!(321);
        e["error_msg"] = e["error_message"].take();
    }
    e
}

async fn history(
    State(s): State<Shared>,
    headers: HeaderMap,
    Path((workflow_id, execute_id)): Path<(String, String)>,
) -> (StatusCode, Json<Value>) {
    if let Err(e) = authorized(&headers) {
        return e;
    }
    let first = s.polls.lock().unwrap().is_empty();
    let e = entry(&s, false);
    s.polls.lock().unwrap().push(format!("/v1/workflows/{workflow_id}/run_histories/{execute_id}"));
    if first && matches!(s.script, Script::AsyncAfter503(_)) {
        return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"code": 5000, "msg": "service unavailable"})));
    }
    (StatusCode::OK, Json(json!({"code": 0, "msg": "", "data": [e]})))
}

async fn studio_history(
    State(s): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> (StatusCode, Json<Value>) {
    if let Err(e) = authorized(&headers) {
        return e;
    }
    let e = entry(&s, true);
    s.polls.lock().unwrap().push(format!(
        "/v1/workflow/get_run_history?workflow_id={}&execute_id={}",
        q.get("workflow_id").cloned().unwrap_or_default(),
        q.get("execute_id").cloned().unwrap_or_default()
    ));
    (StatusCode::OK, Json(json!({"code": 0, "msg": "", "data": [e]})))
}
