//! `flowguard relay`: a small local buffer between a platform (n8n, a Coze or Dify HTTP node) and
//! the flowguard server. It accepts `POST /api/v1/events` like the server does, keeps each batch
//! in a file on disk (written and synced before it answers), and forwards the files in order when
//! the server answers. A server that is down or restarting loses nothing and fails no flow.
//!
//! Forwarding is at least once; events carry ids, so a batch sent twice is answered `duplicate`
//! the second time. A batch the server refuses (4xx other than 408/429: a bad token, a body it
//! cannot read) is moved to `rejected/` with the server's answer rather than retried forever.

use anyhow::Context;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::Notify;

/// Largest batch accepted (the server's default `server.max_body_bytes`).
const MAX_BODY: usize = 4 * 1024 * 1024;

pub struct Relay {
    /// Where batches wait (`*.json`) and where refused ones go (`rejected/`).
    dir: PathBuf,
    /// The server's base URL, e.g. `http://flowguard.internal:7878`.
    to: String,
    /// Sent to the server, and asked of local senders when set.
    token: Option<String>,
    http: reqwest::Client,
    seq: AtomicU64,
    wake: Notify,
}

/// What one forwarding round did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Forwarded {
    pub sent: usize,
    pub rejected: usize,
    /// Batches still waiting (the server is away).
    pub waiting: usize,
}

impl Relay {
    pub fn new(dir: &Path, to: &str, token: Option<String>) -> anyhow::Result<Arc<Relay>> {
        crate::init_tls();
        std::fs::create_dir_all(dir.join("rejected")).with_context(|| format!("cannot create the relay directory {}", dir.display()))?;
        let http = reqwest::Client::builder().connect_timeout(Duration::from_secs(5)).timeout(Duration::from_secs(30)).build()?;
        Ok(Arc::new(Relay {
            dir: dir.to_path_buf(),
            to: to.trim_end_matches('/').to_owned(),
            token: token.filter(|t| !t.is_empty()),
            http,
            seq: AtomicU64::new(0),
            wake: Notify::new(),
        }))
    }

    /// The local routes: `POST /api/v1/events` (answered 202 once the batch is on disk) and
    /// `GET /healthz` (how many batches wait).
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/api/v1/events", post(accept))
            .route("/healthz", get(health))
            .layer(DefaultBodyLimit::max(MAX_BODY))
            .with_state(self.clone())
    }

    /// Keeps a batch: written to a temporary file, synced, then renamed into place, so a crash
    /// leaves either the whole batch or nothing.
    pub fn keep(&self, body: &[u8]) -> anyhow::Result<PathBuf> {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
        let name = format!("{now:024}-{:06}-{}.json", self.seq.fetch_add(1, Ordering::Relaxed), std::process::id());
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let path = self.dir.join(&name);
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(body)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &path)?;
        if let Ok(d) = std::fs::File::open(&self.dir) {
            let _ = d.sync_all();
        }
        self.wake.notify_one();
        Ok(path)
    }

    /// Batches waiting, oldest first.
    pub fn pending(&self) -> anyhow::Result<Vec<PathBuf>> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json") && !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')))
            .collect();
        files.sort();
        Ok(files)
    }

    /// One round: sends the waiting batches in order until the server is away.
    pub async fn forward_once(&self) -> anyhow::Result<Forwarded> {
        let mut done = Forwarded::default();
        let files = self.pending()?;
        for (i, path) in files.iter().enumerate() {
            let body = std::fs::read(path)?;
            let mut req = self.http.post(format!("{}/api/v1/events", self.to)).header(header::CONTENT_TYPE, "application/json").body(body);
            if let Some(t) = &self.token {
                req = req.bearer_auth(t);
            }
            let answer = match req.send().await {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e.without_url(), "the flowguard server is away; batches wait on disk");
                    done.waiting = files.len() - i;
                    return Ok(done);
                }
            };
            let status = answer.status().as_u16();
            match status {
                200..=299 => {
                    std::fs::remove_file(path)?;
                    done.sent += 1;
                }
                408 | 429 | 500..=599 => {
                    tracing::warn!(status, "the flowguard server cannot take events now; batches wait on disk");
                    done.waiting = files.len() - i;
                    return Ok(done);
                }
                _ => {
                    let why = answer.text().await.unwrap_or_default();
                    let name = path.file_name().map(|n| n.to_owned()).unwrap_or_default();
                    let to = self.dir.join("rejected").join(&name);
                    std::fs::rename(path, &to)?;
                    std::fs::write(to.with_extension("answer.txt"), format!("HTTP {status}\n{why}\n"))?;
                    tracing::error!(status, file = %to.display(), "the flowguard server refused a batch; kept in rejected/");
                    done.rejected += 1;
                }
            }
        }
        Ok(done)
    }

    /// Forwards until `stop` resolves: at once when a batch arrives, else every few seconds
    /// (backing off to a minute while the server is away).
    pub async fn forward_loop(self: Arc<Self>, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        let mut wait = Duration::from_secs(1);
        loop {
            match self.forward_once().await {
                Ok(f) if f.waiting > 0 => wait = (wait * 2).min(Duration::from_secs(60)),
                Ok(_) => wait = Duration::from_secs(1),
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "the relay cannot read its directory");
                    wait = Duration::from_secs(10);
                }
            }
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
                _ = &mut stop => return,
            }
        }
    }
}

async fn accept(State(r): State<Arc<Relay>>, h: HeaderMap, body: Bytes) -> Response {
    if let Some(t) = &r.token {
        let given = h.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer ")).map(str::trim);
        if given != Some(t.as_str()) {
            return (StatusCode::UNAUTHORIZED, axum::Json(json!({"error": "a bearer token is required"}))).into_response();
        }
    }
    // Only what the server can read is kept: a sender learns of a broken body now, not never.
    if let Err(e) = serde_json::from_slice::<serde_json::Value>(&body) {
        let msg = format!("invalid JSON at line {}, column {}: {e}", e.line(), e.column());
        return (StatusCode::BAD_REQUEST, axum::Json(json!({"error": msg}))).into_response();
    }
    match r.keep(&body) {
        Ok(_) => (StatusCode::ACCEPTED, axum::Json(json!({"queued": true}))).into_response(),
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "the relay cannot keep a batch");
            (StatusCode::SERVICE_UNAVAILABLE, axum::Json(json!({"error": "the relay cannot write to its directory"}))).into_response()
        }
    }
}

async fn health(State(r): State<Arc<Relay>>) -> Response {
    match r.pending() {
        Ok(p) => axum::Json(json!({"status": "ok", "waiting": p.len(), "to": r.to})).into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, axum::Json(json!({"status": "error", "error": e.to_string()}))).into_response(),
    }
}
