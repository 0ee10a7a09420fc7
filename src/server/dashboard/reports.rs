//! The reports page: the daily and weekly reports as the channels get them (rendered from the
//! rollups by the report module, in the viewer's language), when each was sent, and the
//! statistics of a chosen window.

use super::session::Viewer;
use super::{Failure, Shared, message, param, query, render, ser, store_failed};
use crate::report::schedule::{self, Kind};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use minijinja::context;
use std::sync::Arc;

pub async fn page(State(s): State<Arc<Shared>>, h: HeaderMap, uri: Uri) -> Result<Response, Failure> {
    let v = Viewer::read(&s, &h, &uri)?;
    let q = query(&uri);
    let now = s.clock.now_ms();
    let l = s.loaded();
    let mut ctx = crate::report::ReportCtx::new(s.store.clone(), &l.config, &l.flows);
    ctx.locale = v.lang.clone();
    let tz = ctx.tz.clone();
    drop(l);
    let kind = if param(&q, "kind").as_deref() == Some("weekly") { Kind::Weekly } else { Kind::Daily };
    let today = jiff::Timestamp::from_millisecond(now).map(|t| t.to_zoned(tz.clone()).date()).unwrap_or_default();
    // The report of a chosen day (daily) or of the week that ends that day (weekly); by default
    // the latest one sent: yesterday, or the last seven days before today.
    let day = match param(&q, "date") {
        Some(d) => match d.parse::<jiff::civil::Date>() {
            Ok(d) => d,
            Err(e) => return Err(Failure::Page(message(&s, &v, StatusCode::BAD_REQUEST, "bad_date", &e.to_string()))),
        },
        None => today.yesterday().unwrap_or(today),
    };
    let period = match kind {
        Kind::Daily => schedule::day(day, &tz),
        Kind::Weekly => schedule::week(day.checked_sub(jiff::ToSpan::days(6)).unwrap_or(day), &tz),
    };
    let (_, rendered) = crate::report::generate(&ctx, &period, now).await.map_err(|e| store_failed(&s, &v, e))?;
    let sent_at = s.store.report_sent_at(kind.as_str(), &period.key).await.map_err(|e| store_failed(&s, &v, e))?;
    let body = body_of(&rendered.html);
    let since = param(&q, "since").unwrap_or_else(|| "7d".into());
    let since_ms = match crate::app::parse_since(&since, now, &tz) {
        Ok(t) => t,
        Err(e) => return Err(Failure::Page(message(&s, &v, StatusCode::BAD_REQUEST, "bad_since", &e.to_string()))),
    };
    let stats = crate::stats::collect(&s.store, None, since_ms, now + 1).await.map_err(|e| store_failed(&s, &v, e))?;
    Ok(render(
        &s,
        &v,
        "reports.html",
        context! {
            page => "reports",
            kind => kind.as_str(),
            date => day.to_string(),
            period => period.key,
            sent_at => sent_at,
            title => rendered.title,
            report => minijinja::Value::from_safe_string(body.to_owned()),
            since => since,
            stats => ser(&stats),
        },
    ))
}

/// What is between `<body…>` and `</body>` of the report's HTML (its own escaping kept).
fn body_of(html: &str) -> &str {
    let start = html.find("<body").and_then(|i| html[i..].find('>').map(|j| i + j + 1)).unwrap_or(0);
    let end = html.rfind("</body>").unwrap_or(html.len());
    html.get(start..end.max(start)).unwrap_or("")
}
