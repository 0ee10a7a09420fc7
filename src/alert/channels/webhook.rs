//! A generic JSON webhook, signed so the receiver can trust it.
//!
//! Request: `POST {webhook}` with `Content-Type: application/json`, any configured `headers`, and
//! when a `secret` is set: `X-Flowguard-Timestamp: {ms}` and
//! `X-Flowguard-Signature: sha256={hex(HMAC-SHA256(key = secret, message = "{ms}.{body}"))}`, so a
//! receiver recomputes it over the raw body and compares (and rejects old timestamps). Body:
//! ```json
//! {"purpose": "firing", "severity": "high", "title": "…", "text": "…", "markdown": "…", "link": "…",
//!  "mention_all": false, "fields": {"flow": "…", "node": "…", "error_kind": "…", "run_id": "…"}}
//! ```
//! Answer: any 2xx is success; 429 honours Retry-After; 408/5xx are retried; other codes fail.

use super::{Channel, ChannelParams, Ctx, Delivery, Message, Raw, hex, hmac_sha256, judge_http, limits, post};
use crate::alert::config::ChannelConfig;
use crate::flow::diag::Diagnostics;
use futures::future::BoxFuture;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// `type: webhook`.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// Where the JSON is posted (a secret: it may carry a token).
    pub webhook: String,
    /// The HMAC-SHA256 key of `X-Flowguard-Signature`; unset: not signed.
    pub secret: Option<String>,
    /// Extra request headers (`Authorization` and the like are masked everywhere).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

pub fn parse(raw: &Raw<'_>) -> Result<Arc<dyn ChannelParams>, Diagnostics> {
    let p: Params = raw.parse()?;
    if url::Url::parse(&p.webhook).is_err() {
        return Err(Diagnostics(vec![raw.problem("webhook", "expected a URL")]));
    }
    Ok(Arc::new(p))
}

impl ChannelParams for Params {
    fn build(&self, _name: &str, c: &ChannelConfig, cx: &Ctx) -> anyhow::Result<Arc<dyn Channel>> {
        Ok(Arc::new(Webhook {
            url: self.webhook.clone(),
            secret: self.secret.clone(),
            headers: self.headers.clone(),
            limits: limits(c, &[]),
            timeout: super::timeout(c),
            cx: cx.clone(),
        }))
    }
}

struct Webhook {
    url: String,
    secret: Option<String>,
    headers: BTreeMap<String, String>,
    limits: Vec<(u32, Duration)>,
    timeout: Duration,
    cx: Ctx,
}

pub fn signature(secret: &str, ms: i64, body: &[u8]) -> String {
    let mut m = format!("{ms}.").into_bytes();
    m.extend_from_slice(body);
    format!("sha256={}", hex(&hmac_sha256(secret.as_bytes(), &m)))
}

impl Channel for Webhook {
    fn kind(&self) -> &'static str {
        "webhook"
    }

    fn send<'a>(&'a self, msg: &'a Message) -> BoxFuture<'a, Delivery> {
        Box::pin(async move {
            let body = serde_json::to_vec(msg).unwrap_or_default();
            let mut req = self.cx.http.post(&self.url).timeout(self.timeout).header("content-type", "application/json");
            for (k, v) in &self.headers {
                req = req.header(k, v);
            }
            if let Some(s) = &self.secret {
                let ms = jiff::Timestamp::now().as_millisecond();
                req = req.header("x-flowguard-timestamp", ms.to_string()).header("x-flowguard-signature", signature(s, ms, &body));
            }
            match post(req.body(body), &self.cx.redactor).await {
                Ok(a) => judge_http(a),
                Err(d) => d,
            }
        })
    }

    fn rate_limits(&self) -> Vec<(u32, Duration)> {
        self.limits.clone()
    }

    fn secrets(&self) -> Vec<String> {
        let mut s = vec![self.url.clone()];
        s.extend(self.secret.clone());
        s.extend(self.headers.iter().filter(|(k, _)| crate::redact::is_secret_header(k)).map(|(_, v)| v.clone()));
        s
    }
}
