//! Model providers behind one trait: any OpenAI-compatible chat completions API, and the simulator.

pub mod breaker;
pub mod limited;
mod openai;

use crate::clock::SharedClock;
use crate::config::{ModelConfig, Provider};
use crate::nodes::NodeError;
use futures::future::BoxFuture;
use std::sync::Arc;

#[derive(Debug, Clone, Default)]
pub struct ChatRequest {
    pub system: Option<String>,
    pub prompt: String,
    /// Ask for a JSON object (`response_format: json_object`).
    pub json: bool,
    pub temperature: Option<f64>,
    pub max_tokens: Option<u32>,
}

#[derive(Debug, Clone, Default)]
pub struct ChatReply {
    pub content: String,
    pub finish_reason: Option<String>,
    pub tokens_in: Option<i64>,
    pub tokens_out: Option<i64>,
    /// The provider's model name.
    pub model: String,
    pub status: u16,
}

pub trait ModelClient: Send + Sync {
    /// Sends one chat request. Failures come back classified (DESIGN.md §4).
    fn chat<'a>(&'a self, req: &'a ChatRequest, clock: &'a SharedClock) -> BoxFuture<'a, Result<ChatReply, NodeError>>;
    /// Shown in run records: `provider:model`.
    fn label(&self) -> String;
}

pub fn build(name: &str, cfg: &ModelConfig, http: reqwest::Client) -> Arc<dyn ModelClient> {
    match cfg.provider {
        Provider::Openai => Arc::new(openai::OpenAi::new(cfg, http)),
        Provider::Simulated => Arc::new(crate::sim::SimModel::new(name, cfg)),
    }
}
