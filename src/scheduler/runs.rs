//! Starting runs in the background for the scheduler and the API, within the limits: runs per flow
//! (`concurrency:` in the flow file) and an overlap policy for scheduled fires. Also the two ends
//! of a process's life: at start, runs a dead process left `running` are resumed or marked
//! `interrupted` (the flow's `on_interrupt`); at shutdown, running runs get a grace period.

use crate::engine::resume::{self, Start};
use crate::engine::{Engine, RunRequest};
use crate::flow::Flow;
use crate::flow::schedule::{OnInterrupt, Overlap};
use crate::store::Store;
use crate::vocab::RunStatus;
use serde_json::{Map, Value as Json};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

/// What to start.
#[derive(Debug, Clone)]
pub struct Launch {
    pub flow: Arc<Flow>,
    pub inputs: Map<String, Json>,
    /// `api`, `cron`, `canary`, `resume`.
    pub trigger: String,
    pub canary: bool,
    /// For scheduled fires; API triggers always start (within the flow's concurrency).
    pub overlap: Option<Overlap>,
}

#[derive(Clone)]
struct FlowLimits {
    concurrency: Option<usize>,
    limit: Option<Arc<Semaphore>>,
    serial: Arc<Semaphore>,
}

struct Active {
    flow: String,
    canary: bool,
    on_interrupt: OnInterrupt,
    handle: Option<JoinHandle<()>>,
    queued: bool,
}

/// Runs this process started and that have not finished.
#[derive(Default)]
pub struct Runs {
    active: Mutex<HashMap<String, Active>>,
    /// Per flow: its `concurrency` limit, and one permit for `overlap: queue`.
    limits: Mutex<HashMap<String, FlowLimits>>,
    /// Runs finished by this process, for `/api/v1/health` and tests.
    finished: Mutex<BTreeMap<String, RunStatus>>,
    done: tokio::sync::Notify,
}

/// Called with every finished run (canaries: the failure hook lives in the scheduler).
pub type OnFinish = Arc<dyn Fn(&Launch, &crate::engine::RunOutcome) + Send + Sync>;

impl Runs {
    fn limits(&self, flow: &Flow) -> FlowLimits {
        let mut l = self.limits.lock().expect("limits");
        let want = flow.serve.concurrency;
        let e = l.entry(flow.name.clone()).or_insert_with(|| FlowLimits {
            concurrency: want,
            limit: want.map(|n| Arc::new(Semaphore::new(n))),
            serial: Arc::new(Semaphore::new(1)),
        });
        // A reload may change the limit; runs holding permits of the old one keep them.
        if e.concurrency != want {
            e.concurrency = want;
            e.limit = want.map(|n| Arc::new(Semaphore::new(n)));
        }
        e.clone()
    }

    /// Runs of `flow` started here and not finished (queued ones included).
    pub fn active_count(&self, flow: &str) -> usize {
        self.active.lock().expect("active").values().filter(|a| a.flow == flow).count()
    }

    pub fn is_queued(&self, run_id: &str) -> bool {
        self.active.lock().expect("active").get(run_id).is_some_and(|a| a.queued)
    }

    pub fn total_active(&self) -> usize {
        self.active.lock().expect("active").len()
    }

    pub fn finished_status(&self, run_id: &str) -> Option<RunStatus> {
        self.finished.lock().expect("finished").get(run_id).copied()
    }

    /// Starts a run in the background and returns its id at once; `None` when the overlap policy
    /// skips it.
    pub fn launch(self: &Arc<Self>, engine: Engine, l: Launch, start: Start, on_finish: OnFinish) -> Option<String> {
        // Canaries and business runs do not hold each other up.
        let same_kind = self.active.lock().expect("active").values().filter(|a| a.flow == l.flow.name && a.canary == l.canary).count();
        if l.overlap == Some(Overlap::Skip) && same_kind > 0 {
            tracing::info!(flow = %l.flow.name, trigger = %l.trigger, "skipped: the previous run is still going (overlap: skip)");
            return None;
        }
        let run_id = start.run_id.clone().unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
        let FlowLimits { limit, serial, .. } = self.limits(&l.flow);
        let this = self.clone();
        let id = run_id.clone();
        // Registered before the task starts, so the id is known (as queued) the moment it is returned.
        self.active.lock().expect("active").insert(
            run_id.clone(),
            Active { flow: l.flow.name.clone(), canary: l.canary, on_interrupt: l.flow.serve.on_interrupt, handle: None, queued: true },
        );
        let handle = tokio::spawn(async move {
            let _serial = match l.overlap {
                Some(Overlap::Queue) => serial.acquire_owned().await.ok(),
                _ => None,
            };
            let _permit = match limit {
                Some(s) => s.acquire_owned().await.ok(),
                None => None,
            };
            if let Some(a) = this.active.lock().expect("active").get_mut(&id) {
                a.queued = false;
            }
            let req = RunRequest { flow: l.flow.clone(), inputs: l.inputs.clone(), trigger: l.trigger.clone(), canary: l.canary };
            let start = Start { run_id: Some(id.clone()), ..start };
            match engine.start(req, start, std::future::pending::<()>()).await {
                Ok(outcome) => {
                    this.finished.lock().expect("finished").insert(id.clone(), outcome.status);
                    on_finish(&l, &outcome);
                }
                Err(e) => tracing::error!(run_id = %id, flow = %l.flow.name, error = %format!("{e:#}"), "the run could not be recorded"),
            }
            this.active.lock().expect("active").remove(&id);
            this.done.notify_waiters();
        });
        if let Some(a) = self.active.lock().expect("active").get_mut(&run_id) {
            a.handle = Some(handle);
        }
        Some(run_id)
    }

    /// Waits up to `grace` for running runs to finish; the rest are stopped. A stopped run of a
    /// flow with `on_interrupt: resume` stays `running` (its completed nodes are its checkpoint)
    /// and goes on at the next start; the others are recorded `interrupted`.
    pub async fn drain(&self, grace: Duration, store: &Store, now_ms: impl Fn() -> i64) -> usize {
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            let notified = self.done.notified();
            if self.total_active() == 0 {
                return 0;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                break;
            }
        }
        let left: Vec<(String, Active)> = self.active.lock().expect("active").drain().collect();
        for (id, a) in &left {
            if let Some(h) = &a.handle {
                h.abort();
            }
            if a.on_interrupt == OnInterrupt::Fail
                && let Ok(Some(run)) = store.get_run(id).await
                && run.status == RunStatus::Running
            {
                let msg = "flowguard was stopped before the run finished (shutdown grace period over)";
                if let Err(e) = store.mark_interrupted(&run, now_ms(), msg).await {
                    tracing::error!(run_id = %id, error = %format!("{e:#}"), "could not record the interrupted run");
                }
            }
        }
        left.len()
    }
}

/// What recovery did with one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recovered {
    Resumed(String),
    Interrupted(String, String),
}

/// Runs left `running` by a process that died before `before_ms`: each resumes from its last
/// completed node when its flow says `on_interrupt: resume` and it can, else it is recorded
/// `interrupted`.
pub async fn recover(
    runs: &Arc<Runs>,
    engine: &Engine,
    flows: &BTreeMap<String, Arc<Flow>>,
    before_ms: i64,
    on_finish: OnFinish,
) -> anyhow::Result<Vec<Recovered>> {
    let store = &engine.store;
    let mut out = Vec::new();
    for run in store.running_runs(before_ms).await? {
        let flow = flows.get(&run.flow);
        let plan = match flow {
            None => Err(format!("the flow `{}` is no longer configured", run.flow)),
            Some(f) if f.serve.on_interrupt == OnInterrupt::Fail => Err("the flow's on_interrupt is `fail`".to_owned()),
            Some(f) => {
                let attempts = store.attempts(&run.id).await?;
                let kept = store.outputs(&run.id).await?;
                resume::plan(f, &run, &attempts, &kept)
            }
        };
        match (flow, plan) {
            (Some(f), Ok((start, inputs))) => {
                tracing::warn!(run_id = %run.id, flow = %run.flow, "resuming a run interrupted by a stopped process");
                let l = Launch { flow: f.clone(), inputs, trigger: run.trigger.clone(), canary: run.canary, overlap: None };
                runs.launch(engine.clone(), l, start, on_finish.clone());
                out.push(Recovered::Resumed(run.id.clone()));
            }
            (_, plan) => {
                let why = plan.err().unwrap_or_default();
                tracing::warn!(run_id = %run.id, flow = %run.flow, reason = %why, "a run interrupted by a stopped process is recorded interrupted");
                let msg = format!("the process running this flow stopped before the run finished; not resumed: {why}");
                store.mark_interrupted(&run, engine.clock.now_ms(), &msg).await?;
                out.push(Recovered::Interrupted(run.id.clone(), why));
            }
        }
    }
    Ok(out)
}
