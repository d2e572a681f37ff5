//! The process-wide view of the fleet that policies consult.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use crate::store::{FleetKey, KeyHasher};

/// What fleet mode is configured with, as policies need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetSettings {
    pub sync_interval: Duration,
    /// Keys the fleet-wide key hasher; every instance must use the same
    /// (derived from `fleet.hash_seed`).
    pub hash_key: FleetKey,
    /// The divisor of global limits while Redis is unreachable; `None`: the
    /// number of peers last seen (at least 1).
    pub expected_instances: Option<u32>,
}

/// A change to the block list that the fleet should hear about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlockChange {
    /// `key` is the block's text as shown (cut to `KEY_TEXT_MAX` bytes);
    /// `hash`, the fleet hash of the full key, is its identity.
    Added {
        key: String,
        hash: u64,
        ttl: Duration,
        reason: String,
        source: String,
        status: u16,
    },
    Removed {
        key: String,
        hash: u64,
    },
}

/// Shared by every global policy and the gateway's sync task.
///
/// The mode is one atomic flag: the sync task sets it after each attempt
/// and policies read it on every decision.
#[derive(Debug)]
pub struct Fleet {
    settings: FleetSettings,
    hasher: KeyHasher,
    global: AtomicBool,
    peers_seen: AtomicU32,
}

impl Fleet {
    /// A fleet that starts degraded: until the first sync succeeds, nothing
    /// is known about the other instances.
    pub fn new(settings: FleetSettings) -> Self {
        Self {
            hasher: KeyHasher::fleet(settings.hash_key),
            settings,
            global: AtomicBool::new(false),
            peers_seen: AtomicU32::new(1),
        }
    }

    pub fn settings(&self) -> &FleetSettings {
        &self.settings
    }

    /// The hasher every instance shares: global keys, hot keys and blocks are
    /// named by it in Redis.
    pub fn hasher(&self) -> &KeyHasher {
        &self.hasher
    }

    /// True while syncs succeed: decisions use fleet totals.
    pub fn is_global(&self) -> bool {
        self.global.load(Ordering::Relaxed)
    }

    pub fn set_global(&self, global: bool) {
        self.global.store(global, Ordering::Relaxed);
    }

    /// Records how many instances (this one included) the last sync saw.
    pub fn set_peers_seen(&self, n: u32) {
        self.peers_seen.store(n.max(1), Ordering::Relaxed);
    }

    /// The divisor of a global limit in degraded mode.
    pub fn expected_instances(&self) -> u32 {
        self.settings
            .expected_instances
            .unwrap_or_else(|| self.peers_seen.load(Ordering::Relaxed))
            .max(1)
    }

    /// `limit` shared out among the expected instances, rounded up so that a
    /// limit is never cut to zero.
    pub fn local_share(&self, limit: u64) -> u64 {
        limit.div_ceil(u64::from(self.expected_instances())).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(expected: Option<u32>) -> FleetSettings {
        FleetSettings {
            sync_interval: Duration::from_millis(100),
            hash_key: crate::store::FleetKey::from_seed("test-fleet-seed-1"),
            expected_instances: expected,
        }
    }

    #[test]
    fn local_share_divides_by_configured_or_seen_instances() {
        let fleet = Fleet::new(settings(None));
        assert!(!fleet.is_global(), "degraded until a sync succeeds");
        assert_eq!(fleet.local_share(100), 100);
        fleet.set_peers_seen(3);
        assert_eq!(fleet.local_share(100), 34);
        assert_eq!(fleet.local_share(1), 1);
        fleet.set_peers_seen(0);
        assert_eq!(fleet.expected_instances(), 1);
        let fixed = Fleet::new(settings(Some(4)));
        fixed.set_peers_seen(2);
        assert_eq!(fixed.local_share(100), 25);
    }
}
