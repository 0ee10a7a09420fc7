//! `flowguard exporters status|setup`: where each sink is in the run log, and the one-time
//! set-up of a target (index templates and Kibana objects).

use super::{Failure, Format, open_store_with, table, usage};
use crate::config::Config;
use clap::{Subcommand, ValueEnum};
use std::path::Path;

/// The Kibana saved objects (data views and the dashboard), as shipped in the repository.
pub const KIBANA_OBJECTS: &str = include_str!("../../dashboards/kibana.ndjson");

#[derive(Debug, Subcommand)]
pub enum ExportersCmd {
    /// Each sink's cursor in the run log, lag, counts, holder and last error.
    Status {
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Prepare a target: Elasticsearch index templates (and the Kibana objects with
    /// `exporters.elasticsearch.kibana_url`), or the fields of a Bitable table.
    Setup {
        #[arg(value_enum)]
        target: Target,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Target {
    Elasticsearch,
    /// Feishu Bitable: creates the fields the table lacks.
    Bitable,
}

pub async fn main(config: &Path, cmd: ExportersCmd) -> Result<i32, Failure> {
    match cmd {
        ExportersCmd::Status { format } => status(config, format).await,
        ExportersCmd::Setup { target: Target::Bitable } => {
            let cfg = Config::load_sections(config, Some(&["exporters"])).map_err(|d| Failure { code: 2, error: d.into() })?;
            let Some(b) = &cfg.exporters.bitable else {
                return Err(usage("no `exporters.bitable` in the config: add its app_id, app_secret, app_token and table_id first"));
            };
            let done = crate::export::bitable::setup(b).await.map_err(|e| anyhow::anyhow!(cfg.redactor.redact(&format!("{e:#}"))))?;
            for line in done {
                println!("ok  {line}");
            }
            Ok(0)
        }
        ExportersCmd::Setup { target: Target::Elasticsearch } => {
            let cfg = Config::load_sections(config, Some(&["exporters"])).map_err(|d| Failure { code: 2, error: d.into() })?;
            let Some(es) = &cfg.exporters.elasticsearch else {
                return Err(usage("no `exporters.elasticsearch` in the config: add its `url` first"));
            };
            let done = crate::export::elasticsearch::setup(es, KIBANA_OBJECTS)
                .await
                .map_err(|e| anyhow::anyhow!(cfg.redactor.redact(&format!("{e:#}"))))?;
            for line in done {
                println!("ok  {line}");
            }
            Ok(0)
        }
    }
}

async fn status(config: &Path, format: Format) -> Result<i32, Failure> {
    let (cfg, store) = open_store_with(config, Some(&["storage", "timezone", "locale", "exporters"])).await?;
    let sinks = crate::export::status(&store, &cfg.exporters).await?;
    store.close().await;
    match format {
        Format::Json => table::json(&sinks),
        Format::Table => {
            let tz = cfg.time_zone();
            let rows: Vec<Vec<String>> = sinks
                .iter()
                .map(|s| {
                    let c = s.cursor.as_ref();
                    vec![
                        s.sink.clone(),
                        if s.configured { "yes".into() } else { "no (cursor kept)".into() },
                        c.map(|c| format!("attempt {} / run end {}", c.attempt_id, c.run_end_seq))
                            .unwrap_or_else(|| "(not started)".into()),
                        s.lag.to_string(),
                        c.map_or(0, |c| c.sent).to_string(),
                        c.map_or(0, |c| c.failed).to_string(),
                        c.map_or(0, |c| c.rejected).to_string(),
                        c.and_then(|c| c.failing_since).map(|t| format!("since {}", table::time(t, &tz))).unwrap_or_else(|| "ok".into()),
                        c.and_then(|c| c.last_error.clone()).unwrap_or_default(),
                    ]
                })
                .collect();
            table::print(&["SINK", "CONFIGURED", "CURSOR", "LAG", "SENT", "FAILED", "REJECTED", "STATE", "LAST ERROR"], &rows);
            if sinks.is_empty() {
                println!("(no exporters configured; see `exporters:` in docs/exporters.md)");
            }
        }
    }
    Ok(0)
}
