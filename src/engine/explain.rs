//! `flowguard check --explain FLOW`: for each node, what happens for each error kind it can meet —
//! how many attempts, whether another model is tried, the action, and the severity.

use super::{resolve, switches_model};
use crate::flow::{Flow, RetryPolicy};
use crate::vocab::{ErrorKind, Severity};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub node: String,
    pub kind: ErrorKind,
    /// Attempts on one model, the first included.
    pub attempts: u32,
    /// Models tried after this one, in order.
    pub next_models: Vec<String>,
    pub action: String,
    pub description: String,
    pub severity: Severity,
}

pub fn explain(flow: &Flow) -> Vec<Row> {
    let mut rows = Vec::new();
    for node in &flow.nodes {
        let mut kinds = node.node.failure_kinds(node.side_effect);
        for e in &node.expect {
            kinds.push(e.kind());
        }
        if node.foreach.is_some() {
            kinds.push(ErrorKind::LoopLimit);
        }
        kinds.sort();
        kinds.dedup();
        let chain = node.node.model_chain();
        for kind in kinds {
            let (action, severity) = resolve(flow, node, kind);
            let switch = chain.len() > 1 && (switches_model(kind) || matches!(action, super::Action::FallbackModel));
            let (action, severity) = if switch {
                // After the chain, the node fails with no_healthy_model.
                let (a, s) = resolve(flow, node, ErrorKind::NoHealthyModel);
                (a, s.max(severity))
            } else {
                (action, severity)
            };
            let mut description = action.describe();
            if let super::Action::Repair { target: None, max } = &action {
                description = format!(
                    "repair: re-run `{}` with the violations, up to {max} times, then loop_limit",
                    node.reads.first().map(String::as_str).unwrap_or("?")
                );
            }
            if switch {
                description = format!("then the next model; when all failed, no_healthy_model: {description}");
            }
            rows.push(Row {
                node: node.id.clone(),
                kind,
                attempts: RetryPolicy::attempts_for(node.retry.as_ref(), kind),
                next_models: if switch { chain[1..].to_vec() } else { Vec::new() },
                action: action.name().to_owned(),
                description,
                severity,
            });
        }
    }
    rows
}
