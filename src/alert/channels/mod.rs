//! Delivery channels. Each is one file: a typed, documented parameter struct (what the config
//! says under `channels.<name>` besides the shared fields of [`ChannelConfig`]), its checks, and an
//! impl of [`Channel`]; [`TYPES`] maps the `type:` name to the file's `parse` and `Params` schema. Adding a channel is
//! one file and one line here. Channels know nothing about flows: they get a rendered [`Message`]
//! and answer with a [`Delivery`] judged from the service's *body*.

mod console;
mod dingtalk;
mod email;
mod feishu;
mod sms;
mod webhook;
mod wecom;

use crate::alert::config::{COMMON_FIELDS, ChannelConfig};
use crate::flow::diag::{Diagnostic, Diagnostics, dotted, from_tree};
use crate::flow::yaml::{Node, PathSeg};
use crate::redact::Redactor;
use futures::future::BoxFuture;
use hmac::{Hmac, Mac};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Reads a channel type's own parameters (checked, with positions) from its part of the config.
pub type Parse = fn(&Raw<'_>) -> Result<Arc<dyn ChannelParams>, Diagnostics>;

/// The JSON Schema of a channel type's own fields (for `flowguard schema config` and the reference).
pub type ParamsSchema = fn(&mut schemars::SchemaGenerator) -> schemars::Schema;

fn params<T: schemars::JsonSchema>(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
    g.subschema_for::<T>()
}

/// The registry of channel types: `type:` name → its parser, and the schema of its fields. The
/// only list of channel types.
pub const TYPES: &[(&str, Parse, ParamsSchema)] = &[
    ("feishu", feishu::parse, params::<feishu::Params>),
    ("dingtalk", dingtalk::parse, params::<dingtalk::Params>),
    ("wecom", wecom::parse, params::<wecom::Params>),
    ("email", email::parse, params::<email::Params>),
    ("sms", sms::parse, params::<sms::Params>),
    ("webhook", webhook::parse, params::<webhook::Params>),
    ("console", console::parse, params::<console::Params>),
];

/// The schema of one configured channel: one alternative per type, each the shared fields of
/// [`ChannelConfig`] plus the type's own (listed in `x-type-fields`). Unknown fields are refused,
/// as the parser refuses them.
pub fn json_schema(g: &mut schemars::SchemaGenerator) -> Json {
    let common = g.subschema_for::<ChannelConfig>().to_value();
    let types: Vec<Json> = TYPES
        .iter()
        .map(|(name, _, params)| {
            let own = params(g).to_value();
            let mut ch = common.clone();
            let fields: Vec<Json> =
                own["properties"].as_object().map(|p| p.keys().map(|k| Json::from(k.as_str())).collect()).unwrap_or_default();
            if let (Some(dst), Some(src)) = (ch["properties"].as_object_mut(), own["properties"].as_object()) {
                dst.extend(src.clone());
                dst.insert("type".into(), serde_json::json!({"const": name, "description": "The channel type."}));
            }
            let mut required: Vec<Json> = ch["required"].as_array().cloned().unwrap_or_default();
            required.extend(own["required"].as_array().cloned().unwrap_or_default());
            ch["required"] = required.into();
            ch["additionalProperties"] = false.into();
            ch["title"] = (*name).into();
            ch["x-type-fields"] = fields.into();
            ch
        })
        .collect();
    serde_json::json!({ "oneOf": types })
}

/// A channel type's parsed parameters: what builds the channel.
pub trait ChannelParams: Send + Sync + std::fmt::Debug {
    fn build(&self, name: &str, common: &ChannelConfig, cx: &Ctx) -> anyhow::Result<Arc<dyn Channel>>;
    /// Whether long reports suit this channel (chat and email do; SMS templates do not).
    fn carries_reports(&self) -> bool {
        true
    }
}

/// A channel's own fields in the config, with where they stand.
pub struct Raw<'a> {
    pub tree: &'a Node,
    pub file: &'a Path,
    pub prefix: &'a [PathSeg],
}

impl Raw<'_> {
    /// Deserializes the parameters; errors point at the field, unknown ones suggest a spelling.
    pub fn parse<P: DeserializeOwned>(&self) -> Result<P, Diagnostics> {
        from_tree(self.tree, self.file, self.prefix, COMMON_FIELDS).map_err(|d| Diagnostics(vec![d]))
    }

    /// A problem with one field (or the whole channel when the field is absent).
    pub fn problem(&self, field: &str, message: impl Into<String>) -> Diagnostic {
        let pos = self.tree.get(field).map(|n| n.pos).unwrap_or(self.tree.pos);
        let path = if self.tree.get(field).is_some() { vec![PathSeg::Key(field.into())] } else { vec![] };
        Diagnostic { file: self.file.into(), pos, field: dotted(self.prefix, &path), message: message.into() }
    }

    /// The keys of a mapping field in the order they were written (serde's maps sort them).
    pub fn key_order(&self, field: &str) -> Vec<String> {
        match self.tree.get(field).map(|n| &n.value) {
            Some(crate::flow::yaml::Yaml::Map(entries)) => entries.iter().filter_map(|(k, _)| k.as_str().map(str::to_owned)).collect(),
            _ => Vec::new(),
        }
    }
}

/// Parses the type-specific part of every channel into [`ChannelConfig::params`]; problems are
/// added to `diags` with file:line:col.
pub fn parse_all(channels: &mut BTreeMap<String, ChannelConfig>, tree: &Node, file: &Path, diags: &mut Diagnostics) {
    let names: Vec<&str> = TYPES.iter().map(|(n, _, _)| *n).collect();
    for (name, c) in channels.iter_mut() {
        let prefix = vec![PathSeg::Key("channels".into()), PathSeg::Key(name.clone())];
        let node = tree.locate(&prefix);
        let Some((_, parse, _)) = TYPES.iter().find(|(t, _, _)| *t == c.kind) else {
            let hint =
                crate::flow::diag::suggest(&c.kind, names.iter().copied()).map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default();
            let pos = node.get("type").map(|n| n.pos).unwrap_or(node.pos);
            diags.push(
                file,
                pos,
                format!("channels.{name}.type"),
                format!("unknown channel type `{}`{hint}; expected one of: {}", c.kind, names.join(", ")),
            );
            continue;
        };
        let mut own = node.clone();
        if let crate::flow::yaml::Yaml::Map(entries) = &node.value {
            own.value = crate::flow::yaml::Yaml::Map(
                entries.iter().filter(|(k, _)| !k.as_str().is_some_and(|k| COMMON_FIELDS.contains(&k))).cloned().collect(),
            );
        }
        match parse(&Raw { tree: &own, file, prefix: &prefix }) {
            Ok(p) => c.params = Some(p),
            Err(d) => diags.extend(d),
        }
    }
}

/// What channels share: the HTTP client and the redactor.
#[derive(Clone)]
pub struct Ctx {
    pub http: reqwest::Client,
    pub redactor: Redactor,
}

/// A rendered notification, as stored in the outbox.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Message {
    /// `firing`, `resolved`, `escalation`, `failover`, `dead`, `test`, `notify`, `report`.
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
    /// A finished Feishu card (`{"msg_type": "interactive", "card": …}`), sent as is (reports).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub card: Option<Json>,
    /// A finished HTML body for email, used instead of the one built from `text` (reports).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
    /// After a partial delivery: the recipients (phone numbers) still owed this message; the
    /// others have it and must not get it twice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipients: Option<Vec<String>>,
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
    /// Like [`Channel::send`], and after a partial delivery (some recipients have it) also who
    /// is still owed the message, so that a retry reaches only them.
    fn send_partial<'a>(&'a self, msg: &'a Message) -> BoxFuture<'a, (Delivery, Option<Vec<String>>)> {
        Box::pin(async move { (self.send(msg).await, None) })
    }
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
        let Some(params) = &c.params else {
            anyhow::bail!("channel `{name}`: the settings of type `{}` were not read", c.kind);
        };
        let ch = params.build(name, c, ctx)?;
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
