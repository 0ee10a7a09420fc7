//! What the engine tells the rest of the process while runs go: progress for the CLI, latency
//! warnings, finished runs. Observers are plain callbacks; they must not block.

use super::RunOutcome;
use crate::store::AttemptRecord;
use std::sync::Arc;

#[derive(Debug, Clone)]
pub enum Event {
    RunStarted {
        run_id: String,
        flow: String,
    },
    NodeStarted {
        run_id: String,
        node: String,
        attempt: u32,
        model: Option<String>,
    },
    AttemptFinished(Box<AttemptRecord>),
    /// A run is still going past its flow's `latency_warning`.
    LatencyWarning {
        run_id: String,
        flow: String,
        threshold_ms: i64,
    },
    RunFinished(RunOutcome),
    /// A model's breaker opened, let a probe through, closed or re-opened; sent by the one
    /// process that made the change.
    Breaker(Box<crate::model::breaker::Transition>),
}

pub type Observer = Arc<dyn Fn(&Event) + Send + Sync>;
