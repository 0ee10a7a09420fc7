//! The settings of the simulator (`simulate:` under a model or an endpoint).

use crate::config::HumanDuration;
use serde::Deserialize;
use serde_json::Value as Json;

/// Fault rates of the simulated model, each 0..1, drawn once per call.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelFaults {
    /// No content (`generation_empty`).
    #[serde(default)]
    pub empty: f64,
    /// Prose instead of the JSON asked for (`generation_malformed`).
    #[serde(default)]
    pub malformed: f64,
    /// Cut off: finish_reason=length (`generation_malformed`).
    #[serde(default)]
    pub length: f64,
    /// Never answers within the node's time limit (`timeout`).
    #[serde(default)]
    pub timeout: f64,
    /// HTTP 429 with Retry-After (`rate_limited`).
    #[serde(default)]
    pub rate_limited: f64,
    /// HTTP 401 (`auth_expired`).
    #[serde(default)]
    pub auth: f64,
    /// HTTP 429 insufficient_quota (`quota_exhausted`).
    #[serde(default)]
    pub quota: f64,
    /// HTTP 5xx (`upstream_5xx`).
    #[serde(default)]
    pub server_error: f64,
    /// The provider's content filter (`content_blocked`).
    #[serde(default)]
    pub content_filter: f64,
    /// A banned word in the script, for the quality check to catch (`quality_rejected`).
    #[serde(default)]
    pub sensitive: f64,
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SimModelConfig {
    /// Time to answer.
    #[serde(default = "default_latency")]
    pub latency: HumanDuration,
    /// Seed of the fault draws: the same seed gives the same sequence.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Fault rates, each 0..1: `empty`, `malformed`, `length`, `timeout`, `rate_limited`, `auth`, `quota`, `server_error`, `content_filter`, `sensitive`.
    #[serde(default)]
    pub faults: ModelFaults,
}

impl Default for SimModelConfig {
    fn default() -> Self {
        SimModelConfig { latency: default_latency(), seed: default_seed(), faults: ModelFaults::default() }
    }
}

fn default_latency() -> HumanDuration {
    HumanDuration::millis(200)
}
fn default_seed() -> u64 {
    42
}

/// Fault rates of a simulated endpoint, each 0..1.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointFaults {
    /// Answers `empty_body` (the query found nothing).
    #[serde(default)]
    pub empty: f64,
    /// Never answers within the node's time limit.
    #[serde(default)]
    pub timeout: f64,
    /// HTTP 503.
    #[serde(default)]
    pub server_error: f64,
    /// HTTP 401 with an expired-token code.
    #[serde(default)]
    pub auth: f64,
    /// HTTP 422: the content was rejected.
    #[serde(default)]
    pub rejected: f64,
    /// HTTP 429 with Retry-After.
    #[serde(default)]
    pub rate_limited: f64,
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SimEndpointConfig {
    /// Time to answer.
    #[serde(default = "default_endpoint_latency")]
    pub latency: HumanDuration,
    /// Seed of the fault draws.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// The answer; without one the endpoint echoes the request with an id.
    pub body: Option<Json>,
    /// The answer for an `empty` fault.
    pub empty_body: Option<Json>,
    /// Fault rates, each 0..1: `empty`, `timeout`, `server_error`, `auth`, `rejected`, `rate_limited`.
    #[serde(default)]
    pub faults: EndpointFaults,
}

fn default_endpoint_latency() -> HumanDuration {
    HumanDuration::millis(50)
}
