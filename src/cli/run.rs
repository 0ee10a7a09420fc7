//! `flowguard run FLOW`: one run in this process, with live progress and a final summary.

use super::{App, Failure, Format, open_store, query, table, usage};
use crate::clock::SharedClock;
use crate::engine::{Event, RunOutcome, RunRequest};
use crate::flow::Flow;
use crate::store::AttemptRecord;
use crate::vocab::{AttemptStatus, RunStatus};
use serde_json::{Map, Value as Json, json};
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::Arc;

pub fn parse_inputs(pairs: &[String], file: Option<&Path>) -> Result<Map<String, Json>, Failure> {
    let mut inputs = Map::new();
    if let Some(f) = file {
        let text = std::fs::read_to_string(f).map_err(|e| usage(format!("cannot read {}: {e}", f.display())))?;
        match serde_json::from_str::<Json>(&text) {
            Ok(Json::Object(m)) => inputs.extend(m),
            Ok(_) => return Err(usage(format!("{}: the inputs must be a JSON object", f.display()))),
            Err(e) => return Err(usage(format!("{}: not valid JSON: {e}", f.display()))),
        }
    }
    // `key=value` is text, always (`-i title=[[x]]` is the text `[[x]]`); `key:=json` is JSON
    // (`-i count:=3`, `-i tags:='["a","b"]'`), as HTTPie writes it.
    for p in pairs {
        let Some((k, v)) = p.split_once('=') else {
            return Err(usage(format!("--input `{p}`: write key=text or key:=json")));
        };
        let (key, value) = match k.strip_suffix(':') {
            Some(key) => {
                let value = serde_json::from_str::<Json>(v)
                    .map_err(|e| usage(format!("--input `{p}`: the value after `:=` is not JSON ({e}); for text write {key}=…")))?;
                (key, value)
            }
            None => (k, Json::String(v.to_owned())),
        };
        inputs.insert(key.trim().to_owned(), value);
    }
    Ok(inputs)
}

/// One line for a finished attempt.
pub fn attempt_line(a: &AttemptRecord) -> String {
    let mark = match a.status {
        AttemptStatus::Succeeded => "✓",
        AttemptStatus::Skipped => "·",
        AttemptStatus::Defaulted => "~",
        _ => "✗",
    };
    let mut s = format!("  {mark} {:<14} {:>7}", a.node_id, table::ms(Some(a.duration_ms)));
    if a.attempt > 1 {
        s.push_str(&format!("  attempt {}", a.attempt));
    }
    if let Some(m) = &a.model {
        s.push_str(&format!("  [{m}]"));
    }
    match (&a.error_kind, &a.error_message) {
        (Some(k), Some(m)) => s.push_str(&format!("  {k}: {m}")),
        (Some(k), None) => s.push_str(&format!("  {k}")),
        _ => {}
    }
    if let Some(act) = a.action.as_deref().filter(|a| *a == "retry" || *a == "next_model") {
        s.push_str(&format!("  → {}", act.replace('_', " ")));
    }
    s
}

pub fn summary(o: &RunOutcome) -> String {
    let mut s = format!("run {} {} {} in {}", o.run_id, o.flow, o.status, table::ms(Some(o.duration_ms)));
    if let Some(k) = o.error_kind {
        s.push_str(&format!(
            "\n  failed at `{}`: {k} (severity {}): {}",
            o.failed_node.as_deref().unwrap_or("-"),
            k.default_severity(),
            o.error_message.as_deref().unwrap_or("")
        ));
    }
    s
}

pub async fn run(
    config: &Path,
    flow: &str,
    pairs: &[String],
    input_json: Option<&Path>,
    format: Format,
    clock: SharedClock,
) -> Result<i32, Failure> {
    let app = App::load(config)?;
    let flow = app.flow(flow)?;
    let inputs = parse_inputs(pairs, input_json)?;
    execute(&app, flow, inputs, "cli", format, clock).await
}

/// `flowguard runs rerun RUN`: the same flow with the inputs of an earlier run.
pub async fn rerun(config: &Path, run_id: &str, format: Format, clock: SharedClock) -> Result<i32, Failure> {
    let app = App::load(config)?;
    let store = app.store().await?;
    let old = query::find_run(&store, run_id).await?;
    let flow = app.flow(&old.flow)?;
    let inputs = match old.inputs.as_deref().map(serde_json::from_str::<Json>) {
        None => Map::new(),
        Some(Ok(Json::Object(m))) => m,
        Some(_) => {
            return Err(usage(format!(
                "the inputs of run {} were cut when stored (max_payload_bytes); pass them with `flowguard run`",
                old.id
            )));
        }
    };
    store.close().await;
    execute(&app, flow, inputs, "rerun", format, clock).await
}

/// `flowguard runs cancel RUN`.
pub async fn cancel(config: &Path, run_id: &str, who: super::manual::Who, clock: SharedClock) -> Result<i32, Failure> {
    let (_, store) = open_store(config).await?;
    let run = query::find_run(&store, run_id).await?;
    let actor = who.actor();
    match run.status {
        RunStatus::Running | RunStatus::Queued => {
            store.request_cancel(&run.id, &actor, clock.now_ms()).await?;
            for _ in 0..50 {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                if store.get_run(&run.id).await?.is_some_and(|r| r.status.is_final()) {
                    println!("run {} cancelled", run.id);
                    return Ok(0);
                }
            }
            println!("cancel requested for run {}; the process running it stops it within a second of seeing the request", run.id);
            Ok(0)
        }
        RunStatus::WaitingManual => {
            let task =
                store.manual_task(&run.id).await?.ok_or_else(|| usage(format!("run {} waits for a human but has no open task", run.id)))?;
            crate::engine::manual::close(&store, &task, &crate::engine::manual::Act::Abort, &actor, who.note.clone(), clock.now_ms())
                .await
                .map_err(super::manual::refused)?;
            println!("run {} cancelled", run.id);
            Ok(0)
        }
        s => Err(usage(format!("run {} already ended {s}", run.id))),
    }
}

async fn execute(
    app: &App,
    flow: Arc<Flow>,
    inputs: Map<String, Json>,
    trigger: &str,
    format: Format,
    clock: SharedClock,
) -> Result<i32, Failure> {
    let (mut engine, alerter) = app.alerting_engine(clock.clone()).await?;
    // Alerts an earlier process owed (it died between a run's end and its alert). Runs that ended
    // in the last minute are left to the process that ran them.
    let now = clock.now_ms();
    if let Err(e) = alerter.sweep(now - 24 * 3600 * 1000, now - 60_000).await {
        eprintln!("warning: alert sweep: {}", alerter.redactor().redact(&format!("{e:#}")));
    }
    if format == Format::Table {
        let live = std::io::stdout().is_terminal();
        engine = engine.with_observer(Arc::new(move |e: &Event| progress(e, live)));
    }
    let req = RunRequest { flow, inputs, trigger: trigger.into(), canary: false };
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    // The outbox is pumped while the run goes on, so a latency warning reaches the channels when
    // it is raised (as under `serve`), not when the run ends.
    let pump = alerter.pump_in_background();
    let outcome = engine.run_until(req, ctrl_c).await;
    pump.stop(std::time::Duration::from_secs(2)).await;
    let outcome = outcome?;
    // Deliver this run's alert now, within a bound; what is left stays in the outbox.
    let budget = alerter.drain_budget();
    match tokio::time::timeout(budget + std::time::Duration::from_secs(5), alerter.drain(budget)).await {
        Ok(Err(e)) => eprintln!("warning: alert delivery: {}", alerter.redactor().redact(&format!("{e:#}"))),
        Err(_) => eprintln!("warning: alert delivery: the database did not answer within the drain budget"),
        Ok(Ok(_)) => {}
    }
    engine.store.close().await;
    match format {
        Format::Json => table::json(&json!({
            "run_id": outcome.run_id,
            "flow": outcome.flow,
            "status": outcome.status,
            "duration_ms": outcome.duration_ms,
            "failed_node": outcome.failed_node,
            "error_kind": outcome.error_kind,
            "error_message": outcome.error_message,
            "outputs": outcome.outputs,
        })),
        Format::Table => println!("{}", summary(&outcome)),
    }
    Ok(outcome.status.exit_code())
}

fn progress(e: &Event, live: bool) {
    let mut out = std::io::stdout().lock();
    let _ = match e {
        Event::RunStarted { run_id, flow } => writeln!(out, "run {run_id} {flow} started"),
        Event::NodeStarted { node, attempt, model, .. } if live => {
            let m = model.as_deref().map(|m| format!(" [{m}]")).unwrap_or_default();
            let a = if *attempt > 1 { format!(" attempt {attempt}") } else { String::new() };
            write!(out, "\r\x1b[2K  … {node}{a}{m}").and_then(|_| out.flush())
        }
        Event::AttemptFinished(a) if live => writeln!(out, "\r\x1b[2K{}", attempt_line(a)),
        Event::AttemptFinished(a) => writeln!(out, "{}", attempt_line(a)),
        Event::LatencyWarning { threshold_ms, .. } => {
            let clear = if live { "\r\x1b[2K" } else { "" };
            writeln!(out, "{clear}  ⚠ latency warning: the run is still going after {}", table::ms(Some(*threshold_ms)))
        }
        _ => Ok(()),
    };
}
