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
        flowguard::init_tls();
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

/// The pages in a real headless Chromium (Debian's `chromium` and `chromium-driver`), driven over
/// the W3C WebDriver protocol with plain JSON requests (reqwest is already a dependency; a
/// WebDriver crate would add a tree of its own for the dozen calls used here).
mod browser {
    use super::*;
    use base64::Engine as _;
    use serde_json::Value;

    const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

    pub struct Driver {
        http: reqwest::Client,
        url: String,
        _process: tokio::process::Child,
    }

    pub struct Session<'a> {
        d: &'a Driver,
        id: String,
        shots: std::path::PathBuf,
    }

    /// chromedriver on a free port, or None (with why) when Chromium is not installed.
    pub async fn driver() -> Result<Driver, String> {
        flowguard::init_tls();
        let bin = ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"].into_iter().find(|p| std::path::Path::new(p).exists());
        let (Some(bin), true) = (bin, std::path::Path::new("/usr/bin/chromium").exists()) else {
            return Err("chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)".into());
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map_err(|e| e.to_string())?.port();
        let process = tokio::process::Command::new(bin)
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start {bin}: {e}"))?;
        let d = Driver { http: reqwest::Client::new(), url: format!("http://127.0.0.1:{port}"), _process: process };
        until(async || {
            let r = d.http.get(format!("{}/status", d.url)).send().await.ok()?;
            let v: Value = r.json().await.ok()?;
            v["value"]["ready"].as_bool().filter(|r| *r)
        })
        .await;
        Ok(d)
    }

    impl Driver {
        async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
            let mut req = self.http.request(method, format!("{}{path}", self.url));
            if let Some(b) = body {
                req = req.json(&b);
            }
            let r = req.send().await.expect("WebDriver request");
            let v: Value = r.json().await.expect("WebDriver answer");
            assert!(v["value"].get("error").is_none(), "WebDriver {path}: {v}");
            v["value"].clone()
        }

        pub async fn session(&self) -> Session<'_> {
            let caps = json!({"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": "/usr/bin/chromium",
                    "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1400"]
                }
            }}});
            let v = self.call(reqwest::Method::POST, "/session", Some(caps)).await;
            let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/target").into());
            let shots = std::path::Path::new(&target).join("dashboard-screenshots");
            std::fs::create_dir_all(&shots).expect("screenshot dir");
            Session { d: self, id: v["sessionId"].as_str().expect("session id").to_owned(), shots }
        }
    }

    impl Session<'_> {
        async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
            self.d.call(method, &format!("/session/{}{path}", self.id), body).await
        }

        pub async fn open(&self, url: &str) {
            self.call(reqwest::Method::POST, "/url", Some(json!({"url": url}))).await;
        }

        pub async fn url(&self) -> String {
            self.call(reqwest::Method::GET, "/url", None).await.as_str().unwrap_or("").to_owned()
        }

        /// Waits until the page shown is `url` (a click's navigation may still be going).
        pub async fn wait_for(&self, url: &str) {
            until(async || {
                let ready = self.script("return document.readyState").await;
                (self.url().await == url && ready == "complete").then_some(())
            })
            .await;
        }

        pub async fn all(&self, css: &str) -> Vec<String> {
            let v = self.call(reqwest::Method::POST, "/elements", Some(json!({"using": "css selector", "value": css}))).await;
            v.as_array().map(|a| a.iter().filter_map(|e| e[ELEMENT].as_str().map(str::to_owned)).collect()).unwrap_or_default()
        }

        pub async fn find(&self, css: &str) -> String {
            self.all(css).await.into_iter().next().unwrap_or_else(|| panic!("no `{css}` on the page"))
        }

        pub async fn text(&self, css: &str) -> String {
            let e = self.find(css).await;
            self.call(reqwest::Method::GET, &format!("/element/{e}/text"), None).await.as_str().unwrap_or("").trim().to_owned()
        }

        pub async fn click(&self, css: &str) {
            let e = self.find(css).await;
            self.call(reqwest::Method::POST, &format!("/element/{e}/click"), Some(json!({}))).await;
        }

        pub async fn type_in(&self, css: &str, text: &str) {
            let e = self.find(css).await;
            self.call(reqwest::Method::POST, &format!("/element/{e}/value"), Some(json!({"text": text}))).await;
        }

        pub async fn script(&self, script: &str) -> Value {
            self.call(reqwest::Method::POST, "/execute/sync", Some(json!({"script": script, "args": []}))).await
        }

        pub async fn size(&self, width: u32, height: u32) {
            self.call(reqwest::Method::POST, "/window/rect", Some(json!({"width": width, "height": height}))).await;
        }

        pub async fn forget_cookies(&self) {
            self.call(reqwest::Method::DELETE, "/cookie", None).await;
        }

        /// Saves a screenshot of the page as `<target dir>/dashboard-screenshots/<name>.png`.
        pub async fn shot(&self, name: &str) {
            let v = self.call(reqwest::Method::GET, "/screenshot", None).await;
            let png = base64::engine::general_purpose::STANDARD.decode(v.as_str().unwrap_or("")).expect("a PNG");
            std::fs::write(self.shots.join(format!("{name}.png")), png).expect("save the screenshot");
        }

        pub async fn close(self) {
            self.call(reqwest::Method::DELETE, "", None).await;
        }
    }
}

/// Every page in both languages in Chromium, its figures against the database; a retry and an
/// acknowledgement done through the pages land in the database; a read-only sign-in gets no
/// control and its forged request is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_browser() {
    let d = match browser::driver().await {
        Ok(d) => d,
        Err(why) if std::env::var("CI").as_deref() == Ok("true") => panic!("{why}"),
        Err(why) => {
            eprintln!("skipped: {why}");
            return;
        }
    };
    let db = TestDb::create(crate::support::db::Kind::Sqlite).await.expect("a SQLite database");
    let app = spawn(db.url()).await;
    let parked = seed(&app).await;
    let store = db.open().await;
    let b = d.session().await;
    let base = app.base.clone();

    // Signing in through the form comes back to the page asked for.
    b.open(&format!("{base}/alerts")).await;
    assert!(b.url().await.contains("/login?next=%2Falerts"), "{}", b.url().await);
    b.shot("login").await;
    b.type_in("input[name=token]", OPERATE).await;
    b.click("#sign-in").await;
    b.wait_for(&format!("{base}/alerts")).await;

    let runs = counted_runs(&store).await.to_string();
    let greet = store.attempts_between(Some("hello"), 0, i64::MAX).await.unwrap().iter().filter(|a| a.node_id == "greet").count();
    let attempts = store.attempts(&parked).await.unwrap().len().to_string();
    let firing = store.list_alerts(&Default::default()).await.unwrap().iter().filter(|a| a.status == "firing").count();
    for lang in ["zh-CN", "en"] {
        b.open(&format!("{base}/?lang={lang}")).await;
        assert_eq!(b.script("return document.documentElement.lang").await, lang);
        assert_eq!(b.text("#fig-runs").await, runs, "overview runs ({lang})");
        assert_eq!(b.all("#manual-queue li").await.len(), store.manual_tasks(true, 100).await.unwrap().len());
        assert_eq!(b.all("svg.chart").await.len(), 2, "the runs and error-kind charts");
        b.shot(&format!("overview-{lang}")).await;

        b.open(&format!("{base}/flows/hello")).await;
        assert_eq!(b.text("#nodes tr[data-node=greet] .attempts").await, greet.to_string(), "flow page ({lang})");
        assert_eq!(b.all("#runs tr").await.len(), 1 + 3, "a header and the three runs");
        b.shot(&format!("flow-{lang}")).await;

        b.open(&format!("{base}/runs/{parked}")).await;
        assert_eq!(b.text("#run-status").await, "waiting_manual");
        assert_eq!(b.text("#run-attempts").await, attempts);
        assert_eq!(b.all("#attempts tr.attempt").await.len().to_string(), attempts);
        b.shot(&format!("run-{lang}")).await;

        b.open(&format!("{base}/alerts")).await;
        assert_eq!(b.text("#count-firing").await, firing.to_string(), "alerts page ({lang})");
        b.shot(&format!("alerts-{lang}")).await;

        b.open(&format!("{base}/reports?since=7d")).await;
        assert_eq!(b.text("#stats tr[data-flow='*'] .runs").await, runs, "reports page ({lang})");
        assert!(!b.text("#report").await.is_empty());
        b.shot(&format!("reports-{lang}")).await;
    }
    b.size(390, 844).await;
    b.open(&format!("{base}/")).await;
    let overflow = b.script("return document.documentElement.scrollWidth > window.innerWidth + 1").await;
    assert_eq!(overflow, false, "the overview fits a phone's width");
    b.shot("overview-phone").await;
    b.size(1280, 1400).await;

    // Acknowledge the alert from its page.
    let alert = store.list_alerts(&Default::default()).await.unwrap().into_iter().find(|a| a.status == "firing").expect("a firing alert");
    b.open(&format!("{base}/alerts")).await;
    b.click(&format!("tr[data-alert='{}'] button.ack", alert.id)).await;
    b.wait_for(&format!("{base}/alerts?done=acked")).await;
    assert!(!b.text("#done").await.is_empty());
    let acked = store.find_alerts(&alert.id).await.unwrap().remove(0);
    assert_eq!((acked.acked_by.as_deref(), acked.acked_at.is_some()), (Some("operator"), true));

    // Retry the parked run from node `a`, with a reason; the action is recorded, the run goes on
    // (and parks again: its input still fails the check).
    let task = store.manual_task(&parked).await.unwrap().expect("a task");
    b.open(&format!("{base}/runs/{parked}")).await;
    b.script("document.querySelector('#form-retry select[name=from]').value = 'a'").await;
    b.type_in("#form-retry input[name=note]", "upstream fixed").await;
    b.click("#retry").await;
    let closed = until(async || store.manual_actions(&task.id).await.ok().and_then(|a| a.into_iter().next())).await;
    assert_eq!((closed.action.as_str(), closed.actor.as_str(), closed.note.as_deref()), ("retry", "operator", Some("upstream fixed")));
    until(async || store.manual_task(&task.id).await.ok().flatten().filter(|t| t.status == "retried")).await;
    let reparked = until(async || store.manual_task(&parked).await.ok().flatten().filter(|t| t.id != task.id)).await;
    assert_eq!(reparked.status, "open");
    b.open(&format!("{base}/runs/{parked}")).await;
    assert!(b.all("#manual-actions li").await.is_empty(), "the new task has no action yet");
    assert!(b.all("#attempts tr.attempt").await.len() > attempts.parse::<usize>().unwrap(), "the retry's attempts show");

    // A read-only sign-in: the same pages, no control, and a request made by hand is refused.
    b.forget_cookies().await;
    b.open(&format!("{base}/login")).await;
    b.type_in("input[name=token]", READ).await;
    b.click("#sign-in").await;
    b.wait_for(&format!("{base}/")).await;
    b.open(&format!("{base}/runs/{parked}")).await;
    assert!(b.all("#retry").await.is_empty() && b.all("form[action$='/manual']").await.is_empty());
    b.shot("run-read-only").await;
    let status = b
        .script(&format!(
            "const csrf = document.querySelector('input[name=csrf]').value; \
             return fetch('/runs/{parked}/manual', {{method: 'POST', headers: {{'content-type': 'application/x-www-form-urlencoded'}}, \
             body: 'action=abort&csrf=' + csrf}}).then(r => r.status)"
        ))
        .await;
    assert_eq!(status, 403);
    assert_eq!(store.manual_task(&parked).await.unwrap().unwrap().status, "open", "nothing changed");
    b.open(&format!("{base}/alerts")).await;
    assert!(b.all("button.ack").await.is_empty() && b.all("#form-silence").await.is_empty());
    b.close().await;
    store.close().await;
    app.shutdown().await;
}

/// The overview shows each model's breaker and each exporter's lag: a primary that always fails
/// is `open` after one run, and an Elasticsearch that cannot be reached has the run's records
/// still to send.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overview_shows_breakers_and_exporter_lag() {
    let text = "storage:\n  url: sqlite://flowguard.db\ntimezone: UTC\nserver:\n  listen: 127.0.0.1:0\n  watch_interval: 0s\n\
defaults:\n  breaker: { min_calls: 2, failure_rate: 50, window: 10m, cooldown: 10m }\n\
models:\n  primary:\n    provider: simulated\n    simulate: { latency: 5ms, faults: { server_error: 1.0 } }\n    fallback: [backup]\n  backup:\n    provider: simulated\n    simulate: { latency: 5ms }\n\
exporters:\n  elasticsearch:\n    url: http://127.0.0.1:1\n";
    let flow = "name: script\nnodes:\n  - id: write\n    kind: llm\n    model: primary\n    prompt: 写一个脚本\n    retry: { policy: fixed, max_attempts: 3, delay: 10ms }\n";
    let app = spawn_app_with(text, &[("script", flow)]).await;
    let (_, r) = app.post("/api/v1/flows/script/runs", OPERATE, &json!({})).await;
    app.wait_run(r["run_id"].as_str().expect("run id")).await;
    let mut c = Client::new(&app.base);
    let (code, page, _) = c.get("/?lang=en").await;
    assert_eq!(code, 200, "{page}");
    let row = |attr: &str| page.split(attr).nth(1).and_then(|r| r.split("</tr>").next()).unwrap_or_default().to_owned();
    assert!(row("data-model=\"primary\"").contains("<td class=\"state\">open</td>"), "{page}");
    assert!(row("data-model=\"backup\"").contains("<td class=\"state\">closed</td>"), "{page}");
    let lag: i64 = row("data-sink=\"elasticsearch\"")
        .split("class=\"lag\">")
        .nth(1)
        .and_then(|l| l.split('<').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(lag >= 4, "the run's attempts and its end are still to export: {page}");
    app.shutdown().await;
}
