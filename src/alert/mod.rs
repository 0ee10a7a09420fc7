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
    backoff: i64,
    max_backoff: i64,
    drain: Duration,
    dead_letter: Option<String>,
    limiter: Mutex<ratelimit::Limiter>,
    /// Raises, resolves and flushes read-modify-write group state: one at a time per process.
    lock: tokio::sync::Mutex<()>,
    wake: Notify,
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
        let renderer = Renderer::new(&cfg.locale, cfg.time_zone(), a.run_url.clone(), &a.templates)?;
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
                backoff: a.backoff.as_ms(),
                max_backoff: a.max_backoff.as_ms(),
                drain: a.drain.get(),
                dead_letter: a.dead_letter.clone(),
                limiter: Mutex::default(),
                lock: tokio::sync::Mutex::new(()),
                wake: Notify::new(),
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
                    Job::Event(_) => {}
                }
            }
        });
        Arc::new(move |e: &Event| {
            if matches!(e, Event::RunFinished(_) | Event::LatencyWarning { .. } | Event::AttemptFinished(_)) {
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
    /// has passed) the notification goes into the outbox in the same transaction.
    pub async fn raise(&self, input: AlertInput) -> anyhow::Result<Raised> {
        let _g = self.inner.lock.lock().await;
        let store = &self.inner.store;
        let now = self.now();
        let labels = input.all_labels();
        let fp = fingerprint(&input.flow, &input.node, &input.error_kind);
        let silences = self.active_silences(now).await?;
        let silenced = self.silenced(&silences, &labels);
        let message = self.inner.redactor.redact(&input.message);
        let mut tx = store.alert_tx();
        let mut alert = match store.open_alert(&fp).await? {
            Some(mut a) => {
                a.count += 1;
                a.last_seen = now;
                a.last_run_id = input.run_id.clone();
                a.last_message = Some(message.clone());
                a.labels = serde_json::to_string(&labels)?;
                if a.severity.parse::<Severity>().map_or(true, |s| input.severity > s) {
                    a.severity = input.severity.as_str().into();
                }
                a.status = if silenced { "silenced".into() } else { "firing".into() };
                tx.update_alert(&a);
                a
            }
            None => {
                let a = AlertRecord {
                    id: uuid::Uuid::now_v7().to_string(),
                    fingerprint: fp.clone(),
                    flow: input.flow.clone(),
                    node: input.node.clone(),
                    error_kind: input.error_kind.clone(),
                    severity: input.severity.as_str().into(),
                    status: if silenced { "silenced".into() } else { "firing".into() },
                    labels: serde_json::to_string(&labels)?,
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
                tx.insert_alert(&a);
                a
            }
        };
        tx.occurrence(&alert.id, input.run_id.as_deref(), now, if silenced { "silenced" } else { "firing" }, Some(&message));
        let mut raised = Raised { alert_id: alert.id.clone(), fingerprint: fp, silenced, notifications: vec![] };
        if !silenced {
            let routes: Vec<Route> = self.matching_routes(&labels).into_iter().cloned().collect();
            for route in &routes {
                for ch in &route.channels {
                    let (key, lj) = Self::group_key(route, ch, &labels);
                    tx.add_member(&key, &alert.id);
                    let (mut g, exists) = match store.group(&key).await? {
                        Some(g) => (g, true),
                        None => (
                            GroupRecord {
                                group_key: key.clone(),
                                route: route.idx,
                                channel: ch.clone(),
                                labels: lj,
                                created_at: now,
                                dirty_since: None,
                                last_sent_at: None,
                                next_flush_at: None,
                            },
                            false,
                        ),
                    };
                    let since = *g.dirty_since.get_or_insert(now);
                    let due = match g.last_sent_at {
                        None => since + route.group_wait,
                        Some(last) => (last + route.group_interval).max(since + route.group_wait),
                    };
                    if due <= now {
                        // Due now: one message with this group's firing alerts (this one included).
                        let mut members = if exists { store.group_alerts(&key, &["firing"]).await? } else { Vec::new() };
                        members.retain(|m| m.id != alert.id);
                        members.push(alert.clone());
                        let msg = self.inner.renderer.render(&Subject {
                            purpose: "firing",
                            alerts: &members,
                            mention_all: route.mention_all,
                            note: None,
                        })?;
                        let n = self.new_notification(Some(key.clone()), ch, &msg, self.backup_for(Some(route), ch), now);
                        tx.insert_notification(&n);
                        raised.notifications.push(n.id.clone());
                        for m in members.iter_mut().filter(|m| m.notified_at.is_none() && m.id != alert.id) {
                            m.notified_at = Some(now);
                            tx.update_alert(m);
                        }
                        if alert.notified_at.is_none() {
                            alert.notified_at = Some(now);
                        }
                        g.dirty_since = None;
                        g.last_sent_at = Some(now);
                        g.next_flush_at = Some(now + route.repeat);
                    } else {
                        g.next_flush_at = Some(due);
                    }
                    if exists {
                        tx.update_group(&g);
                    } else {
                        tx.insert_group(&g);
                    }
                }
            }
            if alert.notified_at.is_some() {
                tx.update_alert(&alert);
            }
        }
        store.commit_alerts(tx).await?;
        if !raised.notifications.is_empty() {
            self.inner.wake.notify_one();
        }
        Ok(raised)
    }

    /// The flow succeeded: its firing alerts are resolved, and every group that had told someone
    /// about them says so.
    pub async fn resolve(&self, flow: &str) -> anyhow::Result<usize> {
        let store = &self.inner.store;
        let firing = store.firing_alerts_of_flow(flow).await?;
        if firing.is_empty() {
            return Ok(0);
        }
        let _g = self.inner.lock.lock().await;
        let now = self.now();
        let mut tx = store.alert_tx();
        let mut by_group: BTreeMap<String, (GroupRecord, Vec<AlertRecord>)> = BTreeMap::new();
        for mut a in firing {
            a.status = "resolved".into();
            a.resolved_at = Some(now);
            tx.update_alert(&a);
            tx.occurrence(&a.id, None, now, "resolved", None);
            for g in store.groups_of_alert(&a.id).await? {
                by_group.entry(g.group_key.clone()).or_insert_with(|| (g, Vec::new())).1.push(a.clone());
            }
        }
        let mut notified = false;
        for (key, (mut g, resolved)) in by_group {
            let was_told = resolved.iter().any(|a| a.notified_at.is_some());
            if was_told {
                let route = self.inner.routes.iter().find(|r| r.idx == g.route);
                let told: Vec<AlertRecord> = resolved.iter().filter(|a| a.notified_at.is_some()).cloned().collect();
                let msg = self.inner.renderer.render(&Subject { purpose: "resolved", alerts: &told, mention_all: false, note: None })?;
                let n = self.new_notification(Some(key.clone()), &g.channel, &msg, self.backup_for(route, &g.channel), now);
                tx.insert_notification(&n);
                notified = true;
            }
            let still: Vec<AlertRecord> =
                store.group_alerts(&key, &["firing"]).await?.into_iter().filter(|m| !resolved.iter().any(|r| r.id == m.id)).collect();
            if still.is_empty() {
                g.dirty_since = None;
                g.next_flush_at = None;
                tx.update_group(&g);
            }
        }
        let n = tx.stmts.len();
        store.commit_alerts(tx).await?;
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
            tx.update_alert(a);
            tx.occurrence(&a.id, None, now, "acknowledged", Some(by));
        }
        store.commit_alerts(tx).await?;
        Ok(found)
    }

    /// Raises the alerts that runs ended in [since_ms, until_ms) should have raised but did not
    /// (the process died between the two writes, or a restart marked the run `interrupted`).
    /// Called at the start of every process that alerts; returns how many it raised.
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
            if let Some(input) = AlertInput::from_outcome(&outcome, None) {
                self.raise(input).await?;
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

    /// Sends groups whose window has passed: news since their last message, or a repeat.
    async fn flush_groups(&self, now: i64) -> anyhow::Result<usize> {
        let store = &self.inner.store;
        let due = store.due_groups(now).await?;
        if due.is_empty() {
            return Ok(0);
        }
        let _g = self.inner.lock.lock().await;
        let mut tx = store.alert_tx();
        let mut made = 0;
        for g in due {
            // Re-read under the lock: a raise may have sent it meanwhile.
            let Some(mut g) = store.group(&g.group_key).await? else { continue };
            if g.next_flush_at.is_none_or(|t| t > now) {
                continue;
            }
            let Some(route) = self.inner.routes.iter().find(|r| r.idx == g.route) else {
                g.next_flush_at = None;
                tx.update_group(&g);
                continue;
            };
            let mut members = store.group_alerts(&g.group_key, &["firing"]).await?;
            let repeat = g.dirty_since.is_none();
            if repeat {
                members.retain(|m| m.acked_at.is_none());
            }
            if members.is_empty() {
                g.dirty_since = None;
                g.next_flush_at = None;
                tx.update_group(&g);
                continue;
            }
            let msg =
                self.inner.renderer.render(&Subject { purpose: "firing", alerts: &members, mention_all: route.mention_all, note: None })?;
            let n = self.new_notification(Some(g.group_key.clone()), &g.channel, &msg, self.backup_for(Some(route), &g.channel), now);
            tx.insert_notification(&n);
            made += 1;
            for m in members.iter_mut().filter(|m| m.notified_at.is_none()) {
                m.notified_at = Some(now);
                tx.update_alert(m);
            }
            g.dirty_since = None;
            g.last_sent_at = Some(now);
            g.next_flush_at = Some(now + route.repeat);
            tx.update_group(&g);
        }
        store.commit_alerts(tx).await?;
        Ok(made)
    }

    /// High alerts not acknowledged within their route's `escalate.after` go to its `to` channels.
    async fn escalate(&self, now: i64) -> anyhow::Result<usize> {
        if !self.inner.routes.iter().any(|r| r.escalate.is_some()) {
            return Ok(0);
        }
        let store = &self.inner.store;
        let mut tx = store.alert_tx();
        let mut made = 0;
        for mut a in store.escalation_candidates().await? {
            let labels: BTreeMap<String, String> = serde_json::from_str(&a.labels).unwrap_or_default();
            let mut done = false;
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
                        tx.insert_notification(&self.new_notification(None, ch, &msg, self.backup_for(None, ch), now));
                        made += 1;
                    }
                    done = true;
                }
            }
            if done {
                a.escalated_at = Some(now);
                tx.update_alert(&a);
                tx.occurrence(&a.id, None, now, "escalated", None);
            }
        }
        store.commit_alerts(tx).await?;
        Ok(made)
    }

    /// One round of the pump: flush due groups, escalate, deliver what is due. Tests drive this
    /// on an injected clock; [`Alerter::run_loop`] repeats it.
    pub async fn step(&self) -> anyhow::Result<StepReport> {
        let now = self.now();
        let mut rep = StepReport { flushed: self.flush_groups(now).await?, escalated: self.escalate(now).await?, ..Default::default() };
        let due = self.inner.store.due_notifications(now, 64).await?;
        for n in due {
            self.deliver(n, now, &mut rep).await?;
        }
        Ok(rep)
    }

    fn backoff(&self, attempts: i64) -> i64 {
        let shift = (attempts - 1).clamp(0, 20) as u32;
        (self.inner.backoff.saturating_mul(1i64 << shift)).min(self.inner.max_backoff)
    }

    async fn deliver(&self, mut n: NotificationRecord, now: i64, rep: &mut StepReport) -> anyhow::Result<()> {
        let store = &self.inner.store;
        let Some(ch) = self.inner.channels.get(&n.channel).cloned() else {
            return self.give_up(n, now, "the channel is no longer configured".into(), rep).await;
        };
        let limited = self.inner.limiter.lock().expect("limiter").acquire(&n.channel, &ch.rate_limits(), now);
        if let Err(free_at) = limited {
            store.postpone_notification(&n.id, free_at).await?;
            rep.rate_limited += 1;
            return Ok(());
        }
        // A lease, so another process pumping the same outbox does not send it too.
        if !store.claim_notification(&n.id, n.next_attempt_at, now + 120_000).await? {
            return Ok(());
        }
        let mut msg: Message = serde_json::from_str(&n.message).unwrap_or_default();
        let started = std::time::Instant::now();
        let (d, owed) = ch.send_partial(&msg).await;
        let took = started.elapsed().as_millis() as i64;
        let taken = now;
        let now = self.now().max(now);
        self.inner.limiter.lock().expect("limiter").finished(&n.channel, taken, now);
        n.attempts += i64::from(!matches!(d, Delivery::RateLimited { .. }));
        let red = &self.inner.redactor;
        let mut tx = store.alert_tx();
        tx.insert_delivery(&crate::store::DeliveryRecord {
            notification_id: n.id.clone(),
            channel: n.channel.clone(),
            attempt: n.attempts,
            at: now,
            duration_ms: took,
            http_status: d.status().map(i64::from),
            outcome: d.outcome().into(),
            answer: Some(channels::cut(&red.redact(d.answer()), 4096, "…")),
        });
        if let Some(owed) = owed {
            // Who already has it is not sent it again.
            msg.recipients = Some(owed);
            tx.set_notification_message(&n.id, &serde_json::to_string(&msg)?);
        }
        match &d {
            Delivery::Sent { .. } => {
                n.status = "sent".into();
                n.sent_at = Some(now);
                n.last_error = None;
                tx.update_notification(&n);
                store.commit_alerts(tx).await?;
                rep.sent += 1;
            }
            Delivery::RateLimited { retry_after, .. } => {
                let wait = retry_after.map(ms).unwrap_or(1_000).max(100);
                self.inner.limiter.lock().expect("limiter").block(&n.channel, now + wait);
                n.next_attempt_at = now + wait;
                n.last_error = d.error().map(|e| red.redact(&e));
                tx.update_notification(&n);
                store.commit_alerts(tx).await?;
                rep.rate_limited += 1;
            }
            Delivery::Retry { error, .. } if n.attempts < self.inner.max_attempts => {
                n.next_attempt_at = now + self.backoff(n.attempts);
                n.last_error = Some(red.redact(error));
                tx.update_notification(&n);
                store.commit_alerts(tx).await?;
                rep.retried += 1;
            }
            Delivery::Retry { error, .. } | Delivery::Failed { error, .. } => {
                store.commit_alerts(tx).await?;
                let e = red.redact(error);
                return self.give_up(n, now, e, rep).await;
            }
        }
        Ok(())
    }

    /// The notification is dead; it is raised on its backup channel (or the dead-letter channel).
    async fn give_up(&self, mut n: NotificationRecord, now: i64, error: String, rep: &mut StepReport) -> anyhow::Result<()> {
        let store = &self.inner.store;
        n.status = "dead".into();
        n.last_error = Some(error.clone());
        let mut tx = store.alert_tx();
        tx.update_notification(&n);
        rep.dead += 1;
        let target = n.backup.clone().filter(|b| self.inner.channels.contains_key(b)).or_else(|| {
            self.inner.dead_letter.clone().filter(|d| *d != n.channel && n.purpose != "dead" && self.inner.channels.contains_key(d))
        });
        if let Some(target) = target {
            let mut msg: Message = serde_json::from_str(&n.message).unwrap_or_default();
            // Whom the failed channel still owed it is that channel's business: the backup sends to all of its own.
            msg.recipients = None;
            let note = if self.inner.renderer.locale == "en" {
                format!("(could not be delivered on `{}` after {} attempts: {error})", n.channel, n.attempts)
            } else {
                format!("（渠道 `{}` 投递失败 {} 次：{error}）", n.channel, n.attempts)
            };
            let prefix = if self.inner.renderer.locale == "en" { "[FAILOVER] " } else { "[转发] " };
            msg.title = format!("{prefix}{}", msg.title);
            msg.text = format!("{}\n{note}", msg.text);
            msg.markdown = format!("{}\n{note}", msg.markdown);
            msg.purpose = if n.backup.is_some() { "failover".into() } else { "dead".into() };
            let mut f = self.new_notification(n.group_key.clone(), &target, &msg, None, now);
            f.failover_of = Some(n.id.clone());
            tx.insert_notification(&f);
        }
        store.commit_alerts(tx).await?;
        Ok(())
    }

    /// Repeats [`Alerter::step`] until `stop` resolves, waking when an alert is raised or when
    /// the next notification or group is due.
    pub async fn run_loop(&self, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        loop {
            let wait = match self.step().await {
                Ok(r) if r.sent + r.retried + r.dead + r.flushed > 0 => 0,
                Ok(_) => self.until_next_due().await.unwrap_or(1_000),
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
                self.inner.clock.sleep(Duration::from_millis((next - now).clamp(1, 1_000) as u64)).await;
            }
        }
    }
}
