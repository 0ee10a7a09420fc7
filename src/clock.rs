//! Time, injected. The engine asks a [`Clock`] for the time and for sleeps, so timeouts, backoff
//! and latency warnings are tested on virtual time without waiting.
//!
//! Two kinds of waiting: `sleep` is time that passes while something happens (a backoff delay, a
//! simulated model thinking); `until` is a timer that fires when the time comes (a timeout, a
//! latency warning). On the [`TestClock`], `sleep` moves virtual time forward, stopping at every
//! pending timer on the way so that the timer fires first; `until` never moves time itself.

use futures::future::BoxFuture;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

pub trait Clock: Send + Sync + 'static {
    /// Milliseconds since the Unix epoch, UTC.
    fn now_ms(&self) -> i64;
    /// Time passes.
    fn sleep(&self, d: Duration) -> BoxFuture<'static, ()>;
    /// Resolves once the time reaches `at_ms`.
    fn until(&self, at_ms: i64) -> BoxFuture<'static, ()>;
}

pub type SharedClock = Arc<dyn Clock>;

#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        jiff::Timestamp::now().as_millisecond()
    }
    fn sleep(&self, d: Duration) -> BoxFuture<'static, ()> {
        Box::pin(tokio::time::sleep(d))
    }
    fn until(&self, at_ms: i64) -> BoxFuture<'static, ()> {
        let wait = (at_ms - self.now_ms()).max(0) as u64;
        Box::pin(tokio::time::sleep(Duration::from_millis(wait)))
    }
}

/// Virtual time for tests.
#[derive(Clone)]
pub struct TestClock {
    now: Arc<watch::Sender<i64>>,
    timers: Arc<Mutex<Vec<i64>>>,
    slept: Arc<Mutex<Vec<Duration>>>,
}

impl TestClock {
    pub fn new(start_ms: i64) -> Self {
        TestClock { now: Arc::new(watch::channel(start_ms).0), timers: Default::default(), slept: Default::default() }
    }

    /// Every `sleep` asked for so far (backoff delays, simulated latencies), in order.
    pub fn sleeps(&self) -> Vec<Duration> {
        self.slept.lock().expect("clock lock").clone()
    }

    /// Moves time forward by `d`, firing timers on the way.
    pub fn advance(&self, d: Duration) {
        self.now.send_modify(|n| *n += d.as_millis() as i64);
    }

    fn next_timer_before(&self, limit: i64) -> Option<i64> {
        let now = *self.now.borrow();
        self.timers.lock().expect("clock lock").iter().copied().filter(|t| *t > now && *t < limit).min()
    }
}

impl Clock for TestClock {
    fn now_ms(&self) -> i64 {
        *self.now.borrow()
    }

    fn sleep(&self, d: Duration) -> BoxFuture<'static, ()> {
        let this = self.clone();
        this.slept.lock().expect("clock lock").push(d);
        Box::pin(async move {
            let target = this.now_ms() + d.as_millis() as i64;
            // Stop at each timer on the way and let it fire (it may cancel this sleep).
            while let Some(t) = this.next_timer_before(target) {
                this.now.send_modify(|n| *n = (*n).max(t));
                for _ in 0..8 {
                    tokio::task::yield_now().await;
                }
            }
            this.now.send_modify(|n| *n = (*n).max(target));
            tokio::task::yield_now().await;
        })
    }

    fn until(&self, at_ms: i64) -> BoxFuture<'static, ()> {
        let this = self.clone();
        this.timers.lock().expect("clock lock").push(at_ms);
        let mut rx = this.now.subscribe();
        let guard = TimerGuard { timers: this.timers.clone(), at_ms };
        Box::pin(async move {
            let _guard = guard;
            let _ = rx.wait_for(|n| *n >= at_ms).await;
        })
    }
}

/// Forgets a timer when it fires or is dropped.
struct TimerGuard {
    timers: Arc<Mutex<Vec<i64>>>,
    at_ms: i64,
}

impl Drop for TimerGuard {
    fn drop(&mut self) {
        if let Ok(mut timers) = self.timers.lock()
            && let Some(i) = timers.iter().position(|t| *t == self.at_ms)
        {
            timers.remove(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_timer_fires_inside_a_longer_sleep() {
        let c = TestClock::new(1_000);
        let timer = c.until(1_000 + 30_000);
        let work = c.sleep(Duration::from_secs(60));
        let fired = tokio::select! {
            _ = timer => true,
            _ = work => false,
        };
        assert!(fired);
        assert_eq!(c.now_ms(), 31_000);
    }

    #[tokio::test]
    async fn sleep_moves_time() {
        let c = TestClock::new(0);
        c.sleep(Duration::from_millis(250)).await;
        assert_eq!(c.now_ms(), 250);
        assert_eq!(c.sleeps(), vec![Duration::from_millis(250)]);
    }
}
