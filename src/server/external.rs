//! Runs that happen elsewhere (Coze, Dify, n8n) and post their events (ingest.rs): a failure the
//! sender did not explain is explained from its node attempts and its message, its outcome alerts
//! as a native run's does, and a run that started and then went silent is recorded `interrupted`
//! after `server.external_silence` — and alerted.

use super::Shared;
use crate::alert::{AlertInput, Alerter};
use crate::classify::classify_reported;
use crate::engine::RunOutcome;
use crate::store::{AttemptRecord, IngestWrite, RunRecord, Store};
use crate::vocab::{AttemptStatus, ErrorKind, RunStatus};
use std::time::Duration;

/// Fills in, for each failed run of the batch, what the sender left out: the failed node and its
/// message from the last failed attempt (this batch's or stored), and an error kind — the
/// attempt's, else classified from its HTTP status and message as native failures are. A run
/// nothing classifies keeps no kind (reports count it as `unknown`).
pub async fn explain_failures(store: &Store, write: &mut IngestWrite) -> anyhow::Result<()> {
    for run in write.runs.iter_mut().filter(|r| r.status.is_final() && !r.status.is_success()) {
        if run.failed_node.is_some() && run.error_kind.is_some() && run.error_message.is_some() {
            continue;
        }
        // A run new in this write has no attempts stored.
        let stored = if write.fresh.contains(&run.id) { Vec::new() } else { store.attempts(&run.id).await? };
        let failed = stored
            .iter()
            .chain(write.attempts.iter().filter(|a| a.run_id == run.id))
            .filter(|a| matches!(a.status, AttemptStatus::Failed | AttemptStatus::TimedOut))
            .filter(|a| run.failed_node.as_ref().is_none_or(|n| *n == a.node_id))
            .max_by_key(|a| (a.ended_at, a.seq));
        explain(run, failed);
    }
    Ok(())
}

fn explain(run: &mut RunRecord, failed: Option<&AttemptRecord>) {
    if let Some(a) = failed {
        run.failed_node.get_or_insert_with(|| a.node_id.clone());
        if run.error_message.is_none() {
            run.error_message = a.error_message.clone();
        }
        if run.error_kind.is_none() {
            run.error_kind = a.error_kind.clone();
        }
    }
    if run.error_kind.is_none() {
        let kind = match run.status {
            RunStatus::TimedOut => Some(ErrorKind::FlowTimeout),
            RunStatus::Interrupted => Some(ErrorKind::Interrupted),
            RunStatus::Cancelled => Some(ErrorKind::Cancelled),
            _ if failed.is_some_and(|a| a.status == AttemptStatus::TimedOut) => Some(ErrorKind::Timeout),
            _ => classify_reported(failed.and_then(|a| a.http_status), run.error_message.as_deref().unwrap_or("")),
        };
        run.error_kind = kind.map(|k| k.as_str().to_owned());
    }
    if run.severity.is_none() {
        run.severity =
            run.error_kind.as_deref().and_then(|k| k.parse::<ErrorKind>().ok()).map(|k| k.default_severity().as_str().to_owned());
    }
}

/// An external run's end, as the engine would have reported it.
pub fn outcome(r: &RunRecord) -> RunOutcome {
    RunOutcome {
        run_id: r.id.clone(),
        flow: r.flow.clone(),
        status: r.status,
        duration_ms: r.duration_ms.unwrap_or(0),
        failed_node: r.failed_node.clone(),
        error_kind: r.error_kind.as_deref().and_then(|k| k.parse().ok()),
        error_message: r.error_message.clone(),
        severity: r.severity.as_deref().and_then(|s| s.parse().ok()),
        outputs: Default::default(),
    }
}

/// What the engine observer does with a native outcome: a final failure raises an alert, a
/// success resolves the flow's alerts.
pub async fn alert(alerter: &Alerter, o: &RunOutcome) {
    let done = match AlertInput::from_outcome(o, None) {
        Some(input) => alerter.raise(input).await.map(|_| ()),
        None if o.status.is_success() => alerter.resolve(&o.flow).await.map(|_| ()),
        None => Ok(()),
    };
    if let Err(e) = done {
        tracing::error!(error = %alerter.redactor().redact(&format!("{e:#}")), run_id = %o.run_id, "could not alert on an external run");
    }
}

/// One sweep: external runs still `running` from which no event came for `server.external_silence`
/// are recorded `interrupted` and alerted. Returns their ids.
pub async fn sweep_silent(shared: &std::sync::Arc<Shared>) -> anyhow::Result<Vec<String>> {
    let l = shared.loaded();
    let Some(silence) = silence(&l.config.server.external_silence) else { return Ok(Vec::new()) };
    let alerter = l.alerter.clone();
    drop(l);
    // Not while a batch is being merged, here or in another process: it may be the run's next event.
    super::ingest::exclusive(shared, move |shared| {
        Box::pin(async move {
            let now = shared.clock.now_ms();
            let cutoff = now - silence.as_millis() as i64;
            let message = format!("no event for {} after the run started: the flow stopped reporting", humantime::format_duration(silence));
            let mut out = Vec::new();
            for run in shared.store.silent_external_runs(cutoff).await? {
                if !shared.store.interrupt_external(&run, now, &message).await? {
                    continue; // another process took it, or an event finished it meanwhile
                }
                let ended = shared.store.get_run(&run.id).await?.unwrap_or(run);
                shared.metrics.run_finished(&ended.flow, ended.status.as_str(), ended.error_kind.as_deref());
                alert(&alerter, &outcome(&ended)).await;
                out.push(ended.id);
            }
            Ok(out)
        })
    })
    .await
}

/// `server.external_silence`; `0s` turns the sweep off.
fn silence(s: &crate::config::HumanDuration) -> Option<Duration> {
    Some(s.get()).filter(|d| !d.is_zero())
}

/// Sweeps for silent external runs now and then, until the server stops.
pub async fn watch_silence(shared: std::sync::Arc<Shared>, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        let every = silence(&shared.loaded().config.server.external_silence)
            .map(|d| (d / 4).clamp(Duration::from_millis(50), Duration::from_secs(60)))
            .unwrap_or(Duration::from_secs(60));
        if let Err(e) = sweep_silent(&shared).await {
            tracing::warn!(error = %format!("{e:#}"), "the sweep for silent external runs failed");
        }
        tokio::select! {
            _ = shared.clock.sleep(every) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}
