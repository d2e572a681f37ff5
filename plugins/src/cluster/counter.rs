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
    /// next reply, in millionths (see [`GlobalCounter::apply`]). 0 = not
    /// computed yet (then 1/N).
    share_ppm: AtomicU32,
    /// What this instance flushed, bucketed by the store's clock exactly as
    /// the store counts it: its own part of the fleet total.
    own: SlidingWindow<{ FLEET_BUCKETS as usize + 1 }>,
    /// Rounds the budget: a fraction `f` of a request is one more request
    /// with probability `f` (drawn once per sync), so the instances' budgets
    /// add up to the headroom on average instead of each rounding up.
    dice_ppm: AtomicU32,
    /// The last request for the key, admitted or not: a key refused
    /// everywhere still needs its fleet total refreshed.
    seen_at: AtomicU64,
}

#[derive(Debug, Clone, Copy)]
struct Cx {
    spec: WindowSpec,
    /// The store's buckets (whole milliseconds, as the sync script cuts them).
    fleet_spec: WindowSpec,
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
    /// The store's clock at the first reply, less a millisecond: `own`
    /// windows count from here (their epochs must start small).
    store_base_ms: AtomicU64,
}

impl GlobalCounter {
    pub fn new(policy: String, window: Duration, max_keys: usize, fleet: Arc<Fleet>) -> Self {
        let spec = WindowSpec::new(window, LOCAL_BUCKETS);
        let width_ms = (window.as_millis() as u64 / u64::from(FLEET_BUCKETS)).max(1);
        let fleet_spec = WindowSpec::new(
            Duration::from_millis(width_ms * u64::from(FLEET_BUCKETS)),
            FLEET_BUCKETS,
        );
        Self {
            policy,
            fleet,
            window,
            entries: KeyedStore::new(
                max_keys,
                Cx {
                    spec,
                    fleet_spec,
                    window_nanos: window.as_nanos() as u64,
                },
            ),
            rounds: AtomicU64::new(0),
            store_base_ms: AtomicU64::new(0),
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
                let scaled = limit.saturating_sub(fleet).saturating_mul(share);
                let dice = u64::from(e.dice_ppm.load(Ordering::Relaxed));
                let budget = scaled / PPM + u64::from(scaled % PPM > dice);
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
    ///
    /// Each key's share of the headroom becomes this instance's part of the
    /// fleet total — both summed over the same store buckets, so the shares
    /// of all instances add up to 1 — with two guards: a share at most
    /// doubles per sync (an instance whose view lacks the others' latest
    /// flushes would otherwise see itself as the whole fleet, as at the
    /// onset of a burst), and it never falls below `1/(2N)`, so an instance
    /// whose traffic grows is not starved while the others' shares shrink.
    pub fn apply(&self, section: &Section, reply: &SectionReply, now: u64) {
        let cx = *self.entries.context();
        let n = u64::from(self.fleet.expected_instances());
        let (start, floor) = (PPM / n, PPM / (2 * n));
        let base = match self.store_base_ms.load(Ordering::Relaxed) {
            0 => {
                let base = reply.store_now_ms.saturating_sub(1).max(1);
                match self.store_base_ms.compare_exchange(
                    0,
                    base,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => base,
                    Err(set) => set,
                }
            }
            base => base,
        };
        let tick = cx.fleet_spec.tick(
            reply
                .store_now_ms
                .saturating_sub(base)
                .saturating_mul(1_000_000),
        );
        for (item, total) in section.items.iter().zip(&reply.totals) {
            self.entries.peek(item.hash, |e| {
                if item.delta > 0 {
                    e.own.add_at(tick, item.delta);
                }
                let own = e.own.total_at(tick);
                let raw = match *total {
                    0 => start,
                    t => (own.saturating_mul(PPM) / t).min(PPM),
                };
                let prev = match u64::from(e.share_ppm.load(Ordering::Relaxed)) {
                    0 => start,
                    p => p,
                };
                let share = raw.min(prev * 2).clamp(floor.max(1), PPM);
                e.share_ppm.store(share as u32, Ordering::Relaxed);
                e.dice_ppm
                    .store(fastrand::u32(..PPM as u32), Ordering::Relaxed);
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

    /// The store's answer at policy time `now` (its clock runs alongside).
    fn reply(totals: &[u64], now: u64) -> SectionReply {
        SectionReply {
            totals: totals.to_vec(),
            hot: vec![],
            store_now_ms: 1_700_000_000_000 + now / MS,
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
        // The fleet saw 30 from us and 50 from the others: 20 are left, and
        // this instance may spend half of them (its share, 30 of 80, is
        // under the floor of 1/(2N) with N = 1 seen).
        c.apply(&section, &reply(&[80], now), now + MS);
        assert_eq!(c.used(7, now + MS), Some(85));
        assert_eq!(admitted(&c, 7, now + MS, 30, 100), 5);
        // The next collect carries only the new admissions.
        let next = c.collect(now + 2 * MS, 100);
        assert_eq!(next.items[0].delta, 10);
    }

    #[test]
    fn each_instance_spends_only_its_share_of_the_headroom() {
        let c = counter(None);
        c.fleet().set_peers_seen(4);
        // A key never synced: a quarter of the limit until the first reply.
        assert_eq!(admitted(&c, 3, MS, 100, 100), 25);
        // The fleet counted 60 in the window, 25 of them this instance's: of
        // the 40 left it may spend 25/60, 16.7: 16 or 17 (rounded at random,
        // so that the instances' budgets add up to the headroom on average).
        let s = c.collect(MS, 10);
        c.apply(&s, &reply(&[60], MS), 2 * MS);
        let a2 = admitted(&c, 3, 2 * MS, 100, 100);
        assert!((16..=17).contains(&a2), "{a2}");
        // Now all of the key's recent traffic was here, but a share at most
        // doubles per sync: 5/6 of what is left.
        let total = 25 + u64::from(a2);
        let s = c.collect(3 * MS, 10);
        c.apply(&s, &reply(&[total], 3 * MS), 3 * MS);
        let a3 = u64::from(admitted(&c, 3, 3 * MS, 100, 100));
        let expected = (100 - total) as f64 * 5.0 / 6.0;
        assert!((a3 as f64 - expected).abs() < 1.0, "{a3} vs {expected}");
        // One sync later, the whole headroom.
        let total = total + a3;
        let s = c.collect(4 * MS, 10);
        c.apply(&s, &reply(&[total], 4 * MS), 4 * MS);
        assert_eq!(u64::from(admitted(&c, 3, 4 * MS, 100, 100)), 100 - total);
        // A share never falls below 1/(2N): the others took everything.
        let s = c.collect(5 * MS, 10);
        c.apply(&s, &reply(&[5000], 5 * MS), 5 * MS);
        let s = c.collect(6 * MS, 10);
        c.apply(&s, &reply(&[20], 1_500 * MS), 6 * MS);
        // 80 left; own 0 in the store's window by now → floor 1/8 → 10.
        assert_eq!(admitted(&c, 3, 6 * MS, 100, 100), 10);
    }

    #[test]
    fn a_fleet_total_older_than_a_window_no_longer_counts() {
        let c = counter(None);
        assert_eq!(admitted(&c, 1, MS, 1, 10), 1);
        let s = c.collect(MS, 10);
        c.apply(&s, &reply(&[10], MS), MS);
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
