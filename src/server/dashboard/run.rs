//! The run page (alert messages link here): the waterfall of node attempts — retries, repairs,
//! default values, catch nodes and backup models show as their own bars —, inputs and outputs
//! (cut, secrets masked), errors with kind and severity, and for a run waiting for a human the
//! actions retry (from a chosen node), skip with an output, resolve and abort, with who and why.

use super::charts::{self, Step};
use super::session::{Action, Viewer};
use super::{Failure, Shared, done, i18n, masked, message, param, query, render, ser, store_failed};
use crate::engine::manual::{self, Act, ManualError};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use minijinja::context;
use std::sync::Arc;

/// Input and output text shown per attempt, at most.
const SHOWN_CHARS: usize = 4000;
/// Attempts drawn in the waterfall, at most (a long `foreach` has many).
const DRAWN: usize = 300;

pub async fn page(State(s): State<Arc<Shared>>, h: HeaderMap, uri: Uri, Path(id): Path<String>) -> Result<Response, Failure> {
    let v = Viewer::read(&s, &h, &uri)?;
    let q = query(&uri);
    let tr = i18n::strings(&v.lang);
    let Some(run) = s.store.get_run(&id).await.map_err(|e| store_failed(&s, &v, e))? else {
        return Err(Failure::Page(message(&s, &v, StatusCode::NOT_FOUND, "no_such_run", &id)));
    };
    let attempts = s.store.attempts(&id).await.map_err(|e| store_failed(&s, &v, e))?;
    let end = run.ended_at.unwrap_or_else(|| s.clock.now_ms()).max(attempts.iter().map(|a| a.ended_at).max().unwrap_or(0));
    let steps: Vec<Step> = attempts
        .iter()
        .take(DRAWN)
        .map(|a| {
            let mut label = format!("{} #{}", a.node_id, a.attempt);
            if let Some(i) = a.iteration {
                label.push_str(&format!(" [{i}]"));
            }
            let note = [
                Some(a.status.as_str().to_owned()),
                a.error_kind.clone(),
                a.action.clone(),
                a.model.clone(),
                Some(crate::human::ms(Some(a.duration_ms))),
            ]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" · ");
            Step { label, start_ms: a.started_at, end_ms: a.ended_at, status: a.status.as_str().to_owned(), note }
        })
        .collect();
    let chart = charts::waterfall(&steps, run.started_at, end, tr.get("waterfall").copied().unwrap_or(""));
    let shown: Vec<_> = attempts
        .iter()
        .map(|a| {
            context! {
                a => ser(a),
                input => masked(&s, a.input.as_deref(), SHOWN_CHARS),
                output => masked(&s, a.output.as_deref(), SHOWN_CHARS),
                error => masked(&s, a.error_message.as_deref(), SHOWN_CHARS),
            }
        })
        .collect();
    let task = s.store.manual_task(&run.id).await.map_err(|e| store_failed(&s, &v, e))?.filter(|t| t.run_id == run.id);
    let actions = match &task {
        Some(t) => s.store.manual_actions(&t.id).await.map_err(|e| store_failed(&s, &v, e))?,
        None => Vec::new(),
    };
    let nodes: Vec<String> = s.loaded().flows.get(&run.flow).map(|f| f.nodes.iter().map(|n| n.id.clone()).collect()).unwrap_or_default();
    Ok(render(
        &s,
        &v,
        "run.html",
        context! {
            page => "run",
            run => ser(&run),
            inputs => masked(&s, run.inputs.as_deref(), SHOWN_CHARS),
            error => masked(&s, run.error_message.as_deref(), SHOWN_CHARS),
            chart => minijinja::Value::from_safe_string(chart),
            attempts => shown,
            task => ser(&task),
            open_task => task.as_ref().is_some_and(|t| t.status == "open"),
            actions => ser(&actions),
            nodes => ser(&nodes),
            done => param(&q, "done"),
            refresh => matches!(run.status.as_str(), "running" | "queued"),
        },
    ))
}

/// An action on the run's open manual task, as the API's `POST /api/v1/manual/{id}/{action}`:
/// retry and skip go on with the run in the background; resolve and abort end it.
pub async fn act(State(s): State<Arc<Shared>>, Path(id): Path<String>, Action { v, form }: Action) -> Result<Response, Failure> {
    let what = match form.get("action").as_deref() {
        Some("retry") => Act::Retry(form.get("from")),
        Some("skip") => {
            let text = form.get("output").unwrap_or_default();
            // JSON when it parses, else the text itself.
            Act::Skip(serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)))
        }
        Some("resolve") => Act::Resolve,
        Some("abort") => Act::Abort,
        _ => return Err(Failure::Page(message(&s, &v, StatusCode::BAD_REQUEST, "bad_action", ""))),
    };
    let who = form.get("by").unwrap_or_else(|| v.who.clone());
    let note = form.get("note");
    let l = s.loaded();
    let (engine, flows) = (l.engine.clone(), l.flows.clone());
    drop(l);
    let refused = |e: ManualError| match e {
        ManualError::Store(e) => store_failed(&s, &v, e),
        e => Failure::Page(message(&s, &v, StatusCode::CONFLICT, "action_refused", &e.to_string())),
    };
    let task = manual::open_task(&engine, &id).await.map_err(refused)?;
    if task.run_id != id {
        return Err(Failure::Page(message(&s, &v, StatusCode::NOT_FOUND, "no_such_run", &id)));
    }
    let (name, _) = what.names();
    let back = format!("/runs/{id}");
    if let Act::Retry(_) | Act::Skip(_) = what {
        let logged = task.id.clone();
        tokio::spawn(async move {
            if let Err(e) = manual::act(&engine, &flows, task, what, &who, note).await {
                tracing::error!(error = %format!("{e:#}"), task = %logged, "a manual action failed");
            }
        });
        return Ok(done(&back, name));
    }
    manual::act(&engine, &flows, task, what, &who, note).await.map_err(refused)?;
    Ok(done(&back, name))
}
