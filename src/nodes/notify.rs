//! `notify`: sends a message to an alert channel from inside a flow (the seed's alert node, called
//! from a catch branch). The message goes through the same durable outbox as alerts, so it is
//! retried, rate-limited and failed over like them; the node succeeds once it is stored.
//!
//! ```yaml
//! - id: tell_ops
//!   kind: notify
//!   channel: ops_feishu
//!   title: "[告警] 流程失败"
//!   text: "步骤: {{ nodes.check.node }}\n原因: {{ nodes.check.reason }}"
//!   severity: high
//! ```

use super::{BuildCx, NodeError, NodeKind, Notice, Output, Raw, RunCx};
use crate::flow::Diagnostic;
use crate::flow::template::Tmpl;
use crate::vocab::{ErrorKind, Severity};
use futures::future::BoxFuture;
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Params {
    /// A channel named in the config's `channels:`.
    channel: String,
    /// The message body (a template over inputs and earlier outputs).
    text: String,
    /// The first line (default: the flow's name).
    title: Option<String>,
    /// `low`, `medium` (default) or `high`: the colour and priority on the channel.
    severity: Option<Severity>,
    /// @all where the channel supports it.
    #[serde(default)]
    mention_all: bool,
}

#[derive(Debug)]
struct Notify {
    channel: String,
    text: Tmpl,
    title: Option<Tmpl>,
    severity: Severity,
    mention_all: bool,
}

pub fn build(raw: Raw<'_>, cx: &mut BuildCx<'_>) -> Result<Arc<dyn NodeKind>, Diagnostic> {
    let p: Params = raw.parse()?;
    let severity = p.severity.unwrap_or(Severity::Medium);
    Ok(Arc::new(Notify {
        channel: p.channel,
        text: cx.string("text", &p.text),
        title: p.title.map(|t| cx.string("title", &t)),
        severity,
        mention_all: p.mention_all,
    }))
}

impl NodeKind for Notify {
    fn run<'a>(&'a self, cx: &'a RunCx<'a>) -> BoxFuture<'a, Result<Output, NodeError>> {
        Box::pin(async move {
            let text = cx.text(&self.text)?;
            let title = match &self.title {
                Some(t) => cx.text(t)?,
                None => cx.flow.to_owned(),
            };
            let Some(notifier) = cx.notifier else {
                return Err(NodeError::new(ErrorKind::Internal, "alerting is not set up in this process; `notify` cannot send"));
            };
            let notice = Notice {
                channel: &self.channel,
                severity: self.severity,
                title: &title,
                text: &text,
                mention_all: self.mention_all,
                flow: cx.flow,
                node: cx.node_id,
                run_id: cx.run_id,
            };
            let id = notifier.notify(notice).await.map_err(|e| NodeError::new(ErrorKind::Internal, format!("{e:#}")))?;
            Ok(Output { value: json!({"notification": id, "channel": self.channel}), ..Default::default() })
        })
    }
}
