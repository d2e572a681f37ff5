//! The `hotkey:` config and its validation.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::detector::DetectorConfig;
use super::policy::HotKeyRule;
use crate::bounds::{duration_in, in_range, MAX_COUNT, MAX_TIMEOUT, MAX_WINDOW};
use crate::cache::{CacheConfig, ResponseCache};
use crate::config_error::ConfigPath;
use crate::duration::HumanDuration;
use crate::fleet::Scope;
use crate::rate_limit::config_checks::check_status;
use crate::rate_limit::{Algorithm, RateLimit, RateLimitConfig};
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
    /// Validates the rule and builds it. The parts are checked in the order
    /// of the file's fields, so that an error names the first bad one:
    /// detection, actions, status, then each action's own settings.
    pub fn compile(
        &self,
        name: String,
        path: &str,
        env: &PolicyEnv<'_>,
    ) -> Result<HotKeyRule, ConfigError> {
        let path = ConfigPath::from(path);
        let key = KeySpec::parse(&self.key, env.custom_keys, &path.field("key"))?;
        let detector = self.detector_config(&path)?;
        if self.actions.is_empty() {
            return Err(path
                .field("actions")
                .error("name at least one action (observe, cache, limit, block)"));
        }
        // The rule's own `status`, checked before the `limit` it is passed to.
        let block_status = check_status(self.status, 403, &path)?;
        let limiter = self.limit_part(&name, &path, env)?;
        let block = self.block_part(&key, &path)?;
        let cache = self.cache_part(&path)?;
        let fleet = self.scope.fleet(env, &path)?;
        let mut actions: Vec<&'static str> = self.actions.iter().map(|a| a.as_str()).collect();
        actions.dedup();
        Ok(HotKeyRule::new(
            name,
            key,
            detector,
            actions,
            limiter,
            block.map(|d| (d, block_status)),
            cache,
            env,
            fleet,
            serde_json::to_value(self).unwrap_or_default(),
        ))
    }

    fn has(&self, action: HotAction) -> bool {
        self.actions.contains(&action)
    }

    /// What makes a key hot and keeps it so: `threshold`, `window`,
    /// `hot_ttl`, `cool_ratio` and the `max_tracked` memory cap.
    fn detector_config(&self, path: &ConfigPath) -> Result<DetectorConfig, ConfigError> {
        in_range(self.threshold, 2..=MAX_COUNT, path.field("threshold"))?;
        let window = duration_in(
            self.window.as_duration(),
            Duration::from_millis(100)..=Duration::from_secs(3600),
            path.field("window"),
        )?;
        let hot_ttl = duration_in(
            self.hot_ttl.as_duration(),
            Duration::from_millis(100)..=MAX_TIMEOUT,
            path.field("hot_ttl"),
        )?;
        if !(self.cool_ratio > 0.0 && self.cool_ratio <= 1.0) {
            return Err(path.field("cool_ratio").error("must be in (0, 1]"));
        }
        in_range(
            self.max_tracked,
            1..=MAX_TRACKED_CEILING,
            path.field("max_tracked"),
        )?;
        Ok(DetectorConfig {
            threshold: self.threshold,
            window,
            hot_ttl,
            cool_ratio: self.cool_ratio,
            max_tracked: self.max_tracked,
            sketch_width: SKETCH_WIDTH,
        })
    }

    /// With the `limit` action: each hot key's own GCRA limit, as
    /// Sentinel's hot-parameter rules. `limit:` and the action come together.
    fn limit_part(
        &self,
        name: &str,
        path: &ConfigPath,
        env: &PolicyEnv<'_>,
    ) -> Result<Option<RateLimit>, ConfigError> {
        let at = path.field("limit");
        let l = match (&self.limit, self.has(HotAction::Limit)) {
            (Some(l), true) => l,
            (None, true) => {
                return Err(at.error("the `limit` action needs `limit: { limit, window }`"))
            }
            (Some(_), false) => {
                return Err(at.error("is set but `actions` does not include `limit`"))
            }
            (None, false) => return Ok(None),
        };
        let config = RateLimitConfig {
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
        };
        config.compile(name.to_string(), &at, env).map(Some)
    }

    /// With the `block` action: how long a hot key stays on the block list.
    /// Only `ip` and `user` keys can be blocked (the list is checked for
    /// those on every request).
    fn block_part(
        &self,
        key: &KeySpec,
        path: &ConfigPath,
    ) -> Result<Option<Duration>, ConfigError> {
        let at = path.field("block_for");
        let d = match (self.block_for, self.has(HotAction::Block)) {
            (Some(d), true) => d.as_duration(),
            (None, true) => return Err(at.error("the `block` action needs `block_for`")),
            (Some(_), false) => {
                return Err(at.error("is set but `actions` does not include `block`"))
            }
            (None, false) => return Ok(None),
        };
        if !matches!(key.parts(), [KeyRef::Ip] | [KeyRef::User]) {
            return Err(path.field("actions").error(format!(
                "`block` needs an `ip` or `user` key, not `{}`",
                self.key
            )));
        }
        duration_in(d, Duration::from_secs(1)..=MAX_WINDOW, at).map(Some)
    }

    /// With the `cache` action: the hot keys' response cache (`cache:` may
    /// be left out: its defaults apply).
    fn cache_part(&self, path: &ConfigPath) -> Result<Option<ResponseCache>, ConfigError> {
        let at = path.field("cache");
        match (&self.cache, self.has(HotAction::Cache)) {
            (c, true) => {
                let c = c.clone().unwrap_or_else(|| {
                    serde_json::from_str("{}").expect("every cache field has a default")
                });
                c.compile(&at).map(Some)
            }
            (Some(_), false) => Err(at.error("is set but `actions` does not include `cache`")),
            (None, false) => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Env;
    use crate::Policy as _;

    fn cfg(yaml: &str) -> HotKeyConfig {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn at() -> ConfigPath {
        ConfigPath::from("p")
    }

    fn ip() -> KeySpec {
        KeySpec::parse("ip", &[], "k").unwrap()
    }

    #[test]
    fn detector_part_takes_the_defaults_and_names_each_bad_field() {
        let d = cfg("{ key: ip, threshold: 10, window: 1s }")
            .detector_config(&at())
            .unwrap();
        assert_eq!(
            d,
            DetectorConfig {
                threshold: 10,
                window: Duration::from_secs(1),
                hot_ttl: Duration::from_secs(10),
                cool_ratio: 0.8,
                max_tracked: 4096,
                sketch_width: SKETCH_WIDTH,
            }
        );
        for (yaml, path, message) in [
            (
                "{ key: ip, threshold: 1, window: 1s }",
                "p.threshold",
                "must be between 2 and 1000000000",
            ),
            (
                "{ key: ip, threshold: 10, window: 2h }",
                "p.window",
                "must be between 100ms and 1h",
            ),
            (
                "{ key: ip, threshold: 10, window: 1s, hot_ttl: 1ms }",
                "p.hot_ttl",
                "must be between 100ms and 24h",
            ),
            (
                "{ key: ip, threshold: 10, window: 1s, cool_ratio: 0 }",
                "p.cool_ratio",
                "must be in (0, 1]",
            ),
            (
                "{ key: ip, threshold: 10, window: 1s, max_tracked: 0 }",
                "p.max_tracked",
                "must be between 1 and 32768",
            ),
        ] {
            let e = cfg(yaml).detector_config(&at()).unwrap_err();
            assert_eq!(
                (e.path.as_str(), e.message.as_str()),
                (path, message),
                "{yaml}"
            );
        }
    }

    #[test]
    fn limit_part_needs_the_action_and_its_settings_together() {
        let env = Env::new();
        let penv = env.policy_env();
        let part = |yaml: &str| cfg(yaml).limit_part("r", &at(), &penv);
        assert!(part("{ key: ip, threshold: 10, window: 1s }")
            .unwrap()
            .is_none());
        let l = part("{ key: ip, threshold: 10, window: 1s, actions: [limit], limit: { limit: 5, window: 1s } }")
            .unwrap()
            .expect("a limiter");
        assert_eq!(l.name(), "r");
        let report = l.limit_report(0).unwrap();
        assert_eq!(report.max_keys, 4096, "as many keys as the rule tracks");
        for (yaml, path) in [
            ("{ key: ip, threshold: 10, window: 1s, actions: [limit] }", "p.limit"),
            ("{ key: ip, threshold: 10, window: 1s, limit: { limit: 5, window: 1s } }", "p.limit"),
            (
                "{ key: ip, threshold: 10, window: 1s, actions: [limit], limit: { limit: 0, window: 1s } }",
                "p.limit.limit",
            ),
        ] {
            let e = part(yaml).err().expect("rejected");
            assert_eq!(e.path, path, "{yaml}: {e}");
        }
    }

    #[test]
    fn block_part_blocks_ip_or_user_keys_for_a_bounded_time() {
        let part = |yaml: &str, key: &KeySpec| cfg(yaml).block_part(key, &at());
        assert_eq!(
            part("{ key: ip, threshold: 10, window: 1s }", &ip()),
            Ok(None)
        );
        assert_eq!(
            part(
                "{ key: ip, threshold: 10, window: 1s, actions: [block], block_for: 5m }",
                &ip()
            ),
            Ok(Some(Duration::from_secs(300)))
        );
        let endpoint = KeySpec::parse("endpoint", &[], "k").unwrap();
        let e = part(
            "{ key: endpoint, threshold: 10, window: 1s, actions: [block], block_for: 5m }",
            &endpoint,
        )
        .unwrap_err();
        assert_eq!(e.path, "p.actions");
        assert!(e.message.contains("needs an `ip` or `user` key"), "{e}");
        for (yaml, message) in [
            (
                "{ key: ip, threshold: 10, window: 1s, actions: [block] }",
                "the `block` action needs `block_for`",
            ),
            (
                "{ key: ip, threshold: 10, window: 1s, block_for: 5m }",
                "is set but `actions` does not include `block`",
            ),
            (
                "{ key: ip, threshold: 10, window: 1s, actions: [block], block_for: 500ms }",
                "must be between 1s and 30d",
            ),
            (
                "{ key: ip, threshold: 10, window: 1s, actions: [block], block_for: 31d }",
                "must be between 1s and 30d",
            ),
        ] {
            let e = part(yaml, &ip()).unwrap_err();
            assert_eq!(
                (e.path.as_str(), e.message.as_str()),
                ("p.block_for", message),
                "{yaml}"
            );
        }
    }

    #[test]
    fn cache_part_applies_defaults_and_needs_the_action() {
        let part = |yaml: &str| cfg(yaml).cache_part(&at());
        assert!(part("{ key: ip, threshold: 10, window: 1s }")
            .unwrap()
            .is_none());
        assert!(
            part("{ key: ip, threshold: 10, window: 1s, actions: [cache] }")
                .unwrap()
                .is_some(),
            "`cache:` may be left out"
        );
        let e = part("{ key: ip, threshold: 10, window: 1s, cache: { ttl: 5s } }")
            .err()
            .expect("rejected");
        assert_eq!(e.path, "p.cache");
        let e =
            part("{ key: ip, threshold: 10, window: 1s, actions: [cache], cache: { ttl: 0s } }")
                .err()
                .expect("rejected");
        assert_eq!(e.path, "p.cache.ttl");
    }
}
