//! The `auth:` section: OAuth2 client-credentials token providers for endpoints.

use serde::Deserialize;

/// A token provider; an endpoint names it in `auth:` and sends its token as `Authorization: Bearer …`.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// The token endpoint (`POST`, form body `grant_type=client_credentials`).
    pub token_url: String,
    /// Usually `${CLIENT_ID}`.
    pub client_id: String,
    /// Usually `${CLIENT_SECRET}` (a secret: masked everywhere).
    pub client_secret: String,
    /// Sent as `scope` when set.
    pub scope: Option<String>,
}
