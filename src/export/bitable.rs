//! Feishu Bitable (飞书多维表格): one record per node attempt, through the open platform.
//!
//! - Auth: a `tenant_access_token` from `POST /open-apis/auth/v3/tenant_access_token/internal`
//!   (app_id + app_secret), cached until a few minutes before its `expire`, and fetched again at
//!   once when a call answers an invalid/expired token code (see [`judge`]).
//! - Writes: `POST /open-apis/bitable/v1/apps/{app_token}/tables/{table_id}/records/batch_create`
//!   with at most [`MAX_RECORDS`] records a call and a `client_token` (a UUID) that is a pure
//!   function of the table and the part of the log the call covers ([`client_token`]). Feishu adds
//!   nothing for a call that repeats a token, so a retry after a lost answer — in this process,
//!   after a restart, or in another process that took the sink over — must carry exactly the same
//!   records: the sink asks for [`Sink::exact_retry`], so the exporter records each delivery's
//!   extent in the cursor row before sending it and whoever holds the sink next sends that extent
//!   again first. The exporter's one task per sink (and the lease: one process per sink) keeps
//!   writes to the table serialised, as Feishu requires; calls are spaced to stay under the limit.
//! - Answers carry a `code` in the body (HTTP 200 for some errors too): 0 is success; what each
//!   other code means and what is done about it is in [`judge`], with its source. A refused call
//!   writes nothing (batch_create is all or nothing), so its records stay in the log and are sent
//!   again after backoff; `exporters status` and the exporter alert show why.
//!
//! Field types: text (1), number (2), single select (3) for status and error kind, date (5) in
//! epoch ms, URL (15) for the run link. Runs themselves are not written (a table of node logs).

use super::config::BitableConfig;
use super::{Batch, Delivered, Sink, SinkError};
use crate::store::AttemptRecord;
use crate::vocab::{AttemptStatus, ErrorKind};
use futures::future::BoxFuture;
use serde::Serialize;
use serde_json::{Value, json};
use sha2::Digest;
use std::fmt;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// Most records one batch_create call carries. Feishu's pages disagree (the record API's error
/// table: 1254104 RecordAddOnceExceedLimit "limited to 500"; the field API's table: 1,000), so
/// the lower one.
pub const MAX_RECORDS: usize = 500;
/// Least time between two calls (batch_create allows 50 a second; Feishu advises against
/// concurrent or rapid writes to one table: 1254291).
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

/// The `client_token` of the `chunk`-th batch_create call of a delivery covering node attempt ids
/// in `(after, to]` of this table: a UUID (v4 layout) that depends on nothing else, so the same
/// extent sent again — by any process — carries the same token.
pub fn client_token(app_token: &str, table_id: &str, after: i64, to: i64, chunk: usize) -> String {
    let mut h = sha2::Sha256::new();
    h.update(format!("flowguard bitable\n{app_token}\n{table_id}\n{after}\n{to}\n{chunk}").as_bytes());
    let bytes: [u8; 16] = h.finalize()[..16].try_into().expect("16 bytes");
    uuid::Builder::from_random_bytes(bytes).into_uuid().to_string()
}

/// `RUN_ID:SEQ`, written without building a string.
struct RecordId<'a>(&'a AttemptRecord);

impl fmt::Display for RecordId<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.0.run_id, self.0.seq)
    }
}

/// The `run_url` template with `{run_id}` replaced, written without building a string.
struct RunUrl<'a>(&'a str, &'a str);

impl fmt::Display for RunUrl<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = self.0.split("{run_id}");
        if let Some(p) = parts.next() {
            f.write_str(p)?;
        }
        for p in parts {
            f.write_str(self.1)?;
            f.write_str(p)?;
        }
        Ok(())
    }
}

fn display<T: fmt::Display, S: serde::Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

#[derive(Serialize)]
struct Link<'a> {
    #[serde(serialize_with = "display")]
    link: RunUrl<'a>,
    text: &'a str,
}

/// The fields of one record, serialised straight into the request body.
#[derive(Serialize)]
struct Fields<'a> {
    #[serde(rename = "Record ID", serialize_with = "display")]
    record_id: RecordId<'a>,
    #[serde(rename = "Run")]
    run: &'a str,
    #[serde(rename = "Flow")]
    flow: &'a str,
    #[serde(rename = "Node")]
    node: &'a str,
    #[serde(rename = "Node kind")]
    kind: &'a str,
    #[serde(rename = "Attempt")]
    attempt: i64,
    #[serde(rename = "Status")]
    status: AttemptStatus,
    #[serde(rename = "Error kind", skip_serializing_if = "Option::is_none")]
    error_kind: Option<&'a str>,
    #[serde(rename = "Error", skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    #[serde(rename = "Started")]
    started: i64,
    #[serde(rename = "Duration ms")]
    duration_ms: i64,
    #[serde(rename = "Input bytes")]
    input_bytes: i64,
    #[serde(rename = "Output bytes")]
    output_bytes: i64,
    #[serde(rename = "Model", skip_serializing_if = "Option::is_none")]
    model: Option<&'a str>,
    #[serde(rename = "Tokens in", skip_serializing_if = "Option::is_none")]
    tokens_in: Option<i64>,
    #[serde(rename = "Tokens out", skip_serializing_if = "Option::is_none")]
    tokens_out: Option<i64>,
    #[serde(rename = "Run link", skip_serializing_if = "Option::is_none")]
    run_link: Option<Link<'a>>,
}

#[derive(Serialize)]
struct Record<'a> {
    fields: Fields<'a>,
}

#[derive(Serialize)]
struct Records<'a> {
    records: Vec<Record<'a>>,
}

/// What an answer's code means and what is done about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Delivered.
    Ok,
    /// The token was refused: fetch a new one and call again, once.
    NewToken,
    /// Not now: the call is made again after backoff (or the wait Feishu names).
    Retry(ErrorKind, &'static str),
    /// Refused until someone fixes the app, the table or the config. batch_create writes nothing
    /// of a refused call, so the records stay in the log and the call is made again after backoff
    /// (never dropped: Bitable is a log of every attempt); the exporter alert says why.
    Fix(ErrorKind, &'static str),
}

/// Judges an answer by its body `code` first (Feishu answers some errors with HTTP 200), then by
/// the HTTP status. Sources, checked December 2026:
/// - Bitable record/field API error tables (open.feishu.cn/document/server-docs/docs/bitable-v1,
///   e.g. …/app-table-field/update and the record data-structure page): 1254290 TooManyRequest
///   ("request too fast, try again later"); 1254291 Write conflict (concurrent writes to one
///   table: serialise, wait 0.5–1 s, retry); 1254607 "Data not ready, please try again later"
///   (HTTP 400; earlier edits still being processed or a batch too heavy: wait and retry);
///   1255040 request timed out (HTTP 504, retry); 1254036 base being copied (retry later);
///   1255001–1255005 internal errors; 1254045 FieldNameNotFound; 1254015 FieldTypeValueNotMatch;
///   1254104 RecordAddOnceExceedLimit; 1254003/1254040 wrong or unknown app_token;
///   1254004/1254041 wrong or unknown table_id; 1254302 permission denied (HTTP 403: the app
///   needs edit permission on the base).
/// - Open platform rate limits (频控策略, …/ukTMukTMukTM/uUzN04SN3QjL1cDN) and Lark's own CLI
///   (`LarkErrRateLimit = 99991400 // request frequency limit exceeded`): 99991400 with HTTP 429
///   and `x-ogw-ratelimit-reset` seconds.
/// - Token codes as the Feishu/Lark SDKs and clients treat them (fetch a new token, call once
///   more): 99991661 (access token missing/empty), 99991663 (invalid access token), 99991664
///   (invalid tenant access token), 99991668 (access token invalid/expired). 99991672 is a missing
///   permission scope (the app must be granted `bitable:app` or `base:record:create`): a new token
///   does not help.
pub fn judge(status: u16, code: i64) -> Verdict {
    use ErrorKind::*;
    match code {
        0 if status == 200 => Verdict::Ok,
        99991661 | 99991663 | 99991664 | 99991668 => Verdict::NewToken,
        99991400 | 1254290 => Verdict::Retry(RateLimited, "rate limited"),
        1254291 => Verdict::Retry(Upstream5xx, "write conflict on the table"),
        1254607 => Verdict::Retry(Upstream5xx, "data not ready"),
        1255040 => Verdict::Retry(Timeout, "Feishu timed out"),
        1254036 => Verdict::Retry(Upstream5xx, "the base is being copied"),
        1255001..=1255005 => Verdict::Retry(Upstream5xx, "Feishu internal error"),
        1254045 => Verdict::Fix(Upstream4xx, "a field is missing (run `flowguard exporters setup bitable`)"),
        1254015 | 1254060..=1254067 => {
            Verdict::Fix(Upstream4xx, "a field has another type than flowguard writes (see `flowguard exporters setup bitable`)")
        }
        1254104 => Verdict::Fix(Upstream4xx, "too many records in one call"),
        1254003 | 1254040 => Verdict::Fix(Upstream4xx, "no such base: check exporters.bitable.app_token"),
        1254004 | 1254041 => Verdict::Fix(Upstream4xx, "no such table: check exporters.bitable.table_id"),
        1254302 | 99991672 => {
            Verdict::Fix(AuthExpired, "the app lacks permission (grant `bitable:app` or `base:record:create` and edit access to the base)")
        }
        _ if status == 429 => Verdict::Retry(RateLimited, "rate limited"),
        _ if status >= 500 => Verdict::Retry(Upstream5xx, "server error"),
        _ if status == 401 || status == 403 => Verdict::Fix(AuthExpired, "not allowed"),
        _ => Verdict::Fix(Upstream4xx, "refused"),
    }
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

    fn fields<'a>(&'a self, a: &'a AttemptRecord) -> Fields<'a> {
        Fields {
            record_id: RecordId(a),
            run: &a.run_id,
            flow: &a.flow,
            node: &a.node_id,
            kind: &a.kind,
            attempt: a.attempt,
            status: a.status,
            error_kind: a.error_kind.as_deref(),
            error: a.error_message.as_deref(),
            started: a.started_at,
            duration_ms: a.duration_ms,
            input_bytes: a.input_bytes,
            output_bytes: a.output_bytes,
            model: a.model.as_deref(),
            tokens_in: a.tokens_in,
            tokens_out: a.tokens_out,
            run_link: self.cfg.run_url.as_deref().map(|u| Link { link: RunUrl(u, &a.run_id), text: &a.run_id }),
        }
    }

    /// The fields of one record.
    pub fn record(&self, a: &AttemptRecord) -> Value {
        serde_json::to_value(Record { fields: self.fields(a) }).unwrap_or(Value::Null)
    }

    /// The body of one batch_create call.
    pub fn body(&self, chunk: &[AttemptRecord]) -> Vec<u8> {
        let records = Records { records: chunk.iter().map(|a| Record { fields: self.fields(a) }).collect() };
        let mut out = Vec::with_capacity(chunk.len() * 400);
        // Writing plain structs of strings and numbers into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut out, &records);
        out
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
    async fn call(&self, method: reqwest::Method, url: &str, body: Option<Vec<u8>>) -> Result<Value, SinkError> {
        let mut fresh = false;
        loop {
            let token = self.token(fresh).await?;
            self.pace().await;
            let mut req = self.client.request(method.clone(), url).bearer_auth(&token);
            if let Some(b) = &body {
                req = req.header("Content-Type", "application/json; charset=utf-8").body(b.clone());
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
            let (kind, what) = match judge(status, code) {
                Verdict::Ok => return Ok(v),
                Verdict::NewToken if !fresh => {
                    fresh = true;
                    continue;
                }
                Verdict::NewToken => (ErrorKind::AuthExpired, "a newly fetched tenant_access_token was refused too"),
                Verdict::Retry(kind, what) | Verdict::Fix(kind, what) => (kind, what),
            };
            return Err(SinkError {
                kind,
                message: format!("Feishu answered HTTP {status}, code {code} ({what}): {msg}"),
                retry_after: reset.map(Duration::from_secs).or(retry_after),
            });
        }
    }

    async fn write(&self, batch: &Batch) -> Result<Delivered, SinkError> {
        let e = batch.extent;
        for (i, chunk) in batch.attempts.chunks(MAX_RECORDS).enumerate() {
            let token = client_token(&self.cfg.app_token, &self.cfg.table_id, e.attempts_after, e.attempts_to, i);
            let url = format!("{}?client_token={token}", self.table("records/batch_create"));
            self.call(reqwest::Method::POST, &url, Some(self.body(chunk))).await?;
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
    fn exact_retry(&self) -> bool {
        true
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
        b.call(reqwest::Method::POST, &b.table("fields"), Some(field.to_string().into_bytes()))
            .await
            .map_err(|e| anyhow::anyhow!("creating the field `{name}`: {}", e.message))?;
        done.push(format!("field `{name}` created"));
    }
    if done.is_empty() {
        done.push(format!("the table has every field ({})", FIELDS.len()));
    }
    Ok(done)
}
