//! `server.model_concurrency`: a cap on a model's calls in flight, held across every process on
//! the database (each `serve` worker and each `flowguard run`), not per process. A call takes one
//! of the model's N slots, each a row of `process_locks` (`model:NAME:I`) taken by one conditional
//! insert or takeover, renewed while the call lasts and deleted when it ends; the slot of a killed
//! process frees itself when its lease runs out (at once for a dead process of the same host).
//! A semaphore per process keeps a process from asking the database for slots it cannot get.

use super::{ChatReply, ChatRequest, ModelClient};
use crate::clock::SharedClock;
use crate::nodes::NodeError;
use crate::store::Store;
use futures::future::BoxFuture;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;

/// Wraps each model named in `limits` so that its calls in flight stay within the limit across
/// every process on `store`'s database.
pub fn apply(models: &mut BTreeMap<String, Arc<dyn ModelClient>>, limits: &BTreeMap<String, usize>, store: &Store) -> anyhow::Result<()> {
    for (name, n) in limits {
        let Some(inner) = models.get(name).cloned() else {
            anyhow::bail!("server.model_concurrency names `{name}`, which is not a configured model");
        };
        let n = (*n).max(1);
        let slots =
            Arc::new(Slots { model: name.clone(), n, local: Arc::new(Semaphore::new(n)), held: Mutex::default(), store: store.clone() });
        models.insert(name.clone(), Arc::new(Limited { inner, slots }));
    }
    Ok(())
}

struct Limited {
    inner: Arc<dyn ModelClient>,
    slots: Arc<Slots>,
}

impl ModelClient for Limited {
    fn chat<'a>(&'a self, req: &'a ChatRequest, clock: &'a SharedClock) -> BoxFuture<'a, Result<ChatReply, NodeError>> {
        Box::pin(async move {
            let _slot = self.slots.take().await;
            self.inner.chat(req, clock).await
        })
    }
    fn label(&self) -> String {
        self.inner.label()
    }
}

/// One model's slots, as this process sees them.
struct Slots {
    model: String,
    n: usize,
    local: Arc<Semaphore>,
    /// The slots this process holds or is taking (it does not ask the database for them).
    held: Mutex<Vec<usize>>,
    store: Store,
}

/// A slot held for one call; given back when dropped.
struct Slot {
    slots: Arc<Slots>,
    index: Option<usize>,
    renew: Option<tokio::task::JoinHandle<()>>,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Slots {
    fn name(&self, i: usize) -> String {
        format!("model:{}:{i}", self.model)
    }

    /// Waits for a free slot. When the database cannot be asked, the call goes ahead under the
    /// per-process limit alone rather than failing the run (the error is logged).
    async fn take(self: &Arc<Self>) -> Slot {
        let permit = self.local.clone().acquire_owned().await.expect("the semaphore is never closed");
        let lease = self.store.lease_settings();
        let lease_ms = lease.length.as_millis() as i64;
        let mut wait = Duration::from_millis(5);
        loop {
            let start = fastrand::usize(..self.n);
            for k in 0..self.n {
                let i = (start + k) % self.n;
                if !self.reserve(i) {
                    continue;
                }
                match self.store.lock_process(&self.name(i), lease_ms).await {
                    Ok(Ok(())) => {
                        let renew = tokio::spawn(renew(self.store.clone(), self.name(i), lease.heartbeat, lease_ms));
                        return Slot { slots: self.clone(), index: Some(i), renew: Some(renew), _permit: permit };
                    }
                    Ok(Err(_busy)) => self.unreserve(i),
                    Err(e) => {
                        self.unreserve(i);
                        tracing::warn!(model = %self.model, "could not take a call slot in the database ({e:#}); the call goes ahead under this process's limit");
                        return Slot { slots: self.clone(), index: None, renew: None, _permit: permit };
                    }
                }
            }
            // Every slot is busy elsewhere: ask again shortly, with jitter so waiters spread out.
            tokio::time::sleep(wait + Duration::from_millis(fastrand::u64(..=wait.as_millis() as u64))).await;
            wait = (wait * 2).min(Duration::from_millis(100));
        }
    }

    /// Marks slot `i` as being taken by this process; false when this process has it already.
    fn reserve(&self, i: usize) -> bool {
        let mut held = self.held.lock().expect("slots");
        if held.contains(&i) {
            return false;
        }
        held.push(i);
        true
    }

    fn unreserve(&self, i: usize) {
        self.held.lock().expect("slots").retain(|h| *h != i);
    }
}

/// Keeps a slot's lease alive while its call lasts.
async fn renew(store: Store, name: String, every: Duration, lease_ms: i64) {
    loop {
        tokio::time::sleep(every).await;
        match store.renew_process_lock(&name, lease_ms).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(slot = %name, "a model call slot expired while its call went on (this process stalled past its lease)");
                return;
            }
            Err(e) => tracing::warn!(slot = %name, "could not renew a model call slot: {e:#}"),
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(r) = self.renew.take() {
            r.abort();
        }
        let Some(i) = self.index else { return };
        let slots = self.slots.clone();
        // Given back in the background: the call's answer does not wait for the delete. Until it
        // is done this process keeps the slot marked as its own, so it cannot take it twice.
        tokio::spawn(async move {
            if let Err(e) = slots.store.unlock_process(&slots.name(i)).await {
                tracing::warn!(slot = %slots.name(i), "could not give back a model call slot (it frees itself when its lease ends): {e:#}");
            }
            slots.unreserve(i);
        });
    }
}
