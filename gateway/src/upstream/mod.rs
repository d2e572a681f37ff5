//! Upstream clusters: endpoints, their choice and per-cluster timeouts.
//!
//! The choice is `breakwater_plugins::balance`'s: smooth weighted round
//! robin, least request (two random choices) or a consistent hash of a
//! request key, over the endpoints that are eligible. Each attempt holds a
//! [`Ticket`] on its endpoint, which counts it in flight (least request
//! reads the count) and caps it at the endpoint's `max_in_flight`; a
//! request that finds every endpoint at its cap waits in the cluster's
//! queue (`proxy/attempts.rs`).
//!
//! With `health_check:` set, an endpoint its probes put down ([`health`],
//! run by `server/prober.rs`) is skipped by every choice, unless every endpoint is
//! down: then all are eligible again (panic routing, as with the
//! breakers' ejections: a probe can be wrong, and refusing everything is
//! certain failure).
//!
//! Connection reuse comes from Pingora's connector pool, which is
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

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use breakwater_plugins::balance::config::QueueSettings;
use breakwater_plugins::balance::{BalanceKind, Balancer, Load, Ticket, Waiters};
use breakwater_plugins::overload::{Gate, OverloadSettings};
use breakwater_plugins::retry::RetryBudget;
use breakwater_plugins::{KeySpec, RequestKeys};
use pingora::protocols::ALPN;
use pingora::upstreams::peer::HttpPeer;
use prometheus::{Histogram, IntCounter};

/// A compiled cluster.
pub struct Cluster {
    pub name: Arc<str>,
    pub endpoints: Vec<String>,
    /// The endpoints, resolved, in the order of `endpoints`.
    pub addrs: Vec<std::net::SocketAddr>,
    /// How endpoints are ordered for a choice, with their weights.
    pub balancer: Balancer,
    /// The request key a consistent hash places requests by.
    hash_key: Option<KeySpec>,
    /// Each endpoint's attempts in flight, in endpoint order.
    pub loads: Vec<Arc<Load>>,
    /// Each endpoint's cap on attempts in flight (0: none).
    pub caps: Vec<u32>,
    /// The requests waiting for an endpoint under its cap.
    pub waiters: Arc<Waiters>,
    pub queue: QueueSettings,
    /// How often endpoint names are resolved again (zero: never).
    pub dns_refresh: Duration,
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

/// How a cluster balances: the order, each endpoint's weight and cap, and
/// the queue for a request that finds every endpoint at its cap.
pub struct Balance {
    pub kind: BalanceKind,
    pub weights: Vec<u32>,
    pub caps: Vec<u32>,
    pub queue: QueueSettings,
}

/// Why no endpoint was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoPeer {
    /// None would take the attempt (none eligible, or every one refused).
    None,
    /// Every endpoint that would take it is at its `max_in_flight`.
    Full,
}

/// A chosen endpoint: its peer, its in-flight ticket, and what `accept`
/// returned for it.
pub struct Chosen<T> {
    pub peer: Box<HttpPeer>,
    pub ticket: Ticket,
    pub taken: T,
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
    /// Builds a cluster balanced round robin, every endpoint of weight 1
    /// and uncapped (see [`Self::balance`]). Endpoints that are not literal
    /// addresses are resolved here, with the system resolver.
    pub fn new(
        name: &str,
        endpoints: Vec<String>,
        timeouts: ClusterTimeouts,
        tls: bool,
        sni: String,
        accounting: ClusterAccounting,
    ) -> std::io::Result<Self> {
        let addrs = endpoints
            .iter()
            .map(|e| resolve(e))
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok(Self::resolved(
            name, endpoints, addrs, timeouts, tls, sni, accounting,
        ))
    }

    /// Builds a cluster whose endpoints resolved to `addrs`, in order.
    pub fn resolved(
        name: &str,
        endpoints: Vec<String>,
        addrs: Vec<SocketAddr>,
        timeouts: ClusterTimeouts,
        tls: bool,
        sni: String,
        accounting: ClusterAccounting,
    ) -> Self {
        let n = endpoints.len();
        let waiters = Arc::new(Waiters::default());
        Self {
            name: name.into(),
            balancer: Balancer::round_robin(&vec![1; n]),
            hash_key: None,
            loads: (0..n)
                .map(|_| Arc::new(Load::new(waiters.clone())))
                .collect(),
            caps: vec![0; n],
            waiters,
            queue: QueueSettings {
                size: 0,
                timeout: Duration::ZERO,
            },
            dns_refresh: Duration::ZERO,
            endpoints,
            addrs,
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
        }
    }

    /// Resolves the endpoint names again every `every` (zero: never).
    pub fn refresh_dns(mut self, every: Duration) -> Self {
        self.dns_refresh = every;
        self
    }

    /// The endpoints given by name, not address, with their index: what
    /// DNS refreshes follow.
    pub fn named(&self) -> impl Iterator<Item = (usize, &str)> {
        self.endpoints
            .iter()
            .enumerate()
            .filter(|(_, e)| e.parse::<SocketAddr>().is_err())
            .map(|(i, e)| (i, e.as_str()))
    }

    /// Balances as `balance` says. `previous`, the live cluster of this
    /// name, lends its in-flight counts (by address) and its queue: the
    /// attempts it has in flight stay counted against their endpoints.
    pub fn balance(mut self, balance: Balance, previous: Option<&Cluster>) -> Self {
        let names: Vec<&str> = self.endpoints.iter().map(String::as_str).collect();
        self.balancer = match &balance.kind {
            BalanceKind::RoundRobin => Balancer::round_robin(&balance.weights),
            BalanceKind::LeastRequest => Balancer::least_request(&balance.weights),
            BalanceKind::Hash(_) => Balancer::hash(&names, &balance.weights),
        };
        self.hash_key = match balance.kind {
            BalanceKind::Hash(spec) => Some(spec),
            _ => None,
        };
        if let Some(prev) = previous {
            self.waiters = prev.waiters.clone();
        }
        let waiters = &self.waiters;
        self.loads = self
            .addrs
            .iter()
            .map(|addr| {
                previous
                    .and_then(|p| p.addrs.iter().position(|a| a == addr).map(|i| &p.loads[i]))
                    .filter(|l| l.shares(waiters))
                    .cloned()
                    .unwrap_or_else(|| Arc::new(Load::new(waiters.clone())))
            })
            .collect();
        self.caps = balance.caps;
        self.queue = balance.queue;
        self
    }

    /// `round_robin`, `least_request` or `hash:<key>`, as the admin shows it.
    pub fn balance_name(&self) -> String {
        match (&self.hash_key, self.balancer.is_least_request()) {
            (Some(k), _) => format!("hash:{}", k.text()),
            (None, true) => "least_request".into(),
            (None, false) => "round_robin".into(),
        }
    }

    /// The hash of the request's key, for a cluster balanced by one.
    pub fn key_hash(&self, keys: Option<&RequestKeys>) -> Option<u64> {
        self.hash_key.as_ref()?.hash(keys?)
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

    /// The next endpoint, as a Pingora peer carrying this cluster's
    /// timeouts, with its ticket.
    pub fn next_peer(&self) -> Result<Chosen<()>, NoPeer> {
        self.choose(None, |_| true, |_| Some(()))
    }

    /// Chooses an endpoint for an attempt, among those the health checks
    /// keep in rotation (all, when none is up), that `eligible` admits
    /// and that have room under their cap; then `accept` (which may take a
    /// breaker's permit) has the last word. `key`: the request key's hash,
    /// for a consistent hash.
    pub fn choose<T>(
        &self,
        key: Option<u64>,
        eligible: impl Fn(SocketAddr) -> bool,
        mut accept: impl FnMut(SocketAddr) -> Option<T>,
    ) -> Result<Chosen<T>, NoPeer> {
        let health = self.health.as_deref().filter(|h| h.any_up());
        let up = |i: usize| health.is_none_or(|h| h.endpoints[i].health.is_up());
        let room = |i: usize| self.caps[i] == 0 || self.loads[i].in_flight() < self.caps[i];
        let load = |i: usize| self.loads[i].in_flight();
        let mut take = |i: usize| {
            let ticket = self.loads[i].try_take(self.caps[i])?;
            accept(self.addrs[i]).map(|taken| (i, ticket, taken))
        };
        // Slow start first: a ramping endpoint is passed over but for its
        // share; when that passes over every one, any eligible one will do.
        let ramping = health.is_some_and(|h| !h.slow_start.is_zero());
        let ramped = ramping
            .then(|| {
                let h = health.expect("ramping implies health");
                self.balancer.pick(
                    key,
                    |i| up(i) && room(i) && h.takes(self.addrs[i]) && eligible(self.addrs[i]),
                    load,
                    &mut take,
                )
            })
            .flatten();
        let chosen = ramped.or_else(|| {
            self.balancer.pick(
                key,
                |i| up(i) && room(i) && eligible(self.addrs[i]),
                load,
                &mut take,
            )
        });
        let Some((i, ticket, taken)) = chosen else {
            let full = (0..self.addrs.len()).any(|i| !room(i) && up(i) && eligible(self.addrs[i]));
            return Err(if full { NoPeer::Full } else { NoPeer::None });
        };
        Ok(Chosen {
            peer: self.peer(self.addrs[i]),
            ticket,
            taken,
        })
    }

    /// A Pingora peer for `addr` with this cluster's timeouts and pool key.
    fn peer(&self, addr: SocketAddr) -> Box<HttpPeer> {
        let mut peer = HttpPeer::new(addr, self.tls, self.sni.clone());
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
        Box::new(peer)
    }
}

/// The first address `endpoint` (`host:port`) resolves to.
pub fn resolve(endpoint: &str) -> std::io::Result<SocketAddr> {
    std::net::ToSocketAddrs::to_socket_addrs(endpoint)?
        .next()
        .ok_or_else(|| std::io::Error::other(format!("{endpoint} resolves to nothing")))
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
            let peer = c.next_peer().unwrap().peer;
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
        let here = c.next_peer().unwrap().peer;
        assert_eq!(here.group_key, c.next_peer().unwrap().peer.group_key);
        let there = std::thread::scope(|s| s.spawn(|| c.next_peer().unwrap().peer).join().unwrap());
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
                .map(|_| c.next_peer().unwrap().peer._address.to_string())
                .collect::<std::collections::HashSet<_>>()
        };
        assert_eq!(pick(10).len(), 2);
        down(1);
        assert_eq!(
            pick(10),
            ["127.0.0.1:7001".to_string()].into_iter().collect()
        );
        // A choice that excludes the one up endpoint finds none.
        assert_eq!(
            c.choose(None, |a| a.port() != 7001, |_| Some(())).err(),
            Some(NoPeer::None)
        );
        down(0);
        assert_eq!(pick(10).len(), 2, "all down: all eligible again");
    }

    #[test]
    fn a_ramping_endpoint_takes_about_its_share_of_the_choices() {
        let clock = Arc::new(breakwater_plugins::FakeClock::new());
        let (c, _) = probed(|a| a.port() == 7002, Duration::from_secs(30), clock.clone());
        let ramping = |n: usize| {
            (0..n)
                .filter(|_| c.next_peer().unwrap().peer._address.to_string() == "127.0.0.1:7002")
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

    fn two(balance: Balance) -> Cluster {
        let endpoints = vec!["127.0.0.1:7001".to_string(), "127.0.0.1:7002".to_string()];
        Cluster::new(
            "c",
            endpoints,
            timeouts(),
            false,
            String::new(),
            histogram(),
        )
        .unwrap()
        .balance(balance, None)
    }

    #[test]
    fn an_endpoint_at_its_cap_is_passed_over_and_all_at_their_caps_is_full() {
        let c = two(Balance {
            kind: BalanceKind::RoundRobin,
            weights: vec![1, 1],
            caps: vec![1, 2],
            queue: QueueSettings {
                size: 10,
                timeout: Duration::from_secs(1),
            },
        });
        let port = |ch: &Chosen<()>| ch.peer._address.as_inet().unwrap().port();
        let held: Vec<_> = (0..3).map(|_| c.next_peer().unwrap()).collect();
        let mut ports: Vec<u16> = held.iter().map(port).collect();
        ports.sort();
        assert_eq!(ports, vec![7001, 7002, 7002]);
        assert_eq!(c.next_peer().err(), Some(NoPeer::Full));
        drop(held);
        assert!(c.next_peer().is_ok(), "tickets given back on drop");
    }

    #[test]
    fn least_request_follows_the_tickets_in_flight() {
        let c = two(Balance {
            kind: BalanceKind::LeastRequest,
            weights: vec![1, 1],
            caps: vec![0, 0],
            queue: QueueSettings {
                size: 0,
                timeout: Duration::ZERO,
            },
        });
        let busy: Vec<_> = (0..5)
            .map(|_| c.choose(None, |a| a.port() == 7001, |_| Some(())).unwrap())
            .collect();
        assert_eq!(c.loads[0].in_flight(), 5);
        for _ in 0..50 {
            let ch = c.next_peer().unwrap();
            assert_eq!(ch.peer._address.as_inet().unwrap().port(), 7002);
        }
        drop(busy);
        assert_eq!(c.loads[0].in_flight(), 0);
    }

    #[test]
    fn a_reload_keeps_the_counts_in_flight_of_the_endpoints_it_keeps() {
        let balance = || Balance {
            kind: BalanceKind::RoundRobin,
            weights: vec![1, 1],
            caps: vec![0, 0],
            queue: QueueSettings {
                size: 0,
                timeout: Duration::ZERO,
            },
        };
        let old = two(balance());
        let _held = old.next_peer().unwrap();
        let new = Cluster::new(
            "c",
            vec!["127.0.0.1:7002".to_string(), "127.0.0.1:7001".to_string()],
            timeouts(),
            false,
            String::new(),
            histogram(),
        )
        .unwrap()
        .balance(balance(), Some(&old));
        let total: u32 = new.loads.iter().map(|l| l.in_flight()).sum();
        assert_eq!(total, 1);
        assert!(Arc::ptr_eq(&new.waiters, &old.waiters));
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
