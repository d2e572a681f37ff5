//! The avalanche lab's two actors, modelled on the seed incident.
//!
//! - [`provider`]: service B — a fixed worker pool, a FIFO queue in front of
//!   it, and no idea when its callers have given up.
//! - [`consumer`]: service A — open-loop Poisson arrivals, a per-call timeout
//!   and naive retries, recording goodput per second.

pub mod consumer;
pub mod provider;
mod rng;
