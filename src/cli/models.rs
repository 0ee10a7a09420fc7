//! `flowguard models`: each model's breaker — state, failure rate over its window, since when —
//! and the last opens, probes and closes, read from the database every process shares.

use super::{Failure, Format, open_store, open_store_with, table};
use crate::model::breaker::{BreakerStatus, Breakers, rate};
use serde_json::json;
use std::path::Path;

pub async fn models(config: &Path, events: i64, format: Format) -> Result<i32, Failure> {
    // The breakers' settings are in `models` and `defaults`; when those cannot be read here (a
    // model's `${KEY}` is not set in this shell) the states are shown as stored.
    let (cfg, store) = match open_store_with(config, Some(&["storage", "timezone", "locale", "defaults", "models"])).await {
        Ok(x) => x,
        Err(_) => open_store(config).await?,
    };
    let tz = cfg.time_zone();
    let now = jiff::Timestamp::now().as_millisecond();
    let breakers = Breakers::from_config(&cfg);
    let mut status = breakers.status(&store, now).await?;
    for row in store.breakers().await? {
        if !status.iter().any(|s| s.model == row.model) {
            status.push(BreakerStatus {
                model: row.model.clone(),
                state: row.state.clone(),
                since: (row.since > 0).then_some(row.since),
                calls: row.calls,
                failures: row.failures,
                failure_rate: rate(row.calls, row.failures),
                threshold: 0.0,
                min_calls: 0,
                window_ms: 0,
                cooldown_ms: 0,
                probe_at: None,
                opened_calls: row.calls,
                opened_failures: row.failures,
                last_change: None,
            });
        }
    }
    let without: Vec<&String> = cfg.models.keys().filter(|m| breakers.settings(m).is_none()).collect();
    let changes = store.breaker_events(None, events).await?;
    match format {
        Format::Json => table::json(&json!({"breakers": status, "without_breaker": without, "changes": changes})),
        Format::Table => {
            let rows: Vec<Vec<String>> = status
                .iter()
                .map(|b| {
                    vec![
                        b.model.clone(),
                        b.state.clone(),
                        b.since.map(|t| table::time(t, &tz)).unwrap_or_else(|| "-".into()),
                        format!("{:.0}% ({}/{})", b.failure_rate, b.failures, b.calls),
                        if b.threshold > 0.0 { format!("{}% of ≥{}", b.threshold, b.min_calls) } else { "-".into() },
                        table::ms(Some(b.window_ms)),
                        b.probe_at.map(|t| table::time(t, &tz)).unwrap_or_default(),
                    ]
                })
                .collect();
            table::print(&["MODEL", "BREAKER", "SINCE", "FAILED (WINDOW)", "OPENS AT", "WINDOW", "PROBE AT"], &rows);
            if status.is_empty() {
                println!("(no model has a breaker; set `breaker:` on a model or in `defaults`)");
            }
            if !without.is_empty() {
                println!("no breaker: {}", without.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "));
            }
            if !changes.is_empty() {
                println!();
                let rows: Vec<Vec<String>> = changes
                    .iter()
                    .map(|e| {
                        vec![
                            table::time(e.at, &tz),
                            e.model.clone(),
                            e.event.clone(),
                            format!("{}/{} failed", e.failures, e.calls),
                            e.run_id.clone().unwrap_or_default(),
                            e.note.clone().unwrap_or_default(),
                        ]
                    })
                    .collect();
                table::print(&["WHEN", "MODEL", "CHANGE", "WINDOW", "RUN", "NOTE"], &rows);
            }
        }
    }
    store.close().await;
    Ok(0)
}
