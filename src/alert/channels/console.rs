//! Prints messages on standard output: for the demo and for trying routes without a bot.

use super::{Channel, ChannelParams, Ctx, Delivery, Message, Raw};
use crate::alert::config::ChannelConfig;
use crate::flow::diag::Diagnostics;
use futures::future::BoxFuture;
use serde::Deserialize;
use std::io::Write;
use std::sync::Arc;

/// `type: console` has no settings of its own.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Params {}

pub fn parse(raw: &Raw<'_>) -> Result<Arc<dyn ChannelParams>, Diagnostics> {
    Ok(Arc::new(raw.parse::<Params>()?))
}

impl ChannelParams for Params {
    fn build(&self, _name: &str, _c: &ChannelConfig, _cx: &Ctx) -> anyhow::Result<Arc<dyn Channel>> {
        Ok(Arc::new(Console))
    }
}

struct Console;

impl Channel for Console {
    fn kind(&self) -> &'static str {
        "console"
    }

    fn send<'a>(&'a self, msg: &'a Message) -> BoxFuture<'a, Delivery> {
        Box::pin(async move {
            let mut out = std::io::stdout().lock();
            let mut text = format!("┌ {}\n", msg.title);
            for l in msg.text.lines() {
                text.push_str(&format!("│ {l}\n"));
            }
            if let Some(l) = &msg.link {
                text.push_str(&format!("│ {l}\n"));
            }
            text.push_str("└\n");
            match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
                Ok(()) => Delivery::Sent { status: None, answer: "printed".into() },
                Err(e) => Delivery::Failed { status: None, answer: String::new(), error: format!("cannot print: {e}") },
            }
        })
    }
}
