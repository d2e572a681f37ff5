//! Per-key state of a global limit: leases granted by the fleet's store.
//!
//! An instance admits a request for a key while it holds lease left for it.
//! When a key needs it, a sync hands back what was not spent, reports what
//! was admitted without a lease, and asks for a new lease sized for the
//! key's demand or its part of the room under the limit; the store's script
//! grants at most what the key's limit leaves in the window — atomically,
//! so two instances are never granted the same headroom (see the module doc
//! of [`super`] for the bound). An evicted key's lease is forgotten (the
//! store lets it expire) and its unreported admissions with it.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::sync::{LeaseAsk, Section, SectionKind, SectionReply, SyncItem};
use super::view::Fleet;
use crate::store::{KeyState, KeyedStore, StoreStats};
use crate::window::{SlidingWindow, WindowSpec};

/// Sub-buckets of the fleet's windows in Redis: a tenth of a window each, so
/// a sync at the default 100 ms interval moves the window by one bucket.
pub const FLEET_BUCKETS: u32 = 10;

/// Sub-buckets of the local window (degraded-mode enforcement and heat).
const LOCAL_BUCKETS: u32 = 4;

/// What [`GlobalCounter::admit`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GlobalAdmit {
    /// Admitted; `fleet` is the key's fleet-wide count at the last sync.
    Admit { fleet: u64 },
    /// Refused; retry after about this long.
    Refuse { retry_after: Duration },
}

#[derive(Debug, Default)]
struct Entry {
    /// Requests admitted here, in the local window (degraded-mode
    /// enforcement, heat and the admin's top keys).
    local: SlidingWindow,
    /// Lease left: requests this instance may still admit.
    lease: AtomicU64,
    /// What was handed back in the sync under way (see `apply`).
    giving_back: AtomicU32,
    /// The store bucket the current lease was granted in.
    lease_bucket: AtomicU64,
    /// When the last lease (even an empty one) arrived; 0 = never. Until
    /// one has arrived within a window, the key is new here.
    leased_at: AtomicU64,
    /// Admitted without a lease since the last sync; reported then.
    unleased: AtomicU32,
    /// Of the new-key allowance, used since the key became new.
    allowance_used: AtomicU32,
    /// Requests seen since the last sync, admitted or not: the demand the
    /// next lease is sized for.
    demand: AtomicU32,
    /// The key's limit as of its last request (overrides differ per key).
    limit: AtomicU64,
    /// The fleet-wide count in the window at the last reply.
    fleet: AtomicU64,
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

/// The state of one global limit: a capped store of keys with their leases.
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
        Self {
            policy,
            fleet,
            window,
            entries: KeyedStore::new(
                max_keys,
                Cx {
                    spec: WindowSpec::new(window, LOCAL_BUCKETS),
                    window_nanos: window.as_nanos() as u64,
                },
            ),
            rounds: AtomicU64::new(0),
        }
    }

    pub fn fleet(&self) -> &Arc<Fleet> {
        &self.fleet
    }

    fn retry_after(&self) -> Duration {
        self.fleet
            .settings()
            .sync_interval
            .max(Duration::from_millis(1))
    }

    /// Decides one request for `hash` against `limit` per window; atomics
    /// only. In global mode a request spends one unit of lease. A key new
    /// here (no lease within a window) may use an allowance of
    /// `limit / 2N` before its first lease, reported at the next sync — so
    /// a user's first requests are not refused for want of a lease. Degraded,
    /// the instance's own window is held to its share of the limit.
    pub fn admit(&self, hash: u64, now: u64, limit: u64) -> GlobalAdmit {
        let cx = *self.entries.context();
        self.entries.with(hash, now, Entry::default, |e| {
            e.seen_at.store(now, Ordering::Relaxed);
            e.limit.store(limit, Ordering::Relaxed);
            let tick = cx.spec.tick(now);
            if !self.fleet.is_global() {
                let used = e.local.estimate_scaled_at(tick);
                if used + tick.scaled(1) > tick.scaled(self.fleet.local_share(limit)) {
                    return GlobalAdmit::Refuse {
                        retry_after: cx.spec.until_next_bucket(now),
                    };
                }
                e.local.add_at(tick, 1);
                return GlobalAdmit::Admit {
                    fleet: e.fleet.load(Ordering::Relaxed),
                };
            }
            e.demand.fetch_add(1, Ordering::Relaxed);
            let leased_at = e.leased_at.load(Ordering::Relaxed);
            // The store forgets a grant a window after it was made: a lease
            // is spendable only well before that.
            let leased = now.saturating_sub(leased_at) <= self.lease_ttl()
                && e.lease
                    .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |l| l.checked_sub(1))
                    .is_ok();
            if !leased {
                let new = leased_at == 0 || now.saturating_sub(leased_at) > cx.window_nanos;
                let allowance = self.allowance(limit);
                let allowed = new
                    && e.allowance_used
                        .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |u| {
                            (u < allowance).then_some(u + 1)
                        })
                        .is_ok();
                if !allowed {
                    return GlobalAdmit::Refuse {
                        retry_after: self.retry_after(),
                    };
                }
                e.unleased.fetch_add(1, Ordering::Relaxed);
            }
            e.local.add_at(tick, 1);
            GlobalAdmit::Admit {
                fleet: e.fleet.load(Ordering::Relaxed),
            }
        })
    }

    /// How long a lease may be spent: the store counts a grant for at least
    /// a window, and the lease must be renewed (up to a sync later) before
    /// that: `W − I`, at least `W/2`.
    fn lease_ttl(&self) -> u64 {
        let w = self.window.as_nanos() as u64;
        let i = self.fleet.settings().sync_interval.as_nanos() as u64;
        w.saturating_sub(i).max(w / 2)
    }

    /// Whether a key has to take part in the next sync. Keys whose lease
    /// covers their demand and is not about to expire sit it out, so a key
    /// far from its limit costs the store a call about once per lease
    /// (`W − 3I`) rather than every interval.
    fn needs_sync(&self, e: &Entry, now: u64, window_nanos: u64) -> bool {
        let interval = self.fleet.settings().sync_interval.as_nanos() as u64;
        let lease = e.lease.load(Ordering::Relaxed);
        let demand = u64::from(e.demand.load(Ordering::Relaxed));
        let seen = now.saturating_sub(e.seen_at.load(Ordering::Relaxed)) <= window_nanos;
        let age = now.saturating_sub(e.leased_at.load(Ordering::Relaxed));
        e.unleased.load(Ordering::Relaxed) > 0
            || (lease > 0 && !seen)
            || (seen && (age + 2 * interval > self.lease_ttl() || lease < (2 * demand).max(1)))
    }

    /// What a key new here may admit before its first lease: half of this
    /// instance's share of the limit, so that the allowances of all
    /// instances that meet a key at once stay within half the limit. They
    /// are reported only at each instance's next sync, possibly after a
    /// lease was granted on a total that lacks them: the store therefore
    /// grants a young key (counts in its last two buckets only) at most
    /// `1/N` of what is left, per ask.
    fn allowance(&self, limit: u64) -> u32 {
        let n = u64::from(self.fleet.expected_instances());
        limit.div_ceil(2 * n).clamp(1, u64::from(u32::MAX)) as u32
    }

    /// The fleet-wide count at the last sync.
    pub fn fleet_count(&self, hash: u64) -> Option<u64> {
        self.entries.peek(hash, |e| e.fleet.load(Ordering::Relaxed))
    }

    /// Whether the key is tracked.
    pub fn tracks(&self, hash: u64) -> bool {
        self.entries.peek(hash, |_| ()).is_some()
    }

    pub fn stats(&self) -> StoreStats {
        self.entries.stats()
    }

    /// This instance's own admissions, as a local window (for top keys).
    pub fn local_rates(&self, top: usize, now: u64) -> Vec<(u64, f64)> {
        let cx = *self.entries.context();
        crate::window::hottest(&self.entries, top, &cx.spec, now, |e| &e.local)
    }

    /// One item per key with something to say (see `needs_sync`): demand
    /// its lease does not cover, a lease about to expire or no longer
    /// needed, admissions to report. Keys with
    /// unleased admissions or demand come first; past `max_items`, each
    /// round starts further along, so every key is sent within
    /// `active keys / max_items` rounds.
    pub fn collect(&self, now: u64, max_items: usize) -> Section {
        let cx = *self.entries.context();
        let n = u64::from(self.fleet.expected_instances());
        let mut urgent = Vec::new();
        let mut idle = Vec::new();
        self.entries.for_each(|hash, e| {
            if !self.needs_sync(e, now, cx.window_nanos) {
                return;
            }
            if e.unleased.load(Ordering::Relaxed) > 0 || e.demand.load(Ordering::Relaxed) > 0 {
                urgent.push(hash);
            } else {
                idle.push(hash);
            }
        });
        let round = self.rounds.fetch_add(1, Ordering::Relaxed) as usize;
        for keys in [&mut urgent, &mut idle] {
            if keys.len() > max_items {
                let start = (round * max_items) % keys.len();
                keys.rotate_left(start);
            }
        }
        urgent.extend(idle);
        urgent.truncate(max_items);
        let items = urgent
            .into_iter()
            .filter_map(|hash| {
                self.entries.peek(hash, |e| {
                    let recent =
                        now.saturating_sub(e.seen_at.load(Ordering::Relaxed)) <= cx.window_nanos;
                    ask(hash, e, n, recent)
                })
            })
            .collect();
        Section {
            policy: self.policy.clone(),
            kind: SectionKind::Counter {
                instances: n as u32,
            },
            window_ms: self.window.as_millis() as u64,
            buckets: FLEET_BUCKETS,
            items,
        }
    }

    /// Installs the granted leases. Whatever was spent of the handed-back
    /// lease while the sync was under way counts as admitted without one
    /// (reported next time), so nothing admitted goes uncounted.
    ///
    /// A key that asked for nothing (not seen here for a window: it handed
    /// its lease back) returns to the state of a key never leased here, so
    /// that when it comes back it has its first-contact allowance again
    /// rather than neither a lease nor an allowance until the next sync.
    pub fn apply(&self, section: &Section, reply: &SectionReply, now: u64) {
        let items = section.items.iter().zip(&reply.totals).zip(&reply.grants);
        for ((item, total), grant) in items {
            let idle = item.lease.is_some_and(|l| l.want == 0) && *grant == 0;
            self.entries.peek(item.hash, |e| {
                // The lease only shrank since it was handed back: the
                // difference was spent meanwhile.
                let left = e.lease.swap(*grant, Ordering::AcqRel);
                let handed = u64::from(e.giving_back.swap(0, Ordering::Relaxed));
                let spent_meanwhile = handed.saturating_sub(left);
                e.unleased
                    .fetch_add(spent_meanwhile as u32, Ordering::Relaxed);
                e.lease_bucket.store(reply.bucket, Ordering::Relaxed);
                e.leased_at
                    .store(if idle { 0 } else { now.max(1) }, Ordering::Relaxed);
                e.allowance_used.store(0, Ordering::Relaxed);
                e.fleet.store(*total, Ordering::Relaxed);
            });
        }
    }

    /// The sync failed: the store saw nothing of it. Unleased admissions
    /// are reported next time; the lease handed back was never returned,
    /// so it stays spendable.
    pub fn abandon(&self, section: &Section) {
        for item in &section.items {
            self.entries.peek(item.hash, |e| {
                e.unleased.fetch_add(item.delta, Ordering::Relaxed);
                e.giving_back.store(0, Ordering::Relaxed);
            });
        }
    }
}

/// What one key asks of the store: report unleased admissions, hand back
/// the unspent lease (it stays spendable until the reply), and ask for a
/// new one — for a key seen within the window, the larger of
///
/// - its demand: the last interval's requests and half as much again, at
///   most `2·limit/N` (so that one instance cannot take all the headroom
///   that frees up while the others want it too), and
/// - its fair part of the room: `(limit − total)/(2N)`, so that a key far
///   from its limit never waits for a lease, however its requests arrive.
fn ask(hash: u64, e: &Entry, n: u64, recent: bool) -> SyncItem {
    let delta = e.unleased.swap(0, Ordering::Relaxed);
    let demand = u64::from(e.demand.swap(0, Ordering::Relaxed));
    let limit = e.limit.load(Ordering::Relaxed).max(1);
    let give_back = e.lease.load(Ordering::Acquire).min(u64::from(u32::MAX)) as u32;
    e.giving_back.store(give_back, Ordering::Relaxed);
    let want = if recent || demand > 0 {
        let for_demand = (demand + demand / 2 + 1).min((2 * limit).div_ceil(n));
        let room = limit.saturating_sub(e.fleet.load(Ordering::Relaxed)) / (2 * n);
        for_demand.max(room).min(limit).min(u64::from(u32::MAX)) as u32
    } else {
        0
    };
    SyncItem {
        hash,
        delta,
        name: String::new(),
        lease: Some(LeaseAsk {
            want,
            limit,
            give_back,
            from_bucket: e.lease_bucket.load(Ordering::Relaxed),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::FleetSettings;

    const MS: u64 = 1_000_000;

    fn counter(expected: Option<u32>) -> GlobalCounter {
        let fleet = Arc::new(Fleet::new(FleetSettings {
            sync_interval: Duration::from_millis(100),
            hash_key: crate::store::FleetKey::from_seed("test-fleet-seed-3"),
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

    /// The store's answer: `grants` per item, with fleet totals.
    fn reply(totals: &[u64], grants: &[u64], bucket: u64) -> SectionReply {
        SectionReply {
            totals: totals.to_vec(),
            hot: vec![],
            grants: grants.to_vec(),
            bucket,
        }
    }

    fn lease(s: &Section, i: usize) -> LeaseAsk {
        s.items[i].lease.expect("counters ask for leases")
    }

    #[test]
    fn a_new_key_spends_its_allowance_then_its_leases() {
        let c = counter(Some(4));
        let now = 10 * MS;
        // New here: half of its quarter of the limit without a lease.
        assert_eq!(admitted(&c, 7, now, 40, 100), 13);
        let s = c.collect(now, 100);
        assert_eq!(s.kind, SectionKind::Counter { instances: 4 });
        assert_eq!((s.window_ms, s.buckets), (1000, FLEET_BUCKETS));
        assert_eq!(s.items.len(), 1);
        // 13 admitted without a lease; 40 asked for, and half again, but at
        // most 2·limit/N = 50.
        assert_eq!(s.items[0].delta, 13);
        assert_eq!(
            lease(&s, 0),
            LeaseAsk {
                want: 50,
                limit: 100,
                give_back: 0,
                from_bucket: 0
            }
        );
        // The store granted 30 (others used the rest).
        c.apply(&s, &reply(&[70], &[30], 17), now + MS);
        assert_eq!(c.fleet_count(7), Some(70));
        assert_eq!(admitted(&c, 7, now + MS, 50, 100), 30);
        // Leased now: no allowance any more.
        assert_eq!(admitted(&c, 7, now + MS, 5, 100), 0);
        let s = c.collect(now + 2 * MS, 100);
        assert_eq!(s.items[0].delta, 0);
        assert_eq!(lease(&s, 0).want, 50, "55 seen, capped at 2·limit/N");
        assert_eq!(lease(&s, 0).give_back, 0);
        assert_eq!(lease(&s, 0).from_bucket, 17);
    }

    #[test]
    fn unspent_lease_goes_back_and_what_is_spent_meanwhile_is_reported() {
        let c = counter(Some(1));
        c.admit(3, MS, 100);
        let s = c.collect(MS, 10);
        c.apply(&s, &reply(&[1], &[20], 5), MS);
        assert_eq!(admitted(&c, 3, MS, 8, 100), 8);
        // 12 left, less than twice the demand: handed back (but still
        // spendable until the reply) and renewed.
        let s = c.collect(2 * MS, 10);
        assert_eq!(lease(&s, 0).give_back, 12);
        assert_eq!(lease(&s, 0).from_bucket, 5);
        assert_eq!(admitted(&c, 3, 2 * MS, 4, 100), 4);
        c.apply(&s, &reply(&[10], &[8], 6), 3 * MS);
        // The new lease; the 4 spent meanwhile are reported next time.
        assert_eq!(admitted(&c, 3, 3 * MS, 20, 100), 8);
        let s = c.collect(4 * MS, 10);
        assert_eq!(s.items[0].delta, 4);
        // A failed sync keeps the lease it tried to hand back, and the
        // report for next time.
        c.abandon(&s);
        let s = c.collect(5 * MS, 10);
        assert_eq!(s.items[0].delta, 4);
    }

    #[test]
    fn a_key_back_after_handing_its_lease_back_has_its_allowance_again() {
        let c = counter(Some(3));
        // Met at 0: the allowance (100 / 6 = 17), then a lease.
        assert_eq!(admitted(&c, 5, 0, 8, 100), 8);
        let s = c.collect(MS, 10);
        c.apply(&s, &reply(&[8], &[16], 1), MS);
        // Not seen for a window: it hands the lease back and asks for nothing.
        let s = c.collect(1100 * MS, 10);
        assert_eq!((lease(&s, 0).give_back, lease(&s, 0).want), (16, 0));
        c.apply(&s, &reply(&[8], &[0], 11), 1100 * MS);
        // Back within a window of that sync: a burst fits in the allowance.
        assert_eq!(admitted(&c, 5, 1500 * MS, 8, 100), 8);
        let s = c.collect(1600 * MS, 10);
        assert_eq!(s.items[0].delta, 8, "the allowance is reported");
    }

    #[test]
    fn a_lease_expires_before_the_store_forgets_it() {
        let c = counter(Some(1));
        c.admit(2, MS, 100);
        let s = c.collect(MS, 10);
        c.apply(&s, &reply(&[1], &[50], 1), MS);
        assert_eq!(admitted(&c, 2, 500 * MS, 10, 100), 10);
        // W − I after the grant the lease is void (the store may forget the
        // grant a window after it); the key is not new, so: refused.
        assert_eq!(admitted(&c, 2, 950 * MS, 10, 100), 0);
    }

    #[test]
    fn a_key_without_a_lease_for_a_window_is_new_again() {
        let c = counter(Some(2));
        assert_eq!(admitted(&c, 1, MS, 40, 100), 25);
        let s = c.collect(MS, 10);
        c.apply(&s, &reply(&[100], &[0], 1), MS);
        assert_eq!(admitted(&c, 1, 2 * MS, 10, 100), 0, "at the limit");
        assert_eq!(admitted(&c, 1, 1_200 * MS, 40, 100), 25);
    }

    #[test]
    fn a_key_far_from_its_limit_asks_for_its_part_of_the_room() {
        let c = counter(Some(2));
        c.admit(4, MS, 1000);
        let s = c.collect(MS, 10);
        // One request seen: demand alone would ask for 2.
        assert_eq!(lease(&s, 0).want, 250, "(1000 − 0) / (2·2)");
        c.apply(&s, &reply(&[400], &[250], 1), MS);
        // Its lease covers it: it sits out the syncs...
        assert_eq!(admitted(&c, 4, 2 * MS, 3, 1000), 3);
        assert!(c.collect(2 * MS, 10).items.is_empty());
        // ...until the lease is about to expire (W − 3I after it came, so
        // the new one is in before the old one is void).
        assert!(c.collect(650 * MS, 10).items.is_empty());
        let s = c.collect(750 * MS, 10);
        assert_eq!(lease(&s, 0).give_back, 247);
        assert_eq!(lease(&s, 0).want, 150, "(1000 − 400) / 4");
        // Near the limit the room is small: (1000 − 990) / 4.
        c.apply(&s, &reply(&[990], &[0], 2), 750 * MS);
        let s = c.collect(860 * MS, 10);
        assert_eq!(lease(&s, 0).want, 2);
        // Idle for a window: it hands back and asks for nothing.
        c.apply(&s, &reply(&[990], &[7], 3), 860 * MS);
        let s = c.collect(2_000 * MS, 10);
        assert_eq!((lease(&s, 0).give_back, lease(&s, 0).want), (7, 0));
        c.apply(&s, &reply(&[0], &[0], 20), 2_000 * MS);
        assert!(c.collect(2_100 * MS, 10).items.is_empty());
    }

    #[test]
    fn capped_batches_take_turns_and_idle_keys_are_not_sent() {
        let c = counter(Some(1));
        for k in 10..20 {
            assert_eq!(admitted(&c, k, MS, 1, 10), 1);
        }
        let mut sent = std::collections::BTreeSet::new();
        for _ in 0..4 {
            let s = c.collect(MS, 3);
            assert!(s.items.len() <= 3);
            sent.extend(s.items.iter().map(|i| i.hash));
        }
        assert!((10..20).all(|k| sent.contains(&k)), "{sent:?}");
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
        // Degraded admissions are not reported later as one burst.
        let s = c.collect(MS, 10);
        assert_eq!(s.items[0].delta, 0);
        // Back in global mode, the key starts with its allowance.
        c.fleet().set_global(true);
        assert_eq!(admitted(&c, 9, 2 * MS, 40, 100), 13);
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
