//! Process-wide state: the live snapshot behind one swap, what outlives
//! snapshots, the reload that replaces it, and the metrics read from it.

pub mod drain;
pub mod gateway;
pub mod health_metrics;
pub mod overload_metrics;
pub mod policy_metrics;
pub mod pressure;
pub mod reload;

pub use gateway::{build_snapshot, read_config, GatewayState};
pub use reload::{ReloadOutcome, ReloadRecord, Reloader};
