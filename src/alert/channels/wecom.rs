//! WeCom (企业微信) group bot.
//!
//! Request: `POST https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key={key}` with
//! ```json
//! {"msgtype": "text", "text": {"content": "…", "mentioned_list": ["@all", "userid"]}}
//! {"msgtype": "markdown", "markdown": {"content": "…"}}
//! {"msgtype": "markdown_v2", "markdown_v2": {"content": "…"}}
//! ```
//! Text content is at most 2048 bytes, markdown and markdown_v2 at most 4096 (cut to fit).
//! `markdown` knows `<@userid>` and `<font color>` but no tables or lists; `markdown_v2` renders
//! tables, lists and dividers but cannot @ anyone. Reports go as markdown_v2 (their tables).
//! Answer: HTTP 200; the verdict is `errcode`: `{"errcode": 0, "errmsg": "ok"}`; `{"errcode": 93000,
//! "errmsg": "invalid webhook url…"}`, `{"errcode": 45009, "errmsg": "api freq out of limit"}`.
//! Limit: 20 messages per minute per bot.

use super::dingtalk::judge_errcode;
use super::{Channel, ChannelParams, Ctx, Delivery, Message, Raw, cut, limits, link, post};
use crate::alert::config::ChannelConfig;
use crate::flow::diag::Diagnostics;
use futures::future::BoxFuture;
use serde::Deserialize;
use serde_json::{Value as Json, json};
use std::sync::Arc;
use std::time::Duration;

const BASE: &str = "https://qyapi.weixin.qq.com/cgi-bin/webhook/send";

/// `type: wecom`: `webhook` or `key` (one is required).
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// The bot's full webhook URL (a secret: it carries the key).
    pub webhook: Option<String>,
    /// The bot key alone (instead of `webhook`).
    pub key: Option<String>,
    /// With `key`: the send address instead of WeCom's (a private gateway; tests).
    pub endpoint: Option<String>,
    /// How alerts look.
    #[serde(default)]
    pub format: Format,
    /// User ids to @ (`text` and `markdown`).
    #[serde(default)]
    pub mention: Vec<String>,
}

/// WeCom group bot message types.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    #[default]
    Text,
    Markdown,
    /// Markdown with tables and lists; cannot @ anyone.
    MarkdownV2,
}

pub fn parse(raw: &Raw<'_>) -> Result<Arc<dyn ChannelParams>, Diagnostics> {
    let p: Params = raw.parse()?;
    if p.webhook.is_none() && p.key.is_none() {
        return Err(Diagnostics(vec![raw.problem("webhook", "a `wecom` channel needs `webhook` or `key`")]));
    }
    Ok(Arc::new(p))
}

impl ChannelParams for Params {
    fn build(&self, _name: &str, c: &ChannelConfig, cx: &Ctx) -> anyhow::Result<Arc<dyn Channel>> {
        let url = match (&self.webhook, &self.key) {
            (Some(w), _) => w.clone(),
            (None, Some(k)) => format!("{}?key={k}", self.endpoint.as_deref().unwrap_or(BASE)),
            _ => anyhow::bail!("a wecom channel needs `webhook` or `key`"),
        };
        let key =
            self.key.clone().or_else(|| url::Url::parse(&url).ok()?.query_pairs().find(|(k, _)| k == "key").map(|(_, v)| v.into_owned()));
        Ok(Arc::new(WeCom {
            url,
            key,
            format: self.format,
            mention: self.mention.clone(),
            run_url: c.run_url.clone(),
            limits: limits(c, &[(20, Duration::from_secs(60))]),
            timeout: super::timeout(c),
            cx: cx.clone(),
        }))
    }
}

struct WeCom {
    url: String,
    key: Option<String>,
    format: Format,
    mention: Vec<String>,
    run_url: Option<String>,
    limits: Vec<(u32, Duration)>,
    timeout: Duration,
    cx: Ctx,
}

impl WeCom {
    fn body(&self, msg: &Message) -> Json {
        let link = link(msg, self.run_url.as_deref());
        let format = if msg.purpose == "report" { Format::MarkdownV2 } else { self.format };
        match format {
            Format::Markdown | Format::MarkdownV2 => {
                let mut tail = String::new();
                if let Some(l) = &link {
                    tail.push_str(&format!("\n[{l}]({l})"));
                }
                if format == Format::Markdown {
                    for m in &self.mention {
                        tail.push_str(&format!(" <@{m}>"));
                    }
                }
                let head = match format {
                    // A report's Markdown starts with its own heading.
                    _ if msg.purpose == "report" => String::new(),
                    Format::Markdown => format!("**{}**\n", msg.title),
                    _ => format!("## {}\n\n", msg.title),
                };
                let room = 4096usize.saturating_sub(head.len() + tail.len());
                let content = format!("{head}{}{tail}", cut(&msg.markdown, room, "\n…"));
                if format == Format::Markdown {
                    json!({"msgtype": "markdown", "markdown": {"content": content}})
                } else {
                    json!({"msgtype": "markdown_v2", "markdown_v2": {"content": content}})
                }
            }
            Format::Text => {
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
