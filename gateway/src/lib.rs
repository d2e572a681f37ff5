//! Breakwater's gateway: the thin Pingora adapter around `breakwater-plugins`.
//!
//! Routing, upstream selection, config loading and hot reload, the admin
//! endpoint and metrics live here. Policies live in the plugins crate and are
//! only ever called through the [`breakwater_plugins::Policy`] seam.

pub mod access_log;
pub mod admin;
pub mod admin_hotkeys;
pub mod admission;
pub mod answer;
pub mod attempts;
pub mod body;
pub mod chain;
pub mod cli;
pub mod config;
pub mod context;
pub mod deadline;
pub mod errors;
pub mod fleet;
pub mod forwarded;
pub mod framing;
pub mod housekeeping;
pub mod key_extract;
pub mod limits;
pub mod logging;
pub mod metrics;
pub mod policy_metrics;
pub mod proxy;
pub mod reload;
pub mod request_id;
pub mod responses;
pub mod route;
pub mod runtime_dir;
pub mod server;
pub mod snapshot;
pub mod state;
pub mod time;
pub mod upstream;
pub mod upstream_headers;
pub mod watch;
pub mod workers;
