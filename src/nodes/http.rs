//! `http`: one HTTP request to a configured endpoint (or a full `url`), judged by its status and,
//! when asked, by what its JSON body must contain.
//!
//! ```yaml
//! - id: publish
//!   kind: http
//!   endpoint: publisher      # base_url and secret headers come from flowguard.yaml
//!   method: POST
//!   path: /v1/videos
//!   body: { title: "{{ nodes.script.title }}" }
//!   side_effect: true
//!   idempotent: true         # the target honours the Idempotency-Key flowguard sends
//! ```

use super::{BuildCx, Endpoint, Meta, NodeError, NodeKind, Output, Raw, RunCx};
use crate::classify::{classify_ok_body, classify_status, classify_transport, retry_after};
use crate::flow::Diagnostic;
use crate::flow::template::{JsonTmpl, Tmpl};
use crate::vocab::ErrorKind;
use futures::future::BoxFuture;
use serde::Deserialize;
use serde_json::Value as Json;
use std::collections::BTreeMap;
use std::sync::Arc;

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Params {
    /// An endpoint named in the config.
    endpoint: Option<String>,
    /// A full URL (when no endpoint is used).
    url: Option<String>,
    /// Appended to the endpoint's base_url.
    #[serde(default)]
    path: String,
    /// `GET`, `POST` (default when there is a `body`, else `GET`), `PUT`, `PATCH` or `DELETE`.
    method: Option<String>,
    /// Request headers (templates); the endpoint's headers are sent too.
    #[serde(default)]
    headers: BTreeMap<String, String>,
    /// JSON body; strings are templates.
    body: Option<Json>,
    /// Statuses that count as success (default: any 2xx).
    accept: Option<Vec<u16>>,
    /// Header that carries the idempotency key on side-effecting calls.
    #[serde(default = "default_idem_header")]
    idempotency_header: String,
}

fn default_idem_header() -> String {
    "Idempotency-Key".into()
}

#[derive(Debug)]
struct Http {
    endpoint: Option<Arc<Endpoint>>,
    url: Tmpl,
    method: reqwest::Method,
    headers: Vec<(String, Tmpl)>,
    body: Option<JsonTmpl>,
    accept: Option<Vec<u16>>,
    idempotency_header: String,
}

pub fn build(raw: Raw<'_>, cx: &mut BuildCx<'_>) -> Result<Arc<dyn NodeKind>, Diagnostic> {
    let p: Params = raw.parse()?;
    let endpoint = match &p.endpoint {
        Some(name) => match cx.registry.endpoints.get(name) {
            Some(e) => Some(e.clone()),
            None => {
                let hint = crate::flow::suggest(name, cx.registry.endpoints.keys().map(String::as_str))
                    .map(|s| format!(" (did you mean `{s}`?)"))
                    .unwrap_or_default();
                cx.error("endpoint", format!("unknown endpoint `{name}`{hint}"));
                None
            }
        },
        None => None,
    };
    let url_src = match (&p.endpoint, &p.url) {
        (Some(_), None) => format!("{}{}", endpoint.as_ref().and_then(|e| e.base_url.clone()).unwrap_or_default(), p.path),
        (None, Some(u)) => u.clone(),
        _ => {
            cx.error("url", "an http node needs exactly one of `endpoint` or `url`");
            String::new()
        }
    };
    let method = p.method.as_deref().unwrap_or(if p.body.is_some() { "POST" } else { "GET" }).to_ascii_uppercase();
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap_or_else(|_| {
        cx.error("method", format!("`{method}` is not an HTTP method"));
        reqwest::Method::GET
    });
    let headers = p.headers.iter().map(|(k, v)| (k.clone(), cx.string("headers", v))).collect();
    let url = cx.string("url", &url_src);
    let body = p.body.as_ref().map(|b| cx.json("body", b));
    Ok(Arc::new(Http { endpoint, url, method, headers, body, accept: p.accept, idempotency_header: p.idempotency_header }))
}

impl Http {
    fn accepted(&self, status: u16) -> bool {
        match &self.accept {
            Some(list) => list.contains(&status),
            None => (200..300).contains(&status),
        }
    }

    fn judge(&self, status: u16, body: &[u8], wait: Option<std::time::Duration>, side_effect: bool) -> Result<Output, NodeError> {
        let meta = Meta { http_status: Some(status), ..Default::default() };
        if !self.accepted(status) {
            let (kind, msg) = classify_status(status, body, side_effect);
            let mut e = NodeError::new(kind, msg).with_meta(meta);
            e.retry_after = wait;
            return Err(e);
        }
        let text = std::str::from_utf8(body).map_err(|e| {
            NodeError::new(ErrorKind::Upstream4xx, format!("the answer is not UTF-8 (invalid byte at offset {})", e.valid_up_to()))
                .with_meta(meta.clone())
        })?;
        let value = serde_json::from_str::<Json>(text).unwrap_or_else(|_| Json::String(text.to_owned()));
        if let Some((kind, msg)) = classify_ok_body(&value).filter(|(k, _)| *k == ErrorKind::AuthExpired || *k == ErrorKind::QuotaExhausted)
        {
            return Err(NodeError::new(kind, msg).with_meta(meta));
        }
        Ok(Output { value, next: None, meta })
    }
}

impl NodeKind for Http {
    fn failure_kinds(&self, side_effect: bool) -> Vec<ErrorKind> {
        super::remote_failure_kinds(side_effect)
    }

    fn run<'a>(&'a self, cx: &'a RunCx<'a>) -> BoxFuture<'a, Result<Output, NodeError>> {
        Box::pin(async move {
            let body = self.body.as_ref().map(|b| cx.json(b)).transpose()?;
            let idem = cx.side_effect.then_some(cx.idempotency_key);
            if let Some(sim) = self.endpoint.as_ref().and_then(|e| e.simulate.as_ref()) {
                let answer = sim.call(body.as_ref().unwrap_or(&Json::Null), idem, cx.clock).await;
                let bytes = serde_json::to_vec(&answer.body).unwrap_or_default();
                return self.judge(answer.status, &bytes, answer.retry_after, cx.side_effect);
            }
            let url = cx.text(&self.url)?;
            let mut headers = Vec::with_capacity(self.headers.len());
            for (k, v) in &self.headers {
                headers.push((k.as_str(), cx.text(v)?));
            }
            let auth = self.endpoint.as_ref().and_then(|e| e.auth.as_ref());
            let mut token = match auth {
                Some(a) => Some(a.token(&cx.reg.http, cx.clock, false).await?),
                None => None,
            };
            let mut refreshed = false;
            loop {
                let mut rb = cx.reg.http.request(self.method.clone(), &url);
                for (k, v) in self.endpoint.iter().flat_map(|e| e.headers.iter()) {
                    rb = rb.header(k, v);
                }
                for (k, v) in &headers {
                    rb = rb.header(*k, v);
                }
                if let Some(t) = &token {
                    rb = rb.bearer_auth(t);
                }
                if let Some(key) = idem {
                    rb = rb.header(&self.idempotency_header, key);
                }
                if let Some(b) = &body {
                    rb = rb.json(b);
                }
                let resp = rb.send().await.map_err(|e| {
                    let (kind, msg) = classify_transport(&e);
                    NodeError::new(kind, msg)
                })?;
                let status = resp.status().as_u16();
                let wait = retry_after(resp.headers().get("retry-after").and_then(|v| v.to_str().ok()));
                let bytes = crate::net::read_limited(resp, crate::net::MAX_BODY).await.map_err(|m| {
                    NodeError::new(ErrorKind::Upstream4xx, m).with_meta(Meta { http_status: Some(status), ..Default::default() })
                })?;
                let result = self.judge(status, &bytes, wait, cx.side_effect);
                // An expired token: get a fresh one and try once more, within this attempt.
                if let (Err(e), Some(a), false) = (&result, auth, refreshed)
                    && e.kind == ErrorKind::AuthExpired
                {
                    refreshed = true;
                    token = Some(a.token(&cx.reg.http, cx.clock, true).await?);
                    continue;
                }
                return result;
            }
        })
    }
}
