//! Feishu Bitable (飞书多维表格): one record per node attempt, through the open platform.
//!
//! - Auth: a `tenant_access_token` from `POST /open-apis/auth/v3/tenant_access_token/internal`
//!   (app_id + app_secret), cached until a few minutes before its `expire`, and fetched again at
//!   once when a call answers an invalid/expired token code (99991661, 99991663).
//! - Writes: `POST /open-apis/bitable/v1/apps/{app_token}/tables/{table_id}/records/batch_create`
//!   with at most 1,000 records a call and a `client_token` (a UUID derived from the records'
//!   stable ids), so a call retried after a lost answer does not add the records twice. The
//!   exporter's one task per sink (and the lease: one process per sink) keeps writes to the table
//!   serialised, as Feishu requires; calls are spaced to stay under the 50/s limit.
//! - Answers carry a `code` in the body: 0 is success; the rate limit (1254290, 99991400, HTTP
//!   429, waiting `x-ogw-ratelimit-reset` seconds), a write conflict (1254291), data not ready
//!   (1254607) and 5xx are tried again; any other code (a missing field: run `flowguard exporters
//!   setup bitable`) keeps the records in the log and is reported, since batch_create writes
//!   nothing of a refused call.
//!
//! Field types: text (1), number (2), single select (3) for status and error kind, date (5) in
//! epoch ms, URL (15) for the run link. Runs themselves are not written (a table of node logs).

use super::config::BitableConfig;
use super::{Batch, Delivered, Sink, SinkError, attempt_id};
use crate::store::AttemptRecord;
use crate::vocab::{AttemptStatus, ErrorKind};
use futures::future::BoxFuture;
use serde_json::{Value, json};
use sha2::Digest;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// Most records one batch_create takes.
pub const MAX_RECORDS: usize = 1000;
/// Least time between two calls (the API allows 50 a second).
const SPACING: Duration = Duration::from_millis(20);

/// The table's fields: (name, Feishu field type).
pub const FIELDS: &[(&str, u8)] = &[
    ("Record ID", 1),
    ("Run", 1),
    ("Flow", 1),
    ("Node", 1),
    ("Node kind", 1),
    ("Attempt", 2),
    ("Status", 3),
    ("Error kind", 3),
    ("Error", 1),
    ("Started", 5),
    ("Duration ms", 2),
    ("Input bytes", 2),
    ("Output bytes", 2),
    ("Model", 1),
    ("Tokens in", 2),
    ("Tokens out", 2),
    ("Run link", 15),
];

struct Token {
    value: String,
    until: Instant,
}

pub struct Bitable {
    client: reqwest::Client,
    cfg: BitableConfig,
    token: Mutex<Option<Token>>,
    last_call: Mutex<Option<Instant>>,
}

/// A UUID (v4 layout) derived from the records' ids: the same records, the same token.
pub fn client_token(records: &[AttemptRecord]) -> String {
    let mut h = sha2::Sha256::new();
    for a in records {
        h.update(attempt_id(a).as_bytes());
        h.update(b"\n");
    }
    let bytes: [u8; 16] = h.finalize()[..16].try_into().expect("16 bytes");
    uuid::Builder::from_random_bytes(bytes).into_uuid().to_string()
}

impl Bitable {
    pub fn new(cfg: &BitableConfig) -> anyhow::Result<Bitable> {
        crate::init_tls();
        let client = reqwest::Client::builder().timeout(cfg.timeout.get()).build()?;
        Ok(Bitable { client, cfg: cfg.clone(), token: Mutex::new(None), last_call: Mutex::new(None) })
    }

    fn url(&self, path: &str) -> String {
        format!("{}/open-apis/{path}", self.cfg.base_url.trim_end_matches('/'))
    }

    fn table(&self, rest: &str) -> String {
        self.url(&format!("bitable/v1/apps/{}/tables/{}/{rest}", self.cfg.app_token, self.cfg.table_id))
    }

    /// The fields of one record.
    pub fn record(&self, a: &AttemptRecord) -> Value {
        let mut f = serde_json::Map::new();
        let mut put = |k: &str, v: Value| {
            if !v.is_null() {
                f.insert(k.to_owned(), v);
            }
        };
        put("Record ID", json!(attempt_id(a)));
        put("Run", json!(a.run_id));
        put("Flow", json!(a.flow));
        put("Node", json!(a.node_id));
        put("Node kind", json!(a.kind));
        put("Attempt", json!(a.attempt));
        put("Status", json!(a.status));
        put("Error kind", json!(a.error_kind));
        put("Error", json!(a.error_message));
        put("Started", json!(a.started_at));
        put("Duration ms", json!(a.duration_ms));
        put("Input bytes", json!(a.input_bytes));
        put("Output bytes", json!(a.output_bytes));
        put("Model", json!(a.model));
        put("Tokens in", json!(a.tokens_in));
        put("Tokens out", json!(a.tokens_out));
        if let Some(u) = &self.cfg.run_url {
            put("Run link", json!({"link": u.replace("{run_id}", &a.run_id), "text": a.run_id}));
        }
        json!({ "fields": f })
    }

    /// A valid tenant_access_token: the cached one, or a new one.
    async fn token(&self, fresh: bool) -> Result<String, SinkError> {
        let mut t = self.token.lock().await;
        if !fresh && let Some(tok) = t.as_ref().filter(|t| t.until > Instant::now()) {
            return Ok(tok.value.clone());
        }
        let resp = self
            .client
            .post(self.url("auth/v3/tenant_access_token/internal"))
            .json(&json!({"app_id": self.cfg.app_id, "app_secret": self.cfg.app_secret}))
            .send()
            .await
            .map_err(SinkError::transport)?;
        let status = resp.status().as_u16();
        let body = crate::net::read_limited(resp, 64 * 1024).await.map_err(|e| SinkError::new(ErrorKind::Network, e))?;
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let code = v["code"].as_i64().unwrap_or(-1);
        let Some(token) = v["tenant_access_token"].as_str().filter(|_| code == 0) else {
            let kind = if status >= 500 { ErrorKind::Upstream5xx } else { ErrorKind::AuthExpired };
            return Err(SinkError::new(
                kind,
                format!(
                    "Feishu refused the app credentials (HTTP {status}, code {code}: {}); check exporters.bitable.app_id / app_secret",
                    v["msg"].as_str().unwrap_or("")
                ),
            ));
        };
        // Fetched again a few minutes before it expires (Feishu hands out a new one in its last 30 minutes).
        let expire = Duration::from_secs(v["expire"].as_u64().unwrap_or(7200));
        let until = Instant::now() + expire.saturating_sub(Duration::from_secs(300)).max(expire / 2);
        *t = Some(Token { value: token.to_owned(), until });
        Ok(token.to_owned())
    }

    /// Spaces calls to stay under the rate limit.
    async fn pace(&self) {
        let mut last = self.last_call.lock().await;
        if let Some(l) = *last {
            let since = l.elapsed();
            if since < SPACING {
                tokio::time::sleep(SPACING - since).await;
            }
        }
        *last = Some(Instant::now());
    }

    /// One authorised call; the token is fetched again once on its expiry codes.
    async fn call(&self, method: reqwest::Method, url: &str, body: Option<&Value>) -> Result<Value, SinkError> {
        let mut fresh = false;
        loop {
            let token = self.token(fresh).await?;
            self.pace().await;
            let mut req = self.client.request(method.clone(), url).bearer_auth(&token);
            if let Some(b) = body {
                req = req.header("Content-Type", "application/json; charset=utf-8").body(b.to_string());
            }
            let resp = req.send().await.map_err(SinkError::transport)?;
            let status = resp.status().as_u16();
            let reset =
                resp.headers().get("x-ogw-ratelimit-reset").and_then(|v| v.to_str().ok()).and_then(|s| s.trim().parse::<u64>().ok());
            let retry_after = crate::classify::retry_after(resp.headers().get("retry-after").and_then(|v| v.to_str().ok()));
            let bytes = crate::net::read_limited(resp, crate::net::MAX_BODY).await.map_err(|e| SinkError::new(ErrorKind::Network, e))?;
            let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let code = v["code"].as_i64().unwrap_or(if status == 200 { 0 } else { -1 });
            let msg = v["msg"].as_str().unwrap_or("").to_owned();
            if status == 200 && code == 0 {
                return Ok(v);
            }
            if matches!(code, 99991661 | 99991663) && !fresh {
                fresh = true;
                continue;
            }
            let wait = reset.map(Duration::from_secs).or(retry_after);
            let (kind, what) = match code {
                1254290 | 99991400 => (ErrorKind::RateLimited, "rate limited"),
                1254291 => (ErrorKind::Upstream5xx, "write conflict on the table"),
                1254607 => (ErrorKind::Upstream5xx, "data not ready"),
                99991661 | 99991663 => (ErrorKind::AuthExpired, "the tenant_access_token was refused"),
                1254045 => (ErrorKind::Upstream4xx, "a field is missing (run `flowguard exporters setup bitable`)"),
                _ if status == 429 => (ErrorKind::RateLimited, "rate limited"),
                _ if status >= 500 => (ErrorKind::Upstream5xx, "server error"),
                _ if status == 401 || status == 403 => (ErrorKind::AuthExpired, "not allowed"),
                _ => (ErrorKind::Upstream4xx, "refused"),
            };
            return Err(SinkError {
                kind,
                message: format!("Feishu answered HTTP {status}, code {code} ({what}): {msg}"),
                retry_after: wait,
            });
        }
    }

    async fn write(&self, batch: &Batch) -> Result<Delivered, SinkError> {
        for chunk in batch.attempts.chunks(MAX_RECORDS) {
            let records: Vec<Value> = chunk.iter().map(|a| self.record(a)).collect();
            let url = format!("{}?client_token={}", self.table("records/batch_create"), client_token(chunk));
            self.call(reqwest::Method::POST, &url, Some(&json!({ "records": records }))).await?;
        }
        Ok(Delivered::default())
    }

    /// The table's field names.
    async fn field_names(&self) -> Result<Vec<String>, SinkError> {
        let mut names = Vec::new();
        let mut page: Option<String> = None;
        loop {
            let mut url = format!("{}?page_size=100", self.table("fields"));
            if let Some(p) = &page {
                url.push_str(&format!("&page_token={p}"));
            }
            let v = self.call(reqwest::Method::GET, &url, None).await?;
            names.extend(v["data"]["items"].as_array().into_iter().flatten().filter_map(|f| f["field_name"].as_str().map(str::to_owned)));
            match v["data"]["page_token"].as_str().filter(|_| v["data"]["has_more"] == true) {
                Some(p) => page = Some(p.to_owned()),
                None => return Ok(names),
            }
        }
    }
}

impl Sink for Bitable {
    fn name(&self) -> &'static str {
        "bitable"
    }
    fn send<'a>(&'a self, batch: &'a Batch) -> BoxFuture<'a, Result<Delivered, SinkError>> {
        Box::pin(self.write(batch))
    }
}

/// `exporters setup bitable`: creates the fields the table lacks. Returns what was done.
pub async fn setup(cfg: &BitableConfig) -> anyhow::Result<Vec<String>> {
    let b = Bitable::new(cfg)?;
    let have = b.field_names().await.map_err(|e| anyhow::anyhow!(e.message))?;
    let mut done = Vec::new();
    for (name, ty) in FIELDS {
        if have.iter().any(|h| h == name) {
            continue;
        }
        let mut field = json!({"field_name": name, "type": ty});
        let options: Vec<&str> = match *name {
            "Status" => AttemptStatus::NAMES.to_vec(),
            "Error kind" => ErrorKind::NAMES.to_vec(),
            _ => Vec::new(),
        };
        if !options.is_empty() {
            field["property"] = json!({"options": options.iter().map(|o| json!({"name": o})).collect::<Vec<_>>()});
        }
        b.call(reqwest::Method::POST, &b.table("fields"), Some(&field))
            .await
            .map_err(|e| anyhow::anyhow!("creating the field `{name}`: {}", e.message))?;
        done.push(format!("field `{name}` created"));
    }
    if done.is_empty() {
        done.push(format!("the table has every field ({})", FIELDS.len()));
    }
    Ok(done)
}
