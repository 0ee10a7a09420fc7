//! Run ownership across processes. The process executing a run holds a lease on its row: `owner`
//! (host:pid:random), `lease_until` (epoch ms, renewed by a heartbeat) and `epoch`, a fencing token
//! that grows with each new owner. Every write of a run this process holds carries a guard on its
//! epoch (see the writer in mod.rs): once another process took the run over, the writes of the old
//! owner are refused and it stops that run. Only an expired lease is taken over, by one conditional
//! UPDATE that bumps the epoch, so two processes can never both believe they own a run.
//!
//! Lease times are this host's wall clock; hosts sharing a database must keep their clocks within
//! a small part of the lease length of each other (NTP does).

use super::{Arg, RUN_COLS, RUN_TYS, RunRecord, Store, Ty, db, run_from};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;
use tokio::sync::Notify;

/// A write refused because another process took the run over (its epoch moved on).
#[derive(Debug, Clone, thiserror::Error)]
#[error("run {0} was taken over by another process (this process's lease on it expired); its writes from here are refused")]
pub struct LeaseLost(pub String);

/// How long a lease lasts without renewal, and how often it is renewed.
#[derive(Debug, Clone, Copy)]
pub struct LeaseSettings {
    pub length: Duration,
    pub heartbeat: Duration,
}

impl Default for LeaseSettings {
    fn default() -> Self {
        LeaseSettings { length: Duration::from_secs(30), heartbeat: Duration::from_secs(10) }
    }
}

/// Set when the run's lease was lost; the engine stops the run.
#[derive(Default)]
pub struct Lost {
    flag: AtomicBool,
    notify: Notify,
}

impl Lost {
    pub fn is_set(&self) -> bool {
        self.flag.load(Ordering::Acquire)
    }

    fn set(&self) {
        self.flag.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }

    /// Resolves once the lease is lost.
    pub async fn wait(&self) {
        loop {
            let n = self.notify.notified();
            if self.is_set() {
                return;
            }
            n.await;
        }
    }
}

struct Held {
    epoch: i64,
    lost: Arc<Lost>,
}

/// The leases this process holds, by run id.
#[derive(Default)]
pub(crate) struct Leases {
    held: Mutex<HashMap<String, Held>>,
    beating: AtomicBool,
}

/// This process, as written in `owner`: host, pid and a random part (pids are reused).
pub fn owner() -> &'static str {
    static OWNER: OnceLock<String> = OnceLock::new();
    OWNER.get_or_init(|| format!("{}:{}:{:08x}", host(), std::process::id(), fastrand::u32(..)))
}

fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// This host's wall clock (leases are compared across processes, never the engine's test clock).
pub fn wall_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// Only an expired (or never set) lease may be taken.
const EXPIRED: &str = "(lease_until IS NULL OR lease_until < ?)";

/// A write of a run handed to the store's writer and not yet known committed.
pub struct Queued {
    run_id: String,
    answer: tokio::sync::oneshot::Receiver<Result<(), super::WriteError>>,
}

impl Queued {
    /// Waits for the commit. A write refused by the run's fence marks the lease lost and fails
    /// with [`LeaseLost`].
    pub async fn done(self, store: &Store) -> anyhow::Result<()> {
        let r = super::answered(self.answer.await);
        if let Err(e) = &r
            && e.downcast_ref::<super::Stale>().is_some()
        {
            store.lease_lost(&self.run_id);
            return Err(LeaseLost(self.run_id).into());
        }
        r
    }
}

impl Store {
    pub fn lease_settings(&self) -> LeaseSettings {
        self.lease
    }

    /// The guard that fences a write of `run_id` by the epoch this process holds, if it holds one.
    pub(crate) fn fence(&self, run_id: &str) -> Option<db::Fence> {
        let held = self.leases.held.lock().expect("leases");
        let epoch = held.get(run_id)?.epoch;
        Some(db::Fence { run_id: run_id.to_owned(), epoch })
    }

    /// Writes statements of one run, fenced by its lease when this process holds one. A refused
    /// write marks the lease lost and fails with [`LeaseLost`].
    pub(crate) async fn write_run(&self, run_id: &str, stmts: Vec<db::Stmt>) -> anyhow::Result<()> {
        self.queue_run(run_id, stmts)?.done(self).await
    }

    /// [`Store::write_run`] without waiting for the commit.
    pub(crate) fn queue_run(&self, run_id: &str, stmts: Vec<db::Stmt>) -> anyhow::Result<Queued> {
        // Once lost, a run's writes from this process are refused without asking the database.
        if self.lost_signal(run_id).is_some_and(|l| l.is_set()) {
            return Err(LeaseLost(run_id.to_owned()).into());
        }
        Ok(Queued { run_id: run_id.to_owned(), answer: self.send_guarded(stmts, self.fence(run_id))? })
    }

    /// The lease of a run this process inserts: the values of its `owner, lease_until, epoch`
    /// columns (epoch 1), written by the run's own INSERT.
    pub(crate) fn lease_new_args(&self) -> [db::Arg; 3] {
        [owner().into(), (wall_ms() + self.lease.length.as_millis() as i64).into(), 1i64.into()]
    }

    /// Records that this process holds `run_id` at `epoch`, and keeps it renewed.
    pub(crate) fn hold(&self, run_id: &str, epoch: i64) {
        self.leases.held.lock().expect("leases").insert(run_id.to_owned(), Held { epoch, lost: Arc::default() });
        if !self.leases.beating.swap(true, Ordering::SeqCst) {
            tokio::spawn(heartbeat(Arc::downgrade(&self.leases), self.pool.clone(), self.lease));
        }
    }

    /// Lets go of a run (it ended here, or was handed back, or taken over): its lease, and what
    /// the rollups kept of it in memory (a run it did not end here is counted from its rows).
    pub fn release(&self, run_id: &str) {
        self.leases.held.lock().expect("leases").remove(run_id);
        self.live.forget(run_id);
    }

    /// What the engine watches to stop a run whose lease was lost.
    pub fn lost_signal(&self, run_id: &str) -> Option<Arc<Lost>> {
        self.leases.held.lock().expect("leases").get(run_id).map(|h| h.lost.clone())
    }

    /// Marks a lease lost; it stays listed (refusing the run's writes) until released.
    fn lease_lost(&self, run_id: &str) {
        if let Some(h) = self.leases.held.lock().expect("leases").get(run_id)
            && !h.lost.is_set()
        {
            tracing::warn!(run_id, "another process took this run over (the lease expired); stopping it here without writing");
            h.lost.set();
        }
    }

    /// Takes a run in `status` whose lease expired (or a parked run, for a manual retry), bumping
    /// its epoch: one conditional UPDATE, so at most one process gets it. Returns the new epoch.
    pub async fn take_over(&self, run_id: &str, status: &str) -> anyhow::Result<Option<i64>> {
        let now = wall_ms();
        let rows = self.pool.fetch("SELECT epoch FROM runs WHERE id = ?", &[run_id.into()], &[Ty::I64]).await?;
        let Some(epoch) = rows.first().and_then(|r| r[0].i64()) else { return Ok(None) };
        let sql = format!(
            "UPDATE runs SET owner = ?, lease_until = ?, epoch = ? WHERE id = ? AND epoch = ? AND status = ? AND (status <> 'running' OR {EXPIRED})"
        );
        let args: Vec<Arg> = vec![
            owner().into(),
            (now + self.lease.length.as_millis() as i64).into(),
            (epoch + 1).into(),
            run_id.into(),
            epoch.into(),
            status.into(),
            now.into(),
        ];
        if self.pool.exec(&sql, &args).await? != 1 {
            return Ok(None);
        }
        self.hold(run_id, epoch + 1);
        Ok(Some(epoch + 1))
    }

    /// Runs left `running` whose lease expired: their owner died (or stopped answering for longer
    /// than the lease). Each is taken over by this process (see [`Store::take_over`]) and returned;
    /// a run another process took first is not.
    pub async fn claim_expired(&self) -> anyhow::Result<Vec<RunRecord>> {
        let sql = format!("SELECT {RUN_COLS} FROM runs WHERE status = 'running' AND trigger_kind <> 'external' AND {EXPIRED}");
        let stale: Vec<RunRecord> = self.pool.fetch(&sql, &[wall_ms().into()], RUN_TYS).await?.into_iter().map(run_from).collect();
        let mut out = Vec::new();
        for r in stale {
            // A run this process still executes is not taken from itself: its heartbeat was late
            // (a loaded machine), and the next one renews it unless another process took it.
            let own = self.leases.held.lock().expect("leases").get(&r.id).is_some_and(|h| !h.lost.is_set());
            if own {
                continue;
            }
            if self.take_over(&r.id, "running").await?.is_some() {
                out.push(r);
            }
        }
        Ok(out)
    }

    /// The owner and epoch of a run (for operators and tests).
    pub async fn lease_of(&self, run_id: &str) -> anyhow::Result<Option<(Option<String>, Option<i64>, i64)>> {
        let rows = self
            .pool
            .fetch("SELECT owner, lease_until, epoch FROM runs WHERE id = ?", &[run_id.into()], &[Ty::Str, Ty::I64, Ty::I64])
            .await?;
        Ok(rows.into_iter().next().map(|r| (r[0].str(), r[1].i64(), r[2].i64().unwrap_or(0))))
    }
}

/// Renews every lease this process holds, each heartbeat; a lease found taken over is marked lost.
/// Stops when the store is gone.
async fn heartbeat(leases: Weak<Leases>, pool: db::Pool, s: LeaseSettings) {
    loop {
        tokio::time::sleep(s.heartbeat).await;
        let Some(leases) = leases.upgrade() else { return };
        let held: Vec<(String, i64)> =
            leases.held.lock().expect("leases").iter().filter(|(_, h)| !h.lost.is_set()).map(|(k, h)| (k.clone(), h.epoch)).collect();
        for (run_id, epoch) in held {
            let until = wall_ms() + s.length.as_millis() as i64;
            match pool
                .exec("UPDATE runs SET lease_until = ? WHERE id = ? AND epoch = ?", &[until.into(), run_id.as_str().into(), epoch.into()])
                .await
            {
                Ok(1) => {}
                Ok(_) => {
                    let held = leases.held.lock().expect("leases");
                    if let Some(h) = held.get(&run_id).filter(|h| h.epoch == epoch && !h.lost.is_set()) {
                        tracing::warn!(run_id, "another process took this run over (the lease expired); stopping it here without writing");
                        h.lost.set();
                    }
                }
                Err(e) => tracing::warn!(run_id, error = %super::describe_error(&e), "could not renew the run's lease"),
            }
        }
    }
}
