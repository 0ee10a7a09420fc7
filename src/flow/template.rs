//! Templated node inputs (minijinja). A string with `{{ … }}` is rendered as text; a string that is
//! exactly one `{{ expr }}` keeps the type of what `expr` evaluates to (a list stays a list), as in
//! GitHub Actions. Templates are compiled once when the flow loads.
//!
//! The render context has `input` (the run's inputs), `nodes` (each finished node's output, by id),
//! `run` (`id`, `flow`), and inside a `foreach` node `item` and `index`; a catch node also sees `error`.

use minijinja::{Environment, Value, context};
use serde_json::Value as Json;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Names a template may use at top level.
pub const ROOTS: &[&str] = &["input", "nodes", "run", "item", "index", "error", "repair", "output"];

/// A compiled string: plain text, a text template, or a single typed expression.
#[derive(Debug, Clone)]
pub enum Tmpl {
    Plain(String),
    Text(String),
    Expr(String),
}

/// A JSON tree whose strings are templates.
#[derive(Debug, Clone)]
pub enum JsonTmpl {
    Leaf(Json),
    Str(Tmpl),
    Array(Vec<JsonTmpl>),
    Object(Vec<(String, JsonTmpl)>),
}

/// Collects templates while a flow is built; frozen into [`Templates`] afterwards.
pub struct TemplateBuilder {
    env: Environment<'static>,
    next: usize,
    /// (field the template came from, variables it reads) for validation.
    pub references: Vec<(String, Vec<String>)>,
    /// The field templates compiled now belong to (set by the node builder).
    pub field: String,
    pub errors: Vec<String>,
}

impl Default for TemplateBuilder {
    fn default() -> Self {
        Self::new()
    }
}

fn new_env() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Chainable);
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    env
}

impl TemplateBuilder {
    pub fn new() -> Self {
        TemplateBuilder { env: new_env(), next: 0, references: Vec::new(), field: String::new(), errors: Vec::new() }
    }

    /// Compiles `src`; on a syntax error returns the message (and records nothing).
    pub fn string(&mut self, src: &str) -> Result<Tmpl, String> {
        if !src.contains("{{") && !src.contains("{%") {
            return Ok(Tmpl::Plain(src.to_owned()));
        }
        let trimmed = src.trim();
        let lone = trimmed.starts_with("{{")
            && trimmed.ends_with("}}")
            && trimmed[2..].find("}}") == Some(trimmed.len() - 4)
            && !trimmed[2..trimmed.len() - 2].contains("{{");
        let (body, wrap) = if lone {
            let expr = trimmed[2..trimmed.len() - 2].trim();
            (format!("{{{{ ({expr}) | tojson }}}}"), true)
        } else {
            (src.to_owned(), false)
        };
        let name = format!("t{}", self.next);
        self.next += 1;
        self.env.add_template_owned(name.clone(), body).map_err(|e| describe(&e))?;
        let tmpl = self.env.get_template(&name).map_err(|e| describe(&e))?;
        let refs = tmpl.undeclared_variables(true).into_iter().collect::<Vec<_>>();
        self.references.push((self.field.clone(), refs));
        Ok(if wrap { Tmpl::Expr(name) } else { Tmpl::Text(name) })
    }

    /// Compiles a boolean expression such as `nodes.qc.passed and input.publish`.
    pub fn condition(&mut self, expr: &str) -> Result<Tmpl, String> {
        self.string(&format!("{{{{ ({expr}) | bool }}}}"))
    }

    /// Compiles every string of a JSON tree.
    pub fn json(&mut self, value: &Json) -> Result<JsonTmpl, String> {
        Ok(match value {
            Json::String(s) => JsonTmpl::Str(self.string(s)?),
            Json::Array(items) => JsonTmpl::Array(items.iter().map(|v| self.json(v)).collect::<Result<_, _>>()?),
            Json::Object(map) => JsonTmpl::Object(map.iter().map(|(k, v)| Ok((k.clone(), self.json(v)?))).collect::<Result<_, String>>()?),
            other => JsonTmpl::Leaf(other.clone()),
        })
    }

    /// Every (field, variable) a template compiled since `mark` reads (see [`Self::mark`]).
    pub fn references_since(&self, mark: usize) -> Vec<(String, String)> {
        self.references.iter().skip(mark).flat_map(|(f, r)| r.iter().map(move |v| (f.clone(), v.clone()))).collect()
    }

    pub fn mark(&self) -> usize {
        self.references.len()
    }

    pub fn finish(self) -> Templates {
        Templates { env: Arc::new(self.env) }
    }
}

fn describe(e: &minijinja::Error) -> String {
    let mut msg = format!("template error: {}", e.kind());
    if let Some(detail) = e.detail() {
        msg.push_str(": ");
        msg.push_str(detail);
    }
    msg
}

/// The compiled templates of one flow.
#[derive(Clone)]
pub struct Templates {
    env: Arc<Environment<'static>>,
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Templates")
    }
}

/// What templates see while a run goes.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    pub input: Value,
    pub nodes: BTreeMap<String, Value>,
    pub run: Value,
    pub item: Option<(Value, usize)>,
    pub error: Option<Value>,
    /// Set while a node is re-run to repair a rejected output: what was wrong.
    pub repair: Option<Value>,
}

impl Scope {
    pub fn context(&self) -> Value {
        let (item, index) = match &self.item {
            Some((v, i)) => (v.clone(), Value::from(*i)),
            None => (Value::UNDEFINED, Value::UNDEFINED),
        };
        context! {
            input => self.input.clone(),
            nodes => Value::from(self.nodes.clone()),
            run => self.run.clone(),
            item => item,
            index => index,
            error => self.error.clone().unwrap_or(Value::UNDEFINED),
            repair => self.repair.clone().unwrap_or(Value::UNDEFINED),
        }
    }
}

impl Templates {
    pub fn render(&self, t: &Tmpl, ctx: &Value) -> Result<Json, String> {
        match t {
            Tmpl::Plain(s) => Ok(Json::String(s.clone())),
            Tmpl::Text(name) => self.render_raw(name, ctx).map(Json::String),
            Tmpl::Expr(name) => {
                let text = self.render_raw(name, ctx)?;
                serde_json::from_str(&text).map_err(|e| format!("template value is not data: {e}"))
            }
        }
    }

    /// Renders to text; a typed value is shown as compact JSON (strings without quotes).
    pub fn render_text(&self, t: &Tmpl, ctx: &Value) -> Result<String, String> {
        Ok(match self.render(t, ctx)? {
            Json::String(s) => s,
            Json::Null => String::new(),
            other => other.to_string(),
        })
    }

    pub fn render_bool(&self, t: &Tmpl, ctx: &Value) -> Result<bool, String> {
        Ok(match self.render(t, ctx)? {
            Json::Bool(b) => b,
            Json::String(s) => s == "true",
            Json::Null => false,
            other => other.as_f64().is_some_and(|n| n != 0.0),
        })
    }

    pub fn render_json(&self, t: &JsonTmpl, ctx: &Value) -> Result<Json, String> {
        Ok(match t {
            JsonTmpl::Leaf(v) => v.clone(),
            JsonTmpl::Str(s) => self.render(s, ctx)?,
            JsonTmpl::Array(items) => Json::Array(items.iter().map(|i| self.render_json(i, ctx)).collect::<Result<_, _>>()?),
            JsonTmpl::Object(entries) => {
                Json::Object(entries.iter().map(|(k, v)| Ok((k.clone(), self.render_json(v, ctx)?))).collect::<Result<_, String>>()?)
            }
        })
    }

    fn render_raw(&self, name: &str, ctx: &Value) -> Result<String, String> {
        let t = self.env.get_template(name).map_err(|e| describe(&e))?;
        t.render(ctx).map_err(|e| describe(&e))
    }
}

/// Converts run data into a template value once, so later renders only clone a pointer.
pub fn to_value(v: &Json) -> Value {
    Value::from(minijinja::value::Serde(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lone_expression_keeps_type_and_text_renders() {
        let mut b = TemplateBuilder::new();
        let list = b.string("{{ nodes.kb.topics }}").unwrap();
        let text = b.string("Topic: {{ input.topic }}!").unwrap();
        let cond = b.condition("nodes.kb.topics | length > 1").unwrap();
        let refs = b.references_since(0);
        assert!(refs.iter().any(|(_, r)| r.starts_with("nodes.kb")), "{refs:?}");
        let t = b.finish();
        let mut scope = Scope { input: to_value(&serde_json::json!({"topic": "猫"})), ..Default::default() };
        scope.nodes.insert("kb".into(), to_value(&serde_json::json!({"topics": ["a", "b"]})));
        let ctx = scope.context();
        assert_eq!(t.render(&list, &ctx).unwrap(), serde_json::json!(["a", "b"]));
        assert_eq!(t.render_text(&text, &ctx).unwrap(), "Topic: 猫!");
        assert!(t.render_bool(&cond, &ctx).unwrap());
    }

    #[test]
    fn syntax_error_is_reported() {
        let mut b = TemplateBuilder::new();
        assert!(b.string("{{ nodes. }}").unwrap_err().contains("syntax"));
    }
}
