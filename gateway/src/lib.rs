//! Breakwater's gateway: the thin Pingora adapter around `breakwater-plugins`.
//!
//! Routing, upstream selection, config loading and hot reload, the admin
//! endpoint and metrics live here. Policies live in the plugins crate and are
//! only ever called through the [`breakwater_plugins::Policy`] seam.

pub mod chain;
pub mod config;
pub mod key_extract;
pub mod metrics;
pub mod route;
pub mod snapshot;
pub mod upstream;
