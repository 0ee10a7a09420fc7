//! The `auth:` section: OAuth2 client-credentials token providers for endpoints.

use serde::Deserialize;

/// A token provider; an endpoint names it in `auth:` and sends its token as `Authorization: Bearer …`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    pub token_url: String,
    pub client_id: String,
    pub client_secret: String,
    pub scope: Option<String>,
}
