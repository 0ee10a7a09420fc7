//! A length of time as people write it in YAML (`500ms`, `30s`, `5m`, `4h`, `90d`), parsed once
//! when the file is read: past the parser, every duration is a `Duration` and none is re-read.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// The one duration parser for config, flows, the CLI and the API.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| format!("bad duration `{s}`: {e} (write e.g. `500ms`, `30s`, `5m`)"))
}

/// A duration field of the config or a flow file, written `500ms`, `30s`, `5m`, `4h` or `90d`.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    pub const fn secs(n: u64) -> Self {
        HumanDuration(Duration::from_secs(n))
    }
    pub const fn millis(n: u64) -> Self {
        HumanDuration(Duration::from_millis(n))
    }
    pub const fn get(self) -> Duration {
        self.0
    }
    /// Milliseconds, saturating (the store keeps epoch milliseconds as i64).
    pub fn as_ms(self) -> i64 {
        i64::try_from(self.0.as_millis()).unwrap_or(i64::MAX)
    }
}

impl From<HumanDuration> for Duration {
    fn from(d: HumanDuration) -> Duration {
        d.0
    }
}

impl FromStr for HumanDuration {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        parse_duration(s).map(HumanDuration)
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl fmt::Debug for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<'de, str>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl schemars::JsonSchema for HumanDuration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "title": "duration",
            "type": "string",
            "description": "A duration: a number and a unit, e.g. `500ms`, `30s`, `5m`, `4h`, `90d` (parts may be combined: `1m 30s`).",
            "pattern": "^\\s*([0-9]+\\s*[a-zA-Zµ]+\\s*)+$"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_once_and_says_how_to_write_it() {
        let d: HumanDuration = serde_json::from_value("1m 30s".into()).unwrap();
        assert_eq!(d.get(), Duration::from_secs(90));
        assert_eq!(serde_json::to_value(d).unwrap(), "1m 30s");
        let e = serde_json::from_value::<HumanDuration>("soon".into()).unwrap_err().to_string();
        assert!(e.contains("bad duration `soon`") && e.contains("30s"), "{e}");
    }
}
