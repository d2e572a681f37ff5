//! Bounded per-key state.

mod hashing;
mod keyed;
mod names;

pub use hashing::KeyHasher;
pub use keyed::{KeyState, KeyedStore, StoreStats};
pub use names::{KeyNames, NAME_BYTES};
