//! Prometheus metrics.
//!
//! One [`Metrics`] lives for the whole process and outlives config snapshots.
//! Label lookups in a `prometheus` vec take a lock and hash the labels, so the
//! hot path never does them: compiled routes, clusters and policies hold
//! resolved counter handles, and per-status counters are resolved once per
//! (route, status) and then cached lock-free in [`StatusCounters`].

use std::sync::OnceLock;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

/// Every metric Breakwater exports, in one registry.
pub struct Metrics {
    pub registry: Registry,
    pub requests: IntCounterVec,
    pub upstream_latency: HistogramVec,
    pub decisions: IntCounterVec,
    pub reloads: IntCounterVec,
    pub config_generation: IntGauge,
    pub attempts: IntCounterVec,
    pub retries: IntCounterVec,
    pub budget_exhausted: IntCounterVec,
    /// `breakwater_upstream_dns_resolutions_total{cluster, result}`.
    pub dns: IntCounterVec,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "breakwater_requests_total",
                "Requests answered, by route and response status.",
            ),
            &["route", "status"],
        )
        .expect("valid metric");
        let upstream_latency = HistogramVec::new(
            HistogramOpts::new(
                "breakwater_upstream_latency_seconds",
                "Time from sending a request upstream to the end of its response, by cluster.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ]),
            &["cluster"],
        )
        .expect("valid metric");
        let decisions = IntCounterVec::new(
            Opts::new(
                "breakwater_policy_decisions_total",
                "Policy decisions, by policy, policy type and decision.",
            ),
            &["policy", "kind", "decision"],
        )
        .expect("valid metric");
        let reloads = IntCounterVec::new(
            Opts::new(
                "breakwater_config_reloads_total",
                "Config reload attempts, by result (ok, error, unchanged).",
            ),
            &["result"],
        )
        .expect("valid metric");
        let config_generation = IntGauge::new(
            "breakwater_config_generation",
            "How many configs have been applied since start (1 = the startup config).",
        )
        .expect("valid metric");
        let per_cluster = |name: &str, help: &str| {
            IntCounterVec::new(Opts::new(name, help), &["cluster"]).expect("valid metric")
        };
        let attempts = per_cluster(
            "breakwater_upstream_attempts_total",
            "Upstream attempts (first tries and retries), by cluster.",
        );
        let retries = per_cluster("breakwater_upstream_retries_total", "Retries, by cluster.");
        let budget_exhausted = per_cluster(
            "breakwater_retry_budget_exhausted_total",
            "Retries refused because the cluster's retry budget was spent.",
        );
        let dns = IntCounterVec::new(
            Opts::new(
                "breakwater_upstream_dns_resolutions_total",
                "Periodic resolutions of a cluster's endpoint names, by result (same, changed, failed).",
            ),
            &["cluster", "result"],
        )
        .expect("valid metric");
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(dns.clone()),
            Box::new(upstream_latency.clone()),
            Box::new(decisions.clone()),
            Box::new(reloads.clone()),
            Box::new(config_generation.clone()),
            Box::new(attempts.clone()),
            Box::new(retries.clone()),
            Box::new(budget_exhausted.clone()),
        ] {
            registry.register(c).expect("metric registered once");
        }
        Self {
            registry,
            requests,
            upstream_latency,
            decisions,
            reloads,
            config_generation,
            attempts,
            retries,
            budget_exhausted,
            dns,
        }
    }

    /// The registry in Prometheus text exposition format.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 * 1024);
        let families = self.registry.gather();
        // Encoding into a Vec cannot fail for well-formed metric families.
        let _ = TextEncoder::new().encode(&families, &mut out);
        out
    }

    /// Resolved decision counters for one policy.
    pub fn decision_counters(&self, policy: &str, kind: &str) -> DecisionCounters {
        let c = |d: &str| self.decisions.with_label_values(&[policy, kind, d]);
        DecisionCounters {
            allowed: c("allow"),
            rejected: c("reject"),
            responded: c("respond"),
        }
    }

    pub fn status_counters(&self, route: &str) -> StatusCounters {
        StatusCounters::new(self.requests.clone(), route)
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Counter handles for one policy's decisions.
#[derive(Debug, Clone)]
pub struct DecisionCounters {
    pub allowed: IntCounter,
    pub rejected: IntCounter,
    pub responded: IntCounter,
}

/// `breakwater_requests_total{route=R, status=*}` for one route, each status
/// resolved on first use and cached in a lock-free slot.
pub struct StatusCounters {
    vec: IntCounterVec,
    route: String,
    slots: Box<[OnceLock<IntCounter>]>,
}

impl StatusCounters {
    fn new(vec: IntCounterVec, route: &str) -> Self {
        Self {
            vec,
            route: route.to_string(),
            slots: (0..600).map(|_| OnceLock::new()).collect(),
        }
    }

    /// Counts one answered request with `status`.
    pub fn inc(&self, status: u16) {
        match self.slots.get(status as usize) {
            Some(slot) => slot
                .get_or_init(|| {
                    self.vec
                        .with_label_values(&[self.route.as_str(), &status.to_string()])
                })
                .inc(),
            None => self
                .vec
                .with_label_values(&[self.route.as_str(), &status.to_string()])
                .inc(),
        }
    }
}

impl std::fmt::Debug for StatusCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusCounters")
            .field("route", &self.route)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_counters_land_in_the_shared_vec() {
        let m = Metrics::new();
        let a = m.status_counters("goods");
        a.inc(200);
        a.inc(200);
        a.inc(404);
        // A second handle for the same route (a reloaded snapshot) adds to the same series.
        m.status_counters("goods").inc(200);
        assert_eq!(m.requests.with_label_values(&["goods", "200"]).get(), 3);
        assert_eq!(m.requests.with_label_values(&["goods", "404"]).get(), 1);
        let text = String::from_utf8(m.render()).unwrap();
        assert!(text.contains("breakwater_requests_total{route=\"goods\",status=\"200\"} 3"));
    }
}
