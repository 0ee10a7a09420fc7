//! The `channels:`, `routes:` and `alerting:` sections of flowguard.yaml, typed and checked.
//!
//! ```yaml
//! channels:
//!   ops_feishu: { type: feishu, webhook: "${FEISHU_WEBHOOK}", secret: "${FEISHU_SECRET}", role: on_call }
//!   team_ding:  { type: dingtalk, webhook: "${DING_WEBHOOK}", secret: "${DING_SECRET}", role: team }
//!   oncall_sms: { type: sms, provider: aliyun, access_key_id: "${ALI_AK}", access_key_secret: "${ALI_SK}", … }
//! routes:
//!   - match: { severity: [high] }
//!     channels: [ops_feishu]
//!     mention_all: true
//!     backup: oncall_sms
//!     escalate: { after: 10m, to: [oncall_sms] }
//! alerting: { group_wait: 30s, group_interval: 5m, repeat_interval: 4h }
//! ```
//! With no `routes:`, the defaults of the issue apply: high → every `on_call` channel with @all,
//! medium → every `team` channel, low → recorded only (it shows in the daily report).

use crate::flow::parse_duration;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// One channel: its `type` and that type's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelConfig {
    /// `feishu`, `dingtalk`, `wecom`, `email`, `sms`, `webhook` or `console`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `on_call` (gets high alerts by default) or `team` (gets medium alerts by default).
    pub role: Option<String>,
    /// Feishu/DingTalk/WeCom/webhook: the bot's webhook URL (a secret: it carries the token).
    pub webhook: Option<String>,
    /// WeCom: the group bot key (instead of the full webhook URL).
    pub key: Option<String>,
    /// Feishu/DingTalk signing secret; webhook: the HMAC-SHA256 key.
    pub secret: Option<String>,
    /// Feishu/DingTalk keyword security: a word every message must contain.
    pub keyword: Option<String>,
    /// Feishu: `text`, `post` or `card` (default `card`); DingTalk/WeCom: `text` or `markdown`.
    pub format: Option<String>,
    /// Users to @: Feishu open_id/user_id, DingTalk mobiles, WeCom user ids.
    #[serde(default)]
    pub mention: Vec<String>,
    /// Link to a run, `{run_id}` replaced (e.g. the dashboard's run page).
    pub run_url: Option<String>,
    /// Email: SMTP server.
    pub smtp_host: Option<String>,
    pub smtp_port: Option<u16>,
    /// Email: `starttls` (default), `tls` (implicit, port 465) or `none` (tests, local relays).
    pub smtp_security: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub from: Option<String>,
    #[serde(default)]
    pub to: Vec<String>,
    /// SMS: `aliyun`, `tencent` or `http` (a generic templated gateway).
    pub provider: Option<String>,
    pub access_key_id: Option<String>,
    pub access_key_secret: Option<String>,
    /// SMS: the sign name (签名) and template id.
    pub sign_name: Option<String>,
    pub template_id: Option<String>,
    /// Tencent: the SmsSdkAppId; region (default ap-guangzhou).
    pub app_id: Option<String>,
    pub region: Option<String>,
    /// SMS: phone numbers (+86…).
    #[serde(default)]
    pub phones: Vec<String>,
    /// SMS template parameters: name → template over the message (`{{ flow }}`, `{{ node }}` …).
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    /// Override of the service's address (tests; private deployments).
    pub endpoint: Option<String>,
    /// Generic webhook/HTTP SMS: extra headers; HTTP SMS: the JSON body template.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    pub body: Option<serde_json::Value>,
    /// Sends per window instead of the type's default (e.g. `{ per_second: 5, per_minute: 100 }`).
    pub rate_limit: Option<RateLimitConfig>,
    /// Channel to use after this one failed `max_attempts` times.
    pub backup: Option<String>,
    /// Per-request time limit (default 10s).
    pub timeout: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    pub per_second: Option<u32>,
    pub per_minute: Option<u32>,
}

/// One routing rule; the first that matches wins unless it says `continue: true`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    #[serde(default, rename = "match")]
    pub matchers: RouteMatch,
    /// Channels to notify; empty: recorded only.
    #[serde(default)]
    pub channels: Vec<String>,
    #[serde(default, rename = "continue")]
    pub continue_: bool,
    /// @all on channels that support it.
    #[serde(default)]
    pub mention_all: bool,
    /// Labels that make a group (default `[flow, severity]`).
    pub group_by: Option<Vec<String>>,
    pub group_wait: Option<String>,
    pub group_interval: Option<String>,
    pub repeat_interval: Option<String>,
    /// Where a notification goes when its channel fails for good.
    pub backup: Option<String>,
    /// Alerts of this route not acknowledged in time go to more channels (whatever their severity).
    pub escalate: Option<EscalateConfig>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RouteMatch {
    #[serde(default)]
    pub severity: Vec<String>,
    #[serde(default)]
    pub flow: Vec<String>,
    #[serde(default)]
    pub node: Vec<String>,
    #[serde(default)]
    pub error_kind: Vec<String>,
    /// Outcome labels: `status` (failed, timed_out …), `event` (outcome, latency), and any label the alert carries.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EscalateConfig {
    pub after: String,
    pub to: Vec<String>,
}

/// Defaults for grouping and delivery.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertingConfig {
    #[serde(default = "d_group_by")]
    pub group_by: Vec<String>,
    #[serde(default = "d_group_wait")]
    pub group_wait: String,
    #[serde(default = "d_group_interval")]
    pub group_interval: String,
    #[serde(default = "d_repeat")]
    pub repeat_interval: String,
    /// Failed sends of one notification before it fails over to its backup channel. Without a
    /// backup it keeps trying for `delivery_budget`.
    #[serde(default = "d_attempts")]
    pub max_attempts: u32,
    /// How long a notification keeps being retried (capped exponential backoff, honouring
    /// Retry-After) before it is `dead`; a dead one is raised on another channel and can be re-sent
    /// with `flowguard alerts resend`.
    #[serde(default = "d_budget")]
    pub delivery_budget: String,
    /// First retry delay; doubles each time up to `max_backoff`.
    #[serde(default = "d_backoff")]
    pub backoff: String,
    #[serde(default = "d_max_backoff")]
    pub max_backoff: String,
    /// How long `flowguard run` keeps delivering after its run before leaving the rest pending.
    #[serde(default = "d_drain")]
    pub drain: String,
    /// Channel that hears about dead notifications (default: the dead one's backup, else none).
    pub dead_letter: Option<String>,
    /// Link to a run, `{run_id}` replaced, for channels that set none.
    pub run_url: Option<String>,
    /// Replacements of the message templates: `title`, `text`, `markdown` (minijinja).
    #[serde(default)]
    pub templates: BTreeMap<String, String>,
}

impl Default for AlertingConfig {
    fn default() -> Self {
        AlertingConfig {
            group_by: d_group_by(),
            group_wait: d_group_wait(),
            group_interval: d_group_interval(),
            repeat_interval: d_repeat(),
            max_attempts: d_attempts(),
            delivery_budget: d_budget(),
            backoff: d_backoff(),
            max_backoff: d_max_backoff(),
            drain: d_drain(),
            dead_letter: None,
            run_url: None,
            templates: BTreeMap::new(),
        }
    }
}

fn d_group_by() -> Vec<String> {
    vec!["flow".into(), "severity".into()]
}
fn d_group_wait() -> String {
    "0s".into()
}
fn d_group_interval() -> String {
    "5m".into()
}
fn d_repeat() -> String {
    "4h".into()
}
fn d_attempts() -> u32 {
    5
}
fn d_budget() -> String {
    "6h".into()
}
fn d_backoff() -> String {
    "2s".into()
}
fn d_max_backoff() -> String {
    "5m".into()
}
fn d_drain() -> String {
    "10s".into()
}

pub const CHANNEL_TYPES: &[&str] = &["feishu", "dingtalk", "wecom", "email", "sms", "webhook", "console"];
pub const GROUP_LABELS: &[&str] = &["flow", "severity", "node", "error_kind", "status"];

pub fn dur(s: &Option<String>, default: &str) -> Duration {
    parse_duration(s.as_deref().unwrap_or(default)).unwrap_or(Duration::ZERO)
}

/// Problems in the alerting sections as (dotted path, message).
pub fn check(channels: &BTreeMap<String, ChannelConfig>, routes: &[RouteConfig], a: &AlertingConfig) -> Vec<(Vec<String>, String)> {
    let mut out: Vec<(Vec<String>, String)> = Vec::new();
    let p = |parts: &[&str]| parts.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let known = |name: &str| channels.contains_key(name);
    let unknown = |name: &str| {
        let hint =
            crate::flow::suggest(name, channels.keys().map(String::as_str)).map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default();
        format!("unknown channel `{name}`{hint}")
    };
    for (name, c) in channels {
        if !CHANNEL_TYPES.contains(&c.kind.as_str()) {
            out.push((
                p(&["channels", name, "type"]),
                format!("unknown channel type `{}`; expected one of: {}", c.kind, CHANNEL_TYPES.join(", ")),
            ));
            continue;
        }
        let need = |field: &str, v: bool, out: &mut Vec<(Vec<String>, String)>| {
            if !v {
                out.push((p(&["channels", name]), format!("a `{}` channel needs `{field}`", c.kind)));
            }
        };
        match c.kind.as_str() {
            "feishu" | "dingtalk" | "webhook" => need("webhook", c.webhook.is_some(), &mut out),
            "wecom" => need("webhook` or `key", c.webhook.is_some() || c.key.is_some(), &mut out),
            "email" => {
                need("smtp_host", c.smtp_host.is_some(), &mut out);
                need("from", c.from.is_some(), &mut out);
                need("to", !c.to.is_empty(), &mut out);
            }
            "sms" => {
                need("phones", !c.phones.is_empty(), &mut out);
                match c.provider.as_deref() {
                    Some("aliyun") | Some("tencent") => {
                        need("access_key_id", c.access_key_id.is_some(), &mut out);
                        need("access_key_secret", c.access_key_secret.is_some(), &mut out);
                        need("template_id", c.template_id.is_some(), &mut out);
                        need("sign_name", c.sign_name.is_some(), &mut out);
                        if c.provider.as_deref() == Some("tencent") {
                            need("app_id", c.app_id.is_some(), &mut out);
                        }
                    }
                    Some("http") => need("endpoint", c.endpoint.is_some(), &mut out),
                    other => out.push((
                        p(&["channels", name, "provider"]),
                        format!("unknown SMS provider `{}`; expected aliyun, tencent or http", other.unwrap_or("")),
                    )),
                }
            }
            _ => {}
        }
        if let Some(f) = &c.format {
            let ok: &[&str] = match c.kind.as_str() {
                "feishu" => &["text", "post", "card"],
                "dingtalk" | "wecom" => &["text", "markdown"],
                _ => &["text"],
            };
            if !ok.contains(&f.as_str()) {
                out.push((p(&["channels", name, "format"]), format!("unknown format `{f}`; expected one of: {}", ok.join(", "))));
            }
        }
        if let Some(r) = &c.role
            && r != "on_call"
            && r != "team"
        {
            out.push((p(&["channels", name, "role"]), format!("unknown role `{r}`; expected on_call or team")));
        }
        if let Some(s) = &c.smtp_security
            && !["starttls", "tls", "none"].contains(&s.as_str())
        {
            out.push((p(&["channels", name, "smtp_security"]), format!("unknown `{s}`; expected starttls, tls or none")));
        }
        if let Some(b) = &c.backup
            && !known(b)
        {
            out.push((p(&["channels", name, "backup"]), unknown(b)));
        }
        if let Some(t) = &c.timeout
            && let Err(m) = parse_duration(t)
        {
            out.push((p(&["channels", name, "timeout"]), m));
        }
    }
    for (i, r) in routes.iter().enumerate() {
        let at = |f: &str| vec!["routes".to_string(), format!("[{i}]"), f.to_string()];
        for c in r.channels.iter().chain(r.backup.iter()).chain(r.escalate.iter().flat_map(|e| e.to.iter())) {
            if !known(c) {
                out.push((at("channels"), unknown(c)));
            }
        }
        for s in &r.matchers.severity {
            if let Err(m) = s.parse::<crate::vocab::Severity>() {
                out.push((at("match"), m));
            }
        }
        for k in &r.matchers.error_kind {
            if let Err(m) = k.parse::<crate::vocab::ErrorKind>() {
                out.push((at("match"), m));
            }
        }
        for (f, v) in [("group_wait", &r.group_wait), ("group_interval", &r.group_interval), ("repeat_interval", &r.repeat_interval)] {
            if let Some(v) = v
                && let Err(m) = parse_duration(v)
            {
                out.push((at(f), m));
            }
        }
        if let Some(e) = &r.escalate
            && let Err(m) = parse_duration(&e.after)
        {
            out.push((at("escalate"), m));
        }
        for g in r.group_by.iter().flatten() {
            if !GROUP_LABELS.contains(&g.as_str()) {
                out.push((at("group_by"), format!("unknown label `{g}`; expected one of: {}", GROUP_LABELS.join(", "))));
            }
        }
    }
    for (f, v) in [
        ("group_wait", &a.group_wait),
        ("group_interval", &a.group_interval),
        ("repeat_interval", &a.repeat_interval),
        ("backoff", &a.backoff),
        ("max_backoff", &a.max_backoff),
        ("drain", &a.drain),
        ("delivery_budget", &a.delivery_budget),
    ] {
        if let Err(m) = parse_duration(v) {
            out.push((p(&["alerting", f]), m));
        }
    }
    for g in &a.group_by {
        if !GROUP_LABELS.contains(&g.as_str()) {
            out.push((p(&["alerting", "group_by"]), format!("unknown label `{g}`; expected one of: {}", GROUP_LABELS.join(", "))));
        }
    }
    if let Some(d) = &a.dead_letter
        && !known(d)
    {
        out.push((p(&["alerting", "dead_letter"]), unknown(d)));
    }
    out
}
