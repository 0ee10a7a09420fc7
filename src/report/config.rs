//! The `reports:` section of flowguard.yaml.

use crate::alert::config::ChannelConfig;
use crate::config::{CronExpr, HumanDuration};
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ReportsConfig {
    /// The daily report (covers the local day before; default 09:00).
    pub daily: Schedule,
    /// The weekly report with the cause distribution and suggestions (covers the seven days before; default Monday 09:00).
    pub weekly: Schedule,
    /// Pruning of raw rows; rollups are kept.
    pub retention: Retention,
    /// Thresholds of the weekly report's suggestions.
    pub rules: Rules,
    /// How many failing nodes the daily report lists.
    pub top: usize,
    /// Alert channels the reports go to (through the outbox); empty: every configured channel
    /// that can carry a report (chat and email; never SMS, whose templates have no room for one).
    pub channels: Vec<String>,
}

impl Default for ReportsConfig {
    fn default() -> Self {
        ReportsConfig {
            daily: Schedule { enabled: true, cron: "0 9 * * *".parse().expect("a valid cron"), jitter: default_jitter() },
            weekly: Schedule { enabled: true, cron: "0 9 * * 1".parse().expect("a valid cron"), jitter: default_jitter() },
            retention: Retention::default(),
            rules: Rules::default(),
            top: 3,
            channels: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// Send this report (default true).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Five-field cron in the configured time zone, e.g. `0 9 * * *`.
    pub cron: CronExpr,
    /// Up to this much later than the cron time (Feishu throttles bots on the hour).
    #[serde(default = "default_jitter")]
    pub jitter: HumanDuration,
}

fn yes() -> bool {
    true
}
fn default_jitter() -> HumanDuration {
    HumanDuration::secs(120)
}

#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Retention {
    /// Delete node attempts of runs older than this (`90d`); unset keeps them.
    pub node_attempts: Option<HumanDuration>,
    /// Delete run rows older than this; unset keeps them.
    pub runs: Option<HumanDuration>,
}

/// Thresholds of the suggestion rules (see `report::weekly`).
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Rules {
    /// A node whose attempts time out more often than this …
    pub timeout_rate: f64,
    /// … while its p95 is within this fraction of its time limit.
    pub timeout_p95_margin: f64,
    /// One node taking more than this share of a flow's node time.
    pub node_time_share: f64,
    /// A node whose retries / attempts exceed this.
    pub retry_rate: f64,
    /// One error kind causing more than this share of failed runs.
    pub error_kind_share: f64,
    /// A model whose failure rate grew by this factor week over week.
    pub model_failure_growth: f64,
    /// A flow whose success rate fell by more than this many points week over week.
    pub success_drop_pts: f64,
    /// Rules look only at nodes, models and flows with at least this many attempts or runs.
    pub min_samples: u64,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            timeout_rate: 0.05,
            timeout_p95_margin: 0.10,
            node_time_share: 0.50,
            retry_rate: 0.20,
            error_kind_share: 0.40,
            model_failure_growth: 2.0,
            success_drop_pts: 5.0,
            min_samples: 20,
        }
    }
}

impl ReportsConfig {
    /// The channels reports go to: those listed (or all), less those that cannot carry one.
    pub fn report_channels(&self, channels: &BTreeMap<String, ChannelConfig>) -> Vec<String> {
        let names: Vec<&String> = if self.channels.is_empty() { channels.keys().collect() } else { self.channels.iter().collect() };
        names.into_iter().filter(|n| channels.get(*n).is_some_and(ChannelConfig::carries_reports)).cloned().collect()
    }

    /// Not errors, but worth saying: `reports.channels` naming a channel reports cannot go to.
    pub fn warnings(&self, channels: &BTreeMap<String, ChannelConfig>) -> Vec<String> {
        self.channels
            .iter()
            .filter_map(|n| match channels.get(n) {
                Some(c) if !c.carries_reports() => {
                    Some(format!("reports.channels: `{n}` (type `{}`) cannot carry a report; reports are not sent to it", c.kind))
                }
                None => Some(format!("reports.channels: unknown channel `{n}`; reports are not sent to it")),
                _ => None,
            })
            .collect()
    }
}
