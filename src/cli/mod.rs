//! The command line: parse, load, call into the library, print. Exit codes (DESIGN.md §4):
//! 0 succeeded or recovered; 1 failed, timed out or interrupted; 2 usage, config or flow error;
//! 3 waiting for a human; 4 refused because the flow is blocked.

mod alerts;
mod demo;
mod exporters;
mod init;
mod manual;
mod models;
mod query;
mod relay;
mod report;
mod run;
mod serve;
pub mod table;

use crate::app::LoadError;
use crate::clock::{SharedClock, SystemClock};
use crate::config::Config;
use crate::flow::Diagnostics;
use crate::store::Store;
use clap::{Parser, Subcommand, ValueEnum};
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, Parser)]
#[command(name = "flowguard", version, about = "Run AI content pipelines unattended, and know the minute they break.")]
pub struct Cli {
    /// The config file.
    #[arg(long, global = true, default_value = "flowguard.yaml", env = "FLOWGUARD_CONFIG")]
    pub config: PathBuf,
    /// How log lines on stderr look: `text` (coloured only on a terminal) or `json` (one object a
    /// line, for log shippers). The level comes from `FLOWGUARD_LOG` (default `warn`).
    #[arg(long, global = true, value_enum, default_value_t, env = "FLOWGUARD_LOG_FORMAT")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, Default, ValueEnum, PartialEq, Eq)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, Default, ValueEnum, PartialEq, Eq)]
pub enum Format {
    #[default]
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write a starter project (config, the example flow, a word list) that passes `check`.
    Init {
        /// Where to write it.
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Overwrite existing files.
        #[arg(long)]
        force: bool,
    },
    /// Check the config and every flow; report all problems at once.
    Check {
        /// Also open the database.
        #[arg(long)]
        db: bool,
        /// Print, per node of this flow, what happens for each error kind.
        #[arg(long, value_name = "FLOW")]
        explain: Option<String>,
    },
    /// Run a flow once, in this process.
    Run {
        /// The flow's name.
        flow: String,
        /// A run input (repeatable): `key=text` is always text; `key:=json` is a JSON value
        /// (`-i count:=3`, `-i tags:='["a","b"]'`).
        #[arg(long = "input", short = 'i', value_name = "KEY=TEXT|KEY:=JSON")]
        inputs: Vec<String>,
        /// Run inputs from a JSON file (an object).
        #[arg(long)]
        input_json: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// List recorded runs, newest first; `runs cancel RUN`, `runs rerun RUN`.
    #[command(args_conflicts_with_subcommands = true)]
    Runs {
        #[command(subcommand)]
        action: Option<RunsCmd>,
        #[arg(long)]
        flow: Option<String>,
        /// One of the run statuses (succeeded, recovered, failed, timed_out, …).
        #[arg(long)]
        status: Option<String>,
        /// A duration back from now (`24h`, `7d`) or a date (`2026-11-01`).
        #[arg(long)]
        since: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Show one run with every node attempt.
    Show {
        /// The run id (or a unique prefix of it).
        run_id: String,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Statistics per flow and per node.
    Stats {
        #[arg(long)]
        flow: Option<String>,
        /// A duration back from now (`24h`, `7d`) or a date (`2026-11-01`).
        #[arg(long, default_value = "7d")]
        since: String,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Each model's breaker: state, failure rate over its window, since when; and its last changes.
    Models {
        /// How many of the last opens, probes and closes to list.
        #[arg(long, default_value_t = 10)]
        events: i64,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// The queue of runs waiting for a human.
    Manual {
        #[command(subcommand)]
        cmd: manual::ManualCmd,
    },
    /// Block or unblock a flow.
    Flow {
        #[command(subcommand)]
        cmd: manual::FlowCmd,
    },
    /// Daily and weekly reports, stored reports, export, rollup backfill and retention.
    Report {
        #[command(subcommand)]
        cmd: report::ReportCmd,
    },
    /// Run the example flow against the simulator, with no configuration.
    Demo {
        /// Where the demo keeps its project and database.
        #[arg(long, default_value = "flowguard-demo")]
        dir: PathBuf,
        /// How many runs.
        #[arg(long, default_value_t = 40)]
        runs: u32,
        /// Runs at once.
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        /// Only the bounded batch of runs, then exit (for scripts); without it the demo then
        /// serves the dashboard and the API and keeps the flow running on a schedule until Ctrl-C.
        #[arg(long)]
        no_serve: bool,
        /// Where the demo server listens (a busy port falls back to a free one).
        #[arg(long, default_value = "127.0.0.1:7878")]
        listen: String,
    },
    /// Serve the HTTP API, ingestion, health checks and metrics; run flows on their schedules.
    Serve {
        /// Overrides `server.listen`, e.g. `127.0.0.1:0` for a free port.
        #[arg(long)]
        listen: Option<String>,
    },
    /// Accept events locally, keep them on disk, forward them to the server when it answers
    /// (for platforms whose flows must not fail or lose events while flowguard is down).
    Relay {
        /// The flowguard server, e.g. `http://flowguard.internal:7878`.
        #[arg(long)]
        to: String,
        /// Where senders post their events.
        #[arg(long, default_value = "127.0.0.1:7879")]
        listen: String,
        /// Where batches wait until the server takes them.
        #[arg(long, default_value = "flowguard-relay")]
        dir: PathBuf,
        /// The environment variable holding the ingest token: sent to the server, and asked of
        /// local senders.
        #[arg(long, default_value = "FLOWGUARD_INGEST_TOKEN")]
        token_env: String,
    },
    /// Alerts and their notifications: list, acknowledge, test a channel.
    Alerts {
        #[command(subcommand)]
        cmd: alerts::AlertsCmd,
    },
    /// Silence alerts by label for a while.
    Silences {
        #[command(subcommand)]
        cmd: alerts::SilencesCmd,
    },
    /// Exporters of the run log (Elasticsearch, OTLP): status, and set-up of a target.
    Exporters {
        #[command(subcommand)]
        cmd: exporters::ExportersCmd,
    },
    /// Print the JSON Schema of the config or of a flow file (for editors), or the field reference.
    Schema {
        #[arg(value_enum)]
        of: SchemaOf,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SchemaOf {
    /// `flowguard.yaml`.
    Config,
    /// A flow file.
    Flow,
    /// docs/reference.md (Markdown).
    Reference,
}

impl Command {
    /// Commands that keep serving (sockets, long runs) rather than print and exit.
    pub fn serves(&self) -> bool {
        matches!(self, Command::Serve { .. } | Command::Relay { .. } | Command::Demo { no_serve: false, .. })
    }
}

#[derive(Debug, Subcommand)]
pub enum RunsCmd {
    /// Cancel a running run (in any process) or one waiting for a human.
    Cancel {
        run_id: String,
        #[command(flatten)]
        who: manual::Who,
    },
    /// Run a flow again with the inputs of an earlier run.
    Rerun {
        run_id: String,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
}

/// An error with the exit code it ends the process with.
#[derive(Debug)]
pub struct Failure {
    pub code: i32,
    pub error: anyhow::Error,
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(e: E) -> Self {
        let error = e.into();
        // Problems the user fixes in their files or command line exit 2 (DESIGN.md §4).
        let user = error.downcast_ref::<Diagnostics>().is_some()
            || error.downcast_ref::<crate::app::UnknownFlow>().is_some()
            || matches!(error.downcast_ref::<crate::app::LoadError>(), Some(LoadError::Config(_) | LoadError::Flows(_)));
        let code = if user { 2 } else { 1 };
        Failure { code, error }
    }
}

pub fn usage(msg: impl Into<String>) -> Failure {
    Failure { code: 2, error: anyhow::anyhow!(msg.into()) }
}

pub use crate::app::App;

/// The config sections a command that only reads and writes the store uses; `${…}` elsewhere (the
/// server's tokens, the channels' webhooks, the models' keys) need not be set for it.
const STORE_SECTIONS: &[&str] = &["storage", "timezone", "locale"];

/// Store-only commands do not need the flows to be valid: open the store from the config alone.
pub async fn open_store(config: &Path) -> Result<(Config, Store), Failure> {
    open_store_with(config, Some(STORE_SECTIONS)).await
}

/// The store, with these config sections (None: the whole config).
pub async fn open_store_with(config: &Path, sections: Option<&[&str]>) -> Result<(Config, Store), Failure> {
    let cfg = Config::load_sections(config, sections).map_err(|d| Failure { code: 2, error: d.into() })?;
    let store = crate::app::open_store_of(&cfg).await?;
    Ok((cfg, store))
}

pub async fn main(cli: Cli) -> Result<i32, Failure> {
    let clock: SharedClock = Arc::new(SystemClock);
    match cli.command {
        Command::Init { dir, force } => init::init(&dir, force, init::Profile::Starter).map(|_| 0),
        Command::Check { db, explain } => check(&cli.config, db, explain.as_deref()).await,
        Command::Run { flow, inputs, input_json, format } => {
            run::run(&cli.config, &flow, &inputs, input_json.as_deref(), format, clock).await
        }
        Command::Runs { action: Some(RunsCmd::Cancel { run_id, who }), .. } => run::cancel(&cli.config, &run_id, who, clock).await,
        Command::Runs { action: Some(RunsCmd::Rerun { run_id, format }), .. } => run::rerun(&cli.config, &run_id, format, clock).await,
        Command::Runs { action: None, flow, status, since, limit, format } => {
            query::runs(&cli.config, flow, status, since, limit, format).await
        }
        Command::Models { events, format } => models::models(&cli.config, events, format).await,
        Command::Manual { cmd } => manual::manual(&cli.config, cmd, clock).await,
        Command::Flow { cmd } => manual::flow(&cli.config, cmd, clock).await,
        Command::Show { run_id, format } => query::show(&cli.config, &run_id, format).await,
        Command::Stats { flow, since, format } => query::stats(&cli.config, flow, &since, format).await,
        Command::Report { cmd } => report::main(&cli.config, cmd).await,
        Command::Alerts { cmd } => alerts::alerts(&cli.config, cmd).await,
        Command::Silences { cmd } => alerts::silences(&cli.config, cmd).await,
        Command::Demo { dir, runs, concurrency, no_serve, listen } => {
            if no_serve {
                demo::demo(&dir, runs, concurrency, clock).await
            } else {
                demo::served(&dir, runs, concurrency, &listen, clock).await
            }
        }
        Command::Serve { listen } => serve::serve(&cli.config, listen, clock).await,
        Command::Schema { of } => {
            match of {
                SchemaOf::Config => table::json(&crate::schema::config()),
                SchemaOf::Flow => table::json(&crate::schema::flow()),
                SchemaOf::Reference => print!("{}", crate::schema::reference()),
            }
            Ok(0)
        }
        Command::Exporters { cmd } => exporters::main(&cli.config, cmd).await,
        Command::Relay { to, listen, dir, token_env } => relay::relay(&to, &listen, &dir, &token_env).await,
    }
}

async fn check(config: &Path, db: bool, explain: Option<&str>) -> Result<i32, Failure> {
    let app = App::load(config)?;
    if let Some(name) = explain {
        let flow = app.flow(name)?;
        let rows: Vec<Vec<String>> = crate::engine::explain::explain(&flow)
            .into_iter()
            .map(|r| vec![r.node, r.kind.to_string(), r.attempts.to_string(), r.severity.to_string(), r.description])
            .collect();
        println!("flow {name}: what happens when a node fails (after `retry`, then `on_error` / policy)");
        table::print(&["NODE", "ERROR KIND", "ATTEMPTS", "SEVERITY", "THEN"], &rows);
        return Ok(0);
    }
    for w in app.config.reports.warnings(&app.config.channels) {
        eprintln!("warning: {w}");
    }
    for (name, flow) in &app.flows {
        println!("ok  {name}  ({} nodes, {})", flow.nodes.len(), flow.file.display());
    }
    if db {
        let store = app.store().await?;
        println!(
            "ok  database: {} at {} (server {}, schema up to date)",
            store.backend().name(),
            crate::store::describe_target(&app.config.storage_url()),
            store.server_version()
        );
        store.close().await;
    }
    println!("config {} is valid: {} flow(s)", config.display(), app.flows.len());
    Ok(0)
}

/// `24h`, `7d` back from now, or a date / RFC 3339 time; a bad one is a usage error.
pub fn parse_since(s: &str, now_ms: i64, tz: &jiff::tz::TimeZone) -> Result<i64, Failure> {
    crate::app::parse_since(s, now_ms, tz).map_err(|e| usage(e.to_string()))
}
