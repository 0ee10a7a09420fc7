//! Cancel requests across processes: `flowguard runs cancel RUN` writes a request to the store;
//! the process running that run sees it within a second (one query per second for all its runs).

use crate::store::Store;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

#[derive(Default)]
pub struct Cancels {
    active: Mutex<HashMap<String, Arc<Notify>>>,
    polling: AtomicBool,
}

impl Cancels {
    /// Registers a run; the returned notify fires when a cancel is requested.
    pub fn register(self: &Arc<Self>, run_id: &str, store: &Store) -> Arc<Notify> {
        let n = Arc::new(Notify::new());
        self.active.lock().expect("cancels").insert(run_id.to_owned(), n.clone());
        if !self.polling.swap(true, Ordering::SeqCst) {
            let (this, store) = (Arc::downgrade(self), store.clone());
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    let Some(this) = this.upgrade() else { return };
                    let ids: Vec<String> = this.active.lock().expect("cancels").keys().cloned().collect();
                    if ids.is_empty() {
                        continue;
                    }
                    if let Ok(found) = store.cancel_requested(&ids).await {
                        let active = this.active.lock().expect("cancels");
                        for id in found {
                            if let Some(n) = active.get(&id) {
                                n.notify_one();
                            }
                        }
                    }
                }
            });
        }
        n
    }

    pub fn unregister(&self, run_id: &str) {
        self.active.lock().expect("cancels").remove(run_id);
    }
}
