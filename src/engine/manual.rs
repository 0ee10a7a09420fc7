//! What an operator does with a run waiting for a human: retry it (from the failed node or a named
//! one), skip the node with a supplied output, resolve it by hand, or abort it. Shared by the CLI
//! and the API; every action is recorded with who, when and why.

use super::{Engine, RunOutcome};
use crate::flow::Flow;
use crate::store::{ManualAction, ManualTask, RunEnd, Store};
use crate::vocab::RunStatus;
use serde_json::Value as Json;
use std::collections::BTreeMap;
use std::sync::Arc;

#[derive(Debug, Clone)]
pub enum Act {
    Retry(Option<String>),
    Skip(Json),
    Resolve,
    Abort,
}

impl Act {
    /// (action name, the task's status after it)
    pub fn names(&self) -> (&'static str, &'static str) {
        match self {
            Act::Retry(_) => ("retry", "retried"),
            Act::Skip(_) => ("skip", "skipped"),
            Act::Resolve => ("resolve", "resolved"),
            Act::Abort => ("abort", "aborted"),
        }
    }
}

/// What an action did.
pub enum Acted {
    /// The task is closed and the run ended (resolve, abort).
    Closed { task: ManualTask, run_status: RunStatus },
    /// The task is closed and the run went on (retry, skip).
    Resumed { task: ManualTask, outcome: RunOutcome },
}

/// Why a manual action was refused. The API answers 404 or 409 by it, the CLI exits 2; only
/// `Store` is a failure of flowguard or its database.
#[derive(Debug, thiserror::Error)]
pub enum ManualError {
    #[error("no manual task for `{0}`")]
    NoTask(String),
    #[error("task {id} is already {status} (by {by})")]
    NotOpen { id: String, status: String, by: String },
    /// Another process or person acted on the task first.
    #[error("task {0} was closed by someone else meanwhile")]
    ClosedMeanwhile(String),
    #[error("flow `{0}` is not loaded")]
    FlowNotLoaded(String),
    #[error("run {0} is gone")]
    RunGone(String),
    #[error(transparent)]
    Store(#[from] anyhow::Error),
}

/// Finds an open task by task id, run id or a unique prefix.
pub async fn open_task(engine: &Engine, id: &str) -> Result<ManualTask, ManualError> {
    let t = engine.store.manual_task(id).await?.ok_or_else(|| ManualError::NoTask(id.to_owned()))?;
    if t.status != "open" {
        return Err(ManualError::NotOpen { id: t.id, status: t.status, by: t.closed_by.unwrap_or_else(|| "?".into()) });
    }
    Ok(t)
}

/// Closes the task with `what` (atomically: a task acted on twice is refused) and, for retry and
/// skip, resumes the run to its end.
pub async fn act(
    engine: &Engine,
    flows: &BTreeMap<String, Arc<Flow>>,
    t: ManualTask,
    what: Act,
    actor: &str,
    note: Option<String>,
) -> Result<Acted, ManualError> {
    let flow = match &what {
        Act::Retry(_) | Act::Skip(_) => Some(flows.get(&t.flow).cloned().ok_or_else(|| ManualError::FlowNotLoaded(t.flow.clone()))?),
        _ => None,
    };
    let run_status = close(&engine.store, &t, &what, actor, note, engine.clock.now_ms()).await?;
    let outcome = match (what, flow) {
        (Act::Retry(from), Some(flow)) => engine.resume(flow, &t.run_id, from.as_deref().unwrap_or(&t.node_id), None).await?,
        (Act::Skip(value), Some(flow)) => engine.resume(flow, &t.run_id, &t.node_id, Some(value)).await?,
        _ => return Ok(Acted::Closed { run_status: run_status.unwrap_or(RunStatus::Failed), task: t }),
    };
    Ok(Acted::Resumed { task: t, outcome })
}

/// Closes the task and records who did what; for resolve and abort also ends the run (`failed`
/// with the note, `cancelled`) and returns that status. Needs only the store, so it works while
/// the flows do not load.
pub async fn close(
    store: &Store,
    t: &ManualTask,
    what: &Act,
    actor: &str,
    note: Option<String>,
    now: i64,
) -> Result<Option<RunStatus>, ManualError> {
    let (name, status) = what.names();
    let action = ManualAction {
        task_id: t.id.clone(),
        run_id: t.run_id.clone(),
        action: name.into(),
        actor: actor.into(),
        note: note.clone(),
        at: now,
    };
    let run = store.get_run(&t.run_id).await?.ok_or_else(|| ManualError::RunGone(t.run_id.clone()))?;
    let why = note.as_deref().map(|n| format!(": {n}")).unwrap_or_default();
    let end = |status: RunStatus, message: String| RunEnd {
        status: Some(status),
        ended_at: now,
        duration_ms: now - run.started_at,
        failed_node: run.failed_node.clone(),
        error_kind: run.error_kind.clone(),
        error_message: Some(message),
        severity: run.severity.clone(),
    };
    let closing = match what {
        Act::Resolve => {
            Some(end(RunStatus::Failed, format!("{} — resolved by hand by {actor}{why}", run.error_message.clone().unwrap_or_default())))
        }
        Act::Abort => Some(end(RunStatus::Cancelled, format!("aborted by {actor}{why}"))),
        _ => None,
    };
    if !store.close_manual_task(t, status, &action, closing.as_ref()).await? {
        return Err(ManualError::ClosedMeanwhile(t.id.clone()));
    }
    Ok(closing.and_then(|c| c.status))
}
