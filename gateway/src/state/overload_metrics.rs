//! The overload gates' metrics, read at scrape time from the live
//! snapshot's clusters (the request path pays nothing for them):
//!
//! - `breakwater_overload_limit{cluster}`: the learned concurrency limit;
//! - `breakwater_overload_in_flight{cluster}`, `_queued{cluster}`;
//! - `breakwater_overload_min_rtt_seconds{cluster}`: the provider's learned
//!   unloaded round trip; `_rtt_seconds{cluster}`: the last interval's mean;
//! - `breakwater_overload_overloaded{cluster}`: 1 when it refused a call
//!   within the last second;
//! - `breakwater_overload_shed_total{cluster, class}`: calls refused.
//!
//! A cluster with `overload: off` has no series. A gate rebuilt by a reload
//! (its settings or endpoints changed) restarts its counter.

use std::sync::Arc;

use breakwater_plugins::overload::{Class, Gate};
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{GaugeVec, IntCounterVec, IntGaugeVec, Opts};

use crate::config::snapshot::SnapshotStore;
use crate::metrics::Metrics;

pub struct OverloadCollector {
    store: Arc<SnapshotStore>,
    descs: Vec<Desc>,
}

struct Families {
    limit: IntGaugeVec,
    in_flight: IntGaugeVec,
    queued: IntGaugeVec,
    min_rtt: GaugeVec,
    rtt: GaugeVec,
    overloaded: IntGaugeVec,
    shed: IntCounterVec,
}

impl Families {
    fn new() -> Self {
        let c = &["cluster"];
        let int = |name: &str, help: &str| {
            IntGaugeVec::new(Opts::new(name, help), c).expect("valid metric")
        };
        let float =
            |name: &str, help: &str| GaugeVec::new(Opts::new(name, help), c).expect("valid metric");
        Self {
            limit: int(
                "breakwater_overload_limit",
                "The learned concurrency limit of the cluster's overload gate.",
            ),
            in_flight: int(
                "breakwater_overload_in_flight",
                "Calls holding a place at the cluster's overload gate.",
            ),
            queued: int(
                "breakwater_overload_queued",
                "Calls waiting for a place at the cluster's overload gate.",
            ),
            min_rtt: float(
                "breakwater_overload_min_rtt_seconds",
                "The provider's learned unloaded round trip.",
            ),
            rtt: float(
                "breakwater_overload_rtt_seconds",
                "The mean round trip of the gate's last interval.",
            ),
            overloaded: int(
                "breakwater_overload_overloaded",
                "1 when the cluster's gate refused a call within the last second.",
            ),
            shed: IntCounterVec::new(
                Opts::new(
                    "breakwater_overload_shed_total",
                    "Calls the cluster's overload gate refused, by priority class.",
                ),
                &["cluster", "class"],
            )
            .expect("valid metric"),
        }
    }

    fn all(&self) -> [&dyn Collector; 7] {
        [
            &self.limit,
            &self.in_flight,
            &self.queued,
            &self.min_rtt,
            &self.rtt,
            &self.overloaded,
            &self.shed,
        ]
    }

    fn read(&self, gate: &Gate) {
        let name = gate.name();
        let limit = gate.limit();
        let (base, recent) = limit.rtts();
        self.limit
            .with_label_values(&[name])
            .set(i64::from(limit.limit()));
        self.in_flight
            .with_label_values(&[name])
            .set(i64::from(limit.in_flight()));
        self.queued
            .with_label_values(&[name])
            .set(gate.queued() as i64);
        self.min_rtt
            .with_label_values(&[name])
            .set(base.as_secs_f64());
        self.rtt
            .with_label_values(&[name])
            .set(recent.as_secs_f64());
        self.overloaded
            .with_label_values(&[name])
            .set(i64::from(gate.overloaded()));
        for class in Class::ALL {
            self.shed
                .with_label_values(&[name, class.as_str()])
                .inc_by(gate.shed(class));
        }
    }
}

impl OverloadCollector {
    /// Registers the scrape-time collector of the overload gates.
    pub fn register(metrics: &Metrics, store: Arc<SnapshotStore>) {
        let descs = Families::new()
            .all()
            .iter()
            .flat_map(|c| c.desc())
            .cloned()
            .collect();
        let collector = Self { store, descs };
        if let Err(e) = metrics.registry.register(Box::new(collector)) {
            tracing::error!(error = %e, "cannot register the overload metrics");
        }
    }
}

impl Collector for OverloadCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let f = Families::new();
        let snapshot = self.store.load();
        for cluster in snapshot.clusters.values() {
            if let Some(o) = &cluster.overload {
                f.read(&o.gate);
            }
        }
        f.all().iter().flat_map(|c| c.collect()).collect()
    }
}
