//! Runs in the background for the scheduler and the API, through the queue in the database:
//! [`Runs::queue`] inserts a `queued` run; [`Runs::work`] claims queued runs (this process's or
//! another's) within the flows' limits — `concurrency:` and `overlap:` hold across all workers,
//! since the claim counts the flow's leased running runs — and executes them under their lease.
//! Also the two ends of a run's life elsewhere: runs whose lease expired (their process died) are
//! resumed or marked `interrupted` (the flow's `on_interrupt`), and at shutdown running runs get a
//! grace period.

use crate::engine::resume::{self, Claim, Start};
use crate::engine::{Engine, RunRequest};
use crate::flow::Flow;
use crate::flow::schedule::{OnInterrupt, Overlap};
use crate::store::{Claimed, LeaseLost, Store};
use crate::vocab::RunStatus;
use serde_json::{Map, Value as Json};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
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

struct Active {
    flow: String,
    on_interrupt: OnInterrupt,
    handle: Option<JoinHandle<()>>,
}

/// Runs this process is executing.
pub struct Runs {
    active: Mutex<HashMap<String, Active>>,
    /// Runs finished by this process, for `/api/v1/health` and tests.
    finished: Mutex<BTreeMap<String, RunStatus>>,
    done: tokio::sync::Notify,
    /// Wakes the worker: a run was queued, or one ended here.
    wake: tokio::sync::Notify,
    /// Most runs this process executes at once.
    capacity: usize,
}

impl Default for Runs {
    fn default() -> Self {
        Runs::with_capacity(256)
    }
}

/// Called with every finished run (canaries: the failure hook lives in the scheduler).
pub type OnFinish = Arc<dyn Fn(&Launch, &crate::engine::RunOutcome) + Send + Sync>;

impl Runs {
    /// At most `capacity` runs executed here at once.
    pub fn with_capacity(capacity: usize) -> Runs {
        Runs { active: Default::default(), finished: Default::default(), done: Default::default(), wake: Default::default(), capacity }
    }

    /// Runs of `flow` this process is executing.
    pub fn active_count(&self, flow: &str) -> usize {
        self.active.lock().expect("active").values().filter(|a| a.flow == flow).count()
    }

    pub fn total_active(&self) -> usize {
        self.active.lock().expect("active").len()
    }

    pub fn finished_status(&self, run_id: &str) -> Option<RunStatus> {
        self.finished.lock().expect("finished").get(run_id).copied()
    }

    /// Lists a run this process executes.
    fn track(&self, run_id: &str, flow: &Flow) {
        let a = Active { flow: flow.name.clone(), on_interrupt: flow.serve.on_interrupt, handle: None };
        self.active.lock().expect("active").insert(run_id.to_owned(), a);
    }

    /// The run ended here: a drain waiting on it goes on at once.
    fn forget(&self, run_id: &str) {
        self.active.lock().expect("active").remove(run_id);
        self.done.notify_waiters();
    }

    /// Queues a run and returns once its row is committed (so an id handed out is never lost);
    /// false when the overlap policy skips it. `fire`: the scheduler fire (job, scheduled time)
    /// whose run it is, recorded in the same transaction ([`Store::enqueue_fire`]), or alone when
    /// the run is skipped; then also false when another process recorded the fire first.
    pub async fn queue(&self, engine: &Engine, l: &Launch, run_id: &str, fire: Option<(&str, i64)>) -> anyhow::Result<bool> {
        let store = &engine.store;
        // Canaries and business runs do not hold each other up.
        if l.overlap == Some(Overlap::Skip) && store.pending_runs(&l.flow.name, l.canary).await? > 0 {
            // Said by the one process that records the fire.
            if let Some((job, at_ms)) = fire
                && !store.fire_once(job, at_ms).await?
            {
                return Ok(false);
            }
            tracing::info!(flow = %l.flow.name, trigger = %l.trigger, "skipped: the previous run is still going (overlap: skip)");
            return Ok(false);
        }
        let req = RunRequest { flow: l.flow.clone(), inputs: l.inputs.clone(), trigger: l.trigger.clone(), canary: l.canary };
        let (record, inputs) = engine.queued_record(&req, run_id);
        let serial = l.overlap == Some(Overlap::Queue);
        let queued = match fire {
            Some((job, at_ms)) => store.enqueue_fire(job, at_ms, &record, serial, &inputs).await?,
            None => store.enqueue(&record, serial, &inputs).await.map(|()| true)?,
        };
        if queued {
            self.wake.notify_one();
        }
        Ok(queued)
    }

    /// Executes a run this process holds the lease of (claimed, or taken over to resume), in the
    /// background; its id.
    pub fn execute(self: &Arc<Self>, engine: Engine, l: Launch, start: Start, on_finish: OnFinish) -> String {
        let run_id = start.run_id.clone().unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
        let (this, id) = (self.clone(), run_id.clone());
        // Registered before the task starts, so a quick run cannot end before it is listed.
        self.track(&run_id, &l.flow);
        let handle = tokio::spawn(async move {
            let req = RunRequest { flow: l.flow.clone(), inputs: l.inputs.clone(), trigger: l.trigger.clone(), canary: l.canary };
            let start = Start { run_id: Some(id.clone()), ..start };
            match engine.start(req, start, std::future::pending::<()>()).await {
                Ok(outcome) => {
                    this.finished.lock().expect("finished").insert(id.clone(), outcome.status);
                    on_finish(&l, &outcome);
                }
                Err(e) if e.downcast_ref::<LeaseLost>().is_some() || format!("{e:#}").contains("was taken over by another process") => {
                    tracing::warn!(run_id = %id, flow = %l.flow.name, "stopped here: another process took the run over after this one's lease expired");
                }
                Err(e) => tracing::error!(run_id = %id, flow = %l.flow.name, error = %format!("{e:#}"), "the run could not be recorded"),
            }
            this.forget(&id);
            this.wake.notify_one();
        });
        if let Some(a) = self.active.lock().expect("active").get_mut(&run_id) {
            a.handle = Some(handle);
        }
        run_id
    }

    /// One step of the worker: claims what fits of the queue and starts it; how many it claimed.
    pub async fn work_once(
        self: &Arc<Self>,
        engine: &Engine,
        flows: &BTreeMap<String, Arc<Flow>>,
        on_finish: &OnFinish,
    ) -> anyhow::Result<usize> {
        let free = self.capacity.saturating_sub(self.total_active());
        let caps: BTreeMap<String, usize> = flows.iter().filter_map(|(name, f)| f.serve.concurrency.map(|c| (name.clone(), c))).collect();
        let claimed = engine.store.claim_queued(free, &caps).await?;
        let n = claimed.len();
        for Claimed { run, inputs: whole, blocked, .. } in claimed {
            let Some(flow) = flows.get(&run.flow).cloned() else {
                let msg = format!("the flow `{}` is not configured in this process", run.flow);
                engine.store.mark_interrupted(&run, engine.clock.now_ms(), &msg).await?;
                continue;
            };
            let inputs = match whole.as_deref().or(run.inputs.as_deref()).map(serde_json::from_str::<Json>) {
                Some(Ok(Json::Object(m))) => m,
                _ => Map::new(),
            };
            let l = Launch { flow, inputs, trigger: run.trigger.clone(), canary: run.canary, overlap: None };
            let start = Start { run_id: Some(run.id.clone()), resume: None, claimed: Some(Claim { at: run.started_at, blocked }) };
            self.execute(engine.clone(), l, start, on_finish.clone());
        }
        Ok(n)
    }

    /// Waits until a run is queued or ends here, or `poll` passes (other processes queue too).
    pub async fn idle(&self, poll: Duration) {
        let _ = tokio::time::timeout(poll, self.wake.notified()).await;
    }

    /// Waits up to `grace` for running runs to finish; the rest are stopped. A stopped run of a
    /// flow with `on_interrupt: resume` is handed back (its completed nodes are its checkpoint)
    /// and goes on in the next process that claims it; the others are recorded `interrupted`.
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
            } else if let Err(e) = store.hand_back(id).await {
                tracing::warn!(run_id = %id, error = %format!("{e:#}"), "could not hand the run back; it is taken over when its lease expires");
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

impl std::fmt::Display for Recovered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Recovered::Resumed(id) => write!(f, "resumed run {id} (interrupted by a stopped process)"),
            Recovered::Interrupted(id, why) => write!(f, "run {id} recorded interrupted: {why}"),
        }
    }
}

/// Runs whose lease expired (their process died, or stopped answering for longer than the
/// lease): each is taken over with an atomic conditional update — a run another process took
/// first, or whose owner is alive, is left alone — then resumes from its last completed node when
/// its flow says `on_interrupt: resume` and it can, else it is recorded `interrupted`.
pub async fn recover(
    runs: &Arc<Runs>,
    engine: &Engine,
    flows: &BTreeMap<String, Arc<Flow>>,
    on_finish: OnFinish,
) -> anyhow::Result<Vec<Recovered>> {
    let store = &engine.store;
    let mut out = Vec::new();
    for run in store.claim_expired().await? {
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
                tracing::warn!(run_id = %run.id, flow = %run.flow, "resuming a run whose process stopped (its lease expired)");
                let l = Launch { flow: f.clone(), inputs, trigger: run.trigger.clone(), canary: run.canary, overlap: None };
                runs.execute(engine.clone(), l, start, on_finish.clone());
                out.push(Recovered::Resumed(run.id.clone()));
            }
            (_, plan) => {
                let why = plan.err().unwrap_or_default();
                tracing::warn!(run_id = %run.id, flow = %run.flow, reason = %why, "a run whose process stopped is recorded interrupted");
                let msg = format!("the process running this flow stopped before the run finished; not resumed: {why}");
                store.mark_interrupted(&run, engine.clock.now_ms(), &msg).await?;
                out.push(Recovered::Interrupted(run.id.clone(), why));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A drain at shutdown goes on as soon as the last run executing here ends, not at the end
    /// of its grace period.
    #[tokio::test]
    async fn a_drain_ends_as_soon_as_the_last_run_ends() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store =
            Store::open(&format!("sqlite://{}", dir.path().join("t.db").display()), 1, Duration::from_secs(1)).await.expect("store");
        let here = std::path::Path::new(".");
        let cfg = crate::config::Config::parse(&here.join("flowguard.yaml"), "{}", here, &|_| None).expect("config");
        let reg = crate::nodes::Registry::from_config(&cfg).expect("registry");
        let text = "name: f\nnodes:\n  - id: a\n    kind: template\n    text: hi\n";
        let flow = crate::flow::parse(&here.join("f.yaml"), text, &reg).expect("flow");
        let runs = Arc::new(Runs::default());
        runs.track("r1", &flow);
        let (end, ended) = tokio::sync::oneshot::channel::<()>();
        let this = runs.clone();
        tokio::spawn(async move {
            let _ = ended.await;
            this.forget("r1");
        });
        // The drain is polled first (one thread): it finds the run listed and waits; the run ends
        // while it waits.
        let drain = runs.drain(Duration::from_secs(3600), &store, || 0);
        let _ = end.send(());
        let left = tokio::time::timeout(Duration::from_secs(60), drain).await.expect("the drain ended with the run");
        assert_eq!(left, 0);
        store.close().await;
    }
}
