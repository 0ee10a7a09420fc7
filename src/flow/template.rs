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

/// Limits of one render, so that a template (written by a flow's author, fed by run data) cannot
/// take the process down: work in engine instructions, nesting of calls, and output size.
pub const FUEL: u64 = 5_000_000;
pub const RECURSION_LIMIT: usize = 100;
pub const MAX_RENDERED_BYTES: usize = 4 * 1024 * 1024;

/// Every message of a template that hit one of these limits starts with this.
const LIMIT_PREFIX: &str = "template limit: ";

/// The error kind of a failed render: hitting a limit is `loop_limit` (a cap of the flow's own
/// work was reached; retrying cannot help, so the run fails without retries); any other render
/// failure stays `internal`.
pub fn error_kind(message: &str) -> crate::vocab::ErrorKind {
    if message.starts_with(LIMIT_PREFIX) { crate::vocab::ErrorKind::LoopLimit } else { crate::vocab::ErrorKind::Internal }
}

fn new_env() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Chainable);
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    env.set_fuel(Some(FUEL));
    env.set_recursion_limit(RECURSION_LIMIT);
    env.add_filter("fg_tojson", bounded_json);
    env.set_formatter(|out, state, value| {
        check_len(value)?;
        minijinja::escape_formatter(out, state, value)
    });
    env
}

/// Refuses at once a sequence whose text could not fit in [`MAX_RENDERED_BYTES`] (each item
/// takes at least one byte and a separator): writing it out would stop at the limit, but only
/// after walking every item (`[1] * 100000000`).
fn check_len(v: &Value) -> Result<(), minijinja::Error> {
    if v.as_object().is_some() && v.len().is_some_and(|n| n > MAX_RENDERED_BYTES / 2) {
        return Err(minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, too_large()));
    }
    Ok(())
}

/// A writer that refuses to grow past [`MAX_RENDERED_BYTES`].
#[derive(Default)]
struct Bounded {
    buf: Vec<u8>,
    overflow: bool,
}

impl std::io::Write for Bounded {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.buf.len() + data.len() > MAX_RENDERED_BYTES {
            self.overflow = true;
            return Err(std::io::Error::other("rendered output too large"));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn too_large() -> String {
    format!("{LIMIT_PREFIX}the rendered output is larger than {} MiB", MAX_RENDERED_BYTES / (1024 * 1024))
}

/// `tojson` that stops at [`MAX_RENDERED_BYTES`] instead of building any size of text.
fn bounded_json(v: Value) -> Result<Value, minijinja::Error> {
    check_len(&v)?;
    let mut w = Bounded::default();
    match serde_json::to_writer(&mut w, &v) {
        Ok(()) => Ok(Value::from_safe_string(String::from_utf8_lossy(&w.buf).into_owned())),
        Err(_) if w.overflow => Err(minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, too_large())),
        Err(e) => Err(minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, format!("not JSON data: {e}"))),
    }
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
            (format!("{{{{ ({expr}) | fg_tojson }}}}"), true)
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
    if e.kind() == minijinja::ErrorKind::OutOfFuel {
        return format!("{LIMIT_PREFIX}the template did more than {FUEL} steps of work");
    }
    if let Some(d) = e.detail().filter(|d| d.starts_with(LIMIT_PREFIX)) {
        return d.to_owned();
    }
    if e.detail().is_some_and(|d| d.contains("recursion limit")) {
        return format!("{LIMIT_PREFIX}calls nested deeper than {RECURSION_LIMIT}");
    }
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
        let mut out = Bounded::default();
        match t.render_captured_to(ctx, &mut out) {
            Ok(_) => String::from_utf8(out.buf).map_err(|e| format!("template error: not text: {e}")),
            Err(_) if out.overflow => Err(too_large()),
            Err(e) => Err(describe(&e)),
        }
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
    fn templates_that_would_eat_the_machine_stop_at_a_limit() {
        let mut b = TemplateBuilder::new();
        let huge = b.string("{{ [1] * 100000000 }}").unwrap();
        let huge_text = b.string("x{{ [1] * 100000000 }}").unwrap();
        let long_loop = b.string("{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}").unwrap();
        let deep = b.string("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}").unwrap();
        let t = b.finish();
        let ctx = Scope::default().context();
        for tmpl in [&huge, &huge_text, &long_loop, &deep] {
            let err = t.render(tmpl, &ctx).unwrap_err();
            assert!(err.starts_with(LIMIT_PREFIX), "{err}");
            assert_eq!(error_kind(&err), crate::vocab::ErrorKind::LoopLimit);
        }
        assert_eq!(error_kind("template error: undefined"), crate::vocab::ErrorKind::Internal);
    }

    #[test]
    fn syntax_error_is_reported() {
        let mut b = TemplateBuilder::new();
        assert!(b.string("{{ nodes. }}").unwrap_err().contains("syntax"));
    }
}
