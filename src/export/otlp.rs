//! OpenTelemetry traces over OTLP/HTTP with the JSON encoding (`POST /v1/traces`,
//! `application/json`), sent with a plain reqwest client from the exporter's own task — no SDK
//! batch processor (DESIGN.md §10). A run is a trace (its id derived from the run id) with a root
//! span sent when the run ends; each node attempt is a child span of that root, retries being
//! sibling spans. LLM attempts carry the GenAI semantic conventions (`gen_ai.operation.name`,
//! `gen_ai.provider.name`, `gen_ai.request.model`, `gen_ai.usage.input_tokens`,
//! `gen_ai.usage.output_tokens`) and every failed span `error.type` (the error kind). Ids are
//! derived from the records, so a batch sent twice is the same spans twice, which collectors
//! and trace stores fold by id.
//!
//! Answers: 2xx is delivered (a `partialSuccess.rejectedSpans` is counted as rejected); 429, 502,
//! 503, 504 (and 401/403, a credential to fix) are tried again honouring Retry-After; any other
//! 4xx means the collector will never take this batch: counted as rejected and passed.

use super::config::OtlpConfig;
use super::{Batch, Delivered, Sink, SinkError, attempt_id};
use crate::store::{AttemptRecord, RunRecord};
use crate::vocab::ErrorKind;
use futures::future::BoxFuture;
use serde_json::{Value, json};
use sha2::Digest;
use std::collections::BTreeMap;

pub struct Otlp {
    client: reqwest::Client,
    cfg: OtlpConfig,
    /// Configured model name → `gen_ai.provider.name`.
    providers: BTreeMap<String, String>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The trace id of a run: its UUID's 16 bytes, or a hash of another id.
pub fn trace_id(run_id: &str) -> String {
    match uuid::Uuid::parse_str(run_id) {
        Ok(u) => hex(u.as_bytes()),
        Err(_) => hex(&sha2::Sha256::digest(run_id.as_bytes())[..16]),
    }
}

/// The span id of the run's root span.
pub fn run_span_id(run_id: &str) -> String {
    hex(&sha2::Sha256::digest(format!("run:{run_id}").as_bytes())[..8])
}

/// The span id of a node attempt.
pub fn attempt_span_id(a: &AttemptRecord) -> String {
    hex(&sha2::Sha256::digest(format!("attempt:{}", attempt_id(a)).as_bytes())[..8])
}

fn nanos(ms: i64) -> String {
    (i128::from(ms) * 1_000_000).to_string()
}

fn attr(key: &str, v: Value) -> Option<Value> {
    let value = match v {
        Value::Null => return None,
        Value::Bool(b) => json!({"boolValue": b}),
        Value::Number(n) if n.is_i64() => json!({"intValue": n.to_string()}),
        Value::Number(n) => json!({"doubleValue": n}),
        Value::String(s) => json!({"stringValue": s}),
        other => json!({"stringValue": other.to_string()}),
    };
    Some(json!({"key": key, "value": value}))
}

fn attrs(pairs: Vec<(&str, Value)>) -> Vec<Value> {
    pairs.into_iter().filter_map(|(k, v)| attr(k, v)).collect()
}

/// OTLP status: 1 OK, 2 ERROR.
fn status(ok: bool, message: Option<&str>) -> Value {
    if ok { json!({"code": 1}) } else { json!({"code": 2, "message": message.unwrap_or("")}) }
}

impl Otlp {
    pub fn new(cfg: &OtlpConfig, providers: BTreeMap<String, String>) -> anyhow::Result<Otlp> {
        crate::init_tls();
        let client = reqwest::Client::builder().timeout(cfg.timeout.get()).build()?;
        Ok(Otlp { client, cfg: cfg.clone(), providers })
    }

    pub fn attempt_span(&self, a: &AttemptRecord) -> Value {
        let ok = matches!(a.status.as_str(), "succeeded" | "defaulted" | "skipped");
        let llm = a.kind == "llm";
        let mut pairs = vec![
            ("flowguard.run_id", json!(a.run_id)),
            ("flowguard.flow", json!(a.flow)),
            ("flowguard.node", json!(a.node_id)),
            ("flowguard.node_kind", json!(a.kind)),
            ("flowguard.attempt", json!(a.attempt)),
            ("flowguard.seq", json!(a.seq)),
            ("flowguard.status", json!(a.status)),
            ("flowguard.retried", json!(a.retried)),
            ("flowguard.action", json!(a.action)),
            ("flowguard.input_bytes", json!(a.input_bytes)),
            ("flowguard.output_bytes", json!(a.output_bytes)),
            ("http.response.status_code", json!(a.http_status)),
            ("error.type", json!(if ok { None } else { a.error_kind.clone().or(Some("_OTHER".into())) })),
        ];
        let mut name = format!("{} {}", a.kind, a.node_id);
        if llm {
            let model = a.model.clone();
            let provider = model.as_ref().and_then(|m| self.providers.get(m)).cloned();
            name = format!("chat {}", model.clone().unwrap_or_default());
            pairs.extend([
                ("gen_ai.operation.name", json!("chat")),
                ("gen_ai.provider.name", json!(provider)),
                ("gen_ai.request.model", json!(model)),
                ("gen_ai.usage.input_tokens", json!(a.tokens_in)),
                ("gen_ai.usage.output_tokens", json!(a.tokens_out)),
            ]);
        }
        json!({
            "traceId": trace_id(&a.run_id),
            "spanId": attempt_span_id(a),
            "parentSpanId": run_span_id(&a.run_id),
            "name": name.trim(),
            "kind": if llm { 3 } else { 1 },
            "startTimeUnixNano": nanos(a.started_at),
            "endTimeUnixNano": nanos(a.ended_at.max(a.started_at)),
            "attributes": attrs(pairs),
            "status": status(ok, a.error_message.as_deref()),
        })
    }

    pub fn run_span(&self, r: &RunRecord) -> Value {
        let ok = r.status.is_success() || !r.status.is_final() && r.error_kind.is_none();
        let end = r.ended_at.unwrap_or(r.started_at).max(r.started_at);
        json!({
            "traceId": trace_id(&r.id),
            "spanId": run_span_id(&r.id),
            "name": format!("run {}", r.flow),
            "kind": 1,
            "startTimeUnixNano": nanos(r.started_at),
            "endTimeUnixNano": nanos(end),
            "attributes": attrs(vec![
                ("flowguard.run_id", json!(r.id)),
                ("flowguard.flow", json!(r.flow)),
                ("flowguard.flow_version", json!(r.flow_hash)),
                ("flowguard.trigger", json!(r.trigger)),
                ("flowguard.canary", json!(r.canary)),
                ("flowguard.status", json!(r.status)),
                ("flowguard.failed_node", json!(r.failed_node)),
                ("flowguard.severity", json!(r.severity)),
                ("error.type", json!(if ok { None } else { r.error_kind.clone().or(Some("_OTHER".into())) })),
            ]),
            "status": status(ok, r.error_message.as_deref()),
        })
    }

    /// The ExportTraceServiceRequest of a batch.
    pub fn body(&self, batch: &Batch) -> Value {
        let mut spans: Vec<Value> = batch.attempts.iter().map(|a| self.attempt_span(a)).collect();
        spans.extend(batch.runs.iter().map(|r| self.run_span(r)));
        json!({
            "resourceSpans": [{
                "resource": {"attributes": attrs(vec![("service.name", json!(self.cfg.service_name))])},
                "scopeSpans": [{
                    "scope": {"name": "flowguard", "version": env!("CARGO_PKG_VERSION")},
                    "spans": spans,
                }],
            }],
        })
    }

    async fn export(&self, batch: &Batch) -> Result<Delivered, SinkError> {
        let mut req = self.client.post(&self.cfg.endpoint).header("Content-Type", "application/json");
        for (k, v) in &self.cfg.headers {
            req = req.header(k, v);
        }
        let resp = req.body(self.body(batch).to_string()).send().await.map_err(SinkError::transport)?;
        let code = resp.status().as_u16();
        let retry_after = crate::classify::retry_after(resp.headers().get("retry-after").and_then(|v| v.to_str().ok()));
        let body = crate::net::read_limited(resp, 1024 * 1024).await.map_err(|e| SinkError::new(ErrorKind::Network, e))?;
        match code {
            200..=299 => {
                let answer: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let rejected = answer["partialSuccess"]["rejectedSpans"]
                    .as_u64()
                    .or_else(|| answer["partialSuccess"]["rejectedSpans"].as_str().and_then(|s| s.parse().ok()))
                    .unwrap_or(0) as usize;
                if rejected > 0 {
                    tracing::warn!(sink = "otlp", rejected, message = %answer["partialSuccess"]["errorMessage"].as_str().unwrap_or(""), "the collector rejected spans");
                }
                Ok(Delivered { rejected })
            }
            401 | 403 => Err(SinkError {
                kind: ErrorKind::AuthExpired,
                message: format!("the collector answered HTTP {code}: check exporters.otlp.headers"),
                retry_after,
            }),
            429 | 502 | 503 | 504 => {
                let (kind, message) = crate::classify::classify_status(code, &body, false);
                Err(SinkError { kind, message: format!("the collector answered {message}"), retry_after })
            }
            _ if code >= 500 => {
                let (kind, message) = crate::classify::classify_status(code, &body, false);
                Err(SinkError { kind, message: format!("the collector answered {message}"), retry_after })
            }
            _ => {
                tracing::warn!(sink = "otlp", status = code, message = %crate::classify::body_message(&body), spans = batch.len(), "the collector refused the batch for good (not retryable); it is counted as rejected");
                Ok(Delivered { rejected: batch.len() })
            }
        }
    }
}

impl Sink for Otlp {
    fn name(&self) -> &'static str {
        "otlp"
    }
    fn send<'a>(&'a self, batch: &'a Batch) -> BoxFuture<'a, Result<Delivered, SinkError>> {
        Box::pin(self.export(batch))
    }
}
