//! A cron expression of the config or a flow (`0 9 * * *`), parsed once when the file is read.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// Parses a cron expression: 5 fields (minute hour day month weekday), or 6 with seconds first.
pub fn parse_cron(s: &str) -> Result<croner::Cron, String> {
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Optional)
        .build()
        .parse(s)
        .map_err(|e| format!("`{s}` is not a valid cron expression: {e}"))
}

/// Five fields (minute hour day month weekday) or six with seconds first, in the config's time zone.
#[derive(Clone)]
pub struct CronExpr(croner::Cron);

impl CronExpr {
    pub fn get(&self) -> &croner::Cron {
        &self.0
    }
}

impl std::ops::Deref for CronExpr {
    type Target = croner::Cron;
    fn deref(&self) -> &croner::Cron {
        &self.0
    }
}

impl std::str::FromStr for CronExpr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        parse_cron(s).map(CronExpr)
    }
}

impl fmt::Display for CronExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.pattern)
    }
}

impl fmt::Debug for CronExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CronExpr({self})")
    }
}

impl schemars::JsonSchema for CronExpr {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Cron".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "title": "cron",
            "type": "string",
            "description": "A cron expression in the config's time zone: 5 fields (minute hour day month weekday), or 6 with seconds first, e.g. `0 9 * * *`."
        })
    }
}

impl Serialize for CronExpr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for CronExpr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<'de, str>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}
