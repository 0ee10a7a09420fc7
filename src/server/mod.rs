//! `flowguard serve`: one process that runs scheduled and canary flows, answers the HTTP API
//! (`/api/v1`, bearer tokens with scopes), takes events of flows that run elsewhere, and serves
//! health checks and Prometheus metrics.
//!
//! [`Application::build`] opens the store, loads config and flows, recovers runs a dead process
//! left `running`, binds the port and returns; [`Application::run_until_stopped`] serves until the
//! shutdown future resolves, then drains running runs within the grace period.

pub mod api;
pub mod config;
pub mod dashboard;
pub mod external;
pub mod ingest;
pub mod metrics;
mod ops;
pub use ops::silence_duration;

use crate::app::App;
use crate::clock::SharedClock;
use crate::config::Config;
use crate::engine::{Engine, Event};
use crate::flow::Flow;
use crate::scheduler::runs::{Launch, OnFinish, Recovered, Runs};
use crate::scheduler::{Fire, JobKind, Scheduler};
use crate::store::Store;
use anyhow::{Context, anyhow};
use config::Scope;
use metrics::Metrics;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::watch;

/// How `serve` is started.
#[derive(Clone)]
pub struct Options {
    /// Overrides `server.listen` (tests pass `127.0.0.1:0`).
    pub listen: Option<String>,
    pub clock: SharedClock,
    /// Cron schedules added to flows that have none (the demo keeps its flow running this way).
    pub extra_schedules: Vec<(String, croner::Cron)>,
}

/// One loaded version of config and flows, with the engine built from it. A reload swaps it whole.
pub struct Loaded {
    pub config: Config,
    pub flows: BTreeMap<String, Arc<Flow>>,
    pub engine: Engine,
    /// Raises alerts from run outcomes; its outbox pump runs beside the server.
    pub alerter: crate::alert::Alerter,
}

/// What the handlers and background jobs share.
pub struct Shared {
    pub config_path: PathBuf,
    /// The address served (reloads check access against it).
    pub listen_addr: std::net::SocketAddr,
    pub store: Store,
    pub clock: SharedClock,
    loaded: RwLock<Arc<Loaded>>,
    pub metrics: Arc<Metrics>,
    pub runs: Arc<Runs>,
    /// Ingestion batches are applied one merge at a time (each reads, merges and writes its
    /// runs); requests waiting meanwhile are merged together.
    pub ingest_lock: ingest::Gate,
    limiter: Mutex<HashMap<String, (f64, Instant)>>,
    /// Last time the scheduler loop went round (epoch ms); `/readyz` checks it.
    pub scheduler_beat: AtomicI64,
    pub started_ms: i64,
    /// Why the last reload was refused, if it was.
    pub reload_error: Mutex<Option<String>>,
    /// Versions loaded (1 at start); the scheduler rebuilds its jobs when it changes.
    pub generation: watch::Sender<u64>,
    pub reloads_refused: AtomicU64,
    /// Whether the database is known to be away (the API answers 503 at once meanwhile).
    pub store_health: api::StoreHealth,
    extra_schedules: Vec<(String, croner::Cron)>,
}

impl Shared {
    pub fn loaded(&self) -> Arc<Loaded> {
        self.loaded.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Loads config and flows again. An invalid new version is refused with its errors logged,
    /// and the running version keeps going.
    pub fn reload(&self) -> Result<(), String> {
        let current = self.loaded();
        let result = App::load(&self.config_path).map_err(|e| format!("{e:#}")).and_then(|app| {
            if app.config.storage_url() != current.config.storage_url() {
                tracing::warn!("storage.url changed: it takes effect at the next start");
            }
            // The checks of start-up, against the address actually served: a reload never opens the API.
            app.config.server.check_access(self.listen_addr)?;
            let redactor = app.config.redactor.clone();
            loaded(app, self.store.clone(), self.clock.clone(), self.metrics.clone()).map_err(|e| redactor.redact(&format!("{e:#}")))
        });
        // Values of the running config's `${VAR}`s are masked too (a failed load has no redactor of its own).
        let result = result.map_err(|e| current.config.redactor.redact(&e));
        match result {
            Ok(new) => {
                *self.loaded.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(new);
                *self.reload_error.lock().expect("reload error") = None;
                self.generation.send_modify(|g| *g += 1);
                tracing::info!(config = %self.config_path.display(), "config and flows reloaded");
                Ok(())
            }
            Err(e) => {
                tracing::error!(config = %self.config_path.display(), "reload refused; the running version keeps going:\n{e}");
                self.reloads_refused.fetch_add(1, Ordering::Relaxed);
                let previous = self.reload_error.lock().expect("reload error").replace(e.clone());
                if previous.as_deref() != Some(e.as_str()) {
                    // Once per new error: the running version keeps going, but someone must know.
                    let alerter = current.alerter.clone();
                    let input = crate::alert::AlertInput {
                        flow: "flowguard".into(),
                        node: "config".into(),
                        error_kind: "internal".into(),
                        severity: crate::vocab::Severity::High,
                        status: "reload_refused".into(),
                        run_id: None,
                        message: format!("reload of {} refused; the running version keeps going: {e}", self.config_path.display()),
                        attempts: None,
                        labels: Default::default(),
                    };
                    tokio::spawn(async move {
                        if let Err(err) = alerter.raise(input).await {
                            tracing::error!(error = %format!("{err:#}"), "could not raise the reload alert");
                        }
                    });
                }
                Err(e)
            }
        }
    }

    /// Checks a bearer token for a scope. 401 without a valid token, 403 without the scope, 429
    /// past the token's rate. With no tokens configured (loopback only) everything is allowed.
    pub fn authorize(&self, header: Option<&str>, scope: Scope) -> Result<String, api::ApiError> {
        let loaded = self.loaded();
        let cfg = &loaded.config.server;
        let who = if cfg.tokens.is_empty() {
            "anonymous".to_owned()
        } else {
            let given = header.and_then(|h| h.strip_prefix("Bearer ")).map(str::trim).ok_or(api::ApiError::Unauthorized)?;
            let given = digest(given);
            let token = cfg.tokens.iter().find(|t| digest(&t.token) == given).ok_or(api::ApiError::Unauthorized)?;
            let ok = token.scopes.iter().any(|s| *s == scope || (scope == Scope::Read && *s == Scope::Operate));
            if !ok {
                return Err(api::ApiError::Forbidden);
            }
            token.name.clone()
        };
        self.take_token(&who, cfg.rate_limit.per_second, cfg.rate_limit.burst)?;
        Ok(who)
    }

    /// A token bucket per caller.
    fn take_token(&self, who: &str, rate: f64, burst: f64) -> Result<(), api::ApiError> {
        let mut l = self.limiter.lock().expect("limiter");
        let now = Instant::now();
        let (tokens, last) = l.entry(who.to_owned()).or_insert((burst, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * rate).min(burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            let wait = ((1.0 - *tokens) / rate.max(1e-9)).ceil().max(1.0) as u64;
            Err(api::ApiError::RateLimited(wait))
        }
    }

    /// Queues a run and answers its id once the run is durable (`None`: skipped by the overlap
    /// policy).
    pub async fn queue(&self, l: Launch) -> anyhow::Result<Option<String>> {
        self.queue_as(l, uuid::Uuid::now_v7().to_string(), None).await
    }

    async fn queue_as(&self, l: Launch, id: String, fire: Option<(&str, i64)>) -> anyhow::Result<Option<String>> {
        let engine = self.loaded().engine.clone();
        Ok(self.runs.queue(&engine, &l, &id, fire).await?.then_some(id))
    }

    fn on_finish(&self) -> OnFinish {
        Arc::new(|l: &Launch, o: &crate::engine::RunOutcome| {
            if l.canary {
                crate::scheduler::canary_finished(o);
            }
        })
    }

    /// Records a scheduler fire and queues its run, under the fire's own run id
    /// ([`Fire::run_id`]), in one transaction; answers once it is durable. `None`: skipped by the
    /// overlap policy, recorded by another process first, or the flow is gone.
    pub async fn queue_fire(&self, f: &Fire) -> anyhow::Result<Option<String>> {
        let Some(flow) = self.loaded().flows.get(&f.flow).cloned() else { return Ok(None) };
        let canary = f.kind == JobKind::Canary;
        let trigger = if canary { "canary" } else { "cron" };
        let l = Launch { flow, inputs: f.inputs.clone(), trigger: trigger.into(), canary, overlap: Some(f.overlap) };
        let queued = self.queue_as(l, f.run_id(), Some((&f.job, f.at_ms))).await?;
        if queued.is_some() {
            self.metrics.fired(&f.flow, trigger);
        }
        Ok(queued)
    }
}

fn digest(s: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(s.as_bytes()).into()
}

fn loaded(app: App, store: Store, clock: SharedClock, metrics: Arc<Metrics>) -> anyhow::Result<Loaded> {
    let App { config, registry, flows } = app;
    let mut reg = crate::nodes::Registry::clone(&registry);
    crate::model::limited::apply(&mut reg.models, &config.server.model_concurrency, &store)?;
    let alerter = crate::alert::Alerter::new(&config, store.clone(), clock.clone())?;
    let engine = Engine::new(store, Arc::new(reg), clock, config.storage.max_payload_bytes)
        .with_observer(Arc::new(move |e: &Event| metrics.observe(e)))
        .with_notifier(alerter.notifier())
        .with_observer(alerter.observer());
    Ok(Loaded { config, flows, engine, alerter })
}

pub struct Application {
    listener: tokio::net::TcpListener,
    port: u16,
    pub shared: Arc<Shared>,
    /// What recovery did at start.
    pub recovered: Vec<Recovered>,
}

impl Application {
    /// Opens the store, loads config and flows, recovers interrupted runs, binds the port.
    pub async fn build(config_path: &Path, opts: Options) -> anyhow::Result<Application> {
        let app = App::load(config_path)?;
        let store = app.store().await?;
        let listen = opts.listen.clone().unwrap_or_else(|| app.config.server.listen.clone());
        let addr: std::net::SocketAddr = tokio::net::lookup_host(&listen)
            .await
            .with_context(|| format!("server.listen `{listen}`"))?
            .next()
            .ok_or_else(|| anyhow!("server.listen `{listen}` names no address"))?;
        app.config.server.check_access(addr).map_err(|e| anyhow!(e))?;
        if store.backend() == crate::store::Backend::Sqlite {
            // SQLite is single-worker: one `serve` per file (CLI commands still work beside it).
            let lease = store.lease_settings().length.as_millis() as i64;
            if let Err(holder) = store.lock_process(SERVE_LOCK, lease).await? {
                store.close().await;
                return Err(anyhow!(
                    "another `flowguard serve` ({}) is using the SQLite database {}; SQLite takes one serve per file. Stop that one, or use MySQL/MariaDB or PostgreSQL to run several workers",
                    holder.describe(),
                    app.config.storage_url()
                ));
            }
        }
        let metrics = Arc::new(Metrics::default());
        let now = opts.clock.now_ms();
        let config_path = config_path.to_path_buf();
        let loaded = loaded(app, store.clone(), opts.clock.clone(), metrics.clone())?;
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
        let port = listener.local_addr()?.port();
        let shared = Arc::new(Shared {
            config_path,
            listen_addr: listener.local_addr()?,
            store,
            clock: opts.clock.clone(),
            loaded: RwLock::new(Arc::new(loaded)),
            metrics,
            runs: Arc::new(Runs::default()),
            ingest_lock: Default::default(),
            limiter: Default::default(),
            scheduler_beat: AtomicI64::new(now),
            started_ms: now,
            reload_error: Default::default(),
            generation: watch::channel(1).0,
            reloads_refused: AtomicU64::new(0),
            store_health: Default::default(),
            extra_schedules: opts.extra_schedules.clone(),
        });
        let l = shared.loaded();
        let recovered = crate::scheduler::runs::recover(&shared.runs, &l.engine, &l.flows, shared.on_finish()).await?;
        // Runs marked interrupted just now, and alerts a dead process owed, alert like any outcome.
        if let Err(e) = l.alerter.sweep(now - 24 * 3600 * 1000, shared.clock.now_ms() + 1).await {
            tracing::warn!(error = %l.alerter.redactor().redact(&format!("{e:#}")), "alert sweep failed");
        }
        Ok(Application { listener, port, shared, recovered })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until `shutdown` resolves: stops taking requests and runs, then gives running runs
    /// the grace period (`server.shutdown_grace`).
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let shared = self.shared.clone();
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut jobs = background_jobs(&shared, stop_rx.clone());
        jobs.extend(exporters(&shared, stop_rx.clone()));
        let router = api::router(shared.clone()).merge(dashboard::router(shared.clone()));
        let mut stop = stop_rx.clone();
        let server = axum::serve(self.listener, router).with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        });
        let server = tokio::spawn(async move { server.await });
        shutdown.await;
        tracing::info!("shutting down: no new runs; running runs get the grace period");
        let _ = stop_tx.send(true);
        for j in jobs {
            j.abort();
        }
        let grace = shared.loaded().config.server.shutdown_grace.get();
        let clock = shared.clock.clone();
        let left = shared.runs.drain(grace, &shared.store, || clock.now_ms()).await;
        if left > 0 {
            tracing::warn!(runs = left, "runs still going at the end of the grace period were stopped");
        }
        if shared.store.backend() == crate::store::Backend::Sqlite {
            let _ = shared.store.unlock_process(SERVE_LOCK).await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
        shared.store.close().await;
        Ok(())
    }
}

/// The jobs `serve` runs beside the HTTP server. Each is one task; they stop at shutdown.
fn background_jobs(shared: &Arc<Shared>, stop: watch::Receiver<bool>) -> Vec<tokio::task::JoinHandle<()>> {
    vec![
        tokio::spawn(worker(shared.clone())),
        tokio::spawn(takeovers(shared.clone())),
        tokio::spawn(scheduler_loop(shared.clone(), stop.clone())),
        tokio::spawn(watch_files(shared.clone(), stop.clone())),
        tokio::spawn(outbox_pump(shared.clone(), stop.clone())),
        tokio::spawn(external::watch_silence(shared.clone(), stop.clone())),
        tokio::spawn(report_jobs(shared.clone(), stop)),
    ]
}

/// The exporters of the config `serve` started with (each follows the run log on its own task,
/// never in a run's way); a sink another process holds is left to it.
fn exporters(shared: &Arc<Shared>, stop: watch::Receiver<bool>) -> Vec<tokio::task::JoinHandle<()>> {
    let l = shared.loaded();
    match crate::export::spawn_all(&shared.store, &l.config, Some(l.alerter.clone()), stop) {
        Ok(jobs) => jobs,
        Err(e) => {
            tracing::error!(error = %l.config.redactor.redact(&format!("{e:#}")), "the exporters could not start");
            Vec::new()
        }
    }
}

/// The process lock of the one `serve` on a SQLite file.
const SERVE_LOCK: &str = "serve";

/// How often an idle worker looks at the queue for runs other processes queued.
const QUEUE_POLL: Duration = Duration::from_millis(200);

/// Claims queued runs (of any process) and executes them.
async fn worker(shared: Arc<Shared>) {
    let on_finish = shared.on_finish();
    loop {
        let l = shared.loaded();
        match shared.runs.work_once(&l.engine, &l.flows, &on_finish).await {
            Ok(n) if n > 0 => continue,
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "claiming queued runs failed"),
        }
        drop(l);
        shared.runs.idle(QUEUE_POLL).await;
    }
}

/// Each heartbeat: takes over runs whose lease expired (their process died) and, on SQLite,
/// renews this process's hold on the file.
async fn takeovers(shared: Arc<Shared>) {
    let settings = shared.store.lease_settings();
    let lease = settings.length.as_millis() as i64;
    loop {
        tokio::time::sleep(settings.heartbeat).await;
        if shared.store.backend() == crate::store::Backend::Sqlite {
            match shared.store.renew_process_lock(SERVE_LOCK, lease).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::error!("another `flowguard serve` took over this SQLite database (this one stopped renewing its hold in time)")
                }
                Err(e) => tracing::warn!(error = %format!("{e:#}"), "could not renew the serve lock"),
            }
        }
        let l = shared.loaded();
        match crate::scheduler::runs::recover(&shared.runs, &l.engine, &l.flows, shared.on_finish()).await {
            Ok(done) => {
                // Said on stdout, as at start (`flowguard serve` prints what recovery did).
                for r in done {
                    println!("{r}");
                }
            }
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "taking over stopped runs failed"),
        }
    }
}

/// Delivers alert notifications; picks up a reloaded config's channels.
async fn outbox_pump(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut generation = shared.generation.subscribe();
    loop {
        let alerter = shared.loaded().alerter.clone();
        let mut stop2 = stop.clone();
        tokio::select! {
            _ = alerter.run_loop(async move { let _ = stop2.wait_for(|s| *s).await; }) => return,
            _ = generation.changed() => continue,
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// Sends the daily and weekly reports when due (once across processes), and prunes raw rows
/// past their retention once a day.
async fn report_jobs(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut last_prune = 0i64;
    loop {
        let l = shared.loaded();
        let now = shared.clock.now_ms();
        let ctx = crate::report::ReportCtx::new(shared.store.clone(), &l.config, &l.flows);
        let sink = crate::report::outbox::OutboxSink::new(l.alerter.clone(), &l.config);
        drop(l);
        match crate::report::send_due(&ctx, &sink, now).await {
            Ok(sent) if !sent.is_empty() => tracing::info!(reports = sent.len(), "reports sent"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "sending a due report failed"),
        }
        if now - last_prune > 24 * 3600 * 1000 {
            last_prune = now;
            if let Err(e) = crate::report::prune(&ctx, now).await {
                tracing::warn!(error = %format!("{e:#}"), "pruning raw rows failed");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(30)) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// Fires scheduled and canary runs; rebuilds its jobs when config and flows are reloaded.
async fn scheduler_loop(shared: Arc<Shared>, _stop: watch::Receiver<bool>) {
    let mut generation = shared.generation.subscribe();
    // Fires that fell due while the database was away, settled once it answers again; and fires
    // whose write the database refused (the fire is recorded only with its run), tried again each
    // round (under the same run id) until it takes them, rather than dropped. Both outlive a
    // reload of the flows.
    let mut owed: Vec<Fire> = Vec::new();
    let mut refused: Vec<Fire> = Vec::new();
    loop {
        let l = shared.loaded();
        let tz = l.config.time_zone();
        let now = shared.clock.now_ms();
        let mut sched = Scheduler::new(&l.flows, &shared.extra_schedules, tz, now);
        drop(l);
        // Catch-up of fires missed while the server was down (state kept in the store).
        let mut last = HashMap::new();
        for j in &sched.jobs {
            match shared.store.last_fire(&j.name).await {
                Ok(Some(t)) => {
                    last.insert(j.name.clone(), t);
                }
                Ok(None) => {
                    let _ = shared.store.set_last_fire(&j.name, now).await;
                }
                Err(e) => tracing::error!(error = %format!("{e:#}"), "cannot read the scheduler state"),
            }
        }
        for f in sched.missed(now, &|j| last.get(j).copied()) {
            tracing::info!(flow = %f.flow, job = %f.job, "catching up a fire missed while the server was down");
            if !run_fire(&shared, &f, &mut refused).await {
                owed.push(f);
            }
        }
        // Per job, the time up to which an outage's fires were settled: a fire the stalled loop
        // hands out late, scheduled before it, was settled already (skipped or caught up).
        let mut settled: HashMap<String, i64> = HashMap::new();
        let mut seen = shared.store.unreachable_seen();
        loop {
            shared.scheduler_beat.store(shared.clock.now_ms(), Ordering::Relaxed);
            // The database went away since the loop last looked (its writes may all have gone
            // through in the end, after waiting it out): what fell due meanwhile fell due while
            // it was away.
            let now_seen = shared.store.unreachable_seen();
            let away = now_seen != seen;
            seen = now_seen;
            for f in sched.due(shared.clock.now_ms()) {
                if settled.get(&f.job).is_some_and(|t| f.at_ms <= *t) {
                    continue;
                }
                // Until the owed fires are settled, the database has not been seen back: every
                // job's fires are owed, not only those of the job whose fire failed. One started
                // after the database came back (the loop stalled in a write meanwhile) would run
                // late as if on time, and the occurrences the stalled loop stepped over would go
                // unrecorded.
                if away || !owed.is_empty() || !run_fire(&shared, &f, &mut refused).await {
                    owed.push(f);
                }
            }
            if !owed.is_empty() {
                settle_owed(&shared, &sched, &mut owed, &mut settled, &mut refused).await;
            }
            // Once the database answers again (nothing owed), not while each try would wait out
            // the write patience.
            if owed.is_empty() {
                for f in std::mem::take(&mut refused) {
                    if !run_fire(&shared, &f, &mut refused).await {
                        owed.push(f);
                    }
                }
            }
            // Wake at the next fire, at least every second for the heartbeat.
            let next = sched.next_ms().unwrap_or(i64::MAX).min(shared.clock.now_ms() + 1000);
            tokio::select! {
                _ = shared.clock.until(next) => {}
                _ = generation.changed() => break,
            }
        }
    }
}

/// Starts a fire once across workers: the first to record it queues its run in the same
/// transaction. False when the database is away (the fire is owed). A fire whose write the
/// database refused joins `refused`, and the scheduler state is not moved past it: a process
/// that stops before it is taken catches it up at start like any fire missed while down.
async fn run_fire(shared: &Arc<Shared>, f: &Fire, refused: &mut Vec<Fire>) -> bool {
    if let Err(e) = shared.queue_fire(f).await {
        if api::store_unreachable(&e) {
            tracing::error!(error = %format!("{e:#}"), job = %f.job, "cannot record the fire (the database is away); settled when it is back");
            return false;
        }
        tracing::error!(error = %format!("{e:#}"), flow = %f.flow, job = %f.job, "the database refused the fire and its run; tried again next round");
        refused.push(f.clone());
        return true;
    }
    if let Err(e) = shared.store.set_last_fire(&f.job, shared.clock.now_ms().max(f.at_ms)).await {
        tracing::error!(error = %format!("{e:#}"), "cannot record the scheduler state");
    }
    true
}

/// Most occurrences of one job recorded as skipped after one outage (a per-second schedule over a
/// long outage would otherwise write a row per second of it).
const MAX_SKIPPED_RECORDED: usize = 10_000;

/// Once the database answers again, the fires owed since it went away follow the flow's policy:
/// with `catch_up`, the latest occurrence runs once (late) and the earlier ones are skipped;
/// without it, every occurrence in the outage is skipped. Skipped fires are recorded (once across
/// workers), counted in `/metrics` and logged. While the database is still away, nothing changes.
async fn settle_owed(
    shared: &Arc<Shared>,
    sched: &crate::scheduler::Scheduler,
    owed: &mut Vec<Fire>,
    settled: &mut HashMap<String, i64>,
    refused: &mut Vec<Fire>,
) {
    let mut jobs: Vec<String> = owed.iter().map(|f| f.job.clone()).collect();
    jobs.sort();
    jobs.dedup();
    for job in jobs {
        let fires: Vec<&Fire> = owed.iter().filter(|f| f.job == job).collect();
        let (Some(first), Some(last)) = (fires.first().copied().cloned(), fires.last().copied().cloned()) else { continue };
        let Some(spec) = sched.jobs.iter().find(|j| j.name == job) else {
            owed.retain(|f| f.job != job);
            continue;
        };
        // Every occurrence from the first owed fire until now (the database answers again), not
        // only those the stalled loop saw.
        let now = shared.clock.now_ms().max(last.at_ms);
        let mut times = vec![first.at_ms];
        while times.len() < MAX_SKIPPED_RECORDED {
            match crate::scheduler::next_after(&spec.cron, &sched.tz, *times.last().unwrap_or(&first.at_ms)) {
                Some(t) if t <= now => times.push(t),
                _ => break,
            }
        }
        let run_late = spec.catch_up.then(|| times.pop()).flatten();
        let mut skipped = 0u64;
        let mut done = true;
        for at in &times {
            match shared.store.skip_fire(&job, *at).await {
                Ok(true) => skipped += 1,
                Ok(false) => {}
                Err(_) => {
                    done = false;
                    break;
                }
            }
        }
        if done && let Some(at) = run_late {
            let late = Fire { at_ms: at, catch_up: true, ..last.clone() };
            done = run_fire(shared, &late, refused).await;
            if done {
                tracing::warn!(flow = %late.flow, job = %job, "catching up a fire that fell due while the database was away");
            }
        }
        if skipped > 0 {
            shared.metrics.fires_skipped(&last.flow, &job, skipped);
            tracing::warn!(flow = %last.flow, job = %job, skipped, catch_up = spec.catch_up, "scheduled fires fell due while the database was away and were skipped");
        }
        if done {
            owed.retain(|f| f.job != job);
            settled.insert(job, now);
        }
    }
}

/// Reloads when the config or a flow file changes (modification times, polled).
async fn watch_files(shared: Arc<Shared>, _stop: watch::Receiver<bool>) {
    let interval = shared.loaded().config.server.watch_interval.get();
    if interval.is_zero() {
        return;
    }
    let mut seen = mtimes(&shared);
    loop {
        tokio::time::sleep(interval).await;
        let now = mtimes(&shared);
        if now != seen {
            seen = now;
            let _ = shared.reload();
        }
    }
}

fn mtimes(shared: &Shared) -> Vec<(PathBuf, Option<SystemTime>)> {
    let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let mut out = vec![(shared.config_path.clone(), mtime(&shared.config_path))];
    let dir = shared.loaded().config.flows_dir();
    if let Ok(entries) = std::fs::read_dir(&dir) {
        let mut files: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        files.sort();
        out.extend(files.into_iter().map(|p| {
            let t = mtime(&p);
            (p, t)
        }));
    }
    out
}
