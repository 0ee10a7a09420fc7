//! A breaker per model (DESIGN.md §4 "Models and fallbacks"): once a model's calls fail at or
//! above its threshold over a sliding window, it is taken out of every fallback chain for a
//! cooldown; then one probe call tries it again, and its success closes the breaker.
//!
//! The state lives in the database (store/breakers.rs), so every run of every process on it sees
//! one breaker per model and exactly one process makes each change. Time is the engine's clock,
//! so tests drive the window and the cooldown without waiting.

use crate::config::{BreakerConfig, Config};
use crate::store::Store;
use crate::store::breakers::{BreakerRow, CLOSED, Change, HALF_OPEN, OPEN};
use crate::vocab::ErrorKind;
use std::collections::BTreeMap;

/// The breakers of the configured models (those that have one).
#[derive(Debug, Clone, Default)]
pub struct Breakers {
    settings: BTreeMap<String, BreakerConfig>,
}

/// What a call to a model may do.
#[derive(Debug, Clone, PartialEq)]
pub enum Admission {
    /// The model has no breaker, or it is closed: call it.
    Call,
    /// This call is the one probe of a half-open breaker (of this generation).
    Probe { generation: i64 },
    /// The breaker is open (or another call is probing): skip the model.
    Skip { reason: String },
}

/// A breaker as `flowguard models`, `/api/v1/health` and `/metrics` show it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BreakerStatus {
    pub model: String,
    /// `closed`, `open` or `half_open`.
    pub state: String,
    /// When it entered that state (epoch ms); none when it never changed.
    pub since: Option<i64>,
    /// The sliding window now.
    pub calls: i64,
    pub failures: i64,
    /// Percent of the window's calls that failed.
    pub failure_rate: f64,
    pub threshold: f64,
    pub min_calls: u32,
    pub window_ms: i64,
    pub cooldown_ms: i64,
    /// While open: when the probe may go.
    pub probe_at: Option<i64>,
    /// The figures of the window when the state last changed.
    pub opened_calls: i64,
    pub opened_failures: i64,
    /// The last change: `opened`, `probe`, `closed`, `reopened`.
    pub last_change: Option<String>,
}

/// An open, a probe or a close, as it happened, with its figures.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub model: String,
    /// `opened`, `probe`, `closed`, `reopened`.
    pub event: &'static str,
    pub at: i64,
    pub calls: i64,
    pub failures: i64,
    /// The threshold, in percent.
    pub threshold: f64,
    pub window_ms: i64,
    pub cooldown_ms: i64,
    pub run_id: Option<String>,
}

impl Transition {
    /// Failed share of the window's calls, in percent.
    pub fn failure_rate(&self) -> f64 {
        rate(self.calls, self.failures)
    }
}

pub fn rate(calls: i64, failures: i64) -> f64 {
    if calls > 0 { failures as f64 * 100.0 / calls as f64 } else { 0.0 }
}

impl Breakers {
    pub fn from_config(cfg: &Config) -> Breakers {
        let settings = cfg.models.iter().filter_map(|(name, m)| m.breaker(&cfg.defaults).map(|b| (name.clone(), b.clone()))).collect();
        Breakers { settings }
    }

    /// The breaker settings of a model, if it has a breaker.
    pub fn settings(&self, model: &str) -> Option<&BreakerConfig> {
        self.settings.get(model)
    }

    pub fn models(&self) -> impl Iterator<Item = (&String, &BreakerConfig)> {
        self.settings.iter()
    }

    /// Whether a call may go to `model` now; claims the probe when the cooldown is over.
    pub async fn admit(&self, store: &Store, now: i64, model: &str, run_id: &str) -> anyhow::Result<(Admission, Option<Transition>)> {
        let Some(s) = self.settings.get(model) else { return Ok((Admission::Call, None)) };
        let row = store.breaker(model).await?;
        let cooldown = s.cooldown.as_ms();
        let claim = |from: &'static str, expired: bool| Change {
            model,
            from_state: from,
            from_generation: row.generation,
            to: HALF_OPEN,
            event: "probe",
            now,
            probe_until: Some(now + cooldown),
            calls: row.calls,
            failures: row.failures,
            run_id: Some(run_id),
            note: None,
            only_if_probe_expired: expired,
            reset_window: false,
        };
        let change = match row.state.as_str() {
            OPEN if now >= row.since + cooldown => claim(OPEN, false),
            HALF_OPEN if row.probe_until.is_none_or(|t| t < now) => claim(HALF_OPEN, true),
            OPEN | HALF_OPEN => return Ok((Admission::Skip { reason: skip_reason(&row, s) }, None)),
            _ => return Ok((Admission::Call, None)),
        };
        match store.breaker_change(&change).await? {
            Some(new) => Ok((Admission::Probe { generation: new.generation }, Some(self.transition(s, &new, "probe", Some(run_id))))),
            // Another process moved first: it probes, this call skips.
            None => Ok((Admission::Skip { reason: skip_reason(&store.breaker(model).await?, s) }, None)),
        }
    }

    /// Counts a call's outcome (`Err(kind)` a failure) and opens, closes or re-opens the breaker
    /// when the figures say so.
    pub async fn record(
        &self,
        store: &Store,
        now: i64,
        model: &str,
        admission: &Admission,
        outcome: Result<(), ErrorKind>,
        run_id: &str,
    ) -> anyhow::Result<Option<Transition>> {
        let Some(s) = self.settings.get(model) else { return Ok(None) };
        let window = s.window.as_ms();
        let width = (window / 10).max(1);
        let counts = match outcome {
            Ok(()) => true,
            Err(k) => s.count.contains(&k),
        };
        let failed = counts && outcome.is_err();
        if counts && !matches!(admission, Admission::Skip { .. }) {
            store.breaker_count(model, now.div_euclid(width) * width, failed).await?;
            if fastrand::u8(..64) == 0 {
                store.breaker_prune(model, now - window - width).await?;
            }
        }
        let since = (now - window).div_euclid(width) * width;
        match admission {
            Admission::Skip { .. } => Ok(None),
            Admission::Probe { generation } => {
                let (calls, failures) = store.breaker_window(model, since).await?;
                let (to, event) = if failed { (OPEN, "reopened") } else { (CLOSED, "closed") };
                let change = Change {
                    model,
                    from_state: HALF_OPEN,
                    from_generation: *generation,
                    to,
                    event,
                    now,
                    probe_until: None,
                    calls,
                    failures,
                    run_id: Some(run_id),
                    note: outcome.err().map(|k| format!("the probe failed: {k}")),
                    only_if_probe_expired: false,
                    reset_window: !failed,
                };
                Ok(store.breaker_change(&change).await?.map(|row| self.transition(s, &row, event, Some(run_id))))
            }
            Admission::Call if failed => {
                let (calls, failures) = store.breaker_window(model, since).await?;
                if calls < i64::from(s.min_calls) || rate(calls, failures) < s.failure_rate {
                    return Ok(None);
                }
                let row = store.breaker(model).await?;
                if row.state != CLOSED {
                    return Ok(None);
                }
                let change = Change {
                    model,
                    from_state: CLOSED,
                    from_generation: row.generation,
                    to: OPEN,
                    event: "opened",
                    now,
                    probe_until: None,
                    calls,
                    failures,
                    run_id: Some(run_id),
                    note: outcome.err().map(|k| format!("last failure: {k}")),
                    only_if_probe_expired: false,
                    reset_window: false,
                };
                let opened = store.breaker_change(&change).await?;
                if opened.is_some() {
                    store.breaker_prune(model, since).await?;
                }
                Ok(opened.map(|row| self.transition(s, &row, "opened", Some(run_id))))
            }
            Admission::Call => Ok(None),
        }
    }

    /// Every breaker as it is now: state, since when, the window's figures and the last change.
    pub async fn status(&self, store: &Store, now: i64) -> anyhow::Result<Vec<BreakerStatus>> {
        let mut out = Vec::new();
        for (model, s) in &self.settings {
            let row = store.breaker(model).await?;
            let window = s.window.as_ms();
            let width = (window / 10).max(1);
            let (calls, failures) = store.breaker_window(model, (now - window).div_euclid(width) * width).await?;
            let last = store.breaker_events(Some(model), 1).await?.into_iter().next();
            out.push(BreakerStatus {
                model: model.clone(),
                state: row.state.clone(),
                since: (row.since > 0).then_some(row.since),
                calls,
                failures,
                failure_rate: rate(calls, failures),
                threshold: s.failure_rate,
                min_calls: s.min_calls,
                window_ms: window,
                cooldown_ms: s.cooldown.as_ms(),
                probe_at: (row.state == OPEN).then(|| row.since + s.cooldown.as_ms()),
                opened_calls: row.calls,
                opened_failures: row.failures,
                last_change: last.map(|e| e.event),
            });
        }
        Ok(out)
    }

    fn transition(&self, s: &BreakerConfig, row: &BreakerRow, event: &'static str, run_id: Option<&str>) -> Transition {
        Transition {
            model: row.model.clone(),
            event,
            at: row.since,
            calls: row.calls,
            failures: row.failures,
            threshold: s.failure_rate,
            window_ms: s.window.as_ms(),
            cooldown_ms: s.cooldown.as_ms(),
            run_id: run_id.map(str::to_owned),
        }
    }
}

/// Why a call skips the model, with the breaker's figures.
fn skip_reason(row: &BreakerRow, s: &BreakerConfig) -> String {
    let what = if row.state == HALF_OPEN { "is half-open (another call is probing it)" } else { "is open" };
    format!(
        "breaker_open: the breaker of `{}` {what} since {} ({} of {} calls failed, {:.0}% ≥ {}%); probe after {}",
        row.model,
        fmt_ms(row.since),
        row.failures,
        row.calls,
        rate(row.calls, row.failures),
        s.failure_rate,
        s.cooldown,
    )
}

fn fmt_ms(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms).map(|t| t.to_string()).unwrap_or_else(|_| ms.to_string())
}
