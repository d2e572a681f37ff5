//! The active health checks' metrics, read at scrape time from the live
//! snapshot's clusters (the probes pay nothing for them):
//!
//! - `breakwater_upstream_endpoint_up{cluster, endpoint}`: 1 in rotation, 0
//!   out;
//! - `breakwater_upstream_health_checks_total{cluster, endpoint, result}`:
//!   probes that passed (`pass`) or failed (`fail`);
//! - `breakwater_upstream_health_changes_total{cluster, endpoint, to}`:
//!   state changes, `to="down"` or `"up"`.
//!
//! Only clusters with `health_check:` have series, and only their current
//! endpoints: a removed endpoint's series end with it.

use std::sync::Arc;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntCounterVec, IntGaugeVec, Opts};

use crate::config::snapshot::SnapshotStore;
use crate::metrics::Metrics;
use crate::upstream::health::ClusterHealth;

pub struct HealthCollector {
    store: Arc<SnapshotStore>,
    descs: Vec<Desc>,
}

struct Families {
    up: IntGaugeVec,
    checks: IntCounterVec,
    changes: IntCounterVec,
}

impl Families {
    fn new() -> Self {
        Self {
            up: IntGaugeVec::new(
                Opts::new(
                    "breakwater_upstream_endpoint_up",
                    "1 when the endpoint's health checks keep it in rotation, 0 when they took it out.",
                ),
                &["cluster", "endpoint"],
            )
            .expect("valid metric"),
            checks: IntCounterVec::new(
                Opts::new(
                    "breakwater_upstream_health_checks_total",
                    "Active health probes of the endpoint, by result (pass, fail).",
                ),
                &["cluster", "endpoint", "result"],
            )
            .expect("valid metric"),
            changes: IntCounterVec::new(
                Opts::new(
                    "breakwater_upstream_health_changes_total",
                    "Times the endpoint's health checks took it out (to=down) or brought it back (to=up).",
                ),
                &["cluster", "endpoint", "to"],
            )
            .expect("valid metric"),
        }
    }

    fn all(&self) -> [&dyn Collector; 3] {
        [&self.up, &self.checks, &self.changes]
    }

    fn read(&self, cluster: &str, health: &ClusterHealth) {
        for e in &health.endpoints {
            let endpoint = e.addr.to_string();
            let r = e.health.report();
            let at = [cluster, endpoint.as_str()];
            self.up.with_label_values(&at).set(i64::from(r.up));
            let counter = |family: &IntCounterVec, label: &str, n: u64| {
                family
                    .with_label_values(&[cluster, endpoint.as_str(), label])
                    .inc_by(n);
            };
            counter(&self.checks, "pass", r.checks - r.failures);
            counter(&self.checks, "fail", r.failures);
            counter(&self.changes, "down", r.downs);
            counter(&self.changes, "up", r.ups);
        }
    }
}

impl HealthCollector {
    /// Registers the scrape-time collector of the health checks.
    pub fn register(metrics: &Metrics, store: Arc<SnapshotStore>) {
        let descs = Families::new()
            .all()
            .iter()
            .flat_map(|c| c.desc())
            .cloned()
            .collect();
        let collector = Self { store, descs };
        if let Err(e) = metrics.registry.register(Box::new(collector)) {
            tracing::error!(error = %e, "cannot register the health-check metrics");
        }
    }
}

impl Collector for HealthCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let f = Families::new();
        let snapshot = self.store.load();
        for (name, cluster) in &snapshot.clusters {
            if let Some(h) = &cluster.health {
                f.read(name, h);
            }
        }
        f.all().iter().flat_map(|c| c.collect()).collect()
    }
}
