//! The alerts page: open and past alerts with their counts, the notifications sent for them with
//! every delivery attempt, acknowledgement, and silences (create, expire).

use super::session::{Action, Viewer};
use super::{Failure, Shared, done, masked, message, param, query, render, ser, store_failed};
use crate::store::{AlertFilter, SilenceRecord};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use minijinja::context;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Notifications shown with their delivery attempts.
const NOTIFICATIONS: i64 = 30;

pub async fn page(State(s): State<Arc<Shared>>, h: HeaderMap, uri: Uri) -> Result<Response, Failure> {
    let v = Viewer::read(&s, &h, &uri)?;
    let q = query(&uri);
    let status = param(&q, "status");
    let alerts = s
        .store
        .list_alerts(&AlertFilter { status: status.clone(), flow: param(&q, "flow"), limit: Some(200) })
        .await
        .map_err(|e| store_failed(&s, &v, e))?;
    let mut counts: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for a in &alerts {
        let c = counts.entry(a.status.clone()).or_default();
        c.0 += 1;
        c.1 += a.count;
    }
    let shown: Vec<_> = alerts
        .iter()
        .map(|a| context! { a => ser(a), message => masked(&s, a.last_message.as_deref(), 600), can_ack => a.status != "resolved" && a.acked_at.is_none() })
        .collect();
    let mut notes = Vec::new();
    for n in s.store.list_notifications(None, NOTIFICATIONS).await.map_err(|e| store_failed(&s, &v, e))? {
        let deliveries: Vec<_> = s
            .store
            .deliveries(&n.id)
            .await
            .map_err(|e| store_failed(&s, &v, e))?
            .into_iter()
            .map(|d| context! { d => ser(&d), answer => masked(&s, d.answer.as_deref(), 300) })
            .collect();
        notes.push(context! {
            n => ser(&n),
            message => masked(&s, Some(&n.message), 600),
            error => masked(&s, n.last_error.as_deref(), 300),
            deliveries => deliveries,
        });
    }
    let silences = s.store.silences(s.clock.now_ms(), false).await.map_err(|e| store_failed(&s, &v, e))?;
    Ok(render(
        &s,
        &v,
        "alerts.html",
        context! {
            page => "alerts",
            status => status,
            counts => ser(&counts),
            alerts => shown,
            notifications => notes,
            silences => ser(&silences),
            labels => ser(crate::alert::config::GROUP_LABELS),
            done => param(&q, "done"),
        },
    ))
}

pub async fn ack(State(s): State<Arc<Shared>>, Path(id): Path<String>, Action { v, .. }: Action) -> Result<Response, Failure> {
    let alerter = s.loaded().alerter.clone();
    // The whole id (a prefix would do in the CLI; a page always has the id).
    let acked = alerter.ack(&id, &v.who).await.map_err(|e| store_failed(&s, &v, e))?;
    if !acked.iter().any(|a| a.id == id) {
        return Err(Failure::Page(message(&s, &v, StatusCode::NOT_FOUND, "no_such_alert", &id)));
    }
    Ok(done("/alerts", "acked"))
}

/// Creates a silence from `matchers` written `label=value, label=value`, as the API's.
pub async fn silence_add(State(s): State<Arc<Shared>>, Action { v, form }: Action) -> Result<Response, Failure> {
    let bad = |detail: String| Failure::Page(message(&s, &v, StatusCode::BAD_REQUEST, "bad_silence", &detail));
    let mut matchers = BTreeMap::new();
    for part in form.get("matchers").unwrap_or_default().split([',', '\n']).map(str::trim).filter(|p| !p.is_empty()) {
        let (k, val) = part.split_once('=').ok_or_else(|| bad(format!("`{part}`: expected label=value")))?;
        let k = k.trim();
        if !crate::alert::config::GROUP_LABELS.contains(&k) {
            return Err(bad(format!("unknown label `{k}`; expected one of: {}", crate::alert::config::GROUP_LABELS.join(", "))));
        }
        matchers.insert(k.to_owned(), val.trim().to_owned());
    }
    if matchers.is_empty() {
        return Err(bad("at least one label=value".into()));
    }
    let d = crate::server::silence_duration(&form.get("duration").unwrap_or_else(|| "2h".into())).map_err(bad)?;
    let now = s.clock.now_ms();
    let rec = SilenceRecord {
        id: uuid::Uuid::now_v7().to_string(),
        matchers: serde_json::to_string(&matchers).unwrap_or_default(),
        comment: form.get("comment"),
        created_by: Some(v.who.clone()),
        created_at: now,
        ends_at: now + d.as_millis() as i64,
        expired_at: None,
    };
    s.store.insert_silence(&rec).await.map_err(|e| store_failed(&s, &v, e))?;
    Ok(done("/alerts", "silenced"))
}

pub async fn silence_expire(State(s): State<Arc<Shared>>, Path(id): Path<String>, Action { v, .. }: Action) -> Result<Response, Failure> {
    let n = s.store.expire_silence(&id, s.clock.now_ms()).await.map_err(|e| store_failed(&s, &v, e))?;
    if n == 0 {
        return Err(Failure::Page(message(&s, &v, StatusCode::NOT_FOUND, "no_such_silence", &id)));
    }
    Ok(done("/alerts", "expired"))
}
