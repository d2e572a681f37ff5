//! Per-key counts of a global limit: local deltas plus the fleet's last total.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::fleet::Fleet;
use super::sync::{Section, SectionKind, SectionReply, SyncItem};
use crate::store::{KeyState, KeyedStore, StoreStats};
use crate::window::{SlidingWindow, WindowSpec};

/// Sub-buckets of the fleet's windows in Redis: a tenth of a window each, so
/// a sync at the default 100 ms interval moves the window by one bucket.
pub const FLEET_BUCKETS: u32 = 10;

/// Shares are kept in millionths.
const PPM: u64 = 1_000_000;

/// Sub-buckets of the local window (degraded-mode enforcement and heat).
const LOCAL_BUCKETS: u32 = 4;

/// What [`GlobalCounter::admit`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GlobalAdmit {
    /// Admitted. `used` is the count the decision saw (before this request).
    Admit { used: u64 },
    /// Refused; retry after about this long.
    Refuse { retry_after: Duration },
}

#[derive(Debug, Default)]
struct Entry {
    /// Requests admitted here, in the local window.
    local: SlidingWindow,
    /// Admitted here since the last collect.
    pending: AtomicU32,
    /// Collected and sent; the reply has not come back yet.
    inflight: AtomicU32,
    /// The fleet-wide count in the window at the last reply.
    fleet: AtomicU64,
    /// When `fleet` was read (policy clock); 0 = never.
    fleet_at: AtomicU64,
    /// The part of the fleet's headroom this instance may use until the
    /// next reply, in millionths: its own share of the key's recent
    /// admissions, at least 1/N. 0 = not computed yet (then 1/N).
    share_ppm: AtomicU32,
    /// The last request for the key, admitted or not: a key refused
    /// everywhere still needs its fleet total refreshed.
    seen_at: AtomicU64,
}

#[derive(Debug, Clone, Copy)]
struct Cx {
    spec: WindowSpec,
    window_nanos: u64,
}

impl KeyState for Entry {
    type Context = Cx;

    fn heat(&self, now: u64, cx: &Cx) -> u64 {
        let recent = now.saturating_sub(self.seen_at.load(Ordering::Relaxed)) <= cx.window_nanos;
        self.local.heat(&cx.spec, now) + u64::from(recent)
    }
}

/// The state of one global limit: a capped store of keys, each with its
/// local window, its unsynced deltas and the fleet's last total.
pub struct GlobalCounter {
    policy: String,
    fleet: Arc<Fleet>,
    window: Duration,
    entries: KeyedStore<Entry>,
    /// Rotates where a capped batch starts, so that no key is left out of
    /// every batch when more than `max_items` keys are active.
    rounds: AtomicU64,
}

impl GlobalCounter {
    pub fn new(policy: String, window: Duration, max_keys: usize, fleet: Arc<Fleet>) -> Self {
        let spec = WindowSpec::new(window, LOCAL_BUCKETS);
        Self {
            policy,
            fleet,
            window,
            entries: KeyedStore::new(
                max_keys,
                Cx {
                    spec,
                    window_nanos: window.as_nanos() as u64,
                },
            ),
            rounds: AtomicU64::new(0),
        }
    }

    pub fn fleet(&self) -> &Arc<Fleet> {
        &self.fleet
    }

    /// Decides one request for `hash` against `limit` per window. Reads and
    /// bumps atomics only. In global mode the count is the fleet's last total
    /// plus what this instance admitted since (a total older than a window
    /// counts as 0); degraded, it is this instance's own window against its
    /// share of the limit. Check and count are two steps, as in the local
    /// sliding window: concurrent requests at the edge can pass together.
    pub fn admit(&self, hash: u64, now: u64, limit: u64) -> GlobalAdmit {
        let cx = *self.entries.context();
        let global = self.fleet.is_global();
        self.entries.with(hash, now, Entry::default, |e| {
            e.seen_at.store(now, Ordering::Relaxed);
            let tick = cx.spec.tick(now);
            let (used, allowed) = if global {
                let fresh =
                    now.saturating_sub(e.fleet_at.load(Ordering::Relaxed)) <= cx.window_nanos;
                let fleet = if fresh {
                    e.fleet.load(Ordering::Relaxed)
                } else {
                    0
                };
                let local = u64::from(e.inflight.load(Ordering::Relaxed))
                    + u64::from(e.pending.load(Ordering::Relaxed));
                // This instance's slice of the headroom seen at the last
                // sync: shares sum to about 1, so the instances together
                // cannot spend the same headroom several times over.
                let share = match e.share_ppm.load(Ordering::Relaxed) {
                    0 => PPM / u64::from(self.fleet.expected_instances()),
                    ppm => u64::from(ppm),
                };
                let budget = (limit.saturating_sub(fleet) * share).div_ceil(PPM);
                if local + 1 > budget {
                    return GlobalAdmit::Refuse {
                        retry_after: self
                            .fleet
                            .settings()
                            .sync_interval
                            .max(Duration::from_millis(1)),
                    };
                }
                (fleet + local, limit)
            } else {
                let used = e.local.estimate_scaled_at(tick);
                let share = self.fleet.local_share(limit);
                // Compare in the window's scaled units; report whole requests.
                if used + tick.scaled(1) > tick.scaled(share) {
                    return GlobalAdmit::Refuse {
                        retry_after: cx.spec.until_next_bucket(now),
                    };
                }
                e.local.add_at(tick, 1);
                return GlobalAdmit::Admit {
                    used: tick.unscale(used) as u64,
                };
            };
            if used + 1 > allowed {
                return GlobalAdmit::Refuse {
                    retry_after: self
                        .fleet
                        .settings()
                        .sync_interval
                        .max(Duration::from_millis(1)),
                };
            }
            e.pending.fetch_add(1, Ordering::Relaxed);
            e.local.add_at(tick, 1);
            GlobalAdmit::Admit { used }
        })
    }

    /// The count a decision for `hash` would see now (admin and tests).
    pub fn used(&self, hash: u64, now: u64) -> Option<u64> {
        let cx = *self.entries.context();
        self.entries.peek(hash, |e| {
            if self.fleet.is_global() {
                let fresh =
                    now.saturating_sub(e.fleet_at.load(Ordering::Relaxed)) <= cx.window_nanos;
                let fleet = if fresh {
                    e.fleet.load(Ordering::Relaxed)
                } else {
                    0
                };
                fleet
                    + u64::from(e.inflight.load(Ordering::Relaxed))
                    + u64::from(e.pending.load(Ordering::Relaxed))
            } else {
                e.local.estimate(&cx.spec, now).round() as u64
            }
        })
    }

    pub fn stats(&self) -> StoreStats {
        self.entries.stats()
    }

    /// This instance's own admissions, as a local window (for top keys).
    pub fn local_rates(&self, top: usize, now: u64) -> Vec<(u64, f64)> {
        let cx = *self.entries.context();
        crate::window::hottest(&self.entries, top, &cx.spec, now, |e| &e.local)
    }

    /// Takes every key seen within the window: its pending delta moves to
    /// `inflight` until the reply. Keys with a delta come first, so a capped
    /// batch never leaves admissions unsent in favour of refreshes; past
    /// `max_items`, each round starts further along, so every key is sent
    /// within `active keys / max_items` rounds (its delta waits meanwhile).
    pub fn collect(&self, now: u64, max_items: usize) -> Section {
        let cx = *self.entries.context();
        let mut with_delta = Vec::new();
        let mut refresh = Vec::new();
        self.entries.for_each(|hash, e| {
            if e.pending.load(Ordering::Relaxed) > 0 {
                with_delta.push(hash);
            } else if now.saturating_sub(e.seen_at.load(Ordering::Relaxed)) <= cx.window_nanos {
                refresh.push(hash);
            }
        });
        let round = self.rounds.fetch_add(1, Ordering::Relaxed) as usize;
        for keys in [&mut with_delta, &mut refresh] {
            if keys.len() > max_items {
                let start = (round * max_items) % keys.len();
                keys.rotate_left(start);
            }
        }
        with_delta.extend(refresh);
        with_delta.truncate(max_items);
        let items = with_delta
            .into_iter()
            .filter_map(|hash| {
                self.entries.peek(hash, |e| {
                    let delta = e.pending.swap(0, Ordering::Relaxed);
                    e.inflight.fetch_add(delta, Ordering::Relaxed);
                    SyncItem {
                        hash,
                        delta,
                        name: String::new(),
                    }
                })
            })
            .collect();
        Section {
            policy: self.policy.clone(),
            kind: SectionKind::Counter,
            window_ms: self.window.as_millis() as u64,
            buckets: FLEET_BUCKETS,
            items,
        }
    }

    /// Stores the fleet totals: from now on decisions count from them.
    pub fn apply(&self, section: &Section, reply: &SectionReply, now: u64) {
        let cx = *self.entries.context();
        let floor = PPM / u64::from(self.fleet.expected_instances());
        for (item, total) in section.items.iter().zip(&reply.totals) {
            self.entries.peek(item.hash, |e| {
                let own = e.local.estimate(&cx.spec, now);
                let share = if *total == 0 {
                    floor
                } else {
                    ((own / *total as f64 * PPM as f64) as u64).clamp(floor, PPM)
                };
                e.share_ppm.store(share.max(1) as u32, Ordering::Relaxed);
                e.fleet.store(*total, Ordering::Relaxed);
                e.fleet_at.store(now.max(1), Ordering::Relaxed);
                e.inflight.fetch_sub(
                    item.delta.min(e.inflight.load(Ordering::Relaxed)),
                    Ordering::Relaxed,
                );
            });
        }
    }

    /// Drops the deltas of a failed sync.
    pub fn abandon(&self, section: &Section) {
        for item in &section.items {
            self.entries.peek(item.hash, |e| {
                e.inflight.fetch_sub(
                    item.delta.min(e.inflight.load(Ordering::Relaxed)),
                    Ordering::Relaxed,
                );
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::FleetSettings;

    const MS: u64 = 1_000_000;

    fn counter(expected: Option<u32>) -> GlobalCounter {
        let fleet = Arc::new(Fleet::new(FleetSettings {
            sync_interval: Duration::from_millis(100),
            hash_seed: 3,
            expected_instances: expected,
        }));
        fleet.set_global(true);
        GlobalCounter::new("per-user".into(), Duration::from_secs(1), 1000, fleet)
    }

    fn admitted(c: &GlobalCounter, hash: u64, now: u64, n: u32, limit: u64) -> u32 {
        (0..n)
            .filter(|_| matches!(c.admit(hash, now, limit), GlobalAdmit::Admit { .. }))
            .count() as u32
    }

    fn reply(totals: &[u64]) -> SectionReply {
        SectionReply {
            totals: totals.to_vec(),
            hot: vec![],
        }
    }

    #[test]
    fn admission_counts_the_fleet_total_plus_local_deltas() {
        let c = counter(None);
        let now = 10 * MS;
        assert_eq!(admitted(&c, 7, now, 30, 100), 30);
        let section = c.collect(now, 100);
        assert_eq!(section.items.len(), 1);
        assert_eq!(section.items[0].delta, 30);
        assert_eq!(section.kind, SectionKind::Counter);
        assert_eq!((section.window_ms, section.buckets), (1000, FLEET_BUCKETS));
        // While the sync is under way, the sent delta still counts.
        assert_eq!(c.used(7, now), Some(30));
        assert_eq!(admitted(&c, 7, now, 5, 100), 5);
        // The fleet saw 30 from us and 50 from the others.
        c.apply(&section, &reply(&[80]), now + MS);
        assert_eq!(c.used(7, now + MS), Some(85));
        assert_eq!(admitted(&c, 7, now + MS, 30, 100), 15);
        // The next collect carries only the new admissions.
        let next = c.collect(now + 2 * MS, 100);
        assert_eq!(next.items[0].delta, 20);
    }

    #[test]
    fn each_instance_spends_only_its_share_of_the_headroom() {
        let c = counter(None);
        c.fleet().set_peers_seen(4);
        // A key never synced: a quarter of the limit until the first reply.
        assert_eq!(admitted(&c, 3, MS, 100, 100), 25);
        // The fleet admitted 100 in the window, 25 of them here: a quarter of
        // whatever headroom opens.
        let s = c.collect(MS, 10);
        c.apply(&s, &reply(&[60]), 2 * MS);
        // 40 of headroom, share 25/60 → 17.
        assert_eq!(admitted(&c, 3, 2 * MS, 100, 100), 17);
        // All of the key's traffic came here: the whole headroom.
        let s = c.collect(3 * MS, 10);
        c.apply(&s, &reply(&[42]), 3 * MS);
        assert_eq!(admitted(&c, 3, 3 * MS, 100, 100), 58);
    }

    #[test]
    fn a_fleet_total_older_than_a_window_no_longer_counts() {
        let c = counter(None);
        assert_eq!(admitted(&c, 1, MS, 1, 10), 1);
        let s = c.collect(MS, 10);
        c.apply(&s, &reply(&[10]), MS);
        assert_eq!(admitted(&c, 1, 2 * MS, 1, 10), 0);
        // No sync for more than a window: the stale total is forgotten.
        assert_eq!(admitted(&c, 1, 1_200 * MS, 1, 10), 1);
    }

    #[test]
    fn a_failed_sync_drops_its_deltas_and_refreshes_keep_keys_in_view() {
        let c = counter(None);
        assert_eq!(admitted(&c, 5, MS, 4, 10), 4);
        let s = c.collect(MS, 10);
        c.abandon(&s);
        assert_eq!(c.used(5, MS), Some(0));
        // A key refused everywhere is still sent (delta 0) to refresh its total.
        let s = c.collect(2 * MS, 10);
        assert_eq!(s.items.len(), 1);
        assert_eq!(s.items[0].delta, 0);
        // Keys with deltas go first when the batch is capped.
        assert_eq!(admitted(&c, 6, 3 * MS, 1, 10), 1);
        let s = c.collect(3 * MS, 1);
        assert_eq!(s.items.len(), 1);
        assert_eq!(s.items[0].hash, 6);
        // Past the cap, rounds take turns: every key with a delta goes out.
        for k in 10..20 {
            assert_eq!(admitted(&c, k, 4 * MS, 1, 10), 1);
        }
        let mut sent = std::collections::BTreeSet::new();
        for _ in 0..4 {
            sent.extend(c.collect(4 * MS, 3).items.iter().map(|i| i.hash));
        }
        assert!((10..20).all(|k| sent.contains(&k)), "{sent:?}");
        // Long idle keys are not sent at all.
        assert!(c.collect(5_000 * MS, 10).items.is_empty());
    }

    #[test]
    fn degraded_mode_enforces_the_local_share_of_the_limit() {
        let c = counter(Some(4));
        c.fleet().set_global(false);
        // 100 fleet-wide over 4 instances: 25 here.
        assert_eq!(admitted(&c, 9, MS, 40, 100), 25);
        match c.admit(9, MS, 100) {
            GlobalAdmit::Refuse { retry_after } => assert!(retry_after > Duration::ZERO),
            other => panic!("expected a refusal, got {other:?}"),
        }
        // Degraded admissions are not flushed later as one burst.
        assert_eq!(c.collect(MS, 10).items[0].delta, 0);
        // Back in global mode the fleet total decides again.
        c.fleet().set_global(true);
        assert_eq!(admitted(&c, 9, 2 * MS, 10, 100), 10);
    }

    #[test]
    fn the_store_is_capped() {
        let c = counter(None);
        for k in 0..5000u64 {
            c.admit(k.wrapping_mul(0x9E37_79B9_7F4A_7C15), MS, 10);
        }
        assert!(c.stats().tracked <= 1000);
    }
}
