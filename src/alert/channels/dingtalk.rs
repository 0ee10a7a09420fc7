//! DingTalk custom robot (自定义机器人).
//!
//! Request: `POST https://oapi.dingtalk.com/robot/send?access_token={token}&timestamp={ms}&sign={sign}`
//! where, with a signing secret (加签), sign = urlencode(base64(HMAC-SHA256(key = secret,
//! message = "{ms}\n{secret}"))) and the timestamp is in milliseconds (rejected when more than an
//! hour off). Body:
//! ```json
//! {"msgtype": "text", "text": {"content": "…"}, "at": {"atMobiles": ["138…"], "isAtAll": true}}
//! {"msgtype": "markdown", "markdown": {"title": "…", "text": "…"}, "at": {"atMobiles": [], "isAtAll": false}}
//! {"msgtype": "actionCard", "actionCard": {"title": "…", "text": "markdown…", "singleTitle": "查看运行", "singleURL": "…"}}
//! {"msgtype": "link", "link": {"title": "…", "text": "…", "messageUrl": "…", "picUrl": ""}}
//! ```
//! Only `text` and `markdown` can @ people (`at`); an action card or link carries the mentions and
//! @all as text only. An action card without a run link, and a link message without one, are sent
//! as markdown / text. Reports go as markdown (or an action card), never as plain text or a link.
//! Answer: HTTP 200; the verdict is `errcode`: `{"errcode": 0, "errmsg": "ok"}`;
//! `{"errcode": 310000, "errmsg": "sign not match…" | "keywords not in content…"}`,
//! `{"errcode": 300005, "errmsg": "token is not exist"}`,
//! `{"errcode": 130101, "errmsg": "send too fast, exceed 20 times per minute"}`. Limit: 20 per minute.

use super::{Channel, ChannelParams, Ctx, Delivery, Message, Raw, b64, cut, hmac_sha256, limits, link, post};
use crate::alert::config::ChannelConfig;
use crate::flow::diag::Diagnostics;
use futures::future::BoxFuture;
use serde::Deserialize;
use serde_json::{Value as Json, json};
use std::sync::Arc;
use std::time::Duration;

/// `type: dingtalk`.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// The robot's webhook URL with its `access_token` (a secret).
    pub webhook: String,
    /// The signing secret (加签, `SEC…`), when the robot has one.
    pub secret: Option<String>,
    /// Keyword security (自定义关键词): a word every message must contain; added to the title when missing.
    pub keyword: Option<String>,
    /// How alerts look.
    #[serde(default)]
    pub format: Format,
    /// Mobile numbers to @.
    #[serde(default)]
    pub mention: Vec<String>,
}

/// DingTalk robot message types.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    #[default]
    Text,
    Markdown,
    /// A markdown card with one button to the run page (`actionCard`).
    #[serde(alias = "actionCard")]
    ActionCard,
    /// A title and a short text that open the run page (`link`).
    Link,
}

pub fn parse(raw: &Raw<'_>) -> Result<Arc<dyn ChannelParams>, Diagnostics> {
    let p: Params = raw.parse()?;
    if url::Url::parse(&p.webhook).is_err() {
        return Err(Diagnostics(vec![raw.problem("webhook", "expected a URL (https://oapi.dingtalk.com/robot/send?access_token=…)")]));
    }
    Ok(Arc::new(p))
}

impl ChannelParams for Params {
    fn build(&self, _name: &str, c: &ChannelConfig, cx: &Ctx) -> anyhow::Result<Arc<dyn Channel>> {
        Ok(Arc::new(DingTalk {
            p: self.clone(),
            run_url: c.run_url.clone(),
            limits: limits(c, &[(20, Duration::from_secs(60))]),
            timeout: super::timeout(c),
            cx: cx.clone(),
        }))
    }
}

struct DingTalk {
    p: Params,
    run_url: Option<String>,
    limits: Vec<(u32, Duration)>,
    timeout: Duration,
    cx: Ctx,
}

/// The `sign` query value (before URL encoding) for a millisecond timestamp.
pub fn sign(ms: i64, secret: &str) -> String {
    b64(&hmac_sha256(secret.as_bytes(), format!("{ms}\n{secret}").as_bytes()))
}

impl DingTalk {
    fn body(&self, msg: &Message) -> Json {
        let mut title = msg.title.clone();
        if let Some(k) = &self.p.keyword
            && !title.contains(k.as_str())
            && !msg.text.contains(k.as_str())
        {
            title = format!("{k} {title}");
        }
        let link = link(msg, self.run_url.as_deref());
        let at = json!({"atMobiles": self.p.mention, "isAtAll": msg.mention_all});
        let mut format = self.p.format;
        if msg.purpose == "report" && matches!(format, Format::Text | Format::Link) {
            format = Format::Markdown;
        }
        // A report's Markdown starts with its own heading.
        let heading = if msg.purpose == "report" { String::new() } else { format!("### {title}\n\n") };
        let mentions = || {
            let mut t = String::new();
            if msg.mention_all && format != Format::Markdown {
                t.push_str(" @all");
            }
            for m in &self.p.mention {
                t.push_str(&format!(" @{m}"));
            }
            t
        };
        match (format, &link) {
            (Format::ActionCard, Some(l)) => {
                let label = if msg.fields.get("locale").map(String::as_str) == Some("en") { "Open the run" } else { "查看运行" };
                let text = format!("{heading}{}\n\n{}", cut(&msg.markdown, 18_000, "\n…"), mentions().trim());
                json!({"msgtype": "actionCard", "actionCard": {"title": title, "text": text.trim_end(), "singleTitle": label, "singleURL": l}})
            }
            (Format::Link, Some(l)) => {
                let text = format!("{}{}", cut(&msg.text, 500, "…"), mentions());
                json!({"msgtype": "link", "link": {"title": title, "text": text, "messageUrl": l, "picUrl": ""}})
            }
            (Format::Markdown | Format::ActionCard, _) => {
                let mut text = format!("{heading}{}", cut(&msg.markdown, 18_000, "\n…"));
                if let Some(l) = &link {
                    text.push_str(&format!("\n\n[{l}]({l})"));
                }
                text.push_str(&mentions());
                json!({"msgtype": "markdown", "markdown": {"title": title, "text": text}, "at": at})
            }
            (Format::Text | Format::Link, _) => {
                let mut text = format!("{title}\n{}", cut(&msg.text, 18_000, "\n…"));
                if let Some(l) = &link {
                    text.push_str(&format!("\n{l}"));
                }
                json!({"msgtype": "text", "text": {"content": text}, "at": at})
            }
        }
    }
}

impl Channel for DingTalk {
    fn kind(&self) -> &'static str {
        "dingtalk"
    }

    fn send<'a>(&'a self, msg: &'a Message) -> BoxFuture<'a, Delivery> {
        Box::pin(async move {
            let mut url = match url::Url::parse(&self.p.webhook) {
                Ok(u) => u,
                Err(e) => return Delivery::Failed { status: None, answer: String::new(), error: format!("bad webhook URL: {e}") },
            };
            if let Some(secret) = &self.p.secret {
                let ms = jiff::Timestamp::now().as_millisecond();
                url.query_pairs_mut().append_pair("timestamp", &ms.to_string()).append_pair("sign", &sign(ms, secret));
            }
            let req = self.cx.http.post(url).timeout(self.timeout).json(&self.body(msg));
            match post(req, &self.cx.redactor).await {
                Ok(a) => judge_errcode(a, &[130101], &[310000, 300005, 300001, 400013, 400101]),
                Err(d) => d,
            }
        })
    }

    fn rate_limits(&self) -> Vec<(u32, Duration)> {
        self.limits.clone()
    }

    fn secrets(&self) -> Vec<String> {
        let mut s: Vec<String> = self.p.secret.iter().cloned().collect();
        s.push(self.p.webhook.clone());
        if let Ok(u) = url::Url::parse(&self.p.webhook) {
            s.extend(u.query_pairs().filter(|(k, _)| k == "access_token").map(|(_, v)| v.into_owned()));
        }
        s
    }
}

/// DingTalk and WeCom answer `{"errcode": N, "errmsg": "…"}`; 0 is success.
pub fn judge_errcode(a: super::Answer, rate: &[i64], permanent: &[i64]) -> Delivery {
    let status = Some(a.status);
    let v: Json = serde_json::from_str(&a.body).unwrap_or(Json::Null);
    let code = v.get("errcode").and_then(Json::as_i64);
    let msg = v.get("errmsg").and_then(Json::as_str).unwrap_or("").to_owned();
    match (a.status, code) {
        (429, _) => Delivery::RateLimited { status, retry_after: a.retry_after.or(Some(Duration::from_secs(60))), answer: a.body },
        (_, Some(c)) if rate.contains(&c) => {
            // Both services count per minute: wait for the window to roll over.
            Delivery::RateLimited { status, retry_after: a.retry_after.or(Some(Duration::from_secs(60))), answer: a.body }
        }
        (200..=299, Some(0)) => Delivery::Sent { status, answer: a.body },
        (500..=599, _) => Delivery::Retry { status, error: format!("HTTP {}", a.status), answer: a.body },
        (_, Some(c)) if permanent.contains(&c) => Delivery::Failed { status, error: format!("errcode {c}: {msg}"), answer: a.body },
        (_, Some(c)) => Delivery::Retry { status, error: format!("errcode {c}: {msg}"), answer: a.body },
        (_, None) => Delivery::Retry { status, error: format!("HTTP {} without an errcode", a.status), answer: a.body },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ch(format: Format) -> DingTalk {
        crate::init_tls();
        DingTalk {
            p: Params { webhook: "http://x/robot/send?access_token=t".into(), secret: None, keyword: None, format, mention: vec![] },
            run_url: Some("http://dash/runs/{run_id}".into()),
            limits: vec![],
            timeout: Duration::from_secs(1),
            cx: Ctx { http: reqwest::Client::new(), redactor: Default::default() },
        }
    }

    #[test]
    fn cards_and_links_need_a_run_to_point_at() {
        let mut msg = Message { title: "t".into(), text: "x".into(), markdown: "**x**".into(), ..Default::default() };
        assert_eq!(ch(Format::ActionCard).body(&msg)["msgtype"], "markdown", "no run: no button");
        assert_eq!(ch(Format::Link).body(&msg)["msgtype"], "text");
        msg.fields.insert("run_id".into(), "r1".into());
        assert_eq!(ch(Format::ActionCard).body(&msg)["actionCard"]["singleURL"], "http://dash/runs/r1");
        assert_eq!(ch(Format::Link).body(&msg)["link"]["messageUrl"], "http://dash/runs/r1");
        msg.purpose = "report".into();
        assert_eq!(ch(Format::Text).body(&msg)["msgtype"], "markdown", "a report is never plain text");
    }
}
