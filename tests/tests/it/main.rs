//! Integration tests: the real gateway binary, real upstreams, a real client.

mod admin;
mod avalanche;
mod balance;
mod breakers;
mod cache;
mod cluster;
mod config_builder;
mod config_check;
mod connections;
mod deadlines;
mod dedupe;
mod deny;
mod dns;
mod grpc;
mod grpc_core;
mod h2c;
mod health;
mod hotkeys;
mod keys;
mod lifecycle;
mod limits;
mod overload;
mod proxy;
mod redis_harness;
mod reload;
mod retries;
mod routing;
mod throughput;
mod tls;

use breakwater_tests::config::{Cluster, ConfigText, Route};
use breakwater_tests::{Config, GatewayBuilder, MockUpstream};

pub const BIN: &str = env!("CARGO_BIN_EXE_breakwater-under-test");

/// A gateway builder for `body`: a `Config`, or YAML text (see
/// `GatewayBuilder` for its placeholders).
pub fn gateway(body: &(impl ConfigText + ?Sized)) -> GatewayBuilder {
    GatewayBuilder::new(BIN, body)
}

/// One cluster `up` pointing at `upstream`, one catch-all route `all`.
pub fn single_route(upstream: &MockUpstream) -> Config {
    Config::new()
        .cluster("up", Cluster::new([upstream.addr]).read_timeout_ms(2000))
        .route(Route::new("all", "up"))
}
