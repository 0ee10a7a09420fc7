//! The node retry policy: `none | fixed | exponential`, human durations, jitter, max attempts and
//! which error kinds it retries. It is an iterator of delays, so it is deterministic to test and the
//! same type serves the flow file, the engine and the docs.

use crate::config::HumanDuration;
use crate::vocab::{DefaultRetry, ErrorKind};
use serde::Deserialize;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Backoff {
    None,
    Fixed,
    Exponential,
}

/// A node's retry policy, as written in a flow file.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetrySpec {
    /// `none`, `fixed` or `exponential` (default).
    #[serde(default = "default_backoff")]
    pub policy: Backoff,
    /// Attempts in all, the first one included (default 3).
    pub max_attempts: Option<u32>,
    /// First delay (default 500ms).
    pub delay: Option<HumanDuration>,
    /// Upper bound of one delay (default 30s).
    pub max_delay: Option<HumanDuration>,
    /// Growth per attempt for `exponential` (default 2).
    pub factor: Option<f64>,
    /// Random spread, 0..1, applied as ±jitter×delay (default 0.2).
    pub jitter: Option<f64>,
    /// Error kinds to retry (default: the kinds whose default handling retries).
    pub on: Option<Vec<ErrorKind>>,
}

fn default_backoff() -> Backoff {
    Backoff::Exponential
}

#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    pub backoff: Backoff,
    pub max_attempts: u32,
    pub delay: Duration,
    pub max_delay: Duration,
    pub factor: f64,
    pub jitter: f64,
    /// None: the built-in table decides per kind.
    pub on: Option<Vec<ErrorKind>>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            backoff: Backoff::Exponential,
            max_attempts: 3,
            delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            factor: 2.0,
            jitter: 0.2,
            on: None,
        }
    }
}

impl RetrySpec {
    pub fn build(&self) -> Result<RetryPolicy, String> {
        let d = RetryPolicy::default();
        let p = RetryPolicy {
            backoff: self.policy,
            max_attempts: if self.policy == Backoff::None { 1 } else { self.max_attempts.unwrap_or(d.max_attempts) },
            delay: self.delay.map_or(d.delay, HumanDuration::get),
            max_delay: self.max_delay.map_or(d.max_delay, HumanDuration::get),
            factor: self.factor.unwrap_or(d.factor),
            jitter: self.jitter.unwrap_or(d.jitter),
            on: self.on.clone(),
        };
        if p.max_attempts == 0 {
            return Err("max_attempts must be at least 1".into());
        }
        if !(0.0..=1.0).contains(&p.jitter) {
            return Err(format!("jitter must be between 0 and 1, not {}", p.jitter));
        }
        if p.factor < 1.0 {
            return Err(format!("factor must be at least 1, not {}", p.factor));
        }
        Ok(p)
    }
}

impl RetryPolicy {
    /// How many attempts in all a failure of `kind` gets under this policy. A node without a
    /// `retry` of its own follows the built-in table (DESIGN.md §4).
    pub fn attempts_for(node_policy: Option<&RetryPolicy>, kind: ErrorKind) -> u32 {
        match node_policy {
            Some(p) => match &p.on {
                Some(kinds) if !kinds.contains(&kind) => 1,
                Some(_) => p.max_attempts,
                None if kind.default_retry() == DefaultRetry::Never => 1,
                None => p.max_attempts,
            },
            None => match kind.default_retry() {
                DefaultRetry::Never => 1,
                DefaultRetry::Once => 2,
                DefaultRetry::Backoff => 3,
            },
        }
    }

    /// The delay before attempt `attempt + 1` (attempt counts from 1), before jitter.
    pub fn base_delay(&self, attempt: u32) -> Duration {
        let d = match self.backoff {
            Backoff::None => Duration::ZERO,
            Backoff::Fixed => self.delay,
            Backoff::Exponential => self.delay.mul_f64(self.factor.powi(attempt.saturating_sub(1) as i32)),
        };
        d.min(self.max_delay)
    }

    /// The delay with jitter drawn from `rng` (a value in 0..1), never above `max_delay`.
    pub fn delay(&self, attempt: u32, unit: f64) -> Duration {
        let base = self.base_delay(attempt);
        let spread = 1.0 + self.jitter * (2.0 * unit - 1.0);
        base.mul_f64(spread.max(0.0)).min(self.max_delay)
    }

    /// The delays between attempts, without jitter: an iterator, for docs and tests.
    pub fn delays(&self) -> impl Iterator<Item = Duration> + '_ {
        (1..self.max_attempts).map(|a| self.base_delay(a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exponential_delays_double_and_cap() {
        let p = RetrySpec {
            policy: Backoff::Exponential,
            max_attempts: Some(6),
            delay: Some(HumanDuration::secs(1)),
            max_delay: Some(HumanDuration::secs(5)),
            factor: None,
            jitter: Some(0.0),
            on: None,
        }
        .build()
        .unwrap();
        let d: Vec<u64> = p.delays().map(|d| d.as_millis() as u64).collect();
        assert_eq!(d, vec![1000, 2000, 4000, 5000, 5000]);
    }

    #[test]
    fn jitter_stays_within_spread() {
        let p = RetryPolicy { jitter: 0.5, ..Default::default() };
        assert_eq!(p.delay(1, 0.0), Duration::from_millis(250));
        assert_eq!(p.delay(1, 1.0), Duration::from_millis(750));
    }

    #[test]
    fn table_decides_without_node_policy() {
        assert_eq!(RetryPolicy::attempts_for(None, ErrorKind::Timeout), 2);
        assert_eq!(RetryPolicy::attempts_for(None, ErrorKind::RateLimited), 3);
        assert_eq!(RetryPolicy::attempts_for(None, ErrorKind::QuotaExhausted), 1);
        let only_5xx = RetryPolicy { on: Some(vec![ErrorKind::Upstream5xx]), max_attempts: 4, ..Default::default() };
        assert_eq!(RetryPolicy::attempts_for(Some(&only_5xx), ErrorKind::Upstream5xx), 4);
        assert_eq!(RetryPolicy::attempts_for(Some(&only_5xx), ErrorKind::Timeout), 1);
    }

    #[test]
    fn bad_values_are_refused() {
        let spec =
            RetrySpec { policy: Backoff::Fixed, max_attempts: Some(0), delay: None, max_delay: None, factor: None, jitter: None, on: None };
        assert!(spec.build().unwrap_err().contains("max_attempts"));
        let err = serde_json::from_value::<RetrySpec>(serde_json::json!({"policy": "fixed", "delay": "soon"})).unwrap_err();
        assert!(err.to_string().contains("bad duration"), "{err}");
    }
}
