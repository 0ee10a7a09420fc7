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
    /// Requests per second per token (a token bucket; 429 with Retry-After past it). Size it from
    /// a token's callers: an ingestion sender posting one batch per finished run needs about runs
    /// per second; give each sender its own token rather than raising one token's limit.
    #[serde(default)]
    pub rate_limit: RateLimitConfig,
    /// At SIGTERM/SIGINT, how long running runs get to finish.
    #[serde(default = "default_grace")]
    pub shutdown_grace: HumanDuration,
    /// How often the config and flow files are checked for changes (`0s`: only on SIGHUP).
    #[serde(default = "default_watch")]
    pub watch_interval: HumanDuration,
    /// Calls in flight per model, across all runs of every process on the database (each `serve`
    /// and `flowguard run`), so a burst cannot flood a provider. A killed process's calls count
    /// until its `storage.lease` runs out.
    #[serde(default)]
    pub model_concurrency: BTreeMap<String, usize>,
    /// API reads (GET) served at once; more wait their turn, first come first served. Writes
    /// (ingestion, triggers, operator actions) do not wait behind them: they have their own
    /// connections to the database.
    #[serde(default = "default_read_concurrency")]
    pub read_concurrency: usize,
    /// An external run (ingested events) that started and then sent nothing for this long is
    /// recorded `interrupted` and alerted (`0s`: never).
    #[serde(default = "default_external_silence")]
    pub external_silence: HumanDuration,
    /// Where people open the dashboard, e.g. `https://flowguard.example.com`. Alert messages
    /// link to its run page (`<public_url>/runs/<run id>`) unless `alerting.run_url` says
    /// otherwise; without it, they link to `http://<listen>/runs/<run id>` when `listen` is a
    /// loopback address with a fixed port.
    #[serde(default)]
    pub public_url: Option<String>,
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
            external_silence: default_external_silence(),
            public_url: None,
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

/// Shortest API token accepted: a short token is guessable.
pub const MIN_TOKEN_LEN: usize = 16;

impl ServerConfig {
    /// The dashboard's run page as an alert link pattern (`{run_id}` replaced), when known.
    pub fn dashboard_run_url(&self) -> Option<String> {
        if let Some(base) = &self.public_url {
            return Some(format!("{}/runs/{{run_id}}", base.trim_end_matches('/')));
        }
        let addr: std::net::SocketAddr = self.listen.parse().ok()?;
        (addr.ip().is_loopback() && addr.port() != 0).then(|| format!("http://{addr}/runs/{{run_id}}"))
    }

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
        if let Some(u) = &self.public_url
            && !(u.starts_with("http://") || u.starts_with("https://"))
        {
            out.push(("server.public_url".into(), format!("`{u}` is not an http:// or https:// address")));
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
fn default_read_concurrency() -> usize {
    4
}
fn default_external_silence() -> HumanDuration {
    HumanDuration::secs(3600)
}
fn default_rate() -> f64 {
    50.0
}
fn default_burst() -> f64 {
    100.0
}
