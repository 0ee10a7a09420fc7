//! Prints messages on standard output: for the demo and for trying routes without a bot.

use super::{Channel, Ctx, Delivery, Message};
use crate::alert::config::ChannelConfig;
use futures::future::BoxFuture;
use std::io::Write;
use std::sync::Arc;

struct Console;

pub fn build(_name: &str, _c: &ChannelConfig, _cx: &Ctx) -> anyhow::Result<Arc<dyn Channel>> {
    Ok(Arc::new(Console))
}

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
