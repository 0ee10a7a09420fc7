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
//! Each channel type's own fields are declared, documented and checked in its file under
//! `alert/channels/`; this file holds the fields all channels share.

use crate::config::HumanDuration;
use crate::vocab::{ErrorKind, Severity};
use serde::Deserialize;
use std::collections::BTreeMap;

/// One channel: the fields every type shares. The type's own fields (webhook, phones, SMTP …)
/// are read by its file in `alert/channels/` into [`ChannelConfig::params`].
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
pub struct ChannelConfig {
    /// The channel type: one of `alert::channels::TYPES` (feishu, dingtalk, wecom, email, sms, webhook, console).
    #[serde(rename = "type")]
    pub kind: String,
    /// `on_call` (gets high alerts by default) or `team` (gets medium alerts by default).
    pub role: Option<String>,
    /// Channel to use after this one failed `max_attempts` times.
    pub backup: Option<String>,
    /// Sends per window instead of the type's default (e.g. `{ per_second: 5, per_minute: 100 }`).
    pub rate_limit: Option<RateLimitConfig>,
    /// Per-request time limit (default 10s).
    pub timeout: Option<HumanDuration>,
    /// Link to a run, `{run_id}` replaced (e.g. the dashboard's run page); default `alerting.run_url`.
    pub run_url: Option<String>,
    /// The type's own settings, parsed and checked by its channel file.
    #[serde(skip)]
    #[schemars(skip)]
    pub params: Option<std::sync::Arc<dyn crate::alert::channels::ChannelParams>>,
    /// The type's own fields, read a second time by the channel file (with positions).
    #[serde(flatten)]
    #[schemars(skip)]
    _own: BTreeMap<String, serde::de::IgnoredAny>,
}

/// The fields of [`ChannelConfig`]; everything else under a channel belongs to its type.
pub const COMMON_FIELDS: &[&str] = &["type", "role", "backup", "rate_limit", "timeout", "run_url"];

impl ChannelConfig {
    /// Whether reports may go to this channel (see `ChannelParams::carries_reports`).
    pub fn carries_reports(&self) -> bool {
        self.params.as_ref().is_some_and(|p| p.carries_reports())
    }
}

#[derive(Debug, Clone, Copy, Deserialize, Default, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Most sends in any second.
    pub per_second: Option<u32>,
    /// Most sends in any minute.
    pub per_minute: Option<u32>,
}

/// One routing rule; the first that matches wins unless it says `continue: true`.
#[derive(Debug, Clone, Deserialize, Default, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Which alerts the route takes; every listed condition must hold (an empty list matches all).
    #[serde(default, rename = "match")]
    pub matchers: RouteMatch,
    /// Channels to notify; empty: recorded only.
    #[serde(default)]
    pub channels: Vec<String>,
    /// Also try the routes after this one.
    #[serde(default, rename = "continue")]
    pub continue_: bool,
    /// @all on channels that support it.
    #[serde(default)]
    pub mention_all: bool,
    /// Labels that make a group (default `[flow, severity]`).
    pub group_by: Option<Vec<String>>,
    /// Overrides `alerting.group_wait` for this route.
    pub group_wait: Option<HumanDuration>,
    /// Overrides `alerting.group_interval` for this route.
    pub group_interval: Option<HumanDuration>,
    /// Overrides `alerting.repeat_interval` for this route.
    pub repeat_interval: Option<HumanDuration>,
    /// Where a notification goes when its channel fails for good.
    pub backup: Option<String>,
    /// Alerts of this route not acknowledged in time go to more channels (whatever their severity).
    pub escalate: Option<EscalateConfig>,
}

#[derive(Debug, Clone, Deserialize, Default, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteMatch {
    /// Severities: `low`, `medium`, `high`.
    #[serde(default)]
    pub severity: Vec<Severity>,
    /// Flow names.
    #[serde(default)]
    pub flow: Vec<String>,
    /// Node ids.
    #[serde(default)]
    pub node: Vec<String>,
    /// Error kinds (DESIGN.md §4 names, e.g. `upstream_5xx`).
    #[serde(default)]
    pub error_kind: Vec<ErrorKind>,
    /// Outcome labels: `status` (failed, timed_out …), `event` (outcome, latency), and any label the alert carries.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EscalateConfig {
    /// How long an alert may stay unacknowledged.
    pub after: HumanDuration,
    /// Channels that hear about it then.
    pub to: Vec<String>,
}

/// Defaults for grouping and delivery.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AlertingConfig {
    /// Labels that make a group: `flow`, `severity`, `node`, `error_kind`, `status`.
    #[serde(default = "d_group_by")]
    pub group_by: Vec<String>,
    /// How long a new group waits for more alerts before its first message.
    #[serde(default = "d_group_wait")]
    pub group_wait: HumanDuration,
    /// At most one message per group per interval.
    #[serde(default = "d_group_interval")]
    pub group_interval: HumanDuration,
    /// A group still firing is repeated after this.
    #[serde(default = "d_repeat")]
    pub repeat_interval: HumanDuration,
    /// Failed sends of one notification before it fails over to its backup channel. Without a
    /// backup it keeps trying for `delivery_budget`.
    #[serde(default = "d_attempts")]
    pub max_attempts: u32,
    /// How long a notification keeps being retried (capped exponential backoff, honouring
    /// Retry-After) before it is `dead`; a dead one is raised on another channel and can be re-sent
    /// with `flowguard alerts resend`.
    #[serde(default = "d_budget")]
    pub delivery_budget: HumanDuration,
    /// First retry delay; doubles each time up to `max_backoff`.
    #[serde(default = "d_backoff")]
    pub backoff: HumanDuration,
    /// Longest delay between delivery retries.
    #[serde(default = "d_max_backoff")]
    pub max_backoff: HumanDuration,
    /// How long `flowguard run` keeps delivering after its run before leaving the rest pending.
    #[serde(default = "d_drain")]
    pub drain: HumanDuration,
    /// Channel that hears about dead notifications (default: the dead one's backup, else none).
    pub dead_letter: Option<String>,
    /// Link to a run, `{run_id}` replaced, for channels that set none; default: the dashboard's run
    /// page (see `server.public_url`).
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
fn d_group_wait() -> HumanDuration {
    HumanDuration::secs(0)
}
fn d_group_interval() -> HumanDuration {
    HumanDuration::secs(5 * 60)
}
fn d_repeat() -> HumanDuration {
    HumanDuration::secs(4 * 3600)
}
fn d_attempts() -> u32 {
    5
}
fn d_budget() -> HumanDuration {
    HumanDuration::secs(6 * 3600)
}
fn d_backoff() -> HumanDuration {
    HumanDuration::secs(2)
}
fn d_max_backoff() -> HumanDuration {
    HumanDuration::secs(5 * 60)
}
fn d_drain() -> HumanDuration {
    HumanDuration::secs(10)
}

pub const GROUP_LABELS: &[&str] = &["flow", "severity", "node", "error_kind", "status"];

/// Problems in the alerting sections as (dotted path, message).
pub fn check(channels: &BTreeMap<String, ChannelConfig>, routes: &[RouteConfig], a: &AlertingConfig) -> Vec<(Vec<String>, String)> {
    let mut out: Vec<(Vec<String>, String)> = Vec::new();
    let p = |parts: &[&str]| parts.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let known = |name: &str| channels.contains_key(name);
    let unknown = |name: &str| {
        let hint = crate::flow::diag::suggest(name, channels.keys().map(String::as_str))
            .map(|s| format!(" (did you mean `{s}`?)"))
            .unwrap_or_default();
        format!("unknown channel `{name}`{hint}")
    };
    for (name, c) in channels {
        if let Some(r) = &c.role
            && r != "on_call"
            && r != "team"
        {
            out.push((p(&["channels", name, "role"]), format!("unknown role `{r}`; expected on_call or team")));
        }
        if let Some(b) = &c.backup
            && !known(b)
        {
            out.push((p(&["channels", name, "backup"]), unknown(b)));
        }
    }
    for (i, r) in routes.iter().enumerate() {
        let at = |f: &str| vec!["routes".to_string(), format!("[{i}]"), f.to_string()];
        for c in r.channels.iter().chain(r.backup.iter()).chain(r.escalate.iter().flat_map(|e| e.to.iter())) {
            if !known(c) {
                out.push((at("channels"), unknown(c)));
            }
        }
        for g in r.group_by.iter().flatten() {
            if !GROUP_LABELS.contains(&g.as_str()) {
                out.push((at("group_by"), format!("unknown label `{g}`; expected one of: {}", GROUP_LABELS.join(", "))));
            }
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
