//! Breakwater's integration harness.
//!
//! [`MockUpstream`] is a real HTTP server on an ephemeral loopback port that
//! records what it receives. [`Gateway`] runs the real `breakwater` binary on
//! leased loopback ports ([`PortLease`]) with a config written to a temp
//! dir, and kills it when dropped; [`Config`] builds that config, typed.
//! [`RedisServer`] and [`RedisCluster`] are real `redis-server` processes on
//! leased loopback ports. [`ClosedPort`] is an endpoint that refuses
//! connections. Tests talk to all of them with a real client and wait on
//! conditions, never on fixed sleeps.

pub mod config;
pub mod gateway;
pub mod grpc;
pub mod grpc_core;
pub mod ports;
pub mod redis;
pub mod upstream;

pub use config::Config;
pub use gateway::{Gateway, GatewayBuilder};
pub use ports::{ClosedPort, PortLease};
pub use redis::{RedisCluster, RedisServer};
pub use upstream::{MockUpstream, Recorded};

use std::future::Future;
use std::time::{Duration, Instant};

/// Polls `check` until it returns `Some`, or panics after `within`.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {within:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The value on the first metric line that starts with `prefix` (a metric
/// name with its labels, e.g. `breakwater_requests_total{route="a",status="200"}`).
pub fn metric_value(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// A client that does not pool connections across tests and never follows
/// redirects.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .no_proxy()
        .build()
        .expect("client")
}
