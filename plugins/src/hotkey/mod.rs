//! Hot-key detection and the `hotkey` rule: seed 000's "Burning" pipeline
//! inline in the gateway. A rule names the key to watch; a windowed sketch
//! finds candidates, exact sliding windows confirm them, hot keys fire
//! events and drive the rule's actions until they cool. The `cache`
//! action's response cache is [`crate::cache`]: the rule owns one and tells
//! it which keys are hot and when one cools.

mod config;
mod detector;
mod events;
mod policy;
mod sketch;
#[cfg(test)]
mod tests;

pub use config::{HotAction, HotKeyConfig, HotLimit};
pub use detector::{
    DetectorConfig, HotChange, HotEvent, HotKey, HotKeyDetector, Observation, CANDIDATE_BYTES,
};
pub use events::{HotEventHub, RuleEvent};
pub use policy::{HotKeyCounts, HotKeyRule, MinuteTop, STATS_MINUTES, STATS_TOP};
pub use sketch::WindowedSketch;
