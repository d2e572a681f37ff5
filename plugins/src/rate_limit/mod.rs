//! `rate_limit`: per-key limits by GCRA (governor) or a sliding window.

mod config;
mod gcra;
mod headers;
mod policy;

pub use config::{Algorithm, LimitOverride, RateLimitConfig};
pub use policy::RateLimit;

#[cfg(test)]
mod tests;
