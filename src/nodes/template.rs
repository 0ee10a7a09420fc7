//! `template`: renders text or a JSON value from run inputs and earlier outputs.
//!
//! ```yaml
//! - id: caption
//!   kind: template
//!   text: "{{ nodes.script.title }} {{ nodes.script.hashtags | join(' ') }}"
//! ```

use super::{BuildCx, NodeError, NodeKind, Output, Raw, RunCx};
use crate::flow::Diagnostic;
use crate::flow::template::{JsonTmpl, Tmpl};
use futures::future::BoxFuture;
use serde::Deserialize;
use serde_json::Value as Json;
use std::sync::Arc;

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Params {
    /// Text to render; the output is a string.
    text: Option<String>,
    /// A JSON value whose strings are rendered; the output keeps its shape.
    value: Option<Json>,
}

#[derive(Debug)]
enum Body {
    Text(Tmpl),
    Value(JsonTmpl),
}

#[derive(Debug)]
struct Template(Body);

pub fn build(raw: Raw<'_>, cx: &mut BuildCx<'_>) -> Result<Arc<dyn NodeKind>, Diagnostic> {
    let p: Params = raw.parse()?;
    let body = match (p.text, p.value) {
        (Some(t), None) => Body::Text(cx.string("text", &t)),
        (None, Some(v)) => Body::Value(cx.json("value", &v)),
        _ => {
            cx.error("text", "a template node needs exactly one of `text` or `value`");
            Body::Text(Tmpl::Plain(String::new()))
        }
    };
    Ok(Arc::new(Template(body)))
}

impl NodeKind for Template {
    fn pure(&self) -> bool {
        true
    }

    fn run<'a>(&'a self, cx: &'a RunCx<'a>) -> BoxFuture<'a, Result<Output, NodeError>> {
        Box::pin(async move {
            let value = match &self.0 {
                Body::Text(t) => Json::String(cx.text(t)?),
                Body::Value(v) => cx.json(v)?,
            };
            Ok(Output { value, ..Default::default() })
        })
    }
}
