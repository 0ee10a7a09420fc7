//! WeCom (企业微信) group bot.
//!
//! Request: `POST https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key={key}` with
//! ```json
//! {"msgtype": "text", "text": {"content": "…", "mentioned_list": ["@all", "userid"]}}
//! {"msgtype": "markdown", "markdown": {"content": "…"}}
//! ```
//! Text content is at most 2048 bytes, markdown at most 4096 (cut to fit). Answer: HTTP 200;
//! the verdict is `errcode`: `{"errcode": 0, "errmsg": "ok"}`; `{"errcode": 93000, "errmsg":
//! "invalid webhook url…"}`, `{"errcode": 45009, "errmsg": "api freq out of limit"}`.
//! Limit: 20 messages per minute per bot.

use super::dingtalk::judge_errcode;
use super::{Channel, Ctx, Delivery, Message, cut, limits, link, post};
use crate::alert::config::ChannelConfig;
use futures::future::BoxFuture;
use serde_json::{Value as Json, json};
use std::sync::Arc;
use std::time::Duration;

const BASE: &str = "https://qyapi.weixin.qq.com/cgi-bin/webhook/send";

struct WeCom {
    url: String,
    key: Option<String>,
    markdown: bool,
    mention: Vec<String>,
    run_url: Option<String>,
    limits: Vec<(u32, Duration)>,
    timeout: Duration,
    cx: Ctx,
}

pub fn build(_name: &str, c: &ChannelConfig, cx: &Ctx) -> anyhow::Result<Arc<dyn Channel>> {
    let url = match (&c.webhook, &c.key) {
        (Some(w), _) => w.clone(),
        (None, Some(k)) => format!("{}?key={k}", c.endpoint.as_deref().unwrap_or(BASE)),
        _ => anyhow::bail!("a wecom channel needs `webhook` or `key`"),
    };
    let key = c.key.clone().or_else(|| url::Url::parse(&url).ok()?.query_pairs().find(|(k, _)| k == "key").map(|(_, v)| v.into_owned()));
    Ok(Arc::new(WeCom {
        url,
        key,
        markdown: c.format.as_deref() == Some("markdown"),
        mention: c.mention.clone(),
        run_url: c.run_url.clone(),
        limits: limits(c, &[(20, Duration::from_secs(60))]),
        timeout: super::timeout(c),
        cx: cx.clone(),
    }))
}

impl WeCom {
    fn body(&self, msg: &Message) -> Json {
        let link = link(msg, self.run_url.as_deref());
        if self.markdown {
            let mut tail = String::new();
            if let Some(l) = &link {
                tail.push_str(&format!("\n[{l}]({l})"));
            }
            for m in &self.mention {
                tail.push_str(&format!(" <@{m}>"));
            }
            let head = format!("**{}**\n", msg.title);
            let room = 4096usize.saturating_sub(head.len() + tail.len());
            json!({"msgtype": "markdown", "markdown": {"content": format!("{head}{}{tail}", cut(&msg.markdown, room, "\n…"))}})
        } else {
            let mut mentioned: Vec<String> = self.mention.clone();
            if msg.mention_all {
                mentioned.push("@all".into());
            }
            let tail = link.map(|l| format!("\n{l}")).unwrap_or_default();
            let head = format!("{}\n", msg.title);
            let room = 2048usize.saturating_sub(head.len() + tail.len());
            json!({"msgtype": "text", "text": {"content": format!("{head}{}{tail}", cut(&msg.text, room, "\n…")), "mentioned_list": mentioned}})
        }
    }
}

impl Channel for WeCom {
    fn kind(&self) -> &'static str {
        "wecom"
    }

    fn send<'a>(&'a self, msg: &'a Message) -> BoxFuture<'a, Delivery> {
        Box::pin(async move {
            let req = self.cx.http.post(&self.url).timeout(self.timeout).json(&self.body(msg));
            match post(req, &self.cx.redactor).await {
                Ok(a) => judge_errcode(a, &[45009], &[93000, 40008, 40058, 93004]),
                Err(d) => d,
            }
        })
    }

    fn rate_limits(&self) -> Vec<(u32, Duration)> {
        self.limits.clone()
    }

    fn secrets(&self) -> Vec<String> {
        let mut s = vec![self.url.clone()];
        s.extend(self.key.clone());
        s
    }
}
