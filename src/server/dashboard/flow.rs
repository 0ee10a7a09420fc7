//! The flow page: per-node statistics with each node's share of the time, recent runs, the
//! schedule and its next fire, block and unblock, and a form to start a run with inputs.

use super::charts;
use super::overview::{Window, runs_chart};
use super::session::{Action, Viewer};
use super::{Failure, Shared, done, i18n, message, param, query, render, ser, store_failed};
use crate::scheduler::runs::Launch;
use crate::store::{Cursor, FlowBlock, RunFilter};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Redirect, Response};
use minijinja::context;
use std::sync::Arc;

pub async fn page(State(s): State<Arc<Shared>>, h: HeaderMap, uri: Uri, Path(name): Path<String>) -> Result<Response, Failure> {
    let v = Viewer::read(&s, &h, &uri)?;
    let q = query(&uri);
    let now = s.clock.now_ms();
    let l = s.loaded();
    let tz = l.config.time_zone();
    let flow = l.flows.get(&name).cloned();
    let w = Window::parse(param(&q, "window").as_deref(), now, &tz);
    let tr = i18n::strings(&v.lang);
    let stats = crate::stats::collect(&s.store, Some(&name), w.since_ms, now + 1).await.map_err(|e| store_failed(&s, &v, e))?;
    let fs = stats.flows.into_iter().find(|f| f.flow == name);
    let cursor = param(&q, "cursor").and_then(|c| Cursor::decode(&c));
    let filter = RunFilter { flow: Some(name.clone()), include_canary: true, ..Default::default() };
    let (runs, next) = s.store.runs_page(&filter, cursor.as_ref(), 30).await.map_err(|e| store_failed(&s, &v, e))?;
    if flow.is_none() && fs.is_none() && runs.is_empty() {
        return Err(Failure::Page(message(&s, &v, StatusCode::NOT_FOUND, "no_such_flow", &name)));
    }
    let chart = runs_chart(&s, Some(&name), &w, tr).await.map_err(|e| store_failed(&s, &v, e))?;
    let shares = fs.as_ref().map(|f| {
        let items: Vec<_> =
            f.nodes.iter().map(|n| (n.node.clone(), n.time_share.unwrap_or(0.0), crate::human::pct(n.time_share))).collect();
        charts::shares(&items, tr.get("time_share").copied().unwrap_or(""))
    });
    let block = s.store.flow_block(&name).await.map_err(|e| store_failed(&s, &v, e))?;
    let schedule = flow.as_ref().and_then(|f| f.serve.schedule.as_ref()).map(|sc| {
        context! { cron => sc.cron.as_str(), next => crate::scheduler::next_after(&sc.cron, &tz, now) }
    });
    let canary = flow.as_ref().and_then(|f| f.serve.canary.as_ref()).map(|c| {
        context! { cron => c.cron.as_str(), next => crate::scheduler::next_after(&c.cron, &tz, now) }
    });
    let inputs = flow.as_ref().map(|f| serde_json::to_string_pretty(&f.inputs).unwrap_or_default());
    let nodes: Vec<_> = flow.as_ref().map(|f| f.nodes.iter().map(|n| (n.id.clone(), n.kind.clone())).collect()).unwrap_or_default();
    Ok(render(
        &s,
        &v,
        "flow.html",
        context! {
            page => "flow",
            flow => name,
            loaded => flow.is_some(),
            description => flow.as_ref().map(|f| f.description.clone()),
            window => w.key,
            chart => minijinja::Value::from_safe_string(chart),
            shares => shares.map(minijinja::Value::from_safe_string),
            stats => ser(&fs),
            runs => ser(&runs),
            next_cursor => next.map(|c| c.encode()),
            block => ser(&block),
            schedule => schedule,
            canary => canary,
            inputs => inputs,
            nodes => ser(&nodes),
            done => param(&q, "done"),
        },
    ))
}

pub async fn block(State(s): State<Arc<Shared>>, Path(name): Path<String>, Action { v, form }: Action) -> Result<Response, Failure> {
    if !s.loaded().flows.contains_key(&name) {
        return Err(Failure::Page(message(&s, &v, StatusCode::NOT_FOUND, "no_such_flow", &name)));
    }
    let b =
        FlowBlock { flow: name.clone(), blocked_at: s.clock.now_ms(), run_id: None, reason: form.get("note"), blocked_by: v.who.clone() };
    s.store.block_flow(&b).await.map_err(|e| store_failed(&s, &v, e))?;
    Ok(done(&flow_path(&name), "blocked"))
}

pub async fn unblock(State(s): State<Arc<Shared>>, Path(name): Path<String>, Action { v, form }: Action) -> Result<Response, Failure> {
    let lifted =
        s.store.unblock_flow(&name, &v.who, form.get("note").as_deref(), s.clock.now_ms()).await.map_err(|e| store_failed(&s, &v, e))?;
    Ok(done(&flow_path(&name), if lifted { "unblocked" } else { "not_blocked" }))
}

/// Starts a run with the form's inputs (JSON; empty for the flow's defaults), as the API's
/// trigger does, and opens its page.
pub async fn trigger(State(s): State<Arc<Shared>>, Path(name): Path<String>, Action { v, form }: Action) -> Result<Response, Failure> {
    let Some(flow) = s.loaded().flows.get(&name).cloned() else {
        return Err(Failure::Page(message(&s, &v, StatusCode::NOT_FOUND, "no_such_flow", &name)));
    };
    let inputs = match form.get("inputs") {
        None => Default::default(),
        Some(text) => match serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&text) {
            Ok(m) => m,
            Err(e) => return Err(Failure::Page(message(&s, &v, StatusCode::BAD_REQUEST, "bad_inputs", &e.to_string()))),
        },
    };
    let l = Launch { flow, inputs, trigger: "api".into(), canary: false, overlap: None };
    match s.queue(l).await {
        Ok(Some(id)) => Ok(Redirect::to(&format!("/runs/{id}")).into_response()),
        Ok(None) => Ok(done(&flow_path(&name), "not_started")),
        Err(e) => Err(store_failed(&s, &v, e)),
    }
}

pub fn flow_path(name: &str) -> String {
    format!("/flows/{}", url::form_urlencoded::byte_serialize(name.as_bytes()).collect::<String>())
}
