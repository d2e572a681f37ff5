//! The gateway's own connection cap: how many downstream connections it
//! holds at once, in all and per client address.
//!
//! Every proxied request holds two sockets, so a proxy without a cap runs
//! out of file descriptors under a connection flood, and then fails
//! everything, accepts, upstream connects and log files alike (the lab hit
//! "Too many open files"). With a cap, the connection past it is closed as
//! soon as it is accepted, counted, and the ones already open keep working
//! (Envoy's listener `max_connections`, HAProxy's `maxconn`, nginx's
//! `worker_connections`). The per-address cap keeps one client from taking
//! them all (nginx's `limit_conn` on `$binary_remote_addr`).
//!
//! The count is of TCP (or TLS) connections, shared by every worker; an
//! HTTP/2 connection counts once, whatever its streams. Per-address entries
//! exist only while that address has a connection open, so their number is
//! bounded by the cap itself.

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use dashmap::DashMap;
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// The file descriptors kept aside from the connection budget: listeners,
/// log files, Redis, the admin, and upstream pools' idle connections above
/// one per downstream connection.
pub const RESERVED_FILES: u64 = 256;

/// The caps in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Downstream connections at once, all addresses together.
    pub max: usize,
    /// At once from one client address; 0: no per-address cap.
    pub per_ip: usize,
}

impl ConnectionLimits {
    /// The cap the open-file limit allows when none is configured: each
    /// connection may hold an upstream socket too, and some files are
    /// needed besides (HAProxy derives its `maxconn` from `ulimit -n` the
    /// same way).
    pub fn from_open_files(limit: u64) -> usize {
        let budget = limit.saturating_sub(RESERVED_FILES) / 2;
        usize::try_from(budget.max(1)).unwrap_or(usize::MAX)
    }

    /// The open files `max` connections may need: the start-up check warns
    /// when the process limit is lower.
    pub fn files_needed(max: usize) -> u64 {
        (max as u64)
            .saturating_mul(2)
            .saturating_add(RESERVED_FILES)
    }
}

/// Why a connection was closed at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// `server.max_connections` are open.
    Total,
    /// `server.max_connections_per_ip` are open from this address.
    PerIp,
}

/// The live count, shared by every worker's listeners.
pub struct Connections {
    limits: ConnectionLimits,
    open: AtomicUsize,
    by_ip: DashMap<IpAddr, usize>,
    open_gauge: IntGauge,
    refused_total: IntCounter,
    refused_per_ip: IntCounter,
}

impl Connections {
    /// Registers `breakwater_connections_open` and
    /// `breakwater_connections_refused_total{reason}` in `registry`.
    pub fn new(limits: ConnectionLimits, registry: &Registry) -> Arc<Self> {
        let open_gauge = IntGauge::new(
            "breakwater_connections_open",
            "Downstream connections open now, every listener and worker together.",
        )
        .expect("valid metric");
        let refused = IntCounterVec::new(
            Opts::new(
                "breakwater_connections_refused_total",
                "Downstream connections closed at accept, by cap (max_connections, max_connections_per_ip).",
            ),
            &["reason"],
        )
        .expect("valid metric");
        // A second registration (tests building several servers on one
        // registry) keeps the first: the counts are then per server.
        let _ = registry.register(Box::new(open_gauge.clone()));
        let _ = registry.register(Box::new(refused.clone()));
        Arc::new(Self {
            limits,
            open: AtomicUsize::new(0),
            by_ip: DashMap::new(),
            open_gauge,
            refused_total: refused.with_label_values(&["max_connections"]),
            refused_per_ip: refused.with_label_values(&["max_connections_per_ip"]),
        })
    }

    pub fn limits(&self) -> ConnectionLimits {
        self.limits
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// A place for a connection from `peer` (unknown for Unix sockets: only
    /// the total applies), or why not. The place frees when the guard
    /// drops.
    pub fn enter(self: &Arc<Self>, peer: Option<IpAddr>) -> Result<ConnectionGuard, Refused> {
        let taken = self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                (n < self.limits.max).then_some(n + 1)
            });
        if taken.is_err() {
            self.refused_total.inc();
            return Err(Refused::Total);
        }
        let mut guard = ConnectionGuard {
            conns: self.clone(),
            ip: None,
        };
        self.open_gauge.inc();
        if let (Some(ip), true) = (peer, self.limits.per_ip > 0) {
            let mut n = self.by_ip.entry(ip).or_insert(0);
            if *n >= self.limits.per_ip {
                drop(n);
                self.refused_per_ip.inc();
                // The guard gives the total place back.
                return Err(Refused::PerIp);
            }
            *n += 1;
            guard.ip = Some(ip);
        }
        Ok(guard)
    }
}

/// A connection's place; dropping it frees the place.
pub struct ConnectionGuard {
    conns: Arc<Connections>,
    ip: Option<IpAddr>,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        let c = &self.conns;
        if let Some(ip) = self.ip {
            // Removed at zero, so idle addresses take no memory.
            c.by_ip.remove_if_mut(&ip, |_, n| {
                *n -= 1;
                *n == 0
            });
        }
        c.open.fetch_sub(1, Ordering::AcqRel);
        c.open_gauge.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conns(max: usize, per_ip: usize) -> Arc<Connections> {
        Connections::new(ConnectionLimits { max, per_ip }, &Registry::new())
    }

    fn ip(last: u8) -> Option<IpAddr> {
        Some(IpAddr::from([10, 0, 0, last]))
    }

    #[test]
    fn the_connection_past_the_cap_is_refused_until_one_closes() {
        let c = conns(2, 0);
        let a = c.enter(ip(1)).unwrap();
        let _b = c.enter(ip(2)).unwrap();
        assert_eq!(c.enter(ip(3)).err(), Some(Refused::Total));
        assert_eq!(c.open(), 2);
        drop(a);
        assert_eq!(c.open(), 1);
        assert!(c.enter(ip(3)).is_ok());
        assert_eq!(c.refused_total.get(), 1);
        assert_eq!(c.open_gauge.get(), 1, "the guard of the last one dropped");
    }

    #[test]
    fn one_address_cannot_take_every_place() {
        let c = conns(10, 2);
        let a1 = c.enter(ip(1)).unwrap();
        let _a2 = c.enter(ip(1)).unwrap();
        assert_eq!(c.enter(ip(1)).err(), Some(Refused::PerIp));
        // The refused one gave its total place back.
        assert_eq!(c.open(), 2);
        let _b = c.enter(ip(2)).unwrap();
        drop(a1);
        let _a3 = c.enter(ip(1)).unwrap();
        assert_eq!(c.refused_per_ip.get(), 1);
    }

    #[test]
    fn an_address_with_nothing_open_leaves_no_entry() {
        let c = conns(10_000, 5);
        let guards: Vec<_> = (0..=255).map(|i| c.enter(ip(i)).unwrap()).collect();
        assert_eq!(c.by_ip.len(), 256);
        drop(guards);
        assert_eq!(c.by_ip.len(), 0);
        assert_eq!(c.open(), 0);
    }

    #[test]
    fn the_default_cap_leaves_room_for_upstream_sockets_and_files() {
        assert_eq!(ConnectionLimits::from_open_files(1024), 384);
        assert_eq!(ConnectionLimits::from_open_files(100), 1);
        assert!(ConnectionLimits::files_needed(384) <= 1024);
        assert_eq!(ConnectionLimits::files_needed(usize::MAX), u64::MAX);
    }
}
