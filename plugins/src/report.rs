//! What limit-like policies tell the admin endpoint and the metrics.

use std::time::Duration;

use serde::Serialize;

use crate::store::KeyNames;

/// Totals kept by a limit-like policy.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct LimitCounts {
    pub admitted: u64,
    pub rejected: u64,
    /// Requests a `shadow: true` policy would have rejected (and admitted).
    pub shadow_rejected: u64,
}

/// One key's current activity.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TopKey {
    /// The key as text, or `#<hash>` if its name was not kept (see `KeyNames`).
    pub key: String,
    /// Events in the current window (estimated).
    pub count: f64,
    pub rate_per_sec: f64,
}

impl TopKey {
    /// Names and rates for `(hash, count)` pairs from [`crate::window::hottest`].
    pub fn list(hot: Vec<(u64, f64)>, names: &KeyNames, window: Duration) -> Vec<TopKey> {
        let secs = window.as_secs_f64();
        hot.into_iter()
            .map(|(hash, count)| TopKey {
                key: names.name(hash),
                count,
                rate_per_sec: count / secs,
            })
            .collect()
    }
}

/// A limit-like policy's state, for `GET /limits` and the metrics.
#[derive(Debug, Clone, Serialize)]
pub struct LimitReport {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub config: serde_json::Value,
    pub tracked_keys: usize,
    pub max_keys: usize,
    pub evictions: u64,
    #[serde(flatten)]
    pub counts: LimitCounts,
    pub top_keys: Vec<TopKey>,
    /// Concurrency limits: requests holding a slot now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_flight: Option<u64>,
    /// Concurrency limits: requests waiting in the queue now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queued: Option<u64>,
}
