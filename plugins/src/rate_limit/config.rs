//! The `rate_limit:` config and its validation.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::policy::RateLimit;
use crate::cluster::Scope;
use crate::duration::HumanDuration;
use crate::{ConfigError, KeySpec, PolicyEnv};

/// `rate_limit:` in a route's `policies`.
///
/// ```yaml
/// - rate_limit:
///     key: ip                # ip, user, endpoint, a custom key, or user+endpoint
///     limit: 100             # requests per window
///     window: 1s
///     algorithm: gcra        # or sliding_window
///     burst: 20              # gcra only; default = limit
///     overrides: [{ key: vip-user, limit: 1000 }]
///     allow: [healthcheck]   # never limited
///     shadow: false          # true: only log and count
///     scope: local           # global: fleet-wide through `cluster` (sliding_window only)
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    #[serde(default)]
    pub name: Option<String>,
    pub key: String,
    pub limit: u64,
    pub window: HumanDuration,
    #[serde(default)]
    pub algorithm: Algorithm,
    #[serde(default)]
    pub burst: Option<u32>,
    #[serde(default = "default_max_keys")]
    pub max_keys: usize,
    #[serde(default)]
    pub shadow: bool,
    #[serde(default)]
    pub overrides: Vec<LimitOverride>,
    #[serde(default)]
    pub allow: Vec<String>,
    #[serde(default)]
    pub status: Option<u16>,
    #[serde(default, skip_serializing_if = "Scope::is_local")]
    pub scope: Scope,
}

pub fn default_max_keys() -> usize {
    100_000
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    /// Generic cell rate algorithm (a token bucket): smooth, with `burst`.
    #[default]
    Gcra,
    /// A count of admitted requests in the last `window`.
    SlidingWindow,
}

/// A different limit for one key (a VIP user, a partner's IP).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitOverride {
    /// The key as it would be rendered: `alice`, `10.0.0.1`, `alice|goods`.
    pub key: String,
    pub limit: u64,
}

/// Upper bound on `max_keys`, so a typo cannot reserve unbounded memory.
pub const MAX_KEYS_CEILING: usize = 10_000_000;

pub fn check_max_keys(max_keys: usize, path: &str) -> Result<(), ConfigError> {
    if max_keys == 0 || max_keys > MAX_KEYS_CEILING {
        return Err(ConfigError::new(
            format!("{path}.max_keys"),
            format!("must be between 1 and {MAX_KEYS_CEILING}"),
        ));
    }
    Ok(())
}

pub fn check_status(status: Option<u16>, default: u16, path: &str) -> Result<u16, ConfigError> {
    let status = status.unwrap_or(default);
    if !(400..=599).contains(&status) {
        return Err(ConfigError::new(
            format!("{path}.status"),
            format!("must be an HTTP error status (400-599), got {status}"),
        ));
    }
    Ok(status)
}

impl RateLimitConfig {
    pub fn compile(
        &self,
        name: String,
        path: &str,
        env: &PolicyEnv<'_>,
    ) -> Result<RateLimit, ConfigError> {
        let key = KeySpec::parse(&self.key, env.custom_keys, &format!("{path}.key"))?;
        if self.limit == 0 {
            return Err(ConfigError::new(
                format!("{path}.limit"),
                "must be > 0 (use `deny` to refuse everything)",
            ));
        }
        let window = self.window.as_duration();
        if window < Duration::from_millis(1) {
            return Err(ConfigError::new(
                format!("{path}.window"),
                "must be at least 1ms",
            ));
        }
        match (self.algorithm, self.burst) {
            (Algorithm::SlidingWindow, Some(_)) => {
                return Err(ConfigError::new(
                    format!("{path}.burst"),
                    "burst applies to algorithm: gcra only",
                ))
            }
            (_, Some(0)) => return Err(ConfigError::new(format!("{path}.burst"), "must be > 0")),
            _ => {}
        }
        if self.algorithm == Algorithm::Gcra && window.as_nanos() < u128::from(self.limit) {
            return Err(ConfigError::new(
                format!("{path}.limit"),
                "more than one request per nanosecond cannot be expressed",
            ));
        }
        check_max_keys(self.max_keys, path)?;
        let fleet = self.scope.fleet(env, path)?;
        if fleet.is_some() && self.algorithm != Algorithm::SlidingWindow {
            return Err(ConfigError::new(
                format!("{path}.algorithm"),
                "scope: global counts fleet-wide sliding windows: set algorithm: sliding_window",
            ));
        }
        let status = check_status(self.status, 429, path)?;
        for (i, o) in self.overrides.iter().enumerate() {
            if o.key.is_empty() {
                return Err(ConfigError::new(
                    format!("{path}.overrides[{i}].key"),
                    "must not be empty",
                ));
            }
            if o.limit == 0 {
                return Err(ConfigError::new(
                    format!("{path}.overrides[{i}].limit"),
                    "must be > 0 (use `allow` for no limit, `deny` for none at all)",
                ));
            }
        }
        let config = serde_json::to_value(self).unwrap_or_default();
        Ok(RateLimit::new(name, self, key, status, config, env, fleet))
    }
}
