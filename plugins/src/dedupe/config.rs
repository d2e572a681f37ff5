//! The `dedupe:` config and its validation.

use std::time::Duration;

use http::HeaderName;
use serde::{Deserialize, Serialize};

use super::policy::Dedupe;
use crate::bounds::{in_range, MAX_SLOTS};
use crate::duration::HumanDuration;
use crate::ConfigError;

/// `dedupe:` in a route's `policies`.
///
/// ```yaml
/// - dedupe:
///     header: idempotency-key
///     on_duplicate: join        # or reject (409)
///     wait: 10s                 # how long a joiner waits for the leader
///     max_body: 1MiB            # largest response shared (bytes)
///     max_in_flight: 10000
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DedupeConfig {
    #[serde(default)]
    pub name: Option<String>,
    pub header: String,
    #[serde(default)]
    pub on_duplicate: OnDuplicate,
    #[serde(default = "default_wait")]
    pub wait: HumanDuration,
    #[serde(default = "default_max_body")]
    pub max_body: usize,
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnDuplicate {
    #[default]
    Join,
    Reject,
}

/// The largest response a leader buffers to share (64 MiB).
const MAX_SHARED_BODY: u64 = 64 << 20;

fn default_wait() -> HumanDuration {
    Duration::from_secs(10).into()
}
fn default_max_body() -> usize {
    1 << 20
}
fn default_max_in_flight() -> usize {
    10_000
}

impl DedupeConfig {
    pub fn compile(&self, name: String, path: &str) -> Result<Dedupe, ConfigError> {
        let header = HeaderName::from_bytes(self.header.as_bytes()).map_err(|_| {
            ConfigError::new(
                format!("{path}.header"),
                format!("\"{}\" is not a valid header name", self.header),
            )
        })?;
        let wait = self.wait.as_duration();
        if wait.is_zero() || wait > Duration::from_secs(300) {
            return Err(ConfigError::new(
                format!("{path}.wait"),
                "must be between 1ms and 5m",
            ));
        }
        in_range(
            self.max_in_flight as u64,
            1..=MAX_SLOTS,
            format!("{path}.max_in_flight"),
        )?;
        // Each leader may buffer this much for its joiners.
        in_range(
            self.max_body as u64,
            0..=MAX_SHARED_BODY,
            format!("{path}.max_body"),
        )?;
        Ok(Dedupe::new(
            name,
            header,
            self.on_duplicate,
            wait,
            self.max_in_flight,
            self.max_body,
        ))
    }
}
