//! `abuse`: detect a key that goes over a threshold and block it for a while.
//!
//! Every request this policy sees is counted in a sliding window per key
//! (all requests, admitted or not: a crawler hammering through 429s is still
//! hammering). When a key's count in the window exceeds `threshold`, the key
//! goes on the process-wide block list for `block_for`, and it is refused
//! without touching the upstream until the block expires or an operator
//! removes it. Blocks on `ip` and `user` apply on every route; blocks on other
//! or combined keys apply where an `abuse` policy on that key runs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use crate::block_list::blocked_rejection;
use crate::block_list::BlockList;
use crate::bounds::{duration_in, in_range, MAX_COUNT, MAX_WINDOW};
use crate::duration::HumanDuration;
use crate::key_text::cut_key;
use crate::log_throttle::LogThrottle;
use crate::rate_limit::config_checks::{check_max_keys, check_status, default_max_keys};
use crate::report::{LimitCounts, LimitReport, TopKey};
use crate::store::{KeyNames, KeyState, KeyedStore};
use crate::window::{hottest, SlidingWindow, WindowSpec};
use crate::{Clock, ConfigError, Decision, Exchange, KeySpec, Policy, PolicyEnv, RequestView};

/// `abuse:` in a route's `policies`.
///
/// ```yaml
/// - abuse:
///     key: ip
///     threshold: 300        # requests in the window
///     window: 10s
///     block_for: 10m
///     status: 403           # or 429
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AbuseConfig {
    #[serde(default)]
    pub name: Option<String>,
    pub key: String,
    pub threshold: u64,
    pub window: HumanDuration,
    pub block_for: HumanDuration,
    #[serde(default)]
    pub status: Option<u16>,
    #[serde(default = "default_max_keys")]
    pub max_keys: usize,
    /// Only log and count what would be blocked.
    #[serde(default)]
    pub shadow: bool,
}

#[derive(Debug, Default)]
struct Entry {
    seen: SlidingWindow,
}

impl KeyState for Entry {
    type Context = WindowSpec;

    fn heat(&self, now: u64, spec: &WindowSpec) -> u64 {
        self.seen.heat(spec, now)
    }
}

pub struct Abuse {
    name: String,
    key: KeySpec,
    blocks: Arc<BlockList>,
    entries: KeyedStore<Entry>,
    names: KeyNames,
    threshold: u64,
    window: Duration,
    block_for: Duration,
    status: u16,
    shadow: bool,
    clock: Arc<dyn Clock>,
    admitted: AtomicU64,
    rejected: AtomicU64,
    shadow_rejected: AtomicU64,
    shadow_log: LogThrottle,
    config: serde_json::Value,
}

impl AbuseConfig {
    pub fn compile(
        &self,
        name: String,
        path: &str,
        env: &PolicyEnv<'_>,
    ) -> Result<Abuse, ConfigError> {
        let key = KeySpec::parse(&self.key, env.custom_keys, &format!("{path}.key"))?;
        in_range(self.threshold, 1..=MAX_COUNT, format!("{path}.threshold"))?;
        let window = duration_in(
            self.window.as_duration(),
            Duration::from_millis(10)..=MAX_WINDOW,
            format!("{path}.window"),
        )?;
        let block_for = self.block_for.as_duration();
        if block_for < Duration::from_secs(1) || block_for > Duration::from_secs(30 * 24 * 3600) {
            return Err(ConfigError::new(
                format!("{path}.block_for"),
                "must be between 1s and 30d",
            ));
        }
        check_max_keys(self.max_keys, path)?;
        let status = check_status(self.status, 403, path)?;
        Ok(Abuse {
            name,
            key,
            blocks: env.blocks.clone(),
            entries: KeyedStore::new(self.max_keys, WindowSpec::new(window, 4)),
            names: KeyNames::new(4096),
            threshold: self.threshold,
            window,
            block_for,
            status,
            shadow: self.shadow,
            clock: env.clock.clone(),
            admitted: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            shadow_rejected: AtomicU64::new(0),
            shadow_log: LogThrottle::new(1_000_000_000),
            config: serde_json::to_value(self).unwrap_or_default(),
        })
    }
}

impl Policy for Abuse {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "abuse"
    }

    fn on_request(&self, req: &RequestView<'_>, _exchange: &mut Exchange) -> Decision {
        let Some(hash) = self.blocks.hash_of(&self.key, req.keys) else {
            return Decision::Continue;
        };
        if let Some(hit) = self.blocks.check(hash) {
            self.rejected.fetch_add(1, Ordering::Relaxed);
            return Decision::Reject(blocked_rejection(&hit));
        }
        let now = req.now_nanos;
        let tick = self.entries.context().tick(now);
        let seen = self.entries.with(hash, now, Entry::default, |e| {
            e.seen.add_at(tick, 1);
            e.seen.estimate_scaled_at(tick)
        });
        let threshold = tick.scaled(self.threshold);
        // Name keys when first seen in a window and when they near the threshold.
        if seen == tick.scaled(1) || seen * 2 >= threshold {
            self.names.note(
                hash,
                now,
                || self.key.render(req.keys),
                |h| self.entries.peek(h, |_| ()).is_some(),
            );
        }
        if seen <= threshold {
            self.admitted.fetch_add(1, Ordering::Relaxed);
            return Decision::Continue;
        }
        let estimate = tick.unscale(seen);
        let value = cut_key(self.key.render(req.keys).unwrap_or_default());
        let reason = format!(
            "{:.0} requests in {} (threshold {})",
            estimate,
            humantime::format_duration(self.window),
            self.threshold
        );
        if self.shadow {
            self.shadow_rejected.fetch_add(1, Ordering::Relaxed);
            if let Some(held_back) = self.shadow_log.admit(now) {
                tracing::info!(target: "breakwater::shadow", policy = %self.name, key = %value, %reason, held_back,
                    "shadow abuse detector would have blocked");
            }
            return Decision::Continue;
        }
        let text = format!("{}:{value}", self.key.text());
        self.rejected.fetch_add(1, Ordering::Relaxed);
        Decision::Reject(self.blocks.block_and_refuse(
            hash,
            text,
            self.block_for,
            reason,
            &self.name,
            self.status,
        ))
    }

    fn limit_report(&self, top: usize) -> Option<LimitReport> {
        let now = self.clock.now_nanos();
        let hot = hottest(&self.entries, top, self.entries.context(), now, |e| &e.seen);
        let top_keys = TopKey::list(hot, &self.names, self.window);
        let stats = self.entries.stats();
        Some(LimitReport {
            name: self.name.clone(),
            kind: "abuse",
            config: self.config.clone(),
            tracked_keys: stats.tracked,
            max_keys: stats.max_keys,
            evictions: stats.evictions,
            counts: LimitCounts {
                admitted: self.admitted.load(Ordering::Relaxed),
                rejected: self.rejected.load(Ordering::Relaxed),
                shadow_rejected: self.shadow_rejected.load(Ordering::Relaxed),
            },
            top_keys,
            in_flight: None,
            queued: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{keys, Env};

    fn abuse(yaml: &str, env: &Env) -> Abuse {
        let cfg: AbuseConfig = serde_yaml::from_str(yaml).unwrap();
        cfg.compile("crawler".into(), "p", &env.policy_env())
            .unwrap()
    }

    #[test]
    fn blocks_over_threshold_then_unblocks_after_ttl() {
        let env = Env::new();
        let p = abuse(
            "{ key: ip, threshold: 10, window: 1s, block_for: 30s, status: 429 }",
            &env,
        );
        let bad = keys("203.0.113.9", None);
        assert_eq!(env.admitted(&p, &bad, 10), 10);
        match env.decide(&p, &bad).0 {
            Decision::Reject(r) => {
                assert_eq!(r.status, 429);
                assert_eq!(r.kind, "blocked");
                assert_eq!(r.policy, "crawler");
                assert!(r.reason.contains("ip:203.0.113.9"), "{}", r.reason);
            }
            other => panic!("expected a block, got {other:?}"),
        }
        assert_eq!(env.blocks.list()[0].key, "ip:203.0.113.9");
        // Others are untouched; the blocked key stays blocked even when quiet.
        assert_eq!(env.admitted(&p, &keys("203.0.113.10", None), 5), 5);
        env.clock.advance(Duration::from_secs(29));
        assert_eq!(env.admitted(&p, &bad, 1), 0);
        env.clock.advance(Duration::from_secs(1));
        assert_eq!(env.admitted(&p, &bad, 1), 1);
        assert!(env.blocks.is_empty());
    }

    #[test]
    fn admin_blocks_on_its_key_are_enforced() {
        let env = Env::new();
        let p = abuse(
            "{ key: user, threshold: 1000, window: 1s, block_for: 1m }",
            &env,
        );
        env.blocks
            .block_text(
                "user:mallory",
                Duration::from_secs(60),
                "by hand".into(),
                "admin",
                403,
            )
            .unwrap();
        assert_eq!(env.admitted(&p, &keys("10.0.0.1", Some("mallory")), 3), 0);
        assert_eq!(env.admitted(&p, &keys("10.0.0.1", Some("alice")), 3), 3);
    }

    #[test]
    fn shadow_mode_only_counts() {
        let env = Env::new();
        let p = abuse(
            "{ key: ip, threshold: 5, window: 1s, block_for: 1m, shadow: true }",
            &env,
        );
        assert_eq!(env.admitted(&p, &keys("10.0.0.1", None), 20), 20);
        assert!(env.blocks.is_empty());
        let r = p.limit_report(3).unwrap();
        assert_eq!(r.counts.shadow_rejected, 15);
        assert_eq!(r.top_keys[0].key, "10.0.0.1");
        assert_eq!(r.top_keys[0].count, 20.0);
    }

    #[test]
    fn config_errors_name_their_fields() {
        let env = Env::new();
        for (yaml, path) in [
            (
                "{ key: ip, threshold: 0, window: 1s, block_for: 1m }",
                "p.threshold",
            ),
            (
                "{ key: ip, threshold: 1, window: 1ms, block_for: 1m }",
                "p.window",
            ),
            (
                "{ key: ip, threshold: 1, window: 1s, block_for: 10ms }",
                "p.block_for",
            ),
            (
                "{ key: ip, threshold: 18446744073709551615, window: 1s, block_for: 1m }",
                "p.threshold",
            ),
            (
                "{ key: ip, threshold: 1, window: 31d, block_for: 1m }",
                "p.window",
            ),
            (
                "{ key: nope, threshold: 1, window: 1s, block_for: 1m }",
                "p.key",
            ),
        ] {
            let cfg: AbuseConfig = serde_yaml::from_str(yaml).unwrap();
            let err = cfg
                .compile("n".into(), "p", &env.policy_env())
                .err()
                .expect(yaml);
            assert_eq!(err.path, path);
        }
    }
}
