//! The `hotkey:` config and its validation.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::detector::DetectorConfig;
use super::policy::HotKeyRule;
use crate::bounds::{duration_in, in_range, MAX_COUNT, MAX_TIMEOUT};
use crate::cache::CacheConfig;
use crate::cluster::Scope;
use crate::duration::HumanDuration;
use crate::rate_limit::config_checks::check_status;
use crate::rate_limit::{Algorithm, RateLimitConfig};
use crate::{ConfigError, KeyRef, KeySpec, PolicyEnv};

/// `hotkey:` in a route's `policies`.
///
/// ```yaml
/// - hotkey:
///     key: goods_id          # any request key: a path capture, query, header, user, ip, endpoint
///     threshold: 1000        # events per window that make a key hot
///     window: 1s
///     hot_ttl: 10s           # stays hot this long after its count last held up
///     cool_ratio: 0.8        # while hot, >= 0.8 × threshold holds it (hysteresis)
///     max_tracked: 4096      # candidate keys counted exactly (memory cap)
///     actions: [observe]     # observe, cache, limit, block
///     cache: { ttl: 5s, stale_ttl: 30s }   # with `cache`: see `CacheConfig`
///     limit: { limit: 100, window: 1s }   # with `limit`: per hot key, like Sentinel's hot-parameter rules
///     block_for: 5m          # with `block`: ip or user keys go on the block list
///     scope: local           # global: counted and declared hot fleet-wide (needs `cluster`)
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HotKeyConfig {
    #[serde(default)]
    pub name: Option<String>,
    pub key: String,
    pub threshold: u64,
    pub window: HumanDuration,
    #[serde(default = "default_hot_ttl")]
    pub hot_ttl: HumanDuration,
    #[serde(default = "default_cool_ratio")]
    pub cool_ratio: f64,
    #[serde(default = "default_max_tracked")]
    pub max_tracked: usize,
    #[serde(default = "default_actions")]
    pub actions: Vec<HotAction>,
    #[serde(default)]
    pub limit: Option<HotLimit>,
    #[serde(default)]
    pub block_for: Option<HumanDuration>,
    /// With `cache`: how hot keys' answers are cached (defaults apply).
    #[serde(default)]
    pub cache: Option<CacheConfig>,
    /// Status for `limit` and `block` refusals (429 and 403 by default).
    #[serde(default)]
    pub status: Option<u16>,
    #[serde(default, skip_serializing_if = "Scope::is_local")]
    pub scope: Scope,
}

/// What a rule does while a key is hot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HotAction {
    /// Count, report and publish events; change nothing.
    Observe,
    /// Rate-limit each hot key on its own.
    Limit,
    /// Put the hot key (an `ip` or `user`) on the block list.
    Block,
    /// Store the hot key's GET answers in the local cache and serve them
    /// to GET and HEAD.
    Cache,
}

impl HotAction {
    pub fn as_str(self) -> &'static str {
        match self {
            HotAction::Observe => "observe",
            HotAction::Limit => "limit",
            HotAction::Block => "block",
            HotAction::Cache => "cache",
        }
    }
}

/// The per-hot-key limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HotLimit {
    pub limit: u64,
    pub window: HumanDuration,
    #[serde(default)]
    pub burst: Option<u32>,
}

fn default_hot_ttl() -> HumanDuration {
    HumanDuration::from(Duration::from_secs(10))
}

fn default_cool_ratio() -> f64 {
    0.8
}

pub fn default_max_tracked() -> usize {
    4096
}

fn default_actions() -> Vec<HotAction> {
    vec![HotAction::Observe]
}

/// Counters per sketch row: 256 KiB of sketch per rule.
const SKETCH_WIDTH: usize = 8192;
/// Candidates per rule at most: keeps a rule's memory bounded (~5 MiB).
const MAX_TRACKED_CEILING: usize = 32_768;

impl HotKeyConfig {
    pub fn compile(
        &self,
        name: String,
        path: &str,
        env: &PolicyEnv<'_>,
    ) -> Result<HotKeyRule, ConfigError> {
        let key = KeySpec::parse(&self.key, env.custom_keys, &format!("{path}.key"))?;
        in_range(self.threshold, 2..=MAX_COUNT, format!("{path}.threshold"))?;
        let window = self.window.as_duration();
        if window < Duration::from_millis(100) || window > Duration::from_secs(3600) {
            return Err(ConfigError::new(
                format!("{path}.window"),
                "must be between 100ms and 1h",
            ));
        }
        let hot_ttl = duration_in(
            self.hot_ttl.as_duration(),
            Duration::from_millis(100)..=MAX_TIMEOUT,
            format!("{path}.hot_ttl"),
        )?;
        if !(self.cool_ratio > 0.0 && self.cool_ratio <= 1.0) {
            return Err(ConfigError::new(
                format!("{path}.cool_ratio"),
                "must be in (0, 1]",
            ));
        }
        if self.max_tracked == 0 || self.max_tracked > MAX_TRACKED_CEILING {
            return Err(ConfigError::new(
                format!("{path}.max_tracked"),
                format!("must be between 1 and {MAX_TRACKED_CEILING}"),
            ));
        }
        if self.actions.is_empty() {
            return Err(ConfigError::new(
                format!("{path}.actions"),
                "name at least one action (observe, cache, limit, block)",
            ));
        }
        // The rule's own `status`, checked before the `limit` it is passed to.
        let block_status = check_status(self.status, 403, path)?;
        let has = |a| self.actions.contains(&a);
        let limiter = match (&self.limit, has(HotAction::Limit)) {
            (Some(l), true) => Some(
                RateLimitConfig {
                    name: None,
                    key: self.key.clone(),
                    limit: l.limit,
                    window: l.window,
                    algorithm: Algorithm::Gcra,
                    burst: l.burst,
                    max_keys: self.max_tracked,
                    shadow: false,
                    overrides: Vec::new(),
                    allow: Vec::new(),
                    status: self.status,
                    // Each instance limits a hot key on its own, also for
                    // `scope: global` rules (the detection is fleet-wide).
                    scope: Scope::Local,
                }
                .compile(name.clone(), &format!("{path}.limit"), env)?,
            ),
            (None, true) => {
                return Err(ConfigError::new(
                    format!("{path}.limit"),
                    "the `limit` action needs `limit: { limit, window }`",
                ))
            }
            (Some(_), false) => {
                return Err(ConfigError::new(
                    format!("{path}.limit"),
                    "is set but `actions` does not include `limit`",
                ))
            }
            (None, false) => None,
        };
        let block_for = match (self.block_for, has(HotAction::Block)) {
            (Some(d), true) => {
                if !matches!(key.parts(), [KeyRef::Ip] | [KeyRef::User]) {
                    return Err(ConfigError::new(
                        format!("{path}.actions"),
                        format!("`block` needs an `ip` or `user` key, not `{}`", self.key),
                    ));
                }
                let d = d.as_duration();
                if d < Duration::from_secs(1) || d > Duration::from_secs(30 * 24 * 3600) {
                    return Err(ConfigError::new(
                        format!("{path}.block_for"),
                        "must be between 1s and 30d",
                    ));
                }
                Some(d)
            }
            (None, true) => {
                return Err(ConfigError::new(
                    format!("{path}.block_for"),
                    "the `block` action needs `block_for`",
                ))
            }
            (Some(_), false) => {
                return Err(ConfigError::new(
                    format!("{path}.block_for"),
                    "is set but `actions` does not include `block`",
                ))
            }
            (None, false) => None,
        };
        let cache = match (&self.cache, has(HotAction::Cache)) {
            (c, true) => Some(
                c.clone()
                    .unwrap_or_else(|| serde_json::from_str("{}").expect("all defaults"))
                    .compile(&format!("{path}.cache"))?,
            ),
            (Some(_), false) => {
                return Err(ConfigError::new(
                    format!("{path}.cache"),
                    "is set but `actions` does not include `cache`",
                ))
            }
            (None, false) => None,
        };
        let fleet = self.scope.fleet(env, path)?;
        let mut actions: Vec<&'static str> = self.actions.iter().map(|a| a.as_str()).collect();
        actions.dedup();
        Ok(HotKeyRule::new(
            name,
            key,
            DetectorConfig {
                threshold: self.threshold,
                window,
                hot_ttl,
                cool_ratio: self.cool_ratio,
                max_tracked: self.max_tracked,
                sketch_width: SKETCH_WIDTH,
            },
            actions,
            limiter,
            block_for.map(|d| (d, block_status)),
            cache,
            env,
            fleet,
            serde_json::to_value(self).unwrap_or_default(),
        ))
    }
}
