//! Delivery channels. Each is one file: a builder from its [`ChannelConfig`] and an impl of
//! [`Channel`]; [`TYPES`] maps the `type:` name to it. Channels know nothing about flows: they get
//! a rendered [`Message`] and answer with a [`Delivery`] judged from the service's *body*.

mod console;
mod dingtalk;
mod email;
mod feishu;
mod sms;
mod webhook;
mod wecom;

use crate::alert::config::ChannelConfig;
use crate::redact::Redactor;
use futures::future::BoxFuture;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Builds a channel from its settings.
pub type Builder = fn(&str, &ChannelConfig, &Ctx) -> anyhow::Result<Arc<dyn Channel>>;

/// The registry of channel types: `type:` name → builder.
pub const TYPES: &[(&str, Builder)] = &[
    ("feishu", feishu::build),
    ("dingtalk", dingtalk::build),
    ("wecom", wecom::build),
    ("email", email::build),
    ("sms", sms::build),
    ("webhook", webhook::build),
    ("console", console::build),
];

/// What channels share: the HTTP client and the redactor.
#[derive(Clone)]
pub struct Ctx {
    pub http: reqwest::Client,
    pub redactor: Redactor,
}

/// A rendered notification, as stored in the outbox.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Message {
    /// `firing`, `resolved`, `escalation`, `failover`, `dead`, `test`, `notify`.
    pub purpose: String,
    /// `low`, `medium`, `high` (colours and priorities).
    pub severity: String,
    /// One line, e.g. `[告警] 流程失败`.
    pub title: String,
    /// The body as plain text (lines).
    pub text: String,
    /// The body in Markdown (Feishu lark_md, DingTalk/WeCom markdown, the HTML email).
    pub markdown: String,
    /// A link to the run or the dashboard.
    pub link: Option<String>,
    /// @all on channels that support it.
    pub mention_all: bool,
    /// Named values for SMS templates and the generic webhook (flow, node, error_kind, time …).
    pub fields: BTreeMap<String, String>,
}

/// How one send went, judged from the answer's body where the service puts its verdict there.
#[derive(Debug, Clone, PartialEq)]
pub enum Delivery {
    Sent {
        status: Option<u16>,
        answer: String,
    },
    /// The service asked to slow down (HTTP 429, Feishu 11232, DingTalk 130101, WeCom 45009 …).
    RateLimited {
        status: Option<u16>,
        answer: String,
        retry_after: Option<Duration>,
    },
    /// Worth another try (network, 5xx, timeouts).
    Retry {
        status: Option<u16>,
        answer: String,
        error: String,
    },
    /// Retrying the same request cannot help (bad signature, keyword, invalid webhook).
    Failed {
        status: Option<u16>,
        answer: String,
        error: String,
    },
}

impl Delivery {
    pub fn outcome(&self) -> &'static str {
        match self {
            Delivery::Sent { .. } => "sent",
            Delivery::RateLimited { .. } => "rate_limited",
            Delivery::Retry { .. } => "retry",
            Delivery::Failed { .. } => "failed",
        }
    }
    pub fn status(&self) -> Option<u16> {
        match self {
            Delivery::Sent { status, .. }
            | Delivery::RateLimited { status, .. }
            | Delivery::Retry { status, .. }
            | Delivery::Failed { status, .. } => *status,
        }
    }
    pub fn answer(&self) -> &str {
        match self {
            Delivery::Sent { answer, .. }
            | Delivery::RateLimited { answer, .. }
            | Delivery::Retry { answer, .. }
            | Delivery::Failed { answer, .. } => answer,
        }
    }
    pub fn error(&self) -> Option<String> {
        match self {
            Delivery::Sent { .. } => None,
            Delivery::RateLimited { answer, .. } => Some(format!("rate limited: {answer}")),
            Delivery::Retry { error, .. } | Delivery::Failed { error, .. } => Some(error.clone()),
        }
    }
}

/// One way of reaching people.
pub trait Channel: Send + Sync {
    fn kind(&self) -> &'static str;
    fn send<'a>(&'a self, msg: &'a Message) -> BoxFuture<'a, Delivery>;
    /// The service's own limits: (sends, window). Sends beyond them wait in the outbox.
    fn rate_limits(&self) -> Vec<(u32, Duration)> {
        Vec::new()
    }
    /// Values of this channel that must never be shown (tokens, keys, passwords).
    fn secrets(&self) -> Vec<String> {
        Vec::new()
    }
}

/// Builds every configured channel; registers each one's secrets with the redactor.
pub fn build_all(cfg: &BTreeMap<String, ChannelConfig>, ctx: &Ctx) -> anyhow::Result<BTreeMap<String, Arc<dyn Channel>>> {
    let mut out = BTreeMap::new();
    for (name, c) in cfg {
        let Some((_, build)) = TYPES.iter().find(|(t, _)| *t == c.kind) else {
            anyhow::bail!("channel `{name}`: unknown type `{}`", c.kind);
        };
        let ch = build(name, c, ctx)?;
        for s in ch.secrets() {
            ctx.redactor.add(&s);
        }
        out.insert(name.clone(), ch);
    }
    Ok(out)
}

/// Limits from the config, else the type's defaults.
pub fn limits(c: &ChannelConfig, default: &[(u32, Duration)]) -> Vec<(u32, Duration)> {
    match c.rate_limit {
        Some(r) => {
            let mut v = Vec::new();
            if let Some(n) = r.per_second {
                v.push((n, Duration::from_secs(1)));
            }
            if let Some(n) = r.per_minute {
                v.push((n, Duration::from_secs(60)));
            }
            v
        }
        None => default.to_vec(),
    }
}

pub fn timeout(c: &ChannelConfig) -> Duration {
    c.timeout.map_or(Duration::from_secs(10), |d| d.get())
}

pub fn hmac_sha256(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut m = <Hmac<sha2::Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(msg);
    m.finalize().into_bytes().to_vec()
}

pub fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Cuts `s` to at most `max` bytes on a char boundary, marking the cut.
pub fn cut(s: &str, max: usize, mark: &str) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max.saturating_sub(mark.len());
    while end > 0 && !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{mark}", &s[..end])
}

/// The answer of an HTTP POST: status, body text, Retry-After.
pub struct Answer {
    pub status: u16,
    pub body: String,
    pub retry_after: Option<Duration>,
}

/// Sends a request and reads a bounded answer; transport failures come back as `Retry`.
pub async fn post(req: reqwest::RequestBuilder, red: &Redactor) -> Result<Answer, Delivery> {
    let resp = req.send().await.map_err(|e| {
        let error = red.redact(&format!("could not reach the service: {}", error_chain(&e)));
        Delivery::Retry { status: None, answer: String::new(), error }
    })?;
    let status = resp.status().as_u16();
    let retry_after =
        resp.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<u64>().ok()).map(Duration::from_secs);
    let body = crate::net::read_limited(resp, 64 * 1024).await.map_err(|e| Delivery::Retry {
        status: Some(status),
        answer: String::new(),
        error: red.redact(&e),
    })?;
    Ok(Answer { status, body: red.redact(&String::from_utf8_lossy(&body)), retry_after })
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        s.push_str(": ");
        s.push_str(&x.to_string());
        src = x.source();
    }
    s
}

/// Judges an answer whose HTTP status alone decides (generic webhooks, HTTP SMS gateways).
pub fn judge_http(a: Answer) -> Delivery {
    let status = Some(a.status);
    match a.status {
        200..=299 => Delivery::Sent { status, answer: a.body },
        429 => Delivery::RateLimited { status, answer: a.body, retry_after: a.retry_after },
        408 | 500..=599 => Delivery::Retry { status, error: format!("HTTP {}", a.status), answer: a.body },
        _ => Delivery::Failed { status, error: format!("HTTP {}", a.status), answer: a.body },
    }
}

/// The `{run_id}`-style link of a message, or the channel's own pattern.
pub fn link(msg: &Message, pattern: Option<&str>) -> Option<String> {
    match (pattern, msg.fields.get("run_id")) {
        (Some(p), Some(id)) => Some(p.replace("{run_id}", id)),
        _ => msg.link.clone(),
    }
}
