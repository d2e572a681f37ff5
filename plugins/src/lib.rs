//! Breakwater's policies, as plain Rust.
//!
//! Nothing in this crate knows about Pingora sessions. A policy sees a small
//! [`RequestView`] (method, path, headers, the request's keys and the time) and
//! returns a [`Decision`]. After the upstream answers or fails, it is told the
//! [`Outcome`]. That seam keeps every policy unit-testable with a fake clock and
//! benchmarkable on its own; the gateway crate does all of the I/O.

pub mod abuse;
pub mod block_list;
pub mod bounds;
pub mod breaker;
pub mod clock;
pub mod concurrency;
pub mod config_error;
pub mod dedupe;
pub mod deny;
pub mod duration;
pub mod fleet;
pub mod flight;
pub mod hotkey;
pub mod key_text;
pub mod keys;
pub mod log_throttle;
pub mod policy;
pub mod rate_limit;
pub mod report;
pub mod retry;
pub mod store;
#[cfg(test)]
pub(crate) mod testing;
pub mod window;

pub use clock::{Clock, FakeClock, MonotonicClock};
pub use config_error::ConfigError;
pub use keys::{KeyRef, KeySpec, KeyValue, RequestKeys};
pub use policy::{
    Decision, ErrorKind, LocalResponse, Outcome, Permit, Permits, Policy, PolicyEnv, Rejection,
    RequestBody, RequestView, ResponseTap, WaitOutcome, Waiter,
};
