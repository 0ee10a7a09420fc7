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
    /// Requests per second per token (a token bucket; 429 with Retry-After past it). Size it from
    /// a token's callers: an ingestion sender posting one batch per finished run needs about runs
    /// per second; give each sender its own token rather than raising one token's limit.
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
    /// API reads (GET) served at once; more wait their turn, first come first served. Writes
    /// (ingestion, triggers, operator actions) do not wait behind them: they have their own
    /// connections to the database.
    #[serde(default = "default_read_concurrency")]
    pub read_concurrency: usize,
}

impl ServerConfig {
    /// The checks that keep the API closed, run at start and on every reload (a reload that
    /// fails them is refused): tokens long enough to resist guessing, and no open API on an
    /// address other machines reach.
    pub fn check_access(&self, addr: std::net::SocketAddr) -> Result<(), String> {
        for t in &self.tokens {
            if t.token.trim().len() < MIN_TOKEN_LEN {
                return Err(format!("server.tokens `{}`: the token must be at least {MIN_TOKEN_LEN} characters", t.name));
            }
        }
        if self.tokens.is_empty() && !addr.ip().is_loopback() {
            return Err(format!(
                "server.listen is {addr}, not a loopback address, and server.tokens is empty: add a token so the API is not open"
            ));
        }
        Ok(())
    }
}

/// Shortest API token accepted.
pub const MIN_TOKEN_LEN: usize = 16;

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
            read_concurrency: default_read_concurrency(),
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
    /// Refill rate of each token's bucket (default 50).
    #[serde(default = "default_rate")]
    pub per_second: f64,
    /// Bucket size: requests a token may make at once after being idle (default 100).
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
fn default_watch() -> String {
    "2s".into()
}
fn default_read_concurrency() -> usize {
    4
}
fn default_rate() -> f64 {
    50.0
}
fn default_burst() -> f64 {
    100.0
}
