//! Flow-level fields for `flowguard serve`: a cron schedule with an overlap policy and catch-up, a
//! canary schedule with test inputs, what happens to a run the process died in, and how many runs
//! of the flow may go at once.

use crate::config::CronExpr;
use serde::Deserialize;
use serde_json::{Map, Value as Json};

/// What `serve` does with this flow.
#[derive(Debug, Clone, Default)]
pub struct ServeSpec {
    pub schedule: Option<Schedule>,
    pub canary: Option<Canary>,
    pub on_interrupt: OnInterrupt,
    /// Runs of this flow at once (all triggers); `None`: no limit.
    pub concurrency: Option<usize>,
}

#[derive(Debug, Clone)]
pub struct Schedule {
    pub cron: croner::Cron,
    pub overlap: Overlap,
    /// A fire missed while the server was down runs once at start.
    pub catch_up: bool,
    pub inputs: Map<String, Json>,
}

#[derive(Debug, Clone)]
pub struct Canary {
    pub cron: croner::Cron,
    pub inputs: Map<String, Json>,
}

/// When a fire comes while the previous run of the flow is still going.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Overlap {
    /// Do not start another run (the default).
    #[default]
    Skip,
    /// Start it when the previous one ends.
    Queue,
    /// Start it at once.
    Allow,
}

/// What happens at start to a run left `running` by a process that died.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnInterrupt {
    /// Mark it `interrupted` (the default).
    #[default]
    Fail,
    /// Go on from the last completed node when every output it needs was stored whole.
    Resume,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ScheduleFields {
    /// Five fields (minute hour day month weekday) or six with seconds first, in the config's time zone.
    pub cron: CronExpr,
    /// When a fire comes while the previous run is still going: `skip` (default), `queue` or `allow`.
    #[serde(default)]
    pub overlap: Overlap,
    /// A fire missed while the server was down runs once at start.
    #[serde(default)]
    pub catch_up: bool,
    /// Run inputs of the scheduled runs.
    #[serde(default)]
    pub inputs: Map<String, Json>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CanaryFields {
    /// When to run the canary: five fields (minute hour day month weekday) or six with seconds first, in the config's time zone.
    pub cron: CronExpr,
    /// Test inputs of the canary runs.
    #[serde(default)]
    pub inputs: Map<String, Json>,
}

pub use crate::config::cron::parse_cron;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cron_next_fire_follows_the_time_zone() {
        let c = parse_cron("0 9 * * *").expect("cron");
        let at: jiff::Zoned = "2026-11-28T10:00:00+08:00[Asia/Shanghai]".parse().expect("time");
        let next = c.find_next_occurrence(&at, false).expect("next");
        assert_eq!(next.to_string(), "2026-11-29T09:00:00+08:00[Asia/Shanghai]");
        assert!(parse_cron("61 * * * *").is_err());
    }
}
