//! The `server:` section of flowguard.yaml.

use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on, e.g. `127.0.0.1:7878` or `0.0.0.0:7878`.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Bearer tokens of the API. With none, the API is open, and only on a loopback address.
    #[serde(default)]
    pub tokens: Vec<TokenConfig>,
    /// Largest request body accepted.
    #[serde(default = "default_body")]
    pub max_body_bytes: usize,
    /// A request that takes longer is answered 503.
    #[serde(default = "default_timeout")]
    pub request_timeout: String,
    /// Requests per second per token (a token bucket).
    #[serde(default)]
    pub rate_limit: RateLimitConfig,
    /// At SIGTERM/SIGINT, how long running runs get to finish.
    #[serde(default = "default_grace")]
    pub shutdown_grace: String,
    /// How often the config and flow files are checked for changes (`0s`: only on SIGHUP).
    #[serde(default = "default_watch")]
    pub watch_interval: String,
    /// Calls in flight per model, across all runs (a burst cannot flood a provider).
    #[serde(default)]
    pub model_concurrency: BTreeMap<String, usize>,
    /// An external run (ingested events) that started and then sent nothing for this long is
    /// recorded `interrupted` and alerted (`0s`: never).
    #[serde(default = "default_external_silence")]
    pub external_silence: String,
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
            external_silence: default_external_silence(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Shown in logs instead of the token.
    pub name: String,
    /// Usually `${FLOWGUARD_API_TOKEN}`.
    pub token: String,
    pub scopes: Vec<Scope>,
}

/// What a token may do. `operate` includes `read`; `ingest` is only for posting events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    Read,
    Operate,
    Ingest,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    #[serde(default = "default_rate")]
    pub per_second: f64,
    #[serde(default = "default_burst")]
    pub burst: f64,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig { per_second: default_rate(), burst: default_burst() }
    }
}

fn default_listen() -> String {
    "127.0.0.1:7878".into()
}
fn default_body() -> usize {
    4 * 1024 * 1024
}
fn default_timeout() -> String {
    "30s".into()
}
fn default_grace() -> String {
    "30s".into()
}
fn default_external_silence() -> String {
    "1h".into()
}
fn default_watch() -> String {
    "2s".into()
}
fn default_rate() -> f64 {
    50.0
}
fn default_burst() -> f64 {
    100.0
}
