//! `flowguard manual list|show|retry|skip|resolve|abort`: the queue of runs waiting for a human,
//! and `flowguard flow block|unblock|blocks`. Every action is recorded with who, when and why.

use super::run::summary;
use super::{App, Failure, Format, open_store, table, usage};
use crate::clock::SharedClock;
use crate::engine::manual::{self, Act, Acted, open_task};
use crate::store::{FlowBlock, ManualTask, Store};
use clap::Subcommand;
use serde_json::json;
use std::path::Path;

#[derive(Debug, Subcommand)]
pub enum ManualCmd {
    /// Runs waiting for a human (open tasks; `--all` for the history).
    List {
        #[arg(long)]
        all: bool,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// One task: the failure, the run's node attempts and the actions taken.
    Show {
        /// Task id or run id (or a unique prefix).
        task: String,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Run again from the failed node (or `--from NODE`), keeping the outputs before it.
    Retry {
        task: String,
        #[arg(long)]
        from: Option<String>,
        #[command(flatten)]
        who: Who,
    },
    /// Go on as if the failed node had produced `--output` (JSON).
    Skip {
        task: String,
        #[arg(long)]
        output: String,
        #[command(flatten)]
        who: Who,
    },
    /// Done by hand: close the task; the run stays failed, with the note.
    Resolve {
        task: String,
        #[command(flatten)]
        who: Who,
    },
    /// Give up: the run ends cancelled.
    Abort {
        task: String,
        #[command(flatten)]
        who: Who,
    },
}

#[derive(Debug, clap::Args)]
pub struct Who {
    /// Who acts (default: $USER).
    #[arg(long = "by")]
    pub by: Option<String>,
    /// Why.
    #[arg(long)]
    pub note: Option<String>,
}

impl Who {
    pub fn actor(&self) -> String {
        self.by.clone().or_else(|| std::env::var("USER").ok()).unwrap_or_else(|| "operator".into())
    }
}

#[derive(Debug, Subcommand)]
pub enum FlowCmd {
    /// Refuse new runs of a flow until it is unblocked.
    Block {
        flow: String,
        #[command(flatten)]
        who: Who,
    },
    /// Let a blocked flow run again.
    Unblock {
        flow: String,
        #[command(flatten)]
        who: Who,
    },
    /// Blocked flows.
    Blocks {
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
}

async fn task(store: &Store, id: &str) -> Result<ManualTask, Failure> {
    store.manual_task(id).await?.ok_or_else(|| usage(format!("no manual task for `{id}` (list them with `flowguard manual list`)")))
}

pub async fn manual(config: &Path, cmd: ManualCmd, clock: SharedClock) -> Result<i32, Failure> {
    match cmd {
        ManualCmd::List { all, format } => {
            let (cfg, store) = open_store(config).await?;
            let tasks = store.manual_tasks(!all, 200).await?;
            match format {
                Format::Json => table::json(&tasks),
                Format::Table => {
                    let tz = cfg.time_zone();
                    let rows: Vec<Vec<String>> = tasks
                        .iter()
                        .map(|t| {
                            vec![
                                t.id.clone(),
                                t.run_id.clone(),
                                t.flow.clone(),
                                t.node_id.clone(),
                                t.error_kind.clone(),
                                t.severity.clone(),
                                t.status.clone(),
                                table::time(t.created_at, &tz),
                            ]
                        })
                        .collect();
                    table::print(&["TASK", "RUN", "FLOW", "NODE", "ERROR KIND", "SEVERITY", "STATUS", "SINCE"], &rows);
                    if tasks.is_empty() {
                        println!("(nothing waits for a human)");
                    }
                }
            }
            Ok(0)
        }
        ManualCmd::Show { task: id, format } => {
            let (cfg, store) = open_store(config).await?;
            let t = task(&store, &id).await?;
            let actions = store.manual_actions(&t.id).await?;
            match format {
                Format::Json => table::json(&json!({"task": t, "actions": actions})),
                Format::Table => {
                    let tz = cfg.time_zone();
                    println!("task      {} ({})", t.id, t.status);
                    println!("run       {}  flow {}", t.run_id, t.flow);
                    println!("failed    `{}`: {} (severity {})", t.node_id, t.error_kind, t.severity);
                    println!("          {}", t.error_message.as_deref().unwrap_or(""));
                    println!("since     {}", table::time(t.created_at, &tz));
                    for a in &actions {
                        println!(
                            "action    {} {} by {}{}",
                            table::time(a.at, &tz),
                            a.action,
                            a.actor,
                            a.note.as_deref().map(|n| format!(": {n}")).unwrap_or_default()
                        );
                    }
                    println!("\nnext: flowguard manual retry|skip|resolve|abort {}", t.id);
                }
            }
            Ok(0)
        }
        ManualCmd::Retry { task: id, from, who } => act(config, &id, Act::Retry(from), who, clock).await,
        ManualCmd::Skip { task: id, output, who } => {
            let value: serde_json::Value = serde_json::from_str(&output).map_err(|e| usage(format!("--output is not JSON: {e}")))?;
            act(config, &id, Act::Skip(value), who, clock).await
        }
        ManualCmd::Resolve { task: id, who } => act(config, &id, Act::Resolve, who, clock).await,
        ManualCmd::Abort { task: id, who } => act(config, &id, Act::Abort, who, clock).await,
    }
}

/// A refused action is the user's to sort out (exit 2); a database failure is not (exit 1).
pub(super) fn refused(e: manual::ManualError) -> Failure {
    match e {
        manual::ManualError::Store(e) => e.into(),
        e => usage(e.to_string()),
    }
}

async fn act(config: &Path, id: &str, what: Act, who: Who, clock: SharedClock) -> Result<i32, Failure> {
    let app = App::load(config)?;
    // A resumed run ends like any other: parked again or failed it alerts, recovered it resolves.
    let (engine, alerter) = app.alerting_engine(clock).await?;
    let t = open_task(&engine, id).await.map_err(refused)?;
    let (_, status) = what.names();
    let acted = manual::act(&engine, &app.flows, t, what, &who.actor(), who.note.clone()).await.map_err(refused)?;
    if let Err(e) = alerter.drain(alerter.drain_budget()).await {
        eprintln!("warning: alert delivery: {}", alerter.redactor().redact(&format!("{e:#}")));
    }
    engine.store.close().await;
    match acted {
        Acted::Closed { task, run_status } => {
            println!("task {} {status} by {}; run {} is {run_status}", task.id, who.actor(), task.run_id);
            Ok(0)
        }
        Acted::Resumed { outcome, .. } => {
            println!("{}", summary(&outcome));
            Ok(outcome.status.exit_code())
        }
    }
}

pub async fn flow(config: &Path, cmd: FlowCmd, clock: SharedClock) -> Result<i32, Failure> {
    let (cfg, store) = open_store(config).await?;
    match cmd {
        FlowCmd::Block { flow, who } => {
            let b = FlowBlock {
                flow: flow.clone(),
                blocked_at: clock.now_ms(),
                run_id: None,
                reason: who.note.clone(),
                blocked_by: who.actor(),
            };
            store.block_flow(&b).await?;
            println!("flow {flow} is blocked: new runs are refused until `flowguard flow unblock {flow}`");
        }
        FlowCmd::Unblock { flow, who } => {
            if store.unblock_flow(&flow, &who.actor(), who.note.as_deref(), clock.now_ms()).await? {
                println!("flow {flow} is unblocked");
            } else {
                return Err(usage(format!("flow {flow} is not blocked")));
            }
        }
        FlowCmd::Blocks { format } => {
            let blocks = store.blocks(None).await?;
            match format {
                Format::Json => table::json(&blocks),
                Format::Table => {
                    let tz = cfg.time_zone();
                    let rows: Vec<Vec<String>> = blocks
                        .iter()
                        .map(|b| {
                            vec![
                                b.flow.clone(),
                                table::time(b.blocked_at, &tz),
                                b.blocked_by.clone(),
                                b.run_id.clone().unwrap_or_default(),
                                b.reason.clone().unwrap_or_default(),
                            ]
                        })
                        .collect();
                    table::print(&["FLOW", "SINCE", "BY", "RUN", "REASON"], &rows);
                    if blocks.is_empty() {
                        println!("(no flow is blocked)");
                    }
                }
            }
        }
    }
    Ok(0)
}
