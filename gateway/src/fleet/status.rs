//! What the fleet link knows about itself: for `/fleet`, `/healthz` and
//! the metrics. Written by the sync and event tasks only, never on the
//! request path.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use breakwater_plugins::fleet::Fleet;
use parking_lot::Mutex;
use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts};
use serde::Serialize;

use crate::config::fleet_file::{FleetConfig, RedisTarget};

/// The fleet link's metrics (registered once at startup).
pub struct FleetMetrics {
    pub degraded: IntGauge,
    pub peers: IntGauge,
    pub syncs: IntCounterVec,
    pub commands: IntCounter,
    pub sync_seconds: Histogram,
    pub lag_ms: IntGauge,
    pub events: IntCounterVec,
}

impl FleetMetrics {
    pub fn new(registry: &prometheus::Registry) -> Self {
        let m = Self {
            degraded: IntGauge::new(
                "breakwater_cluster_degraded",
                "1 while Redis is unreachable and global limits fall back to local shares.",
            )
            .expect("valid metric"),
            peers: IntGauge::new(
                "breakwater_cluster_peers",
                "Instances (this one included) seen by the last heartbeat.",
            )
            .expect("valid metric"),
            syncs: IntCounterVec::new(
                Opts::new("breakwater_cluster_syncs_total", "Sync rounds, by result."),
                &["result"],
            )
            .expect("valid metric"),
            commands: IntCounter::new(
                "breakwater_cluster_redis_commands_total",
                "Commands sent to Redis (script calls, publishes, reads).",
            )
            .expect("valid metric"),
            sync_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "breakwater_cluster_sync_seconds",
                    "Duration of successful sync rounds.",
                )
                .buckets(vec![
                    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                ]),
            )
            .expect("valid metric"),
            lag_ms: IntGauge::new(
                "breakwater_cluster_sync_lag_milliseconds",
                "Time since the last successful sync.",
            )
            .expect("valid metric"),
            events: IntCounterVec::new(
                Opts::new(
                    "breakwater_cluster_events_total",
                    "Fleet events (hot, cooled, block, unblock) by direction (in, out).",
                ),
                &["event", "direction"],
            )
            .expect("valid metric"),
        };
        let collectors: [Box<dyn prometheus::core::Collector>; 7] = [
            Box::new(m.degraded.clone()),
            Box::new(m.peers.clone()),
            Box::new(m.syncs.clone()),
            Box::new(m.commands.clone()),
            Box::new(m.sync_seconds.clone()),
            Box::new(m.lag_ms.clone()),
            Box::new(m.events.clone()),
        ];
        for c in collectors {
            if let Err(e) = registry.register(c) {
                tracing::error!(error = %e, "cannot register a fleet metric");
            }
        }
        m.degraded.set(1);
        m
    }
}

/// A peer as `/fleet` shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PeerView {
    pub instance_id: String,
    pub last_seen_ms_ago: u64,
}

#[derive(Default)]
struct Inner {
    peers: Vec<(String, u64)>,
    redis_now_ms: u64,
    last_error: Option<(SystemTime, String)>,
    last_success: Option<Instant>,
    last_round_trip: Duration,
    consecutive_failures: u32,
    /// The outage was logged (once per outage, also one at startup).
    warned: bool,
}

/// Shared by the sync task, the event task and the admin.
pub struct FleetStatus {
    pub config: FleetConfig,
    pub fleet: Arc<Fleet>,
    pub metrics: FleetMetrics,
    started: Instant,
    inner: Mutex<Inner>,
    rounds: AtomicU64,
}

/// Consecutive failed rounds that switch to degraded mode: one failure may
/// be a blip; two in a row (at least one interval apart) are an outage.
const DEGRADE_AFTER: u32 = 2;

impl FleetStatus {
    pub fn new(config: FleetConfig, fleet: Arc<Fleet>, registry: &prometheus::Registry) -> Self {
        Self {
            config,
            fleet,
            metrics: FleetMetrics::new(registry),
            started: crate::time::now(),
            inner: Mutex::new(Inner::default()),
            rounds: AtomicU64::new(0),
        }
    }

    /// Records a successful round: back to (or still in) global mode.
    pub fn succeeded(&self, round_trip: Duration, peers: Option<Vec<(String, u64)>>, now_ms: u64) {
        let mut inner = self.inner.lock();
        if let Some(peers) = peers {
            self.fleet.set_peers_seen(peers.len() as u32);
            self.metrics.peers.set(peers.len() as i64);
            inner.peers = peers;
            inner.redis_now_ms = now_ms;
        }
        if !self.fleet.is_global() {
            tracing::info!(target: "breakwater::fleet", "fleet sync working: global mode");
        }
        inner.warned = false;
        inner.last_success = Some(crate::time::now());
        inner.last_round_trip = round_trip;
        inner.consecutive_failures = 0;
        self.fleet.set_global(true);
        self.metrics.degraded.set(0);
        self.metrics.syncs.with_label_values(&["ok"]).inc();
        self.metrics.sync_seconds.observe(round_trip.as_secs_f64());
        self.metrics.lag_ms.set(0);
        self.rounds.fetch_add(1, Ordering::Relaxed);
    }

    /// Records a failed round; enough of them in a row degrade the fleet.
    pub fn failed(&self, error: String) {
        let mut inner = self.inner.lock();
        inner.consecutive_failures += 1;
        let degrade = inner.consecutive_failures >= DEGRADE_AFTER || inner.last_success.is_none();
        if degrade && !inner.warned {
            inner.warned = true;
            tracing::warn!(
                target: "breakwater::fleet",
                %error,
                expected_instances = self.fleet.expected_instances(),
                "fleet sync failing: degraded to local limits"
            );
        } else if inner.consecutive_failures == 1 {
            tracing::debug!(target: "breakwater::fleet", %error, "fleet sync failed");
        }
        if degrade {
            self.fleet.set_global(false);
            self.metrics.degraded.set(1);
        }
        inner.last_error = Some((SystemTime::now(), error));
        self.metrics.syncs.with_label_values(&["error"]).inc();
        let lag = inner
            .last_success
            .unwrap_or(self.started)
            .elapsed()
            .as_millis();
        self.metrics.lag_ms.set(lag as i64);
        self.rounds.fetch_add(1, Ordering::Relaxed);
    }

    pub fn mode(&self) -> &'static str {
        if self.fleet.is_global() {
            "global"
        } else {
            "degraded"
        }
    }

    /// `GET /cluster`.
    pub fn view(&self) -> serde_json::Value {
        let inner = self.inner.lock();
        let peers: Vec<PeerView> = inner
            .peers
            .iter()
            .map(|(id, seen)| PeerView {
                instance_id: id.clone(),
                last_seen_ms_ago: inner.redis_now_ms.saturating_sub(*seen),
            })
            .collect();
        let lag = inner.last_success.map(|t| t.elapsed().as_millis() as u64);
        let redis = match &self.config.target {
            RedisTarget::Standalone(url) => serde_json::json!({ "standalone": redact(url) }),
            RedisTarget::Cluster(nodes) => {
                serde_json::json!({ "cluster": nodes.iter().map(|n| redact(n)).collect::<Vec<_>>() })
            }
        };
        serde_json::json!({
            "mode": self.mode(),
            "instance_id": self.config.instance_id,
            "redis": redis,
            "key_prefix": self.config.key_prefix,
            "shards": self.config.shards,
            "sync_interval_ms": self.config.sync_interval.as_millis() as u64,
            "sync_lag_ms": lag,
            "last_round_trip_us": inner.last_round_trip.as_micros() as u64,
            "consecutive_failures": inner.consecutive_failures,
            "last_error": inner.last_error.as_ref().map(|(at, e)| serde_json::json!({
                "at": humantime::format_rfc3339_millis(*at).to_string(),
                "error": e,
            })),
            "expected_instances": self.fleet.expected_instances(),
            "peers": peers,
            "rounds": self.rounds.load(Ordering::Relaxed),
            "redis_commands": self.metrics.commands.get(),
        })
    }
}

/// A URL without its password, for display.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***{}", &url[..scheme], &url[at..])
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_not_shown() {
        assert_eq!(redact("redis://:secret@h:6379/0"), "redis://***@h:6379/0");
        assert_eq!(redact("redis://h:6379"), "redis://h:6379");
    }
}
