//! The compiled config: one immutable snapshot, swapped whole.
//!
//! Every request loads the current `Arc<Snapshot>` once, at the start, and
//! keeps it to the end, so a reload never changes the rules under a request in
//! flight. A reload builds the next snapshot completely — parsing, validation,
//! clusters, policies — and only then stores it with one `ArcSwap::store`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use breakwater_plugins::{Clock, Policy};

use crate::config::admin_access::AdminAccess;
use crate::config::file::FileConfig;
use crate::config::registry::{Registries, TypedPolicy};
use crate::route::keys::KeyExtractor;
use crate::route::Router;
use crate::upstream::Cluster;

/// A compiled policy, kept by name so the next reload can carry its state over.
pub struct CompiledPolicy {
    /// The policy's config, serialized: equal fingerprints mean equal configs.
    pub fingerprint: String,
    /// The policy as chains hold it: the same object as [`Self::typed`].
    pub policy: Arc<dyn Policy>,
    /// The policy by its concrete type, to carry over and to register.
    pub typed: TypedPolicy,
}

impl CompiledPolicy {
    pub fn new(fingerprint: String, typed: TypedPolicy) -> Self {
        Self {
            fingerprint,
            policy: typed.as_policy(),
            typed,
        }
    }
}

/// Everything a request needs, compiled and validated.
pub struct Snapshot {
    /// Counts applied configs since start: 1 is the startup config.
    pub generation: u64,
    /// Hash of the config text, shown on `/config`.
    pub hash: String,
    pub loaded_at: SystemTime,
    pub source: FileConfig,
    pub router: Router,
    pub keys: KeyExtractor,
    pub clusters: BTreeMap<String, Arc<Cluster>>,
    pub policies: BTreeMap<String, CompiledPolicy>,
    /// The policies by what the admin, the metrics and load balancing
    /// need of them, typed.
    pub registries: Registries,
    pub clock: Arc<dyn Clock>,
    /// Who may use the admin: its tokens, allowed hosts and stream cap.
    pub admin: AdminAccess,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("generation", &self.generation)
            .field("hash", &self.hash)
            .field("routes", &self.router.routes.len())
            .field("clusters", &self.clusters.len())
            .finish()
    }
}

/// The live snapshot.
pub type SnapshotStore = ArcSwap<Snapshot>;

/// A short, stable hash of the config text.
pub fn text_hash(text: &str) -> String {
    // FNV-1a 64: stable across builds and processes, unlike `DefaultHasher`,
    // so two instances with the same file report the same hash.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}
