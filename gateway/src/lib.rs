//! Breakwater's gateway: the thin Pingora adapter around `breakwater-plugins`.
//!
//! Routing, upstream selection, config loading and hot reload, the admin
//! endpoint and metrics live here. Policies live in the plugins crate and are
//! only ever called through the [`breakwater_plugins::Policy`] seam.
//!
//! The folders, each using only those listed before it (`.ci/module-graph`
//! checks that no two folders import each other, directly or round a loop):
//!
//! - [`time`], [`metrics`], [`upstream`]: leaves: the clock, the Prometheus
//!   registry, upstream clusters.
//! - [`policy`]: a route's policy chain.
//! - [`route`]: routing, and the keys a route extracts.
//! - [`config`]: the file, its compilation, and the [`config::snapshot::Snapshot`] it
//!   compiles into (the fleet's file section included).
//! - [`fleet`]: fleet mode's link to the other instances through Redis; its
//!   loops are handed the snapshot store, clock and block list
//!   ([`fleet::Local`]), not the process state that holds the fleet's status.
//! - [`state`]: the process-wide state (the live snapshot behind one swap,
//!   what outlives snapshots) and the reload that replaces the snapshot.
//! - [`proxy`]: the request path, Pingora's `ProxyHttp` hooks and what they
//!   call.
//! - [`control`]: the control plane: the admin endpoint and the reload
//!   triggers.
//! - [`server`]: the process: command line, Pingora server and workers,
//!   logging, limits, the runtime directory.

pub mod config;
pub mod control;
pub mod fleet;
pub mod metrics;
pub mod policy;
pub mod proxy;
pub mod route;
pub mod server;
pub mod state;
pub mod time;
pub mod upstream;
