//! The shared vocabulary of DESIGN.md §4: run and attempt statuses, error kinds, severities.
//! These names are stored in the database, shown by the CLI and API, and used in alert text;
//! they are defined once here and nowhere else.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// Declares a string-named enum with `as_str`, `ALL`, `NAMES`, `Display`, `FromStr` and serde.
/// The literal is the one spelling: serde, the database, the API and the docs all use it
/// (a derived `rename_all` would turn `Upstream5xx` into `upstream5xx`).
macro_rules! named_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $var:ident = $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name { $($(#[$vm])* $var),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$var),+];
            /// Every spelling, in declaration order.
            pub const NAMES: &'static [&'static str] = &[$($s),+];
            pub fn as_str(self) -> &'static str {
                match self { $($name::$var => $s),+ }
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str { self.as_str() }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { f.write_str(self.as_str()) }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($s => Ok($name::$var),)+
                    _ => Err(format!(
                        "unknown {} `{}`{}; expected one of: {}",
                        stringify!($name).to_lowercase(), s,
                        crate::flow::diag::suggest(s, [$($s),+]).map(|c| format!(" (did you mean `{c}`?)")).unwrap_or_default(),
                        [$($s),+].join(", "))),
                }
            }
        }

        impl schemars::JsonSchema for $name {
            fn schema_name() -> std::borrow::Cow<'static, str> { stringify!($name).into() }
            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({ "type": "string", "enum": $name::NAMES })
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> { s.serialize_str(self.as_str()) }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = std::borrow::Cow::<'de, str>::deserialize(d)?;
                match s.as_ref() {
                    $($s => Ok($name::$var),)+
                    other => Err(serde::de::Error::unknown_variant(other, $name::NAMES)),
                }
            }
        }
    };
}

named_enum!(
    /// Where a run is in its life (DESIGN.md §4).
    RunStatus {
        Queued = "queued",
        Running = "running",
        Succeeded = "succeeded",
        /// Succeeded, but a retry, repair, default value or backup model was needed.
        Recovered = "recovered",
        Failed = "failed",
        WaitingManual = "waiting_manual",
        TimedOut = "timed_out",
        Cancelled = "cancelled",
        Interrupted = "interrupted",
        Refused = "refused",
    }
);

impl RunStatus {
    /// A final state: the run will not change again by itself.
    pub fn is_final(self) -> bool {
        !matches!(self, RunStatus::Queued | RunStatus::Running | RunStatus::WaitingManual)
    }
    pub fn is_success(self) -> bool {
        matches!(self, RunStatus::Succeeded | RunStatus::Recovered)
    }
    /// The CLI exit code for a run that ended in this state (DESIGN.md §4).
    pub fn exit_code(self) -> i32 {
        match self {
            RunStatus::Succeeded | RunStatus::Recovered => 0,
            RunStatus::WaitingManual => 3,
            RunStatus::Refused => 4,
            _ => 1,
        }
    }
}

named_enum!(
    /// The outcome of one attempt of one node.
    AttemptStatus {
        Succeeded = "succeeded",
        Failed = "failed",
        TimedOut = "timed_out",
        Skipped = "skipped",
        Defaulted = "defaulted",
    }
);

named_enum!(
    /// How bad an unrecovered failure is (the seed's three tiers).
    Severity { Low = "low", Medium = "medium", High = "high" }
);

named_enum!(
    /// Every failure gets exactly one kind (DESIGN.md §4).
    ErrorKind {
        GenerationEmpty = "generation_empty",
        GenerationMalformed = "generation_malformed",
        QualityRejected = "quality_rejected",
        ExpectationFailed = "expectation_failed",
        Timeout = "timeout",
        RateLimited = "rate_limited",
        Upstream5xx = "upstream_5xx",
        Upstream4xx = "upstream_4xx",
        Network = "network",
        AuthExpired = "auth_expired",
        QuotaExhausted = "quota_exhausted",
        ContentBlocked = "content_blocked",
        DataEmpty = "data_empty",
        PublishFailed = "publish_failed",
        PublishAmbiguous = "publish_ambiguous",
        LoopLimit = "loop_limit",
        FlowTimeout = "flow_timeout",
        NoHealthyModel = "no_healthy_model",
        Interrupted = "interrupted",
        Cancelled = "cancelled",
        Internal = "internal",
    }
);

/// What the built-in policy table does with a kind when a node does not say otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultRetry {
    /// Do not retry.
    Never,
    /// Retry once (two attempts in all).
    Once,
    /// Retry with exponential backoff (three attempts in all).
    Backoff,
}

impl ErrorKind {
    /// The severity of this kind when the run does not recover (DESIGN.md §4).
    pub fn default_severity(self) -> Severity {
        use ErrorKind::*;
        match self {
            QualityRejected | DataEmpty => Severity::Low,
            AuthExpired | QuotaExhausted | NoHealthyModel | Internal => Severity::High,
            _ => Severity::Medium,
        }
    }

    /// The retry the policy table applies when a node sets no `retry` of its own.
    pub fn default_retry(self) -> DefaultRetry {
        use ErrorKind::*;
        match self {
            GenerationEmpty | GenerationMalformed | RateLimited | Upstream5xx | Network => DefaultRetry::Backoff,
            ExpectationFailed | Timeout | PublishFailed | AuthExpired => DefaultRetry::Once,
            _ => DefaultRetry::Never,
        }
    }

    /// One line for docs and `check --explain`.
    pub fn describe(self) -> &'static str {
        use ErrorKind::*;
        match self {
            GenerationEmpty => "the model returned no choices or empty content",
            GenerationMalformed => "the model's output was not the JSON asked for, or was cut off (finish_reason=length)",
            QualityRejected => "a quality check rejected the output (missing field, sensitive word, too long)",
            ExpectationFailed => "an `expect` check on a node failed",
            Timeout => "the node exceeded its time limit",
            RateLimited => "HTTP 429 without a quota code, or a provider's rate-limit code",
            Upstream5xx => "HTTP 500/502/503/504",
            Upstream4xx => "HTTP 400/403/404 without a more specific code",
            Network => "connection refused, DNS, TLS or reset",
            AuthExpired => "HTTP 401, invalid key or token",
            QuotaExhausted => "HTTP 402, arrears, insufficient_quota",
            ContentBlocked => "the provider's content filter refused",
            DataEmpty => "a knowledge-base or upstream query returned nothing",
            PublishFailed => "the publish API rejected the content",
            PublishAmbiguous => "a side-effecting call timed out and its target does not honour idempotency keys",
            LoopLimit => "a foreach or repair loop hit its cap",
            FlowTimeout => "the whole run exceeded its limit",
            NoHealthyModel => "every model of a fallback chain failed",
            Interrupted => "the process died during the run",
            Cancelled => "an operator cancelled the run",
            Internal => "a bug or an infrastructure failure inside flowguard",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_spells_every_name_as_design_does() {
        for k in ErrorKind::ALL {
            let json = serde_json::to_value(k).unwrap();
            assert_eq!(json, k.as_str());
            assert_eq!(serde_json::from_value::<ErrorKind>(json).unwrap(), *k);
        }
        for s in RunStatus::ALL {
            assert_eq!(serde_json::from_value::<RunStatus>(s.as_str().into()).unwrap(), *s);
        }
        let err = serde_json::from_value::<ErrorKind>("upstream5xx".into()).unwrap_err().to_string();
        assert!(err.contains("unknown variant `upstream5xx`") && err.contains("upstream_5xx"), "{err}");
    }
}
