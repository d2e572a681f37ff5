//! Integration tests: the real gateway binary, real upstreams, a real client.

mod admin;
mod avalanche;
mod breakers;
mod cache;
mod cluster;
mod config_check;
mod deadlines;
mod dedupe;
mod deny;
mod grpc;
mod grpc_core;
mod h2c;
mod hotkeys;
mod keys;
mod lifecycle;
mod limits;
mod proxy;
mod redis_harness;
mod reload;
mod retries;
mod routing;
mod throughput;
mod tls;

use breakwater_tests::{GatewayBuilder, MockUpstream};

pub const BIN: &str = env!("CARGO_BIN_EXE_breakwater-under-test");

/// A gateway builder for `body` (see `GatewayBuilder` for placeholders).
pub fn gateway(body: &str) -> GatewayBuilder {
    GatewayBuilder::new(BIN, body)
}

/// One cluster `up` pointing at `upstream`, one catch-all route.
pub fn single_route(upstream: &MockUpstream) -> String {
    format!(
        "clusters:\n  up:\n    endpoints: [\"{}\"]\n    read_timeout_ms: 2000\nroutes:\n  - id: all\n    cluster: up\n",
        upstream.addr
    )
}
