//! `condition`: branches. Evaluates `if`, then jumps to `then` or `else` (both forward); without
//! `else` a false condition goes on to the next node in the file.
//!
//! ```yaml
//! - id: has_topic
//!   kind: condition
//!   if: "nodes.kb.topics | length > 0"
//!   then: script
//!   else: fallback_topic
//! ```

use super::{BuildCx, NodeError, NodeKind, Output, Raw, RunCx};
use crate::flow::Diagnostic;
use crate::flow::template::Tmpl;
use futures::future::BoxFuture;
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Params {
    /// A minijinja expression, e.g. `nodes.qc.passed and input.publish`.
    #[serde(rename = "if")]
    cond: String,
    /// The node to jump to when the expression is true (forward only).
    then: Option<String>,
    /// The node to jump to when it is false.
    #[serde(rename = "else")]
    otherwise: Option<String>,
}

#[derive(Debug)]
struct Condition {
    cond: Tmpl,
    then: Option<String>,
    otherwise: Option<String>,
}

pub fn build(raw: Raw<'_>, cx: &mut BuildCx<'_>) -> Result<Arc<dyn NodeKind>, Diagnostic> {
    let p: Params = raw.parse()?;
    let cond = cx.condition("if", &p.cond);
    if p.then.is_none() && p.otherwise.is_none() {
        cx.error("if", "a condition needs `then`, `else` or both");
    }
    Ok(Arc::new(Condition { cond, then: p.then, otherwise: p.otherwise }))
}

impl NodeKind for Condition {
    fn pure(&self) -> bool {
        true
    }

    fn run<'a>(&'a self, cx: &'a RunCx<'a>) -> BoxFuture<'a, Result<Output, NodeError>> {
        Box::pin(async move {
            let result = cx.truthy(&self.cond)?;
            let next = if result { self.then.clone() } else { self.otherwise.clone() };
            Ok(Output { value: json!({"result": result, "next": next}), next, ..Default::default() })
        })
    }

    fn jumps(&self) -> Vec<String> {
        self.then.iter().chain(self.otherwise.iter()).cloned().collect()
    }
}
