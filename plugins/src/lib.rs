//! Breakwater's policies, as plain Rust.
//!
//! Nothing in this crate knows about Pingora sessions. A policy sees a small
//! [`RequestView`] (method, path, headers, the request's keys and the time) and
//! returns a [`Decision`]; what it holds for the rest of the request (a
//! [`Guard`]) lives in the request's [`Exchange`] and learns the [`Outcome`]. That seam keeps every policy unit-testable with a fake clock and
//! benchmarkable on its own; the gateway crate does all of the I/O.

pub mod abuse;
pub mod balance;
pub mod block_list;
pub mod bounds;
pub mod breaker;
pub mod cache;
pub mod clock;
pub mod concurrency;
pub mod config_error;
pub mod dedupe;
pub mod deny;
pub mod duration;
pub mod exchange;
pub mod fleet;
pub mod flight;
pub mod health;
pub mod hotkey;
pub mod key_text;
pub mod keys;
pub mod log_throttle;
pub mod outcome;
pub mod overload;
pub mod policy;
pub mod rate_limit;
pub mod rejection;
pub mod report;
pub mod retry;
pub mod store;
#[cfg(test)]
pub(crate) mod testing;
pub mod window;

pub use clock::{Clock, FakeClock, MonotonicClock};
pub use config_error::ConfigError;
pub use exchange::{End, Exchange, Failure, Guard};
pub use keys::{KeyRef, KeySpec, KeyValue, RequestKeys};
pub use outcome::{ErrorKind, Outcome};
pub use policy::{Decision, Policy, PolicyEnv, RequestBody, RequestView, WaitOutcome, Waiter};
pub use rejection::{GrpcCode, LocalResponse, Rejection, RejectionKind};
