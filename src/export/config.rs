//! The `exporters:` section of flowguard.yaml: where the run log is copied to, each sink optional.

use crate::config::HumanDuration;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ExportersConfig {
    /// Elasticsearch or OpenSearch (`_bulk`); Kibana reads it.
    pub elasticsearch: Option<ElasticsearchConfig>,
    /// OpenTelemetry traces over OTLP/HTTP (JSON): a run is a trace, a node attempt a span.
    pub otlp: Option<OtlpConfig>,
    /// Feishu Bitable (飞书多维表格): one record per node attempt.
    pub bitable: Option<BitableConfig>,
    /// Records read from the run log per delivery (node attempts, and as many run ends). Larger
    /// batches mean fewer cursor writes beside the runs' own; Bitable sends them in calls of 500.
    pub batch_size: usize,
    /// How often a sink that has caught up looks for new records (one read, no write). While a
    /// backlog is waiting, full batches go one after another.
    pub interval: HumanDuration,
    /// How long a hole in the log's numbering is waited for before it is passed over (a
    /// transaction still committing fills it; a rolled-back one never does).
    pub gap_wait: HumanDuration,
    /// How long one process's hold on a sink lasts without renewal; another `serve` takes the
    /// sink over this long after its holder stopped.
    pub lease: HumanDuration,
    /// Longest wait between tries while a sink is failing (it doubles from `interval`, or follows
    /// the target's Retry-After).
    pub max_backoff: HumanDuration,
    /// A sink failing for this long raises an alert (flow `flowguard`, node `exporter:NAME`)
    /// through the normal routes.
    pub alert_after: HumanDuration,
}

impl Default for ExportersConfig {
    fn default() -> Self {
        ExportersConfig {
            elasticsearch: None,
            otlp: None,
            bitable: None,
            batch_size: 1000,
            interval: HumanDuration::secs(2),
            gap_wait: HumanDuration::secs(10),
            lease: HumanDuration::secs(30),
            max_backoff: HumanDuration::secs(300),
            alert_after: HumanDuration::secs(600),
        }
    }
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ElasticsearchConfig {
    /// e.g. `https://es.internal:9200`.
    pub url: String,
    /// Index (or alias) of node attempts; with `dated`, a daily index `NAME-YYYY.MM.DD` by the
    /// attempt's start (UTC), so a record always lands in the same index.
    #[serde(default = "default_attempts_index")]
    pub index: String,
    /// Index of runs (one document per run, replaced as the run ends or resumes).
    #[serde(default = "default_runs_index")]
    pub runs_index: String,
    /// Daily indices for node attempts.
    #[serde(default)]
    pub dated: bool,
    /// An API key (`Authorization: ApiKey …`), usually `${ES_API_KEY}`.
    pub api_key: Option<String>,
    /// Basic auth user, with `password`.
    pub username: Option<String>,
    /// Basic auth password, usually `${ES_PASSWORD}`.
    pub password: Option<String>,
    /// Kibana, for `flowguard exporters setup elasticsearch` to install the saved objects.
    pub kibana_url: Option<String>,
    /// Limit of one request.
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OtlpConfig {
    /// The collector's traces URL, e.g. `http://otel-collector:4318/v1/traces`.
    pub endpoint: String,
    /// Sent with every request (values may be `${SECRETS}`).
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    /// `service.name` of the resource.
    #[serde(default = "default_service")]
    pub service_name: String,
    /// Limit of one request.
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BitableConfig {
    /// The open platform: `https://open.feishu.cn` (Lark: `https://open.larksuite.com`).
    #[serde(default = "default_feishu")]
    pub base_url: String,
    /// The app's id (a custom app with the `bitable:app` or `base:record:create` permission).
    pub app_id: String,
    /// The app's secret, usually `${FEISHU_APP_SECRET}`.
    pub app_secret: String,
    /// The Bitable app token (from the base's URL).
    pub app_token: String,
    /// The table to write to (`tbl…`).
    pub table_id: String,
    /// A link to each run, written to the `Run link` URL field: `{run_id}` is replaced.
    pub run_url: Option<String>,
    /// Limit of one request.
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
}

fn default_feishu() -> String {
    "https://open.feishu.cn".into()
}

fn default_attempts_index() -> String {
    "flowguard-attempts".into()
}
fn default_runs_index() -> String {
    "flowguard-runs".into()
}
fn default_service() -> String {
    "flowguard".into()
}
fn default_timeout() -> HumanDuration {
    HumanDuration::secs(30)
}

impl ExportersConfig {
    /// Problems `check` reports, as (field, message).
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if self.batch_size == 0 || self.batch_size > 10_000 {
            out.push(("exporters.batch_size".into(), "must be between 1 and 10000".into()));
        }
        if self.interval.get().is_zero() {
            out.push(("exporters.interval".into(), "must be above 0".into()));
        }
        if self.lease.get() < std::time::Duration::from_millis(100) {
            out.push(("exporters.lease".into(), "must be at least 100ms".into()));
        }
        if let Some(es) = &self.elasticsearch {
            if !(es.url.starts_with("http://") || es.url.starts_with("https://")) {
                out.push(("exporters.elasticsearch.url".into(), "expected an http:// or https:// URL".into()));
            }
            if es.api_key.is_some() && es.username.is_some() {
                out.push(("exporters.elasticsearch".into(), "set `api_key` or `username`/`password`, not both".into()));
            }
            if es.username.is_some() != es.password.is_some() {
                out.push(("exporters.elasticsearch".into(), "`username` and `password` go together".into()));
            }
            for (k, v) in [("index", &es.index), ("runs_index", &es.runs_index)] {
                if v.is_empty() || v.chars().any(|c| c.is_ascii_uppercase() || "\\/*?\"<>| ,#".contains(c)) {
                    out.push((
                        format!("exporters.elasticsearch.{k}"),
                        format!("`{v}` is not a valid index name (lowercase, no \\ / * ? \" < > | , # or space)"),
                    ));
                }
            }
        }
        if let Some(b) = &self.bitable {
            if !(b.base_url.starts_with("http://") || b.base_url.starts_with("https://")) {
                out.push(("exporters.bitable.base_url".into(), "expected an http:// or https:// URL".into()));
            }
            for (k, v) in [("app_id", &b.app_id), ("app_secret", &b.app_secret), ("app_token", &b.app_token), ("table_id", &b.table_id)] {
                if v.trim().is_empty() {
                    out.push((format!("exporters.bitable.{k}"), "must not be empty".into()));
                }
            }
        }
        if let Some(o) = &self.otlp
            && !(o.endpoint.starts_with("http://") || o.endpoint.starts_with("https://"))
        {
            out.push(("exporters.otlp.endpoint".into(), "expected an http:// or https:// URL".into()));
        }
        out
    }
}
