//! Per-channel send limits as sliding windows. The send times live in the database (shared by
//! every process on it); this is the arithmetic. A send over the limit is not dropped: the outbox
//! keeps it and tries again when the window has room.

use std::time::Duration;

/// Slack added to each window, so that sends spaced exactly by the limit on our clock still look
/// spaced to a service whose clock and network add a few milliseconds.
pub const SLACK_MS: i64 = 25;

/// How far back send times matter for these limits.
pub fn horizon(limits: &[(u32, Duration)]) -> i64 {
    limits.iter().map(|(_, w)| w.as_millis() as i64 + SLACK_MS).max().unwrap_or(0)
}

/// When a send at `now` would break a limit given earlier sends at `sent` (any order): the time
/// the window frees. `None`: send now.
pub fn free_at(sent: &[i64], limits: &[(u32, Duration)], now: i64) -> Option<i64> {
    let mut sent = sent.to_vec();
    sent.sort_unstable();
    let mut free = None::<i64>;
    for (n, w) in limits {
        let w = w.as_millis() as i64 + SLACK_MS;
        let n = (*n).max(1) as usize;
        let in_window: Vec<i64> = sent.iter().copied().filter(|t| *t > now - w).collect();
        if in_window.len() >= n {
            let at = in_window[in_window.len() - n] + w;
            free = Some(free.map_or(at, |f: i64| f.max(at)));
        }
    }
    free
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_per_second_and_a_hundred_per_minute() {
        let lim = [(5, Duration::from_secs(1)), (100, Duration::from_secs(60))];
        let mut sent = Vec::new();
        for _ in 0..5 {
            assert_eq!(free_at(&sent, &lim, 0), None);
            sent.push(0);
        }
        assert_eq!(free_at(&sent, &lim, 10), Some(1_000 + SLACK_MS));
        let mut t = 0;
        while sent.len() < 100 {
            t += 1;
            if free_at(&sent, &lim, t).is_none() {
                sent.push(t);
            }
        }
        let e = free_at(&sent, &lim, t + 1).unwrap();
        assert!(e >= 60_000, "{e}");
        assert_eq!(free_at(&[], &lim, t), None);
    }
}
