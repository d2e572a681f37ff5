//! `rate_limit`: per-key limits by GCRA (governor) or a sliding window.

mod config;
/// Validation helpers shared with other limit-like policies.
pub(crate) mod config_checks {
    pub use super::config::{check_max_keys, check_status, default_max_keys};
}
mod gcra;
mod headers;
mod policy;

pub use config::{Algorithm, LimitOverride, RateLimitConfig};
pub use policy::RateLimit;

#[cfg(test)]
mod tests;
