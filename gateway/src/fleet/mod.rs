//! Fleet mode: the gateway's link to its fleet through Redis.
//!
//! [`sync::FleetSync`] flushes the global policies' deltas and reads fleet
//! totals every `sync_interval`; [`relay::FleetEvents`] relays hot-key and
//! block events over pub/sub. Both run as background services: a request
//! never waits on Redis. The local half of every global policy, and the
//! error bound of fleet-wide limits, are in `breakwater_plugins::fleet`.

pub mod events;
pub mod link;
pub mod relay;
pub mod script;
pub mod status;
pub mod sync;

pub use crate::config::fleet_file::{FleetConfig, FleetFile, RedisTarget};
pub use status::FleetStatus;

/// What the fleet's loops need of the process: the live snapshot (the
/// global policies to sync), the policy clock and the block list. Not the
/// whole gateway state, which holds the fleet's status: that would make the
/// fleet and the state import each other.
#[derive(Clone)]
pub struct Local {
    pub store: std::sync::Arc<crate::config::snapshot::SnapshotStore>,
    pub clock: std::sync::Arc<dyn breakwater_plugins::Clock>,
    pub blocks: std::sync::Arc<breakwater_plugins::block_list::BlockList>,
}

impl Local {
    /// The live snapshot.
    pub fn snapshot(&self) -> std::sync::Arc<crate::config::snapshot::Snapshot> {
        self.store.load_full()
    }
}
