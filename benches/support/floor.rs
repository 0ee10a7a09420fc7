//! The physical floor of the run log on SQLite: the statements the store writes for a run of
//! [`NODES`] nodes, executed inline on one connection owned by the calling thread (prepared
//! statements cached, WAL, synchronous=NORMAL), nothing else. What the engine benchmark measures
//! above this is flowguard's own cost.
//!
//! Per run: one transaction that inserts the run and takes its lease; per node one that checks the
//! run's fencing guard, inserts the attempt and keeps the node's output (upsert); one that records
//! the run's end. Report rollups are left out. `concurrent` commits the same statements of
//! `concurrency` runs together (group commit, attempts merged into one multi-row INSERT, as the
//! writer does).

use super::NODES;
use rusqlite::{Connection, params};
use std::time::Instant;

const RUN_INSERT: &str = "INSERT INTO runs (id, flow, flow_hash, trigger_kind, status, canary, inputs, started_at, ended_at, duration_ms, failed_node, error_kind, error_message, severity) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING";
const LEASE: &str = "UPDATE runs SET owner = ?, lease_until = ?, epoch = 1 WHERE id = ?";
const GUARD: &str = "UPDATE runs SET epoch = epoch WHERE id = ? AND epoch = ?";
const ATTEMPT_HEAD: &str = "INSERT INTO node_attempts (run_id, flow, node_id, kind, seq, attempt, iteration, status, started_at, ended_at, duration_ms, input_bytes, output_bytes, input, output, retried, action, error_kind, error_message, model, tokens_in, tokens_out, http_status, cost_nanos, currency) VALUES ";
const ATTEMPT_ROW: &str = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
const OUTPUT: &str = "INSERT INTO run_outputs (run_id, node_id, output) VALUES (?, ?, ?) ON CONFLICT (run_id, node_id) DO UPDATE SET output = excluded.output";
const FINISH: &str = "UPDATE runs SET status = ?, ended_at = ?, duration_ms = ?, failed_node = ?, error_kind = ?, error_message = ?, severity = ? WHERE id = ?";
const RUN_END: &str = "INSERT INTO run_ends (run_id, at) VALUES (?, ?)";

/// Microseconds per node, one run at a time and `concurrency` runs per commit.
pub struct Floor {
    pub sequential_us: f64,
    pub concurrent_us: f64,
}

/// Measures both modes on the SQLite file at `path`, which must hold flowguard's schema.
pub fn measure(path: &std::path::Path, runs: usize, concurrency: usize) -> rusqlite::Result<Floor> {
    let mut c = Connection::open(path)?;
    c.pragma_update(None, "journal_mode", "WAL")?;
    c.pragma_update(None, "synchronous", "NORMAL")?;
    c.set_prepared_statement_cache_capacity(64);
    let mut next = 0usize;
    // Warm up: prepared statements, page cache.
    for _ in 0..20 {
        group(&mut c, &mut next, 1)?;
    }
    let seq_runs = runs.min(1000);
    let start = Instant::now();
    for _ in 0..seq_runs {
        group(&mut c, &mut next, 1)?;
    }
    let sequential_us = start.elapsed().as_secs_f64() * 1e6 / (seq_runs * NODES) as f64;
    let groups = runs.div_ceil(concurrency.max(1));
    let start = Instant::now();
    for _ in 0..groups {
        group(&mut c, &mut next, concurrency.max(1))?;
    }
    let concurrent_us = start.elapsed().as_secs_f64() * 1e6 / (groups * concurrency.max(1) * NODES) as f64;
    Ok(Floor { sequential_us, concurrent_us })
}

/// `n` runs from start to end, their statements committed together at each step.
fn group(c: &mut Connection, next: &mut usize, n: usize) -> rusqlite::Result<()> {
    let ids: Vec<String> = (0..n).map(|i| format!("floor-{:012}", *next + i)).collect();
    *next += n;
    let now = jiff::Timestamp::now().as_millisecond();
    let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    for id in &ids {
        let flow_inputs = r#"{"topic":"秋天露营"}"#;
        tx.prepare_cached(RUN_INSERT)?.execute(params![
            id,
            "bench",
            "h",
            "bench",
            "running",
            0,
            flow_inputs,
            now,
            None::<i64>,
            None::<i64>,
            None::<String>,
            None::<String>,
            None::<String>,
            None::<String>
        ])?;
        tx.prepare_cached(LEASE)?.execute(params!["host:1:0", now + 30_000, id])?;
    }
    tx.commit()?;
    let attempt_sql = format!("{ATTEMPT_HEAD}{} ON CONFLICT DO NOTHING", vec![ATTEMPT_ROW; n].join(", "));
    for node in 0..NODES {
        let node_id = format!("n{node}");
        let output = format!("\"主题：秋天露营 · 第{node}步\"");
        let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        for id in &ids {
            let hit = tx.prepare_cached(GUARD)?.execute(params![id, 1])?;
            assert_eq!(hit, 1, "the guard matches the run");
        }
        {
            let mut insert = tx.prepare_cached(&attempt_sql)?;
            let mut i = 1;
            for id in &ids {
                let seq = node as i64 + 1;
                let vals: [&dyn rusqlite::ToSql; 25] = [
                    id,
                    &"bench",
                    &node_id,
                    &"template",
                    &seq,
                    &1,
                    &None::<i64>,
                    &"succeeded",
                    &now,
                    &now,
                    &0,
                    &20,
                    &30,
                    &"{}",
                    &output,
                    &0,
                    &None::<String>,
                    &None::<String>,
                    &None::<String>,
                    &None::<String>,
                    &None::<i64>,
                    &None::<i64>,
                    &None::<i64>,
                    &None::<i64>,
                    &None::<String>,
                ];
                for v in vals {
                    insert.raw_bind_parameter(i, v)?;
                    i += 1;
                }
            }
            insert.raw_execute()?;
        }
        for id in &ids {
            tx.prepare_cached(OUTPUT)?.execute(params![id, node_id, output])?;
        }
        tx.commit()?;
    }
    let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    for id in &ids {
        tx.prepare_cached(FINISH)?.execute(params![
            "succeeded",
            now,
            1,
            None::<String>,
            None::<String>,
            None::<String>,
            None::<String>,
            id
        ])?;
        tx.prepare_cached(RUN_END)?.execute(params![id, now])?;
    }
    tx.commit()
}
