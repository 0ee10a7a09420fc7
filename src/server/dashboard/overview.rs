//! The overview: runs and success rate over time, latency, failures by error kind, the nodes
//! that fail most, open alerts, the manual queue, blocked flows, canaries, models and their
//! breakers, and the exporters' lag.

use super::charts::{self, Slot};
use super::session::Viewer;
use super::{Failure, Shared, i18n, param, query, render, ser, store_failed};
use crate::store::AlertFilter;
use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use axum::response::Response;
use minijinja::context;
use std::collections::BTreeMap;
use std::sync::Arc;

/// A chart window: its slots (each `slot_ms` long, the last one holding now) and their labels.
pub struct Window {
    pub key: &'static str,
    pub since_ms: i64,
    pub slot_ms: i64,
    pub slots: usize,
}

const HOUR: i64 = 3600 * 1000;

impl Window {
    /// `24h` (hourly slots, the default) or `7d` (daily slots, local days of `tz`).
    pub fn parse(key: Option<&str>, now: i64, tz: &jiff::tz::TimeZone) -> Window {
        match key {
            Some("7d") => {
                let today = jiff::Timestamp::from_millisecond(now)
                    .ok()
                    .and_then(|t| t.to_zoned(tz.clone()).start_of_day().ok())
                    .map(|z| z.timestamp().as_millisecond())
                    .unwrap_or(now - now.rem_euclid(24 * HOUR));
                Window { key: "7d", since_ms: today - 6 * 24 * HOUR, slot_ms: 24 * HOUR, slots: 7 }
            }
            _ => {
                let this_hour = now - now.rem_euclid(HOUR);
                Window { key: "24h", since_ms: this_hour - 23 * HOUR, slot_ms: HOUR, slots: 24 }
            }
        }
    }

    pub fn until_ms(&self) -> i64 {
        self.since_ms + self.slot_ms * self.slots as i64
    }

    fn label(&self, i: usize, tz: &jiff::tz::TimeZone) -> String {
        let at = self.since_ms + self.slot_ms * i as i64;
        let fmt = if self.slot_ms >= 24 * HOUR { "%m-%d" } else { "%H:00" };
        jiff::Timestamp::from_millisecond(at).map(|t| t.to_zoned(tz.clone()).strftime(fmt).to_string()).unwrap_or_default()
    }
}

/// The runs chart of a window, for all flows or one.
pub async fn runs_chart(s: &Shared, flow: Option<&str>, w: &Window, tr: &BTreeMap<&str, &str>) -> anyhow::Result<String> {
    let tz = s.loaded().config.time_zone();
    let rows = s.store.run_series(flow, w.since_ms, w.until_ms()).await?;
    let mut slots: Vec<Slot> = (0..w.slots).map(|i| Slot { label: w.label(i, &tz), ok: 0, failed: 0, waiting: 0 }).collect();
    for (bucket, status, n) in rows {
        let i = ((bucket - w.since_ms) / w.slot_ms) as usize;
        let Some(slot) = slots.get_mut(i) else { continue };
        match status.as_str() {
            "succeeded" | "recovered" => slot.ok += n,
            "waiting_manual" => slot.waiting += n,
            "refused" => {}
            _ => slot.failed += n,
        }
    }
    Ok(charts::runs(&slots, tr.get("runs_over_time").copied().unwrap_or("")))
}

pub async fn page(State(s): State<Arc<Shared>>, h: HeaderMap, uri: Uri) -> Result<Response, Failure> {
    let v = Viewer::read(&s, &h, &uri)?;
    let q = query(&uri);
    let now = s.clock.now_ms();
    let l = s.loaded();
    let tz = l.config.time_zone();
    let w = Window::parse(param(&q, "window").as_deref(), now, &tz);
    let tr = i18n::strings(&v.lang);
    let chart = runs_chart(&s, None, &w, tr).await.map_err(|e| store_failed(&s, &v, e))?;
    let stats = crate::stats::collect(&s.store, None, w.since_ms, now + 1).await.map_err(|e| store_failed(&s, &v, e))?;
    let alerts = s
        .store
        .list_alerts(&AlertFilter { status: Some("firing".into()), flow: None, limit: Some(20) })
        .await
        .map_err(|e| store_failed(&s, &v, e))?;
    let manual = s.store.manual_tasks(true, 20).await.map_err(|e| store_failed(&s, &v, e))?;
    let blocks = s.store.blocks(None).await.map_err(|e| store_failed(&s, &v, e))?;
    let mut canaries = Vec::new();
    for (name, flow) in &l.flows {
        if flow.serve.canary.is_some() {
            let last = s.store.last_run(name, true).await.map_err(|e| store_failed(&s, &v, e))?;
            canaries.push(context! { flow => name, last => ser(&last) });
        }
    }
    let breakers = l.engine.reg.breakers.status(&s.store, now).await.map_err(|e| store_failed(&s, &v, e))?;
    let exporters = crate::export::status(&s.store, &l.config.exporters).await.map_err(|e| store_failed(&s, &v, e))?;
    let flows: Vec<&String> = l.flows.keys().collect();
    let mut kinds: Vec<(String, u64)> = stats.total.failures_by_kind.iter().map(|(k, n)| (k.clone(), *n)).collect();
    kinds.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let most = kinds.first().map(|k| k.1).unwrap_or(1).max(1) as f64;
    let kinds_chart = charts::shares(
        &kinds.iter().map(|(k, n)| (k.clone(), *n as f64 / most, n.to_string())).collect::<Vec<_>>(),
        tr.get("failures_by_kind").copied().unwrap_or(""),
    );
    let top: Vec<_> = stats.top_failing_nodes.iter().take(8).collect();
    Ok(render(
        &s,
        &v,
        "overview.html",
        context! {
            page => "overview",
            window => w.key,
            chart => minijinja::Value::from_safe_string(chart),
            kinds_chart => minijinja::Value::from_safe_string(kinds_chart),
            has_kinds => !kinds.is_empty(),
            total => ser(&stats.total),
            per_flow => ser(&stats.flows),
            models => ser(&stats.models),
            top => ser(&top),
            canary_runs => stats.canary_runs,
            alerts => ser(&alerts),
            manual => ser(&manual),
            blocks => ser(&blocks),
            canaries => canaries,
            breakers => ser(&breakers),
            exporters => ser(&exporters),
            flows => ser(&flows),
            refresh => true,
        },
    ))
}
