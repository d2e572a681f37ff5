//! Fleet mode: the gateway's link to its fleet through Redis.
//!
//! [`sync::FleetSync`] flushes the global policies' deltas and reads fleet
//! totals every `sync_interval`; [`relay::FleetEvents`] relays hot-key and
//! block events over pub/sub. Both run as background services: a request
//! never waits on Redis. The local half of every global policy, and the
//! error bound of fleet-wide limits, are in `breakwater_plugins::fleet`.

pub mod config;
pub mod events;
pub mod link;
pub mod relay;
pub mod script;
pub mod seed;
pub mod status;
pub mod sync;

pub use config::{FleetConfig, FleetFile};
pub use status::FleetStatus;
