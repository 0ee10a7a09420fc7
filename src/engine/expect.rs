//! `expect` checks: turn a "successful" but useless answer into a classified failure.
//!
//! ```yaml
//! expect:
//!   - non_empty: /topics          # a JSON pointer into the output ("" for the whole output)
//!     kind: data_empty            # the kind to fail with (default expectation_failed)
//!   - status_in: [200, 201]
//!   - present: /data/id
//!   - if: "output.score >= 0.6"   # a minijinja expression over `output` and the run scope
//!     message: the score is too low
//! ```

use crate::flow::template::{TemplateBuilder, Templates, Tmpl};
use crate::nodes::{NodeError, Output};
use crate::vocab::ErrorKind;
use serde::Deserialize;
use serde_json::Value as Json;

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExpectSpec {
    /// A JSON pointer into the output (`/topics`, `""` for the whole output) that must not be empty.
    non_empty: Option<String>,
    /// A JSON pointer that must exist in the output.
    present: Option<String>,
    /// HTTP statuses that count as success.
    status_in: Option<Vec<u16>>,
    /// A minijinja expression over `output` and the run scope that must be true.
    #[serde(rename = "if")]
    cond: Option<String>,
    /// The failure message (default: what the check found).
    message: Option<String>,
    /// The error kind to fail with (default `expectation_failed`).
    kind: Option<ErrorKind>,
}

#[derive(Debug, Clone)]
enum Check {
    NonEmpty(String),
    Present(String),
    StatusIn(Vec<u16>),
    If(Tmpl, String),
}

#[derive(Debug, Clone)]
pub struct Expect {
    check: Check,
    kind: ErrorKind,
    message: Option<String>,
}

impl ExpectSpec {
    pub fn build(&self, templates: &mut TemplateBuilder) -> Result<Expect, String> {
        let set = [self.non_empty.is_some(), self.present.is_some(), self.status_in.is_some(), self.cond.is_some()];
        if set.iter().filter(|s| **s).count() != 1 {
            return Err("each expect check needs exactly one of: non_empty, present, status_in, if".into());
        }
        let pointer = |p: &String| {
            if p.is_empty() || p.starts_with('/') {
                Ok(p.clone())
            } else {
                Err(format!("`{p}` is not a JSON pointer (write `/topics` or `/data/items`)"))
            }
        };
        let check = if let Some(p) = &self.non_empty {
            Check::NonEmpty(pointer(p)?)
        } else if let Some(p) = &self.present {
            Check::Present(pointer(p)?)
        } else if let Some(list) = &self.status_in {
            Check::StatusIn(list.clone())
        } else {
            let expr = self.cond.clone().unwrap_or_default();
            templates.field = "expect".into();
            Check::If(templates.condition(&expr)?, expr)
        };
        Ok(Expect { check, kind: self.kind.unwrap_or(ErrorKind::ExpectationFailed), message: self.message.clone() })
    }
}

fn empty(v: Option<&Json>) -> bool {
    match v {
        None | Some(Json::Null) => true,
        Some(Json::String(s)) => s.trim().is_empty(),
        Some(Json::Array(a)) => a.is_empty(),
        Some(Json::Object(o)) => o.is_empty(),
        _ => false,
    }
}

impl Expect {
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// None when the output passes; the classified failure otherwise.
    pub fn check(&self, out: &Output, templates: &Templates, scope: &minijinja::Value) -> Option<NodeError> {
        let failed = match &self.check {
            Check::NonEmpty(p) => empty(out.value.pointer(p)).then(|| format!("the output has nothing at `{p}`")),
            Check::Present(p) => out.value.pointer(p).is_none().then(|| format!("the output has no `{p}`")),
            Check::StatusIn(list) => match out.meta.http_status {
                Some(s) if !list.contains(&s) => Some(format!("status {s} is not one of {list:?}")),
                _ => None,
            },
            Check::If(t, expr) => {
                let ctx = minijinja::context! { output => crate::flow::template::to_value(&out.value), ..scope.clone() };
                match templates.render_bool(t, &ctx) {
                    Ok(true) => None,
                    Ok(false) => Some(format!("`{expr}` is false")),
                    Err(e) => Some(format!("`{expr}` could not be evaluated: {e}")),
                }
            }
        };
        failed.map(|why| {
            let mut e = NodeError::new(self.kind, self.message.clone().map(|m| format!("{m} ({why})")).unwrap_or(why));
            e.meta = out.meta.clone();
            e.output = Some(out.value.clone());
            e
        })
    }
}
