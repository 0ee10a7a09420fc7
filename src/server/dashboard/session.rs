//! Sign-in, sessions and CSRF. A session is a cookie `name.expiry.nonce.signature`, signed (HMAC-
//! SHA-256) with a key derived from the API token it was opened with: any process serving the
//! same config accepts it, and removing the token from the config ends its sessions. Its scope is
//! read from the config at each request. A form's CSRF token is the same key's MAC of the
//! session's nonce, so it cannot be made without the session. With no tokens configured (the API
//! is open, on loopback) the key is one made at start and the session is `anonymous`.

use super::{Failure, Shared, i18n, message, param, query, render};
use crate::server::config::Scope;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use minijinja::context;
use std::sync::{Arc, OnceLock};

const COOKIE: &str = "fg_session";
const LANG_COOKIE: &str = "fg_lang";
/// How long a session lasts.
const SESSION_MS: i64 = 12 * 3600 * 1000;

/// Who looks at a page, in which language, and what they may do.
pub struct Viewer {
    pub who: String,
    /// Signed in with a token (false when the dashboard is open).
    pub signed_in: bool,
    pub operate: bool,
    pub csrf: String,
    pub lang: String,
    /// The page's path and query (sign-in comes back to it).
    pub path: String,
    pub set_cookies: Vec<String>,
}

type Sha = Hmac<sha2::Sha256>;

/// The key of a token's sessions, and whether it may operate; None for no such token (or one
/// that cannot read).
fn key_of(s: &Shared, name: &str) -> Option<([u8; 32], bool)> {
    let l = s.loaded();
    let tokens = &l.config.server.tokens;
    if tokens.is_empty() {
        return (name == "anonymous").then(|| (*open_key(), true));
    }
    let t = tokens.iter().find(|t| t.name == name)?;
    let operate = t.scopes.contains(&Scope::Operate);
    if !operate && !t.scopes.contains(&Scope::Read) {
        return None;
    }
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(b"flowguard dashboard session\0");
    h.update(t.token.trim().as_bytes());
    Some((h.finalize().into(), operate))
}

/// The key of the open dashboard's sessions: random, made once per process.
fn open_key() -> &'static [u8; 32] {
    static KEY: OnceLock<[u8; 32]> = OnceLock::new();
    KEY.get_or_init(random)
}

/// 256 bits from the system's random source (each UUIDv7 carries 74 random bits).
fn random() -> [u8; 32] {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for _ in 0..4 {
        h.update(uuid::Uuid::now_v7().as_bytes());
    }
    h.finalize().into()
}

fn mac(key: &[u8; 32], parts: &[&str]) -> Sha {
    let mut m = <Sha as Mac>::new_from_slice(key).expect("any key length");
    for p in parts {
        m.update(p.as_bytes());
        m.update(b"\0");
    }
    m
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

fn unb64(s: &str) -> Option<String> {
    String::from_utf8(base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s).ok()?).ok()
}

/// A new session cookie's value for a token name.
fn issue(s: &Shared, name: &str) -> Option<String> {
    let (key, _) = key_of(s, name)?;
    let exp = (s.clock.now_ms() + SESSION_MS).to_string();
    let nonce = hex(&random()[..16]);
    let n = b64(name);
    let sig = hex(&mac(&key, &["session", &n, &exp, &nonce]).finalize().into_bytes());
    Some(format!("{n}.{exp}.{nonce}.{sig}"))
}

/// (name, nonce, may operate, key) of a valid session cookie.
fn verify(s: &Shared, value: &str) -> Option<(String, String, bool, [u8; 32])> {
    let mut parts = value.split('.');
    let (n, exp, nonce, sig) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || exp.parse::<i64>().ok()? < s.clock.now_ms() {
        return None;
    }
    let name = unb64(n)?;
    let (key, operate) = key_of(s, &name)?;
    mac(&key, &["session", n, exp, nonce]).verify_slice(&unhex(sig)?).ok()?;
    Some((name, nonce.to_owned(), operate, key))
}

fn csrf_of(key: &[u8; 32], nonce: &str) -> String {
    hex(&mac(key, &["csrf", nonce]).finalize().into_bytes())
}

fn cookie(h: &HeaderMap, name: &str) -> Option<String> {
    h.get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

/// `Secure` when the request came over HTTPS through a proxy.
fn secure(h: &HeaderMap) -> &'static str {
    let https = h.get("x-forwarded-proto").and_then(|v| v.to_str().ok()).is_some_and(|v| v.eq_ignore_ascii_case("https"));
    if https { "; Secure" } else { "" }
}

fn session_cookie(h: &HeaderMap, value: &str, max_age_s: i64) -> String {
    format!("{COOKIE}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age_s}{}", secure(h))
}

/// The viewer's language: `?lang=` (remembered in a cookie), else the cookie, else the config's.
fn language(s: &Shared, h: &HeaderMap, uri: &Uri, set: &mut Vec<String>) -> String {
    let q = query(uri);
    if let Some(l) = param(&q, "lang").filter(|l| i18n::LANGS.contains(&l.as_str())) {
        set.push(format!("{LANG_COOKIE}={l}; Path=/; SameSite=Lax; Max-Age=31536000{}", secure(h)));
        return l;
    }
    if let Some(l) = cookie(h, LANG_COOKIE).filter(|l| i18n::LANGS.contains(&l.as_str())) {
        return l;
    }
    let l = s.loaded().config.locale.clone();
    if i18n::LANGS.contains(&l.as_str()) { l } else { "zh-CN".into() }
}

fn path_of(uri: &Uri) -> String {
    uri.path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_else(|| "/".into())
}

fn open(s: &Shared) -> bool {
    s.loaded().config.server.tokens.is_empty()
}

impl Viewer {
    /// Someone not signed in (the sign-in page).
    fn nobody(s: &Shared, h: &HeaderMap, uri: &Uri) -> Viewer {
        let mut set = Vec::new();
        let lang = language(s, h, uri, &mut set);
        Viewer { who: String::new(), signed_in: false, operate: false, csrf: String::new(), lang, path: path_of(uri), set_cookies: set }
    }

    /// The viewer of a page: a valid session with the read scope, or the sign-in page. With no
    /// tokens configured, everyone on loopback (a session is opened on the first page).
    pub fn read(s: &Shared, h: &HeaderMap, uri: &Uri) -> Result<Viewer, Failure> {
        let mut v = Viewer::nobody(s, h, uri);
        let found = cookie(h, COOKIE).and_then(|c| verify(s, &c));
        let (name, nonce, operate, key) = match found {
            Some(f) => f,
            None if open(s) => {
                let value = issue(s, "anonymous").ok_or_else(|| Failure::SignIn(v.path.clone()))?;
                v.set_cookies.push(session_cookie(h, &value, SESSION_MS / 1000));
                verify(s, &value).ok_or_else(|| Failure::SignIn(v.path.clone()))?
            }
            None => return Err(Failure::SignIn(v.path)),
        };
        v.signed_in = !open(s);
        v.csrf = csrf_of(&key, &nonce);
        v.who = name;
        v.operate = operate;
        Ok(v)
    }

    /// The viewer of a form that changes something: from this origin, in a valid session, with
    /// the session's CSRF token, and allowed to operate. Anything else is refused (403) and
    /// changes nothing.
    pub fn act(s: &Shared, h: &HeaderMap, uri: &Uri, form: &Form) -> Result<Viewer, Failure> {
        let nobody = Viewer::nobody(s, h, uri);
        let (name, nonce, operate, key) =
            checked_form(s, h, form).map_err(|key| Failure::Page(message(s, &nobody, StatusCode::FORBIDDEN, key, "")))?;
        let v = Viewer { who: name, signed_in: !open(s), operate, csrf: csrf_of(&key, &nonce), ..nobody };
        if !operate {
            return Err(Failure::Page(message(s, &v, StatusCode::FORBIDDEN, "read_only", "")));
        }
        Ok(v)
    }
}

/// A form that changes something, with its viewer checked by [`Viewer::act`]: the extractor every
/// action handler takes last (it reads the body).
pub(crate) struct Action {
    pub v: Viewer,
    pub form: Form,
}

impl axum::extract::FromRequest<Arc<Shared>> for Action {
    type Rejection = Failure;

    async fn from_request(req: axum::extract::Request, s: &Arc<Shared>) -> Result<Action, Failure> {
        let (parts, body) = req.into_parts();
        let req = axum::extract::Request::from_parts(parts.clone(), body);
        let body = <Bytes as axum::extract::FromRequest<_>>::from_request(req, s).await.map_err(|e| Failure::Page(e.into_response()))?;
        let form = Form::parse(&body);
        let v = Viewer::act(s, &parts.headers, &parts.uri, &form)?;
        Ok(Action { v, form })
    }
}

/// The session of a form from this origin that carries the session's CSRF token; else the key of
/// the message that says why not.
fn checked_form(s: &Shared, h: &HeaderMap, form: &Form) -> Result<(String, String, bool, [u8; 32]), &'static str> {
    if !same_origin(h) {
        return Err("forged");
    }
    let found = cookie(h, COOKIE).and_then(|c| verify(s, &c)).ok_or("session_expired")?;
    let given = form.get("csrf").unwrap_or_default();
    if !subtle_eq::eq(given.as_bytes(), csrf_of(&found.3, &found.1).as_bytes()) {
        return Err("forged");
    }
    Ok(found)
}

mod subtle_eq {
    /// Compares without stopping at the first difference.
    pub fn eq(a: &[u8], b: &[u8]) -> bool {
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

/// A cross-site request is refused: its `Origin` (or `Referer`) must name the host it was sent to,
/// and a browser's `Sec-Fetch-Site` must not say `cross-site` or `same-site`.
fn same_origin(h: &HeaderMap) -> bool {
    let get = |n: &str| h.get(n).and_then(|v| v.to_str().ok());
    if let Some(site) = get("sec-fetch-site")
        && !matches!(site, "same-origin" | "none")
    {
        return false;
    }
    let Some(host) = get("host") else { return false };
    let from = get("origin").filter(|o| *o != "null").or_else(|| get("referer"));
    match from.and_then(|o| url::Url::parse(o).ok()) {
        Some(u) => {
            let port = u.port().map(|p| format!(":{p}")).unwrap_or_default();
            format!("{}{port}", u.host_str().unwrap_or("")).eq_ignore_ascii_case(host)
        }
        // Neither header: not a browser's cross-site form (those send Origin); the CSRF token decides.
        None => get("origin") != Some("null"),
    }
}

/// A submitted form (`application/x-www-form-urlencoded`).
pub struct Form(Vec<(String, String)>);

impl Form {
    pub fn parse(body: &Bytes) -> Form {
        Form(url::form_urlencoded::parse(body).into_owned().collect())
    }

    /// A field, trimmed; None when absent or empty.
    pub fn get(&self, key: &str) -> Option<String> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.trim().to_owned()).filter(|v| !v.is_empty())
    }
}

/// A path to go back to after sign-in: on this site only.
fn local_path(next: Option<String>) -> String {
    next.filter(|n| n.starts_with('/') && !n.starts_with("//") && !n.contains('\\')).unwrap_or_else(|| "/".into())
}

pub async fn login_page(State(s): State<Arc<Shared>>, h: HeaderMap, uri: Uri) -> Response {
    let v = Viewer::nobody(&s, &h, &uri);
    if open(&s) {
        return Redirect::to("/").into_response();
    }
    let next = local_path(param(&query(&uri), "next"));
    render(&s, &v, "login.html", context! { next => next, error => false })
}

/// Signs in with an API token: checked as the API checks a bearer token.
pub async fn login(State(s): State<Arc<Shared>>, h: HeaderMap, uri: Uri, body: Bytes) -> Response {
    let v = Viewer::nobody(&s, &h, &uri);
    if !same_origin(&h) {
        return message(&s, &v, StatusCode::FORBIDDEN, "forged", "");
    }
    let form = Form::parse(&body);
    let next = local_path(form.get("next"));
    let token = form.get("token").unwrap_or_default();
    let name = match s.authorize(Some(&format!("Bearer {token}")), Scope::Read) {
        Ok(name) => name,
        Err(crate::server::api::ApiError::RateLimited(_)) => {
            return super::render_status(
                &s,
                &v,
                StatusCode::TOO_MANY_REQUESTS,
                "login.html",
                context! { next => next, error => "rate_limited" },
            );
        }
        Err(_) => {
            return super::render_status(&s, &v, StatusCode::UNAUTHORIZED, "login.html", context! { next => next, error => "bad_token" });
        }
    };
    let Some(value) = issue(&s, &name) else {
        return super::render_status(&s, &v, StatusCode::UNAUTHORIZED, "login.html", context! { next => next, error => "bad_token" });
    };
    tracing::info!(token = %name, "signed in to the dashboard");
    let mut r = Redirect::to(&next).into_response();
    if let Ok(c) = session_cookie(&h, &value, SESSION_MS / 1000).parse() {
        r.headers_mut().append(header::SET_COOKIE, c);
    }
    r
}

pub async fn logout(State(s): State<Arc<Shared>>, h: HeaderMap, uri: Uri, body: Bytes) -> Response {
    // Signing out needs the session's form token too (a forged form could otherwise sign one out).
    if let Err(key) = checked_form(&s, &h, &Form::parse(&body)) {
        return message(&s, &Viewer::nobody(&s, &h, &uri), StatusCode::FORBIDDEN, key, "");
    }
    let mut r = Redirect::to(if open(&s) { "/" } else { "/login" }).into_response();
    if let Ok(c) = session_cookie(&h, "", 0).parse() {
        r.headers_mut().append(header::SET_COOKIE, c);
    }
    r
}
