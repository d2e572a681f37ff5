//! Human-friendly durations in config files: `250ms`, `1s`, `5m`, `1h 30m`.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::bounds::{short, MAX_DURATION};

/// A `Duration` written the way people write them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    pub fn as_duration(self) -> Duration {
        self.0
    }
}

impl From<Duration> for HumanDuration {
    fn from(d: Duration) -> Self {
        Self(d)
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let parsed = humantime::parse_duration(text.trim()).map_err(|e| {
            serde::de::Error::custom(format!(
                "invalid duration \"{text}\" ({e}); write e.g. 500ms, 1s, 5m"
            ))
        })?;
        // Every duration field has a tighter bound of its own; this one
        // keeps any duration's nanoseconds far inside a u64 before it does.
        if parsed > MAX_DURATION {
            return Err(serde::de::Error::custom(format!(
                "duration \"{text}\" is too long: at most {}",
                short(MAX_DURATION)
            )));
        }
        Ok(HumanDuration(parsed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let d: HumanDuration = serde_json::from_str("\"1m 30s\"").unwrap();
        assert_eq!(d.0, Duration::from_secs(90));
        assert_eq!(serde_json::to_string(&d).unwrap(), "\"1m 30s\"");
        let e = serde_json::from_str::<HumanDuration>("\"soon\"").unwrap_err();
        assert!(e.to_string().contains("invalid duration \"soon\""), "{e}");
    }

    #[test]
    fn durations_past_a_year_are_refused_as_they_are_read() {
        let e = serde_json::from_str::<HumanDuration>("\"99999999999h\"").unwrap_err();
        assert!(e.to_string().contains("too long: at most 365d"), "{e}");
        let year: HumanDuration = serde_json::from_str("\"365d\"").unwrap();
        assert_eq!(year.0, MAX_DURATION);
    }
}
