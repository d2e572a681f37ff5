//! Circuit breaking: fail fast while an upstream is sick, recover by probing.
//!
//! One file per concern, as linkerd2-proxy's breakers are laid out:
//! [`config`] (the YAML and its validation), [`classify`] (what counts as a
//! failure or a slow call), [`trip`] (the strategies that decide to open:
//! error ratio, slow-call ratio, consecutive failures) and [`machine`] (the
//! closed → open → half-open state machine, its probes and backoff).

mod classify;
mod config;
mod machine;
mod policy;
mod trip;

pub use classify::{CallResult, Classifier};
pub use config::{BreakerConfig, BreakerScope, FallbackConfig};
pub use machine::{
    Breaker, BreakerPermit, BreakerSnapshot, BreakerState, Recovery, Ticket, Transitions,
};
pub use policy::{CircuitBreaker, BREAKER_HEADER};
pub use trip::TripRules;

#[cfg(test)]
mod tests;
