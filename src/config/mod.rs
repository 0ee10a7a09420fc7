//! `flowguard.yaml`: storage, models, endpoints, time zone, locale and the flows directory.
//! Secrets come from `${ENV_VAR}` substitution; a missing variable is an error that names it.
//! All problems are reported together, each with file:line:column and the field.

pub mod cron;
pub mod duration;
pub mod model;

pub use cron::CronExpr;
pub use duration::{HumanDuration, parse_duration};
pub use model::{BreakerConfig, PriceConfig};

use crate::flow::diag::{Diagnostics, from_tree_all, suggest};
use crate::flow::yaml::{self, Node, Pos, Yaml};
use crate::redact::Redactor;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The database: SQLite (default), MySQL/MariaDB or PostgreSQL.
    #[serde(default)]
    pub storage: StorageConfig,
    /// IANA time zone for reports and cron, e.g. `Asia/Shanghai`.
    #[serde(default = "default_tz")]
    pub timezone: String,
    /// `zh-CN` or `en`: the language of messages and reports.
    #[serde(default = "default_locale")]
    pub locale: String,
    /// Where the flow files are, relative to this file.
    #[serde(default = "default_flows_dir")]
    pub flows_dir: PathBuf,
    /// Defaults for nodes that set none.
    #[serde(default)]
    pub defaults: Defaults,
    /// LLM models by name; `llm` nodes name them.
    #[serde(default)]
    pub models: BTreeMap<String, ModelConfig>,
    /// HTTP endpoints by name; `http` nodes name them.
    #[serde(default)]
    pub endpoints: BTreeMap<String, EndpointConfig>,
    /// Token providers for endpoints (OAuth2 client credentials).
    #[serde(default)]
    pub auth: BTreeMap<String, crate::auth::config::AuthConfig>,
    /// Alert channels by name (see `alert::config`).
    #[serde(default)]
    pub channels: BTreeMap<String, crate::alert::config::ChannelConfig>,
    /// Alert routing rules, first match wins unless `continue`.
    #[serde(default)]
    pub routes: Vec<crate::alert::config::RouteConfig>,
    /// Grouping windows and delivery settings for alerts.
    #[serde(default)]
    pub alerting: crate::alert::config::AlertingConfig,
    /// Daily and weekly reports, retention and the suggestion rules' thresholds.
    #[serde(default)]
    pub reports: crate::report::config::ReportsConfig,
    /// `flowguard serve`: listen address, API tokens, limits.
    #[serde(default)]
    pub server: crate::server::config::ServerConfig,
    /// Copies of the run log in Elasticsearch/OpenSearch and OpenTelemetry collectors (`serve`
    /// exports them).
    #[serde(default)]
    pub exporters: crate::export::config::ExportersConfig,
    /// The directory of the config file; paths in it are relative to this.
    #[serde(skip)]
    pub base_dir: PathBuf,
    #[serde(skip)]
    pub file: PathBuf,
    #[serde(skip)]
    pub redactor: Redactor,
    /// `timezone`, looked up once by `parse`.
    #[serde(skip, default = "utc")]
    tz: jiff::tz::TimeZone,
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// `sqlite://flowguard.db` (relative to the config), `mysql://…` or `postgres://…`.
    #[serde(default = "default_url")]
    pub url: String,
    /// Node inputs and outputs larger than this are stored truncated (the full size is recorded).
    #[serde(default = "default_payload")]
    pub max_payload_bytes: usize,
    /// Connections the pool may open (MySQL/PostgreSQL; SQLite uses at most 8).
    #[serde(default = "default_pool")]
    pub max_connections: u32,
    /// How long to wait to open a connection, or for a free one from the pool.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: HumanDuration,
    /// How long a run keeps retrying a write while the database is away.
    #[serde(default = "default_write_patience")]
    pub write_patience: HumanDuration,
    /// How long a process's hold on a run it executes lasts without renewal. A run whose process
    /// died (or stopped answering) is taken over by a `serve` this long after its last renewal.
    #[serde(default = "default_lease")]
    pub lease: HumanDuration,
    /// How often the hold is renewed; a third of `lease` when not set.
    #[serde(default)]
    pub lease_heartbeat: Option<HumanDuration>,
}

fn default_lease() -> HumanDuration {
    HumanDuration::secs(30)
}

impl StorageConfig {
    /// How often a run's lease is renewed.
    pub fn lease_heartbeat(&self) -> Duration {
        self.lease_heartbeat.map_or(self.lease.get() / 3, HumanDuration::get)
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            url: default_url(),
            max_payload_bytes: default_payload(),
            max_connections: default_pool(),
            connect_timeout: default_connect_timeout(),
            write_patience: default_write_patience(),
            lease: default_lease(),
            lease_heartbeat: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    /// Time limit of a node that sets none.
    #[serde(default = "default_node_timeout")]
    pub node_timeout: HumanDuration,
    /// The breaker of every model that sets none; without one here or on the model, a model
    /// has no breaker.
    pub breaker: Option<BreakerConfig>,
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults { node_timeout: default_node_timeout(), breaker: None }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    /// Any OpenAI-compatible chat completions API (OpenAI, DeepSeek, Doubao/Ark, Qwen, Ollama …).
    Openai,
    /// flowguard's built-in simulator, for drills and the demo.
    Simulated,
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// `openai` (any OpenAI-compatible API) or `simulated` (the built-in simulator).
    pub provider: Provider,
    /// e.g. `https://api.deepseek.com/v1`.
    pub base_url: Option<String>,
    /// Usually `${DEEPSEEK_API_KEY}`.
    pub api_key: Option<String>,
    /// The provider's model name, e.g. `deepseek-chat`.
    pub model: Option<String>,
    /// Models to try next, in order, when this one fails.
    #[serde(default)]
    pub fallback: Vec<String>,
    /// Sampling temperature sent with each call.
    pub temperature: Option<f64>,
    /// Most tokens a reply may have.
    pub max_tokens: Option<u32>,
    /// Settings of the simulator (provider `simulated`).
    #[serde(default)]
    pub simulate: crate::sim::config::SimModelConfig,
    /// This model's breaker (replaces `defaults.breaker`).
    pub breaker: Option<BreakerConfig>,
    /// What this model's tokens cost; each call's cost is recorded and summed per run.
    pub price: Option<PriceConfig>,
}

impl ModelConfig {
    /// The breaker that applies to this model, if any.
    pub fn breaker<'a>(&'a self, defaults: &'a Defaults) -> Option<&'a BreakerConfig> {
        self.breaker.as_ref().or(defaults.breaker.as_ref()).filter(|b| b.enabled)
    }
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    /// Prefix of the `path` of `http` nodes that use this endpoint.
    pub base_url: Option<String>,
    /// Sent with every request (values may be `${SECRETS}`; they are redacted everywhere).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// A provider from `auth:` whose token is sent as `Authorization: Bearer …`.
    pub auth: Option<String>,
    /// Answer in-process instead of over the network (the demo's knowledge base and publisher).
    pub simulate: Option<crate::sim::config::SimEndpointConfig>,
}

fn utc() -> jiff::tz::TimeZone {
    jiff::tz::TimeZone::UTC
}
fn default_tz() -> String {
    "Asia/Shanghai".into()
}
fn default_locale() -> String {
    "zh-CN".into()
}
fn default_flows_dir() -> PathBuf {
    "flows".into()
}
fn default_url() -> String {
    "sqlite://flowguard.db".into()
}
fn default_payload() -> usize {
    64 * 1024
}
fn default_pool() -> u32 {
    8
}
fn default_node_timeout() -> HumanDuration {
    HumanDuration::secs(60)
}
fn default_connect_timeout() -> HumanDuration {
    HumanDuration::secs(10)
}
fn default_write_patience() -> HumanDuration {
    HumanDuration::secs(30)
}

impl Config {
    /// Reads and checks a config file.
    pub fn load(file: &Path) -> Result<Config, Diagnostics> {
        Self::load_sections(file, None)
    }

    /// Reads only these top-level sections (the rest is left at its defaults), so `${…}` is
    /// resolved only where the command looks: `flowguard runs` needs the database, not the
    /// server's tokens or the channels' webhooks.
    pub fn load_sections(file: &Path, sections: Option<&[&str]>) -> Result<Config, Diagnostics> {
        let bytes = std::fs::read(file).map_err(|e| {
            let mut d = Diagnostics::default();
            let hint = if e.kind() == std::io::ErrorKind::NotFound { " (create one with `flowguard init`, or pass --config)" } else { "" };
            d.push(file, Pos::default(), "", format!("cannot read the config: {e}{hint}"));
            d
        })?;
        let text = yaml::decode(bytes).map_err(|(pos, m)| {
            let mut d = Diagnostics::default();
            d.push(file, pos, "", m);
            d
        })?;
        let base = file.parent().map(Path::to_path_buf).unwrap_or_default();
        Self::parse_sections(file, &text, &base, &|k| std::env::var(k).ok(), sections)
    }

    /// Parses config text; `env` looks up variables (tests pass their own).
    pub fn parse(file: &Path, text: &str, base_dir: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, Diagnostics> {
        Self::parse_sections(file, text, base_dir, env, None)
    }

    fn parse_sections(
        file: &Path,
        text: &str,
        base_dir: &Path,
        env: &dyn Fn(&str) -> Option<String>,
        sections: Option<&[&str]>,
    ) -> Result<Config, Diagnostics> {
        let mut diags = Diagnostics::default();
        let mut tree = yaml::parse(text).map_err(|(pos, m)| {
            let mut d = Diagnostics::default();
            d.push(file, pos, "", m);
            d
        })?;
        if let (Some(keep), Yaml::Map(entries)) = (sections, &mut tree.value) {
            entries.retain(|(k, _)| k.as_str().is_some_and(|k| keep.contains(&k)));
        }
        let redactor = Redactor::default();
        let mut taken = Vec::new();
        substitute(&mut tree, env, &redactor, &mut taken, file, &mut diags);
        if !diags.is_empty() {
            return Err(diags);
        }
        let (cfg, errors) = from_tree_all::<Config>(&tree, file, &[], &[]);
        diags.0.extend(errors);
        let Some(mut cfg) = cfg else { return Err(scrub(diags, &taken)) };
        cfg.base_dir = base_dir.to_path_buf();
        cfg.file = file.to_path_buf();
        cfg.redactor = redactor;
        crate::alert::channels::parse_all(&mut cfg.channels, &tree, file, &mut diags);
        match jiff::tz::TimeZone::get(&cfg.timezone) {
            Ok(tz) => cfg.tz = tz,
            Err(_) => {
                let pos = tree.locate(&[yaml::PathSeg::Key("timezone".into())]).pos;
                let m = format!("unknown time zone `{}` (use an IANA name such as Asia/Shanghai)", cfg.timezone);
                diags.push(file, pos, "timezone", m);
            }
        }
        cfg.check(&tree, file, &mut diags);
        diags.into_result(cfg).map_err(|d| scrub(d, &taken))
    }

    fn check(&self, tree: &Node, file: &Path, diags: &mut Diagnostics) {
        let at = |path: &[&str]| {
            let segs: Vec<_> = path.iter().map(|k| yaml::PathSeg::Key((*k).into())).collect();
            tree.locate(&segs).pos
        };
        if !["zh-CN", "en"].contains(&self.locale.as_str()) {
            diags.push(file, at(&["locale"]), "locale", format!("unknown locale `{}`; expected zh-CN or en", self.locale));
        }
        if self.storage.lease.get() < Duration::from_millis(100) {
            diags.push(file, at(&["storage", "lease"]), "storage.lease", "must be at least 100ms".to_string());
        }
        if self.storage.lease_heartbeat().is_zero() || self.storage.lease_heartbeat() >= self.storage.lease.get() {
            diags.push(
                file,
                at(&["storage", "lease_heartbeat"]),
                "storage.lease_heartbeat",
                "must be above 0 and shorter than storage.lease".to_string(),
            );
        }
        for (k, msg) in self.defaults.breaker.as_ref().map(BreakerConfig::problems).unwrap_or_default() {
            diags.push(file, at(&["defaults", "breaker", k]), format!("defaults.breaker.{k}"), msg);
        }
        if self.storage.max_connections == 0 {
            diags.push(file, at(&["storage", "max_connections"]), "storage.max_connections", "must be at least 1".to_string());
        }
        if !["sqlite:", "mysql:", "mariadb:", "postgres:", "postgresql:"].iter().any(|p| self.storage.url.starts_with(p)) {
            diags.push(file, at(&["storage", "url"]), "storage.url", "expected a sqlite://, mysql:// or postgres:// URL".to_string());
        }
        for (name, m) in &self.models {
            let field = format!("models.{name}");
            for fb in &m.fallback {
                if !self.models.contains_key(fb) {
                    let hint =
                        suggest(fb, self.models.keys().map(String::as_str)).map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default();
                    diags.push(file, at(&["models", name, "fallback"]), format!("{field}.fallback"), format!("unknown model `{fb}`{hint}"));
                } else if fb == name {
                    diags.push(file, at(&["models", name, "fallback"]), format!("{field}.fallback"), "a model cannot fall back to itself");
                }
            }
            for (section, problems) in [
                ("breaker", m.breaker.as_ref().map(BreakerConfig::problems).unwrap_or_default()),
                ("price", m.price.as_ref().map(PriceConfig::problems).unwrap_or_default()),
            ] {
                for (k, msg) in problems {
                    diags.push(file, at(&["models", name, section, k]), format!("{field}.{section}.{k}"), msg);
                }
            }
            if m.provider == Provider::Openai {
                for (k, v) in [("base_url", &m.base_url), ("model", &m.model)] {
                    if v.is_none() {
                        diags.push(file, at(&["models", name]), format!("{field}.{k}"), format!("`{k}` is required for provider `openai`"));
                    }
                }
            }
        }
        for (field, m) in self.server.problems() {
            let segs: Vec<yaml::PathSeg> = field
                .split('.')
                .flat_map(|s| match s.split_once('[') {
                    Some((k, i)) => vec![yaml::PathSeg::Key(k.into()), yaml::PathSeg::Index(i.trim_end_matches(']').parse().unwrap_or(0))],
                    None => vec![yaml::PathSeg::Key(s.into())],
                })
                .collect();
            diags.push(file, tree.locate(&segs).pos, field.clone(), m);
        }
        for (field, m) in self.exporters.problems() {
            let segs: Vec<&str> = field.split('.').collect();
            diags.push(file, at(&segs), field.clone(), m);
        }
        for (path, m) in crate::alert::config::check(&self.channels, &self.routes, &self.alerting) {
            let segs: Vec<&str> = path.iter().map(String::as_str).filter(|s| !s.starts_with('[')).collect();
            diags.push(file, at(&segs), path.join(".").replace(".[", "["), m);
        }
        for (i, c) in self.reports.channels.iter().enumerate() {
            if !self.channels.contains_key(c) {
                let hint =
                    suggest(c, self.channels.keys().map(String::as_str)).map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default();
                diags.push(file, at(&["reports", "channels"]), format!("reports.channels[{i}]"), format!("unknown channel `{c}`{hint}"));
            }
        }
        for (name, e) in &self.endpoints {
            if let Some(a) = &e.auth
                && !self.auth.contains_key(a)
            {
                diags.push(
                    file,
                    at(&["endpoints", name, "auth"]),
                    format!("endpoints.{name}.auth"),
                    format!("unknown auth provider `{a}`"),
                );
            }
            if e.base_url.is_none() && e.simulate.is_none() {
                diags.push(file, at(&["endpoints", name]), format!("endpoints.{name}"), "an endpoint needs `base_url` or `simulate`");
            }
        }
    }

    pub fn node_timeout(&self) -> Duration {
        self.defaults.node_timeout.get()
    }

    pub fn write_patience(&self) -> Duration {
        self.storage.write_patience.get()
    }

    pub fn connect_timeout(&self) -> Duration {
        self.storage.connect_timeout.get()
    }

    pub fn flows_dir(&self) -> PathBuf {
        self.base_dir.join(&self.flows_dir)
    }

    /// The storage URL with a relative SQLite path resolved against the config's directory.
    pub fn storage_url(&self) -> String {
        resolve_sqlite_url(&self.storage.url, &self.base_dir)
    }

    pub fn time_zone(&self) -> jiff::tz::TimeZone {
        self.tz.clone()
    }
}

pub fn resolve_sqlite_url(url: &str, base: &Path) -> String {
    let Some(rest) = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")) else {
        return url.to_owned();
    };
    let (path, query) = rest.split_once('?').map(|(p, q)| (p, Some(q))).unwrap_or((rest, None));
    if path.is_empty() || path == ":memory:" || Path::new(path).is_absolute() {
        return url.to_owned();
    }
    let full = base.join(path);
    match query {
        Some(q) => format!("sqlite://{}?{q}", full.display()),
        None => format!("sqlite://{}", full.display()),
    }
}

/// Masks every value taken from the environment in error messages, whatever its length (the
/// redactor leaves values under 4 characters alone in ordinary text; here a short one is masked
/// where it is quoted): a `${VAR}` that fails a check is named by its place, never shown.
fn scrub(mut diags: Diagnostics, taken: &[String]) -> Diagnostics {
    let mut taken: Vec<&String> = taken.iter().collect();
    taken.sort_by_key(|v| std::cmp::Reverse(v.len()));
    for d in &mut diags.0 {
        for v in &taken {
            if v.len() >= 4 {
                d.message = d.message.replace(v.as_str(), crate::redact::MASK);
            } else {
                d.message = d.message.replace(&format!("`{v}`"), &format!("`{}`", crate::redact::MASK));
            }
        }
    }
    diags
}

/// Replaces `${VAR}` and `${VAR:-default}` in every string value; each value taken from the
/// environment becomes a secret the redactor masks (and is listed in `taken`).
fn substitute(
    node: &mut Node,
    env: &dyn Fn(&str) -> Option<String>,
    red: &Redactor,
    taken: &mut Vec<String>,
    file: &Path,
    diags: &mut Diagnostics,
) {
    match &mut node.value {
        Yaml::Str(s) if s.contains("${") => {
            let mut out = String::new();
            let mut rest = s.as_str();
            while let Some(start) = rest.find("${") {
                out.push_str(&rest[..start]);
                let after = &rest[start + 2..];
                let Some(end) = after.find('}') else {
                    diags.push(file, node.pos, "", "unclosed `${` in a value");
                    return;
                };
                let expr = &after[..end];
                let (var, default) = match expr.split_once(":-") {
                    Some((v, d)) => (v, Some(d)),
                    None => (expr, None),
                };
                match env(var) {
                    Some(v) if !v.is_empty() => {
                        red.add(&v);
                        out.push_str(&v);
                        taken.push(v);
                    }
                    _ => match default {
                        Some(d) => out.push_str(d),
                        None => diags.push(file, node.pos, "", format!("environment variable `{var}` is not set")),
                    },
                }
                rest = &after[end + 1..];
            }
            out.push_str(rest);
            *s = out;
        }
        Yaml::Seq(items) => items.iter_mut().for_each(|n| substitute(n, env, red, taken, file, diags)),
        Yaml::Map(entries) => entries.iter_mut().for_each(|(_, v)| substitute(v, env, red, taken, file, diags)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, env: &[(&str, &str)]) -> Result<Config, Diagnostics> {
        let env: BTreeMap<String, String> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::parse(Path::new("flowguard.yaml"), text, Path::new("/p"), &|k| env.get(k).cloned())
    }

    #[test]
    fn env_vars_are_substituted_and_redacted() {
        let cfg = parse(
            "models:\n  m:\n    provider: openai\n    base_url: http://x\n    model: x\n    api_key: ${KEY}\n",
            &[("KEY", "sk-verysecret")],
        )
        .unwrap();
        assert_eq!(cfg.models["m"].api_key.as_deref(), Some("sk-verysecret"));
        assert_eq!(cfg.redactor.redact("the key is sk-verysecret"), "the key is ***");
    }

    #[test]
    fn missing_env_var_is_named_with_position() {
        let err = parse("models:\n  m:\n    provider: openai\n    base_url: http://x\n    model: x\n    api_key: ${NOPE_KEY}\n", &[])
            .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("NOPE_KEY") && text.contains("flowguard.yaml:6:14"), "{text}");
    }

    #[test]
    fn all_errors_at_once() {
        let err = parse("timezone: Mars/Base\nlocale: fr\nmodels:\n  a:\n    provider: simulated\n    fallback: [b]\n", &[]).unwrap_err();
        assert_eq!(err.0.len(), 3, "{err}");
        let err = parse("storage:\n  urll: x\n", &[]).unwrap_err().to_string();
        assert!(err.contains("did you mean `url`"), "{err}");
    }

    #[test]
    fn durations_are_parsed_once_and_a_bad_one_is_an_error_where_it_is() {
        let cfg = parse("alerting:\n  group_wait: 30s\nserver:\n  shutdown_grace: 1m\n", &[]).unwrap();
        assert_eq!(cfg.alerting.group_wait.get(), Duration::from_secs(30));
        assert_eq!(cfg.server.shutdown_grace.get(), Duration::from_secs(60));
        // Each of these used to fall back silently to a default where it was used.
        for (text, at) in [
            ("alerting:\n  group_wait: soon\n", "flowguard.yaml:2:15: alerting.group_wait"),
            ("models:\n  m:\n    provider: simulated\n    simulate: { latency: fast }\n", "flowguard.yaml:4:26: models.m.simulate.latency"),
            ("server:\n  watch_interval: often\n", "flowguard.yaml:2:19: server.watch_interval"),
            ("reports:\n  retention: { runs: forever }\n", "flowguard.yaml:2:22: reports.retention.runs"),
        ] {
            let err = parse(text, &[]).unwrap_err().to_string();
            assert!(err.contains(at) && err.contains("bad duration"), "{text}: {err}");
        }
        // Every bad field at once, the rest of the file still checked.
        let err = parse("alerting:\n  group_wait: soon\n  drain: later\nlocale: fr\n", &[]).unwrap_err();
        assert_eq!(err.0.len(), 3, "{err}");
    }

    #[test]
    fn severities_and_error_kinds_are_enums_with_design_spellings() {
        let cfg = parse("routes:\n  - match: { severity: [high], error_kind: [upstream_5xx] }\n", &[]).unwrap();
        assert_eq!(cfg.routes[0].matchers.severity, vec![crate::vocab::Severity::High]);
        assert_eq!(cfg.routes[0].matchers.error_kind, vec![crate::vocab::ErrorKind::Upstream5xx]);
        let err = parse("routes:\n  - match: { severity: [hihg] }\n", &[]).unwrap_err().to_string();
        assert!(err.contains("routes[0].match.severity[0]") && err.contains("did you mean `high`"), "{err}");
    }

    #[test]
    fn short_api_tokens_fail_check() {
        let err = parse("server:\n  tokens:\n    - { name: ci, token: short, scopes: [read] }\n", &[]).unwrap_err().to_string();
        assert!(err.contains("flowguard.yaml:3:26: server.tokens[0].token") && err.contains("at least 16"), "{err}");
        parse("server:\n  tokens:\n    - { name: ci, token: 0123456789abcdef, scopes: [read] }\n", &[]).unwrap();
    }

    #[test]
    fn values_from_the_environment_never_appear_in_errors() {
        let text = "locale: ${LOC}\ntimezone: ${TZ_NAME}\nstorage:\n  url: ${DB}\n  max_connections: 0\n";
        let err =
            parse(text, &[("LOC", "secret-locale-value"), ("TZ_NAME", "xy"), ("DB", "ftp://user:pw@host/db")]).unwrap_err().to_string();
        for leaked in ["secret-locale-value", "`xy`", "user:pw"] {
            assert!(!err.contains(leaked), "{leaked} leaked: {err}");
        }
        assert!(err.contains("flowguard.yaml:1:9: locale") && err.contains("storage.url"), "{err}");
        // A value of the wrong type (caught while deserializing) is masked as well.
        let err = parse("storage:\n  max_connections: ${N}\n", &[("N", "not-a-number-secret")]).unwrap_err().to_string();
        assert!(!err.contains("not-a-number-secret"), "{err}");
    }

    #[test]
    fn relative_sqlite_paths_follow_the_config() {
        assert_eq!(resolve_sqlite_url("sqlite://fg.db", Path::new("/p")), "sqlite:///p/fg.db");
        assert_eq!(resolve_sqlite_url("sqlite:///abs.db?mode=rwc", Path::new("/p")), "sqlite:///abs.db?mode=rwc");
        assert_eq!(resolve_sqlite_url("mysql://root@h/db", Path::new("/p")), "mysql://root@h/db");
    }
}
