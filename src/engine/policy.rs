//! What happens when a node fails for good (after its retries): the node's `on_error`, else its
//! `policy` for the kind, else the flow's `policy`, else the built-in table of DESIGN.md §4. The
//! same lookup gives the severity.
//!
//! Actions: `abort` (fail the run), `manual` (park the run for a human), `block` (fail the run and
//! block the flow), `fallback` (continue with a default value; the run is `recovered`), `goto` (jump
//! to a catch node, which sees `error.kind`, `error.message`, `error.node`), `repair` (re-run the
//! producing node with the violations fed back, up to `max` times, then `loop_limit`),
//! `fallback_model` (run the node again on the next model of its chain).

use crate::flow::template::{JsonTmpl, TemplateBuilder};
use crate::vocab::{ErrorKind, Severity};
use serde_json::Value as Json;
use std::collections::BTreeMap;

#[derive(Debug, Clone)]
pub enum Action {
    Abort,
    Manual,
    Block,
    Fallback(JsonTmpl),
    Goto(String),
    Repair { target: Option<String>, max: u32 },
    FallbackModel,
}

impl Action {
    pub fn name(&self) -> &'static str {
        match self {
            Action::Abort => "abort",
            Action::Manual => "manual",
            Action::Block => "block",
            Action::Fallback(_) => "fallback",
            Action::Goto(_) => "goto",
            Action::Repair { .. } => "repair",
            Action::FallbackModel => "fallback_model",
        }
    }

    /// For `check --explain`.
    pub fn describe(&self) -> String {
        match self {
            Action::Abort => "fail the run".into(),
            Action::Manual => "park the run for a human (waiting_manual)".into(),
            Action::Block => "fail the run and block the flow".into(),
            Action::Fallback(_) => "continue with the default value (recovered)".into(),
            Action::Goto(n) => format!("jump to catch node `{n}`"),
            Action::Repair { target, max } => {
                format!("repair: re-run `{}` with the violations, up to {max} times, then loop_limit", target.as_deref().unwrap_or("?"))
            }
            Action::FallbackModel => "run again on the next model of the chain".into(),
        }
    }
}

/// An action and, optionally, the kinds it applies to.
#[derive(Debug, Clone)]
pub struct OnError {
    pub action: Action,
    pub on: Option<Vec<ErrorKind>>,
}

/// A row of a policy table.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    pub severity: Option<Severity>,
    pub action: Option<Action>,
}

pub type PolicyTable = BTreeMap<ErrorKind, Policy>;

const ACTIONS: &[&str] = &["abort", "manual", "block", "fallback", "goto", "repair", "fallback_model"];

/// Parses `manual` or `{ action: repair, target: script, max: 2 }` and the like.
pub fn parse_action(v: &Json, templates: &mut TemplateBuilder) -> Result<OnError, String> {
    let (name, map) = match v {
        Json::String(s) => (s.as_str(), serde_json::Map::new()),
        Json::Object(m) => match m.get("action").and_then(Json::as_str) {
            Some(a) => (a, m.clone()),
            None => return Err("needs `action` (one of: abort, manual, block, fallback, goto, repair, fallback_model)".into()),
        },
        _ => return Err("expected an action name or a mapping with `action`".into()),
    };
    let allowed: &[&str] = match name {
        "fallback" => &["action", "value", "on"],
        "goto" => &["action", "node", "on"],
        "repair" => &["action", "target", "max", "on"],
        _ => &["action", "on"],
    };
    if let Some(extra) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(format!("`{extra}` does not apply to action `{name}` (it takes: {})", allowed.join(", ")));
    }
    let on = match map.get("on") {
        None => None,
        Some(list) => Some(serde_json::from_value::<Vec<ErrorKind>>(list.clone()).map_err(|e| format!("`on`: {e}"))?),
    };
    let action = match name {
        "abort" => Action::Abort,
        "manual" => Action::Manual,
        "block" => Action::Block,
        "fallback_model" => Action::FallbackModel,
        "fallback" => {
            templates.field = "on_error".into();
            Action::Fallback(templates.json(map.get("value").unwrap_or(&Json::Null))?)
        }
        "goto" => Action::Goto(map.get("node").and_then(Json::as_str).ok_or("`goto` needs `node`: the catch node's id")?.to_owned()),
        "repair" => Action::Repair {
            target: map.get("target").and_then(Json::as_str).map(str::to_owned),
            max: map.get("max").and_then(Json::as_u64).unwrap_or(2) as u32,
        },
        other => {
            let hint = crate::flow::suggest(other, ACTIONS.iter().copied()).map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default();
            return Err(format!("unknown action `{other}`{hint}; expected one of: {}", ACTIONS.join(", ")));
        }
    };
    Ok(OnError { action, on })
}

/// The built-in action for a kind when nothing is configured (DESIGN.md §4, the seed's tiers).
/// `default` is the node's configured default value (the seed's "KB empty → default template").
pub fn default_action(kind: ErrorKind, default: Option<&JsonTmpl>) -> Action {
    use ErrorKind::*;
    match (kind, default) {
        (QualityRejected, _) => Action::Repair { target: None, max: 2 },
        (Timeout | PublishFailed | PublishAmbiguous, _) => Action::Manual,
        (AuthExpired, _) => Action::Block,
        (DataEmpty, Some(d)) => Action::Fallback(d.clone()),
        _ => Action::Abort,
    }
}
