//! The engine: runs a flow to a final state with guards on every node — time limits, retries with
//! backoff, the model fallback chain — classifying every failure into one error kind and writing
//! every attempt to the store as it happens.
//!
//! Precedence on a failing node (DESIGN.md §4): the node's `retry`, else the built-in table for the
//! kind; when retries are spent, an llm node moves to the next model of its chain; when nothing is
//! left, the run fails with the kind (or `no_healthy_model` when a chain of models was spent).

pub mod events;
pub mod resume;

pub use events::{Event, Observer};

use crate::clock::SharedClock;
use crate::flow::template::{Scope, to_value};
use crate::flow::{Flow, NodeSpec, RetryPolicy};
use crate::nodes::{Meta, NodeError, Output, Registry, RunCx, json_len};
use crate::store::{AttemptRecord, RunEnd, RunRecord, Store};
use crate::vocab::{AttemptStatus, ErrorKind, RunStatus};
use serde_json::{Map, Value as Json, json};
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
}

/// What to run.
#[derive(Debug, Clone)]
pub struct RunRequest {
    pub flow: Arc<Flow>,
    pub inputs: Map<String, Json>,
    /// `cli`, `demo`, `cron`, `api`, `canary`.
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
    /// Each finished node's output, by id.
    pub outputs: Map<String, Json>,
}

/// Why a node failed for good.
struct NodeFailure {
    node: String,
    error: NodeError,
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

struct RunState {
    seq: i64,
    recovered: bool,
    current: Option<Current>,
    outputs: Map<String, Json>,
}

/// How a run was stopped from outside its nodes.
enum Stop {
    Done(Result<(), NodeFailure>),
    TimedOut,
    Cancelled,
}

impl Engine {
    pub fn new(store: Store, reg: Arc<Registry>, clock: SharedClock, max_payload: usize) -> Self {
        Engine { store, reg, clock, max_payload, observers: Arc::new(Vec::new()) }
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

    /// Runs a flow; when `cancel` resolves first, the run ends `cancelled`.
    pub async fn run_until(&self, req: RunRequest, cancel: impl Future<Output = ()>) -> anyhow::Result<RunOutcome> {
        self.start(req, resume::Start::default(), cancel).await
    }

    /// `run_until` with a run id chosen by the caller, or going on with a run already recorded
    /// (see resume.rs).
    pub async fn start(&self, req: RunRequest, start: resume::Start, cancel: impl Future<Output = ()>) -> anyhow::Result<RunOutcome> {
        let flow = req.flow.clone();
        let run_id = start.run_id.clone().unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
        let started = start.resume.as_ref().map(|r| r.started_at).unwrap_or_else(|| self.clock.now_ms());
        let mut inputs = flow.inputs.clone();
        inputs.extend(req.inputs);
        let inputs_text = self.payload(&Json::Object(inputs.clone())).0;
        if start.resume.is_none() {
            self.store
                .insert_run(&RunRecord {
                    id: run_id.clone(),
                    flow: flow.name.clone(),
                    flow_hash: flow.hash.clone(),
                    trigger: req.trigger.clone(),
                    status: RunStatus::Running,
                    canary: req.canary,
                    inputs: inputs_text,
                    started_at: started,
                    ended_at: None,
                    duration_ms: None,
                    failed_node: None,
                    error_kind: None,
                    error_message: None,
                    severity: None,
                })
                .await?;
        }
        self.emit(Event::RunStarted { run_id: run_id.clone(), flow: flow.name.clone() });

        let (seq, outputs, first) = start.resume.map(|r| (r.seq, r.outputs, r.next_node)).unwrap_or_default();
        let mut scope = Scope {
            input: to_value(&Json::Object(inputs)),
            run: to_value(&json!({"id": run_id, "flow": flow.name, "trigger": req.trigger})),
            ..Default::default()
        };
        scope.nodes.extend(outputs.iter().map(|(k, v)| (k.clone(), to_value(v))));
        let state = Mutex::new(RunState { seq, recovered: false, current: None, outputs });

        // The latency warning comes from the engine's own timer, so every way of running warns.
        let watchdog = flow.latency_warning.map(|warn| {
            let (clock, this, run_id, name) = (self.clock.clone(), self.clone(), run_id.clone(), flow.name.clone());
            tokio::spawn(async move {
                clock.until(started + warn.as_millis() as i64).await;
                this.emit(Event::LatencyWarning { run_id, flow: name, threshold_ms: warn.as_millis() as i64 });
            })
        });

        let body = self.nodes(&flow, &run_id, scope, &state, first);
        let deadline = async {
            match flow.timeout {
                Some(t) => self.clock.until(started + t.as_millis() as i64).await,
                None => std::future::pending().await,
            }
        };
        let stop = tokio::select! {
            r = body => Stop::Done(r),
            _ = deadline => Stop::TimedOut,
            _ = cancel => Stop::Cancelled,
        };
        if let Some(w) = watchdog {
            w.abort();
        }

        let now = self.clock.now_ms();
        let st = state.into_inner().unwrap_or_else(|p| p.into_inner());
        let mut last = Vec::new();
        let (status, failure) = match stop {
            Stop::Done(Ok(())) => (if st.recovered { RunStatus::Recovered } else { RunStatus::Succeeded }, None),
            Stop::Done(Err(f)) => (RunStatus::Failed, Some((Some(f.node), f.error.kind, f.error.message))),
            Stop::TimedOut | Stop::Cancelled => {
                let (status, kind, msg) = match stop {
                    Stop::TimedOut => {
                        let limit = flow.timeout.map(|t| humantime::format_duration(t).to_string()).unwrap_or_default();
                        (RunStatus::TimedOut, ErrorKind::FlowTimeout, format!("the run exceeded its {limit} limit"))
                    }
                    _ => (RunStatus::Cancelled, ErrorKind::Cancelled, "the run was cancelled".to_owned()),
                };
                if let Some(c) = &st.current {
                    last.push(self.record(
                        &flow,
                        &run_id,
                        st.seq + 1,
                        c,
                        now,
                        Err(&NodeError::new(kind, msg.clone())),
                        false,
                        "stop",
                        None,
                    ));
                }
                (status, Some((st.current.as_ref().map(|c| c.node.clone()), kind, msg)))
            }
        };
        let (failed_node, kind, message) = match failure {
            Some((n, k, m)) => (n, Some(k), Some(self.reg.redactor.redact(&m))),
            None => (None, None, None),
        };
        let end = RunEnd {
            status: Some(status),
            ended_at: now,
            duration_ms: now - started,
            failed_node: failed_node.clone(),
            error_kind: kind.map(|k| k.as_str().to_owned()),
            error_message: message.clone(),
            severity: kind.filter(|k| *k != ErrorKind::Cancelled).map(|k| k.default_severity().as_str().to_owned()),
        };
        self.store.finish_run(&run_id, &end, &last).await?;
        let outcome = RunOutcome {
            run_id,
            flow: flow.name.clone(),
            status,
            duration_ms: now - started,
            failed_node,
            error_kind: kind,
            error_message: message,
            outputs: st.outputs,
        };
        self.emit(Event::RunFinished(outcome.clone()));
        Ok(outcome)
    }

    /// Walks the nodes in file order, following jumps.
    async fn nodes(&self, flow: &Flow, run_id: &str, mut scope: Scope, state: &Mutex<RunState>, first: usize) -> Result<(), NodeFailure> {
        let mut idx = first;
        while idx < flow.nodes.len() {
            let node = &flow.nodes[idx];
            let value = match &node.foreach {
                None => self.node(flow, node, run_id, &scope, None, state).await?,
                Some(list) => {
                    let items = flow.templates.render(list, &scope.context()).map_err(|m| fail(node, ErrorKind::Internal, m))?;
                    let items = match items {
                        Json::Array(a) => a,
                        Json::Null => Vec::new(),
                        other => {
                            return Err(fail(node, ErrorKind::Internal, format!("`foreach` must give a list, not {}", type_name(&other))));
                        }
                    };
                    if items.len() > node.max_iterations {
                        return Err(fail(
                            node,
                            ErrorKind::LoopLimit,
                            format!("`foreach` has {} items, more than max_iterations {}", items.len(), node.max_iterations),
                        ));
                    }
                    let mut outs = Vec::with_capacity(items.len());
                    for (i, item) in items.iter().enumerate() {
                        scope.item = Some((to_value(item), i));
                        let out = self.node(flow, node, run_id, &scope, Some(i as i64), state).await?;
                        outs.push(out.value);
                    }
                    scope.item = None;
                    Output { value: Json::Array(outs), ..Default::default() }
                }
            };
            scope.nodes.insert(node.id.clone(), to_value(&value.value));
            let jump = value.next.clone().or_else(|| node.next.clone());
            state.lock().expect("run state").outputs.insert(node.id.clone(), value.value);
            let next = match jump {
                Some(target) => {
                    flow.index_of(&target).ok_or_else(|| fail(node, ErrorKind::Internal, format!("jump to unknown node `{target}`")))?
                }
                None => idx + 1,
            };
            for skipped in &flow.nodes[(idx + 1).min(next)..next] {
                self.skip(flow, skipped, run_id, state).await.map_err(|e| fail(skipped, ErrorKind::Internal, e.to_string()))?;
            }
            idx = next;
        }
        Ok(())
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
        let chain = node.node.model_chain();
        let models: Vec<Option<&str>> = if chain.is_empty() { vec![None] } else { chain.iter().map(|m| Some(m.as_str())).collect() };
        let ctx = scope.context();
        let idem = format!("{run_id}:{}{}", node.id, iteration.map(|i| format!(":{i}")).unwrap_or_default());
        let default_policy = RetryPolicy::default();
        let policy = node.retry.as_ref().unwrap_or(&default_policy);
        let mut failures: Vec<String> = Vec::new();
        for (mi, model) in models.iter().enumerate() {
            let mut attempt: u32 = 0;
            loop {
                attempt += 1;
                let started = self.clock.now_ms();
                let current = Current {
                    node: node.id.clone(),
                    kind: node.kind.clone(),
                    attempt: attempt as i64,
                    iteration,
                    started_at: started,
                    model: model.map(|m| self.reg.models.get(m).map(|c| c.label()).unwrap_or_else(|| m.to_owned())),
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
                    input_bytes: AtomicUsize::new(0),
                    inputs: Mutex::new(Vec::new()),
                };
                let limit = self.clock.until(started + node.timeout.as_millis() as i64);
                let result = tokio::select! {
                    r = node.node.run(&cx) => r,
                    _ = limit => Err(self.timeout_error(node)),
                };
                let now = self.clock.now_ms();
                let inputs = std::mem::take(&mut *cx.inputs.lock().expect("inputs"));
                let input = match inputs.len() {
                    0 => None,
                    1 => inputs.into_iter().next(),
                    _ => Some(Json::Array(inputs)),
                };
                let input_bytes = cx.input_bytes.load(std::sync::atomic::Ordering::Relaxed) as i64;
                let seq = {
                    let mut st = state.lock().expect("run state");
                    st.seq += 1;
                    st.current = None;
                    st.seq
                };
                match result {
                    Ok(out) => {
                        let rec = self
                            .record(flow, run_id, seq, &current, now, Ok(&out), false, "continue", input.as_ref())
                            .with_input_bytes(input_bytes);
                        self.write_attempt(node, rec).await?;
                        if attempt > 1 || mi > 0 {
                            state.lock().expect("run state").recovered = true;
                        }
                        return Ok(out);
                    }
                    Err(e) => {
                        let allowed = RetryPolicy::attempts_for(node.retry.as_ref(), e.kind);
                        let retry = attempt < allowed;
                        let switch = !retry && mi + 1 < models.len() && switches_model(e.kind);
                        let action = if retry {
                            "retry"
                        } else if switch {
                            "next_model"
                        } else {
                            "fail"
                        };
                        let rec = self
                            .record(flow, run_id, seq, &current, now, Err(&e), retry, action, input.as_ref())
                            .with_input_bytes(input_bytes);
                        self.write_attempt(node, rec).await?;
                        if retry {
                            let delay = policy.delay(attempt, fastrand::f64()).max(e.retry_after.unwrap_or_default());
                            self.clock.sleep(delay).await;
                            continue;
                        }
                        failures.push(format!("{}: {} ({})", current.model.clone().unwrap_or_default(), e.kind, e.message));
                        if switch {
                            break;
                        }
                        let error = if models.len() > 1 && switches_model(e.kind) {
                            NodeError::new(ErrorKind::NoHealthyModel, format!("every model failed: {}", failures.join("; ")))
                        } else {
                            e
                        };
                        return Err(NodeFailure { node: node.id.clone(), error });
                    }
                }
            }
        }
        Err(fail(node, ErrorKind::Internal, "the node has no model to run on"))
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

    async fn write_attempt(&self, node: &NodeSpec, rec: AttemptRecord) -> Result<(), NodeFailure> {
        self.emit(Event::AttemptFinished(Box::new(rec.clone())));
        self.store.insert_attempt(&rec).await.map_err(|e| fail(node, ErrorKind::Internal, format!("could not record the attempt: {e:#}")))
    }

    async fn skip(&self, flow: &Flow, node: &NodeSpec, run_id: &str, state: &Mutex<RunState>) -> anyhow::Result<()> {
        let seq = {
            let mut st = state.lock().expect("run state");
            st.seq += 1;
            st.seq
        };
        let now = self.clock.now_ms();
        let current = Current { node: node.id.clone(), kind: node.kind.clone(), attempt: 0, iteration: None, started_at: now, model: None };
        let mut rec = self.record(flow, run_id, seq, &current, now, Ok(&Output::default()), false, "skip", None);
        rec.status = AttemptStatus::Skipped;
        rec.output = None;
        rec.output_bytes = 0;
        self.emit(Event::AttemptFinished(Box::new(rec.clone())));
        self.store.insert_attempt(&rec).await
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
            model: meta.model.or_else(|| c.model.clone()),
            tokens_in: meta.tokens_in,
            tokens_out: meta.tokens_out,
            http_status: meta.http_status.map(i64::from),
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

trait WithInputBytes {
    fn with_input_bytes(self, n: i64) -> Self;
}

impl WithInputBytes for AttemptRecord {
    fn with_input_bytes(mut self, n: i64) -> Self {
        self.input_bytes = self.input_bytes.max(n);
        self
    }
}

/// Failures that another model may not have: the llm node moves on to its next model.
fn switches_model(kind: ErrorKind) -> bool {
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

fn fail(node: &NodeSpec, kind: ErrorKind, message: impl Into<String>) -> NodeFailure {
    NodeFailure { node: node.id.clone(), error: NodeError::new(kind, message) }
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
