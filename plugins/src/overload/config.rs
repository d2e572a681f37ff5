//! A cluster's `overload:` setting: on (the default), `off`, or on with
//! bounds.
//!
//! ```yaml
//! clusters:
//!   shop:
//!     endpoints: ["10.0.0.5:8080"]
//!     # nothing: the adaptive limit is on, with the defaults below
//!     overload: off            # turns it off for this cluster
//!     overload:                # or adjusts its bounds
//!       initial: 20            # the limit before anything is learned
//!       min: 2                 # it never goes below (calls always flow)
//!       max: 10000             # nor above
//!       max_queue: 64          # waiters for a place, all classes together
//!       max_wait: 50ms         # the longest wait for a place
//! ```
//!
//! None of these is the provider's capacity: the limit learns that.

use std::fmt;
use std::time::Duration;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::gate::GateSettings;
use super::limit::LimitSettings;
use crate::bounds::{duration_in, in_range, MAX_SLOTS};
use crate::config_error::ConfigPath;
use crate::duration::HumanDuration;
use crate::ConfigError;

/// The longest `max_wait`: a queue is a short smoothing of bursts, not a
/// place to park calls.
const MAX_WAIT: Duration = Duration::from_secs(10);

/// The `overload:` value as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OverloadFile {
    Off,
    On(OverloadBounds),
}

impl Default for OverloadFile {
    fn default() -> Self {
        Self::On(OverloadBounds::default())
    }
}

/// The bounds an operator may set; unset ones take the defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct OverloadBounds {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initial: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_queue: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_wait: Option<HumanDuration>,
}

/// The compiled settings of a cluster's overload protection.
#[derive(Debug, Clone, PartialEq)]
pub struct OverloadSettings {
    pub limit: LimitSettings,
    pub gate: GateSettings,
}

impl OverloadFile {
    /// The settings, or `None` when it is off. `path` names the
    /// `overload` field, for errors.
    pub fn compile(&self, path: &ConfigPath) -> Result<Option<OverloadSettings>, ConfigError> {
        let b = match self {
            Self::Off => return Ok(None),
            Self::On(b) => b,
        };
        let limit_defaults = LimitSettings::default();
        let gate_defaults = GateSettings::default();
        let max_slots = u32::try_from(MAX_SLOTS).unwrap_or(u32::MAX);
        let min = in_range(
            b.min.unwrap_or(limit_defaults.min),
            1..=max_slots,
            path.field("min"),
        )?;
        let max = in_range(
            b.max.unwrap_or(limit_defaults.max.max(min)),
            min..=max_slots,
            path.field("max"),
        )?;
        let initial = in_range(
            b.initial
                .unwrap_or_else(|| limit_defaults.initial.clamp(min, max)),
            min..=max,
            path.field("initial"),
        )?;
        let max_queue = in_range(
            b.max_queue.unwrap_or(gate_defaults.max_queue),
            0..=MAX_SLOTS as usize,
            path.field("max_queue"),
        )?;
        let max_wait = duration_in(
            b.max_wait
                .map_or(gate_defaults.max_wait, HumanDuration::as_duration),
            Duration::ZERO..=MAX_WAIT,
            path.field("max_wait"),
        )?;
        Ok(Some(OverloadSettings {
            limit: LimitSettings {
                initial,
                min,
                max,
                ..limit_defaults
            },
            gate: GateSettings {
                max_queue,
                max_wait,
            },
        }))
    }
}

impl Serialize for OverloadFile {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Off => s.serialize_str("off"),
            Self::On(b) => b.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for OverloadFile {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(OverloadVisitor)
    }
}

struct OverloadVisitor;

impl<'de> Visitor<'de> for OverloadVisitor {
    type Value = OverloadFile;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("`on`, `off`, or a map of initial, min, max, max_queue, max_wait")
    }

    fn visit_bool<E: de::Error>(self, on: bool) -> Result<OverloadFile, E> {
        Ok(if on {
            OverloadFile::default()
        } else {
            OverloadFile::Off
        })
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<OverloadFile, E> {
        match v {
            "on" => Ok(OverloadFile::default()),
            "off" => Ok(OverloadFile::Off),
            other => Err(E::invalid_value(de::Unexpected::Str(other), &self)),
        }
    }

    fn visit_unit<E: de::Error>(self) -> Result<OverloadFile, E> {
        Ok(OverloadFile::default())
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<OverloadFile, A::Error> {
        OverloadBounds::deserialize(de::value::MapAccessDeserializer::new(map))
            .map(OverloadFile::On)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<OverloadFile, String> {
        serde_yaml::from_str(text).map_err(|e| e.to_string())
    }

    fn compiled(text: &str) -> Result<Option<OverloadSettings>, String> {
        let file = parse(text)?;
        file.compile(
            &ConfigPath::root()
                .field("clusters")
                .field("up")
                .field("overload"),
        )
        .map_err(|e| e.to_string())
    }

    #[test]
    fn off_false_and_on_read_as_written() {
        assert_eq!(parse("off").unwrap(), OverloadFile::Off);
        assert_eq!(parse("false").unwrap(), OverloadFile::Off);
        assert_eq!(parse("on").unwrap(), OverloadFile::default());
        assert_eq!(parse("true").unwrap(), OverloadFile::default());
        assert_eq!(compiled("off").unwrap(), None);
    }

    #[test]
    fn nothing_set_is_on_with_the_defaults() {
        let s = OverloadFile::default()
            .compile(&ConfigPath::root())
            .unwrap()
            .expect("on by default");
        assert_eq!(s.limit, LimitSettings::default());
        assert_eq!(s.gate, GateSettings::default());
    }

    #[test]
    fn bounds_are_read_and_checked_with_their_path() {
        let s = compiled("{ min: 4, max: 64, max_queue: 0, max_wait: 5ms }")
            .unwrap()
            .unwrap();
        assert_eq!((s.limit.min, s.limit.initial, s.limit.max), (4, 20, 64));
        assert_eq!(s.gate.max_queue, 0);
        assert_eq!(s.gate.max_wait, Duration::from_millis(5));
        let e = compiled("{ min: 10, max: 5 }").unwrap_err();
        assert!(e.contains("clusters.up.overload.max"), "{e}");
        let e = compiled("{ max_wait: 1m }").unwrap_err();
        assert!(e.contains("clusters.up.overload.max_wait"), "{e}");
        let e = compiled("{ initial: 0 }").unwrap_err();
        assert!(e.contains("clusters.up.overload.initial"), "{e}");
    }

    #[test]
    fn an_unknown_word_or_field_is_an_error_that_says_what_is_allowed() {
        let e = parse("maybe").unwrap_err();
        assert!(e.contains("`on`, `off`"), "{e}");
        let e = parse("{ limit: 16 }").unwrap_err();
        assert!(e.contains("unknown field `limit`"), "{e}");
    }

    #[test]
    fn it_writes_back_as_it_reads() {
        for text in ["off", "{ min: 4 }"] {
            let file = parse(text).unwrap();
            let again = serde_yaml::to_string(&file).unwrap();
            assert_eq!(parse(&again).unwrap(), file, "{text}");
        }
    }
}
