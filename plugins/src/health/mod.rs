//! Active health checks: probes of each endpoint, apart from user traffic,
//! so an endpoint that fails leaves rotation before users' requests fail on
//! it (the endpoint breakers, `breaker`, learn only from those).
//!
//! [`config`] reads a cluster's `health_check:`; [`state`] keeps each
//! endpoint's up/down with `rise`/`fall` hysteresis; [`slow_start`] gives
//! the share of traffic an endpoint back in rotation takes while it warms
//! up. The probes themselves (HTTP, TCP, gRPC health) are I/O and live in
//! the gateway (`gateway/src/upstream/health.rs`), which also combines the
//! result with the breakers' ejections when it picks an endpoint.

pub mod config;
pub mod slow_start;
pub mod state;

pub use config::{HealthCheckFile, HealthSettings, Probe};
pub use state::{Change, EndpointHealth, HealthReport};
