//! `flowguard.yaml`: storage, models, endpoints, time zone, locale and the flows directory.
//! Secrets come from `${ENV_VAR}` substitution; a missing variable is an error that names it.
//! All problems are reported together, each with file:line:column and the field.

use crate::flow::yaml::{self, Node, Pos, Yaml};
use crate::flow::{Diagnostics, from_tree, parse_duration};
use crate::redact::Redactor;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
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
    #[serde(default)]
    pub defaults: Defaults,
    #[serde(default)]
    pub models: BTreeMap<String, ModelConfig>,
    #[serde(default)]
    pub endpoints: BTreeMap<String, EndpointConfig>,
    /// Token providers for endpoints (OAuth2 client credentials).
    #[serde(default)]
    pub auth: BTreeMap<String, crate::auth::AuthConfig>,
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
    pub reports: crate::report::ReportsConfig,
    /// `flowguard serve`: listen address, API tokens, limits.
    #[serde(default)]
    pub server: crate::server::config::ServerConfig,
    /// The directory of the config file; paths in it are relative to this.
    #[serde(skip)]
    pub base_dir: PathBuf,
    #[serde(skip)]
    pub file: PathBuf,
    #[serde(skip)]
    pub redactor: Redactor,
}

#[derive(Debug, Clone, Deserialize)]
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
    pub connect_timeout: String,
    /// How long a run keeps retrying a write while the database is away.
    #[serde(default = "default_write_patience")]
    pub write_patience: String,
    /// How long a process's hold on a run it executes lasts without renewal. A run whose process
    /// died (or stopped answering) is taken over by a `serve` this long after its last renewal.
    #[serde(default = "default_lease", deserialize_with = "de_duration")]
    pub lease: Duration,
    /// How often the hold is renewed; a third of `lease` when not set.
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub lease_heartbeat: Option<Duration>,
}

fn default_lease() -> Duration {
    Duration::from_secs(30)
}

fn de_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    parse_duration(&s).map_err(serde::de::Error::custom)
}

fn de_opt_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    de_duration(d).map(Some)
}

impl StorageConfig {
    /// How often a run's lease is renewed.
    pub fn lease_heartbeat(&self) -> Duration {
        self.lease_heartbeat.unwrap_or(self.lease / 3)
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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    /// Time limit of a node that sets none.
    #[serde(default = "default_node_timeout")]
    pub node_timeout: String,
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults { node_timeout: default_node_timeout() }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    /// Any OpenAI-compatible chat completions API (OpenAI, DeepSeek, Doubao/Ark, Qwen, Ollama …).
    Openai,
    /// flowguard's built-in simulator, for drills and the demo.
    Simulated,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
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
    pub temperature: Option<f64>,
    pub max_tokens: Option<u32>,
    /// Settings of the simulator (provider `simulated`).
    #[serde(default)]
    pub simulate: crate::sim::SimModelConfig,
}

#[derive(Debug, Clone, Deserialize)]
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
    pub simulate: Option<crate::sim::SimEndpointConfig>,
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
fn default_node_timeout() -> String {
    "60s".into()
}
fn default_connect_timeout() -> String {
    "10s".into()
}
fn default_write_patience() -> String {
    "30s".into()
}

impl Config {
    /// Reads and checks a config file.
    pub fn load(file: &Path) -> Result<Config, Diagnostics> {
        let text = std::fs::read_to_string(file).map_err(|e| {
            let mut d = Diagnostics::default();
            let hint = if e.kind() == std::io::ErrorKind::NotFound { " (create one with `flowguard init`, or pass --config)" } else { "" };
            d.push(file, Pos::default(), "", format!("cannot read the config: {e}{hint}"));
            d
        })?;
        let base = file.parent().map(Path::to_path_buf).unwrap_or_default();
        Self::parse(file, &text, &base, &|k| std::env::var(k).ok())
    }

    /// Parses config text; `env` looks up variables (tests pass their own).
    pub fn parse(file: &Path, text: &str, base_dir: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, Diagnostics> {
        let mut diags = Diagnostics::default();
        let mut tree = yaml::parse(text).map_err(|m| {
            let mut d = Diagnostics::default();
            d.push(file, Pos::default(), "", m);
            d
        })?;
        let redactor = Redactor::default();
        substitute(&mut tree, env, &redactor, file, &mut diags);
        if !diags.is_empty() {
            return Err(diags);
        }
        let mut cfg: Config = from_tree(&tree, file, &[], &[]).map_err(|d| Diagnostics(vec![d]))?;
        cfg.base_dir = base_dir.to_path_buf();
        cfg.file = file.to_path_buf();
        cfg.redactor = redactor;
        cfg.check(&tree, file, &mut diags);
        diags.into_result(cfg)
    }

    fn check(&self, tree: &Node, file: &Path, diags: &mut Diagnostics) {
        let at = |path: &[&str]| {
            let segs: Vec<_> = path.iter().map(|k| yaml::PathSeg::Key((*k).into())).collect();
            tree.locate(&segs).pos
        };
        if jiff::tz::TimeZone::get(&self.timezone).is_err() {
            diags.push(
                file,
                at(&["timezone"]),
                "timezone",
                format!("unknown time zone `{}` (use an IANA name such as Asia/Shanghai)", self.timezone),
            );
        }
        if !["zh-CN", "en"].contains(&self.locale.as_str()) {
            diags.push(file, at(&["locale"]), "locale", format!("unknown locale `{}`; expected zh-CN or en", self.locale));
        }
        if let Err(m) = parse_duration(&self.defaults.node_timeout) {
            diags.push(file, at(&["defaults", "node_timeout"]), "defaults.node_timeout", m);
        }
        if let Err(m) = parse_duration(&self.storage.write_patience) {
            diags.push(file, at(&["storage", "write_patience"]), "storage.write_patience", m);
        }
        if let Err(m) = parse_duration(&self.storage.connect_timeout) {
            diags.push(file, at(&["storage", "connect_timeout"]), "storage.connect_timeout", m);
        }
        if self.storage.lease < Duration::from_millis(100) {
            diags.push(file, at(&["storage", "lease"]), "storage.lease", "must be at least 100ms".to_string());
        }
        if self.storage.lease_heartbeat().is_zero() || self.storage.lease_heartbeat() >= self.storage.lease {
            diags.push(
                file,
                at(&["storage", "lease_heartbeat"]),
                "storage.lease_heartbeat",
                "must be above 0 and shorter than storage.lease".to_string(),
            );
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
                    let hint = crate::flow::suggest(fb, self.models.keys().map(String::as_str))
                        .map(|s| format!(" (did you mean `{s}`?)"))
                        .unwrap_or_default();
                    diags.push(file, at(&["models", name, "fallback"]), format!("{field}.fallback"), format!("unknown model `{fb}`{hint}"));
                } else if fb == name {
                    diags.push(file, at(&["models", name, "fallback"]), format!("{field}.fallback"), "a model cannot fall back to itself");
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
        for (field, m) in self.reports.problems() {
            let path: Vec<&str> = field.split('.').collect();
            diags.push(file, at(&path), field.clone(), m);
        }
        for (path, m) in crate::alert::config::check(&self.channels, &self.routes, &self.alerting) {
            let segs: Vec<&str> = path.iter().map(String::as_str).filter(|s| !s.starts_with('[')).collect();
            diags.push(file, at(&segs), path.join(".").replace(".[", "["), m);
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
        parse_duration(&self.defaults.node_timeout).unwrap_or(Duration::from_secs(60))
    }

    pub fn write_patience(&self) -> Duration {
        parse_duration(&self.storage.write_patience).unwrap_or(Duration::from_secs(30))
    }

    pub fn connect_timeout(&self) -> Duration {
        parse_duration(&self.storage.connect_timeout).unwrap_or(Duration::from_secs(10))
    }

    pub fn flows_dir(&self) -> PathBuf {
        self.base_dir.join(&self.flows_dir)
    }

    /// The storage URL with a relative SQLite path resolved against the config's directory.
    pub fn storage_url(&self) -> String {
        resolve_sqlite_url(&self.storage.url, &self.base_dir)
    }

    pub fn time_zone(&self) -> jiff::tz::TimeZone {
        jiff::tz::TimeZone::get(&self.timezone).unwrap_or(jiff::tz::TimeZone::UTC)
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

/// Replaces `${VAR}` and `${VAR:-default}` in every string value; each value taken from the
/// environment becomes a secret the redactor masks.
fn substitute(node: &mut Node, env: &dyn Fn(&str) -> Option<String>, red: &Redactor, file: &Path, diags: &mut Diagnostics) {
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
        Yaml::Seq(items) => items.iter_mut().for_each(|n| substitute(n, env, red, file, diags)),
        Yaml::Map(entries) => entries.iter_mut().for_each(|(_, v)| substitute(v, env, red, file, diags)),
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
    fn relative_sqlite_paths_follow_the_config() {
        assert_eq!(resolve_sqlite_url("sqlite://fg.db", Path::new("/p")), "sqlite:///p/fg.db");
        assert_eq!(resolve_sqlite_url("sqlite:///abs.db?mode=rwc", Path::new("/p")), "sqlite:///abs.db?mode=rwc");
        assert_eq!(resolve_sqlite_url("mysql://root@h/db", Path::new("/p")), "mysql://root@h/db");
    }
}
