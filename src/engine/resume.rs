//! Going on with a run that a dead process left `running`: from the first node without a completed
//! attempt, with the outputs of the nodes before it as the engine kept them whole (`run_outputs`,
//! written with each attempt). A run can resume only when the flow file is the version it started
//! with and its inputs were stored whole; otherwise the caller marks it `interrupted`.

use crate::flow::Flow;
use crate::store::{AttemptRecord, RunRecord};
use crate::vocab::AttemptStatus;
use serde_json::{Map, Value as Json};
use std::collections::BTreeMap;

/// How [`super::Engine::start`] begins a run.
#[derive(Debug, Clone, Default)]
pub struct Start {
    /// Use this run id (the API hands it out before the run starts).
    pub run_id: Option<String>,
    /// Go on with a recorded run instead of inserting a new one.
    pub resume: Option<Resume>,
    /// The run's row exists (`queued`, then claimed from the queue) and this process holds its
    /// lease: run it from the first node without inserting it.
    pub claimed: Option<Claim>,
}

/// A queued run this process claimed.
#[derive(Debug, Clone, Copy, Default)]
pub struct Claim {
    /// When it was claimed (its start).
    pub at: i64,
    /// Its flow was blocked at the claim: the block is read and the run refused.
    pub blocked: bool,
}

/// Where a recorded run goes on.
#[derive(Debug, Clone, Default)]
pub struct Resume {
    pub started_at: i64,
    /// The last attempt's `seq`; new attempts follow it.
    pub seq: i64,
    /// Index of the first node to run.
    pub next_node: usize,
    /// Outputs of the nodes before it, by id.
    pub outputs: Map<String, Json>,
}

/// Marks a stored payload cut at the size limit (see `Engine::payload`).
const TRUNCATED: &str = "…[truncated]";

/// Works out where `run` goes on, or says why it cannot.
/// `kept`: the run's kept node outputs by node id ([`crate::store::Store::outputs`]).
pub fn plan(
    flow: &Flow,
    run: &RunRecord,
    attempts: &[AttemptRecord],
    kept: &BTreeMap<String, String>,
) -> Result<(Start, Map<String, Json>), String> {
    if run.flow_hash != flow.hash {
        return Err(format!("the flow file changed since the run started (version {} → {})", run.flow_hash, flow.hash));
    }
    let inputs = match run.inputs.as_deref() {
        None => Map::new(),
        Some(t) if t.ends_with(TRUNCATED) => return Err("the run's inputs were stored truncated".into()),
        Some(t) => match serde_json::from_str::<Json>(t) {
            Ok(Json::Object(m)) => m,
            _ => return Err("the run's inputs could not be read back".into()),
        },
    };
    let mut outputs = Map::new();
    let mut next_node = flow.nodes.len();
    for (i, node) in flow.nodes.iter().enumerate() {
        // The last recorded attempt of the node decides; a foreach node is run again whole, since
        // its combined output is not stored.
        let last = attempts.iter().rev().find(|a| a.node_id == node.id);
        let done = node.foreach.is_none() && last.is_some_and(|a| matches!(a.status, AttemptStatus::Succeeded | AttemptStatus::Defaulted));
        let skipped = last.is_some_and(|a| a.status == AttemptStatus::Skipped);
        if skipped {
            continue;
        }
        if !done {
            next_node = i;
            break;
        }
        let value = match kept.get(&node.id) {
            Some(text) => {
                serde_json::from_str::<Json>(text).map_err(|e| format!("the kept output of `{}` cannot be read: {e}", node.id))?
            }
            None => return Err(format!("the output of `{}` was not kept", node.id)),
        };
        outputs.insert(node.id.clone(), value);
    }
    let seq = attempts.iter().map(|a| a.seq).max().unwrap_or(0);
    let resume = Resume { started_at: run.started_at, seq, next_node, outputs };
    Ok((Start { run_id: Some(run.id.clone()), resume: Some(resume), claimed: None }, inputs))
}
