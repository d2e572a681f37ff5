//! A typed builder for the gateway's config file.
//!
//! ```no_run
//! # use breakwater_tests::config::{Cluster, Config, RateLimit, Route};
//! # let up: std::net::SocketAddr = "127.0.0.1:1".parse().unwrap();
//! let config = Config::new()
//!     .cluster("up", Cluster::new([up]))
//!     .route(Route::new("api", "up").policy(RateLimit::per_ip(5, "1m").burst(5)));
//! ```
//!
//! writes the YAML a `gateway.yaml` holds. The sections a test leaves
//! alone get the harness's defaults (`document`): one worker, the pid file
//! and upgrade socket in the gateway's temp dir, one HTTP/1 listener, the
//! admin on loopback, JSON logs with an access log. Addresses and paths
//! are the harness's placeholders (`{listen}`, `{admin}`, `{dir}`), filled
//! in by [`crate::GatewayBuilder::start`] once the ports are leased.
//!
//! A field is written only when a test sets it, so the gateway's own
//! defaults apply otherwise and a test's config shows what it relies on.
//! Durations are written as the file writes them (`"300ms"`, `"1m"`); the
//! gateway parses and checks them. Shapes no method covers go through
//! [`Policy::set`] or [`Policy::raw`]. Tests of malformed files write YAML
//! text instead, which the harness takes too ([`ConfigText`]).
//!
//! The emitter is serde_yaml over these structs. The `config_builder`
//! integration tests check that `breakwater -t` accepts what it writes.

mod document;
mod keys;
mod policy;
mod route;
pub(crate) mod text;
mod upstream;

pub use document::{Admin, Config, Listener, Server};
pub use keys::{KeySource, Keys};
pub use policy::{
    Abuse, Action, Breaker, Cache, Concurrency, Dedupe, Deny, HotKey, Policy, RateLimit,
};
pub use route::{Retry, Route};
pub use text::ConfigText;
pub use upstream::{Cluster, Fleet, Protocol};

#[cfg(test)]
mod tests;
