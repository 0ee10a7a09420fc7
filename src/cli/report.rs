//! `flowguard report …`: the daily and weekly reports, stored reports, export of raw records,
//! rollup backfill and retention.

use super::{App, Failure, open_store, parse_since, usage};
use crate::report::{self, ReportCtx, ReportSink, StdoutSink, schedule};
use crate::store::{RunFilter, Store};
use clap::{Subcommand, ValueEnum};
use std::path::Path;

#[derive(Debug, Clone, Copy, Default, ValueEnum, PartialEq, Eq)]
pub enum ReportFormat {
    #[default]
    Markdown,
    Text,
    Html,
    Json,
    /// The Feishu interactive-card message body.
    Feishu,
}

#[derive(Debug, Clone, Copy, Default, ValueEnum, PartialEq, Eq)]
pub enum ExportFormat {
    #[default]
    Csv,
    Json,
}

#[derive(Debug, Clone, Copy, Default, ValueEnum, PartialEq, Eq)]
pub enum ExportWhat {
    #[default]
    Runs,
    Attempts,
}

#[derive(Debug, Subcommand)]
pub enum ReportCmd {
    /// The daily report of one local day (default: yesterday in the configured time zone).
    Daily {
        /// The local date, `2026-11-27`.
        #[arg(long)]
        date: Option<String>,
        /// Deliver it (for now: print it) and mark the day's report sent.
        #[arg(long)]
        send: bool,
        #[arg(long, value_enum, default_value_t)]
        format: ReportFormat,
    },
    /// The weekly failure analysis of seven local days (default: the last full Monday–Sunday).
    Weekly {
        /// The first day of the week, `2026-11-16`.
        #[arg(long)]
        from: Option<String>,
        #[arg(long)]
        send: bool,
        #[arg(long, value_enum, default_value_t)]
        format: ReportFormat,
    },
    /// Print a stored report again.
    Show {
        /// `daily` or `weekly`.
        kind: String,
        /// The period: `2026-11-27`, or `2026-11-16..2026-11-22` for a week.
        period: String,
        /// `markdown` or `json`.
        #[arg(long, value_enum, default_value_t)]
        format: ReportFormat,
    },
    /// Send the reports that are due now and not sent yet (what `serve` does on its schedule).
    SendDue,
    /// Export the runs or node attempts of runs started in a window, as CSV or JSON.
    Export {
        #[arg(long, value_enum, default_value_t)]
        what: ExportWhat,
        /// A duration back from now (`24h`, `7d`) or a date.
        #[arg(long, default_value = "1d")]
        since: String,
        /// The window's end (default: now).
        #[arg(long)]
        until: Option<String>,
        #[arg(long)]
        flow: Option<String>,
        #[arg(long, value_enum, default_value_t)]
        format: ExportFormat,
    },
    /// Add runs recorded before rollups existed to the rollups.
    Backfill,
    /// Apply `reports.retention`: prune raw node attempts (and runs); rollups stay.
    Prune,
}

async fn ctx(config: &Path) -> Result<ReportCtx, Failure> {
    Ok(ctx_and_sink(config).await?.0)
}

/// The report context and where `--send` delivers: the alert channels through the outbox when
/// any are configured (the caller drains it), else standard output.
async fn ctx_and_sink(config: &Path) -> Result<(ReportCtx, Box<dyn ReportSink>, Option<crate::alert::Alerter>), Failure> {
    let app = App::load(config)?;
    let store = app.store().await?;
    let ctx = ReportCtx::new(store.clone(), &app.config, &app.flows);
    if app.config.channels.is_empty() {
        return Ok((ctx, Box::new(StdoutSink), None));
    }
    let clock: crate::clock::SharedClock = std::sync::Arc::new(crate::clock::SystemClock);
    let alerter = crate::alert::Alerter::new(&app.config, store, clock)?;
    let sink = report::outbox::OutboxSink::new(alerter.clone(), &app.config);
    Ok((ctx, Box::new(sink), Some(alerter)))
}

/// Delivers what the outbox holds (bounded), so a one-shot `--send` reaches its channels.
async fn drain(alerter: Option<crate::alert::Alerter>) -> Result<(), Failure> {
    if let Some(a) = alerter {
        a.drain(a.drain_budget()).await?;
    }
    Ok(())
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

fn date(s: &str) -> Result<jiff::civil::Date, Failure> {
    s.parse().map_err(|e| usage(format!("cannot read `{s}` as a date (2026-11-27): {e}")))
}

fn print(r: &report::Rendered, format: ReportFormat) {
    match format {
        ReportFormat::Markdown => println!("{}", r.markdown),
        ReportFormat::Text => println!("{}", r.text),
        ReportFormat::Html => println!("{}", r.html),
        ReportFormat::Json => println!("{}", serde_json::to_string_pretty(&r.json).unwrap_or_default()),
        ReportFormat::Feishu => println!("{}", serde_json::to_string_pretty(&r.feishu_card).unwrap_or_default()),
    }
}

pub async fn main(config: &Path, cmd: ReportCmd) -> Result<i32, Failure> {
    match cmd {
        ReportCmd::Daily { date: d, send, format } => {
            let ctx = ctx(config).await?;
            let day = match d {
                Some(d) => date(&d)?,
                None => jiff::Timestamp::now().to_zoned(ctx.tz.clone()).date().yesterday().map_err(|e| usage(e.to_string()))?,
            };
            one(config, &ctx, schedule::day(day, &ctx.tz), send, format).await
        }
        ReportCmd::Weekly { from, send, format } => {
            let ctx = ctx(config).await?;
            let first = match from {
                Some(d) => date(&d)?,
                None => {
                    let today = jiff::Timestamp::now().to_zoned(ctx.tz.clone()).date();
                    let back = today.weekday().to_monday_zero_offset() as i64 + 7;
                    today.checked_sub(jiff::Span::new().days(back)).map_err(|e| usage(e.to_string()))?
                }
            };
            one(config, &ctx, schedule::week(first, &ctx.tz), send, format).await
        }
        ReportCmd::Show { kind, period, format } => {
            let (_, store) = open_store(config).await?;
            let Some((body, markdown, _)) = store.load_report(&kind, &period).await? else {
                return Err(usage(format!("no stored {kind} report for `{period}`")));
            };
            match format {
                ReportFormat::Json => println!("{body}"),
                _ => println!("{markdown}"),
            }
            Ok(0)
        }
        ReportCmd::SendDue => {
            let (ctx, sink, alerter) = ctx_and_sink(config).await?;
            let sent = report::send_due(&ctx, sink.as_ref(), now_ms()).await?;
            if sent.is_empty() {
                eprintln!("no report is due");
            }
            drain(alerter).await?;
            Ok(0)
        }
        ReportCmd::Export { what, since, until, flow, format } => {
            let (cfg, store) = open_store(config).await?;
            let now = now_ms();
            let tz = cfg.time_zone();
            let since = parse_since(&since, now, &tz)?;
            let until = until.as_deref().map(|u| parse_since(u, now, &tz)).transpose()?.unwrap_or(now + 1);
            export(&store, what, since, until, flow.as_deref(), format).await?;
            Ok(0)
        }
        ReportCmd::Backfill => {
            let (_, store) = open_store(config).await?;
            let n = store.rollup_backfill(1000).await?;
            println!("rolled up {n} run(s)");
            Ok(0)
        }
        ReportCmd::Prune => {
            let ctx = ctx(config).await?;
            let p = report::prune(&ctx, now_ms()).await?;
            println!(
                "pruned the node attempts of {} run(s); deleted {} run(s) and {} ingested event id(s)",
                p.attempts_of, p.runs, p.event_ids
            );
            Ok(0)
        }
    }
}

async fn one(config: &Path, ctx: &ReportCtx, period: report::Period, send: bool, format: ReportFormat) -> Result<i32, Failure> {
    let (_, rendered) = report::generate(ctx, &period, now_ms()).await?;
    if send {
        let (_, sink, alerter) = ctx_and_sink(config).await?;
        if !report::deliver(ctx, &period, &rendered, sink.as_ref(), now_ms()).await? {
            eprintln!("the {} report for {} was already sent", period.kind.as_str(), period.key);
        }
        drain(alerter).await?;
    } else {
        print(&rendered, format);
    }
    Ok(0)
}

/// One CSV field, quoted when it must be (RFC 4180).
fn csv(v: &str) -> String {
    if v.contains([',', '"', '\n', '\r']) { format!("\"{}\"", v.replace('"', "\"\"")) } else { v.to_owned() }
}

fn csv_line(fields: &[String]) -> String {
    fields.iter().map(|f| csv(f)).collect::<Vec<_>>().join(",")
}

fn opt<T: ToString>(v: &Option<T>) -> String {
    v.as_ref().map(|v| v.to_string()).unwrap_or_default()
}

/// Writes runs or node attempts of runs started in `[since, until)` to stdout.
pub async fn export(
    store: &Store,
    what: ExportWhat,
    since: i64,
    until: i64,
    flow: Option<&str>,
    format: ExportFormat,
) -> anyhow::Result<()> {
    use std::io::Write;
    let out = std::io::stdout();
    let mut out = std::io::BufWriter::new(out.lock());
    match what {
        ExportWhat::Runs => {
            let mut runs = store
                .list_runs(&RunFilter {
                    flow: flow.map(str::to_owned),
                    since_ms: Some(since),
                    until_ms: Some(until),
                    include_canary: true,
                    ..Default::default()
                })
                .await?;
            runs.reverse();
            if format == ExportFormat::Json {
                serde_json::to_writer_pretty(&mut out, &runs)?;
                writeln!(out)?;
            } else {
                writeln!(
                    out,
                    "id,flow,flow_hash,trigger,status,canary,started_at,ended_at,duration_ms,failed_node,error_kind,severity,error_message"
                )?;
                for r in &runs {
                    let f = [
                        r.id.clone(),
                        r.flow.clone(),
                        r.flow_hash.clone(),
                        r.trigger.clone(),
                        r.status.to_string(),
                        r.canary.to_string(),
                        r.started_at.to_string(),
                        opt(&r.ended_at),
                        opt(&r.duration_ms),
                        opt(&r.failed_node),
                        opt(&r.error_kind),
                        opt(&r.severity),
                        opt(&r.error_message),
                    ];
                    writeln!(out, "{}", csv_line(&f))?;
                }
            }
        }
        ExportWhat::Attempts => {
            let attempts = store.attempts_between(flow, since, until).await?;
            if format == ExportFormat::Json {
                serde_json::to_writer_pretty(&mut out, &attempts)?;
                writeln!(out)?;
            } else {
                writeln!(
                    out,
                    "run_id,flow,node_id,kind,seq,attempt,iteration,status,started_at,ended_at,duration_ms,input_bytes,output_bytes,retried,action,error_kind,model,tokens_in,tokens_out,http_status,error_message"
                )?;
                for a in &attempts {
                    let f = [
                        a.run_id.clone(),
                        a.flow.clone(),
                        a.node_id.clone(),
                        a.kind.clone(),
                        a.seq.to_string(),
                        a.attempt.to_string(),
                        opt(&a.iteration),
                        a.status.to_string(),
                        a.started_at.to_string(),
                        a.ended_at.to_string(),
                        a.duration_ms.to_string(),
                        a.input_bytes.to_string(),
                        a.output_bytes.to_string(),
                        a.retried.to_string(),
                        opt(&a.action),
                        opt(&a.error_kind),
                        opt(&a.model),
                        opt(&a.tokens_in),
                        opt(&a.tokens_out),
                        opt(&a.http_status),
                        opt(&a.error_message),
                    ];
                    writeln!(out, "{}", csv_line(&f))?;
                }
            }
        }
    }
    out.flush()?;
    Ok(())
}
