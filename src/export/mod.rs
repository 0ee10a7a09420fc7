//! Exporters: copies of the run log in the tools teams already watch (Elasticsearch/Kibana,
//! OpenTelemetry collectors). Each sink follows the log from a cursor kept in the database
//! (`exporter_cursors`): the log itself is the buffer, so a target that is down for an hour
//! loses nothing and slows no run — runs never wait for an exporter; exporters read what runs
//! committed. Delivery is at-least-once with stable ids (`RUN_ID:SEQ` for a node attempt, the run
//! id for a run), so a retry or a restart never makes a duplicate at the target.
//!
//! One process exports a sink at a time: it holds a lease row with a fencing epoch, and a cursor
//! write of a process whose lease was taken over is refused. [`Exporter::step`] is the "do one
//! step" function tests drive; [`Exporter::run`] loops it with backoff.
//!
//! The log is read in the order the database numbers it (`node_attempts.id`, `run_ends.seq`).
//! Numbers can be taken out of commit order (concurrent transactions on MySQL/PostgreSQL) or
//! never used (a rolled-back insert), so the cursor moves only over an unbroken run of numbers;
//! a hole is waited for `gap_wait`, then passed over.
//!
//! Adding a sink: one file with a type implementing [`Sink`], one line in [`sinks`].

pub mod bitable;
pub mod config;
pub mod elasticsearch;
pub mod otlp;

use crate::store::{AttemptRecord, ExportCursor, ExportProgress, RunRecord, Store};
use crate::vocab::{ErrorKind, Severity};
use config::ExportersConfig;
use futures::future::BoxFuture;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// What one delivery carries: node attempts and runs that reached an end, in log order.
#[derive(Debug, Default, Clone)]
pub struct Batch {
    pub attempts: Vec<AttemptRecord>,
    pub runs: Vec<RunRecord>,
    /// The part of the log it covers: node attempt ids in `(after, to]`, run end seqs in
    /// `(runs_after, runs_to]`. A delivery sent again covers the same extent, so a sink may derive
    /// an idempotency token from it (see [`Sink::exact_retry`]).
    pub extent: Extent,
}

/// A part of the log: node attempt ids in `(attempts_after, attempts_to]`, run end seqs in
/// `(runs_after, runs_to]`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub attempts_after: i64,
    pub attempts_to: i64,
    pub runs_after: i64,
    pub runs_to: i64,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.attempts.len() + self.runs.len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The stable id of a node attempt at every target.
pub fn attempt_id(a: &AttemptRecord) -> String {
    format!("{}:{}", a.run_id, a.seq)
}

/// A delivery the target took.
#[derive(Debug, Default, Clone, Copy)]
pub struct Delivered {
    /// Records the target refused for good (logged and counted; never retried).
    pub rejected: usize,
}

/// A delivery to try again later; the cursor stays.
#[derive(Debug, Clone)]
pub struct SinkError {
    pub kind: ErrorKind,
    /// Without secrets.
    pub message: String,
    /// What the target asked for (Retry-After), if anything.
    pub retry_after: Option<Duration>,
}

impl SinkError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> SinkError {
        SinkError { kind, message: message.into(), retry_after: None }
    }

    /// From a transport error, without the URL (it may carry credentials).
    pub fn transport(e: reqwest::Error) -> SinkError {
        let (kind, message) = crate::classify::classify_transport(&e.without_url());
        SinkError::new(kind, message)
    }
}

/// A target of the run log. Sends one batch; idempotent by the records' stable ids.
pub trait Sink: Send + Sync {
    /// The sink's name: its key under `exporters:`, in metrics, status and alerts.
    fn name(&self) -> &'static str;
    fn send<'a>(&'a self, batch: &'a Batch) -> BoxFuture<'a, Result<Delivered, SinkError>>;
    /// True when the target makes a retry idempotent only if it carries exactly the same records
    /// (Bitable's `client_token`), rather than by each record's id. The exporter then records a
    /// delivery's extent in the cursor row before sending it, and whoever holds the sink next (this
    /// process, a restarted one, another `serve`) sends exactly that extent again first.
    fn exact_retry(&self) -> bool {
        false
    }
}

/// The configured sinks: one line per sink type.
/// `providers`: configured model name → `gen_ai.provider.name` (see [`providers`]).
pub fn sinks(cfg: &ExportersConfig, providers: std::collections::BTreeMap<String, String>) -> anyhow::Result<Vec<Arc<dyn Sink>>> {
    let mut out: Vec<Arc<dyn Sink>> = Vec::new();
    if let Some(c) = &cfg.elasticsearch {
        out.push(Arc::new(elasticsearch::Elasticsearch::new(c)?));
    }
    if let Some(c) = &cfg.bitable {
        out.push(Arc::new(bitable::Bitable::new(c)?));
    }
    if let Some(c) = &cfg.otlp {
        out.push(Arc::new(otlp::Otlp::new(c, providers.clone())?));
    }
    Ok(out)
}

/// Configured model name → the `gen_ai.provider.name` of its API.
pub fn providers(config: &crate::config::Config) -> std::collections::BTreeMap<String, String> {
    config
        .models
        .iter()
        .map(|(name, m)| {
            let p = match m.provider {
                crate::config::Provider::Openai => "openai",
                crate::config::Provider::Simulated => "flowguard.simulated",
            };
            (name.clone(), p.to_owned())
        })
        .collect()
}

/// Timing of the loop, from the config (tests shorten it).
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub batch_size: i64,
    pub interval: Duration,
    pub gap_wait: Duration,
    pub lease: Duration,
    pub max_backoff: Duration,
    pub alert_after: Duration,
}

impl From<&ExportersConfig> for Settings {
    fn from(c: &ExportersConfig) -> Self {
        Settings {
            batch_size: c.batch_size as i64,
            interval: c.interval.get(),
            gap_wait: c.gap_wait.get(),
            lease: c.lease.get(),
            max_backoff: c.max_backoff.get(),
            alert_after: c.alert_after.get(),
        }
    }
}

/// What one step did.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Another process holds the sink.
    NotHolder,
    /// Nothing new in the log.
    Idle,
    /// Records delivered (and refused for good).
    Sent { sent: usize, rejected: usize },
    /// The delivery failed; tried again after this long.
    Failed { retry_in: Duration },
    /// Another process took the sink over during the step; nothing was recorded.
    Lost,
}

/// Follows the log for one sink.
pub struct Exporter {
    store: Store,
    sink: Arc<dyn Sink>,
    settings: Settings,
    /// This exporter, as written in the lease row (each exporter its own, even in one process).
    owner: String,
    /// When each hole (stream, first missing number) was first seen.
    gaps: HashMap<(u8, i64), Instant>,
    failures: u32,
    alerter: Option<crate::alert::Alerter>,
    /// The failing episode already alerted.
    alerted: bool,
    epoch: Option<i64>,
}

/// The flow of the alert a failing sink raises (flowguard's own alerts).
pub const ALERT_FLOW: &str = "flowguard";

/// The node of the alert sink `name` raises while failing.
pub fn alert_node(name: &str) -> String {
    format!("exporter:{name}")
}

fn wall_ms() -> i64 {
    crate::store::leases::wall_ms()
}

impl Exporter {
    pub fn new(store: Store, sink: Arc<dyn Sink>, settings: Settings) -> Exporter {
        let owner = format!("{}:{:08x}", crate::store::leases::owner(), fastrand::u32(..));
        Exporter { store, sink, settings, owner, gaps: HashMap::new(), failures: 0, alerter: None, alerted: false, epoch: None }
    }

    /// Raises an alert through these routes when the sink keeps failing.
    pub fn with_alerter(mut self, a: crate::alert::Alerter) -> Exporter {
        self.alerter = Some(a);
        self
    }

    pub fn name(&self) -> &'static str {
        self.sink.name()
    }

    /// One step: hold the sink, read what follows its cursor, deliver it, move the cursor.
    pub async fn step(&mut self) -> anyhow::Result<Step> {
        let name = self.sink.name();
        let lease = self.settings.lease.as_millis() as i64;
        let Some(cur) = self.store.export_claim(name, &self.owner, wall_ms(), lease).await? else {
            self.epoch = None;
            return Ok(Step::NotHolder);
        };
        if self.epoch != Some(cur.epoch) {
            // Newly held (or held again): holes seen under another holder are judged afresh.
            self.gaps.clear();
            self.epoch = Some(cur.epoch);
        }
        let n = self.settings.batch_size;
        let (attempts, attempt_to, runs, run_to) = match cur.inflight {
            // A delivery recorded before it was sent, whose answer never came: exactly that
            // extent again (holes in it were passed over when it was first read).
            Some((a_to, r_to)) => {
                let span = |from: i64, to: i64| (to - from).clamp(1, 100_000);
                let mut attempts = self.store.attempts_after(cur.attempt_id, span(cur.attempt_id, a_to)).await?;
                attempts.retain(|(id, _)| *id <= a_to);
                let mut runs = self.store.run_ends_after(cur.run_end_seq, span(cur.run_end_seq, r_to)).await?;
                runs.retain(|(seq, _)| *seq <= r_to);
                let attempt_to = if a_to > cur.attempt_id { a_to } else { cur.attempt_id };
                let run_to = if r_to > cur.run_end_seq { r_to } else { cur.run_end_seq };
                (attempts.into_iter().map(|(_, a)| a).collect(), attempt_to, runs.into_iter().map(|(_, r)| r).collect::<Vec<_>>(), run_to)
            }
            None => {
                let attempts = self.store.attempts_after(cur.attempt_id, n).await?;
                let runs = self.store.run_ends_after(cur.run_end_seq, n).await?;
                let (attempts, attempt_to) = self.unbroken(0, cur.attempt_id, attempts);
                let (runs, run_to) = self.unbroken(1, cur.run_end_seq, runs);
                (attempts, attempt_to, runs, run_to)
            }
        };
        let extent = Extent { attempts_after: cur.attempt_id, attempts_to: attempt_to, runs_after: cur.run_end_seq, runs_to: run_to };
        let mut batch = Batch { attempts, runs: runs.into_iter().flatten().collect(), extent };
        // One document per run in a batch: its latest state.
        dedup_runs(&mut batch.runs);
        let progress = |sent, rejected| ExportProgress { attempt_id: attempt_to, run_end_seq: run_to, sent, rejected };
        if batch.is_empty() {
            let moved = attempt_to != cur.attempt_id || run_to != cur.run_end_seq;
            if !moved && cur.inflight.is_none() {
                // Caught up: nothing to write (the claim renews the lease when due).
                return Ok(Step::Idle);
            }
            return Ok(if self.store.export_advance(name, cur.epoch, &progress(0, 0), wall_ms(), lease).await? {
                if moved { Step::Sent { sent: 0, rejected: 0 } } else { Step::Idle }
            } else {
                Step::Lost
            });
        }
        if self.sink.exact_retry()
            && cur.inflight.is_none()
            && !self.store.export_pin(name, cur.epoch, attempt_to, run_to, wall_ms(), lease).await?
        {
            return Ok(Step::Lost);
        }
        match self.sink.send(&batch).await {
            Ok(d) => {
                let total = batch.len();
                let rejected = d.rejected.min(total);
                if cur.failing_since.is_some() {
                    // Failing until now (as the database says, whichever process failed): its
                    // alert, if one was raised, is resolved before the cursor forgets it failed.
                    self.resolve().await;
                }
                let ok = self
                    .store
                    .export_advance(name, cur.epoch, &progress((total - rejected) as i64, rejected as i64), wall_ms(), lease)
                    .await?;
                if !ok {
                    return Ok(Step::Lost);
                }
                if self.failures > 0 {
                    tracing::info!(sink = name, "exporter delivers again");
                }
                self.failures = 0;
                self.alerted = false;
                Ok(Step::Sent { sent: total - rejected, rejected })
            }
            Err(e) => {
                self.failures += 1;
                let now = wall_ms();
                let message = self.redact(&e.message);
                tracing::warn!(sink = name, kind = %e.kind, error = %message, records = batch.len(), "exporter delivery failed; the records stay in the log and are tried again");
                if !self.store.export_failed(name, cur.epoch, 1, &message, now, lease).await? {
                    return Ok(Step::Lost);
                }
                let since = cur.failing_since.unwrap_or(now);
                if !self.alerted && now - since >= self.settings.alert_after.as_millis() as i64 {
                    self.alerted = true;
                    self.raise(&e, &message, &cur, now - since).await;
                }
                Ok(Step::Failed { retry_in: self.backoff(e.retry_after) })
            }
        }
    }

    /// The longest unbroken run of numbers after `from` (a hole older than `gap_wait` counts as
    /// filled), and where the cursor may move to.
    fn unbroken<T>(&mut self, stream: u8, from: i64, rows: Vec<(i64, T)>) -> (Vec<T>, i64) {
        let now = Instant::now();
        let mut to = from;
        let mut out = Vec::with_capacity(rows.len());
        for (id, r) in rows {
            if id != to + 1 {
                let first = *self.gaps.entry((stream, to + 1)).or_insert(now);
                if now.duration_since(first) < self.settings.gap_wait {
                    break;
                }
            }
            to = id;
            out.push(r);
        }
        self.gaps.retain(|(s, id), _| *s != stream || *id > to);
        (out, to)
    }

    fn backoff(&self, asked: Option<Duration>) -> Duration {
        let base = self.settings.interval.max(Duration::from_millis(10));
        let doubled = base.saturating_mul(1u32 << self.failures.min(16));
        asked.unwrap_or(doubled).min(self.settings.max_backoff).max(base.min(self.settings.max_backoff))
    }

    fn redact(&self, s: &str) -> String {
        match &self.alerter {
            Some(a) => a.redactor().redact(s),
            None => s.to_owned(),
        }
    }

    async fn raise(&self, e: &SinkError, message: &str, cur: &ExportCursor, for_ms: i64) {
        let Some(alerter) = &self.alerter else { return };
        let name = self.sink.name();
        let severity = if e.kind == ErrorKind::AuthExpired { Severity::High } else { Severity::Medium };
        let input = crate::alert::AlertInput {
            flow: ALERT_FLOW.into(),
            node: alert_node(name),
            error_kind: e.kind.as_str().into(),
            severity,
            status: "exporter_failing".into(),
            run_id: None,
            message: format!(
                "exporter `{name}` has failed for {}: {message}. Nothing is lost: it resumes from its cursor (node attempt {}, run end {}) when the target answers.",
                humantime::format_duration(Duration::from_secs((for_ms / 1000).max(0) as u64)),
                cur.attempt_id,
                cur.run_end_seq
            ),
            attempts: None,
            labels: [("sink".to_owned(), name.to_owned())].into_iter().collect(),
        };
        if let Err(err) = alerter.raise(input).await {
            tracing::error!(sink = name, error = %self.redact(&format!("{err:#}")), "could not raise the exporter alert");
        }
    }

    /// Resolves the sink's failing alert (flow `flowguard`, node `exporter:NAME`, any error kind)
    /// through the alerter's resolved-message path; the flow's other alerts stay open.
    async fn resolve(&self) {
        let Some(alerter) = &self.alerter else { return };
        let name = self.sink.name();
        match alerter.resolve_node(ALERT_FLOW, &alert_node(name)).await {
            Ok(0) => {}
            Ok(_) => tracing::info!(sink = name, "the exporter delivers again; its alert is resolved"),
            Err(err) => tracing::error!(sink = name, error = %self.redact(&format!("{err:#}")), "could not resolve the exporter alert"),
        }
    }

    /// Steps until `stop` is set: at once while full batches are waiting, every `interval` when
    /// caught up, with doubling backoff (or the target's Retry-After) while failing. Gives the
    /// lease back when stopped.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        loop {
            let wait = match self.step().await {
                // At once while full batches show more is waiting; a partial batch means caught
                // up: wait, so that steady runs are shipped in batches rather than in a tight loop
                // of small ones (each step writes the cursor, beside the runs' own writes).
                Ok(Step::Sent { sent, rejected }) if (sent + rejected) as i64 >= self.settings.batch_size => Duration::ZERO,
                Ok(Step::Sent { .. }) => self.settings.interval,
                Ok(Step::Idle | Step::NotHolder | Step::Lost) => self.settings.interval,
                Ok(Step::Failed { retry_in }) => retry_in,
                Err(e) => {
                    tracing::warn!(sink = self.name(), error = %self.redact(&format!("{e:#}")), "exporter could not read or record its cursor");
                    self.settings.interval.max(Duration::from_secs(1))
                }
            };
            if *stop.borrow() {
                break;
            }
            if !wait.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.wait_for(|s| *s) => break,
                }
            }
        }
        self.release().await;
    }

    /// Gives the sink's lease back (a stopping process), so another process takes it at once.
    pub async fn release(&mut self) {
        if let Some(epoch) = self.epoch.take()
            && let Err(e) = self.store.export_release(self.sink.name(), epoch).await
        {
            tracing::warn!(sink = self.name(), error = %format!("{e:#}"), "could not give the exporter's lease back; it expires on its own");
        }
    }
}

/// Keeps the last entry of each run (the log order), in place.
fn dedup_runs(runs: &mut Vec<RunRecord>) {
    let mut last: HashMap<String, usize> = HashMap::new();
    for (i, r) in runs.iter().enumerate() {
        last.insert(r.id.clone(), i);
    }
    let mut i = 0;
    runs.retain(|r| {
        let keep = last.get(&r.id) == Some(&i);
        i += 1;
        keep
    });
}

/// Starts one exporter task per configured sink; they stop when `stop` is set.
pub fn spawn_all(
    store: &Store,
    config: &crate::config::Config,
    alerter: Option<crate::alert::Alerter>,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let settings = Settings::from(&config.exporters);
    Ok(sinks(&config.exporters, providers(config))?
        .into_iter()
        .map(|sink| {
            let mut e = Exporter::new(store.clone(), sink, settings);
            if let Some(a) = &alerter {
                e = e.with_alerter(a.clone());
            }
            tokio::spawn(e.run(stop.clone()))
        })
        .collect())
}

/// A sink's state for `exporters status`, `/metrics` and `/api/v1/health`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SinkStatus {
    pub sink: String,
    pub configured: bool,
    /// Records of the log not yet delivered.
    pub lag: i64,
    #[serde(flatten)]
    pub cursor: Option<ExportCursor>,
}

/// Every configured sink, and any sink with a cursor in the database.
pub async fn status(store: &Store, cfg: &ExportersConfig) -> anyhow::Result<Vec<SinkStatus>> {
    let configured: Vec<&'static str> = sinks(cfg, Default::default())?.iter().map(|s| s.name()).collect();
    let cursors = store.export_cursors().await?;
    let mut names: Vec<String> = configured.iter().map(|s| s.to_string()).collect();
    names.extend(cursors.iter().map(|c| c.sink.clone()));
    names.sort();
    names.dedup();
    let mut out = Vec::new();
    for name in names {
        let cursor = cursors.iter().find(|c| c.sink == name).cloned();
        let (a, r) = cursor.as_ref().map_or((0, 0), |c| (c.attempt_id, c.run_end_seq));
        let lag = store.export_lag(a, r).await?;
        out.push(SinkStatus { configured: configured.contains(&name.as_str()), sink: name, lag, cursor });
    }
    Ok(out)
}

/// The exporter lines of `/metrics` (Prometheus text format).
pub fn render_metrics(statuses: &[SinkStatus]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    type Family = (&'static str, &'static str, &'static str, fn(&SinkStatus) -> i64);
    let families: [Family; 4] = [
        ("flowguard_exporter_lag_records", "gauge", "Records of the run log a sink has not delivered yet.", |s| s.lag),
        ("flowguard_exporter_sent_total", "counter", "Records a sink delivered.", |s| s.cursor.as_ref().map_or(0, |c| c.sent)),
        ("flowguard_exporter_failed_total", "counter", "Deliveries of a sink that failed (their records are tried again).", |s| {
            s.cursor.as_ref().map_or(0, |c| c.failed)
        }),
        ("flowguard_exporter_rejected_total", "counter", "Records a sink's target refused for good (e.g. a mapping conflict).", |s| {
            s.cursor.as_ref().map_or(0, |c| c.rejected)
        }),
    ];
    for (name, ty, help, value) in families {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {ty}");
        for s in statuses {
            let _ = writeln!(out, "{name}{{sink=\"{}\"}} {}", s.sink, value(s));
        }
    }
    let name = "flowguard_exporter_failing";
    let _ = writeln!(out, "# HELP {name} 1 while every delivery of a sink fails.\n# TYPE {name} gauge");
    for s in statuses {
        let failing = s.cursor.as_ref().is_some_and(|c| c.failing_since.is_some());
        let _ = writeln!(out, "{name}{{sink=\"{}\"}} {}", s.sink, failing as i64);
    }
    out
}
