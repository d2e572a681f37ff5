//! The avalanche lab: the seed incident's overload against several fronts,
//! and issue 16's scenarios for the shipped default config.
//!
//! Each run starts a fresh provider (so no queue carries over), the front
//! under test (one gateway, or a fleet of them), and the consumer; it polls
//! each gateway's `GET /overload` once a second while the load runs. Every
//! process is on loopback, on ports leased for its whole life, and is
//! stopped when the run ends.
//!
//! - [`scenario`]: fronts, loads, the matrix, the slow provider.
//! - [`fronts`]: the gateway's and nginx's configs, started.
//! - [`run`]: one run and its figures.
//! - [`targets`]: issue 16's targets, pass or fail.
//! - [`overload`]: the gateways' own view, from `/overload`.
//! - [`report`], [`chart`]: the summary, the CSV and the goodput chart.

pub mod chart;
pub mod fronts;
pub mod overload;
pub mod report;
pub mod run;
pub mod scenario;
pub mod targets;

pub use run::{run, RunResult};
pub use scenario::{Env, Front, Group, Load, Scenario};
