//! `runs`, `show` and `stats`: read the store; they work while `run` or `serve` write to it.

use super::{Failure, Format, open_store, parse_since, table, usage};
use crate::store::{RunFilter, RunRecord, Store};
use crate::vocab::{AttemptStatus, RunStatus};
use serde_json::json;
use std::path::Path;

pub async fn runs(
    config: &Path,
    flow: Option<String>,
    status: Option<String>,
    since: Option<String>,
    limit: i64,
    format: Format,
) -> Result<i32, Failure> {
    let status = status.map(|s| s.parse::<RunStatus>().map_err(usage)).transpose()?;
    let (cfg, store) = open_store(config).await?;
    let tz = cfg.time_zone();
    let now = jiff::Timestamp::now().as_millisecond();
    let since_ms = since.as_deref().map(|s| parse_since(s, now, &tz)).transpose()?;
    let runs =
        store.list_runs(&RunFilter { flow, status, since_ms, limit: Some(limit), include_canary: true, ..Default::default() }).await?;
    match format {
        Format::Json => table::json(&runs),
        Format::Table => {
            let rows: Vec<Vec<String>> = runs
                .iter()
                .map(|r| {
                    vec![
                        r.id.clone(),
                        r.flow.clone(),
                        r.status.to_string(),
                        table::time(r.started_at, &tz),
                        table::ms(r.duration_ms),
                        r.failed_node.clone().unwrap_or_default(),
                        r.error_kind.clone().unwrap_or_default(),
                    ]
                })
                .collect();
            table::print(&["RUN", "FLOW", "STATUS", "STARTED", "DURATION", "FAILED NODE", "ERROR KIND"], &rows);
            if runs.is_empty() {
                println!("(no runs)");
            }
        }
    }
    Ok(0)
}

/// The run with this id, or the only run whose id starts with it.
pub async fn find_run(store: &Store, id: &str) -> Result<RunRecord, Failure> {
    if let Some(r) = store.get_run(id).await? {
        return Ok(r);
    }
    let found = store.find_runs(id).await?;
    match found.len() {
        0 => Err(usage(format!("no run `{id}`"))),
        1 => Ok(found.into_iter().next().expect("one run")),
        _ => Err(usage(format!("`{id}` matches several runs; give more of the id"))),
    }
}

pub async fn show(config: &Path, id: &str, format: Format) -> Result<i32, Failure> {
    let (cfg, store) = open_store(config).await?;
    let tz = cfg.time_zone();
    let run = find_run(&store, id).await?;
    let attempts = store.attempts(&run.id).await?;
    let cost = crate::stats::run_cost(&attempts);
    match format {
        Format::Json => table::json(&json!({"run": run, "cost": cost, "attempts": attempts})),
        Format::Table => {
            println!("run       {}", run.id);
            println!("flow      {} (version {})", run.flow, run.flow_hash);
            println!("status    {}", run.status);
            println!("trigger   {}{}", run.trigger, if run.canary { " (canary)" } else { "" });
            println!("started   {}", table::time(run.started_at, &tz));
            if let Some(e) = run.ended_at {
                println!("ended     {}  ({})", table::time(e, &tz), table::ms(run.duration_ms));
            }
            if run.error_kind.is_some() || (run.status.is_final() && !run.status.is_success() && run.failed_node.is_some()) {
                println!(
                    "error     {} at `{}` (severity {})",
                    run.error_kind.as_deref().unwrap_or("unknown"),
                    run.failed_node.as_deref().unwrap_or("-"),
                    run.severity.as_deref().unwrap_or("-")
                );
                println!("          {}", run.error_message.as_deref().unwrap_or(""));
            }
            if let Some(i) = &run.inputs {
                println!("inputs    {i}");
            }
            if !cost.is_empty() {
                let tokens: Vec<String> = cost.iter().map(|c| format!("{} in / {} out", c.tokens_in, c.tokens_out)).collect();
                println!("cost      {}  ({} tokens)", crate::stats::cost_text(&cost), tokens.join(", "));
            }
            println!();
            // `#` is the attempt's place in the run: ingested attempts keep their start time as seq.
            let rows: Vec<Vec<String>> = attempts
                .iter()
                .enumerate()
                .map(|(i, a)| {
                    vec![
                        (i + 1).to_string(),
                        match a.iteration {
                            Some(i) => format!("{}[{i}]", a.node_id),
                            None => a.node_id.clone(),
                        },
                        a.attempt.to_string(),
                        a.status.to_string(),
                        table::time(a.started_at, &tz),
                        table::ms(Some(a.duration_ms)),
                        format!("{}/{}", table::bytes(a.input_bytes), table::bytes(a.output_bytes)),
                        a.model.clone().unwrap_or_default(),
                        a.action.clone().unwrap_or_default(),
                        match (&a.error_kind, &a.error_message) {
                            (Some(k), Some(m)) => format!("{k}: {m}"),
                            (Some(k), None) => k.clone(),
                            (None, Some(m)) if a.status != AttemptStatus::Succeeded => m.clone(),
                            (None, _) => String::new(),
                        },
                    ]
                })
                .collect();
            table::print(&["#", "NODE", "TRY", "STATUS", "STARTED", "TOOK", "IN/OUT", "MODEL", "NEXT", "ERROR"], &rows);
        }
    }
    Ok(0)
}

pub async fn stats(config: &Path, flow: Option<String>, since: &str, format: Format) -> Result<i32, Failure> {
    let (cfg, store) = open_store(config).await?;
    let now = jiff::Timestamp::now().as_millisecond();
    let since_ms = parse_since(since, now, &cfg.time_zone())?;
    let stats = crate::stats::collect(&store, flow.as_deref(), since_ms, now + 1).await?;
    match format {
        Format::Json => table::json(&stats),
        Format::Table => print_stats(&stats),
    }
    Ok(0)
}

pub fn print_stats(stats: &crate::stats::Stats) {
    if stats.flows.is_empty() {
        println!("(no runs in this window)");
    }
    for f in &stats.flows {
        println!(
            "flow {}: {} runs, success {} (recovered {}), failed {}, timed out {}, avg {} p50 {} p95 {}",
            f.flow,
            f.runs,
            table::pct(f.success_rate),
            table::pct(f.recovered_rate),
            f.failed,
            f.timed_out,
            table::ms(f.duration.avg_ms.map(|v| v as i64)),
            table::ms(f.duration.p50_ms),
            table::ms(f.duration.p95_ms),
        );
        if !f.cost.is_empty() {
            let tokens: i64 = f.cost.iter().map(|c| c.tokens_in + c.tokens_out).sum();
            println!("  cost: {} ({tokens} tokens)", crate::stats::cost_text(&f.cost));
        }
        if !f.failures_by_kind.is_empty() {
            let kinds: Vec<String> = f.failures_by_kind.iter().map(|(k, n)| format!("{k} {n}")).collect();
            println!("  run failures by kind: {}", kinds.join(", "));
        }
        let rows: Vec<Vec<String>> = f
            .nodes
            .iter()
            .map(|n| {
                vec![
                    n.node.clone(),
                    n.kind.clone(),
                    n.attempts.to_string(),
                    table::pct(n.success_rate),
                    table::ms(n.duration.avg_ms.map(|v| v as i64)),
                    table::ms(n.duration.p50_ms),
                    table::ms(n.duration.p95_ms),
                    table::pct(n.time_share),
                    n.retries.to_string(),
                    n.failures_by_kind.iter().map(|(k, c)| format!("{k} {c}")).collect::<Vec<_>>().join(", "),
                ]
            })
            .collect();
        table::print(
            &["  NODE", "KIND", "ATTEMPTS", "OK", "AVG", "P50", "P95", "TIME SHARE", "RETRIES", "FAILURES"],
            &rows
                .into_iter()
                .map(|mut r| {
                    r[0] = format!("  {}", r[0]);
                    r
                })
                .collect::<Vec<_>>(),
        );
        println!();
    }
}
