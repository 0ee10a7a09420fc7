//! Sends a rendered report to the alert channels through the durable outbox: the report counts as
//! sent once its notifications are committed, and the outbox delivers them (retries, rate limits,
//! failover) like any alert.

use super::{Rendered, ReportSink};
use crate::alert::Alerter;
use futures::future::BoxFuture;

pub struct OutboxSink {
    pub alerter: Alerter,
    /// Channel names; empty: every configured channel.
    pub channels: Vec<String>,
}

impl ReportSink for OutboxSink {
    fn send<'a>(&'a self, report: &'a Rendered) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            let channels = if self.channels.is_empty() { self.alerter.channel_names() } else { self.channels.clone() };
            if channels.is_empty() {
                anyhow::bail!("no alert channel is configured to send the report to");
            }
            let mut msg = self.alerter.message("report", "low", &report.title, &report.text);
            msg.markdown = report.markdown.clone();
            for ch in channels {
                self.alerter.enqueue(&ch, &msg).await?;
            }
            Ok(())
        })
    }
}
