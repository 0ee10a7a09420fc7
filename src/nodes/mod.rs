//! Node kinds. Each kind is one file: a parameter struct (what the flow file says) and an impl of
//! [`NodeKind`]; [`KINDS`] maps the `kind:` name to its builder. Adding a kind is one file and one
//! line here.

mod condition;
mod coze;
mod http;
mod llm;
mod notify;
mod quality_check;
mod template;

use crate::clock::SharedClock;
use crate::config::Config;
use crate::flow::template::{JsonTmpl, TemplateBuilder, Templates, Tmpl};
use crate::flow::yaml::{Node, PathSeg};
use crate::flow::{Diagnostic, from_tree};
use crate::model::{self, ModelClient};
use crate::redact::Redactor;
use crate::sim::SimEndpoint;
use crate::vocab::{ErrorKind, Severity};
use futures::future::BoxFuture;
use serde::de::DeserializeOwned;
use serde_json::Value as Json;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Builds a node kind from its parameters.
pub type Factory = fn(Raw<'_>, &mut BuildCx<'_>) -> Result<Arc<dyn NodeKind>, Diagnostic>;

/// The JSON Schema of a kind's own fields (for `flowguard schema flow` and the reference).
pub type ParamsSchema = fn(&mut schemars::SchemaGenerator) -> schemars::Schema;

fn params<T: schemars::JsonSchema>(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
    g.subschema_for::<T>()
}

/// The registry of node kinds: `kind:` name → builder, and the schema of its fields.
pub const KINDS: &[(&str, Factory, ParamsSchema)] = &[
    ("llm", llm::build, params::<llm::Params>),
    ("http", http::build, params::<http::Params>),
    ("quality_check", quality_check::build, params::<quality_check::Params>),
    ("template", template::build, params::<template::Params>),
    ("condition", condition::build, params::<condition::Params>),
    ("notify", notify::build, params::<notify::Params>),
    ("coze", coze::build, params::<coze::Params>),
];

/// Marks the feedback an llm prompt gets when its output is being repaired.
pub const REPAIR_MARK_ZH: &str = "【修正要求】";
pub const REPAIR_MARK_EN: &str = "[Repair]";

/// A node kind, built once per flow load, run once per attempt.
pub trait NodeKind: Send + Sync + std::fmt::Debug {
    fn run<'a>(&'a self, cx: &'a RunCx<'a>) -> BoxFuture<'a, Result<Output, NodeError>>;
    /// Nodes this kind may jump to (a condition's branches), for validation.
    fn jumps(&self) -> Vec<String> {
        Vec::new()
    }
    /// The models this node may use, in fallback order (empty for non-model nodes).
    fn model_chain(&self) -> Vec<String> {
        Vec::new()
    }
    /// Whether the kind only computes from the run's data, calling nothing outside the process.
    /// The engine does not wait for a pure node's record to commit before the run goes on
    /// (README, "When a record is durable").
    fn pure(&self) -> bool {
        false
    }
    /// The error kinds this kind of node can fail with (for `check --explain`).
    fn failure_kinds(&self, side_effect: bool) -> Vec<ErrorKind> {
        let _ = side_effect;
        vec![ErrorKind::Internal]
    }
}

/// What a call to a provider or an HTTP service can fail with.
pub fn remote_failure_kinds(side_effect: bool) -> Vec<ErrorKind> {
    use ErrorKind::*;
    let mut kinds =
        vec![if side_effect { PublishAmbiguous } else { Timeout }, RateLimited, Upstream5xx, Network, AuthExpired, QuotaExhausted];
    kinds.push(if side_effect { PublishFailed } else { Upstream4xx });
    kinds
}

/// What a successful attempt produced.
#[derive(Debug, Clone, Default)]
pub struct Output {
    pub value: Json,
    /// Where the run goes next (a condition's branch); None: the next node in the file.
    pub next: Option<String>,
    pub meta: Meta,
}

/// Facts about one attempt, recorded with it.
#[derive(Debug, Clone, Default)]
pub struct Meta {
    pub model: Option<String>,
    pub tokens_in: Option<i64>,
    pub tokens_out: Option<i64>,
    pub http_status: Option<u16>,
}

/// A classified failure of one attempt.
#[derive(Debug, Clone)]
pub struct NodeError {
    pub kind: ErrorKind,
    pub message: String,
    pub meta: Meta,
    /// The server asked to wait this long before trying again.
    pub retry_after: Option<Duration>,
    /// What the node produced although it failed (a quality check's violations).
    pub output: Option<Json>,
}

impl NodeError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        NodeError { kind, message: message.into(), meta: Meta::default(), retry_after: None, output: None }
    }
    pub fn with_meta(mut self, meta: Meta) -> Self {
        self.meta = meta;
        self
    }
}

/// What an attempt can see and use.
/// A message a flow sends to an alert channel itself (the `notify` node).
#[derive(Debug, Clone)]
pub struct Notice<'a> {
    pub channel: &'a str,
    pub severity: Severity,
    pub title: &'a str,
    pub text: &'a str,
    pub mention_all: bool,
    pub flow: &'a str,
    pub node: &'a str,
    pub run_id: &'a str,
}

/// Stores a notice for delivery and returns its id. Alerting implements it; the engine hands it
/// to the nodes it runs, so nodes know nothing of alerting.
pub trait Notifier: Send + Sync {
    fn notify<'a>(&'a self, notice: Notice<'a>) -> BoxFuture<'a, anyhow::Result<String>>;
}

pub struct RunCx<'a> {
    pub templates: &'a Templates,
    pub scope: &'a minijinja::Value,
    pub reg: &'a Registry,
    pub clock: &'a SharedClock,
    pub run_id: &'a str,
    pub flow: &'a str,
    pub node_id: &'a str,
    pub attempt: u32,
    pub side_effect: bool,
    /// Sent with side-effecting calls; the same for every attempt of this node in this run.
    pub idempotency_key: &'a str,
    /// The model to use (an llm node walking its fallback chain).
    pub model: Option<&'a str>,
    /// When this node re-runs to repair a rejected output: `{violations, message, attempt}`.
    pub repair: Option<&'a Json>,
    /// Bytes of rendered input, counted as templates render.
    pub input_bytes: AtomicUsize,
    /// The rendered inputs, recorded with the attempt.
    pub inputs: std::sync::Mutex<Vec<Json>>,
    /// Where `notify` sends; none when the engine runs without alerting.
    pub notifier: Option<&'a dyn Notifier>,
}

impl RunCx<'_> {
    fn record(&self, v: &Json) {
        self.input_bytes.fetch_add(json_len(v), Ordering::Relaxed);
        if let Ok(mut inputs) = self.inputs.lock() {
            inputs.push(v.clone());
        }
    }

    pub fn text(&self, t: &Tmpl) -> Result<String, NodeError> {
        let s = self.templates.render_text(t, self.scope).map_err(|m| NodeError::new(crate::flow::template::error_kind(&m), m))?;
        if !matches!(t, Tmpl::Plain(_)) {
            self.record(&Json::String(s.clone()));
        } else {
            self.input_bytes.fetch_add(s.len(), Ordering::Relaxed);
        }
        Ok(s)
    }

    pub fn value(&self, t: &Tmpl) -> Result<Json, NodeError> {
        let v = self.templates.render(t, self.scope).map_err(|m| NodeError::new(crate::flow::template::error_kind(&m), m))?;
        self.record(&v);
        Ok(v)
    }

    pub fn json(&self, t: &JsonTmpl) -> Result<Json, NodeError> {
        let v = self.templates.render_json(t, self.scope).map_err(|m| NodeError::new(crate::flow::template::error_kind(&m), m))?;
        self.record(&v);
        Ok(v)
    }

    pub fn truthy(&self, t: &Tmpl) -> Result<bool, NodeError> {
        self.templates.render_bool(t, self.scope).map_err(|m| NodeError::new(crate::flow::template::error_kind(&m), m))
    }
}

pub fn json_len(v: &Json) -> usize {
    match v {
        Json::String(s) => s.len(),
        other => serde_json::to_vec(other).map(|b| b.len()).unwrap_or(0),
    }
}

/// A node's own parameters in the flow file, with where they stand.
pub struct Raw<'a> {
    pub tree: &'a Node,
    pub file: &'a Path,
    pub prefix: &'a [PathSeg],
    pub common: &'a [&'a str],
}

impl Raw<'_> {
    /// Deserializes the parameters; errors point at the field.
    pub fn parse<P: DeserializeOwned>(&self) -> Result<P, Diagnostic> {
        from_tree(self.tree, self.file, self.prefix, self.common)
    }
}

/// What a kind needs while it is built.
pub struct BuildCx<'a> {
    pub templates: &'a mut TemplateBuilder,
    pub registry: &'a Registry,
    pub base_dir: &'a Path,
    /// (field, message) problems found after parsing.
    pub errors: Vec<(String, String)>,
}

impl BuildCx<'_> {
    pub fn string(&mut self, field: &str, src: &str) -> Tmpl {
        self.templates.field = field.to_owned();
        self.templates.string(src).unwrap_or_else(|m| {
            self.errors.push((field.into(), m));
            Tmpl::Plain(String::new())
        })
    }
    pub fn condition(&mut self, field: &str, expr: &str) -> Tmpl {
        self.templates.field = field.to_owned();
        self.templates.condition(expr).unwrap_or_else(|m| {
            self.errors.push((field.into(), m));
            Tmpl::Plain(String::new())
        })
    }
    pub fn json(&mut self, field: &str, v: &Json) -> JsonTmpl {
        self.templates.field = field.to_owned();
        self.templates.json(v).unwrap_or_else(|m| {
            self.errors.push((field.into(), m));
            JsonTmpl::Leaf(Json::Null)
        })
    }
    pub fn error(&mut self, field: &str, message: impl Into<String>) {
        self.errors.push((field.into(), message.into()));
    }
}

/// A named HTTP endpoint from the config.
#[derive(Debug)]
pub struct Endpoint {
    pub base_url: Option<String>,
    /// Gets the bearer token sent with every request.
    pub auth: Option<Arc<crate::auth::TokenProvider>>,
    pub headers: BTreeMap<String, String>,
    pub simulate: Option<SimEndpoint>,
}

/// Everything built from the config that nodes use: kinds, models, endpoints, the HTTP client.
#[derive(Clone)]
pub struct Registry {
    pub models: BTreeMap<String, Arc<dyn ModelClient>>,
    pub fallbacks: BTreeMap<String, Vec<String>>,
    pub endpoints: BTreeMap<String, Arc<Endpoint>>,
    pub http: reqwest::Client,
    pub default_node_timeout: Duration,
    pub redactor: Redactor,
    /// `zh-CN` or `en`: the language of text flowguard writes into prompts and messages.
    pub locale: String,
    /// The models' breakers (those that have one).
    pub breakers: Arc<model::breaker::Breakers>,
    /// What each model's tokens cost, by model name.
    pub prices: BTreeMap<String, crate::config::PriceConfig>,
}

impl Registry {
    pub fn from_config(cfg: &Config) -> anyhow::Result<Registry> {
        crate::init_tls();
        let http = reqwest::Client::builder()
            .user_agent(concat!("flowguard/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            // Idle connections are kept 90 s (reqwest's default) with no cap per host: a cap below
            // the calls running at once closed the rest after every round of calls, and each run's
            // next call connected again. The idle ones are bounded by the peak of calls at once.
            .pool_idle_timeout(Duration::from_secs(90))
            .build()?;
        let mut models = BTreeMap::new();
        let mut fallbacks = BTreeMap::new();
        for (name, m) in &cfg.models {
            models.insert(name.clone(), model::build(name, m, http.clone()));
            fallbacks.insert(name.clone(), m.fallback.clone());
        }
        let auth: BTreeMap<String, Arc<crate::auth::TokenProvider>> =
            cfg.auth.iter().map(|(name, a)| (name.clone(), Arc::new(crate::auth::TokenProvider::new(a.clone())))).collect();
        let endpoints = cfg
            .endpoints
            .iter()
            .map(|(name, e)| {
                let simulate = e.simulate.clone().map(|s| SimEndpoint::new(name, s));
                let auth = e.auth.as_ref().and_then(|a| auth.get(a).cloned());
                (name.clone(), Arc::new(Endpoint { base_url: e.base_url.clone(), auth, headers: e.headers.clone(), simulate }))
            })
            .collect();
        Ok(Registry {
            models,
            fallbacks,
            endpoints,
            http,
            default_node_timeout: cfg.node_timeout(),
            redactor: cfg.redactor.clone(),
            locale: cfg.locale.clone(),
            breakers: Arc::new(model::breaker::Breakers::from_config(cfg)),
            prices: cfg.models.iter().filter_map(|(n, m)| m.price.clone().map(|p| (n.clone(), p))).collect(),
        })
    }

    pub fn kind(&self, name: &str) -> Option<Factory> {
        KINDS.iter().find(|(n, _, _)| *n == name).map(|(_, f, _)| *f)
    }

    pub fn kind_names(&self) -> impl Iterator<Item = &'static str> {
        KINDS.iter().map(|(n, _, _)| *n)
    }

    /// A model followed by its configured fallbacks, each once.
    pub fn chain(&self, first: &str) -> Vec<String> {
        let mut out = vec![first.to_owned()];
        let mut i = 0;
        while i < out.len() {
            for fb in self.fallbacks.get(&out[i]).into_iter().flatten() {
                if !out.contains(fb) {
                    out.push(fb.clone());
                }
            }
            i += 1;
        }
        out
    }
}
