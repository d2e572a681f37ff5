//! The `rate_limit:` config and its validation.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::policy::RateLimit;
use crate::bounds::{duration_in, in_range, short, MAX_COUNT, MAX_REFILL, MAX_WINDOW};
use crate::duration::HumanDuration;
use crate::fleet::Scope;
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

/// GCRA spaces requests at least 1 ns apart (governor's resolution).
fn check_per_nanosecond(limit: u64, window: Duration, path: &str) -> Result<(), ConfigError> {
    if window.as_nanos() < u128::from(limit) {
        return Err(ConfigError::new(
            path,
            "more than one request per nanosecond cannot be expressed",
        ));
    }
    Ok(())
}

/// A GCRA bucket of `burst` refills at `limit` per `window`: governor forms
/// the refill time (`burst × window ÷ limit`) in a `u64` of nanoseconds, so
/// it is bounded by [`MAX_REFILL`], computed here without overflow.
fn check_refill(burst: u32, limit: u64, window: Duration, path: &str) -> Result<(), ConfigError> {
    let refill = u128::from(burst) * window.as_nanos() / u128::from(limit.max(1));
    if refill > MAX_REFILL.as_nanos() {
        return Err(ConfigError::new(
            path,
            format!(
                "at {limit} per {} a burst of {burst} takes longer than {} to refill",
                short(window),
                short(MAX_REFILL)
            ),
        ));
    }
    Ok(())
}

impl RateLimitConfig {
    pub fn compile(
        &self,
        name: String,
        path: &str,
        env: &PolicyEnv<'_>,
    ) -> Result<RateLimit, ConfigError> {
        let key = KeySpec::parse(&self.key, env.custom_keys, &format!("{path}.key"))?;
        in_range(self.limit, 1..=MAX_COUNT, format!("{path}.limit"))?;
        let window = duration_in(
            self.window.as_duration(),
            Duration::from_millis(1)..=MAX_WINDOW,
            format!("{path}.window"),
        )?;
        let gcra = self.algorithm == Algorithm::Gcra;
        if let Some(burst) = self.burst {
            if !gcra {
                return Err(ConfigError::new(
                    format!("{path}.burst"),
                    "burst applies to algorithm: gcra only",
                ));
            }
            in_range(u64::from(burst), 1..=MAX_COUNT, format!("{path}.burst"))?;
            check_refill(burst, self.limit, window, &format!("{path}.burst"))?;
        }
        if gcra {
            check_per_nanosecond(self.limit, window, &format!("{path}.limit"))?;
        }
        check_max_keys(self.max_keys, path)?;
        let fleet = self.scope.fleet(env, path)?;
        if fleet.is_some() && gcra {
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
            let at = format!("{path}.overrides[{i}].limit");
            in_range(o.limit, 1..=MAX_COUNT, at.as_str())?;
            if gcra {
                // The override's bucket scales the burst with the limit, so
                // it refills in the same time as the policy's own.
                check_per_nanosecond(o.limit, window, &at)?;
            }
        }
        let config = serde_json::to_value(self).unwrap_or_default();
        Ok(RateLimit::new(name, self, key, status, config, env, fleet))
    }
}
