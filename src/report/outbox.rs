//! Sends a rendered report to the alert channels through the durable outbox: the report counts as
//! sent once its notifications are committed, and the outbox delivers them (retries, rate limits,
//! failover) like any alert. Each channel gets the form it speaks: Feishu the card, email the
//! HTML, DingTalk/WeCom the Markdown — what `report … --format` previews.

use super::{Rendered, ReportSink};
use crate::alert::Alerter;
use crate::config::Config;
use futures::future::BoxFuture;

pub struct OutboxSink {
    pub alerter: Alerter,
    /// Channel names the reports go to (see [`crate::report::ReportsConfig::report_channels`]).
    pub channels: Vec<String>,
}

impl OutboxSink {
    /// Sends to `reports.channels`, or every channel, that can carry a report.
    pub fn new(alerter: Alerter, cfg: &Config) -> OutboxSink {
        OutboxSink { alerter, channels: cfg.reports.report_channels(&cfg.channels) }
    }
}

impl ReportSink for OutboxSink {
    fn send<'a>(&'a self, report: &'a Rendered) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            if self.channels.is_empty() {
                anyhow::bail!("no alert channel that can carry a report is configured (SMS cannot)");
            }
            let mut msg = self.alerter.message("report", "low", &report.title, &report.text);
            msg.markdown = report.markdown.clone();
            msg.card = Some(report.feishu_card.clone());
            msg.html = Some(report.html.clone());
            for ch in &self.channels {
                self.alerter.enqueue(ch, &msg).await?;
            }
            Ok(())
        })
    }
}
