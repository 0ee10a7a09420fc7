//! The dashboard at `/`: server-rendered pages (minijinja) with a little script and SVG charts,
//! every asset inside the binary, in zh-CN and en. Pages: overview, flow, run (alert messages link
//! here), alerts, reports. It reads and acts through the same library functions as the API and
//! the CLI (store queries, [`crate::stats`], [`crate::engine::manual`], the alerter, reports).
//!
//! Access follows the API: sign in with an API token (`read` sees, `operate` also acts); the
//! session is a signed, HttpOnly, SameSite cookie; every form that changes something carries a
//! CSRF token and must come from the same origin. With no tokens configured the dashboard is open,
//! as the API is (loopback only).

mod alerts;
mod charts;
mod flow;
mod i18n;
mod overview;
mod reports;
mod run;
mod session;

use super::Shared;
use axum::Router;
use axum::extract::{Path, Request};
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use minijinja::{Environment, Value, context};
use session::Viewer;
use std::sync::{Arc, OnceLock};

/// The dashboard's assets, as served (the benchmark reports their size).
pub const ASSETS: &[(&str, &str, &str)] = &[
    ("app.css", "text/css; charset=utf-8", include_str!("assets/app.css")),
    ("app.js", "text/javascript; charset=utf-8", include_str!("assets/app.js")),
];

const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("templates/base.html")),
    ("login.html", include_str!("templates/login.html")),
    ("message.html", include_str!("templates/message.html")),
    ("overview.html", include_str!("templates/overview.html")),
    ("flow.html", include_str!("templates/flow.html")),
    ("run.html", include_str!("templates/run.html")),
    ("alerts.html", include_str!("templates/alerts.html")),
    ("reports.html", include_str!("templates/reports.html")),
];

/// The dashboard's routes; merged beside the API's by the server.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", get(overview::page))
        .route("/flows/{name}", get(flow::page))
        .route("/flows/{name}/block", post(flow::block))
        .route("/flows/{name}/unblock", post(flow::unblock))
        .route("/flows/{name}/trigger", post(flow::trigger))
        .route("/runs/{id}", get(run::page))
        .route("/runs/{id}/manual", post(run::act))
        .route("/alerts", get(alerts::page))
        .route("/alerts/{id}/ack", post(alerts::ack))
        .route("/silences", post(alerts::silence_add))
        .route("/silences/{id}/expire", post(alerts::silence_expire))
        .route("/reports", get(reports::page))
        .route("/login", get(session::login_page).post(session::login))
        .route("/logout", post(session::logout))
        .route("/assets/{file}", get(asset))
        .layer(axum::middleware::from_fn(headers))
        .with_state(shared)
}

/// Pages may load only their own assets, may not be framed, and are not cached.
async fn headers(req: Request, next: Next) -> Response {
    let mut r = next.run(req).await;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    r
}

async fn asset(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == file) {
        Some((_, ty, body)) => ([(header::CONTENT_TYPE, *ty), (header::CACHE_CONTROL, "public, max-age=3600")], *body).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

fn env() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        for (name, text) in TEMPLATES {
            env.add_template(name, text).expect("dashboard templates parse");
        }
        env.add_filter("when", |ms: Option<i64>| {
            ms.map(|ms| TZ.with(|tz| crate::human::time(ms, &tz.borrow()))).unwrap_or_else(|| "-".into())
        });
        env.add_filter("dur", |ms: Option<i64>| crate::human::ms(ms));
        env.add_filter("pct", |v: Option<f64>| crate::human::pct(v));
        env.add_filter("bytes", crate::human::bytes);
        env.add_filter("clip", |s: Option<String>, n: usize| match s {
            Some(s) if s.chars().count() > n => format!("{}…", s.chars().take(n).collect::<String>()),
            Some(s) => s,
            None => String::new(),
        });
        env
    })
}

thread_local! {
    /// The configured time zone while a page renders (filters read it).
    static TZ: std::cell::RefCell<jiff::tz::TimeZone> = const { std::cell::RefCell::new(jiff::tz::TimeZone::UTC) };
}

/// Renders a page for this viewer: the page's own values, the viewer's and the strings of its
/// language.
fn render(s: &Shared, v: &Viewer, name: &str, page: Value) -> Response {
    render_status(s, v, StatusCode::OK, name, page)
}

fn render_status(s: &Shared, v: &Viewer, status: StatusCode, name: &str, page: Value) -> Response {
    let tz = s.loaded().config.time_zone();
    TZ.with(|t| *t.borrow_mut() = tz);
    let ctx = context! {
        ..page,
        ..context! {
            tr => i18n::strings(&v.lang),
            lang => v.lang.clone(),
            other_lang => if v.lang == "en" { "zh-CN" } else { "en" },
            who => v.who.clone(),
            signed_in => v.signed_in,
            can_operate => v.operate,
            csrf => v.csrf.clone(),
            path => v.path.clone(),
        }
    };
    // The page, then the frame around it (the template engine is built without inheritance).
    let body = env().get_template(name).and_then(|t| t.render(&ctx)).and_then(|main| {
        let title = ctx.get_attr("title").ok().filter(|t| !t.is_undefined() && !t.is_none());
        let key = ctx.get_attr("title_key").ok().filter(|t| !t.is_undefined()).or_else(|| ctx.get_attr("page").ok());
        let title = title.map(|t| t.to_string()).unwrap_or_else(|| {
            key.and_then(|k| i18n::strings(&v.lang).get(k.to_string().as_str()).map(|s| s.to_string()))
                .unwrap_or_else(|| "flowguard".into())
        });
        env().get_template("base.html")?.render(context! { ..ctx, ..context! { main => Value::from_safe_string(main), title => title } })
    });
    let mut r = match body {
        Ok(html) => (status, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response(),
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), page = name, "a dashboard page failed to render");
            (StatusCode::INTERNAL_SERVER_ERROR, "the page could not be rendered; see the server log").into_response()
        }
    };
    for c in &v.set_cookies {
        if let Ok(h) = HeaderValue::from_str(c) {
            r.headers_mut().append(header::SET_COOKIE, h);
        }
    }
    r
}

/// A page that only says something (not found, refused, failed).
fn message(s: &Shared, v: &Viewer, status: StatusCode, key: &str, detail: &str) -> Response {
    render_status(s, v, status, "message.html", context! { title_key => key, detail => detail })
}

/// A record as a template value.
fn ser<T: serde::Serialize>(t: T) -> Value {
    Value::from(minijinja::value::Serde(t))
}

/// What a page handler answers when something went wrong: a page saying so.
pub(crate) enum Failure {
    /// Sign-in needed: go to the sign-in page and come back.
    SignIn(String),
    Page(Response),
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        match self {
            Failure::SignIn(next) => {
                Redirect::to(&format!("/login?next={}", url::form_urlencoded::byte_serialize(next.as_bytes()).collect::<String>()))
                    .into_response()
            }
            Failure::Page(r) => r,
        }
    }
}

/// A store error on a page: logged, and a page that says the data could not be read.
fn store_failed(s: &Shared, v: &Viewer, e: anyhow::Error) -> Failure {
    let text = s.loaded().config.redactor.redact(&format!("{e:#}"));
    tracing::error!(error = %text, "a dashboard page could not read the store");
    Failure::Page(message(s, v, StatusCode::SERVICE_UNAVAILABLE, "store_failed", ""))
}

/// After a form: back to a page, with what was done.
fn done(to: &str, what: &str) -> Response {
    let sep = if to.contains('?') { '&' } else { '?' };
    Redirect::to(&format!("{to}{sep}done={what}")).into_response()
}

/// The query string as pairs.
fn query(uri: &Uri) -> Vec<(String, String)> {
    url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes()).into_owned().collect()
}

fn param(q: &[(String, String)], key: &str) -> Option<String> {
    q.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone()).filter(|v| !v.is_empty())
}

/// Text a page shows from the store or the config, with any configured secret masked.
fn masked(s: &Shared, text: Option<&str>, max: usize) -> Option<String> {
    text.map(|t| {
        let t = s.loaded().config.redactor.redact(t);
        if t.chars().count() > max { format!("{}…", t.chars().take(max).collect::<String>()) } else { t }
    })
}
