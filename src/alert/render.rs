//! Alert text from minijinja templates, with zh-CN and en defaults (config `locale`). The default
//! text of one alert follows the seed: `[告警] 流程失败` / 步骤 / 原因 / 时间, plus flow, severity,
//! attempts, count and a link. Templates can be replaced in `alerting.templates` (title, text,
//! markdown).

use super::channels::Message;
use crate::store::AlertRecord;
use serde::Serialize;
use std::collections::BTreeMap;

const ZH_TITLE: &str = r#"{% if purpose == "resolved" %}[恢复] 流程已恢复{% elif purpose == "escalation" %}[升级] {{ headline }}（未确认）{% elif purpose == "failover" %}[转发] {{ headline }}{% else %}[告警] {{ headline }}{% endif %}"#;
const ZH_TEXT: &str = r#"{% if alerts|length == 1 %}{% set a = alerts[0] %}流程: {{ a.flow }}
步骤: {{ a.node }}
原因: {{ a.error_kind }}{% if a.message %}: {{ a.message }}{% endif %}
时间: {{ a.time }}
级别: {{ a.severity }}
{% if a.attempts %}尝试: {{ a.attempts }} 次
{% endif %}次数: {{ a.count }}{% if a.run_id %}
运行: {{ a.run_id }}{% endif %}{% else %}流程: {{ flow }}
级别: {{ severity }}
{% for a in alerts %}- {{ a.flow }} · {{ a.node }} · {{ a.error_kind }} ×{{ a.count }}{% if a.message %}: {{ a.message }}{% endif %}
{% endfor %}时间: {{ time }}{% endif %}{% if note %}
{{ note }}{% endif %}"#;
const ZH_MD: &str = r#"{% if alerts|length == 1 %}{% set a = alerts[0] %}**流程**: {{ a.flow }}
**步骤**: {{ a.node }}
**原因**: {{ a.error_kind }}{% if a.message %}: {{ a.message }}{% endif %}
**时间**: {{ a.time }}
**级别**: {{ a.severity }}{% if a.attempts %} · 尝试 {{ a.attempts }} 次{% endif %} · 共 {{ a.count }} 次{% else %}**流程**: {{ flow }} · **级别**: {{ severity }}
{% for a in alerts %}- **{{ a.node }}** · {{ a.error_kind }} ×{{ a.count }}{% if a.message %}: {{ a.message }}{% endif %}
{% endfor %}**时间**: {{ time }}{% endif %}{% if note %}
{{ note }}{% endif %}"#;

const EN_TITLE: &str = r#"{% if purpose == "resolved" %}[RESOLVED] Flow recovered{% elif purpose == "escalation" %}[ESCALATED] {{ headline }} (not acknowledged){% elif purpose == "failover" %}[FAILOVER] {{ headline }}{% else %}[ALERT] {{ headline }}{% endif %}"#;
const EN_TEXT: &str = r#"{% if alerts|length == 1 %}{% set a = alerts[0] %}Flow: {{ a.flow }}
Step: {{ a.node }}
Reason: {{ a.error_kind }}{% if a.message %}: {{ a.message }}{% endif %}
Time: {{ a.time }}
Severity: {{ a.severity }}
{% if a.attempts %}Attempts: {{ a.attempts }}
{% endif %}Count: {{ a.count }}{% if a.run_id %}
Run: {{ a.run_id }}{% endif %}{% else %}Flow: {{ flow }}
Severity: {{ severity }}
{% for a in alerts %}- {{ a.flow }} · {{ a.node }} · {{ a.error_kind }} ×{{ a.count }}{% if a.message %}: {{ a.message }}{% endif %}
{% endfor %}Time: {{ time }}{% endif %}{% if note %}
{{ note }}{% endif %}"#;
const EN_MD: &str = r#"{% if alerts|length == 1 %}{% set a = alerts[0] %}**Flow**: {{ a.flow }}
**Step**: {{ a.node }}
**Reason**: {{ a.error_kind }}{% if a.message %}: {{ a.message }}{% endif %}
**Time**: {{ a.time }}
**Severity**: {{ a.severity }}{% if a.attempts %} · {{ a.attempts }} attempts{% endif %} · {{ a.count }} times{% else %}**Flow**: {{ flow }} · **Severity**: {{ severity }}
{% for a in alerts %}- **{{ a.node }}** · {{ a.error_kind }} ×{{ a.count }}{% if a.message %}: {{ a.message }}{% endif %}
{% endfor %}**Time**: {{ time }}{% endif %}{% if note %}
{{ note }}{% endif %}"#;

pub struct Renderer {
    env: minijinja::Environment<'static>,
    pub locale: String,
    tz: jiff::tz::TimeZone,
    run_url: Option<String>,
}

#[derive(Serialize)]
struct AlertView {
    flow: String,
    node: String,
    error_kind: String,
    severity: String,
    status: String,
    count: i64,
    attempts: Option<i64>,
    message: String,
    run_id: Option<String>,
    time: String,
}

/// What a message is about.
pub struct Subject<'a> {
    pub purpose: &'a str,
    pub alerts: &'a [AlertRecord],
    pub mention_all: bool,
    /// An extra line (a failover's reason).
    pub note: Option<String>,
}

impl Renderer {
    pub fn new(
        locale: &str,
        tz: jiff::tz::TimeZone,
        run_url: Option<String>,
        overrides: &BTreeMap<String, String>,
    ) -> anyhow::Result<Self> {
        let mut env = minijinja::Environment::new();
        let en = locale == "en";
        for (name, zh, enl) in [("title", ZH_TITLE, EN_TITLE), ("text", ZH_TEXT, EN_TEXT), ("markdown", ZH_MD, EN_MD)] {
            let src = overrides.get(name).cloned().unwrap_or_else(|| (if en { enl } else { zh }).to_owned());
            env.add_template_owned(name, src).map_err(|e| anyhow::anyhow!("alerting.templates.{name}: {e}"))?;
        }
        Ok(Renderer { env, locale: locale.to_owned(), tz, run_url })
    }

    pub fn time(&self, ms: i64) -> String {
        jiff::Timestamp::from_millisecond(ms)
            .map(|t| t.to_zoned(self.tz.clone()).strftime("%Y-%m-%d %H:%M:%S").to_string())
            .unwrap_or_default()
    }

    fn headline(&self, status: &str) -> &'static str {
        let en = self.locale == "en";
        match (status, en) {
            ("timed_out", false) => "流程超时",
            ("timed_out", true) => "Flow timed out",
            ("waiting_manual", false) => "流程等待人工处理",
            ("waiting_manual", true) => "Flow waits for a human",
            ("refused", false) => "流程已阻断，拒绝运行",
            ("refused", true) => "Flow is blocked: run refused",
            ("interrupted", false) => "流程中断",
            ("interrupted", true) => "Flow interrupted",
            ("latency_warning", false) => "流程延迟预警",
            ("latency_warning", true) => "Flow is running late",
            ("dead", false) => "告警投递失败",
            ("dead", true) => "Alert delivery failed",
            (_, false) => "流程失败",
            (_, true) => "Flow failed",
        }
    }

    pub fn render(&self, s: &Subject<'_>) -> anyhow::Result<Message> {
        let first = s.alerts.first();
        let severity = s
            .alerts
            .iter()
            .map(|a| a.severity.as_str())
            .max_by_key(|sv| match *sv {
                "high" => 2,
                "medium" => 1,
                _ => 0,
            })
            .unwrap_or("medium")
            .to_owned();
        let views: Vec<AlertView> = s
            .alerts
            .iter()
            .map(|a| {
                let labels: BTreeMap<String, String> = serde_json::from_str(&a.labels).unwrap_or_default();
                AlertView {
                    flow: a.flow.clone(),
                    node: a.node.clone(),
                    error_kind: a.error_kind.clone(),
                    severity: a.severity.clone(),
                    status: labels.get("status").cloned().unwrap_or_default(),
                    count: a.count,
                    attempts: labels.get("attempts").and_then(|x| x.parse().ok()),
                    message: a.last_message.clone().unwrap_or_default(),
                    run_id: a.last_run_id.clone(),
                    time: self.time(a.last_seen),
                }
            })
            .collect();
        let status = views.first().map(|v| v.status.clone()).unwrap_or_default();
        let now = s.alerts.iter().map(|a| a.resolved_at.unwrap_or(a.last_seen)).max().unwrap_or(0);
        let flows: std::collections::BTreeSet<&str> = s.alerts.iter().map(|a| a.flow.as_str()).collect();
        let ctx = minijinja::context! {
            purpose => s.purpose,
            headline => self.headline(if s.purpose == "dead" { "dead" } else { &status }),
            flow => flows.into_iter().collect::<Vec<_>>().join(", "),
            severity => severity.clone(),
            alerts => minijinja::Value::from(minijinja::value::Serde(&views)),
            time => self.time(now),
            note => s.note.clone(),
            locale => self.locale.clone(),
        };
        let r = |name: &str| -> anyhow::Result<String> {
            self.env.get_template(name)?.render(&ctx).map_err(|e| anyhow::anyhow!("alert template `{name}`: {e}"))
        };
        let mut fields = BTreeMap::new();
        if let Some(a) = first {
            fields.insert("flow".into(), a.flow.clone());
            fields.insert("node".into(), a.node.clone());
            fields.insert("error_kind".into(), a.error_kind.clone());
            fields.insert("count".into(), a.count.to_string());
            fields.insert("message".into(), a.last_message.clone().unwrap_or_default());
            if let Some(r) = &a.last_run_id {
                fields.insert("run_id".into(), r.clone());
            }
        }
        fields.insert("severity".into(), severity.clone());
        fields.insert("time".into(), self.time(now));
        fields.insert("status".into(), status);
        fields.insert("locale".into(), self.locale.clone());
        let title = r("title")?;
        fields.insert("title".into(), title.clone());
        let link = match (&self.run_url, first.and_then(|a| a.last_run_id.as_ref())) {
            (Some(p), Some(id)) => Some(p.replace("{run_id}", id)),
            _ => None,
        };
        Ok(Message {
            purpose: s.purpose.to_owned(),
            severity,
            title,
            text: r("text")?,
            markdown: r("markdown")?,
            link,
            mention_all: s.mention_all,
            fields,
            ..Default::default()
        })
    }
}
