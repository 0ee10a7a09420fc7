//! flowguard: runs AI content pipelines unattended, with guards on every node, a durable run log,
//! error classification and severity, and statistics. See README.md and DESIGN.md.

// A node failure carries its classification and the attempt's facts; it is returned once per
// attempt, never in a hot loop, so its size is not worth boxing.
#![allow(clippy::result_large_err)]

pub mod alert;
pub mod app;
pub mod auth;
pub mod classify;
pub mod cli;
pub mod clock;
pub mod config;
pub mod engine;
pub mod export;
pub mod flow;
pub mod hist;
pub mod human;
pub mod model;
pub mod net;
pub mod nodes;
pub mod redact;
pub mod relay;
pub mod report;
pub mod scheduler;
pub mod schema;
pub mod server;
pub mod sim;
pub mod stats;
pub mod store;
pub mod vocab;

/// Installs the process-wide TLS crypto provider (ring) once.
pub fn init_tls() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}
