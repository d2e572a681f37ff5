//! Upstream clusters: endpoints, round-robin selection and per-cluster timeouts.
//!
//! With `health_check:` set, an endpoint its probes put down ([`health`],
//! run by `server/prober.rs`) is skipped by every choice, unless every endpoint is
//! down: then all are eligible again (panic routing, as with the
//! breakers' ejections: a probe can be wrong, and refusing everything is
//! certain failure).
//!
//! Selection uses `pingora-load-balancing`'s round-robin over a static
//! discovery. Connection reuse comes from Pingora's connector pool, which is
//! keyed by the peer (address, TLS, SNI), so it survives config reloads: a new
//! snapshot's cluster hands out equal peers and finds the same idle sockets.
//!
//! Each worker thread reuses only the connections it opened (the peer's
//! `group_key` is the worker's), as each nginx worker keeps its own keepalive
//! cache. A socket is registered with the event loop of the worker that
//! opened it; reused from another worker, every read would need a
//! cross-thread wake-up (an eventfd write and a context switch), which the
//! throughput bench measured at two extra syscalls per request. (Without
//! work stealing each worker is also its own proxy service with its own
//! connector, `workers.rs`; the key keeps the rule when work stealing is on.)

pub mod health;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use breakwater_plugins::overload::{Gate, OverloadSettings};
use breakwater_plugins::retry::RetryBudget;
use pingora::lb::{selection::RoundRobin, LoadBalancer};
use pingora::protocols::ALPN;
use pingora::upstreams::peer::HttpPeer;
use prometheus::{Histogram, IntCounter};

/// A compiled cluster.
pub struct Cluster {
    pub name: Arc<str>,
    pub endpoints: Vec<String>,
    /// The endpoints, resolved, in the order of `endpoints`.
    pub addrs: Vec<std::net::SocketAddr>,
    balancer: LoadBalancer<RoundRobin>,
    pub timeouts: ClusterTimeouts,
    pub tls: bool,
    pub sni: String,
    /// HTTP/2 with prior knowledge, with this many streams per connection;
    /// `None` for HTTP/1.1.
    pub h2_streams: Option<usize>,
    /// `breakwater_upstream_latency_seconds{cluster}`.
    pub latency: Histogram,
    pub budget: RetryBudget,
    /// `breakwater_upstream_attempts_total`, `_retries_total` and
    /// `breakwater_retry_budget_exhausted_total` for this cluster.
    pub attempts: IntCounter,
    pub retries: IntCounter,
    pub budget_exhausted: IntCounter,
    /// The adaptive concurrency limit and its queue; `None` when the
    /// config turns it off.
    pub overload: Option<ClusterOverload>,
    /// Active health checks; `None` without `health_check:`.
    pub health: Option<Arc<health::ClusterHealth>>,
}

/// A cluster's overload gate and the settings it was built with: a reload
/// that changes neither the settings nor the endpoints keeps the gate, and
/// with it what the limit has learned and the calls it holds.
pub struct ClusterOverload {
    pub gate: Arc<Gate>,
    pub settings: OverloadSettings,
}

/// The per-cluster metric handles and retry budget.
pub struct ClusterAccounting {
    pub latency: Histogram,
    pub budget: RetryBudget,
    pub attempts: IntCounter,
    pub retries: IntCounter,
    pub budget_exhausted: IntCounter,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterTimeouts {
    pub connect: Duration,
    pub read: Duration,
    pub write: Duration,
    pub idle: Duration,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("name", &self.name)
            .field("endpoints", &self.endpoints)
            .field("timeouts", &self.timeouts)
            .finish()
    }
}

impl Cluster {
    /// Builds a cluster. Endpoints that are not literal addresses are resolved
    /// once, here, with the system resolver.
    pub fn new(
        name: &str,
        endpoints: Vec<String>,
        timeouts: ClusterTimeouts,
        tls: bool,
        sni: String,
        accounting: ClusterAccounting,
    ) -> std::io::Result<Self> {
        let balancer = LoadBalancer::try_from_iter(endpoints.iter().map(String::as_str))?;
        let addrs = endpoints
            .iter()
            .map(|e| {
                std::net::ToSocketAddrs::to_socket_addrs(e.as_str())?
                    .next()
                    .ok_or_else(|| std::io::Error::other(format!("{e} resolves to nothing")))
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok(Self {
            name: name.into(),
            endpoints,
            addrs,
            balancer,
            timeouts,
            tls,
            sni,
            h2_streams: None,
            latency: accounting.latency,
            budget: accounting.budget,
            attempts: accounting.attempts,
            retries: accounting.retries,
            budget_exhausted: accounting.budget_exhausted,
            overload: None,
            health: None,
        })
    }

    /// Puts an overload gate in front of the cluster.
    pub fn with_overload(mut self, overload: ClusterOverload) -> Self {
        self.overload = Some(overload);
        self
    }

    /// Probes the endpoints and keeps those that fail out of rotation.
    pub fn with_health(mut self, health: Arc<health::ClusterHealth>) -> Self {
        self.health = Some(health);
        self
    }

    /// Speaks HTTP/2 with prior knowledge (h2c) to the endpoints, with up to
    /// `streams` concurrent streams per connection.
    pub fn speak_h2(mut self, streams: usize) -> Self {
        self.h2_streams = Some(streams.max(1));
        self
    }

    /// The next endpoint in round-robin order, as a Pingora peer carrying this
    /// cluster's timeouts.
    pub fn next_peer(&self) -> Option<Box<HttpPeer>> {
        self.next_peer_where(|_| true)
    }

    /// The next endpoint in round-robin order that `accept` takes, among
    /// those the health checks keep in rotation (all, when none is up).
    pub fn next_peer_where(
        &self,
        accept: impl Fn(std::net::SocketAddr) -> bool,
    ) -> Option<Box<HttpPeer>> {
        let health = self.health.as_deref().filter(|h| h.any_up());
        let n = self.endpoints.len().max(1);
        // `accept` last: it may take a breaker's permit for the endpoint.
        let eligible = |a: std::net::SocketAddr, ramp: bool| {
            health.is_none_or(|h| h.is_up(a) && (!ramp || h.takes(a))) && accept(a)
        };
        // Slow start first: a ramping endpoint is passed over but for its
        // share; when that passes over every one, any eligible one will do.
        let ramping = health.is_some_and(|h| !h.slow_start.is_zero());
        let ramped = ramping
            .then(|| {
                self.balancer.select_with(b"", n, |b, _| {
                    b.addr.as_inet().is_some_and(|a| eligible(*a, true))
                })
            })
            .flatten();
        let backend = match ramped {
            Some(b) => b,
            None => self.balancer.select_with(b"", n, |b, _| {
                b.addr.as_inet().is_some_and(|a| eligible(*a, false))
            })?,
        };
        let mut peer = HttpPeer::new(backend.addr, self.tls, self.sni.clone());
        peer.group_key = worker_pool_key();
        let o = &mut peer.options;
        o.connection_timeout = Some(self.timeouts.connect);
        o.read_timeout = Some(self.timeouts.read);
        o.write_timeout = Some(self.timeouts.write);
        o.idle_timeout = Some(self.timeouts.idle);
        if let Some(streams) = self.h2_streams {
            // Plaintext with HTTP/2 as the minimum: Pingora speaks h2c
            // with prior knowledge.
            o.alpn = ALPN::H2;
            o.max_h2_streams = streams;
        }
        Some(Box::new(peer))
    }
}

/// The calling worker thread's share of the upstream connection pool: a
/// number unique to the thread, fixed for its life.
fn worker_pool_key() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    thread_local!(static KEY: u64 = NEXT.fetch_add(1, Ordering::Relaxed));
    KEY.with(|k| *k)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora::upstreams::peer::Peer as _;

    fn timeouts() -> ClusterTimeouts {
        ClusterTimeouts {
            connect: Duration::from_millis(100),
            read: Duration::from_secs(1),
            write: Duration::from_secs(1),
            idle: Duration::from_secs(60),
        }
    }

    fn histogram() -> ClusterAccounting {
        let counter = || IntCounter::new("t", "t").unwrap();
        ClusterAccounting {
            latency: Histogram::with_opts(prometheus::HistogramOpts::new("t", "t")).unwrap(),
            budget: breakwater_plugins::retry::RetryBudgetConfig::default()
                .compile(
                    "b",
                    std::sync::Arc::new(breakwater_plugins::MonotonicClock::new()),
                )
                .unwrap(),
            attempts: counter(),
            retries: counter(),
            budget_exhausted: counter(),
        }
    }

    #[test]
    fn round_robin_visits_every_endpoint_evenly() {
        let c = Cluster::new(
            "c",
            vec![
                "127.0.0.1:7001".into(),
                "127.0.0.1:7002".into(),
                "127.0.0.1:7003".into(),
            ],
            timeouts(),
            false,
            String::new(),
            histogram(),
        )
        .unwrap();
        let mut counts = std::collections::HashMap::new();
        for _ in 0..300 {
            let peer = c.next_peer().unwrap();
            *counts.entry(peer._address.to_string()).or_insert(0) += 1;
            assert_eq!(
                peer.options.connection_timeout,
                Some(Duration::from_millis(100))
            );
        }
        assert_eq!(counts.len(), 3);
        assert!(counts.values().all(|&n| n == 100), "{counts:?}");
    }

    #[test]
    fn each_worker_thread_reuses_only_its_own_connections() {
        let c = Cluster::new(
            "c",
            vec!["127.0.0.1:7001".into()],
            timeouts(),
            false,
            String::new(),
            histogram(),
        )
        .unwrap();
        let here = c.next_peer().unwrap();
        assert_eq!(here.group_key, c.next_peer().unwrap().group_key);
        let there = std::thread::scope(|s| s.spawn(|| c.next_peer().unwrap()).join().unwrap());
        assert_ne!(here.group_key, there.group_key);
        assert_ne!(here.reuse_hash(), there.reuse_hash(), "pool keys differ");
    }

    /// Endpoints 7001 and 7002 under TCP health checks, those `ramping`
    /// starting a slow start of `slow_start` at time 0 on `clock`.
    fn probed(
        ramping: impl Fn(std::net::SocketAddr) -> bool,
        slow_start: Duration,
        clock: Arc<dyn breakwater_plugins::Clock>,
    ) -> (Cluster, Vec<Arc<health::EndpointCheck>>) {
        use breakwater_plugins::config_error::ConfigPath;
        use breakwater_plugins::health::HealthCheckFile;
        let endpoints = vec!["127.0.0.1:7001".to_string(), "127.0.0.1:7002".to_string()];
        let c = Cluster::new(
            "c",
            endpoints,
            timeouts(),
            false,
            String::new(),
            histogram(),
        )
        .unwrap();
        let file: HealthCheckFile = serde_yaml::from_str("tcp: true").unwrap();
        let checks: Vec<_> = c
            .addrs
            .iter()
            .map(|a| Arc::new(health::EndpointCheck::new(*a, 0, ramping(*a))))
            .collect();
        let health = health::ClusterHealth::new(
            file.compile(&ConfigPath::root()).unwrap(),
            health::ProbeTarget {
                tls: false,
                sni: String::new(),
                h2: false,
            },
            checks.clone(),
            slow_start,
            clock,
        );
        (c.with_health(Arc::new(health)), checks)
    }

    #[test]
    fn endpoints_out_of_rotation_are_skipped_unless_every_one_is() {
        let (c, checks) = probed(
            |_| false,
            Duration::ZERO,
            Arc::new(breakwater_plugins::MonotonicClock::new()),
        );
        let down = |i: usize| {
            let changed = checks[i].health.record(Err("refused".into()), 1, 1, 1);
            assert!(changed.is_some());
        };
        let pick = |n: usize| {
            (0..n)
                .map(|_| c.next_peer().unwrap()._address.to_string())
                .collect::<std::collections::HashSet<_>>()
        };
        assert_eq!(pick(10).len(), 2);
        down(1);
        assert_eq!(
            pick(10),
            ["127.0.0.1:7001".to_string()].into_iter().collect()
        );
        // A choice that excludes the one up endpoint finds none.
        assert!(c.next_peer_where(|a| a.port() != 7001).is_none());
        down(0);
        assert_eq!(pick(10).len(), 2, "all down: all eligible again");
    }

    #[test]
    fn a_ramping_endpoint_takes_about_its_share_of_the_choices() {
        let clock = Arc::new(breakwater_plugins::FakeClock::new());
        let (c, _) = probed(|a| a.port() == 7002, Duration::from_secs(30), clock.clone());
        let ramping = |n: usize| {
            (0..n)
                .filter(|_| c.next_peer().unwrap()._address.to_string() == "127.0.0.1:7002")
                .count()
        };
        // A tenth of the choices (not half): 10,000 of them, so the count
        // is within a few standard deviations (30) of 900.
        let at_start = ramping(10_000);
        assert!((700..1_200).contains(&at_start), "{at_start} of 10000");
        clock.advance(Duration::from_secs(15));
        let half_way = ramping(10_000);
        assert!((3_000..3_700).contains(&half_way), "{half_way} of 10000");
        clock.advance(Duration::from_secs(15));
        let ramped = ramping(10_000);
        assert!((4_900..5_100).contains(&ramped), "{ramped} of 10000");
    }

    #[test]
    fn endpoint_without_port_is_an_error() {
        assert!(Cluster::new(
            "c",
            vec!["127.0.0.1".into()], // no port,
            timeouts(),
            false,
            String::new(),
            histogram()
        )
        .is_err());
    }
}
