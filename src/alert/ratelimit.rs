//! Per-channel send limits (sliding windows on the injected clock). A send over the limit is not
//! dropped: the outbox keeps it and tries again when the window has room.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

/// Slack added to each window, so that sends spaced exactly by the limit on our clock still look
/// spaced to a service whose clock and network add a few milliseconds.
const SLACK_MS: i64 = 25;

#[derive(Default)]
pub struct Limiter {
    sent: BTreeMap<String, VecDeque<i64>>,
    blocked_until: BTreeMap<String, i64>,
}

impl Limiter {
    /// Takes a slot for `channel` at `now`, or says when the next one frees.
    pub fn acquire(&mut self, channel: &str, limits: &[(u32, Duration)], now: i64) -> Result<(), i64> {
        if let Some(until) = self.blocked_until.get(channel)
            && *until > now
        {
            return Err(*until);
        }
        let longest = limits.iter().map(|(_, w)| w.as_millis() as i64 + SLACK_MS).max().unwrap_or(0);
        let q = self.sent.entry(channel.to_owned()).or_default();
        while q.front().is_some_and(|t| *t <= now - longest) {
            q.pop_front();
        }
        let mut free_at = None::<i64>;
        for (n, w) in limits {
            let w = w.as_millis() as i64 + SLACK_MS;
            let n = (*n).max(1) as usize;
            let in_window: Vec<i64> = q.iter().copied().filter(|t| *t > now - w).collect();
            if in_window.len() >= n {
                let at = in_window[in_window.len() - n] + w;
                free_at = Some(free_at.map_or(at, |f: i64| f.max(at)));
            }
        }
        match free_at {
            Some(at) => Err(at),
            None => {
                if !limits.is_empty() {
                    q.push_back(now);
                }
                Ok(())
            }
        }
    }

    /// A send taken at `taken` finished at `done`: the window counts from `done`, because the
    /// service saw the request somewhere in between and counts from its own arrival time.
    pub fn finished(&mut self, channel: &str, taken: i64, done: i64) {
        if let Some(q) = self.sent.get_mut(channel)
            && let Some(slot) = q.iter_mut().rev().find(|t| **t == taken)
        {
            *slot = done.max(taken);
        }
    }

    /// The service said to slow down: no sends on this channel before `until`.
    pub fn block(&mut self, channel: &str, until: i64) {
        let e = self.blocked_until.entry(channel.to_owned()).or_insert(until);
        *e = (*e).max(until);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_per_second_and_a_hundred_per_minute() {
        let mut l = Limiter::default();
        let lim = [(5, Duration::from_secs(1)), (100, Duration::from_secs(60))];
        for _ in 0..5 {
            assert!(l.acquire("f", &lim, 0).is_ok());
        }
        assert_eq!(l.acquire("f", &lim, 10), Err(1_000 + SLACK_MS));
        let mut t = 0;
        let mut sent = 5;
        while sent < 100 {
            t += 1;
            if l.acquire("f", &lim, t).is_ok() {
                sent += 1;
            }
        }
        let e = l.acquire("f", &lim, t + 1).unwrap_err();
        assert!(e >= 60_000, "{e}");
        assert!(l.acquire("other", &lim, t).is_ok());
    }
}
