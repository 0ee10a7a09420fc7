//! `flowguard alerts list|ack|test|resend` and `flowguard silences add|list|expire`.

use super::{Failure, Format, open_store, open_store_with, table, usage};
use crate::alert::Alerter;
use crate::clock::{SharedClock, SystemClock};
use crate::store::{AlertFilter, SilenceRecord};
use clap::Subcommand;
use serde_json::json;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

#[derive(Debug, Subcommand)]
pub enum AlertsCmd {
    /// Alerts (one per fingerprint and episode) newest first; or the notification outbox.
    List {
        /// `firing`, `resolved` or `silenced` (for alerts); `pending`, `sent` or `dead` (with --notifications).
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        flow: Option<String>,
        /// List notifications and their delivery attempts instead of alerts.
        #[arg(long)]
        notifications: bool,
        #[arg(long, default_value_t = 50)]
        limit: i64,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Acknowledge an alert (id or fingerprint, or a unique prefix): stops escalation and repeats.
    Ack {
        id: String,
        /// Who acknowledges.
        #[arg(long, default_value = "cli")]
        by: String,
    },
    /// Send a test message on a channel and print the service's exact answer (secrets masked).
    Test { channel: String },
    /// Put a dead notification (id or unique prefix, from `alerts list --notifications`) back in the
    /// outbox: the same message on the same channel, with a fresh delivery budget.
    Resend { id: String },
}

#[derive(Debug, Subcommand)]
pub enum SilencesCmd {
    /// Silence alerts whose labels match, for a while.
    Add {
        /// `label=value` (flow, node, error_kind, severity, status); repeatable, all must match.
        #[arg(long = "match", short = 'm', value_name = "LABEL=VALUE", required = true)]
        matchers: Vec<String>,
        /// How long (`2h`, `30m`).
        #[arg(long = "for", default_value = "2h")]
        duration: String,
        #[arg(long)]
        comment: Option<String>,
        #[arg(long, default_value = "cli")]
        by: String,
    },
    /// Silences in force (or all with --all).
    List {
        #[arg(long)]
        all: bool,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// End a silence now (id or unique prefix).
    Expire { id: String },
}

pub async fn alerts(config: &Path, cmd: AlertsCmd) -> Result<i32, Failure> {
    let clock: SharedClock = Arc::new(SystemClock);
    // Listing reads the store; ack and test act through the channels, so they need the whole config.
    let (cfg, store) = match cmd {
        AlertsCmd::List { .. } => open_store(config).await?,
        _ => open_store_with(config, None).await?,
    };
    let tz = cfg.time_zone();
    let code = match cmd {
        AlertsCmd::List { status, flow, notifications: false, limit, format } => {
            let list = store.list_alerts(&AlertFilter { status, flow, limit: Some(limit) }).await?;
            match format {
                Format::Json => table::json(&list),
                Format::Table => {
                    let rows: Vec<Vec<String>> = list
                        .iter()
                        .map(|a| {
                            vec![
                                a.id.clone(),
                                a.status.clone(),
                                a.severity.clone(),
                                a.flow.clone(),
                                a.node.clone(),
                                a.error_kind.clone(),
                                a.count.to_string(),
                                table::time(a.last_seen, &tz),
                                a.acked_by.clone().map(|b| format!("acked by {b}")).unwrap_or_else(|| "-".into()),
                            ]
                        })
                        .collect();
                    table::print(&["ID", "STATUS", "SEVERITY", "FLOW", "NODE", "ERROR KIND", "COUNT", "LAST SEEN", "ACK"], &rows);
                }
            }
            0
        }
        AlertsCmd::List { status, notifications: true, limit, format, .. } => {
            let list = store.list_notifications(status.as_deref(), limit).await?;
            let counts: BTreeMap<String, i64> = store.notification_counts().await?.into_iter().collect();
            match format {
                Format::Json => {
                    let mut out = Vec::new();
                    for n in &list {
                        let deliveries = store.deliveries(&n.id).await?;
                        let mut v = serde_json::to_value(n)?;
                        v["message"] = serde_json::from_str(&n.message).unwrap_or(json!(null));
                        v["deliveries"] = serde_json::to_value(deliveries)?;
                        out.push(v);
                    }
                    table::json(&json!({"counts": counts, "notifications": out}));
                }
                Format::Table => {
                    let rows: Vec<Vec<String>> = list
                        .iter()
                        .map(|n| {
                            let title = serde_json::from_str::<serde_json::Value>(&n.message)
                                .ok()
                                .and_then(|m| m["title"].as_str().map(str::to_owned))
                                .unwrap_or_default();
                            vec![
                                n.id.clone(),
                                n.status.clone(),
                                n.channel.clone(),
                                n.purpose.clone(),
                                n.attempts.to_string(),
                                table::time(n.created_at, &tz),
                                title,
                                n.last_error.clone().unwrap_or_default(),
                            ]
                        })
                        .collect();
                    table::print(&["ID", "STATUS", "CHANNEL", "PURPOSE", "ATTEMPTS", "CREATED", "TITLE", "LAST ERROR"], &rows);
                    let c: Vec<String> = counts.iter().map(|(k, v)| format!("{k} {v}")).collect();
                    println!("notifications: {}", if c.is_empty() { "none".into() } else { c.join(", ") });
                }
            }
            0
        }
        AlertsCmd::Ack { id, by } => {
            let alerter = Alerter::new(&cfg, store.clone(), clock)?;
            let acked = alerter.ack(&id, &by).await?;
            if acked.is_empty() {
                return Err(usage(format!("no open alert with id or fingerprint `{id}`")));
            }
            for a in acked {
                println!("acknowledged {} {} {} {}", a.id, a.flow, a.node, a.error_kind);
            }
            0
        }
        AlertsCmd::Resend { id } => {
            let alerter = Alerter::new(&cfg, store.clone(), clock)?;
            let fresh = alerter.resend(&id).await.map_err(|e| match e {
                crate::alert::ResendError::Store(e) => Failure::from(e),
                e => usage(e.to_string()),
            })?;
            // Deliver now, within the drain budget; what is left stays pending for the next pump.
            let delivered = alerter.drain(alerter.drain_budget()).await?;
            let status = store.find_notifications(&fresh.id).await?.into_iter().next().map(|n| n.status).unwrap_or_default();
            println!(
                "notification {} re-sent as {} on {}: {}",
                fresh.failover_of.as_deref().unwrap_or(""),
                fresh.id,
                fresh.channel,
                status
            );
            if !delivered && status == "pending" {
                println!("(still pending: the outbox keeps trying)");
            }
            0
        }
        AlertsCmd::Test { channel } => {
            let alerter = Alerter::new(&cfg, store.clone(), clock)?;
            let Some(ch) = alerter.channel(&channel) else {
                return Err(usage(format!("no channel named `{channel}`; channels: {}", alerter.channel_names().join(", "))));
            };
            let (title, text) = if cfg.locale == "en" {
                ("[TEST] flowguard alert test", "This is a test message from flowguard.")
            } else {
                ("[测试] flowguard 告警测试", "这是一条来自 flowguard 的测试消息。")
            };
            let msg = alerter.message("test", "low", title, text);
            let d = ch.send(&msg).await;
            let red = alerter.redactor();
            println!("channel: {channel} ({})", ch.kind());
            println!("outcome: {}", d.outcome());
            if let Some(s) = d.status() {
                println!("http status: {s}");
            }
            println!("answer: {}", red.redact(d.answer()));
            if let Some(e) = d.error() {
                println!("error: {}", red.redact(&e));
            }
            if matches!(d, crate::alert::channels::Delivery::Sent { .. }) { 0 } else { 1 }
        }
    };
    store.close().await;
    Ok(code)
}

pub async fn silences(config: &Path, cmd: SilencesCmd) -> Result<i32, Failure> {
    let (cfg, store) = open_store(config).await?;
    let now = jiff::Timestamp::now().as_millisecond();
    let tz = cfg.time_zone();
    match cmd {
        SilencesCmd::Add { matchers, duration, comment, by } => {
            let mut m = BTreeMap::new();
            for p in &matchers {
                let Some((k, v)) = p.split_once('=') else {
                    return Err(usage(format!("--match `{p}`: write label=value")));
                };
                if !crate::alert::config::GROUP_LABELS.contains(&k.trim()) {
                    return Err(usage(format!(
                        "--match `{p}`: unknown label `{k}`; expected one of: {}",
                        crate::alert::config::GROUP_LABELS.join(", ")
                    )));
                }
                m.insert(k.trim().to_owned(), v.trim().to_owned());
            }
            let d = crate::server::silence_duration(&duration).map_err(|e| usage(format!("--duration: {e}")))?;
            let s = SilenceRecord {
                id: uuid::Uuid::now_v7().to_string(),
                matchers: serde_json::to_string(&m)?,
                comment,
                created_by: Some(by),
                created_at: now,
                ends_at: now + d.as_millis() as i64,
                expired_at: None,
            };
            store.insert_silence(&s).await?;
            println!("silence {} until {}", s.id, table::time(s.ends_at, &tz));
        }
        SilencesCmd::List { all, format } => {
            let list = store.silences(now, all).await?;
            match format {
                Format::Json => table::json(&list),
                Format::Table => {
                    let rows: Vec<Vec<String>> = list
                        .iter()
                        .map(|s| {
                            let state = if s.expired_at.is_some() || s.ends_at <= now { "expired" } else { "active" };
                            vec![
                                s.id.clone(),
                                state.into(),
                                s.matchers.clone(),
                                table::time(s.ends_at, &tz),
                                s.created_by.clone().unwrap_or_default(),
                                s.comment.clone().unwrap_or_default(),
                            ]
                        })
                        .collect();
                    table::print(&["ID", "STATE", "MATCHERS", "ENDS", "BY", "COMMENT"], &rows);
                }
            }
        }
        SilencesCmd::Expire { id } => {
            let n = store.expire_silence(&id, now).await?;
            if n == 0 {
                return Err(usage(format!("no active silence with id `{id}`")));
            }
            println!("expired {n} silence(s)");
        }
    }
    store.close().await;
    Ok(0)
}
