//! The `server:` section of flowguard.yaml.

use crate::config::HumanDuration;
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on, e.g. `127.0.0.1:7878` or `0.0.0.0:7878`.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Bearer tokens of the API, each at least 16 characters. With none, the API is open, and `serve` refuses a non-loopback `listen`.
    #[serde(default)]
    pub tokens: Vec<TokenConfig>,
    /// Largest request body accepted.
    #[serde(default = "default_body")]
    pub max_body_bytes: usize,
    /// A request that takes longer is answered 503.
    #[serde(default = "default_timeout")]
    pub request_timeout: HumanDuration,
    /// Requests per token (a token bucket); past it the API answers 429 with Retry-After.
    #[serde(default)]
    pub rate_limit: RateLimitConfig,
    /// At SIGTERM/SIGINT, how long running runs get to finish.
    #[serde(default = "default_grace")]
    pub shutdown_grace: HumanDuration,
    /// How often the config and flow files are checked for changes (`0s`: only on SIGHUP).
    #[serde(default = "default_watch")]
    pub watch_interval: HumanDuration,
    /// Calls in flight per model, across all runs (a burst cannot flood a provider).
    #[serde(default)]
    pub model_concurrency: BTreeMap<String, usize>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: default_listen(),
            tokens: Vec::new(),
            max_body_bytes: default_body(),
            request_timeout: default_timeout(),
            rate_limit: RateLimitConfig::default(),
            shutdown_grace: default_grace(),
            watch_interval: default_watch(),
            model_concurrency: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Shown in logs instead of the token.
    pub name: String,
    /// The token, at least 16 characters; usually `${FLOWGUARD_API_TOKEN}`.
    pub token: String,
    /// What it may do: `read`, `operate` (includes read), `ingest` (post events only).
    pub scopes: Vec<Scope>,
}

/// What a token may do. `operate` includes `read`; `ingest` is only for posting events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    Read,
    Operate,
    Ingest,
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Requests per second a token may make on average (above 0).
    #[serde(default = "default_rate")]
    pub per_second: f64,
    /// Requests a token may make at once (at least 1).
    #[serde(default = "default_burst")]
    pub burst: f64,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig { per_second: default_rate(), burst: default_burst() }
    }
}

/// Shortest API token accepted: a short token is guessable.
pub const MIN_TOKEN_LEN: usize = 16;

impl ServerConfig {
    /// Problems as (field, message).
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (i, t) in self.tokens.iter().enumerate() {
            if t.token.trim().chars().count() < MIN_TOKEN_LEN {
                out.push((
                    format!("server.tokens[{i}].token"),
                    format!("the token of `{}` must be at least {MIN_TOKEN_LEN} characters", t.name),
                ));
            }
            if t.scopes.is_empty() {
                out.push((format!("server.tokens[{i}].scopes"), format!("the token of `{}` has no scope (read, operate, ingest)", t.name)));
            }
        }
        if !(self.rate_limit.per_second > 0.0 && self.rate_limit.burst >= 1.0) {
            out.push(("server.rate_limit".into(), "per_second must be above 0 and burst at least 1".into()));
        }
        out
    }
}

fn default_listen() -> String {
    "127.0.0.1:7878".into()
}
fn default_body() -> usize {
    4 * 1024 * 1024
}
fn default_timeout() -> HumanDuration {
    HumanDuration::secs(30)
}
fn default_grace() -> HumanDuration {
    HumanDuration::secs(30)
}
fn default_watch() -> HumanDuration {
    HumanDuration::secs(2)
}
fn default_rate() -> f64 {
    50.0
}
fn default_burst() -> f64 {
    100.0
}
