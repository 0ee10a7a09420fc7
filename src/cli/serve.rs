//! `flowguard serve`: the HTTP API, ingestion, scheduler, health checks and metrics in one
//! process. SIGHUP reloads config and flows; SIGTERM/SIGINT shut down gracefully.

use super::Failure;
use crate::clock::SharedClock;
use crate::server::{Application, Options, Shared};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

pub async fn serve(config: &Path, listen: Option<String>, clock: SharedClock) -> Result<i32, Failure> {
    let opts = Options { listen: listen.clone(), clock, extra_schedules: Vec::new() };
    let app = Application::build(config, opts).await.map_err(|e| Failure { code: 2, error: e })?;
    let shared = app.shared.clone();
    let stop = signals(&shared)?;
    let addr = listen.unwrap_or_else(|| shared.loaded().config.server.listen.clone());
    let host = addr.rsplit_once(':').map(|(h, _)| h).unwrap_or("127.0.0.1");
    println!("flowguard serving on http://{host}:{}/ (API /api/v1, /healthz, /readyz, /metrics)", app.port());
    report_recovery(&app);
    app.run_until_stopped(stop).await?;
    Ok(0)
}

pub(super) fn report_recovery(app: &Application) {
    for r in &app.recovered {
        println!("{r}");
    }
}

/// Takes over SIGHUP (reload), SIGTERM and SIGINT (stop) now — before the address is printed, so
/// a supervisor that stops the server as soon as it is up gets a graceful stop, not a kill — and
/// returns what resolves at the stop signal.
pub(super) fn signals(shared: &Arc<Shared>) -> Result<impl Future<Output = ()> + Send + 'static, Failure> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hup = signal(SignalKind::hangup())?;
        let reloader = shared.clone();
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                let _ = reloader.reload();
            }
        });
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        Ok(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            stopping();
        })
    }
    #[cfg(not(unix))]
    {
        let _ = shared;
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
            stopping();
        })
    }
}

fn stopping() {
    // stdout, like the "serving on" line: stderr carries only log lines (JSON with --log-format json).
    let _ = writeln!(std::io::stdout(), "stopping: finishing running runs (up to server.shutdown_grace)…");
}
