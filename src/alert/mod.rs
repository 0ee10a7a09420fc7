//! Alerting: classify → route → group/dedup/silence → durable outbox → channel delivery with
//! retry, rate limits and failover (DESIGN.md §5).
//!
//! [`Alerter::raise`] records an alert occurrence and, when its group is due, the notification it
//! causes, in one transaction; [`Alerter::step`] does one round of the pump (flush due groups,
//! escalate, deliver due notifications) and [`Alerter::run_loop`] repeats it. The engine reaches us
//! through [`Alerter::observer`]; `flowguard run` then [`Alerter::drain`]s for a bounded time.

pub mod channels;
pub mod config;
mod ratelimit;
mod render;

use crate::clock::SharedClock;
use crate::config::Config;
use crate::engine::{Event, Observer, RunOutcome};
use crate::redact::Redactor;
use crate::store::{AlertRecord, GroupRecord, NotificationRecord, SilenceRecord, Store};
use crate::vocab::{RunStatus, Severity};
use channels::{Channel, Delivery, Message};
use config::{ChannelConfig, RouteMatch};
use render::{Renderer, Subject};
use sha2::Digest;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, mpsc, oneshot};

pub use render::Renderer as MessageRenderer;

/// Runs `$body` (with `$tx`, a [`crate::store::Tx`]) in one transaction and commits; runs it again
/// when it lost to a concurrent transaction (deadlock, serialisation failure, SQLite busy). An
/// early `return Ok(..)` in the body still commits what it wrote. A macro rather than a function
/// taking an async closure: those futures are not `Send` in a spawned task.
macro_rules! transact {
    ($store:expr, $tx:ident => $body:block) => {{
        let mut tries = 0u32;
        loop {
            tries += 1;
            let r: anyhow::Result<_> = async {
                let mut t = $store.begin().await?;
                let v: anyhow::Result<_> = async {
                    let $tx = &mut t;
                    $body
                }
                .await;
                let v = v?;
                t.commit().await?;
                Ok(v)
            }
            .await;
            match r {
                Err(e) if tries < 20 && e.downcast_ref::<sqlx::Error>().is_some_and(crate::store::is_conflict) => {
                    tokio::time::sleep(Duration::from_millis(fastrand::u64(1..=10 * u64::from(tries)))).await;
                }
                r => break r,
            }
        }
    }};
}

/// Something that went wrong, as the alerting pipeline receives it.
#[derive(Debug, Clone)]
pub struct AlertInput {
    pub flow: String,
    pub node: String,
    /// An error kind of DESIGN.md §4, or `latency_warning`.
    pub error_kind: String,
    pub severity: Severity,
    /// The run's final status (`failed`, `timed_out` …) or `latency_warning`.
    pub status: String,
    pub run_id: Option<String>,
    pub message: String,
    /// Attempts of the failing node, when known.
    pub attempts: Option<i64>,
    pub labels: BTreeMap<String, String>,
}

impl AlertInput {
    /// The alert a run's final outcome raises, if it raises one (DESIGN.md §4).
    pub fn from_outcome(o: &RunOutcome, attempts: Option<i64>) -> Option<AlertInput> {
        if !alerts_on(o.status) {
            return None;
        }
        let (kind, severity) = match o.error_kind {
            // The error policy may have set the run's severity; else the kind's default.
            Some(k) => (k.as_str().to_owned(), o.severity.unwrap_or_else(|| k.default_severity())),
            None if o.status == RunStatus::Refused => ("refused".to_owned(), Severity::High),
            None => (o.status.as_str().to_owned(), Severity::Medium),
        };
        Some(AlertInput {
            flow: o.flow.clone(),
            node: o.failed_node.clone().unwrap_or_else(|| "-".into()),
            error_kind: kind,
            severity,
            status: o.status.as_str().to_owned(),
            run_id: Some(o.run_id.clone()),
            message: o.error_message.clone().unwrap_or_default(),
            attempts,
            labels: BTreeMap::new(),
        })
    }

    pub fn latency(run_id: &str, flow: &str, threshold_ms: i64, locale: &str) -> AlertInput {
        let secs = threshold_ms as f64 / 1000.0;
        let message = if locale == "en" { format!("still running after {secs}s") } else { format!("运行超过 {secs} 秒仍未结束") };
        AlertInput {
            flow: flow.to_owned(),
            node: "-".into(),
            error_kind: "latency_warning".into(),
            severity: Severity::Medium,
            status: "latency_warning".into(),
            run_id: Some(run_id.to_owned()),
            message,
            attempts: None,
            labels: BTreeMap::new(),
        }
    }

    /// A model's breaker opened (or a probe failed and it opened again): a firing alert on the
    /// model, under the alert flow `model:<name>`, resolved when the breaker closes.
    pub fn breaker(t: &crate::model::breaker::Transition, locale: &str) -> AlertInput {
        let cooldown = humantime::format_duration(std::time::Duration::from_millis(t.cooldown_ms.max(0) as u64));
        let window = humantime::format_duration(std::time::Duration::from_millis(t.window_ms.max(0) as u64));
        let rate = t.failure_rate();
        let message = match (locale, t.event) {
            ("en", "reopened") => format!("the probe call failed; model `{}` is skipped again for {cooldown}", t.model),
            ("en", _) => format!(
                "{} of {} calls failed in {window} ({rate:.0}% ≥ {}%); model `{}` is skipped for {cooldown}, its fallback takes the calls",
                t.failures, t.calls, t.threshold, t.model
            ),
            (_, "reopened") => format!("探测调用失败，模型 `{}` 再次熔断 {cooldown}", t.model),
            _ => format!(
                "{window} 内 {} 次调用失败 {} 次（{rate:.0}% ≥ {}%），模型 `{}` 熔断 {cooldown}，改用备用模型",
                t.calls, t.failures, t.threshold, t.model
            ),
        };
        let mut labels = BTreeMap::new();
        labels.insert("model".to_owned(), t.model.clone());
        AlertInput {
            flow: breaker_flow(&t.model),
            node: "-".into(),
            error_kind: "breaker_open".into(),
            severity: Severity::Medium,
            status: "breaker_open".into(),
            run_id: None,
            message,
            attempts: None,
            labels,
        }
    }

    fn all_labels(&self) -> BTreeMap<String, String> {
        let mut l = self.labels.clone();
        l.insert("flow".into(), self.flow.clone());
        l.insert("node".into(), self.node.clone());
        l.insert("error_kind".into(), self.error_kind.clone());
        l.insert("severity".into(), self.severity.as_str().into());
        l.insert("status".into(), self.status.clone());
        if let Some(a) = self.attempts {
            l.insert("attempts".into(), a.to_string());
        }
        l
    }
}

/// The alert flow of a model's breaker alerts (flow names cannot hold a `:`).
pub fn breaker_flow(model: &str) -> String {
    format!("model:{model}")
}

/// Final statuses that page someone (DESIGN.md §4).
pub fn alerts_on(s: RunStatus) -> bool {
    matches!(s, RunStatus::Failed | RunStatus::TimedOut | RunStatus::WaitingManual | RunStatus::Refused | RunStatus::Interrupted)
}

/// Fingerprint = flow + node + error kind.
pub fn fingerprint(flow: &str, node: &str, kind: &str) -> String {
    crate::flow::hex16(&sha2::Sha256::digest(format!("{flow}\u{0}{node}\u{0}{kind}").as_bytes()))
}

#[derive(Debug, Clone)]
struct Route {
    idx: i64,
    m: RouteMatch,
    channels: Vec<String>,
    cont: bool,
    mention_all: bool,
    group_by: Vec<String>,
    group_wait: i64,
    group_interval: i64,
    repeat: i64,
    backup: Option<String>,
    escalate: Option<(i64, Vec<String>)>,
}

impl Route {
    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        fn one<T: AsRef<str>>(labels: &BTreeMap<String, String>, list: &[T], key: &str) -> bool {
            list.is_empty() || labels.get(key).is_some_and(|v| list.iter().any(|x| x.as_ref() == v))
        }
        one(labels, &self.m.severity, "severity")
            && one(labels, &self.m.flow, "flow")
            && one(labels, &self.m.node, "node")
            && one(labels, &self.m.error_kind, "error_kind")
            && self.m.labels.iter().all(|(k, v)| labels.get(k) == Some(v))
    }
}

fn ms(d: Duration) -> i64 {
    d.as_millis() as i64
}

fn build_routes(cfg: &Config) -> Vec<Route> {
    let a = &cfg.alerting;
    let base = |idx: i64| Route {
        idx,
        m: RouteMatch::default(),
        channels: vec![],
        cont: false,
        mention_all: false,
        group_by: a.group_by.clone(),
        group_wait: a.group_wait.as_ms(),
        group_interval: a.group_interval.as_ms(),
        repeat: a.repeat_interval.as_ms(),
        backup: None,
        escalate: None,
    };
    if cfg.routes.is_empty() {
        let with_role = |role: &str| -> Vec<String> {
            let any_roles = cfg.channels.values().any(|c| c.role.is_some());
            cfg.channels
                .iter()
                .filter(|(_, c)| if any_roles { c.role.as_deref() == Some(role) } else { true })
                .map(|(n, _)| n.clone())
                .collect()
        };
        let mut high = base(0);
        high.m.severity = vec![Severity::High];
        high.channels = with_role("on_call");
        high.mention_all = true;
        let mut medium = base(1);
        medium.m.severity = vec![Severity::Medium];
        medium.channels = with_role("team");
        let mut low = base(2);
        low.m.severity = vec![Severity::Low];
        return vec![high, medium, low];
    }
    cfg.routes
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mut b = base(i as i64);
            b.m = r.matchers.clone();
            b.channels = r.channels.clone();
            b.cont = r.continue_;
            b.mention_all = r.mention_all;
            if let Some(g) = &r.group_by {
                b.group_by = g.clone();
            }
            if let Some(d) = r.group_wait {
                b.group_wait = d.as_ms();
            }
            if let Some(d) = r.group_interval {
                b.group_interval = d.as_ms();
            }
            if let Some(d) = r.repeat_interval {
                b.repeat = d.as_ms();
            }
            b.backup = r.backup.clone();
            b.escalate = r.escalate.as_ref().map(|e| (e.after.as_ms(), e.to.clone()));
            b
        })
        .collect()
}

/// What one pump step did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StepReport {
    pub sent: usize,
    pub retried: usize,
    pub rate_limited: usize,
    pub dead: usize,
    pub flushed: usize,
    pub escalated: usize,
}

impl StepReport {
    pub fn did_anything(&self) -> bool {
        *self != StepReport::default()
    }
}

/// What raising an alert did.
#[derive(Debug, Clone, Default)]
pub struct Raised {
    pub alert_id: String,
    pub fingerprint: String,
    pub silenced: bool,
    /// Notifications created at once (group due now).
    pub notifications: Vec<String>,
    /// Nothing was recorded: this run's outcome was alerted already, or its flow has succeeded
    /// since (a later resolution wins over an older failure).
    pub superseded: bool,
}

enum Job {
    Event(Event),
    Settle(oneshot::Sender<()>),
}

struct Inner {
    store: Store,
    clock: SharedClock,
    channels: BTreeMap<String, Arc<dyn Channel>>,
    channel_cfg: BTreeMap<String, ChannelConfig>,
    routes: Vec<Route>,
    renderer: Renderer,
    redactor: Redactor,
    max_attempts: i64,
    /// How long a notification is retried before it is dead (ms).
    budget: i64,
    backoff: i64,
    max_backoff: i64,
    drain: Duration,
    dead_letter: Option<String>,
    wake: Notify,
    /// Notifications this process just committed as due now: the pump sends them first, without
    /// looking for due work in the outbox (a failure's message leaves at once).
    fresh: Mutex<Vec<NotificationRecord>>,
    jobs: Mutex<Option<mpsc::UnboundedSender<Job>>>,
    /// Silences in force, re-read at most once a second (another process may add one).
    silences: Mutex<(i64, Vec<SilenceRecord>)>,
}

/// The alerting pipeline of one process. Cheap to clone.
#[derive(Clone)]
pub struct Alerter {
    inner: Arc<Inner>,
}

/// `notify` nodes send through the outbox like alerts; the engine hands them this.
impl crate::nodes::Notifier for Alerter {
    fn notify<'a>(&'a self, n: crate::nodes::Notice<'a>) -> futures::future::BoxFuture<'a, anyhow::Result<String>> {
        Box::pin(async move {
            let mut msg = self.message("notify", n.severity.as_str(), n.title, n.text);
            msg.mention_all = n.mention_all;
            msg.fields.insert("flow".into(), n.flow.to_owned());
            msg.fields.insert("node".into(), n.node.to_owned());
            msg.fields.insert("run_id".into(), n.run_id.to_owned());
            self.enqueue(n.channel, &msg).await
        })
    }
}

impl Alerter {
    /// This alerter as the engine's [`crate::nodes::Notifier`].
    pub fn notifier(&self) -> Arc<dyn crate::nodes::Notifier> {
        Arc::new(self.clone())
    }
}

impl Alerter {
    pub fn new(cfg: &Config, store: Store, clock: SharedClock) -> anyhow::Result<Alerter> {
        crate::init_tls();
        let http = reqwest::Client::builder()
            .user_agent(concat!("flowguard/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .build()?;
        let redactor = cfg.redactor.clone();
        let cx = channels::Ctx { http, redactor: redactor.clone() };
        let chans = channels::build_all(&cfg.channels, &cx)?;
        let a = &cfg.alerting;
        // Without a pattern of their own, alerts link to the dashboard's run page.
        let run_url = a.run_url.clone().or_else(|| cfg.server.dashboard_run_url());
        let renderer = Renderer::new(&cfg.locale, cfg.time_zone(), run_url, &a.templates)?;
        Ok(Alerter {
            inner: Arc::new(Inner {
                store,
                clock,
                channels: chans,
                channel_cfg: cfg.channels.clone(),
                routes: build_routes(cfg),
                renderer,
                redactor,
                max_attempts: a.max_attempts.max(1) as i64,
                budget: a.delivery_budget.as_ms(),
                backoff: a.backoff.as_ms(),
                max_backoff: a.max_backoff.as_ms(),
                drain: a.drain.get(),
                dead_letter: a.dead_letter.clone(),
                wake: Notify::new(),
                fresh: Mutex::new(Vec::new()),
                jobs: Mutex::new(None),
                silences: Mutex::new((i64::MIN, Vec::new())),
            }),
        })
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn channel(&self, name: &str) -> Option<Arc<dyn Channel>> {
        self.inner.channels.get(name).cloned()
    }

    pub fn channel_names(&self) -> Vec<String> {
        self.inner.channels.keys().cloned().collect()
    }

    pub fn redactor(&self) -> &Redactor {
        &self.inner.redactor
    }

    pub fn drain_budget(&self) -> Duration {
        self.inner.drain
    }

    fn now(&self) -> i64 {
        self.inner.clock.now_ms()
    }

    /// An engine observer: final outcomes and latency warnings become alerts, successes resolve.
    /// Observers are synchronous, so events go to a task that records them in order; call
    /// [`Alerter::settle`] before the process exits.
    pub fn observer(&self) -> Observer {
        let (tx, mut rx) = mpsc::unbounded_channel::<Job>();
        *self.inner.jobs.lock().expect("jobs") = Some(tx.clone());
        let this = self.clone();
        tokio::spawn(async move {
            // Attempts per (run, node), to say how often the failing node was tried.
            let mut attempts: HashMap<String, HashMap<String, i64>> = HashMap::new();
            while let Some(job) = rx.recv().await {
                match job {
                    Job::Settle(done) => {
                        let _ = done.send(());
                    }
                    Job::Event(Event::AttemptFinished(a)) => {
                        *attempts.entry(a.run_id.clone()).or_default().entry(a.node_id.clone()).or_default() += 1;
                    }
                    Job::Event(Event::RunFinished(o)) => {
                        let tries = attempts.remove(&o.run_id).and_then(|m| o.failed_node.as_ref().and_then(|n| m.get(n).copied()));
                        if let Some(input) = AlertInput::from_outcome(&o, tries) {
                            if let Err(e) = this.raise(input).await {
                                tracing::error!(error = %this.inner.redactor.redact(&format!("{e:#}")), "could not record an alert");
                            }
                        } else if o.status.is_success()
                            && let Err(e) = this.resolve(&o.flow).await
                        {
                            tracing::error!(error = %format!("{e:#}"), "could not resolve alerts");
                        }
                    }
                    Job::Event(Event::LatencyWarning { run_id, flow, threshold_ms }) => {
                        let input = AlertInput::latency(&run_id, &flow, threshold_ms, &this.inner.renderer.locale);
                        if let Err(e) = this.raise(input).await {
                            tracing::error!(error = %format!("{e:#}"), "could not record a latency alert");
                        }
                    }
                    Job::Event(Event::Breaker(t)) => {
                        let r = match t.event {
                            "opened" | "reopened" => this.raise(AlertInput::breaker(&t, &this.inner.renderer.locale)).await.map(|_| ()),
                            "closed" => this.resolve(&breaker_flow(&t.model)).await.map(|_| ()),
                            _ => Ok(()),
                        };
                        if let Err(e) = r {
                            tracing::error!(error = %format!("{e:#}"), model = %t.model, "could not alert on a model's breaker");
                        }
                    }
                    Job::Event(_) => {}
                }
            }
        });
        Arc::new(move |e: &Event| {
            if matches!(e, Event::RunFinished(_) | Event::LatencyWarning { .. } | Event::AttemptFinished(_) | Event::Breaker(_)) {
                let _ = tx.send(Job::Event(e.clone()));
            }
        })
    }

    /// Waits until every event handed to the observer so far is recorded.
    pub async fn settle(&self) {
        let tx = self.inner.jobs.lock().expect("jobs").clone();
        if let Some(tx) = tx {
            let (done, wait) = oneshot::channel();
            if tx.send(Job::Settle(done)).is_ok() {
                let _ = wait.await;
            }
        }
    }

    async fn active_silences(&self, now: i64) -> anyhow::Result<Vec<SilenceRecord>> {
        {
            let c = self.inner.silences.lock().expect("silences");
            if now >= c.0 && now.saturating_sub(c.0) < 1_000 {
                return Ok(c.1.iter().filter(|s| s.ends_at > now).cloned().collect());
            }
        }
        let fresh = self.inner.store.silences(now, false).await?;
        *self.inner.silences.lock().expect("silences") = (now, fresh.clone());
        Ok(fresh)
    }

    fn silenced(&self, silences: &[SilenceRecord], labels: &BTreeMap<String, String>) -> bool {
        silences.iter().any(|s| {
            let m: BTreeMap<String, String> = serde_json::from_str(&s.matchers).unwrap_or_default();
            !m.is_empty() && m.iter().all(|(k, v)| labels.get(k) == Some(v))
        })
    }

    fn matching_routes(&self, labels: &BTreeMap<String, String>) -> Vec<&Route> {
        let mut out = Vec::new();
        for r in &self.inner.routes {
            if r.matches(labels) {
                out.push(r);
                if !r.cont {
                    break;
                }
            }
        }
        out
    }

    fn group_key(route: &Route, channel: &str, labels: &BTreeMap<String, String>) -> (String, String) {
        let vals: BTreeMap<&str, &str> =
            route.group_by.iter().map(|g| (g.as_str(), labels.get(g).map(String::as_str).unwrap_or(""))).collect();
        let lj = serde_json::to_string(&vals).unwrap_or_default();
        let key = crate::flow::hex16(&sha2::Sha256::digest(format!("{}\u{0}{channel}\u{0}{lj}", route.idx).as_bytes()));
        (key, lj)
    }

    fn backup_for(&self, route: Option<&Route>, channel: &str) -> Option<String> {
        route
            .and_then(|r| r.backup.clone())
            .or_else(|| self.inner.channel_cfg.get(channel).and_then(|c| c.backup.clone()))
            .filter(|b| b != channel)
    }

    fn new_notification(
        &self,
        group_key: Option<String>,
        channel: &str,
        msg: &Message,
        backup: Option<String>,
        now: i64,
    ) -> NotificationRecord {
        let red = &self.inner.redactor;
        let mut m = msg.clone();
        m.title = red.redact(&m.title);
        m.text = red.redact(&m.text);
        m.markdown = red.redact(&m.markdown);
        NotificationRecord {
            id: uuid::Uuid::now_v7().to_string(),
            group_key,
            channel: channel.to_owned(),
            purpose: m.purpose.clone(),
            severity: m.severity.clone(),
            message: serde_json::to_string(&m).unwrap_or_default(),
            status: "pending".into(),
            attempts: 0,
            created_at: now,
            next_attempt_at: now,
            sent_at: None,
            last_error: None,
            backup,
            failover_of: None,
        }
    }

    /// Records an alert occurrence; when its group is due (group_wait 0, or the group's interval
    /// has passed) the notification goes into the outbox in the same transaction. Safe with any
    /// number of processes raising at once: the count is added in the database, one alert is open
    /// per fingerprint, and each group's row is locked while its next message is decided.
    pub async fn raise(&self, input: AlertInput) -> anyhow::Result<Raised> {
        let store = &self.inner.store;
        let now = self.now();
        let labels = input.all_labels();
        let fp = fingerprint(&input.flow, &input.node, &input.error_kind);
        let silences = self.active_silences(now).await?;
        let silenced = self.silenced(&silences, &labels);
        let message = self.inner.redactor.redact(&input.message);
        let labels_json = serde_json::to_string(&labels)?;
        let routes: Vec<Route> = if silenced { Vec::new() } else { self.matching_routes(&labels).into_iter().cloned().collect() };
        let outcome_of_run = input.run_id.as_deref().filter(|_| input.status != "latency_warning");
        let (raised, fresh) = transact!(store, tx => {
            if let Some(run) = outcome_of_run
                && tx.outcome_settled(run).await?
            {
                return Ok((Raised { fingerprint: fp.clone(), superseded: true, ..Default::default() }, Vec::new()));
            }
            let fresh = AlertRecord {
                id: uuid::Uuid::now_v7().to_string(),
                fingerprint: fp.clone(),
                flow: input.flow.clone(),
                node: input.node.clone(),
                error_kind: input.error_kind.clone(),
                severity: input.severity.as_str().into(),
                status: if silenced { "silenced".into() } else { "firing".into() },
                labels: labels_json.clone(),
                count: 1,
                first_seen: now,
                last_seen: now,
                last_run_id: input.run_id.clone(),
                last_message: Some(message.clone()),
                acked_at: None,
                acked_by: None,
                escalated_at: None,
                notified_at: None,
                resolved_at: None,
            };
            let mut alert = tx.upsert_open_alert(&fresh).await?;
            let mut w = store.alert_tx();
            w.occurrence(&alert.id, input.run_id.as_deref(), now, if silenced { "silenced" } else { "firing" }, Some(&message));
            let mut raised = Raised { alert_id: alert.id.clone(), fingerprint: fp.clone(), silenced, ..Default::default() };
            let mut fresh = Vec::new();
            // Groups in key order, so two raises lock them in the same order.
            let mut targets: Vec<(&Route, &String, String, String)> = Vec::new();
            for route in &routes {
                for ch in &route.channels {
                    let (key, lj) = Self::group_key(route, ch, &labels);
                    targets.push((route, ch, key, lj));
                }
            }
            targets.sort_by(|a, b| a.2.cmp(&b.2));
            targets.dedup_by(|a, b| a.2 == b.2);
            for (route, ch, key, lj) in targets {
                w.add_member(&key, &alert.id);
                let blank = GroupRecord {
                    group_key: key.clone(),
                    route: route.idx,
                    channel: ch.clone(),
                    labels: lj,
                    created_at: now,
                    dirty_since: None,
                    last_sent_at: None,
                    next_flush_at: None,
                };
                let mut g = tx.lock_group(&blank).await?;
                let since = *g.dirty_since.get_or_insert(now);
                let due = match g.last_sent_at {
                    None => since + route.group_wait,
                    Some(last) => (last + route.group_interval).max(since + route.group_wait),
                };
                if due <= now {
                    // Due now: one message with this group's firing alerts (this one included).
                    let mut members = tx.group_alerts(&key, &["firing"]).await?;
                    members.retain(|m| m.id != alert.id);
                    members.push(alert.clone());
                    let msg = self.inner.renderer.render(&Subject {
                        purpose: "firing",
                        alerts: &members,
                        mention_all: route.mention_all,
                        note: None,
                    })?;
                    let n = self.new_notification(Some(key.clone()), ch, &msg, self.backup_for(Some(route), ch), now);
                    w.insert_notification(&n);
                    raised.notifications.push(n.id.clone());
                    fresh.push(n);
                    for m in &members {
                        if m.notified_at.is_none() {
                            w.mark_notified(&m.id, now);
                        }
                    }
                    alert.notified_at.get_or_insert(now);
                    g.dirty_since = None;
                    g.last_sent_at = Some(now);
                    g.next_flush_at = Some(now + route.repeat);
                } else {
                    g.next_flush_at = Some(due);
                }
                w.update_group(&g);
            }
            tx.run(w).await?;
            Ok((raised, fresh))
        })?;
        if !fresh.is_empty() {
            self.hand_to_pump(fresh);
        }
        Ok(raised)
    }

    /// The flow succeeded: its firing alerts are resolved, and every group that had told someone
    /// about them says so. An alert is resolved by one process only (conditional update), so one
    /// resolved message goes out.
    pub async fn resolve(&self, flow: &str) -> anyhow::Result<usize> {
        self.resolve_where(flow, None).await
    }

    /// One node's firing alerts (whatever their error kind) are resolved, the flow's other alerts
    /// left as they are: e.g. an exporter delivering again (flow `flowguard`, node
    /// `exporter:NAME`) while a config reload alert of flow `flowguard` stays open. Messages as
    /// for [`Alerter::resolve`]: once, through the groups that told someone.
    pub async fn resolve_node(&self, flow: &str, node: &str) -> anyhow::Result<usize> {
        self.resolve_where(flow, Some(node)).await
    }

    async fn resolve_where(&self, flow: &str, node: Option<&str>) -> anyhow::Result<usize> {
        let store = &self.inner.store;
        let firing = match node {
            None => store.firing_alerts_of_flow(flow).await?,
            Some(n) => store.firing_alerts_of_node(flow, n).await?,
        };
        if firing.is_empty() {
            return Ok(0);
        }
        let now = self.now();
        let (n, notified) = transact!(store, tx => {
            let mut w = store.alert_tx();
            let mut by_group: BTreeMap<String, (GroupRecord, Vec<AlertRecord>)> = BTreeMap::new();
            let firing = match node {
                None => tx.firing_alerts_of_flow(flow).await?,
                Some(n) => tx.firing_alerts_of_node(flow, n).await?,
            };
            for a in firing {
                if !tx.resolve_alert(&a.id, now).await? {
                    continue;
                }
                w.occurrence(&a.id, None, now, "resolved", None);
                for g in tx.groups_of_alert(&a.id).await? {
                    by_group.entry(g.group_key.clone()).or_insert_with(|| (g, Vec::new())).1.push(a.clone());
                }
            }
            let mut notified = false;
            let mut resolved_n = 0;
            for (key, (_, resolved)) in by_group {
                resolved_n += resolved.len();
                let Some(mut g) = tx.group_locked(&key).await? else { continue };
                let told: Vec<AlertRecord> = resolved.iter().filter(|a| a.notified_at.is_some()).cloned().collect();
                if !told.is_empty() {
                    let route = self.inner.routes.iter().find(|r| r.idx == g.route);
                    let msg = self.inner.renderer.render(&Subject { purpose: "resolved", alerts: &told, mention_all: false, note: None })?;
                    let n = self.new_notification(Some(key.clone()), &g.channel, &msg, self.backup_for(route, &g.channel), now);
                    w.insert_notification(&n);
                    notified = true;
                }
                if tx.group_alerts(&key, &["firing"]).await?.is_empty() {
                    g.dirty_since = None;
                    g.next_flush_at = None;
                    w.update_group(&g);
                }
            }
            tx.run(w).await?;
            Ok((resolved_n, notified))
        })?;
        if notified {
            self.inner.wake.notify_one();
        }
        Ok(n)
    }

    /// Acknowledges alerts by id or fingerprint prefix: no escalation, no repeats.
    pub async fn ack(&self, prefix: &str, by: &str) -> anyhow::Result<Vec<AlertRecord>> {
        let store = &self.inner.store;
        let now = self.now();
        let mut found: Vec<AlertRecord> = store.find_alerts(prefix).await?.into_iter().filter(|a| a.status != "resolved").collect();
        let mut tx = store.alert_tx();
        for a in &mut found {
            a.acked_at = Some(now);
            a.acked_by = Some(by.to_owned());
            tx.ack_alert(&a.id, now, by);
            tx.occurrence(&a.id, None, now, "acknowledged", Some(by));
        }
        store.commit_alerts(tx).await?;
        Ok(found)
    }

    /// Raises the alerts that runs ended in [since_ms, until_ms) should have raised but did not
    /// (the process died between the two writes, or a restart marked the run `interrupted`).
    /// Called at the start of every process that alerts; returns how many it raised. Several
    /// processes may sweep at once: each run's alert is raised once (see [`Alerter::raise`]), and
    /// never for a run whose flow has succeeded since.
    pub async fn sweep(&self, since_ms: i64, until_ms: i64) -> anyhow::Result<usize> {
        let runs = self.inner.store.runs_missing_alerts(since_ms, until_ms).await?;
        let mut raised = 0;
        for r in runs {
            let outcome = RunOutcome {
                run_id: r.id.clone(),
                flow: r.flow.clone(),
                status: r.status,
                duration_ms: r.duration_ms.unwrap_or(0),
                failed_node: r.failed_node.clone(),
                error_kind: r.error_kind.as_deref().and_then(|k| k.parse().ok()),
                error_message: r.error_message.clone(),
                severity: r.severity.as_deref().and_then(|s| s.parse().ok()),
                outputs: Default::default(),
            };
            if let Some(input) = AlertInput::from_outcome(&outcome, None)
                && !self.raise(input).await?.superseded
            {
                raised += 1;
            }
        }
        Ok(raised)
    }

    /// Puts a message for `channel` into the outbox (the `notify` node; tests; dead letters).
    pub async fn enqueue(&self, channel: &str, msg: &Message) -> anyhow::Result<String> {
        if !self.inner.channels.contains_key(channel) {
            anyhow::bail!("no channel named `{channel}`; channels: {}", self.channel_names().join(", "));
        }
        let now = self.now();
        let n = self.new_notification(None, channel, msg, self.backup_for(None, channel), now);
        let mut tx = self.inner.store.alert_tx();
        tx.insert_notification(&n);
        self.inner.store.commit_alerts(tx).await?;
        self.inner.wake.notify_one();
        Ok(n.id)
    }

    /// Renders a message in the configured language for a free text (the `notify` node).
    pub fn message(&self, purpose: &str, severity: &str, title: &str, text: &str) -> Message {
        let mut fields = BTreeMap::new();
        fields.insert("locale".to_string(), self.inner.renderer.locale.clone());
        fields.insert("title".to_string(), title.to_owned());
        fields.insert("time".to_string(), self.inner.renderer.time(self.now()));
        Message {
            purpose: purpose.into(),
            severity: severity.into(),
            title: title.into(),
            text: text.into(),
            markdown: text.into(),
            link: None,
            mention_all: false,
            fields,
            ..Default::default()
        }
    }

    /// Sends groups whose window has passed: news since their last message, or a repeat. Each
    /// group is decided under its row lock, so one process sends it.
    async fn flush_groups(&self, now: i64) -> anyhow::Result<usize> {
        let store = &self.inner.store;
        let due = store.due_groups(now).await?;
        let mut made = 0;
        for g in due {
            made += transact!(store, tx => {
                // Re-read under the lock: another process (or a raise) may have sent it meanwhile.
                let Some(mut g) = tx.group_locked(&g.group_key).await? else { return Ok(0) };
                if g.next_flush_at.is_none_or(|t| t > now) {
                    return Ok(0);
                }
                let mut w = store.alert_tx();
                let Some(route) = self.inner.routes.iter().find(|r| r.idx == g.route) else {
                    g.next_flush_at = None;
                    w.update_group(&g);
                    tx.run(w).await?;
                    return Ok(0);
                };
                let mut members = tx.group_alerts(&g.group_key, &["firing"]).await?;
                let repeat = g.dirty_since.is_none();
                if repeat {
                    members.retain(|m| m.acked_at.is_none());
                }
                if members.is_empty() {
                    g.dirty_since = None;
                    g.next_flush_at = None;
                    w.update_group(&g);
                    tx.run(w).await?;
                    return Ok(0);
                }
                let msg = self.inner.renderer.render(&Subject {
                    purpose: "firing",
                    alerts: &members,
                    mention_all: route.mention_all,
                    note: None,
                })?;
                let n = self.new_notification(Some(g.group_key.clone()), &g.channel, &msg, self.backup_for(Some(route), &g.channel), now);
                w.insert_notification(&n);
                for m in members.iter().filter(|m| m.notified_at.is_none()) {
                    w.mark_notified(&m.id, now);
                }
                g.dirty_since = None;
                g.last_sent_at = Some(now);
                g.next_flush_at = Some(now + route.repeat);
                w.update_group(&g);
                tx.run(w).await?;
                Ok(1)
            })?;
        }
        if made > 0 {
            self.inner.wake.notify_one();
        }
        Ok(made)
    }

    /// Alerts not acknowledged within their route's `escalate.after` go to its `to` channels,
    /// whatever their severity. Each escalation is taken by one process (conditional update).
    async fn escalate(&self, now: i64) -> anyhow::Result<usize> {
        if !self.inner.routes.iter().any(|r| r.escalate.is_some()) {
            return Ok(0);
        }
        let store = &self.inner.store;
        let mut made = 0;
        for a in store.escalation_candidates().await? {
            let labels: BTreeMap<String, String> = serde_json::from_str(&a.labels).unwrap_or_default();
            let mut notes = Vec::new();
            for r in self.matching_routes(&labels) {
                let Some((after, to)) = &r.escalate else { continue };
                if a.notified_at.is_some_and(|t| t + after <= now) {
                    let msg = self.inner.renderer.render(&Subject {
                        purpose: "escalation",
                        alerts: std::slice::from_ref(&a),
                        mention_all: true,
                        note: None,
                    })?;
                    for ch in to {
                        notes.push(self.new_notification(None, ch, &msg, self.backup_for(None, ch), now));
                    }
                }
            }
            if notes.is_empty() {
                continue;
            }
            made += transact!(store, tx => {
                if !tx.claim_escalation(&a.id, now).await? {
                    return Ok(0);
                }
                let mut w = store.alert_tx();
                for n in &notes {
                    w.insert_notification(n);
                }
                w.occurrence(&a.id, None, now, "escalated", None);
                tx.run(w).await?;
                Ok(notes.len())
            })?;
        }
        Ok(made)
    }

    /// One round of the pump: flush due groups, escalate, deliver what is due. Tests drive this
    /// on an injected clock; [`Alerter::run_loop`] repeats it. Any number of processes may pump
    /// the same outbox at once: each notification is claimed before it is sent.
    pub async fn step(&self) -> anyhow::Result<StepReport> {
        let now = self.now();
        let mut rep = StepReport::default();
        let fresh = std::mem::take(&mut *self.inner.fresh.lock().expect("fresh"));
        for n in fresh {
            self.deliver(n, now, &mut rep).await?;
        }
        rep.flushed = self.flush_groups(now).await?;
        rep.escalated = self.escalate(now).await?;
        let due = self.inner.store.due_notifications(now, 64).await?;
        for n in due {
            self.deliver(n, now, &mut rep).await?;
        }
        Ok(rep)
    }

    /// Gives notifications just committed as due to the pump, and wakes it. Held in memory only
    /// as a shortcut: each is in the outbox already, so one dropped here (past the cap, or when
    /// the process dies) is found there by the next step.
    fn hand_to_pump(&self, fresh: Vec<NotificationRecord>) {
        const CAP: usize = 256;
        let mut held = self.inner.fresh.lock().expect("fresh");
        held.extend(fresh);
        let over = held.len().saturating_sub(CAP);
        held.drain(..over);
        drop(held);
        self.inner.wake.notify_one();
    }

    fn backoff(&self, attempts: i64) -> i64 {
        let shift = (attempts - 1).clamp(0, 20) as u32;
        (self.inner.backoff.saturating_mul(1i64 << shift)).min(self.inner.max_backoff)
    }

    /// Takes a slot in the channel's rate windows (shared by every process through the
    /// database), or says when the next one frees.
    async fn take_slot(&self, channel: &str, limits: &[(u32, Duration)], now: i64) -> anyhow::Result<Result<Option<String>, i64>> {
        let store = &self.inner.store;
        transact!(store, tx => {
            let blocked = tx.lock_channel(channel).await?;
            if blocked > now {
                return Ok(Err(blocked));
            }
            if limits.is_empty() {
                return Ok(Ok(None));
            }
            let sent = tx.channel_sends(channel, now - ratelimit::horizon(limits)).await?;
            if let Some(at) = ratelimit::free_at(&sent, limits, now) {
                return Ok(Err(at));
            }
            let slot = uuid::Uuid::now_v7().to_string();
            tx.add_channel_send(&slot, channel, now).await?;
            Ok(Ok(Some(slot)))
        })
    }

    async fn deliver(&self, n: NotificationRecord, now: i64, rep: &mut StepReport) -> anyhow::Result<()> {
        let store = &self.inner.store;
        // A lease, so another process pumping the same outbox does not send it too; its result is
        // recorded only while the claim holds.
        let claim = uuid::Uuid::now_v7().to_string();
        // Its turn comes after the group's older messages (they only ever leave `pending`).
        if store.older_pending_in_group(&n).await? {
            return Ok(());
        }
        if !store.claim_notification(&n.id, now, now + CLAIM_LEASE_MS, &claim).await? {
            return Ok(());
        }
        let id = n.id.clone();
        let r = self.deliver_claimed(n, &claim, now, rep).await;
        if r.is_err() {
            // Not recorded: give it back at once rather than at the end of the lease (it may have
            // been sent; delivery is at least once).
            let _ = store.release_notification(&id, &claim, self.now()).await;
        }
        r
    }

    async fn deliver_claimed(&self, mut n: NotificationRecord, claim: &str, now: i64, rep: &mut StepReport) -> anyhow::Result<()> {
        let store = &self.inner.store;
        let claim = claim.to_owned();
        let Some(ch) = self.inner.channels.get(&n.channel).cloned() else {
            return self.give_up(n, &claim, now, "the channel is no longer configured".into(), None, rep).await;
        };
        let slot = match self.take_slot(&n.channel, &ch.rate_limits(), now).await? {
            Ok(slot) => slot,
            Err(free_at) => {
                store.release_notification(&n.id, &claim, free_at).await?;
                rep.rate_limited += 1;
                return Ok(());
            }
        };
        let mut msg: Message = serde_json::from_str(&n.message).unwrap_or_default();
        let started = std::time::Instant::now();
        let (d, owed) = ch.send_partial(&msg).await;
        // After a partial delivery (some SMS numbers reached) the stored message names who is
        // still owed it, so a retry does not send it again to those who have it.
        let owed_message = match owed {
            Some(owed) => {
                msg.recipients = Some(owed);
                Some(serde_json::to_string(&msg)?)
            }
            None => None,
        };
        let took = started.elapsed().as_millis() as i64;
        let now = self.now().max(now);
        if let Some(slot) = &slot {
            store.channel_send_finished(slot, now).await?;
        }
        n.attempts += i64::from(!matches!(d, Delivery::RateLimited { .. }));
        let red = &self.inner.redactor;
        let delivery = crate::store::DeliveryRecord {
            notification_id: n.id.clone(),
            channel: n.channel.clone(),
            attempt: n.attempts,
            at: now,
            duration_ms: took,
            http_status: d.status().map(i64::from),
            outcome: d.outcome().into(),
            answer: Some(channels::cut(&red.redact(d.answer()), 4096, "…")),
        };
        let budget_end = n.created_at.saturating_add(self.inner.budget);
        let error = d.error().map(|e| red.redact(&e));
        match &d {
            Delivery::Sent { .. } => {
                n.status = "sent".into();
                n.sent_at = Some(now);
                n.last_error = None;
                rep.sent += 1;
            }
            Delivery::RateLimited { retry_after, .. } if now < budget_end => {
                let wait = retry_after.map(ms).unwrap_or(1_000).max(100);
                store.block_channel(&n.channel, now + wait).await?;
                n.next_attempt_at = now + wait;
                n.last_error = error;
                rep.rate_limited += 1;
            }
            // Without a backup, keep trying until the budget is spent; the last try is at its end.
            Delivery::Retry { .. } if now < budget_end && (n.backup.is_none() || n.attempts < self.inner.max_attempts) => {
                n.next_attempt_at = (now + self.backoff(n.attempts)).min(budget_end);
                n.last_error = error;
                rep.retried += 1;
            }
            _ => {
                let e = error.unwrap_or_else(|| "the delivery budget is spent".into());
                return self.give_up(n, &claim, now, e, Some(delivery), rep).await;
            }
        }
        let recorded = transact!(store, tx => {
            let mut w = store.alert_tx();
            w.insert_delivery(&delivery);
            if let Some(m) = &owed_message {
                w.set_notification_message(&n.id, m);
            }
            tx.run(w).await?;
            tx.finish_send(&n, &claim).await
        })?;
        if !recorded {
            tracing::warn!(notification = %n.id, "a send finished after its claim ran out; another process owns the notification now");
        }
        Ok(())
    }

    /// The notification is dead; it is raised on another channel: its backup, else the
    /// dead-letter channel, else any other routed channel.
    async fn give_up(
        &self,
        mut n: NotificationRecord,
        claim: &str,
        now: i64,
        error: String,
        delivery: Option<crate::store::DeliveryRecord>,
        rep: &mut StepReport,
    ) -> anyhow::Result<()> {
        let store = &self.inner.store;
        n.status = "dead".into();
        n.last_error = Some(error.clone());
        let usable = |c: &String| *c != n.channel && self.inner.channels.contains_key(c);
        let target =
            if n.purpose == "dead" {
                None
            } else {
                n.backup.clone().filter(usable).or_else(|| self.inner.dead_letter.clone().filter(usable)).or_else(|| {
                    self.inner.routes.iter().flat_map(|r| r.channels.iter().chain(r.backup.iter())).find(|c| usable(c)).cloned()
                })
            };
        let failover = target.map(|target| {
            let mut msg: Message = serde_json::from_str(&n.message).unwrap_or_default();
            // Whom the failed channel still owed it is that channel's business: the backup sends to all of its own.
            msg.recipients = None;
            let note = if self.inner.renderer.locale == "en" {
                format!(
                    "(could not be delivered on `{}` after {} attempts: {error}; `flowguard alerts resend {}` sends it again)",
                    n.channel, n.attempts, n.id
                )
            } else {
                format!("（渠道 `{}` 投递失败 {} 次：{error}；可用 `flowguard alerts resend {}` 重发）", n.channel, n.attempts, n.id)
            };
            let prefix = if self.inner.renderer.locale == "en" { "[FAILOVER] " } else { "[转发] " };
            msg.title = format!("{prefix}{}", msg.title);
            msg.text = format!("{}\n{note}", msg.text);
            msg.markdown = format!("{}\n{note}", msg.markdown);
            let backup = n.backup.as_ref() == Some(&target);
            msg.purpose = if backup { "failover".into() } else { "dead".into() };
            let mut f = self.new_notification(n.group_key.clone(), &target, &msg, None, now);
            f.failover_of = Some(n.id.clone());
            f
        });
        let recorded = transact!(store, tx => {
            let mut w = store.alert_tx();
            if let Some(d) = &delivery {
                w.insert_delivery(d);
            }
            tx.run(w).await?;
            if !tx.finish_send(&n, claim).await? {
                return Ok(false);
            }
            if let Some(f) = &failover {
                let mut w = store.alert_tx();
                w.insert_notification(f);
                tx.run(w).await?;
            }
            Ok(true)
        })?;
        if recorded {
            rep.dead += 1;
            tracing::warn!(notification = %n.id, channel = %n.channel, "a notification is dead: {}", n.last_error.as_deref().unwrap_or(""));
            if failover.is_some() {
                self.inner.wake.notify_one();
            }
        }
        Ok(())
    }

    /// Puts a dead notification back in the outbox as a new one (same channel and message, a
    /// fresh delivery budget). Returns the new notification.
    pub async fn resend(&self, prefix: &str) -> Result<NotificationRecord, ResendError> {
        let store = &self.inner.store;
        let found = store.find_notifications(prefix).await.map_err(ResendError::Store)?;
        let n = match found.as_slice() {
            [] => return Err(ResendError::NotFound(prefix.to_owned())),
            [n] => n.clone(),
            [n, ..] if n.id == prefix => n.clone(),
            _ => return Err(ResendError::Ambiguous(prefix.to_owned())),
        };
        if n.status != "dead" {
            return Err(ResendError::NotDead(n.id, n.status));
        }
        let now = self.now();
        let mut fresh = n.clone();
        fresh.id = uuid::Uuid::now_v7().to_string();
        fresh.status = "pending".into();
        fresh.attempts = 0;
        fresh.created_at = now;
        fresh.next_attempt_at = now;
        fresh.sent_at = None;
        fresh.last_error = None;
        fresh.failover_of = Some(n.id.clone());
        store.insert_notification(&fresh).await.map_err(ResendError::Store)?;
        self.inner.wake.notify_one();
        Ok(fresh)
    }

    /// Pumps the outbox in the background until [`Pump::stop`] (commands that run flows: a
    /// latency warning or a `notify` node reaches its channels while the run goes on).
    pub fn pump_in_background(&self) -> Pump {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let a = self.clone();
        let handle = tokio::spawn(async move {
            a.run_loop(async {
                let _ = stopped.await;
            })
            .await
        });
        Pump { stop, handle }
    }

    /// Repeats [`Alerter::step`] until `stop` resolves, waking when an alert is raised or when
    /// the next notification or group is due.
    pub async fn run_loop(&self, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        loop {
            let wait = match self.step().await {
                Ok(r) if r.sent + r.retried + r.dead + r.flushed > 0 => 0,
                // What is due but not taken waits its turn (its group's older message, another
                // process's claim): look again shortly, not in a busy loop.
                Ok(_) => self.until_next_due().await.unwrap_or(1_000).max(50),
                Err(e) => {
                    tracing::warn!(error = %self.inner.redactor.redact(&format!("{e:#}")), "alert pump step failed");
                    1_000
                }
            };
            if wait == 0 {
                continue;
            }
            let at = self.now() + wait.min(1_000);
            tokio::select! {
                _ = &mut stop => return,
                _ = self.inner.wake.notified() => {}
                _ = self.inner.clock.until(at) => {}
            }
        }
    }

    /// Milliseconds until a notification or a group is due.
    async fn until_next_due(&self) -> anyhow::Result<i64> {
        let store = &self.inner.store;
        let next = [store.next_notification_due().await?, store.next_group_due().await?].into_iter().flatten().min();
        Ok(next.map(|t| (t - self.now()).max(1)).unwrap_or(1_000))
    }

    /// Delivers what is due for at most `budget` (the end of `flowguard run`); what is left stays
    /// pending for the next process. Returns whether the outbox was emptied of due work.
    pub async fn drain(&self, budget: Duration) -> anyhow::Result<bool> {
        self.settle().await;
        let deadline = self.now() + ms(budget);
        loop {
            let r = self.step().await?;
            let store = &self.inner.store;
            let pending = [store.next_notification_due().await?, store.next_group_due().await?].into_iter().flatten().min();
            let Some(next) = pending else { return Ok(true) };
            let now = self.now();
            if now >= deadline || next >= deadline {
                return Ok(false);
            }
            if !r.did_anything() || next > now {
                self.inner.clock.sleep(Duration::from_millis((next - now).clamp(20, 1_000) as u64)).await;
            }
        }
    }
}

/// How long a claimed send is this process's before another may take it over (a send is bounded
/// by the channel's timeout, far below this).
const CLAIM_LEASE_MS: i64 = 120_000;

/// Why a notification could not be re-sent.
#[derive(Debug, thiserror::Error)]
pub enum ResendError {
    #[error("no notification with id `{0}`")]
    NotFound(String),
    #[error("`{0}` matches several notifications; give more of the id")]
    Ambiguous(String),
    #[error("notification {0} is {1}, not dead: only dead notifications are re-sent")]
    NotDead(String, String),
    #[error(transparent)]
    Store(anyhow::Error),
}

/// The outbox pump of [`Alerter::pump_in_background`].
pub struct Pump {
    stop: tokio::sync::oneshot::Sender<()>,
    handle: tokio::task::JoinHandle<()>,
}

impl Pump {
    /// Stops the pump, waiting at most `patience` for a send in flight: a database that stopped
    /// answering must not hold the process (a send cut short stays claimed for a while, then
    /// another process delivers it).
    pub async fn stop(self, patience: Duration) {
        let _ = self.stop.send(());
        let abort = self.handle.abort_handle();
        if tokio::time::timeout(patience, self.handle).await.is_err() {
            abort.abort();
        }
    }
}
