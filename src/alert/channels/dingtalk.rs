//! DingTalk custom robot (自定义机器人).
//!
//! Request: `POST https://oapi.dingtalk.com/robot/send?access_token={token}&timestamp={ms}&sign={sign}`
//! where, with a signing secret (加签), sign = urlencode(base64(HMAC-SHA256(key = secret,
//! message = "{ms}\n{secret}"))) and the timestamp is in milliseconds (rejected when more than an
//! hour off). Body:
//! ```json
//! {"msgtype": "text", "text": {"content": "…"}, "at": {"atMobiles": ["138…"], "isAtAll": true}}
//! {"msgtype": "markdown", "markdown": {"title": "…", "text": "…"}, "at": {"atMobiles": [], "isAtAll": false}}
//! ```
//! Answer: HTTP 200; the verdict is `errcode`: `{"errcode": 0, "errmsg": "ok"}`;
//! `{"errcode": 310000, "errmsg": "sign not match…" | "keywords not in content…"}`,
//! `{"errcode": 300005, "errmsg": "token is not exist"}`,
//! `{"errcode": 130101, "errmsg": "send too fast, exceed 20 times per minute"}`. Limit: 20 per minute.

use super::{Channel, Ctx, Delivery, Message, b64, cut, hmac_sha256, limits, link, post};
use crate::alert::config::ChannelConfig;
use futures::future::BoxFuture;
use serde_json::{Value as Json, json};
use std::sync::Arc;
use std::time::Duration;

struct DingTalk {
    webhook: String,
    secret: Option<String>,
    keyword: Option<String>,
    markdown: bool,
    mention: Vec<String>,
    run_url: Option<String>,
    limits: Vec<(u32, Duration)>,
    timeout: Duration,
    cx: Ctx,
}

pub fn build(_name: &str, c: &ChannelConfig, cx: &Ctx) -> anyhow::Result<Arc<dyn Channel>> {
    Ok(Arc::new(DingTalk {
        webhook: c.webhook.clone().unwrap_or_default(),
        secret: c.secret.clone(),
        keyword: c.keyword.clone(),
        markdown: c.format.as_deref() == Some("markdown"),
        mention: c.mention.clone(),
        run_url: c.run_url.clone(),
        limits: limits(c, &[(20, Duration::from_secs(60))]),
        timeout: super::timeout(c),
        cx: cx.clone(),
    }))
}

/// The `sign` query value (before URL encoding) for a millisecond timestamp.
pub fn sign(ms: i64, secret: &str) -> String {
    b64(&hmac_sha256(secret.as_bytes(), format!("{ms}\n{secret}").as_bytes()))
}

impl DingTalk {
    fn body(&self, msg: &Message) -> Json {
        let mut title = msg.title.clone();
        if let Some(k) = &self.keyword
            && !title.contains(k.as_str())
            && !msg.text.contains(k.as_str())
        {
            title = format!("{k} {title}");
        }
        let link = link(msg, self.run_url.as_deref());
        let at = json!({"atMobiles": self.mention, "isAtAll": msg.mention_all});
        if self.markdown {
            let mut text = format!("### {title}\n\n{}", cut(&msg.markdown, 18_000, "\n…"));
            if let Some(l) = &link {
                text.push_str(&format!("\n\n[{l}]({l})"));
            }
            for m in &self.mention {
                text.push_str(&format!(" @{m}"));
            }
            json!({"msgtype": "markdown", "markdown": {"title": title, "text": text}, "at": at})
        } else {
            let mut text = format!("{title}\n{}", cut(&msg.text, 18_000, "\n…"));
            if let Some(l) = &link {
                text.push_str(&format!("\n{l}"));
            }
            json!({"msgtype": "text", "text": {"content": text}, "at": at})
        }
    }
}

impl Channel for DingTalk {
    fn kind(&self) -> &'static str {
        "dingtalk"
    }

    fn send<'a>(&'a self, msg: &'a Message) -> BoxFuture<'a, Delivery> {
        Box::pin(async move {
            let mut url = match url::Url::parse(&self.webhook) {
                Ok(u) => u,
                Err(e) => return Delivery::Failed { status: None, answer: String::new(), error: format!("bad webhook URL: {e}") },
            };
            if let Some(secret) = &self.secret {
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
        let mut s: Vec<String> = self.secret.iter().cloned().collect();
        s.push(self.webhook.clone());
        if let Ok(u) = url::Url::parse(&self.webhook) {
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
