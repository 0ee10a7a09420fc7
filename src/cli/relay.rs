//! `flowguard relay`: events accepted locally, kept on disk, forwarded when the server answers.
//! It needs no flowguard.yaml: only where to listen, where to keep batches and where to send them.

use super::{Failure, usage};
use crate::relay::Relay;
use std::path::Path;

pub async fn relay(to: &str, listen: &str, dir: &Path, token_env: &str) -> Result<i32, Failure> {
    url::Url::parse(to).map_err(|e| usage(format!("--to `{to}`: {e} (write e.g. http://flowguard.internal:7878)")))?;
    let token = std::env::var(token_env).ok();
    let relay = Relay::new(dir, to, token.clone())?;
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| usage(format!("cannot listen on {listen}: {e}")))?;
    let addr = listener.local_addr()?;
    let waiting = relay.pending()?.len();
    println!(
        "flowguard relay on http://{addr}/api/v1/events → {to} (batches kept in {}; {waiting} waiting){}",
        dir.display(),
        if token.is_some() { "" } else { "; no token set: the server must accept events without one" }
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let forwarder = {
        let mut stop = stop_rx.clone();
        tokio::spawn(relay.clone().forward_loop(async move {
            let _ = stop.wait_for(|s| *s).await;
        }))
    };
    let mut stop = stop_rx;
    let server = axum::serve(listener, relay.router()).with_graceful_shutdown(async move {
        let _ = stop.wait_for(|s| *s).await;
    });
    let server = tokio::spawn(async move { server.await });
    let _ = tokio::signal::ctrl_c().await;
    let _ = stop_tx.send(true);
    let _ = server.await;
    let _ = forwarder.await;
    Ok(0)
}
