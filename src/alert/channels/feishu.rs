//! Feishu (Lark) custom bot webhook.
//!
//! Request: `POST https://open.feishu.cn/open-apis/bot/v2/hook/{token}`, `Content-Type: application/json`:
//! ```json
//! {"timestamp": "1700000000", "sign": "…", "msg_type": "text", "content": {"text": "…"}}
//! {"msg_type": "post", "content": {"post": {"zh_cn": {"title": "…", "content": [[{"tag": "text", "text": "…"}], [{"tag": "a", "text": "…", "href": "…"}], [{"tag": "at", "user_id": "all"}]]}}}}
//! {"msg_type": "interactive", "card": {"config": {"wide_screen_mode": true}, "header": {"template": "red", "title": {"tag": "plain_text", "content": "…"}},
//!   "elements": [{"tag": "div", "text": {"tag": "lark_md", "content": "…"}}, {"tag": "action", "actions": [{"tag": "button", "text": {"tag": "plain_text", "content": "…"}, "url": "…", "type": "primary"}]}]}}
//! ```
//! `timestamp` and `sign` are present only when the bot has a signing secret:
//! sign = base64(HMAC-SHA256(key = "{timestamp}\n{secret}", message = "")), timestamp in seconds;
//! Feishu rejects a timestamp more than an hour away. @all is `<at user_id="all">所有人</at>` in
//! text, `{"tag": "at", "user_id": "all"}` in post, `<at id=all></at>` in lark_md; a user is the same
//! with their open_id. Keyword security: the message must contain the keyword (we add it to the
//! title when missing). The body may not exceed 20 KB: the text is cut to fit.
//!
//! Answer: HTTP 200 in nearly every case; the verdict is the body:
//! `{"code": 0, "msg": "success", "data": {}}` (older bots: `{"StatusCode": 0, "StatusMessage": "success"}`);
//! `{"code": 19021, "msg": "sign match fail or timestamp is not within one hour from current time"}`,
//! `{"code": 19024, "msg": "Key Words Not Found"}`, `{"code": 19001, "msg": "param invalid: incoming webhook access token invalid"}`,
//! `{"code": 11232, "msg": "frequency limited psm[…]"}` (also HTTP 429 with Retry-After on some gateways).
//! Limits: 100 messages per minute and 5 per second per bot.

use super::{Channel, ChannelParams, Ctx, Delivery, Message, Raw, b64, cut, hmac_sha256, limits, link, post};
use crate::alert::config::ChannelConfig;
use crate::flow::diag::Diagnostics;
use futures::future::BoxFuture;
use serde::Deserialize;
use serde_json::{Value as Json, json};
use std::sync::Arc;
use std::time::Duration;

/// Feishu's limit on a request body.
pub const MAX_BODY: usize = 20 * 1024;

/// `type: feishu`.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// The bot's webhook URL (a secret: it carries the token).
    pub webhook: String,
    /// The signing secret (签名校验), when the bot has one.
    pub secret: Option<String>,
    /// Keyword security (自定义关键词): a word every message must contain; added to the title when missing.
    pub keyword: Option<String>,
    /// How alerts look.
    #[serde(default)]
    pub format: Format,
    /// Users to @ (open_id or user_id); `all` is @all.
    #[serde(default)]
    pub mention: Vec<String>,
}

/// Feishu message types.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// Plain text.
    Text,
    /// Rich text (`post`).
    Post,
    /// An interactive card with a coloured header and a button to the run.
    #[default]
    Card,
}

pub fn parse(raw: &Raw<'_>) -> Result<Arc<dyn ChannelParams>, Diagnostics> {
    let p: Params = raw.parse()?;
    if !p.webhook.starts_with("http://") && !p.webhook.starts_with("https://") {
        return Err(Diagnostics(vec![raw.problem("webhook", "expected an http(s) URL")]));
    }
    Ok(Arc::new(p))
}

impl ChannelParams for Params {
    fn build(&self, _name: &str, c: &ChannelConfig, cx: &Ctx) -> anyhow::Result<Arc<dyn Channel>> {
        Ok(Arc::new(Feishu {
            p: self.clone(),
            run_url: c.run_url.clone(),
            limits: limits(c, &[(5, Duration::from_secs(1)), (100, Duration::from_secs(60))]),
            timeout: super::timeout(c),
            cx: cx.clone(),
        }))
    }
}

struct Feishu {
    p: Params,
    run_url: Option<String>,
    limits: Vec<(u32, Duration)>,
    timeout: Duration,
    cx: Ctx,
}

/// The `sign` for a timestamp (seconds) and secret.
pub fn sign(timestamp: i64, secret: &str) -> String {
    b64(&hmac_sha256(format!("{timestamp}\n{secret}").as_bytes(), b""))
}

pub fn colour(msg: &Message) -> &'static str {
    match (msg.purpose.as_str(), msg.severity.as_str()) {
        ("resolved", _) => "green",
        ("test" | "notify", _) => "blue",
        (_, "high") => "red",
        (_, "medium") => "orange",
        _ => "yellow",
    }
}

impl Feishu {
    fn title(&self, msg: &Message) -> String {
        match &self.p.keyword {
            Some(k) if !msg.title.contains(k.as_str()) && !msg.text.contains(k.as_str()) => format!("{k} {}", msg.title),
            _ => msg.title.clone(),
        }
    }

    fn mentions(&self, msg: &Message) -> Vec<String> {
        let mut m = Vec::new();
        if msg.mention_all {
            m.push("all".to_owned());
        }
        m.extend(self.p.mention.iter().filter(|u| *u != "all").cloned());
        m
    }

    /// The body for `text` of the message (which the caller may have cut).
    fn body(&self, msg: &Message, text: &str, md: &str) -> Json {
        let title = self.title(msg);
        let link = link(msg, self.run_url.as_deref());
        let at = self.mentions(msg);
        let label = if msg.fields.get("locale").map(String::as_str) == Some("en") { "Open the run" } else { "查看运行" };
        if let Some(card) = &msg.card {
            // A finished card (a report): sent as previewed, with the keyword in its title.
            let mut card = card.clone();
            if let Some(k) = &self.p.keyword
                && !card.to_string().contains(k.as_str())
                && let Some(t) = card.pointer_mut("/card/header/title/content")
            {
                *t = json!(format!("{k} {}", t.as_str().unwrap_or("")));
            }
            return card;
        }
        match self.p.format {
            Format::Text => {
                let mut t = format!("{title}\n{text}");
                if let Some(l) = &link {
                    t.push_str(&format!("\n{l}"));
                }
                for u in &at {
                    let name = if u == "all" { "所有人" } else { u.as_str() };
                    t.push_str(&format!(" <at user_id=\"{u}\">{name}</at>"));
                }
                json!({"msg_type": "text", "content": {"text": t}})
            }
            Format::Post => {
                let mut rows: Vec<Json> = text.lines().map(|l| json!([{"tag": "text", "text": l}])).collect();
                if let Some(l) = &link {
                    rows.push(json!([{"tag": "a", "text": label, "href": l}]));
                }
                if !at.is_empty() {
                    rows.push(Json::Array(at.iter().map(|u| json!({"tag": "at", "user_id": u})).collect()));
                }
                json!({"msg_type": "post", "content": {"post": {"zh_cn": {"title": title, "content": rows}}}})
            }
            Format::Card => {
                let mut content = md.to_owned();
                for u in &at {
                    content.push_str(&format!("\n<at id={u}></at>"));
                }
                let mut elements = vec![json!({"tag": "div", "text": {"tag": "lark_md", "content": content}})];
                if let Some(l) = &link {
                    elements.push(json!({"tag": "action", "actions": [{"tag": "button", "text": {"tag": "plain_text", "content": label}, "url": l, "type": "primary"}]}));
                }
                json!({"msg_type": "interactive", "card": {
                    "config": {"wide_screen_mode": true},
                    "header": {"template": colour(msg), "title": {"tag": "plain_text", "content": title}},
                    "elements": elements}})
            }
        }
    }

    /// The body, its text cut until the whole request fits in 20 KB.
    pub fn fitted(&self, msg: &Message, now_s: i64) -> Json {
        let (mut text, mut md) = (msg.text.clone(), msg.markdown.clone());
        loop {
            let mut body = self.body(msg, &text, &md);
            if let Some(secret) = &self.p.secret {
                body["timestamp"] = json!(now_s.to_string());
                body["sign"] = json!(sign(now_s, secret));
            }
            let len = body.to_string().len();
            if len <= MAX_BODY || (text.is_empty() && md.is_empty()) {
                return body;
            }
            // JSON escaping can make text grow (CJK stays as is; quotes and newlines double).
            let over = len - MAX_BODY + 64;
            text = cut(&text, text.len().saturating_sub(over), "\n…(truncated)");
            md = cut(&md, md.len().saturating_sub(over), "\n…(truncated)");
        }
    }
}

impl Channel for Feishu {
    fn kind(&self) -> &'static str {
        "feishu"
    }

    fn send<'a>(&'a self, msg: &'a Message) -> BoxFuture<'a, Delivery> {
        Box::pin(async move {
            let now_s = jiff::Timestamp::now().as_second();
            let body = self.fitted(msg, now_s);
            let req = self.cx.http.post(&self.p.webhook).timeout(self.timeout).json(&body);
            let a = match post(req, &self.cx.redactor).await {
                Ok(a) => a,
                Err(d) => return d,
            };
            judge(a)
        })
    }

    fn rate_limits(&self) -> Vec<(u32, Duration)> {
        self.limits.clone()
    }

    fn secrets(&self) -> Vec<String> {
        let mut s: Vec<String> = self.p.secret.iter().cloned().collect();
        s.push(self.p.webhook.clone());
        if let Some(token) = self.p.webhook.rsplit('/').next() {
            s.push(token.to_owned());
        }
        s
    }
}

fn judge(a: super::Answer) -> Delivery {
    let status = Some(a.status);
    let v: Json = serde_json::from_str(&a.body).unwrap_or(Json::Null);
    let code = v.get("code").or_else(|| v.get("StatusCode")).and_then(Json::as_i64);
    match (a.status, code) {
        (_, Some(11232)) | (429, _) => Delivery::RateLimited {
            status,
            retry_after: a.retry_after.or(Some(Duration::from_secs(if a.status == 429 { 1 } else { 2 }))),
            answer: a.body,
        },
        (200..=299, Some(0)) => Delivery::Sent { status, answer: a.body },
        (500..=599, _) => Delivery::Retry { status, error: format!("HTTP {}", a.status), answer: a.body },
        (_, Some(c)) => {
            let msg = v.get("msg").or_else(|| v.get("StatusMessage")).and_then(Json::as_str).unwrap_or("").to_owned();
            // 9499 and 1xxxx server-side trouble are worth a retry; 19xxx are configuration errors.
            if (19000..20000).contains(&c) || a.status == 400 {
                Delivery::Failed { status, error: format!("Feishu code {c}: {msg}"), answer: a.body }
            } else {
                Delivery::Retry { status, error: format!("Feishu code {c}: {msg}"), answer: a.body }
            }
        }
        (_, None) => Delivery::Retry { status, error: format!("HTTP {} without a Feishu code", a.status), answer: a.body },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ch(format: &str, secret: Option<&str>) -> Feishu {
        crate::init_tls();
        let format = match format {
            "text" => Format::Text,
            "post" => Format::Post,
            _ => Format::Card,
        };
        Feishu {
            p: Params {
                webhook: "http://x/hook/t".into(),
                secret: secret.map(str::to_owned),
                keyword: Some("告警".into()),
                format,
                mention: vec![],
            },
            run_url: Some("http://dash/runs/{run_id}".into()),
            limits: vec![],
            timeout: Duration::from_secs(1),
            cx: Ctx { http: reqwest::Client::new(), redactor: Default::default() },
        }
    }

    #[test]
    fn sign_matches_the_documented_example_shape() {
        // HMAC over an empty message, keyed by "timestamp\nsecret".
        let s = sign(1_599_360_473, "demo");
        assert_eq!(s, b64(&hmac_sha256(b"1599360473\ndemo", b"")));
        assert_eq!(s.len(), 44);
    }

    #[test]
    fn big_bodies_are_cut_to_twenty_kilobytes() {
        let msg =
            Message { title: "t".into(), text: "流程失败\n".repeat(5000), markdown: "**x**\n".repeat(5000), ..Default::default() };
        for f in ["text", "post", "card"] {
            let b = ch(f, Some("sec")).fitted(&msg, 1).to_string();
            assert!(b.len() <= MAX_BODY, "{f}: {}", b.len());
            assert!(b.contains("truncated"), "{f}");
        }
    }

    #[test]
    fn keyword_and_link_and_all() {
        let mut fields = std::collections::BTreeMap::new();
        fields.insert("run_id".to_string(), "r1".to_string());
        let msg = Message { title: "[ALERT] x".into(), text: "a".into(), mention_all: true, fields, ..Default::default() };
        let b = ch("text", None).fitted(&msg, 1).to_string();
        assert!(b.contains("告警 [ALERT] x") && b.contains("http://dash/runs/r1") && b.contains("<at user_id=\\\"all\\\">"), "{b}");
    }
}
