//! The response cache: GET answers kept in memory and served to GET and
//! HEAD, with single flight on a miss and stale-if-error. It knows nothing
//! of what makes a key worth caching: the `hotkey` rule owns one per rule,
//! hands it the key's hash (and, for a fill, its text), and tells it which
//! keys to serve and when one cools.
//!
//! - [`store`]: the cache itself, its config, lookups, fills and counts;
//! - [`key`] and [`query`]: what makes two requests the same resource;
//! - [`entry`]: what is stored, its weight and its `Age`;
//! - [`freshness`]: how long the upstream lets an answer be stored.

mod entry;
mod freshness;
mod key;
mod query;
#[cfg(test)]
mod scope_tests;
mod store;
#[cfg(test)]
mod tests;

pub use entry::{CachedResponse, RuleKey};
pub use store::{CacheConfig, CacheCounts, KeyRef, ResponseCache};
