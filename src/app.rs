//! The app context every front end shares (the CLI and the server): the config, the node
//! registry and the flows, loaded and checked together; the store and engine they open; and the
//! time windows people write (`24h`, `7d`, `2026-11-01`).

use crate::alert::Alerter;
use crate::clock::SharedClock;
use crate::config::Config;
use crate::engine::Engine;
use crate::flow::{Diagnostics, Flow};
use crate::nodes::Registry;
use crate::store::{PoolSettings, Store, StoreOptions};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

/// Why a project could not be loaded. `Config` and `Flows` are the user's to fix (exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Config(Diagnostics),
    #[error(transparent)]
    Flows(Diagnostics),
    #[error("cannot set up models and endpoints: {0:#}")]
    Registry(anyhow::Error),
}

/// A flow name that names no loaded flow; the message lists the ones there are.
#[derive(Debug, thiserror::Error)]
#[error("no flow named `{name}`{hint}; flows in {dir}: {known}")]
pub struct UnknownFlow {
    pub name: String,
    hint: String,
    dir: String,
    known: String,
}

/// A time a user wrote that is neither a duration back from now nor a date.
#[derive(Debug, thiserror::Error)]
#[error("cannot read `{0}` as a time: write a duration back from now (`24h`, `7d`) or a date (`2026-11-01`)")]
pub struct BadTime(pub String);

/// Everything a command or the server needs, loaded from the config.
pub struct App {
    pub config: Config,
    pub registry: Arc<Registry>,
    pub flows: BTreeMap<String, Arc<Flow>>,
}

impl App {
    /// Loads the config and every flow; all problems are reported together.
    pub fn load(config: &Path) -> Result<App, LoadError> {
        let cfg = Config::load(config).map_err(LoadError::Config)?;
        let registry = Arc::new(Registry::from_config(&cfg).map_err(LoadError::Registry)?);
        let flows = crate::flow::load_dir(&cfg.flows_dir(), &registry).map_err(LoadError::Flows)?;
        Ok(App { config: cfg, registry, flows })
    }

    pub async fn store(&self) -> anyhow::Result<Store> {
        open_store_of(&self.config).await
    }

    /// The engine commands run runs with; `server.model_concurrency` holds for them too.
    pub async fn engine(&self, clock: SharedClock) -> anyhow::Result<Engine> {
        let store = self.store().await?;
        let mut registry = self.registry.clone();
        if !self.config.server.model_concurrency.is_empty() {
            let mut reg = Registry::clone(&registry);
            crate::model::limited::apply(&mut reg.models, &self.config.server.model_concurrency, &store)?;
            registry = Arc::new(reg);
        }
        Ok(Engine::new(store, registry, clock, self.config.storage.max_payload_bytes))
    }

    /// An engine whose run outcomes reach alerting the way they do under `serve` (the alerter's
    /// engine observer: a final failure raises, a success resolves; `notify` nodes send through
    /// it), and that alerter. Every command that runs or resumes a run uses it; call
    /// [`Alerter::drain`] before exiting.
    pub async fn alerting_engine(&self, clock: SharedClock) -> anyhow::Result<(Engine, Alerter)> {
        let engine = self.engine(clock.clone()).await?;
        let alerter = Alerter::new(&self.config, engine.store.clone(), clock)?;
        Ok((engine.with_notifier(alerter.notifier()).with_observer(alerter.observer()), alerter))
    }

    pub fn flow(&self, name: &str) -> Result<Arc<Flow>, UnknownFlow> {
        self.flows.get(name).cloned().ok_or_else(|| UnknownFlow {
            name: name.to_owned(),
            hint: crate::flow::suggest(name, self.flows.keys().map(String::as_str))
                .map(|s| format!(" (did you mean `{s}`?)"))
                .unwrap_or_default(),
            dir: self.config.flows_dir().display().to_string(),
            known: self.flows.keys().cloned().collect::<Vec<_>>().join(", "),
        })
    }
}

/// `storage.max_connections`, `storage.connect_timeout` and `storage.write_patience`.
pub fn store_options(cfg: &Config) -> StoreOptions {
    StoreOptions {
        pool: PoolSettings { max_connections: cfg.storage.max_connections, connect_timeout: cfg.connect_timeout() },
        write_patience: cfg.write_patience(),
        lease: crate::store::LeaseSettings { length: cfg.storage.lease.get(), heartbeat: cfg.storage.lease_heartbeat() },
    }
}

/// Opens the store a config names.
pub async fn open_store_of(cfg: &Config) -> anyhow::Result<Store> {
    Store::open_with(&cfg.storage_url(), &store_options(cfg)).await
}

/// `24h`, `7d` back from now, or a date (midnight in `tz`) / RFC 3339 time, as epoch ms.
pub fn parse_since(s: &str, now_ms: i64, tz: &jiff::tz::TimeZone) -> Result<i64, BadTime> {
    if let Ok(d) = crate::config::parse_duration(s) {
        return Ok(now_ms.saturating_sub(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)));
    }
    if let Ok(ts) = s.parse::<jiff::Timestamp>() {
        return Ok(ts.as_millisecond());
    }
    if let Ok(date) = s.parse::<jiff::civil::Date>()
        && let Ok(zoned) = date.to_zoned(tz.clone())
    {
        return Ok(zoned.timestamp().as_millisecond());
    }
    Err(BadTime(s.to_owned()))
}
