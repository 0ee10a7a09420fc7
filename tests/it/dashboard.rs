//! The dashboard at `/`: pages served from the real server on every backend, sign-in with API
//! tokens, sessions, CSRF and the read-only scope over plain HTTP; then (in `browser`) the pages
//! in a real headless Chromium driven over WebDriver.

use crate::serve::{INGEST, OPERATE, READ, TestApp, spawn_app_with};
use crate::support::db::{TestDb, backends};
use flowguard::store::Store;
use serde_json::json;
use std::time::Duration;

pub const HELLO: &str =
    "name: hello\ninputs: { who: world }\nnodes:\n  - id: greet\n    kind: template\n    text: 'hello {{ input.who }}'\n";
pub const PARKED: &str = "name: parked\ninputs: { who: x }\nnodes:\n  - id: a\n    kind: template\n    text: 'a'\n  - id: b\n    kind: template\n    text: 'b'\n    expect: [{ if: 'input.who == \"ok\"' }]\n    on_error: manual\n  - id: c\n    kind: template\n    text: 'c after {{ nodes.b }}'\n";

/// The server with tokens, a console channel (so alerts are raised) and the two flows, on `url`.
pub async fn spawn(url: &str) -> TestApp {
    let text = crate::serve::config("channels:\n  terminal:\n    type: console\n").replace("sqlite://flowguard.db", url);
    spawn_app_with(&text, &[("hello", HELLO), ("parked", PARKED)]).await
}

/// Three runs of `hello` and one of `parked` (waiting for a human, with an open alert).
pub async fn seed(app: &TestApp) -> String {
    for _ in 0..3 {
        let (_, b) = app.post("/api/v1/flows/hello/runs", OPERATE, &json!({})).await;
        app.wait_run(b["run_id"].as_str().expect("run id")).await;
    }
    let (_, b) = app.post("/api/v1/flows/parked/runs", OPERATE, &json!({})).await;
    let parked = b["run_id"].as_str().expect("run id").to_owned();
    until(async || {
        let alerts = app.get("/api/v1/alerts", READ).await.1;
        let tasks = app.get("/api/v1/manual", READ).await.1;
        (alerts["alerts"].as_array().is_some_and(|a| !a.is_empty()) && tasks["tasks"].as_array().is_some_and(|t| !t.is_empty()))
            .then_some(())
    })
    .await;
    parked
}

/// Waits (polling) until `f` gives something.
pub async fn until<T>(f: impl AsyncFn() -> Option<T>) -> T {
    for _ in 0..400 {
        if let Some(v) = f().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the condition did not come true");
}

/// A client that keeps the session cookie and follows no redirect.
pub struct Client {
    pub http: reqwest::Client,
    pub base: String,
    pub cookie: Option<String>,
}

impl Client {
    pub fn new(base: &str) -> Client {
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
        Client { http, base: base.to_owned(), cookie: None }
    }

    fn keep(&mut self, r: &reqwest::Response) {
        for c in r.headers().get_all("set-cookie") {
            let c = c.to_str().unwrap_or("");
            if let Some(v) = c.strip_prefix("fg_session=") {
                self.cookie = Some(format!("fg_session={}", v.split(';').next().unwrap_or("")));
            }
        }
    }

    pub async fn get(&mut self, path: &str) -> (u16, String, reqwest::header::HeaderMap) {
        let mut req = self.http.get(format!("{}{path}", self.base));
        if let Some(c) = &self.cookie {
            req = req.header("cookie", c);
        }
        let r = req.send().await.expect("GET");
        self.keep(&r);
        let (code, headers) = (r.status().as_u16(), r.headers().clone());
        (code, r.text().await.unwrap_or_default(), headers)
    }

    /// Posts a form as a page of this origin would (`Origin` set to the server).
    pub async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> (u16, String, reqwest::header::HeaderMap) {
        self.post_from(path, form, Some(&self.base.clone())).await
    }

    pub async fn post_from(
        &mut self,
        path: &str,
        form: &[(&str, &str)],
        origin: Option<&str>,
    ) -> (u16, String, reqwest::header::HeaderMap) {
        let body: String = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(form).finish();
        let mut req = self.http.post(format!("{}{path}", self.base)).header("content-type", "application/x-www-form-urlencoded").body(body);
        if let Some(c) = &self.cookie {
            req = req.header("cookie", c);
        }
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        let r = req.send().await.expect("POST");
        self.keep(&r);
        let (code, headers) = (r.status().as_u16(), r.headers().clone());
        (code, r.text().await.unwrap_or_default(), headers)
    }

    pub async fn sign_in(&mut self, token: &str) -> (u16, reqwest::header::HeaderMap) {
        let (code, _, h) = self.post("/login", &[("token", token), ("next", "/alerts")]).await;
        (code, h)
    }
}

/// The CSRF token of the forms of a page.
pub fn csrf(html: &str) -> String {
    let at = html.find(r#"name="csrf" value=""#).expect("a form with a CSRF token");
    html[at + 19..].split('"').next().unwrap_or("").to_owned()
}

/// Runs the overview counts (final or waiting for a human; not refused, not canaries).
pub async fn counted_runs(store: &Store) -> usize {
    let runs = store.list_runs(&Default::default()).await.expect("runs");
    runs.iter().filter(|r| !["running", "queued", "refused"].contains(&r.status.as_str())).count()
}

fn text_of(html: &str, id: &str) -> String {
    let at = html.find(&format!(r#"id="{id}">"#)).unwrap_or_else(|| panic!("no #{id} in the page"));
    html[at + id.len() + 6..].split('<').next().unwrap_or("").trim().to_owned()
}

backends! {
    async fn pages_sign_in_and_forms(db: TestDb) {
        let app = spawn(db.url()).await;
        let parked = seed(&app).await;
        let store = db.open().await;
        let mut c = Client::new(&app.base);

        // Not signed in: every page leads to the sign-in page, which comes back after.
        let (code, _, h) = c.get("/flows/hello").await;
        assert_eq!((code, h["location"].to_str().unwrap()), (303, "/login?next=%2Fflows%2Fhello"));
        let (code, page, _) = c.get("/login").await;
        assert_eq!(code, 200);
        assert!(page.contains(r#"type="password" name="token""#), "{page}");
        // A wrong token, or one that may only ingest, does not sign in.
        assert_eq!(c.sign_in("wrong-token-0123456789abcdef").await.0, 401);
        assert_eq!(c.sign_in(INGEST).await.0, 401);
        assert!(c.cookie.is_none());

        // An operator signs in: an HttpOnly, SameSite session cookie, and back to the page asked for.
        let (code, h) = c.sign_in(OPERATE).await;
        assert_eq!((code, h["location"].to_str().unwrap()), (303, "/alerts"));
        let set = h["set-cookie"].to_str().unwrap();
        assert!(set.contains("HttpOnly") && set.contains("SameSite=Lax") && set.contains("Path=/"), "{set}");
        assert!(!set.contains(OPERATE), "the cookie does not carry the token: {set}");

        // Every page, in both languages; no token on any of them.
        for lang in ["en", "zh-CN"] {
            for path in ["/", "/flows/hello", &format!("/runs/{parked}"), "/alerts", "/reports", "/reports?kind=weekly", "/?window=7d"] {
                let sep = if path.contains('?') { '&' } else { '?' };
                let (code, page, h) = c.get(&format!("{path}{sep}lang={lang}")).await;
                assert_eq!(code, 200, "{path}: {page}");
                assert!(page.contains(&format!(r#"<html lang="{lang}">"#)), "{path}");
                for secret in [OPERATE, READ, INGEST] {
                    assert!(!page.contains(secret), "{path} shows a token");
                }
                assert!(h["content-security-policy"].to_str().unwrap().contains("default-src 'none'"));
            }
        }
        let (_, page, _) = c.get("/?lang=en").await;
        assert!(page.contains("Overview") && page.contains("Success rate"), "English words");
        let (_, page, _) = c.get("/?lang=zh-CN").await;
        assert!(page.contains("概览") && page.contains("成功率"), "Chinese words");
        // The figures are the database's.
        assert_eq!(text_of(&page, "fig-runs"), counted_runs(&store).await.to_string());
        assert_eq!(text_of(&page, "fig-waiting"), store.manual_tasks(true, 100).await.unwrap().len().to_string());
        let (_, page, _) = c.get(&format!("/runs/{parked}")).await;
        assert_eq!(text_of(&page, "run-status"), "waiting_manual");
        assert_eq!(text_of(&page, "run-attempts"), store.attempts(&parked).await.unwrap().len().to_string());
        assert!(page.contains(r#"id="retry""#), "an operator gets the actions");
        let (code, _, _) = c.get("/runs/no-such-run").await;
        assert_eq!(code, 404);

        // Forms: without the session's token, from another site, or with no session: refused.
        let token = csrf(&page);
        let (code, page, _) = c.post("/flows/hello/block", &[("note", "no token")]).await;
        assert_eq!(code, 403, "{page}");
        let (code, _, _) = c.post_from("/flows/hello/block", &[("csrf", &token), ("note", "forged")], Some("http://evil.example")).await;
        assert_eq!(code, 403);
        let mut stranger = Client::new(&app.base);
        assert_eq!(stranger.post("/flows/hello/block", &[("csrf", &token)]).await.0, 403);
        assert!(store.flow_block("hello").await.unwrap().is_none(), "nothing was blocked");
        // With it: done, as the API would, and recorded with who did it.
        let (code, _, h) = c.post("/flows/hello/block", &[("csrf", &token), ("note", "maintenance")]).await;
        assert_eq!((code, h["location"].to_str().unwrap()), (303, "/flows/hello?done=blocked"));
        let b = store.flow_block("hello").await.unwrap().expect("blocked");
        assert_eq!((b.blocked_by.as_str(), b.reason.as_deref()), ("operator", Some("maintenance")));
        assert_eq!(c.post("/flows/hello/unblock", &[("csrf", &token)]).await.0, 303);
        assert!(store.flow_block("hello").await.unwrap().is_none());
        // A silence made and ended from the alerts page.
        assert_eq!(c.post("/silences", &[("csrf", &token), ("matchers", "flow=hello"), ("duration", "1h")]).await.0, 303);
        let silences = store.silences(jiff::Timestamp::now().as_millisecond(), false).await.unwrap();
        assert_eq!(silences.len(), 1);
        assert_eq!(c.post("/silences", &[("csrf", &token), ("matchers", "flwo=hello"), ("duration", "1h")]).await.0, 400);
        assert_eq!(c.post(&format!("/silences/{}/expire", silences[0].id), &[("csrf", &token)]).await.0, 303);
        assert!(store.silences(jiff::Timestamp::now().as_millisecond(), false).await.unwrap().is_empty());

        // A read-only sign-in sees the pages, gets no action on them, and cannot act.
        let mut reader = Client::new(&app.base);
        assert_eq!(reader.sign_in(READ).await.0, 303);
        let (code, page, _) = reader.get(&format!("/runs/{parked}")).await;
        assert_eq!(code, 200);
        assert!(!page.contains(r#"id="retry""#) && page.contains(r#"class="badge""#), "no actions for a reader");
        let (_, alerts, _) = reader.get("/alerts").await;
        assert!(!alerts.contains(r#"class="ack""#));
        let token = csrf(&page);
        let (code, page, _) = reader.post(&format!("/runs/{parked}/manual"), &[("csrf", &token), ("action", "abort")]).await;
        assert_eq!(code, 403, "{page}");
        let alert = store.list_alerts(&Default::default()).await.unwrap().into_iter().next().expect("an alert");
        assert_eq!(reader.post(&format!("/alerts/{}/ack", alert.id), &[("csrf", &token)]).await.0, 403);
        assert_eq!(reader.post("/flows/hello/block", &[("csrf", &token)]).await.0, 403);
        assert_eq!(store.manual_task(&parked).await.unwrap().expect("task").status, "open");
        assert!(store.list_alerts(&Default::default()).await.unwrap()[0].acked_at.is_none());
        assert!(store.flow_block("hello").await.unwrap().is_none());

        // Signing out ends the session in this browser.
        assert_eq!(reader.post("/logout", &[("csrf", &token)]).await.0, 303);
        assert_eq!(reader.cookie.as_deref(), Some("fg_session="));
        assert_eq!(reader.get("/").await.0, 303);
        store.close().await;
        app.shutdown().await;
    }
}

/// With no tokens configured the dashboard is open, as the API is (on loopback only), and a
/// forged cross-site form is still refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tokens_the_dashboard_is_open_and_forms_still_need_their_token() {
    let text = "storage:\n  url: sqlite://flowguard.db\ntimezone: UTC\nserver:\n  listen: 127.0.0.1:0\n  watch_interval: 0s\n";
    let app = spawn_app_with(text, &[("hello", HELLO)]).await;
    let mut c = Client::new(&app.base);
    let (code, page, _) = c.get("/flows/hello").await;
    assert_eq!(code, 200, "{page}");
    assert!(c.cookie.is_some(), "a session is opened for the forms");
    assert!(!page.contains("/logout"), "nobody to sign out");
    assert_eq!(c.get("/login").await.0, 303);
    let token = csrf(&page);
    let (code, _, _) = c.post_from("/flows/hello/block", &[("csrf", &token)], Some("http://evil.example")).await;
    assert_eq!(code, 403);
    assert_eq!(c.post("/flows/hello/block", &[]).await.0, 403);
    let (code, _, h) = c.post("/flows/hello/trigger", &[("csrf", &token), ("inputs", r#"{"who": "dashboard"}"#)]).await;
    assert_eq!(code, 303);
    let run = h["location"].to_str().unwrap().trim_start_matches("/runs/").to_owned();
    let done = app.wait_run(&run).await;
    assert_eq!(done["attempts"][0]["output"], "hello dashboard", "{done}");
    assert_eq!(c.post("/flows/hello/trigger", &[("csrf", &token), ("inputs", "[1")]).await.0, 400);
    let (code, css, h) = c.get("/assets/app.css").await;
    assert_eq!((code, h["content-type"].to_str().unwrap()), (200, "text/css; charset=utf-8"));
    assert!(css.contains(".chart"));
    app.shutdown().await;
}

/// Alert messages link to the dashboard's run page.
#[test]
fn alert_links_point_at_the_run_page() {
    let parse = |yaml: &str| -> flowguard::server::config::ServerConfig { serde_saphyr::from_str(yaml).expect("server config") };
    assert_eq!(parse("public_url: https://fg.example.com/\n").dashboard_run_url().as_deref(), Some("https://fg.example.com/runs/{run_id}"));
    assert_eq!(parse("listen: 127.0.0.1:7878\n").dashboard_run_url().as_deref(), Some("http://127.0.0.1:7878/runs/{run_id}"));
    assert_eq!(parse("listen: 0.0.0.0:7878\n").dashboard_run_url(), None, "no address people can open");
}
