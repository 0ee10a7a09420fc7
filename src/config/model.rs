//! A model's breaker and price, as the config declares them (`models.<name>.breaker`,
//! `models.<name>.price`, `defaults.breaker`).

use super::HumanDuration;
use crate::vocab::ErrorKind;
use serde::Deserialize;

/// When a model is taken out of its fallback chains for a while, and how it is let back in.
///
/// The breaker counts the model's calls over a sliding `window`: once at least `min_calls` were
/// made and `failure_rate` percent of them failed with a kind listed in `count`, it opens and
/// every call skips the model for `cooldown`; then one call (the probe) tries it again, and its
/// success closes the breaker. The state is kept in the database, shared by every process on it.
#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BreakerConfig {
    /// `false` turns the breaker off for this model (or, in `defaults`, for every model that sets none).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Calls the window must hold before the failure rate is judged.
    #[serde(default = "default_min_calls")]
    pub min_calls: u32,
    /// Percent of failed calls in the window at which the breaker opens (1–100).
    #[serde(default = "default_failure_rate")]
    pub failure_rate: f64,
    /// How far back the calls are counted.
    #[serde(default = "default_window")]
    pub window: HumanDuration,
    /// How long an open breaker skips the model before one probe call tries it again (a probe
    /// that has not finished after this long lets another process probe).
    #[serde(default = "default_cooldown")]
    pub cooldown: HumanDuration,
    /// The error kinds that count as the model failing. Failures of other kinds (a quality
    /// check rejecting the text, an `expect` check) neither count nor spoil the rate.
    #[serde(default = "default_count")]
    pub count: Vec<ErrorKind>,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            enabled: true,
            min_calls: default_min_calls(),
            failure_rate: default_failure_rate(),
            window: default_window(),
            cooldown: default_cooldown(),
            count: default_count(),
        }
    }
}

impl BreakerConfig {
    /// What is wrong with these settings, by field.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if !(self.failure_rate > 0.0 && self.failure_rate <= 100.0) {
            out.push(("failure_rate", format!("must be a percentage above 0 and at most 100, not {}", self.failure_rate)));
        }
        if self.min_calls == 0 {
            out.push(("min_calls", "must be at least 1".to_owned()));
        }
        if self.window.get().as_millis() < 10 {
            out.push(("window", "must be at least 10ms".to_owned()));
        }
        if self.cooldown.get().is_zero() {
            out.push(("cooldown", "must be above 0".to_owned()));
        }
        out
    }
}

/// What a model's tokens cost, per million, in a named currency.
#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PriceConfig {
    /// The currency of both prices, as its ISO 4217 code: `CNY`, `USD` ….
    pub currency: String,
    /// Price of one million prompt (input) tokens.
    pub prompt: f64,
    /// Price of one million completion (output) tokens.
    pub completion: f64,
}

impl PriceConfig {
    /// The cost of one call in billionths of the currency unit (kept as an integer so that sums
    /// are exact on every database).
    pub fn cost_nanos(&self, tokens_in: Option<i64>, tokens_out: Option<i64>) -> Option<i64> {
        if tokens_in.is_none() && tokens_out.is_none() {
            return None;
        }
        // Per million tokens → per token is 1e-6; in nano-units, 1e3 per token per unit of price.
        let nanos =
            tokens_in.unwrap_or(0).max(0) as f64 * self.prompt * 1e3 + tokens_out.unwrap_or(0).max(0) as f64 * self.completion * 1e3;
        Some(nanos.round() as i64)
    }

    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        let c = &self.currency;
        if c.len() != 3 || !c.chars().all(|ch| ch.is_ascii_uppercase()) {
            out.push(("currency", format!("expected a three-letter ISO 4217 code such as CNY or USD, not `{c}`")));
        }
        for (field, v) in [("prompt", self.prompt), ("completion", self.completion)] {
            if !(v.is_finite() && v >= 0.0) {
                out.push((field, format!("must be a price of 0 or more, not {v}")));
            }
        }
        out
    }
}

/// A cost in billionths of a currency unit, written for people: `0.0123`.
pub fn format_cost(nanos: i64) -> String {
    // Six decimals (a call often costs a fraction of a cent), trailing zeros dropped down to four.
    let mut s = format!("{:.6}", nanos as f64 / 1e9);
    while s.len() - s.find('.').unwrap_or(0) > 5 && s.ends_with('0') {
        s.pop();
    }
    s
}

fn yes() -> bool {
    true
}
fn default_min_calls() -> u32 {
    10
}
fn default_failure_rate() -> f64 {
    50.0
}
fn default_window() -> HumanDuration {
    HumanDuration::secs(300)
}
fn default_cooldown() -> HumanDuration {
    HumanDuration::secs(60)
}
/// Provider failures: what says the model (or its provider) is unwell, not the text it wrote.
pub fn default_count() -> Vec<ErrorKind> {
    use ErrorKind::*;
    vec![Timeout, Network, Upstream5xx, RateLimited, QuotaExhausted, AuthExpired, GenerationEmpty]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn costs_are_priced_per_million_tokens() {
        let p = PriceConfig { currency: "CNY".into(), prompt: 2.0, completion: 8.0 };
        // 1,000 prompt tokens at ¥2/M = ¥0.002; 500 completion tokens at ¥8/M = ¥0.004.
        assert_eq!(p.cost_nanos(Some(1000), Some(500)), Some(6_000_000));
        assert_eq!(p.cost_nanos(None, None), None);
        assert_eq!(format_cost(6_000_000), "0.0060");
        assert_eq!(format_cost(296_000), "0.000296");
        assert_eq!(format_cost(12_345_600_000), "12.3456");
        assert!(p.problems().is_empty());
        let bad = PriceConfig { currency: "yuan".into(), prompt: -1.0, completion: 1.0 };
        assert_eq!(bad.problems().len(), 2);
    }
}
