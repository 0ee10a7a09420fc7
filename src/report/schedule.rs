//! When reports are due. A report covers a *period*: the daily one the local day before the day
//! its cron fires, the weekly one the seven local days before. The scheduler asks [`due`] at start
//! (a report missed while the server was down is sent once) and at [`next_fire`]; whether a period
//! was sent is stored in the `reports` table, so it survives restarts and is shared by processes.

use super::config::{ReportsConfig, Schedule};
use crate::store::Store;
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan, Zoned};
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Daily,
    Weekly,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Daily => "daily",
            Kind::Weekly => "weekly",
        }
    }
    pub fn schedule(self, cfg: &ReportsConfig) -> &Schedule {
        match self {
            Kind::Daily => &cfg.daily,
            Kind::Weekly => &cfg.weekly,
        }
    }
}

/// What a report covers: `[since_ms, until_ms)` in UTC ms, local days of the configured zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Period {
    pub kind: Kind,
    /// `2026-11-27` for a day, `2026-11-16..2026-11-22` for a week (local dates, inclusive).
    pub key: String,
    pub since_ms: i64,
    pub until_ms: i64,
    #[serde(serialize_with = "as_string")]
    pub first_day: jiff::civil::Date,
    #[serde(serialize_with = "as_string")]
    pub last_day: jiff::civil::Date,
}

fn as_string<S: serde::Serializer>(d: &jiff::civil::Date, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(d)
}

fn day_start(d: jiff::civil::Date, tz: &TimeZone) -> i64 {
    d.to_zoned(tz.clone()).map(|z| z.timestamp().as_millisecond()).unwrap_or(0)
}

/// The day report of local date `day`.
pub fn day(day: jiff::civil::Date, tz: &TimeZone) -> Period {
    let next = day.tomorrow().unwrap_or(day);
    Period {
        kind: Kind::Daily,
        key: day.to_string(),
        since_ms: day_start(day, tz),
        until_ms: day_start(next, tz),
        first_day: day,
        last_day: day,
    }
}

/// The week report of the seven local days starting at `first`.
pub fn week(first: jiff::civil::Date, tz: &TimeZone) -> Period {
    let last = first.checked_add(6.days()).unwrap_or(first);
    let end = first.checked_add(7.days()).unwrap_or(first);
    Period {
        kind: Kind::Weekly,
        key: format!("{first}..{last}"),
        since_ms: day_start(first, tz),
        until_ms: day_start(end, tz),
        first_day: first,
        last_day: last,
    }
}

/// The period a report fired at `fire` covers.
pub fn period_for(kind: Kind, fire: &Zoned) -> Period {
    let today = fire.date();
    match kind {
        Kind::Daily => day(today.yesterday().unwrap_or(today), fire.time_zone()),
        Kind::Weekly => week(today.checked_sub(7.days()).unwrap_or(today), fire.time_zone()),
    }
}

/// A stable delay in `[0, jitter)` for a period, so every process picks the same send time.
pub fn jitter_ms(period: &Period, jitter: std::time::Duration) -> i64 {
    let max = jitter.as_millis() as u64;
    if max == 0 {
        return 0;
    }
    let mut h: u64 = 0xcbf29ce484222325;
    for b in period.key.bytes().chain(period.kind.as_str().bytes()) {
        h = (h ^ b as u64).wrapping_mul(0x100000001b3);
    }
    (h % max) as i64
}

fn zoned(ms: i64, tz: &TimeZone) -> Option<Zoned> {
    Timestamp::from_millisecond(ms).ok().map(|t| t.to_zoned(tz.clone()))
}

/// The latest cron time at or before `now_ms`, and its period.
pub fn last_fire(cfg: &ReportsConfig, kind: Kind, tz: &TimeZone, now_ms: i64) -> Option<(i64, Period)> {
    let s = kind.schedule(cfg);
    let cron = s.cron.get();
    let fire = cron.find_previous_occurrence(&zoned(now_ms, tz)?, true).ok()?;
    let p = period_for(kind, &fire);
    let jitter = s.jitter.get();
    Some((fire.timestamp().as_millisecond() + jitter_ms(&p, jitter), p))
}

/// When the scheduler should next call [`super::send_due`] for this kind (UTC ms, jitter included).
pub fn next_fire(cfg: &ReportsConfig, kind: Kind, tz: &TimeZone, now_ms: i64) -> Option<i64> {
    let s = kind.schedule(cfg);
    if !s.enabled {
        return None;
    }
    let cron = s.cron.get();
    let jitter = s.jitter.get();
    let mut from = zoned(now_ms, tz)?;
    // The jitter may put this period's send after now even though its cron time has passed.
    if let Some((at, _)) = last_fire(cfg, kind, tz, now_ms).filter(|(at, _)| *at > now_ms) {
        return Some(at);
    }
    for _ in 0..2 {
        let fire = cron.find_next_occurrence(&from, false).ok()?;
        let at = fire.timestamp().as_millisecond() + jitter_ms(&period_for(kind, &fire), jitter);
        if at > now_ms {
            return Some(at);
        }
        from = fire;
    }
    None
}

/// The period whose report should be sent now, if any: its cron time (plus jitter) has passed
/// and it was not sent yet. Only the latest period is ever due, so a server that was down for
/// three days sends one daily report, not three.
pub async fn due(store: &Store, cfg: &ReportsConfig, kind: Kind, tz: &TimeZone, now_ms: i64) -> anyhow::Result<Option<Period>> {
    if !kind.schedule(cfg).enabled {
        return Ok(None);
    }
    let Some((at, period)) = last_fire(cfg, kind, tz, now_ms) else { return Ok(None) };
    if at > now_ms || store.report_sent_at(kind.as_str(), &period.key).await?.is_some() {
        return Ok(None);
    }
    Ok(Some(period))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(s: &str, tz: &TimeZone) -> i64 {
        s.parse::<jiff::civil::DateTime>().unwrap().to_zoned(tz.clone()).unwrap().timestamp().as_millisecond()
    }

    #[test]
    fn periods_are_local_days() {
        let tz = TimeZone::get("Asia/Shanghai").unwrap();
        let cfg = ReportsConfig::default();
        let (at, p) = last_fire(&cfg, Kind::Daily, &tz, ms("2026-11-28T09:30:00", &tz)).unwrap();
        assert_eq!(p.key, "2026-11-27");
        assert_eq!(p.since_ms, ms("2026-11-27T00:00:00", &tz));
        assert_eq!(p.until_ms - p.since_ms, 86_400_000);
        assert!(at >= ms("2026-11-28T09:00:00", &tz) && at < ms("2026-11-28T09:02:00", &tz));
        // Before 09:00 the latest fire is yesterday's, covering the day before.
        assert_eq!(last_fire(&cfg, Kind::Daily, &tz, ms("2026-11-28T08:59:00", &tz)).unwrap().1.key, "2026-11-26");
        let (_, w) = last_fire(&cfg, Kind::Weekly, &tz, ms("2026-11-28T09:30:00", &tz)).unwrap();
        assert_eq!(w.key, "2026-11-16..2026-11-22");
        let next = next_fire(&cfg, Kind::Daily, &tz, ms("2026-11-28T09:30:00", &tz)).unwrap();
        assert!(next >= ms("2026-11-29T09:00:00", &tz) && next < ms("2026-11-29T09:02:00", &tz));
    }

    #[test]
    fn a_dst_day_has_23_hours() {
        let tz = TimeZone::get("Europe/Berlin").unwrap();
        let p = day("2026-03-29".parse().unwrap(), &tz);
        assert_eq!(p.until_ms - p.since_ms, 23 * 3_600_000);
        assert_eq!(p.since_ms % crate::store::rollups::BUCKET_MS, 0);
    }
}
