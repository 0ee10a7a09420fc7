//! What `flowguard serve` does on its own: cron-scheduled runs and canary runs of the flows (in
//! the configured time zone), plus the slots where the other background jobs plug in (the alert
//! outbox pump, report jobs). [`Scheduler::due`] is the "do one step" function: given a time, it
//! says which jobs fire, so tests drive it without sleeping.

pub mod runs;

use crate::flow::Flow;
use crate::flow::schedule::Overlap;
use croner::Cron;
use serde_json::{Map, Value as Json};
use std::collections::BTreeMap;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    /// The flow's `schedule:`.
    Cron,
    /// The flow's `canary:` (runs tagged canary, excluded from business statistics).
    Canary,
}

#[derive(Debug, Clone)]
pub struct Job {
    /// `cron:FLOW` or `canary:FLOW`: the key of its state in the store.
    pub name: String,
    pub flow: String,
    pub kind: JobKind,
    pub cron: Cron,
    pub overlap: Overlap,
    pub catch_up: bool,
    pub inputs: Map<String, Json>,
    /// When it fires next (epoch ms).
    pub next_ms: i64,
}

/// One firing of a job.
#[derive(Debug, Clone)]
pub struct Fire {
    pub job: String,
    pub flow: String,
    pub kind: JobKind,
    pub overlap: Overlap,
    pub inputs: Map<String, Json>,
    /// The scheduled time (for a catch-up, the missed one).
    pub at_ms: i64,
    pub catch_up: bool,
}

impl Fire {
    /// The id of the run this fire queues, decided by the job and the scheduled time: queueing it
    /// again (after a write that failed, or whose answer was lost) never makes a second run. A
    /// UUIDv7 of the scheduled time like every run id, its other bits from a digest of both.
    pub fn run_id(&self) -> String {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(format!("{}\n{}", self.job, self.at_ms));
        let mut rest = [0u8; 10];
        rest.copy_from_slice(&digest[..10]);
        uuid::Builder::from_unix_timestamp_millis(self.at_ms.max(0) as u64, &rest).into_uuid().to_string()
    }
}

pub struct Scheduler {
    pub tz: jiff::tz::TimeZone,
    pub jobs: Vec<Job>,
}

/// The next occurrence strictly after `after_ms`, in `tz`.
pub fn next_after(cron: &Cron, tz: &jiff::tz::TimeZone, after_ms: i64) -> Option<i64> {
    let t = jiff::Timestamp::from_millisecond(after_ms).ok()?.to_zoned(tz.clone());
    cron.find_next_occurrence(&t, false).ok().map(|z| z.timestamp().as_millisecond())
}

/// The latest occurrence at or before `at_ms`, in `tz`.
pub fn last_at_or_before(cron: &Cron, tz: &jiff::tz::TimeZone, at_ms: i64) -> Option<i64> {
    let t = jiff::Timestamp::from_millisecond(at_ms).ok()?.to_zoned(tz.clone());
    cron.find_previous_occurrence(&t, true).ok().map(|z| z.timestamp().as_millisecond())
}

impl Scheduler {
    /// The jobs of these flows (plus `extra` cron schedules, e.g. the demo's), first fires after `now_ms`.
    pub fn new(flows: &BTreeMap<String, Arc<Flow>>, extra: &[(String, Cron)], tz: jiff::tz::TimeZone, now_ms: i64) -> Scheduler {
        let mut jobs = Vec::new();
        for (name, f) in flows {
            if let Some(s) = &f.serve.schedule {
                jobs.push(Job {
                    name: format!("cron:{name}"),
                    flow: name.clone(),
                    kind: JobKind::Cron,
                    cron: s.cron.clone(),
                    overlap: s.overlap,
                    catch_up: s.catch_up,
                    inputs: s.inputs.clone(),
                    next_ms: 0,
                });
            }
            if let Some(c) = &f.serve.canary {
                jobs.push(Job {
                    name: format!("canary:{name}"),
                    flow: name.clone(),
                    kind: JobKind::Canary,
                    cron: c.cron.clone(),
                    overlap: Overlap::Skip,
                    catch_up: false,
                    inputs: c.inputs.clone(),
                    next_ms: 0,
                });
            }
        }
        for (flow, cron) in extra {
            if flows.contains_key(flow) && !jobs.iter().any(|j| j.flow == *flow && j.kind == JobKind::Cron) {
                jobs.push(Job {
                    name: format!("cron:{flow}"),
                    flow: flow.clone(),
                    kind: JobKind::Cron,
                    cron: cron.clone(),
                    overlap: Overlap::Skip,
                    catch_up: false,
                    inputs: Map::new(),
                    next_ms: 0,
                });
            }
        }
        for j in &mut jobs {
            j.next_ms = next_after(&j.cron, &tz, now_ms).unwrap_or(i64::MAX);
        }
        Scheduler { tz, jobs }
    }

    /// Fires missed while the server was down: for each job with `catch_up`, one fire when an
    /// occurrence fell between its last recorded fire and `now_ms`. `last` gives the recorded
    /// fire of a job (none: the job is new, nothing was missed).
    pub fn missed(&self, now_ms: i64, last: &dyn Fn(&str) -> Option<i64>) -> Vec<Fire> {
        let mut out = Vec::new();
        for j in self.jobs.iter().filter(|j| j.catch_up) {
            let (Some(prev), Some(last)) = (last_at_or_before(&j.cron, &self.tz, now_ms), last(&j.name)) else { continue };
            if prev > last {
                out.push(fire(j, prev, true));
            }
        }
        out
    }

    /// The jobs due at `now_ms`; each moves on to its next occurrence. A fire missed because the
    /// process stalled fires once, not once per missed occurrence.
    pub fn due(&mut self, now_ms: i64) -> Vec<Fire> {
        let mut out = Vec::new();
        for j in &mut self.jobs {
            if j.next_ms <= now_ms {
                out.push(fire(j, j.next_ms, false));
                j.next_ms = next_after(&j.cron, &self.tz, now_ms).unwrap_or(i64::MAX);
            }
        }
        out
    }

    /// When the next job fires.
    pub fn next_ms(&self) -> Option<i64> {
        self.jobs.iter().map(|j| j.next_ms).min()
    }
}

fn fire(j: &Job, at_ms: i64, catch_up: bool) -> Fire {
    Fire { job: j.name.clone(), flow: j.flow.clone(), kind: j.kind, overlap: j.overlap, inputs: j.inputs.clone(), at_ms, catch_up }
}

/// A canary run ended: a failure is reported. The alert hook goes here once alerting lands
/// (DESIGN.md §4: "canary failed" alerts).
pub fn canary_finished(o: &crate::engine::RunOutcome) {
    if !o.status.is_success() {
        tracing::error!(
            flow = %o.flow,
            run_id = %o.run_id,
            status = %o.status,
            error_kind = ?o.error_kind.map(|k| k.as_str()),
            "canary failed"
        );
        // ALERTING (issue 5): raise a `canary_failed` alert for the flow here.
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::schedule::parse_cron;

    /// A fire's run id is the same each time it is asked for, differs between fires, and is a
    /// UUIDv7 of the scheduled time (so runs sort by it as others do).
    #[test]
    fn a_fire_names_its_run_the_same_each_time() {
        let j = job("0 9 * * *", false);
        let at = 1_764_838_800_000;
        let (a, b, c) = (fire(&j, at, false), fire(&j, at, true), fire(&j, at + 60_000, false));
        assert_eq!(a.run_id(), b.run_id());
        assert_ne!(a.run_id(), c.run_id());
        let other = Fire { job: "canary:f".into(), ..a.clone() };
        assert_ne!(a.run_id(), other.run_id());
        let id = uuid::Uuid::parse_str(&a.run_id()).expect("uuid");
        assert_eq!(id.get_version_num(), 7);
        let (secs, nanos) = id.get_timestamp().expect("timestamp").to_unix();
        assert_eq!(secs as i64 * 1000 + nanos as i64 / 1_000_000, at);
    }

    fn job(cron: &str, catch_up: bool) -> Job {
        Job {
            name: "cron:f".into(),
            flow: "f".into(),
            kind: JobKind::Cron,
            cron: parse_cron(cron).expect("cron"),
            overlap: Overlap::Skip,
            catch_up,
            inputs: Map::new(),
            next_ms: 0,
        }
    }

    fn ms(s: &str) -> i64 {
        s.parse::<jiff::Timestamp>().expect("time").as_millisecond()
    }

    #[test]
    fn due_fires_once_per_occurrence_in_the_zone() {
        let tz = jiff::tz::TimeZone::get("Asia/Shanghai").expect("tz");
        let mut s = Scheduler { tz: tz.clone(), jobs: vec![job("0 9 * * *", false)] };
        s.jobs[0].next_ms = next_after(&s.jobs[0].cron, &tz, ms("2026-11-28T00:00:00Z")).expect("next");
        // 09:00 in Shanghai is 01:00 UTC.
        assert_eq!(s.next_ms(), Some(ms("2026-11-28T01:00:00Z")));
        assert!(s.due(ms("2026-11-28T00:59:59Z")).is_empty());
        let fired = s.due(ms("2026-11-28T01:00:00Z"));
        assert_eq!(fired.len(), 1);
        assert!(s.due(ms("2026-11-28T01:00:01Z")).is_empty());
        // A stall over several occurrences fires once.
        assert_eq!(s.due(ms("2026-12-05T02:00:00Z")).len(), 1);
        assert_eq!(s.next_ms(), Some(ms("2026-12-06T01:00:00Z")));
    }

    #[test]
    fn missed_fire_runs_once_only_when_asked() {
        let tz = jiff::tz::TimeZone::UTC;
        let s = Scheduler { tz, jobs: vec![job("0 */2 * * *", true), Job { name: "cron:g".into(), ..job("0 */2 * * *", false) }] };
        let now = ms("2026-11-28T07:30:00Z");
        // Last fired at 02:00; 04:00 and 06:00 were missed: one catch-up, at the latest missed time.
        let fires = s.missed(now, &|_| Some(ms("2026-11-28T02:00:00Z")));
        assert_eq!(fires.len(), 1);
        assert_eq!(fires[0].job, "cron:f");
        assert_eq!(fires[0].at_ms, ms("2026-11-28T06:00:00Z"));
        assert!(s.missed(now, &|_| Some(ms("2026-11-28T06:00:00Z"))).is_empty());
        assert!(s.missed(now, &|_| None).is_empty());
    }
}
