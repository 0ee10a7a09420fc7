//! Access tokens for `http` nodes: an OAuth2 client-credentials provider that gets a token from a
//! token endpoint, keeps it until shortly before it expires, and gets a fresh one when the target
//! answers that it expired (the seed's "token expired → refresh the token and retry").
//!
//! ```yaml
//! auth:
//!   platform:
//!     token_url: https://open.example.com/oauth/token
//!     client_id: ${PLATFORM_CLIENT_ID}
//!     client_secret: ${PLATFORM_CLIENT_SECRET}
//! endpoints:
//!   publisher: { base_url: https://open.example.com, auth: platform }
//! ```
//!
//! The request is `POST token_url` with a form body `grant_type=client_credentials&client_id=…&
//! client_secret=…[&scope=…]`; the answer is JSON `{"access_token": "…", "expires_in": 7200}`.

use crate::classify::{classify_status, classify_transport};
use crate::clock::SharedClock;
use crate::nodes::NodeError;
use crate::vocab::ErrorKind;
use serde_json::Value as Json;
use tokio::sync::Mutex;

pub mod config;
pub use config::AuthConfig;

#[derive(Debug)]
pub struct TokenProvider {
    cfg: AuthConfig,
    /// (token, expires at in epoch ms)
    cache: Mutex<Option<(String, i64)>>,
}

impl TokenProvider {
    pub fn new(cfg: AuthConfig) -> Self {
        TokenProvider { cfg, cache: Mutex::new(None) }
    }

    /// A valid token; `fresh` forces a new one (the target said the old one expired).
    pub async fn token(&self, http: &reqwest::Client, clock: &SharedClock, fresh: bool) -> Result<String, NodeError> {
        let mut cache = self.cache.lock().await;
        let now = clock.now_ms();
        if !fresh && let Some((t, _)) = cache.as_ref().filter(|(_, until)| *until > now) {
            return Ok(t.clone());
        }
        let form = {
            let mut form = url::form_urlencoded::Serializer::new(String::new());
            form.append_pair("grant_type", "client_credentials")
                .append_pair("client_id", &self.cfg.client_id)
                .append_pair("client_secret", &self.cfg.client_secret);
            if let Some(s) = &self.cfg.scope {
                form.append_pair("scope", s);
            }
            form.finish()
        };
        let resp =
            http.post(&self.cfg.token_url).header("content-type", "application/x-www-form-urlencoded").body(form).send().await.map_err(
                |e| {
                    let (kind, msg) = classify_transport(&e);
                    NodeError::new(kind, format!("token endpoint: {msg}"))
                },
            )?;
        let status = resp.status().as_u16();
        let body = crate::net::read_limited(resp, 1024 * 1024)
            .await
            .map_err(|m| NodeError::new(ErrorKind::AuthExpired, format!("token endpoint: {m}")))?;
        if !(200..300).contains(&status) {
            let (kind, msg) = classify_status(status, &body, false);
            // A token endpoint that refuses our credentials means the flow cannot authenticate.
            let kind = if matches!(kind, ErrorKind::Upstream4xx) { ErrorKind::AuthExpired } else { kind };
            return Err(NodeError::new(kind, format!("token endpoint: {msg}")));
        }
        let v: Json = serde_json::from_slice(&body)
            .map_err(|e| NodeError::new(ErrorKind::AuthExpired, format!("token endpoint answered without JSON: {e}")))?;
        let token = v
            .get("access_token")
            .and_then(Json::as_str)
            .ok_or_else(|| NodeError::new(ErrorKind::AuthExpired, "token endpoint answered without access_token"))?;
        let ttl_ms = v.get("expires_in").and_then(lifetime_ms).unwrap_or(3_600_000);
        // Renew a minute early (or at half the lifetime for short-lived tokens).
        let margin = (ttl_ms / 2).min(60_000);
        *cache = Some((token.to_owned(), now.saturating_add(ttl_ms - margin)));
        Ok(token.to_owned())
    }
}

/// `expires_in` (seconds) as services send it: a whole number, a float (`3.0`) or numeric text
/// (`"7200"`); in milliseconds, saturating. None for what is not a number ≥ 0.
fn lifetime_ms(v: &Json) -> Option<i64> {
    let secs = match v {
        Json::Number(n) => n.as_f64()?,
        Json::String(s) => s.trim().parse::<f64>().ok()?,
        _ => return None,
    };
    // `as` saturates a float at i64's bounds; NaN and negatives are not lifetimes.
    (secs >= 0.0).then_some((secs * 1000.0) as i64)
}

#[cfg(test)]
mod tests {
    use super::lifetime_ms;
    use serde_json::json;

    #[test]
    fn expires_in_is_read_as_services_send_it() {
        assert_eq!(lifetime_ms(&json!(7200)), Some(7_200_000));
        assert_eq!(lifetime_ms(&json!(3.0)), Some(3_000));
        assert_eq!(lifetime_ms(&json!("7200")), Some(7_200_000));
        assert_eq!(lifetime_ms(&json!(u64::MAX)), Some(i64::MAX));
        assert_eq!(lifetime_ms(&json!(1e300)), Some(i64::MAX));
        assert_eq!(lifetime_ms(&json!(-5)), None);
        assert_eq!(lifetime_ms(&json!("soon")), None);
    }
}
