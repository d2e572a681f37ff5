//! Bounded per-key state.

mod hashing;
mod keyed;

pub use hashing::KeyHasher;
pub use keyed::{KeyState, KeyedStore, StoreStats};
