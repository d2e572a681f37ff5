//! Metrics read from the policies at scrape time.
//!
//! Tracked keys, evictions and per-policy admitted/rejected counts live in
//! the policies' own atomics; this collector reads them when Prometheus
//! scrapes, so the request path pays nothing extra for them. It reads the
//! live snapshot, so a removed policy's series disappear after a reload, and a
//! rebuilt policy's counters restart (a counter reset, which Prometheus
//! handles).

use std::sync::Arc;

use breakwater_plugins::block_list::BlockList;
use breakwater_plugins::breaker::Breaker;
use breakwater_plugins::dedupe::Dedupe;
use breakwater_plugins::hotkey::HotKeyRule;
use breakwater_plugins::report::LimitReport;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntCounterVec, IntGauge, IntGaugeVec, Opts};

use crate::config::snapshot::SnapshotStore;
use crate::metrics::Metrics;

pub struct PolicyCollector {
    store: Arc<SnapshotStore>,
    blocks: Arc<BlockList>,
    descs: Vec<Desc>,
}

struct Families {
    requests: IntCounterVec,
    tracked: IntGaugeVec,
    evictions: IntCounterVec,
    in_flight: IntGaugeVec,
    queued: IntGaugeVec,
    blocks_live: IntGauge,
    block_events: IntCounterVec,
    breaker_state: IntGaugeVec,
    breaker_transitions: IntCounterVec,
    hot_keys: IntGaugeVec,
    hot_events: IntCounterVec,
    cache_requests: IntCounterVec,
    cache_bytes: IntGaugeVec,
    cache_entries: IntGaugeVec,
    cache_evictions: IntCounterVec,
    dedupe_requests: IntCounterVec,
    dedupe_in_flight: IntGaugeVec,
}

fn families() -> Families {
    let pk = &["policy", "kind"];
    Families {
        requests: IntCounterVec::new(
            Opts::new(
                "breakwater_limit_requests_total",
                "Requests seen by limit-like policies, by result (admitted, rejected, shadow_rejected).",
            ),
            &["policy", "kind", "result"],
        )
        .expect("valid metric"),
        tracked: IntGaugeVec::new(
            Opts::new("breakwater_limit_tracked_keys", "Keys a policy currently tracks."),
            pk,
        )
        .expect("valid metric"),
        evictions: IntCounterVec::new(
            Opts::new(
                "breakwater_limit_evictions_total",
                "Keys evicted because a policy's max_keys was reached.",
            ),
            pk,
        )
        .expect("valid metric"),
        in_flight: IntGaugeVec::new(
            Opts::new("breakwater_concurrency_in_flight", "Requests holding a concurrency slot."),
            &["policy"],
        )
        .expect("valid metric"),
        queued: IntGaugeVec::new(
            Opts::new("breakwater_concurrency_queued", "Requests waiting for a concurrency slot."),
            &["policy"],
        )
        .expect("valid metric"),
        blocks_live: IntGauge::new("breakwater_blocks_active", "Keys on the block list now.")
            .expect("valid metric"),
        block_events: IntCounterVec::new(
            Opts::new(
                "breakwater_block_events_total",
                "Block list events: blocked, expired, removed (by admin), refused_full.",
            ),
            &["event"],
        )
        .expect("valid metric"),
        breaker_state: IntGaugeVec::new(
            Opts::new(
                "breakwater_breaker_state",
                "Circuit breaker state: 0 closed, 1 open, 2 half-open.",
            ),
            &["breaker"],
        )
        .expect("valid metric"),
        breaker_transitions: IntCounterVec::new(
            Opts::new(
                "breakwater_breaker_transitions_total",
                "Circuit breaker transitions, by the state entered.",
            ),
            &["breaker", "to"],
        )
        .expect("valid metric"),
        hot_keys: IntGaugeVec::new(
            Opts::new("breakwater_hotkeys_hot", "Keys a hotkey rule holds hot now."),
            &["rule"],
        )
        .expect("valid metric"),
        hot_events: IntCounterVec::new(
            Opts::new(
                "breakwater_hotkey_events_total",
                "Hot-key events by rule: hot, cooled; and requests acted on: limited, blocked.",
            ),
            &["rule", "event"],
        )
        .expect("valid metric"),
        cache_requests: IntCounterVec::new(
            Opts::new(
                "breakwater_cache_requests_total",
                "Hot-key cache lookups by rule and result: hit, miss, stale, collapsed, bypass; and stored answers.",
            ),
            &["rule", "result"],
        )
        .expect("valid metric"),
        cache_bytes: IntGaugeVec::new(
            Opts::new("breakwater_cache_bytes", "Bytes a rule's cache holds (weighed)."),
            &["rule"],
        )
        .expect("valid metric"),
        cache_entries: IntGaugeVec::new(
            Opts::new("breakwater_cache_entries", "Answers a rule's cache holds."),
            &["rule"],
        )
        .expect("valid metric"),
        cache_evictions: IntCounterVec::new(
            Opts::new(
                "breakwater_cache_evictions_total",
                "Answers a rule's cache evicted to stay within max_bytes (memory pressure).",
            ),
            &["rule"],
        )
        .expect("valid metric"),
        dedupe_requests: IntCounterVec::new(
            Opts::new(
                "breakwater_dedupe_requests_total",
                "Requests with a dedupe key, by what dedupe did: joined, refused (409), untracked (table full), unhashable (body not read ahead).",
            ),
            &["policy", "result"],
        )
        .expect("valid metric"),
        dedupe_in_flight: IntGaugeVec::new(
            Opts::new("breakwater_dedupe_in_flight", "Requests a dedupe policy tracks in flight."),
            &["policy"],
        )
        .expect("valid metric"),
    }
}

impl PolicyCollector {
    /// Registers the scrape-time collector of policy and block-list state.
    /// (Here rather than on [`Metrics`]: the metrics sit below the snapshot,
    /// which this collector reads.)
    pub fn register(metrics: &Metrics, store: Arc<SnapshotStore>, blocks: Arc<BlockList>) {
        let collector = Self::new(store, blocks);
        if let Err(e) = metrics.registry.register(Box::new(collector)) {
            tracing::error!(error = %e, "cannot register the policy metrics");
        }
    }

    pub fn new(store: Arc<SnapshotStore>, blocks: Arc<BlockList>) -> Self {
        let f = families();
        let descs = [
            f.requests.desc(),
            f.tracked.desc(),
            f.evictions.desc(),
            f.in_flight.desc(),
            f.queued.desc(),
            f.blocks_live.desc(),
            f.block_events.desc(),
            f.breaker_state.desc(),
            f.breaker_transitions.desc(),
            f.hot_keys.desc(),
            f.hot_events.desc(),
            f.cache_requests.desc(),
            f.cache_bytes.desc(),
            f.cache_entries.desc(),
            f.cache_evictions.desc(),
            f.dedupe_requests.desc(),
            f.dedupe_in_flight.desc(),
        ]
        .into_iter()
        .flatten()
        .cloned()
        .collect();
        Self {
            store,
            blocks,
            descs,
        }
    }
}

impl Collector for PolicyCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let f = families();
        let snapshot = self.store.load();
        let registries = &snapshot.registries;
        for (name, d) in &registries.dedupes {
            dedupe_metrics(&f, name, d);
        }
        for (name, rule) in &registries.hot_keys {
            hot_key_metrics(&f, name, rule);
        }
        for b in registries.every_breaker() {
            breaker_metrics(&f, &b);
        }
        for (name, limit) in &registries.limits {
            if let Some(r) = limit.report(0) {
                limit_metrics(&f, name, &r);
            }
        }
        let b = self.blocks.counts();
        f.blocks_live.set(b.live as i64);
        for (event, n) in [
            ("blocked", b.blocked),
            ("expired", b.expired),
            ("removed", b.removed),
            ("refused_full", b.refused_full),
        ] {
            f.block_events.with_label_values(&[event]).inc_by(n);
        }
        [
            f.requests.collect(),
            f.tracked.collect(),
            f.evictions.collect(),
            f.in_flight.collect(),
            f.queued.collect(),
            f.blocks_live.collect(),
            f.block_events.collect(),
            f.breaker_state.collect(),
            f.breaker_transitions.collect(),
            f.hot_keys.collect(),
            f.hot_events.collect(),
            f.cache_requests.collect(),
            f.cache_bytes.collect(),
            f.cache_entries.collect(),
            f.cache_evictions.collect(),
            f.dedupe_requests.collect(),
            f.dedupe_in_flight.collect(),
        ]
        .concat()
    }
}

fn dedupe_metrics(f: &Families, name: &str, d: &Dedupe) {
    let c = d.counts();
    for (result, n) in [
        ("joined", c.joined),
        ("refused", c.refused),
        ("untracked", c.untracked),
        ("unhashable", c.unhashable),
    ] {
        f.dedupe_requests
            .with_label_values(&[name, result])
            .inc_by(n);
    }
    f.dedupe_in_flight
        .with_label_values(&[name])
        .set(d.in_flight() as i64);
}

fn hot_key_metrics(f: &Families, name: &str, rule: &HotKeyRule) {
    f.hot_keys
        .with_label_values(&[name])
        .set(rule.detector().hot_len() as i64);
    let c = rule.counts();
    for (event, n) in [
        ("hot", c.hot_events),
        ("cooled", c.cooled_events),
        ("limited", c.limited),
        ("blocked", c.blocked),
    ] {
        f.hot_events.with_label_values(&[name, event]).inc_by(n);
    }
    let Some(cache) = rule.cache() else {
        return;
    };
    let c = cache.counts();
    for (result, n) in [
        ("hit", c.hit),
        ("miss", c.miss),
        ("stale", c.stale),
        ("collapsed", c.collapsed),
        ("bypass", c.bypass),
        ("stored", c.stored),
    ] {
        f.cache_requests
            .with_label_values(&[name, result])
            .inc_by(n);
    }
    f.cache_bytes.with_label_values(&[name]).set(c.bytes as i64);
    f.cache_entries
        .with_label_values(&[name])
        .set(c.entries as i64);
    f.cache_evictions
        .with_label_values(&[name])
        .inc_by(c.evicted);
}

fn breaker_metrics(f: &Families, b: &Breaker) {
    f.breaker_state
        .with_label_values(&[b.name()])
        .set(b.state().gauge());
    let t = b.transitions();
    for (to, n) in [
        ("closed", t.to_closed),
        ("open", t.to_open),
        ("half_open", t.to_half_open),
    ] {
        f.breaker_transitions
            .with_label_values(&[b.name(), to])
            .inc_by(n);
    }
}

fn limit_metrics(f: &Families, name: &str, r: &LimitReport) {
    let kind = r.kind;
    for (result, n) in [
        ("admitted", r.counts.admitted),
        ("rejected", r.counts.rejected),
        ("shadow_rejected", r.counts.shadow_rejected),
    ] {
        f.requests
            .with_label_values(&[name, kind, result])
            .inc_by(n);
    }
    if r.max_keys > 0 {
        f.tracked
            .with_label_values(&[name, kind])
            .set(r.tracked_keys as i64);
        f.evictions
            .with_label_values(&[name, kind])
            .inc_by(r.evictions);
    }
    if let Some(n) = r.in_flight {
        f.in_flight.with_label_values(&[name]).set(n as i64);
    }
    if let Some(n) = r.queued {
        f.queued.with_label_values(&[name]).set(n as i64);
    }
}
