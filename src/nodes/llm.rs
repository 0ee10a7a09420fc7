//! `llm`: one chat completion on a configured model. In JSON mode the reply's JSON object is
//! extracted (from a ```json fence or the first `{` to the last `}`) and parsed; a reply without
//! one is `generation_malformed`.
//!
//! ```yaml
//! - id: script
//!   kind: llm
//!   model: writer            # from flowguard.yaml; its `fallback` chain is walked on failure
//!   system: 你是一名抖音短视频编剧。
//!   prompt: "主题: {{ nodes.topic.topic }}"
//!   json: true
//! ```

use super::{BuildCx, Meta, NodeError, NodeKind, Output, Raw, RunCx};
use crate::flow::Diagnostic;
use crate::flow::template::Tmpl;
use crate::model::ChatRequest;
use crate::vocab::ErrorKind;
use futures::future::BoxFuture;
use serde::Deserialize;
use serde_json::Value as Json;
use std::sync::Arc;

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Params {
    /// A model named in the config.
    model: Option<String>,
    /// Overrides the model's fallback chain: these models, in order.
    models: Option<Vec<String>>,
    /// The system message (a template).
    system: Option<String>,
    /// The user message (a template over `input`, `nodes`, `run`).
    prompt: String,
    /// Ask for and parse a JSON object.
    #[serde(default)]
    json: bool,
    /// Overrides the model's `temperature`.
    temperature: Option<f64>,
    /// Overrides the model's `max_tokens`.
    max_tokens: Option<u32>,
}

#[derive(Debug)]
struct Llm {
    chain: Vec<String>,
    system: Option<Tmpl>,
    prompt: Tmpl,
    json: bool,
    temperature: Option<f64>,
    max_tokens: Option<u32>,
}

pub fn build(raw: Raw<'_>, cx: &mut BuildCx<'_>) -> Result<Arc<dyn NodeKind>, Diagnostic> {
    let p: Params = raw.parse()?;
    let chain = match (&p.model, &p.models) {
        (_, Some(list)) if !list.is_empty() => list.clone(),
        (Some(m), _) => cx.registry.chain(m),
        _ => {
            cx.error("model", "an llm node needs `model` (or `models`)");
            Vec::new()
        }
    };
    let field = if p.models.is_some() { "models" } else { "model" };
    for m in &chain {
        if !cx.registry.models.contains_key(m) {
            let hint = crate::flow::suggest(m, cx.registry.models.keys().map(String::as_str))
                .map(|s| format!(" (did you mean `{s}`?)"))
                .unwrap_or_default();
            let known = cx.registry.models.keys().cloned().collect::<Vec<_>>().join(", ");
            cx.error(field, format!("unknown model `{m}`{hint}; the config declares: {known}"));
        }
    }
    let system = p.system.as_deref().map(|s| cx.string("system", s));
    let prompt = cx.string("prompt", &p.prompt);
    Ok(Arc::new(Llm { chain, system, prompt, json: p.json, temperature: p.temperature, max_tokens: p.max_tokens }))
}

impl NodeKind for Llm {
    fn run<'a>(&'a self, cx: &'a RunCx<'a>) -> BoxFuture<'a, Result<Output, NodeError>> {
        Box::pin(async move {
            let name = cx.model.or(self.chain.first().map(String::as_str)).unwrap_or_default();
            let client =
                cx.reg.models.get(name).ok_or_else(|| NodeError::new(ErrorKind::Internal, format!("model `{name}` is not configured")))?;
            let mut system = self.system.as_ref().map(|s| cx.text(s)).transpose()?;
            if self.json {
                let hint = "Answer with one JSON object only.";
                system = Some(match system {
                    Some(s) if !s.contains("JSON") => format!("{s}\n{hint}"),
                    Some(s) => s,
                    None => hint.to_owned(),
                });
            }
            // What is recorded is what the model receives: the repair feedback included.
            let prompt = match cx.repair {
                Some(repair) => {
                    let mut p = cx.templates.render_text(&self.prompt, cx.scope).map_err(|m| NodeError::new(ErrorKind::Internal, m))?;
                    p.push_str(&repair_feedback(repair, &cx.reg.locale));
                    cx.record(&Json::String(p.clone()));
                    p
                }
                None => cx.text(&self.prompt)?,
            };
            let req = ChatRequest { system, prompt, json: self.json, temperature: self.temperature, max_tokens: self.max_tokens };
            let reply = client.chat(&req, cx.clock).await?;
            let meta = Meta {
                model: Some(reply.model.clone()),
                tokens_in: reply.tokens_in,
                tokens_out: reply.tokens_out,
                http_status: Some(reply.status),
            };
            let value = if self.json {
                extract_json(&reply.content).map_err(|m| NodeError::new(ErrorKind::GenerationMalformed, m).with_meta(meta.clone()))?
            } else {
                Json::String(reply.content)
            };
            Ok(Output { value, next: None, meta })
        })
    }

    fn model_chain(&self) -> Vec<String> {
        self.chain.clone()
    }

    fn failure_kinds(&self, _side_effect: bool) -> Vec<ErrorKind> {
        let mut kinds = vec![ErrorKind::GenerationEmpty, ErrorKind::GenerationMalformed, ErrorKind::ContentBlocked];
        kinds.extend(super::remote_failure_kinds(false));
        kinds
    }
}

/// The text appended to the prompt when the node re-runs to repair a rejected output.
fn repair_feedback(repair: &Json, locale: &str) -> String {
    let attempt = repair.get("attempt").and_then(Json::as_u64).unwrap_or(1);
    let items: Vec<String> = repair
        .get("violations")
        .and_then(Json::as_array)
        .map(|v| v.iter().filter_map(|x| x.get("message").and_then(Json::as_str)).map(|m| format!("- {m}")).collect())
        .unwrap_or_default();
    let list =
        if items.is_empty() { format!("- {}", repair.get("message").and_then(Json::as_str).unwrap_or("")) } else { items.join("\n") };
    if locale == "en" {
        format!(
            "\n\n{} The previous output was rejected (repair {attempt}). Fix every problem below and give the whole answer again:\n{list}",
            super::REPAIR_MARK_EN
        )
    } else {
        format!(
            "\n\n{}上一次的输出未通过质检（第 {attempt} 次修正）。请逐条修正以下问题，然后重新完整输出：\n{list}",
            super::REPAIR_MARK_ZH
        )
    }
}

/// The JSON object in a model's reply: the whole reply, a ```json fence, or `{` … `}`.
pub fn extract_json(text: &str) -> Result<Json, String> {
    let t = text.trim();
    let candidates = [
        Some(t),
        t.split("```json").nth(1).and_then(|r| r.split("```").next()),
        t.find('{').zip(t.rfind('}')).filter(|(a, b)| a < b).map(|(a, b)| &t[a..=b]),
    ];
    for c in candidates.into_iter().flatten() {
        if let Ok(v @ Json::Object(_)) = serde_json::from_str::<Json>(c.trim()) {
            return Ok(v);
        }
    }
    let preview: String = t.chars().take(80).collect();
    Err(format!("the reply is not the JSON object asked for: {preview:?}"))
}

#[cfg(test)]
mod tests {
    use super::extract_json;

    #[test]
    fn finds_json_in_fences_and_prose() {
        assert_eq!(extract_json(r#"{"a":1}"#).unwrap()["a"], 1);
        assert_eq!(extract_json("Sure!\n```json\n{\"a\":2}\n```\n").unwrap()["a"], 2);
        assert_eq!(extract_json("here: {\"a\":3} ok").unwrap()["a"], 3);
        assert!(extract_json("标题是露营，然后……").unwrap_err().contains("not the JSON"));
        assert!(extract_json("[1,2]").is_err());
    }
}
