//! OpenAI-compatible chat completions (`POST {base_url}/chat/completions`): OpenAI, DeepSeek,
//! Doubao/Ark, Qwen compatible mode, Moonshot, Zhipu, Ollama and the like.

use super::{ChatReply, ChatRequest, ModelClient};
use crate::classify::{classify_ok_body, classify_status, classify_transport, retry_after};
use crate::clock::SharedClock;
use crate::config::ModelConfig;
use crate::nodes::{Meta, NodeError};
use crate::vocab::ErrorKind;
use futures::future::BoxFuture;
use serde_json::{Value as Json, json};

pub struct OpenAi {
    base_url: String,
    api_key: Option<String>,
    model: String,
    temperature: Option<f64>,
    max_tokens: Option<u32>,
    http: reqwest::Client,
}

impl OpenAi {
    pub fn new(cfg: &ModelConfig, http: reqwest::Client) -> Self {
        OpenAi {
            base_url: cfg.base_url.clone().unwrap_or_default().trim_end_matches('/').to_owned(),
            api_key: cfg.api_key.clone(),
            model: cfg.model.clone().unwrap_or_default(),
            temperature: cfg.temperature,
            max_tokens: cfg.max_tokens,
            http,
        }
    }

    async fn call(&self, req: &ChatRequest) -> Result<ChatReply, NodeError> {
        let mut messages = Vec::new();
        if let Some(s) = &req.system {
            messages.push(json!({"role": "system", "content": s}));
        }
        messages.push(json!({"role": "user", "content": req.prompt}));
        let mut body = json!({"model": self.model, "messages": messages});
        if let Some(t) = req.temperature.or(self.temperature) {
            body["temperature"] = json!(t);
        }
        if let Some(m) = req.max_tokens.or(self.max_tokens) {
            body["max_tokens"] = json!(m);
        }
        if req.json {
            body["response_format"] = json!({"type": "json_object"});
        }
        let mut rb = self.http.post(format!("{}/chat/completions", self.base_url)).json(&body);
        if let Some(key) = &self.api_key {
            rb = rb.bearer_auth(key);
        }
        let meta = |status: Option<u16>| Meta { model: Some(self.model.clone()), http_status: status, ..Default::default() };
        let resp = rb.send().await.map_err(|e| {
            let (kind, msg) = classify_transport(&e);
            NodeError::new(kind, msg).with_meta(meta(None))
        })?;
        let status = resp.status().as_u16();
        let wait = retry_after(resp.headers().get("retry-after").and_then(|v| v.to_str().ok()));
        let bytes = crate::net::read_limited(resp, crate::net::MAX_BODY)
            .await
            .map_err(|m| NodeError::new(ErrorKind::GenerationMalformed, m).with_meta(meta(Some(status))))?;
        if !(200..300).contains(&status) {
            let (kind, msg) = classify_status(status, &bytes, false);
            let mut e = NodeError::new(kind, msg).with_meta(meta(Some(status)));
            e.retry_after = wait;
            return Err(e);
        }
        let malformed = |m: String| NodeError::new(ErrorKind::GenerationMalformed, m).with_meta(meta(Some(status)));
        let text = std::str::from_utf8(&bytes).map_err(|_| malformed("the provider's answer is not UTF-8".into()))?;
        let v: Json = serde_json::from_str(text).map_err(|e| malformed(format!("the provider's answer is not JSON: {e}")))?;
        if let Some((kind, msg)) = classify_ok_body(&v).filter(|_| v.get("choices").is_none()) {
            return Err(NodeError::new(kind, msg).with_meta(meta(Some(status))));
        }
        let usage = v.get("usage");
        let tokens = |k: &str| usage.and_then(|u| u.get(k)).and_then(Json::as_i64);
        let mut m = meta(Some(status));
        m.tokens_in = tokens("prompt_tokens");
        m.tokens_out = tokens("completion_tokens");
        let Some(choice) = v.get("choices").and_then(|c| c.get(0)) else {
            return Err(NodeError::new(ErrorKind::GenerationEmpty, "the model returned no choices").with_meta(m));
        };
        let finish = choice.get("finish_reason").and_then(Json::as_str).map(str::to_owned);
        let content = choice.pointer("/message/content").and_then(Json::as_str).unwrap_or("").to_owned();
        match finish.as_deref() {
            // `content_filter` (OpenAI, Moonshot, DashScope); `sensitive` (Zhipu).
            Some("content_filter" | "sensitive") => {
                return Err(NodeError::new(ErrorKind::ContentBlocked, "the provider's content filter stopped the answer").with_meta(m));
            }
            Some("length") => {
                return Err(NodeError::new(ErrorKind::GenerationMalformed, "the answer was cut off (finish_reason=length)").with_meta(m));
            }
            _ => {}
        }
        if content.trim().is_empty() {
            return Err(NodeError::new(ErrorKind::GenerationEmpty, "the model returned empty content").with_meta(m));
        }
        Ok(ChatReply {
            content,
            finish_reason: finish,
            tokens_in: m.tokens_in,
            tokens_out: m.tokens_out,
            model: v.get("model").and_then(Json::as_str).unwrap_or(&self.model).to_owned(),
            status,
        })
    }
}

impl ModelClient for OpenAi {
    fn chat<'a>(&'a self, req: &'a ChatRequest, _clock: &'a SharedClock) -> BoxFuture<'a, Result<ChatReply, NodeError>> {
        Box::pin(self.call(req))
    }
    fn label(&self) -> String {
        format!("openai:{}", self.model)
    }
}
