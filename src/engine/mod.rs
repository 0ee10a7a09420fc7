//! The engine: runs a flow to a final state with guards on every node — time limits, retries with
//! backoff, the model fallback chain, `expect` checks — classifies every failure into one error
//! kind, applies the error policy (fallback, catch, repair, manual, block), and writes every attempt
//! to the store as it happens.
//!
//! Precedence on a failing node (DESIGN.md §4): the node's `retry`, else the built-in table for the
//! kind; when retries are spent an llm node moves to the next model of its chain; when nothing is
//! left, the node's `on_error`, else the policy tables (node, flow, built-in) decide what happens.

mod cancel;
pub mod events;
pub mod expect;
pub mod explain;
pub mod manual;
pub mod policy;
pub mod resume;

pub use events::{Event, Observer};

use crate::clock::SharedClock;
use crate::flow::template::{Scope, to_value};
use crate::flow::{Flow, NodeSpec, RetryPolicy};
use crate::model::breaker::Admission;
use crate::nodes::{Meta, NodeError, Notifier, Output, Registry, RunCx, json_len};
use crate::store::{AttemptRecord, FlowBlock, ManualTask, Queued, RunEnd, RunRecord, Store};
use crate::vocab::{AttemptStatus, ErrorKind, RunStatus, Severity};
use anyhow::{Context, anyhow};
use policy::Action;
use serde_json::{Map, Value as Json, json};
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};

/// Runs flows. Cheap to clone; share one per process.
#[derive(Clone)]
pub struct Engine {
    pub store: Store,
    pub reg: Arc<Registry>,
    pub clock: SharedClock,
    /// Stored inputs and outputs are cut to this many bytes (the full size is recorded).
    pub max_payload: usize,
    observers: Arc<Vec<Observer>>,
    cancels: Arc<cancel::Cancels>,
    notifier: Option<Arc<dyn Notifier>>,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct RunRequest {
    pub flow: Arc<Flow>,
    pub inputs: Map<String, Json>,
    /// `cli`, `demo`, `cron`, `api`, `canary`, `rerun`.
    pub trigger: String,
    pub canary: bool,
}

/// How a run ended.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub run_id: String,
    pub flow: String,
    pub status: RunStatus,
    pub duration_ms: i64,
    pub failed_node: Option<String>,
    pub error_kind: Option<ErrorKind>,
    pub error_message: Option<String>,
    pub severity: Option<Severity>,
    /// Each finished node's output, by id.
    pub outputs: Map<String, Json>,
}

/// A node that failed for good, with its last attempt not yet written (its action is decided
/// by the error policy).
struct NodeFailure {
    error: NodeError,
    last: Option<AttemptRecord>,
}

/// The attempt in flight, so a run-level timeout or a cancel can record it.
#[derive(Clone)]
struct Current {
    node: String,
    kind: String,
    attempt: i64,
    iteration: Option<i64>,
    started_at: i64,
    model: Option<String>,
}

#[derive(Default)]
struct RunState {
    seq: i64,
    recovered: bool,
    current: Option<Current>,
    outputs: Map<String, Json>,
    /// Writes handed to the store whose commit nobody has waited for yet (pure nodes' records),
    /// oldest first, with the node of each one's first record.
    pending: VecDeque<(String, Queued)>,
    /// Pure nodes' records not handed to the store yet: they go as one write with the run's next
    /// record that must be committed, or once [`UNSENT`] wait.
    unsent: Option<Unsent>,
}

/// A run's records kept for one write.
struct Unsent {
    /// The node of the first record (named if the write fails).
    from: String,
    stmts: Vec<crate::store::Stmt>,
    records: usize,
}

/// Most writes of one run that may wait for their commit while the run goes on: past this the
/// engine waits for the oldest.
const IN_FLIGHT: usize = 64;

/// Most pure nodes' records of one run kept before they are handed to the store.
const UNSENT: usize = 16;

/// A record the store did not commit.
struct Unrecorded {
    node: String,
    error: anyhow::Error,
}

/// A run's end as recorded: its row's last values, with the attempt cut short by a timeout or a
/// cancel, the flow's block, or the task of a run parked for a human.
struct Ending {
    status: RunStatus,
    end: RunEnd,
    last: Vec<AttemptRecord>,
    block: bool,
    task: Option<ManualTask>,
    kind: Option<ErrorKind>,
    severity: Option<Severity>,
}

/// A walk that went through whose records the store did not commit fails on the first of them.
fn unrecorded(flow: &Flow, u: Unrecorded) -> Stop {
    let severity = policy_severity(flow, flow.nodes.iter().find(|n| n.id == u.node), ErrorKind::Internal);
    let error = NodeError::new(ErrorKind::Internal, format!("{:#}", u.error));
    Stop::Walked(Walk::Failed { node: u.node, error, severity, block: false })
}

/// How the node walk ended.
enum Walk {
    /// Every node done; `handled` is a failure a catch node took care of.
    Done {
        handled: Option<(String, NodeError)>,
    },
    Failed {
        node: String,
        error: NodeError,
        severity: Severity,
        block: bool,
    },
    Parked {
        node: String,
        error: NodeError,
        severity: Severity,
    },
}

enum Stop {
    Lost,
    Walked(Walk),
    TimedOut,
    Cancelled,
}

/// Where a run starts or resumes.
struct Start {
    run_id: String,
    started_at: i64,
    scope: Scope,
    state: RunState,
    from: usize,
}

impl Engine {
    pub fn new(store: Store, reg: Arc<Registry>, clock: SharedClock, max_payload: usize) -> Self {
        Engine { store, reg, clock, max_payload, observers: Arc::new(Vec::new()), cancels: Arc::default(), notifier: None }
    }

    /// Where `notify` nodes send (alerting's outbox).
    pub fn with_notifier(mut self, n: Arc<dyn Notifier>) -> Self {
        self.notifier = Some(n);
        self
    }

    pub fn with_observer(mut self, o: Observer) -> Self {
        Arc::make_mut(&mut self.observers).push(o);
        self
    }

    fn emit(&self, e: Event) {
        for o in self.observers.iter() {
            o(&e);
        }
    }

    /// Runs a flow to a final state.
    pub async fn run(&self, req: RunRequest) -> anyhow::Result<RunOutcome> {
        self.run_until(req, std::future::pending::<()>()).await
    }

    /// Runs a flow; when `cancel` resolves first (or `flowguard runs cancel` asks), the run ends
    /// `cancelled`. A blocked flow refuses the run (recorded as a `refused` run), canaries excepted.
    pub async fn run_until(&self, req: RunRequest, cancel: impl Future<Output = ()>) -> anyhow::Result<RunOutcome> {
        self.start(req, resume::Start::default(), cancel).await
    }

    /// `run_until` with a run id chosen by the caller (the API hands it out before the run
    /// starts), or going on with a run a dead process left `running` (see resume.rs).
    pub async fn start(&self, req: RunRequest, start: resume::Start, cancel: impl Future<Output = ()>) -> anyhow::Result<RunOutcome> {
        let flow = req.flow.clone();
        let run_id = start.run_id.clone().unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
        let mut inputs = flow.inputs.clone();
        inputs.extend(req.inputs);
        if let Some(r) = start.resume {
            self.emit(Event::RunStarted { run_id: run_id.clone(), flow: flow.name.clone() });
            let mut scope = Scope {
                input: to_value(&Json::Object(inputs)),
                run: to_value(&json!({"id": run_id, "flow": flow.name, "trigger": req.trigger})),
                ..Default::default()
            };
            scope.nodes.extend(r.outputs.iter().map(|(k, v)| (k.clone(), to_value(v))));
            let state = RunState { seq: r.seq, outputs: r.outputs, ..Default::default() };
            return self.drive(&flow, Start { run_id, started_at: r.started_at, scope, state, from: r.next_node }, cancel).await;
        }
        let started = self.clock.now_ms();
        if let Some(claim) = start.claimed {
            return self.start_claimed(flow, (req.trigger, req.canary), run_id, inputs, claim, cancel).await;
        }
        let mut record = RunRecord {
            id: run_id.clone(),
            flow: flow.name.clone(),
            flow_hash: flow.hash.clone(),
            trigger: req.trigger.clone(),
            status: RunStatus::Running,
            canary: req.canary,
            inputs: self.payload(&Json::Object(inputs.clone())).0,
            started_at: started,
            ended_at: None,
            duration_ms: None,
            failed_node: None,
            error_kind: None,
            error_message: None,
            severity: None,
        };
        if !req.canary
            && let Some(block) = self.store.flow_block_cached(&flow.name).await?
        {
            let since = block.reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default();
            record.status = RunStatus::Refused;
            record.ended_at = Some(started);
            record.duration_ms = Some(0);
            record.error_message = Some(format!(
                "the flow is blocked (by {}){since}; unblock it with `flowguard flow unblock {}`",
                block.blocked_by, flow.name
            ));
            self.store.insert_run(&record).await?;
            let outcome = RunOutcome {
                run_id,
                flow: flow.name.clone(),
                status: RunStatus::Refused,
                duration_ms: 0,
                failed_node: None,
                error_kind: None,
                error_message: record.error_message,
                severity: None,
                outputs: Map::new(),
            };
            self.emit(Event::RunFinished(outcome.clone()));
            return Ok(outcome);
        }
        self.store.insert_run(&record).await?;
        self.emit(Event::RunStarted { run_id: run_id.clone(), flow: flow.name.clone() });
        let scope = Scope {
            input: to_value(&Json::Object(inputs)),
            run: to_value(&json!({"id": run_id, "flow": flow.name, "trigger": req.trigger})),
            ..Default::default()
        };
        let state = RunState::default();
        let outcome = self.drive(&flow, Start { run_id, started_at: started, scope, state, from: 0 }, cancel).await?;
        if req.canary && outcome.status.is_success() && flow.unblock_on_canary {
            let now = self.clock.now_ms();
            self.store.unblock_flow(&flow.name, "canary", Some(&format!("canary run {} passed", outcome.run_id)), now).await?;
        }
        Ok(outcome)
    }

    /// The row of a run a trigger queues (a worker claims it later), and its inputs whole (with
    /// secrets masked) for the worker, which may be another process.
    pub fn queued_record(&self, req: &RunRequest, run_id: &str) -> (RunRecord, String) {
        let mut inputs = req.flow.inputs.clone();
        inputs.extend(req.inputs.clone());
        let inputs = Json::Object(inputs);
        let record = RunRecord {
            id: run_id.to_owned(),
            flow: req.flow.name.clone(),
            flow_hash: req.flow.hash.clone(),
            trigger: req.trigger.clone(),
            status: RunStatus::Queued,
            canary: req.canary,
            inputs: self.payload(&inputs).0,
            started_at: self.clock.now_ms(),
            ended_at: None,
            duration_ms: None,
            failed_node: None,
            error_kind: None,
            error_message: None,
            severity: None,
        };
        (record, self.full(&inputs))
    }

    /// Runs a queued run this process claimed (its row is `running` under this process's lease);
    /// a flow blocked meanwhile (the claim read it) refuses it.
    async fn start_claimed(
        &self,
        flow: Arc<Flow>,
        (trigger, canary): (String, bool),
        run_id: String,
        inputs: Map<String, Json>,
        claim: resume::Claim,
        cancel: impl Future<Output = ()>,
    ) -> anyhow::Result<RunOutcome> {
        let started = claim.at;
        if !canary
            && claim.blocked
            && let Some(block) = self.store.flow_block(&flow.name).await?
        {
            let message = format!(
                "the flow is blocked (by {}){}; unblock it with `flowguard flow unblock {}`",
                block.blocked_by,
                block.reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default(),
                flow.name
            );
            let end =
                RunEnd { status: Some(RunStatus::Refused), ended_at: started, error_message: Some(message.clone()), ..Default::default() };
            self.store.finish_run(&run_id, &end, &[]).await?;
            let outcome = RunOutcome {
                run_id,
                flow: flow.name.clone(),
                status: RunStatus::Refused,
                duration_ms: 0,
                failed_node: None,
                error_kind: None,
                error_message: Some(message),
                severity: None,
                outputs: Map::new(),
            };
            self.emit(Event::RunFinished(outcome.clone()));
            return Ok(outcome);
        }
        self.emit(Event::RunStarted { run_id: run_id.clone(), flow: flow.name.clone() });
        let scope = Scope {
            input: to_value(&Json::Object(inputs)),
            run: to_value(&json!({"id": run_id, "flow": flow.name, "trigger": trigger})),
            ..Default::default()
        };
        let state = RunState::default();
        let outcome = self.drive(&flow, Start { run_id, started_at: started, scope, state, from: 0 }, cancel).await?;
        if canary && outcome.status.is_success() && flow.unblock_on_canary {
            let now = self.clock.now_ms();
            self.store.unblock_flow(&flow.name, "canary", Some(&format!("canary run {} passed", outcome.run_id)), now).await?;
        }
        Ok(outcome)
    }

    /// Resumes a run from node `from` (or the node after it with `skip_output` as its output),
    /// with the outputs of the nodes before it as they were kept. The same run id goes on.
    pub async fn resume(&self, flow: Arc<Flow>, run_id: &str, from: &str, skip_output: Option<Json>) -> anyhow::Result<RunOutcome> {
        let rec = self.store.get_run(run_id).await?.ok_or_else(|| anyhow!("no run `{run_id}`"))?;
        let mut idx = flow.index_of(from).ok_or_else(|| anyhow!("flow `{}` has no node `{from}`", flow.name))?;
        let inputs: Json = match rec.inputs.as_deref() {
            Some(text) => {
                serde_json::from_str(text).context("the run's stored inputs cannot be read back (they were cut at max_payload_bytes)")?
            }
            None => Json::Object(Map::new()),
        };
        let kept = self.store.outputs(run_id).await?;
        let mut scope = Scope {
            input: to_value(&inputs),
            run: to_value(&json!({"id": run_id, "flow": flow.name, "trigger": rec.trigger})),
            ..Default::default()
        };
        let mut state = RunState { seq: self.store.max_seq(run_id).await?, recovered: true, ..Default::default() };
        for node in &flow.nodes[..idx] {
            if let Some(text) = kept.get(&node.id) {
                let v: Json = serde_json::from_str(text).unwrap_or(Json::String(text.clone()));
                scope.nodes.insert(node.id.clone(), to_value(&v));
                state.outputs.insert(node.id.clone(), v);
            }
        }
        // The operator's process executes the run from here: it takes the lease (bumping the
        // epoch), so a process still holding an older one cannot write over it.
        if self.store.take_over(run_id, rec.status.as_str()).await?.is_none() {
            return Err(anyhow!("run {run_id} is being executed by another process"));
        }
        self.store.reopen_run(run_id).await?;
        if let Some(out) = skip_output {
            let node = &flow.nodes[idx];
            state.seq += 1;
            let now = self.clock.now_ms();
            let current =
                Current { node: node.id.clone(), kind: node.kind.clone(), attempt: 0, iteration: None, started_at: now, model: None };
            let mut rec = self.record(
                &flow,
                run_id,
                state.seq,
                &current,
                now,
                Ok(&Output { value: out.clone(), ..Default::default() }),
                false,
                "manual_skip",
                None,
            );
            rec.status = AttemptStatus::Skipped;
            self.store.record_attempt(&rec, Some(&self.full(&out))).await?;
            scope.nodes.insert(node.id.clone(), to_value(&out));
            state.outputs.insert(node.id.clone(), out);
            idx = node.next.as_deref().and_then(|n| flow.index_of(n)).unwrap_or(idx + 1);
        }
        self.drive(
            &flow,
            Start { run_id: run_id.to_owned(), started_at: rec.started_at, scope, state, from: idx },
            std::future::pending::<()>(),
        )
        .await
    }

    /// Walks the nodes from `start.from` under the run's time limit, then records the end. Lets
    /// go of the run's lease however it ends.
    async fn drive(&self, flow: &Arc<Flow>, start: Start, cancel: impl Future<Output = ()>) -> anyhow::Result<RunOutcome> {
        let run_id = start.run_id.clone();
        let r = self.drive_held(flow, start, cancel).await;
        self.store.release(&run_id);
        r
    }

    async fn drive_held(&self, flow: &Arc<Flow>, start: Start, cancel: impl Future<Output = ()>) -> anyhow::Result<RunOutcome> {
        let Start { run_id, started_at, scope, state, from } = start;
        // Another process took the run over (this one's lease expired): stop without writing.
        let lost = self.store.lost_signal(&run_id);
        let lost = async {
            match &lost {
                Some(l) => l.wait().await,
                None => std::future::pending().await,
            }
        };
        let resumed_at = self.clock.now_ms();
        // The latency warning comes from the engine's own timer, so every way of running warns.
        let watchdog = flow.latency_warning.map(|warn| {
            let (clock, this, run_id, name) = (self.clock.clone(), self.clone(), run_id.clone(), flow.name.clone());
            tokio::spawn(async move {
                clock.until(resumed_at + warn.as_millis() as i64).await;
                this.emit(Event::LatencyWarning { run_id, flow: name, threshold_ms: warn.as_millis() as i64 });
            })
        });
        let requested = self.cancels.register(&run_id, &self.store);
        let state = Mutex::new(state);
        let walk = self.walk(flow, &run_id, scope, &state, from);
        let deadline = async {
            match flow.timeout {
                Some(t) => self.clock.until(resumed_at + t.as_millis() as i64).await,
                None => std::future::pending().await,
            }
        };
        let stop = tokio::select! {
            biased;
            _ = lost => Stop::Lost,
            r = walk => Stop::Walked(r),
            _ = deadline => Stop::TimedOut,
            _ = cancel => Stop::Cancelled,
            _ = requested.notified() => Stop::Cancelled,
        };
        self.cancels.unregister(&run_id);
        if let Some(w) = watchdog {
            w.abort();
        }
        // The records not handed to the store yet go with the run's end, as one write; those
        // handed over already are committed first.
        let mut unsent = state.lock().expect("run state").unsent.take();
        let mut stop = match (self.settle(&run_id, &state).await, stop) {
            (Err(u), Stop::Walked(Walk::Done { .. })) => unrecorded(flow, u),
            (_, stop) => stop,
        };
        let now = self.clock.now_ms();
        let st = state.into_inner().unwrap_or_else(|p| p.into_inner());
        let ending = loop {
            // A walk that ended on a refused write ended because the run was taken over.
            let lost = self.store.lost_signal(&run_id).is_some_and(|l| l.is_set());
            let Some(ending) = self.ending(flow, &run_id, started_at, now, if lost { &Stop::Lost } else { &stop }, &st) else {
                return Err(crate::store::LeaseLost(run_id).into());
            };
            let before = unsent.as_ref().map(|u| u.stmts.clone()).unwrap_or_default();
            let recorded = match &ending.task {
                Some(task) => self.store.park_run(&run_id, before, &ending.end, task).await,
                None => self.store.finish_run_after(&run_id, before, &ending.end, &ending.last).await,
            };
            let lost = self.store.lost_signal(&run_id).is_some_and(|l| l.is_set());
            match (recorded, unsent.take()) {
                (Ok(()), _) => break ending,
                // Refused with the records it carried: they go alone first, to learn whether they
                // were the cause (then the run fails on the node they record), and the end again.
                (Err(_), Some(u)) if !lost => {
                    if let Err(error) = self.store.write_run(&run_id, u.stmts).await
                        && matches!(stop, Stop::Walked(Walk::Done { .. }))
                    {
                        stop = unrecorded(flow, Unrecorded { node: u.from, error });
                    }
                }
                (Err(e), _) => {
                    // The database is away: say how the run ended, since its row cannot.
                    let how = match (&ending.end.failed_node, ending.kind, &ending.end.error_message) {
                        (node, Some(k), Some(m)) => format!(" at `{}` with {k}: {m}", node.as_deref().unwrap_or("-")),
                        _ => String::new(),
                    };
                    return Err(
                        e.context(format!("run {run_id} of `{}` ended {}{how}; recording its end failed", flow.name, ending.status))
                    );
                }
            }
        };
        let Ending { status, end, block, kind, severity, .. } = ending;
        let (failed_node, message) = (end.failed_node, end.error_message);
        if block {
            let reason = format!(
                "{} at `{}`: {}",
                kind.map(|k| k.as_str()).unwrap_or(""),
                failed_node.as_deref().unwrap_or(""),
                message.as_deref().unwrap_or("")
            );
            self.store
                .block_flow(&FlowBlock {
                    flow: flow.name.clone(),
                    blocked_at: now,
                    run_id: Some(run_id.clone()),
                    reason: Some(reason),
                    blocked_by: "flowguard".into(),
                })
                .await?;
        }
        let outcome = RunOutcome {
            run_id,
            flow: flow.name.clone(),
            status,
            duration_ms: now - started_at,
            failed_node,
            error_kind: kind,
            error_message: message,
            severity,
            outputs: st.outputs,
        };
        self.emit(Event::RunFinished(outcome.clone()));
        Ok(outcome)
    }

    /// How a run ended, as its row records it; none for a run taken over (nothing to record).
    fn ending(&self, flow: &Flow, run_id: &str, started_at: i64, now: i64, stop: &Stop, st: &RunState) -> Option<Ending> {
        let mut last = Vec::new();
        let mut block = false;
        let mut park = false;
        let (status, failure): (RunStatus, Option<Failed>) = match stop {
            Stop::Lost => return None,
            Stop::Walked(Walk::Done { handled: None }) => (if st.recovered { RunStatus::Recovered } else { RunStatus::Succeeded }, None),
            Stop::Walked(Walk::Done { handled: Some((node, e)) }) => {
                (RunStatus::Recovered, Some((Some(node.clone()), e.kind, e.message.clone(), None)))
            }
            Stop::Walked(Walk::Failed { node, error, severity, block: b }) => {
                block = *b;
                (RunStatus::Failed, Some((Some(node.clone()), error.kind, error.message.clone(), Some(*severity))))
            }
            Stop::Walked(Walk::Parked { node, error, severity }) => {
                park = true;
                (RunStatus::WaitingManual, Some((Some(node.clone()), error.kind, error.message.clone(), Some(*severity))))
            }
            Stop::TimedOut | Stop::Cancelled => {
                let timed_out = matches!(stop, Stop::TimedOut);
                let (status, kind, msg) = if timed_out {
                    let limit = flow.timeout.map(|t| humantime::format_duration(t).to_string()).unwrap_or_default();
                    (RunStatus::TimedOut, ErrorKind::FlowTimeout, format!("the run exceeded its {limit} limit"))
                } else {
                    (RunStatus::Cancelled, ErrorKind::Cancelled, "the run was cancelled".to_owned())
                };
                if let Some(c) = &st.current {
                    last.push(self.record(flow, run_id, st.seq + 1, c, now, Err(&NodeError::new(kind, msg.clone())), false, "stop", None));
                }
                let severity = timed_out.then(|| policy_severity(flow, None, kind));
                (status, Some((st.current.as_ref().map(|c| c.node.clone()), kind, msg, severity)))
            }
        };
        let (failed_node, kind, message, severity) = match failure {
            Some((n, k, m, s)) => (n, Some(k), Some(self.reg.redactor.redact(&m)), s),
            None => (None, None, None, None),
        };
        let task = park.then(|| ManualTask {
            id: uuid::Uuid::now_v7().to_string(),
            run_id: run_id.to_owned(),
            flow: flow.name.clone(),
            node_id: failed_node.clone().unwrap_or_default(),
            error_kind: kind.map(|k| k.as_str().to_owned()).unwrap_or_default(),
            error_message: message.clone(),
            severity: severity.unwrap_or(Severity::Medium).as_str().to_owned(),
            status: "open".into(),
            created_at: now,
            closed_at: None,
            closed_by: None,
            note: None,
        });
        let end = RunEnd {
            status: Some(status),
            ended_at: now,
            duration_ms: now - started_at,
            failed_node,
            error_kind: kind.map(|k| k.as_str().to_owned()),
            error_message: message,
            severity: severity.map(|s| s.as_str().to_owned()),
        };
        Some(Ending { status, end, last, block, task, kind, severity })
    }

    /// Walks the nodes in file order from `from`, following jumps and applying the error policy.
    async fn walk(&self, flow: &Flow, run_id: &str, mut scope: Scope, state: &Mutex<RunState>, from: usize) -> Walk {
        let mut idx = from;
        let mut repairs: HashMap<String, u32> = HashMap::new();
        let mut handled = None;
        while idx < flow.nodes.len() {
            let node = &flow.nodes[idx];
            let result = match self.node_or_foreach(flow, node, run_id, &mut scope, state).await {
                Ok(out) => Ok(Handled::Output(out)),
                Err(f) => self.handle(flow, node, run_id, &scope, state, f, &mut repairs).await,
            };
            let next = match result {
                Ok(Handled::Output(out)) => {
                    // A foreach node's output is the list of its items' outputs, kept here; other
                    // nodes keep theirs with their attempt.
                    if node.foreach.is_some()
                        && let Err(e) = self.keep_output(run_id, &node.id, &out.value).await
                    {
                        return fail_walk(node, NodeError::new(ErrorKind::Internal, format!("could not record the output: {e:#}")));
                    }
                    if scope.repair.as_ref().and_then(|r| r.get_attr("from").ok()).is_some_and(|f| f.as_str() == Some(node.id.as_str())) {
                        scope.repair = None;
                    }
                    scope.nodes.insert(node.id.clone(), to_value(&out.value));
                    let jump = out.next.clone().or_else(|| node.next.clone());
                    state.lock().expect("run state").outputs.insert(node.id.clone(), out.value);
                    match jump {
                        Some(target) => match flow.index_of(&target) {
                            Some(j) => j,
                            None => {
                                return fail_walk(node, NodeError::new(ErrorKind::Internal, format!("jump to unknown node `{target}`")));
                            }
                        },
                        None => idx + 1,
                    }
                }
                Ok(Handled::Goto { target, failure }) => {
                    scope.error = Some(to_value(&json!({"kind": failure.kind, "message": failure.message, "node": node.id})));
                    handled = Some((node.id.clone(), failure));
                    flow.index_of(&target).unwrap_or(flow.nodes.len())
                }
                Ok(Handled::Repair { target, feedback }) => {
                    scope.repair = Some(to_value(&feedback));
                    match flow.index_of(&target) {
                        Some(j) => {
                            idx = j;
                            continue;
                        }
                        None => {
                            return fail_walk(
                                node,
                                NodeError::new(ErrorKind::Internal, format!("repair target `{target}` is not in the flow")),
                            );
                        }
                    }
                }
                Err(w) => return w,
            };
            for skipped in &flow.nodes[(idx + 1).min(next)..next] {
                if let Err(e) = self.skip(flow, skipped, run_id, state).await {
                    return fail_walk(skipped, NodeError::new(ErrorKind::Internal, e.to_string()));
                }
            }
            idx = next;
        }
        Walk::Done { handled }
    }

    /// Decides what a node's failure leads to, and writes its last attempt with that action.
    #[allow(clippy::too_many_arguments)]
    async fn handle(
        &self,
        flow: &Flow,
        node: &NodeSpec,
        run_id: &str,
        scope: &Scope,
        state: &Mutex<RunState>,
        f: NodeFailure,
        repairs: &mut HashMap<String, u32>,
    ) -> Result<Handled, Walk> {
        let NodeFailure { error, last, .. } = f;
        let (action, severity) = resolve(flow, node, error.kind);
        let write = |action: &str| {
            let mut rec = last.clone();
            if let Some(r) = rec.as_mut() {
                r.action = Some(action.to_owned());
            }
            rec
        };
        match action {
            Action::Fallback(value) => {
                self.write_last(node, state, write("fallback")).await?;
                let ctx = scope.context();
                let value =
                    flow.templates.render_json(&value, &ctx).map_err(|m| fail_walk(node, NodeError::new(ErrorKind::Internal, m)))?;
                let seq = next_seq(state);
                let now = self.clock.now_ms();
                let attempt = last.as_ref().map(|l| l.attempt + 1).unwrap_or(1);
                let current =
                    Current { node: node.id.clone(), kind: node.kind.clone(), attempt, iteration: None, started_at: now, model: None };
                let out = Output { value, ..Default::default() };
                let mut rec = self.record(flow, run_id, seq, &current, now, Ok(&out), false, "continue", None);
                rec.status = AttemptStatus::Defaulted;
                rec.error_kind = Some(error.kind.as_str().to_owned());
                self.write_attempt(&rec, Some(&self.full(&out.value)), state)
                    .await
                    .map_err(|e| fail_walk(node, NodeError::new(ErrorKind::Internal, format!("{e:#}"))))?;
                state.lock().expect("run state").recovered = true;
                Ok(Handled::Output(out))
            }
            Action::Goto(target) => {
                self.write_last(node, state, write("goto")).await?;
                state.lock().expect("run state").recovered = true;
                Ok(Handled::Goto { target, failure: error })
            }
            Action::Repair { target, max } => {
                let Some(target) = target.or_else(|| node.reads.first().cloned()) else {
                    self.write_last(node, state, write("fail")).await?;
                    return Err(Walk::Failed { node: node.id.clone(), error, severity, block: false });
                };
                let count = repairs.entry(node.id.clone()).or_insert(0);
                *count += 1;
                if *count > max {
                    self.write_last(node, state, write("fail")).await?;
                    let e = NodeError::new(
                        ErrorKind::LoopLimit,
                        format!("gave up repairing `{target}` after {max} tries; last: {}", error.message),
                    );
                    let severity = policy_severity(flow, Some(node), ErrorKind::LoopLimit);
                    return Err(Walk::Failed { node: node.id.clone(), error: e, severity, block: false });
                }
                self.write_last(node, state, write("repair")).await?;
                state.lock().expect("run state").recovered = true;
                let violations =
                    error.output.as_ref().and_then(|o| o.get("violations").cloned()).unwrap_or_else(|| json!([{"message": error.message}]));
                let feedback = json!({"node": target, "from": node.id, "attempt": *count, "kind": error.kind, "message": error.message, "violations": violations});
                Ok(Handled::Repair { target, feedback })
            }
            Action::Manual => {
                self.write_last(node, state, write("manual")).await?;
                Err(Walk::Parked { node: node.id.clone(), error, severity })
            }
            Action::Block => {
                self.write_last(node, state, write("block")).await?;
                Err(Walk::Failed { node: node.id.clone(), error, severity, block: true })
            }
            Action::Abort | Action::FallbackModel => {
                self.write_last(node, state, write("fail")).await?;
                Err(Walk::Failed { node: node.id.clone(), error, severity, block: false })
            }
        }
    }

    /// Tells the observers about an attempt and records it (with the node's full output to keep,
    /// if any); returns once it is durable, with every record of the run before it.
    async fn write_attempt(&self, rec: &AttemptRecord, keep: Option<&str>, state: &Mutex<RunState>) -> anyhow::Result<()> {
        self.queue_attempt(rec, keep, state).await?;
        self.settle(&rec.run_id, state).await.map_err(|u| u.error)
    }

    /// [`Engine::write_attempt`] without waiting for the commit (a pure node's record): kept with
    /// the run's other unsent records, handed to the store once [`UNSENT`] wait; waits only when
    /// [`IN_FLIGHT`] writes of the run wait already, for the oldest.
    async fn queue_attempt(&self, rec: &AttemptRecord, keep: Option<&str>, state: &Mutex<RunState>) -> anyhow::Result<()> {
        self.emit(Event::AttemptFinished(Box::new(rec.clone())));
        let stmts = self.store.attempt_stmts(rec, keep);
        let oldest = {
            let mut st = state.lock().expect("run state");
            let u = st.unsent.get_or_insert_with(|| Unsent { from: rec.node_id.clone(), stmts: Vec::new(), records: 0 });
            u.stmts.extend(stmts);
            u.records += 1;
            if u.records < UNSENT {
                return Ok(());
            }
            self.hand_over(&rec.run_id, &mut st)?;
            if st.pending.len() > IN_FLIGHT { st.pending.pop_front() } else { None }
        };
        match oldest {
            Some((_, q)) => q.done(&self.store).await.map_err(|e| anyhow!("could not record the attempt: {e:#}")),
            None => Ok(()),
        }
    }

    /// Hands the run's unsent records to the store, as one write.
    fn hand_over(&self, run_id: &str, st: &mut RunState) -> anyhow::Result<()> {
        let Some(u) = st.unsent.take() else { return Ok(()) };
        let queued = self.store.queue_run(run_id, u.stmts).map_err(|e| anyhow!("could not record the attempt: {e:#}"))?;
        st.pending.push_back((u.from, queued));
        Ok(())
    }

    /// Waits until every record of the run so far is committed; says which was not.
    async fn settle(&self, run_id: &str, state: &Mutex<RunState>) -> Result<(), Unrecorded> {
        let pending = {
            let mut st = state.lock().expect("run state");
            let from = st.unsent.as_ref().map(|u| u.from.clone());
            if let Err(error) = self.hand_over(run_id, &mut st) {
                return Err(Unrecorded { node: from.unwrap_or_default(), error });
            }
            std::mem::take(&mut st.pending)
        };
        let mut first = None;
        for (node, q) in pending {
            if let Err(e) = q.done(&self.store).await {
                first.get_or_insert(Unrecorded { node, error: anyhow!("could not record the attempt: {e:#}") });
            }
        }
        first.map_or(Ok(()), Err)
    }

    async fn write_last(&self, node: &NodeSpec, state: &Mutex<RunState>, rec: Option<AttemptRecord>) -> Result<(), Walk> {
        let Some(rec) = rec else { return Ok(()) };
        self.write_attempt(&rec, None, state).await.map_err(|e| fail_walk(node, NodeError::new(ErrorKind::Internal, format!("{e:#}"))))
    }

    async fn keep_output(&self, run_id: &str, node_id: &str, value: &Json) -> anyhow::Result<()> {
        self.store.write_output(run_id, node_id, &self.full(value)).await
    }

    /// A node's output as kept for resuming: whole, with secrets masked.
    fn full(&self, v: &Json) -> String {
        self.reg.redactor.redact(&v.to_string())
    }

    async fn node_or_foreach(
        &self,
        flow: &Flow,
        node: &NodeSpec,
        run_id: &str,
        scope: &mut Scope,
        state: &Mutex<RunState>,
    ) -> Result<Output, NodeFailure> {
        let Some(list) = &node.foreach else {
            return self.node(flow, node, run_id, scope, None, state).await;
        };
        let items = flow.templates.render(list, &scope.context()).map_err(|m| failure(ErrorKind::Internal, m))?;
        let items = match items {
            Json::Array(a) => a,
            Json::Null => Vec::new(),
            other => return Err(failure(ErrorKind::Internal, format!("`foreach` must give a list, not {}", type_name(&other)))),
        };
        if items.len() > node.max_iterations {
            return Err(failure(
                ErrorKind::LoopLimit,
                format!("`foreach` has {} items, more than max_iterations {}", items.len(), node.max_iterations),
            ));
        }
        let mut outs = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            scope.item = Some((to_value(item), i));
            let out = self.node(flow, node, run_id, scope, Some(i as i64), state).await;
            scope.item = None;
            outs.push(out?.value);
        }
        Ok(Output { value: Json::Array(outs), ..Default::default() })
    }

    /// Runs one node (one item of a foreach) with its retries and model chain.
    async fn node(
        &self,
        flow: &Flow,
        node: &NodeSpec,
        run_id: &str,
        scope: &Scope,
        iteration: Option<i64>,
        state: &Mutex<RunState>,
    ) -> Result<Output, NodeFailure> {
        // Whatever the run recorded so far is committed before a node that reaches outside.
        let pure = node.node.pure() && !node.side_effect;
        if !pure {
            self.settle(run_id, state).await.map_err(|u| failure(ErrorKind::Internal, format!("{:#}", u.error)))?;
        }
        let chain = node.node.model_chain();
        let models: Vec<Option<&str>> = if chain.is_empty() { vec![None] } else { chain.iter().map(|m| Some(m.as_str())).collect() };
        let ctx = scope.context();
        let repair = scope
            .repair
            .as_ref()
            .filter(|r| r.get_attr("node").ok().and_then(|n| n.as_str().map(str::to_owned)).as_deref() == Some(node.id.as_str()));
        let repair = repair.and_then(|r| serde_json::to_value(r).ok());
        let idem = format!("{run_id}:{}{}", node.id, iteration.map(|i| format!(":{i}")).unwrap_or_default());
        let default_policy = RetryPolicy::default();
        let policy = node.retry.as_ref().unwrap_or(&default_policy);
        let mut failures: Vec<String> = Vec::new();
        for (mi, model) in models.iter().enumerate() {
            let mut attempt: u32 = 0;
            loop {
                // A run taken over by another process starts nothing more here.
                if self.store.lost_signal(run_id).is_none_or(|l| l.is_set()) {
                    return Err(failure(ErrorKind::Internal, crate::store::LeaseLost(run_id.to_owned()).to_string()));
                }
                attempt += 1;
                let label = model.map(|m| self.reg.models.get(m).map(|c| c.label()).unwrap_or_else(|| m.to_owned()));
                let admission = match model {
                    Some(m) => self.admit(m, run_id).await,
                    None => Admission::Call,
                };
                if let Admission::Skip { reason } = &admission {
                    // The model's breaker is open: straight to the next model, recorded as such.
                    let now = self.clock.now_ms();
                    let last = mi + 1 == models.len();
                    let current = Current {
                        node: node.id.clone(),
                        kind: node.kind.clone(),
                        attempt: attempt as i64,
                        iteration,
                        started_at: now,
                        model: label.clone(),
                    };
                    let seq = next_seq(state);
                    let action = if last { "fail" } else { "next_model" };
                    let mut rec = self.record(flow, run_id, seq, &current, now, Ok(&Output::default()), false, action, None);
                    rec.status = AttemptStatus::Skipped;
                    rec.output = None;
                    rec.output_bytes = 0;
                    rec.error_message = Some(reason.clone());
                    failures.push(format!("{}: {reason}", label.clone().unwrap_or_default()));
                    if !last {
                        self.write_attempt(&rec, None, state).await.map_err(|e| failure(ErrorKind::Internal, format!("{e:#}")))?;
                        break;
                    }
                    let error =
                        NodeError::new(ErrorKind::NoHealthyModel, format!("no model of the chain is healthy: {}", failures.join("; ")));
                    rec.error_kind = Some(error.kind.as_str().to_owned());
                    return Err(NodeFailure { error, last: Some(rec) });
                }
                let started = self.clock.now_ms();
                let current = Current {
                    node: node.id.clone(),
                    kind: node.kind.clone(),
                    attempt: attempt as i64,
                    iteration,
                    started_at: started,
                    model: label,
                };
                state.lock().expect("run state").current = Some(current.clone());
                self.emit(Event::NodeStarted { run_id: run_id.to_owned(), node: node.id.clone(), attempt, model: current.model.clone() });
                let cx = RunCx {
                    templates: &flow.templates,
                    scope: &ctx,
                    reg: &self.reg,
                    clock: &self.clock,
                    run_id,
                    flow: &flow.name,
                    node_id: &node.id,
                    attempt,
                    side_effect: node.side_effect,
                    idempotency_key: &idem,
                    model: *model,
                    repair: repair.as_ref(),
                    input_bytes: AtomicUsize::new(0),
                    inputs: Mutex::new(Vec::new()),
                    notifier: self.notifier.as_deref(),
                };
                let limit = self.clock.until(started + node.timeout.as_millis() as i64);
                let result = tokio::select! {
                    r = node.node.run(&cx) => r,
                    _ = limit => Err(self.timeout_error(node)),
                };
                let result = result.and_then(|out| match node.expect.iter().find_map(|e| e.check(&out, &flow.templates, &ctx)) {
                    Some(e) => Err(e),
                    None => Ok(out),
                });
                let now = self.clock.now_ms();
                if let Some(m) = model {
                    self.count_call(m, &admission, result.as_ref().map(|_| ()).map_err(|e| e.kind), run_id).await;
                }
                let inputs = std::mem::take(&mut *cx.inputs.lock().expect("inputs"));
                let input = match inputs.len() {
                    0 => None,
                    1 => inputs.into_iter().next(),
                    _ => Some(Json::Array(inputs)),
                };
                let input_bytes = cx.input_bytes.load(std::sync::atomic::Ordering::Relaxed) as i64;
                let seq = next_seq(state);
                state.lock().expect("run state").current = None;
                match result {
                    Ok(out) => {
                        let mut rec = self.record(flow, run_id, seq, &current, now, Ok(&out), false, "continue", input.as_ref());
                        rec.input_bytes = rec.input_bytes.max(input_bytes);
                        self.price(&mut rec, *model);
                        let kept = iteration.is_none().then(|| self.full(&out.value));
                        // A pure node's record commits while the run goes on; any other node's
                        // before it does (README, "When a record is durable").
                        let written = if pure {
                            self.queue_attempt(&rec, kept.as_deref(), state).await
                        } else {
                            self.write_attempt(&rec, kept.as_deref(), state).await
                        };
                        written.map_err(|e| failure(ErrorKind::Internal, format!("{e:#}")))?;
                        if attempt > 1 || mi > 0 {
                            state.lock().expect("run state").recovered = true;
                        }
                        return Ok(out);
                    }
                    Err(e) => {
                        let allowed = RetryPolicy::attempts_for(node.retry.as_ref(), e.kind);
                        let retry = attempt < allowed;
                        // A failure another model may not have walks the chain, by default or by policy.
                        let walks_chain =
                            models.len() > 1 && (switches_model(e.kind) || matches!(resolve(flow, node, e.kind).0, Action::FallbackModel));
                        let switch = !retry && walks_chain && mi + 1 < models.len();
                        let action = if retry {
                            "retry"
                        } else if switch {
                            "next_model"
                        } else {
                            "fail"
                        };
                        let mut rec = self.record(flow, run_id, seq, &current, now, Err(&e), retry, action, input.as_ref());
                        rec.input_bytes = rec.input_bytes.max(input_bytes);
                        self.price(&mut rec, *model);
                        if retry || switch {
                            self.write_attempt(&rec, None, state).await.map_err(|e| failure(ErrorKind::Internal, format!("{e:#}")))?;
                        }
                        if retry {
                            let delay = policy.delay(attempt, fastrand::f64()).max(e.retry_after.unwrap_or_default());
                            self.clock.sleep(delay).await;
                            continue;
                        }
                        failures.push(format!("{}: {} ({})", current.model.clone().unwrap_or_default(), e.kind, e.message));
                        if switch {
                            break;
                        }
                        let error = if walks_chain {
                            NodeError::new(ErrorKind::NoHealthyModel, format!("every model failed: {}", failures.join("; ")))
                        } else {
                            e
                        };
                        rec.error_kind = Some(error.kind.as_str().to_owned());
                        return Err(NodeFailure { error, last: Some(rec) });
                    }
                }
            }
        }
        Err(failure(ErrorKind::Internal, "the node has no model to run on"))
    }

    /// Prices a model call from the tokens it used and the model's `price`.
    fn price(&self, rec: &mut AttemptRecord, model: Option<&str>) {
        if let Some(p) = model.and_then(|m| self.reg.prices.get(m))
            && let Some(cost) = p.cost_nanos(rec.tokens_in, rec.tokens_out)
        {
            rec.cost_nanos = Some(cost);
            rec.currency = Some(p.currency.clone());
        }
    }

    /// Asks the model's breaker whether a call may go; a breaker that cannot be read lets it go.
    async fn admit(&self, model: &str, run_id: &str) -> Admission {
        match self.reg.breakers.admit(&self.store, self.clock.now_ms(), model, run_id).await {
            Ok((a, t)) => {
                if let Some(t) = t {
                    self.emit(Event::Breaker(Box::new(t)));
                }
                a
            }
            Err(e) => {
                tracing::warn!(model, error = %format!("{e:#}"), "could not read the model's breaker; calling it");
                Admission::Call
            }
        }
    }

    /// Counts a call in its model's breaker, which may open or close it.
    async fn count_call(&self, model: &str, admission: &Admission, outcome: Result<(), ErrorKind>, run_id: &str) {
        let now = self.clock.now_ms();
        match self.reg.breakers.record(&self.store, now, model, admission, outcome, run_id).await {
            Ok(Some(t)) => self.emit(Event::Breaker(Box::new(t))),
            Ok(None) => {}
            Err(e) => tracing::warn!(model, error = %format!("{e:#}"), "could not count the call in the model's breaker"),
        }
    }

    fn timeout_error(&self, node: &NodeSpec) -> NodeError {
        let limit = humantime::format_duration(node.timeout);
        if node.side_effect && !node.idempotent {
            NodeError::new(
                ErrorKind::PublishAmbiguous,
                format!(
                    "no answer within {limit}; the call may have taken effect and its target does not honour idempotency keys, so it is not retried"
                ),
            )
        } else {
            NodeError::new(ErrorKind::Timeout, format!("no answer within {limit}"))
        }
    }

    async fn skip(&self, flow: &Flow, node: &NodeSpec, run_id: &str, state: &Mutex<RunState>) -> anyhow::Result<()> {
        let seq = next_seq(state);
        let now = self.clock.now_ms();
        let current = Current { node: node.id.clone(), kind: node.kind.clone(), attempt: 0, iteration: None, started_at: now, model: None };
        let mut rec = self.record(flow, run_id, seq, &current, now, Ok(&Output::default()), false, "skip", None);
        rec.status = AttemptStatus::Skipped;
        rec.output = None;
        rec.output_bytes = 0;
        self.write_attempt(&rec, None, state).await
    }

    /// Builds the stored record of an attempt: payloads redacted, then truncated.
    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        flow: &Flow,
        run_id: &str,
        seq: i64,
        c: &Current,
        now: i64,
        result: Result<&Output, &NodeError>,
        retried: bool,
        action: &str,
        input: Option<&Json>,
    ) -> AttemptRecord {
        let (status, meta, output, kind, message): (_, Meta, Option<&Json>, _, _) = match result {
            Ok(o) => (AttemptStatus::Succeeded, o.meta.clone(), Some(&o.value), None, None),
            Err(e) => {
                let status = if matches!(e.kind, ErrorKind::Timeout | ErrorKind::PublishAmbiguous | ErrorKind::FlowTimeout) {
                    AttemptStatus::TimedOut
                } else {
                    AttemptStatus::Failed
                };
                (status, e.meta.clone(), e.output.as_ref(), Some(e.kind.as_str().to_owned()), Some(self.reg.redactor.redact(&e.message)))
            }
        };
        let (output_text, output_bytes) = output.map(|o| self.payload(o)).unwrap_or((None, 0));
        let (input_text, input_bytes) = input.map(|i| self.payload(i)).unwrap_or((None, 0));
        AttemptRecord {
            run_id: run_id.to_owned(),
            flow: flow.name.clone(),
            node_id: c.node.clone(),
            kind: c.kind.clone(),
            seq,
            attempt: c.attempt,
            iteration: c.iteration,
            status,
            started_at: c.started_at,
            ended_at: now,
            duration_ms: now - c.started_at,
            input_bytes,
            output_bytes,
            input: input_text,
            output: output_text,
            retried,
            action: Some(action.to_owned()),
            error_kind: kind,
            error_message: message,
            // One label per model (`provider:model` as configured), whether the attempt succeeded,
            // failed with the provider's answer or timed out without one.
            model: c.model.clone().or(meta.model),
            tokens_in: meta.tokens_in,
            tokens_out: meta.tokens_out,
            http_status: meta.http_status.map(i64::from),
            cost_nanos: None,
            currency: None,
        }
    }

    /// A payload as stored: redacted, cut at `max_payload` bytes; and its full size.
    fn payload(&self, v: &Json) -> (Option<String>, i64) {
        let full = match v {
            Json::String(s) => s.clone(),
            other => other.to_string(),
        };
        let size = json_len(v) as i64;
        let mut text = self.reg.redactor.redact(&full);
        if text.len() > self.max_payload {
            let mut cut = self.max_payload;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
            text.push_str("…[truncated]");
        }
        (Some(text), size)
    }
}

/// Where a run failed: node, kind, message, severity.
type Failed = (Option<String>, ErrorKind, String, Option<Severity>);

/// What a handled failure turns into.
enum Handled {
    Output(Output),
    Goto { target: String, failure: NodeError },
    Repair { target: String, feedback: Json },
}

fn next_seq(state: &Mutex<RunState>) -> i64 {
    let mut st = state.lock().expect("run state");
    st.seq += 1;
    st.seq
}

/// The action and severity for a failure of `kind` at `node` (node `on_error`, node policy, flow
/// policy, built-in table).
pub fn resolve(flow: &Flow, node: &NodeSpec, kind: ErrorKind) -> (Action, Severity) {
    let severity = policy_severity(flow, Some(node), kind);
    if let Some(on) = &node.on_error
        && on.on.as_ref().is_none_or(|kinds| kinds.contains(&kind))
    {
        return (on.action.clone(), severity);
    }
    let action = node
        .policy
        .get(&kind)
        .and_then(|p| p.action.clone())
        .or_else(|| flow.policy.get(&kind).and_then(|p| p.action.clone()))
        .unwrap_or_else(|| policy::default_action(kind, node.default.as_ref()));
    (action, severity)
}

pub fn policy_severity(flow: &Flow, node: Option<&NodeSpec>, kind: ErrorKind) -> Severity {
    node.and_then(|n| n.policy.get(&kind))
        .and_then(|p| p.severity)
        .or_else(|| flow.policy.get(&kind).and_then(|p| p.severity))
        .unwrap_or_else(|| kind.default_severity())
}

/// Failures that another model may not have: the llm node moves on to its next model.
pub fn switches_model(kind: ErrorKind) -> bool {
    use ErrorKind::*;
    matches!(
        kind,
        GenerationEmpty
            | GenerationMalformed
            | RateLimited
            | Upstream5xx
            | Network
            | Timeout
            | AuthExpired
            | QuotaExhausted
            | ContentBlocked
            | Upstream4xx
    )
}

fn failure(kind: ErrorKind, message: impl Into<String>) -> NodeFailure {
    NodeFailure { error: NodeError::new(kind, message), last: None }
}

fn fail_walk(node: &NodeSpec, error: NodeError) -> Walk {
    Walk::Failed { node: node.id.clone(), severity: error.kind.default_severity(), error, block: false }
}

fn type_name(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "a list",
        Json::Object(_) => "a mapping",
    }
}
