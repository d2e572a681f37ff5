//! Memory pressure on the bounded stores, logged.
//!
//! Every key store (rate limits, abuse detectors, concurrency keys, hot-key
//! candidates) is capped by `max_keys` and every response cache by
//! `max_bytes`: past the cap they evict, so memory stays bounded, and the
//! evictions are counted (`breakwater_limit_evictions_total`,
//! `breakwater_cache_evictions_total`). A count is easy to miss; a store
//! that starts evicting live keys is forgetting who it limits, and an
//! operator should hear of it. This watcher looks at the counts every
//! [`EVERY`] and logs a `WARN` under `breakwater::memory` for each store
//! whose evictions grew, once per look: at most one line a store a
//! minute, however hard it is pushed.

use std::collections::HashMap;
use std::time::Duration;

use crate::config::snapshot::Snapshot;

/// How often the stores are looked at.
pub const EVERY: Duration = Duration::from_secs(60);

/// The evictions seen at the last look, per store.
#[derive(Default)]
pub struct Pressure {
    seen: HashMap<(&'static str, String), u64>,
}

/// A store that evicted since the last look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evicting {
    pub store: &'static str,
    pub policy: String,
    pub evicted: u64,
    pub held: u64,
    pub cap: u64,
}

/// One store's eviction count, what it holds and its cap, now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reading {
    pub store: &'static str,
    pub policy: String,
    pub evictions: u64,
    pub held: u64,
    pub cap: u64,
}

impl Pressure {
    /// Looks at every store of `snapshot`; logs and returns those that
    /// evicted since the last look.
    pub fn look(&mut self, snapshot: &Snapshot) -> Vec<Evicting> {
        let evicting = self.compare(readings(snapshot));
        for e in &evicting {
            let what = match e.store {
                "cache" => "cache at max_bytes: answers evicted before their time",
                _ => "key store at max_keys: live keys evicted (their counts are forgotten)",
            };
            tracing::warn!(
                target: "breakwater::memory",
                policy = %e.policy,
                store = e.store,
                evicted = e.evicted,
                held = e.held,
                cap = e.cap,
                "{what}"
            );
        }
        evicting
    }

    /// The stores whose evictions grew since the last readings. A store
    /// rebuilt by a reload counts from zero again: a count below the last
    /// one is all new.
    fn compare(&mut self, readings: Vec<Reading>) -> Vec<Evicting> {
        let mut seen = HashMap::with_capacity(readings.len());
        let mut evicting = Vec::new();
        for r in readings {
            let key = (r.store, r.policy);
            let before = self.seen.get(&key).copied().unwrap_or(0);
            let evicted = if r.evictions >= before {
                r.evictions - before
            } else {
                r.evictions
            };
            if evicted > 0 {
                evicting.push(Evicting {
                    store: key.0,
                    policy: key.1.clone(),
                    evicted,
                    held: r.held,
                    cap: r.cap,
                });
            }
            seen.insert(key, r.evictions);
        }
        self.seen = seen;
        evicting
    }
}

/// Every bounded store of `snapshot`: the policies' key stores and the
/// hot-key rules' caches.
fn readings(snapshot: &Snapshot) -> Vec<Reading> {
    let registries = &snapshot.registries;
    let keys = registries.limits.iter().filter_map(|(name, limit)| {
        let r = limit.report(0).filter(|r| r.max_keys > 0)?;
        Some(Reading {
            store: "keys",
            policy: name.clone(),
            evictions: r.evictions,
            held: r.tracked_keys as u64,
            cap: r.max_keys as u64,
        })
    });
    let caches = registries.hot_keys.iter().filter_map(|(name, rule)| {
        let c = rule.cache()?.counts();
        Some(Reading {
            store: "cache",
            policy: name.clone(),
            evictions: c.evicted,
            held: c.bytes,
            cap: c.max_bytes,
        })
    });
    keys.chain(caches).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(store: &'static str, policy: &str, evictions: u64) -> Reading {
        Reading {
            store,
            policy: policy.into(),
            evictions,
            held: 10,
            cap: 10,
        }
    }

    #[test]
    fn only_stores_that_evicted_since_the_last_look_are_reported() {
        let mut p = Pressure::default();
        let first = p.compare(vec![reading("keys", "a", 0), reading("cache", "b", 5)]);
        assert_eq!(first.len(), 1);
        assert_eq!((first[0].policy.as_str(), first[0].evicted), ("b", 5));
        // Nothing new: nothing said.
        assert!(p
            .compare(vec![reading("keys", "a", 0), reading("cache", "b", 5)])
            .is_empty());
        let grew = p.compare(vec![reading("keys", "a", 7), reading("cache", "b", 6)]);
        let got: Vec<_> = grew.iter().map(|e| (e.store, e.evicted)).collect();
        assert_eq!(got, vec![("keys", 7), ("cache", 1)]);
    }

    #[test]
    fn a_store_rebuilt_by_a_reload_counts_from_zero() {
        let mut p = Pressure::default();
        p.compare(vec![reading("keys", "a", 100)]);
        let after = p.compare(vec![reading("keys", "a", 3)]);
        assert_eq!(after[0].evicted, 3);
        // A store that went away is forgotten.
        p.compare(vec![]);
        assert_eq!(p.compare(vec![reading("keys", "a", 3)])[0].evicted, 3);
    }
}
