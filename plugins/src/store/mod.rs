//! Bounded per-key state.

mod fleet_key;
mod hashing;
mod key_encoding;
mod keyed;
mod names;

pub use fleet_key::FleetKey;
pub use hashing::KeyHasher;
pub use keyed::{KeyState, KeyedStore, StoreStats};
pub use names::{KeyNames, NAME_BYTES};
