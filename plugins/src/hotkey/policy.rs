//! `hotkey`: the rule that watches a key, declares it hot, and acts while it is.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::Serialize;

use super::detector::{DetectorConfig, HotEvent, HotKey, HotKeyDetector};
use super::events::HotEventHub;
use crate::block_list::BlockList;
use crate::cache::ResponseCache;
use crate::fleet::{
    Fleet, GlobalSync, Section, SectionKind, SectionReply, SyncItem, FLEET_BUCKETS,
};
use crate::rate_limit::RateLimit;
use crate::report::{LimitCounts, LimitReport};
use crate::{Clock, Decision, Exchange, KeySpec, Policy, PolicyEnv, RequestView};

/// Minutes of top-key statistics kept per rule.
pub const STATS_MINUTES: usize = 60;
/// Keys kept per minute of statistics.
pub const STATS_TOP: usize = 20;

const MINUTE: u64 = 60_000_000_000;

/// The top keys of one minute.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MinuteTop {
    /// Minutes since the policy clock's origin: consecutive minutes differ by 1.
    pub minute: u64,
    pub keys: Vec<(String, u64)>,
}

/// Totals for metrics and the admin.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct HotKeyCounts {
    pub hot_events: u64,
    pub cooled_events: u64,
    pub limited: u64,
    pub blocked: u64,
}

pub struct HotKeyRule {
    name: String,
    key: KeySpec,
    detector: HotKeyDetector,
    actions: Vec<&'static str>,
    limiter: Option<RateLimit>,
    /// How long and with which status `block` blocks.
    block: Option<(Duration, u16)>,
    cache: Option<ResponseCache>,
    blocks: Arc<BlockList>,
    hub: Arc<HotEventHub>,
    clock: Arc<dyn Clock>,
    minutes: Mutex<VecDeque<MinuteTop>>,
    last_minute: AtomicU64,
    admitted: AtomicU64,
    hot_events: AtomicU64,
    cooled_events: AtomicU64,
    limited: AtomicU64,
    blocked: AtomicU64,
    config: serde_json::Value,
    /// Set for `scope: global`: candidates' counts are aggregated fleet-wide.
    fleet: Option<Arc<Fleet>>,
}

impl HotKeyRule {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        name: String,
        key: KeySpec,
        detector: DetectorConfig,
        actions: Vec<&'static str>,
        limiter: Option<RateLimit>,
        block: Option<(Duration, u16)>,
        cache: Option<ResponseCache>,
        env: &PolicyEnv<'_>,
        fleet: Option<Arc<Fleet>>,
        config: serde_json::Value,
    ) -> Self {
        Self {
            name,
            key,
            detector: if fleet.is_some() {
                HotKeyDetector::new(detector).with_fleet_deltas()
            } else {
                HotKeyDetector::new(detector)
            },
            actions,
            limiter,
            block,
            cache,
            blocks: env.blocks.clone(),
            hub: env.hot_events.clone(),
            clock: env.clock.clone(),
            minutes: Mutex::new(VecDeque::with_capacity(STATS_MINUTES)),
            last_minute: AtomicU64::new(u64::MAX),
            admitted: AtomicU64::new(0),
            hot_events: AtomicU64::new(0),
            cooled_events: AtomicU64::new(0),
            limited: AtomicU64::new(0),
            blocked: AtomicU64::new(0),
            config,
            fleet,
        }
    }

    pub fn detector(&self) -> &HotKeyDetector {
        &self.detector
    }

    /// The rule's local cache, if it has the `cache` action.
    pub fn cache(&self) -> Option<&ResponseCache> {
        self.cache.as_ref()
    }

    pub fn actions(&self) -> &[&'static str] {
        &self.actions
    }

    pub fn key_text(&self) -> &str {
        self.key.text()
    }

    /// The hot keys now, hottest first.
    pub fn hot_keys(&self) -> Vec<HotKey> {
        self.detector.hot_keys(self.clock.now_nanos())
    }

    pub fn counts(&self) -> HotKeyCounts {
        HotKeyCounts {
            hot_events: self.hot_events.load(Ordering::Relaxed),
            cooled_events: self.cooled_events.load(Ordering::Relaxed),
            limited: self.limited.load(Ordering::Relaxed),
            blocked: self.blocked.load(Ordering::Relaxed),
        }
    }

    /// The top keys over the last `minutes` complete minutes, summed, most
    /// frequent first (at most [`STATS_TOP`] per minute were kept, so a key
    /// that was not in a minute's top adds nothing for that minute).
    pub fn top_over(&self, minutes: usize) -> Vec<(String, u64)> {
        let kept = self.minutes.lock();
        let mut sums: Vec<(String, u64)> = Vec::new();
        for m in kept.iter().rev().take(minutes) {
            for (k, n) in &m.keys {
                match sums.iter_mut().find(|(s, _)| s == k) {
                    Some((_, total)) => *total += n,
                    None => sums.push((k.clone(), *n)),
                }
            }
        }
        sums.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        sums.truncate(STATS_TOP);
        sums
    }

    /// The kept minutes, oldest first.
    pub fn minutes(&self) -> Vec<MinuteTop> {
        self.minutes.lock().iter().cloned().collect()
    }

    /// Forgets that the key named `text` is hot (admin invalidation). Finds it
    /// among the hot keys by name.
    pub fn forget(&self, text: &str) -> bool {
        let now = self.clock.now_nanos();
        self.detector
            .hot_keys(now)
            .into_iter()
            .find(|k| k.key == text)
            .is_some_and(|k| self.detector.forget(k.hash))
    }

    /// Counts, invalidates and publishes a key's cooling.
    fn announce_cooled(&self, event: &HotEvent) {
        self.cooled_events.fetch_add(1, Ordering::Relaxed);
        if let Some(cache) = &self.cache {
            cache.cooled(event.hash);
        }
        self.hub.publish(&self.name, &self.actions, event);
    }

    fn announce_hot(&self, event: &HotEvent) {
        self.hot_events.fetch_add(1, Ordering::Relaxed);
        self.hub.publish(&self.name, &self.actions, event);
    }

    /// The key's hash as the detector and the cache know it: the block
    /// list's (per process, fast) for a local rule; for a global rule the
    /// fleet's stable hash, by which the key is named in Redis and in the
    /// fleet's hot events.
    fn key_hash(&self, req: &RequestView<'_>) -> Option<u64> {
        match &self.fleet {
            None => self.blocks.hash_of(&self.key, req.keys),
            Some(fleet) => fleet
                .hasher()
                .hash_labeled(self.key.text(), &self.key, req.keys),
        }
    }

    /// Blocks the key and refuses (`hash` is [`Self::key_hash`]'s).
    fn block_key(
        &self,
        req: &RequestView<'_>,
        hash: u64,
        duration: Duration,
        status: u16,
    ) -> Decision {
        // The block list hashes with its own hasher.
        let hash = match self.fleet {
            None => hash,
            Some(_) => match self.blocks.hash_of(&self.key, req.keys) {
                Some(h) => h,
                None => return Decision::Continue,
            },
        };
        let value = self.key.render(req.keys).unwrap_or_default();
        let text = format!("{}:{value}", self.key.text());
        let reason = format!(
            "hot key: over {} per window",
            self.detector.config().threshold
        );
        self.blocked.fetch_add(1, Ordering::Relaxed);
        Decision::Reject(
            self.blocks
                .block_and_refuse(hash, text, duration, reason, &self.name, status),
        )
    }
}

impl Policy for HotKeyRule {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "hotkey"
    }

    fn on_request(&self, req: &RequestView<'_>, exchange: &mut Exchange) -> Decision {
        let Some(hash) = self.key_hash(req) else {
            return Decision::Continue;
        };
        let seen = self
            .detector
            .observe(hash, req.now_nanos, || self.key.render(req.keys));
        if let Some(event) = &seen.became_hot {
            self.announce_hot(event);
        }
        if seen.hot {
            if let Some((duration, status)) = self.block {
                return self.block_key(req, hash, duration, status);
            }
        }
        if let Some(cache) = self.cache.as_ref().filter(|c| c.serves(seen.hot)) {
            let render = || self.key.render(req.keys).unwrap_or_default();
            let decision = cache.on_request(req, hash, render, exchange);
            if !matches!(decision, Decision::Continue) {
                return decision;
            }
        }
        if seen.hot {
            if let Some(limiter) = &self.limiter {
                let decision = limiter.on_request(req, exchange);
                if matches!(decision, Decision::Reject(_)) {
                    self.limited.fetch_add(1, Ordering::Relaxed);
                    return decision;
                }
            }
        }
        self.admitted.fetch_add(1, Ordering::Relaxed);
        Decision::Continue
    }

    /// Cools keys (publishing events) and, once a minute, keeps the last
    /// minute's top keys.
    fn tick(&self, now: u64) {
        for event in self.detector.sweep(now) {
            self.announce_cooled(&event);
        }
        let minute = now / MINUTE;
        if self.last_minute.swap(minute, Ordering::Relaxed) != minute && minute > 0 {
            let keys = self.detector.top_of_last_minute(now, STATS_TOP);
            let mut kept = self.minutes.lock();
            if kept.back().is_some_and(|m| m.minute == minute - 1) {
                return;
            }
            if kept.len() == STATS_MINUTES {
                kept.pop_front();
            }
            kept.push_back(MinuteTop {
                minute: minute - 1,
                keys,
            });
        }
    }

    fn global(&self) -> Option<&dyn GlobalSync> {
        self.fleet.as_ref().map(|_| self as &dyn GlobalSync)
    }

    fn limit_report(&self, top: usize) -> Option<LimitReport> {
        let stats = self.detector.tracked();
        let hot = self.hot_keys();
        let window = self.detector.config().window;
        Some(LimitReport {
            name: self.name.clone(),
            kind: "hotkey",
            config: self.config.clone(),
            tracked_keys: stats.tracked,
            max_keys: stats.max_keys,
            evictions: stats.evictions,
            counts: LimitCounts {
                admitted: self.admitted.load(Ordering::Relaxed),
                rejected: self.limited.load(Ordering::Relaxed)
                    + self.blocked.load(Ordering::Relaxed),
                shadow_rejected: 0,
            },
            top_keys: hot
                .into_iter()
                .take(top)
                .map(|k| crate::report::TopKey {
                    key: k.key,
                    count: k.rate * window.as_secs_f64(),
                    rate_per_sec: k.rate,
                })
                .collect(),
            in_flight: None,
            queued: None,
        })
    }
}

/// A global rule sends its candidates' counts; the fleet's store declares
/// keys hot on the fleet total and tells every instance (the reply's hot set
/// and the events the gateway relays).
impl GlobalSync for HotKeyRule {
    /// Every candidate with new events is sent (at most `max_tracked`, which
    /// bounds the batch): a capped batch would starve the same keys each round.
    fn collect(&self, _now: u64, _max_items: usize) -> Section {
        let (threshold, hold_at) = self.detector.lines();
        let cfg = self.detector.config();
        Section {
            policy: self.name.clone(),
            kind: SectionKind::Hot {
                threshold,
                hold_at,
                hot_ttl_ms: cfg.hot_ttl.as_millis() as u64,
            },
            window_ms: cfg.window.as_millis() as u64,
            buckets: FLEET_BUCKETS,
            items: self
                .detector
                .take_pending(cfg.max_tracked)
                .into_iter()
                .map(|(hash, delta, name)| SyncItem {
                    hash,
                    delta,
                    name,
                    lease: None,
                })
                .collect(),
        }
    }

    /// Every key the fleet holds hot is hot here, also the ones missed on
    /// the event channel.
    fn apply(&self, _section: &Section, reply: &SectionReply, now: u64) {
        for (hash, key) in &reply.hot {
            self.fleet_hot(*hash, key, 0, true, now);
        }
    }

    fn abandon(&self, _section: &Section) {}

    fn fleet_hot(&self, hash: u64, key: &str, count: u64, hot: bool, now: u64) {
        if hot {
            if let Some(event) = self.detector.mark_hot(hash, key, count, now) {
                self.announce_hot(&event);
            }
        } else if let Some(event) = self.detector.cool(hash, now) {
            self.announce_cooled(&event);
        }
    }
}
