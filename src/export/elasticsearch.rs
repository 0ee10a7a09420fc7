//! Elasticsearch / OpenSearch: `POST /_bulk` (NDJSON). A node attempt is a `create` with the
//! stable `_id` `RUN_ID:SEQ` (an answer of 409, already there, is a delivery); a run is an `index`
//! with the run id as `_id` (it is replaced as the run ends, waits for a human, resumes). Every
//! item of the answer is read, since `_bulk` answers HTTP 200 with per-item errors: 429 /
//! `es_rejected_execution_exception` and 5xx items are tried again (the whole batch: the items
//! that made it answer 409 next time), other refusals (a mapping conflict) are logged and counted
//! as rejected, never retried forever. Auth: an API key or basic auth, from the environment.
//!
//! The documents' fields are declared once ([`ATTEMPT_FIELDS`], [`RUN_FIELDS`]): the index
//! templates `exporters setup elasticsearch` installs are built from them, with `dynamic: false`
//! so nothing unplanned is mapped.

use super::config::ElasticsearchConfig;
use super::{Batch, Delivered, Sink, SinkError};
use crate::store::{AttemptRecord, RunRecord};
use crate::vocab::ErrorKind;
use futures::future::BoxFuture;
use serde_json::{Value, json};
use std::fmt::Write;

/// The fields of a node attempt document and their mapping type.
pub const ATTEMPT_FIELDS: &[(&str, &str)] = &[
    ("@timestamp", "date"),
    ("record", "keyword"),
    ("run_id", "keyword"),
    ("seq", "long"),
    ("flow", "keyword"),
    ("node", "keyword"),
    ("node_kind", "keyword"),
    ("attempt", "long"),
    ("iteration", "long"),
    ("status", "keyword"),
    ("success", "boolean"),
    ("ended_at", "date"),
    ("duration_ms", "long"),
    ("input_bytes", "long"),
    ("output_bytes", "long"),
    ("retried", "boolean"),
    ("action", "keyword"),
    ("error_kind", "keyword"),
    ("error_message", "text"),
    ("model", "keyword"),
    ("tokens_in", "long"),
    ("tokens_out", "long"),
    ("http_status", "long"),
];

/// The fields of a run document and their mapping type.
pub const RUN_FIELDS: &[(&str, &str)] = &[
    ("@timestamp", "date"),
    ("record", "keyword"),
    ("run_id", "keyword"),
    ("flow", "keyword"),
    ("flow_version", "keyword"),
    ("trigger", "keyword"),
    ("canary", "boolean"),
    ("status", "keyword"),
    ("success", "boolean"),
    ("final", "boolean"),
    ("ended_at", "date"),
    ("duration_ms", "long"),
    ("failed_node", "keyword"),
    ("error_kind", "keyword"),
    ("error_message", "text"),
    ("severity", "keyword"),
];

/// A node attempt document, serialised straight into the `_bulk` body.
#[derive(serde::Serialize)]
struct AttemptDoc<'a> {
    #[serde(rename = "@timestamp")]
    timestamp: i64,
    record: &'static str,
    run_id: &'a str,
    seq: i64,
    flow: &'a str,
    node: &'a str,
    node_kind: &'a str,
    attempt: i64,
    iteration: Option<i64>,
    status: crate::vocab::AttemptStatus,
    success: bool,
    ended_at: i64,
    duration_ms: i64,
    input_bytes: i64,
    output_bytes: i64,
    retried: bool,
    action: Option<&'a str>,
    error_kind: Option<&'a str>,
    error_message: Option<&'a str>,
    model: Option<&'a str>,
    tokens_in: Option<i64>,
    tokens_out: Option<i64>,
    http_status: Option<i64>,
}

impl<'a> AttemptDoc<'a> {
    fn new(a: &'a AttemptRecord) -> Self {
        AttemptDoc {
            timestamp: a.started_at,
            record: "attempt",
            run_id: &a.run_id,
            seq: a.seq,
            flow: &a.flow,
            node: &a.node_id,
            node_kind: &a.kind,
            attempt: a.attempt,
            iteration: a.iteration,
            status: a.status,
            success: matches!(a.status.as_str(), "succeeded" | "defaulted" | "skipped"),
            ended_at: a.ended_at,
            duration_ms: a.duration_ms,
            input_bytes: a.input_bytes,
            output_bytes: a.output_bytes,
            retried: a.retried,
            action: a.action.as_deref(),
            error_kind: a.error_kind.as_deref(),
            error_message: a.error_message.as_deref(),
            model: a.model.as_deref(),
            tokens_in: a.tokens_in,
            tokens_out: a.tokens_out,
            http_status: a.http_status,
        }
    }
}

/// A run document.
#[derive(serde::Serialize)]
struct RunDoc<'a> {
    #[serde(rename = "@timestamp")]
    timestamp: i64,
    record: &'static str,
    run_id: &'a str,
    flow: &'a str,
    flow_version: &'a str,
    trigger: &'a str,
    canary: bool,
    status: crate::vocab::RunStatus,
    success: bool,
    #[serde(rename = "final")]
    is_final: bool,
    ended_at: Option<i64>,
    duration_ms: Option<i64>,
    failed_node: Option<&'a str>,
    error_kind: Option<&'a str>,
    error_message: Option<&'a str>,
    severity: Option<&'a str>,
}

impl<'a> RunDoc<'a> {
    fn new(r: &'a RunRecord) -> Self {
        RunDoc {
            timestamp: r.started_at,
            record: "run",
            run_id: &r.id,
            flow: &r.flow,
            flow_version: &r.flow_hash,
            trigger: &r.trigger,
            canary: r.canary,
            status: r.status,
            success: r.status.is_success(),
            is_final: r.status.is_final(),
            ended_at: r.ended_at,
            duration_ms: r.duration_ms,
            failed_node: r.failed_node.as_deref(),
            error_kind: r.error_kind.as_deref(),
            error_message: r.error_message.as_deref(),
            severity: r.severity.as_deref(),
        }
    }
}

/// The `_bulk` action line of a document.
#[derive(serde::Serialize)]
enum Action<'a> {
    #[serde(rename = "create")]
    Create { _index: &'a str, _id: &'a str },
    #[serde(rename = "index")]
    Index { _index: &'a str, _id: &'a str },
}

pub fn attempt_doc(a: &AttemptRecord) -> Value {
    serde_json::to_value(AttemptDoc::new(a)).unwrap_or(Value::Null)
}

pub fn run_doc(r: &RunRecord) -> Value {
    serde_json::to_value(RunDoc::new(r)).unwrap_or(Value::Null)
}

/// The composable index template for `pattern`, with explicit mappings of `fields`.
pub fn template(pattern: &str, fields: &[(&str, &str)]) -> Value {
    let props: serde_json::Map<String, Value> = fields
        .iter()
        .map(|(name, ty)| {
            let m = match *ty {
                "date" => json!({"type": "date", "format": "strict_date_optional_time||epoch_millis"}),
                "text" => json!({"type": "text"}),
                t => json!({"type": t}),
            };
            (name.to_string(), m)
        })
        .collect();
    json!({
        "index_patterns": [format!("{pattern}*")],
        "priority": 200,
        "template": {
            "settings": {"number_of_shards": 1},
            "mappings": {"dynamic": false, "properties": props}
        },
        "_meta": {"managed_by": "flowguard"}
    })
}

pub struct Elasticsearch {
    client: reqwest::Client,
    cfg: ElasticsearchConfig,
}

impl Elasticsearch {
    pub fn new(cfg: &ElasticsearchConfig) -> anyhow::Result<Elasticsearch> {
        crate::init_tls();
        let client = reqwest::Client::builder().timeout(cfg.timeout.get()).build()?;
        Ok(Elasticsearch { client, cfg: cfg.clone() })
    }

    /// The index a node attempt goes to: the same one whenever it is sent.
    pub fn attempt_index(&self, a: &AttemptRecord) -> String {
        if !self.cfg.dated {
            return self.cfg.index.clone();
        }
        let day = jiff::Timestamp::from_millisecond(a.started_at).map(|t| t.strftime("%Y.%m.%d").to_string()).unwrap_or_default();
        format!("{}-{day}", self.cfg.index)
    }

    fn url(&self, path: &str) -> String {
        format!("{}/{}", self.cfg.url.trim_end_matches('/'), path.trim_start_matches('/'))
    }

    /// A request with the configured credentials.
    pub fn request(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        let r = self.client.request(method, url);
        match (&self.cfg.api_key, &self.cfg.username) {
            (Some(k), _) => r.header("Authorization", format!("ApiKey {k}")),
            (None, Some(u)) => r.basic_auth(u, self.cfg.password.as_deref()),
            _ => r,
        }
    }

    /// The `_bulk` body of a batch, written straight from the records (no JSON tree per record).
    pub fn body(&self, batch: &Batch) -> Vec<u8> {
        let mut out = Vec::with_capacity(batch.len() * 600);
        let mut id = String::new();
        let mut index = String::new();
        // Serialising plain structs of strings and numbers into a Vec cannot fail.
        for a in &batch.attempts {
            id.clear();
            let _ = write!(id, "{}:{}", a.run_id, a.seq);
            let index = if self.cfg.dated {
                index.clear();
                let _ = write!(index, "{}-", self.cfg.index);
                if let Ok(t) = jiff::Timestamp::from_millisecond(a.started_at) {
                    let _ = write!(index, "{}", t.strftime("%Y.%m.%d"));
                }
                index.as_str()
            } else {
                self.cfg.index.as_str()
            };
            let _ = serde_json::to_writer(&mut out, &Action::Create { _index: index, _id: &id });
            out.push(b'\n');
            let _ = serde_json::to_writer(&mut out, &AttemptDoc::new(a));
            out.push(b'\n');
        }
        for r in &batch.runs {
            let _ = serde_json::to_writer(&mut out, &Action::Index { _index: &self.cfg.runs_index, _id: &r.id });
            out.push(b'\n');
            let _ = serde_json::to_writer(&mut out, &RunDoc::new(r));
            out.push(b'\n');
        }
        out
    }

    async fn bulk(&self, batch: &Batch) -> Result<Delivered, SinkError> {
        let resp = self
            .request(reqwest::Method::POST, &self.url("_bulk"))
            .header("Content-Type", "application/x-ndjson")
            .body(self.body(batch))
            .send()
            .await
            .map_err(SinkError::transport)?;
        let status = resp.status().as_u16();
        let retry_after = crate::classify::retry_after(resp.headers().get("retry-after").and_then(|v| v.to_str().ok()));
        let body = crate::net::read_limited(resp, crate::net::MAX_BODY).await.map_err(|e| SinkError::new(ErrorKind::Network, e))?;
        if status != 200 {
            let (kind, message) = match status {
                401 | 403 => (
                    ErrorKind::AuthExpired,
                    format!("HTTP {status}: the credentials were refused (check exporters.elasticsearch api_key / username)"),
                ),
                _ => crate::classify::classify_status(status, &body, false),
            };
            return Err(SinkError { kind, message: format!("_bulk answered {message}"), retry_after });
        }
        let answer: Value = serde_json::from_slice(&body)
            .map_err(|e| SinkError::new(ErrorKind::Upstream5xx, format!("_bulk answered HTTP 200 with a body that is not JSON: {e}")))?;
        judge_items(&answer, batch.len())
    }
}

/// Reads every item of a `_bulk` answer: counts the refused ones, or asks for the batch again
/// when some item may pass later.
pub fn judge_items(answer: &Value, expected: usize) -> Result<Delivered, SinkError> {
    if answer["errors"] == Value::Bool(false) {
        return Ok(Delivered::default());
    }
    let items = answer["items"].as_array().map(Vec::as_slice).unwrap_or_default();
    if items.len() != expected {
        return Err(SinkError::new(ErrorKind::Upstream5xx, format!("_bulk answered {} items for {expected} operations", items.len())));
    }
    let mut rejected = 0;
    let mut retry = 0;
    let mut first_retry = String::new();
    for item in items {
        let Some((op, r)) = item.as_object().and_then(|o| o.iter().next()) else { continue };
        let status = r["status"].as_u64().unwrap_or(0);
        let ty = r["error"]["type"].as_str().unwrap_or("");
        if (200..300).contains(&status) || (status == 409 && op == "create") {
            continue;
        }
        if status == 429 || status >= 500 || ty == "es_rejected_execution_exception" {
            retry += 1;
            if first_retry.is_empty() {
                first_retry = format!("{status} {ty}");
            }
            continue;
        }
        rejected += 1;
        tracing::warn!(
            sink = "elasticsearch",
            index = %r["_index"].as_str().unwrap_or(""),
            id = %r["_id"].as_str().unwrap_or(""),
            status,
            error = %ty,
            reason = %r["error"]["reason"].as_str().unwrap_or(""),
            "Elasticsearch refused a record for good; it is counted as rejected and not sent again"
        );
    }
    if retry > 0 {
        let kind = if first_retry.starts_with("429") || first_retry.contains("rejected_execution") {
            ErrorKind::RateLimited
        } else {
            ErrorKind::Upstream5xx
        };
        return Err(SinkError::new(
            kind,
            format!("{retry} of {expected} records were refused for now ({first_retry}); the batch is sent again"),
        ));
    }
    Ok(Delivered { rejected })
}

impl Sink for Elasticsearch {
    fn name(&self) -> &'static str {
        "elasticsearch"
    }
    fn send<'a>(&'a self, batch: &'a Batch) -> BoxFuture<'a, Result<Delivered, SinkError>> {
        Box::pin(self.bulk(batch))
    }
}

/// `exporters setup elasticsearch`: installs the index templates (and, given a Kibana URL, the
/// saved objects). Returns what was done, one line each.
pub async fn setup(cfg: &ElasticsearchConfig, kibana_objects: &str) -> anyhow::Result<Vec<String>> {
    let es = Elasticsearch::new(cfg)?;
    let mut done = Vec::new();
    for (name, pattern, fields) in [("flowguard-attempts", &cfg.index, ATTEMPT_FIELDS), ("flowguard-runs", &cfg.runs_index, RUN_FIELDS)] {
        let url = es.url(&format!("_index_template/{name}"));
        let resp = es.request(reqwest::Method::PUT, &url).json(&template(pattern, fields)).send().await.map_err(|e| {
            let (_, m) = crate::classify::classify_transport(&e.without_url());
            anyhow::anyhow!("installing the index template {name}: {m}")
        })?;
        let status = resp.status();
        let body = crate::net::read_limited(resp, 64 * 1024).await.unwrap_or_default();
        if !status.is_success() {
            anyhow::bail!("installing the index template {name}: HTTP {status}: {}", crate::classify::body_message(&body));
        }
        done.push(format!("index template {name} installed (index pattern {pattern}*)"));
    }
    if let Some(kibana) = &cfg.kibana_url {
        let url = format!("{}/api/saved_objects/_import?overwrite=true", kibana.trim_end_matches('/'));
        // The import takes one multipart/form-data part named `file`.
        let boundary = format!("flowguard{:016x}", fastrand::u64(..));
        let form = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"flowguard-kibana.ndjson\"\r\nContent-Type: application/ndjson\r\n\r\n{kibana_objects}\r\n--{boundary}--\r\n"
        );
        let resp = es
            .request(reqwest::Method::POST, &url)
            .header("kbn-xsrf", "flowguard")
            .header("Content-Type", format!("multipart/form-data; boundary={boundary}"))
            .body(form)
            .send()
            .await
            .map_err(|e| {
                let (_, m) = crate::classify::classify_transport(&e.without_url());
                anyhow::anyhow!("importing the Kibana saved objects: {m}")
            })?;
        let status = resp.status();
        let body = crate::net::read_limited(resp, 1024 * 1024).await.unwrap_or_default();
        let answer: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if !status.is_success() || answer["success"] == Value::Bool(false) {
            anyhow::bail!("importing the Kibana saved objects: HTTP {status}: {}", crate::classify::body_message(&body));
        }
        done.push(format!("Kibana saved objects imported ({} objects)", answer["successCount"].as_u64().unwrap_or(0)));
    }
    Ok(done)
}
