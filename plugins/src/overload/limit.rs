//! An adaptive concurrency limit: how many calls a provider can hold at
//! once, learned from round trips alone.
//!
//! # The algorithm
//! Every `interval` (100 ms) the limit is decided again from the round trips
//! that ended in it:
//!
//! - **Baseline**: the provider's unloaded round trip, the least RTT of the
//!   *clean* calls (those that started while fewer than half the limit were
//!   in flight, so they queued behind little of ours) over the last `window`
//!   (10 s), as BBR keeps its `min_rtt`. Under sustained overload nothing is
//!   clean and the baseline stays where it was: it cannot drift up with the
//!   queue, the failure of Gradient2's smoothed long RTT. A provider that
//!   really got slower (a slower deploy, the seed's provider) drives the
//!   limit down to its floor, where every call is clean and no other
//!   gateway's queue can be mistaken for its pace: when clean calls there
//!   are at least twice the baseline for `REBASE_AFTER` intervals in a row,
//!   the baseline follows them at once and the limit climbs back.
//! - **Decrease**: the interval's mean RTT above the baseline means a queue
//!   at the provider of `limit × (1 − base/rtt)` calls (Little's law, as
//!   Vegas reads it). Past `beta` the limit moves half way to
//!   `limit × base/rtt + alpha` (Gradient2's target): a provider of `c`
//!   workers settles at about `c + alpha`, a queue of `alpha` calls, whatever
//!   the limit was. A failed call (timeout, reset, 5xx) cuts the limit by
//!   10%, and by at least one (loss, as TCP reads it).
//! - **Increase**: below `alpha` queued, and only when the interval used at
//!   least half the limit, the limit grows by `log10(limit)` (at least 1):
//!   an idle or lightly loaded cluster keeps its limit, so a healthy
//!   upstream sees no probing and no refusals.
//!
//! Unlike Envoy's adaptive concurrency filter it never drops to a minimal
//! concurrency to re-measure the baseline (its users' success-rate dips,
//! envoy#8337): clean calls happen on their own whenever load is below the
//! limit. `alpha = max(2, 3·log10 L)`, `beta = max(4, 6·log10 L)`, as in
//! Netflix's Vegas.
//!
//! Several gateways in front of one provider each run their own limit: the
//! provider's queue is shared, so each one's gradient sees it, and together
//! they settle at about `c + n·alpha` in flight. No coordination.
//!
//! # Limits of the method
//! The baseline needs clean calls once: a gateway that starts under overload
//! takes its first interval's least RTT. Round trips longer than a provider's
//! service time for reasons other than queueing (a slow network path) read
//! as queue. The controller sees only what ends: a call that never returns
//! is seen when the gateway's deadline ends it (a drop).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use crate::Clock;

/// How many intervals in a row clean calls must be at least twice the
/// baseline before the baseline follows them.
const REBASE_AFTER: u32 = 5;

/// The limit's settings. The defaults need no knowledge of the provider.
#[derive(Debug, Clone, PartialEq)]
pub struct LimitSettings {
    /// The limit before anything is learned.
    pub initial: u32,
    /// The limit never goes below this (calls always flow).
    pub min: u32,
    /// Nor above this.
    pub max: u32,
    /// How often the limit is decided again.
    pub interval: Duration,
    /// How long the baseline remembers a clean call.
    pub window: Duration,
}

impl Default for LimitSettings {
    fn default() -> Self {
        Self {
            initial: 20,
            min: 2,
            max: 1000,
            interval: Duration::from_millis(100),
            window: Duration::from_secs(10),
        }
    }
}

/// What a finished call tells the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sample {
    /// The provider answered.
    Answered,
    /// It failed: timed out, reset, or answered with a server error.
    Dropped,
}

/// What the baseline remembers, touched only by the interval's updater.
#[derive(Default)]
struct Baseline {
    /// `(interval end, least clean RTT)` for the last `window`.
    minima: std::collections::VecDeque<(u64, u64)>,
    /// The baseline now (0: not yet known).
    nanos: u64,
    /// Intervals in a row whose clean calls were all slower than 2× it.
    slower: u32,
}

/// The limit and its counters. Share it as an `Arc`; [`AdaptiveLimit::acquire`]
/// hands out [`Slot`]s.
pub struct AdaptiveLimit {
    settings: LimitSettings,
    clock: Arc<dyn Clock>,
    limit: AtomicU32,
    in_flight: AtomicU32,
    // The current interval's samples.
    count: AtomicU64,
    rtt_sum: AtomicU64,
    clean_min: AtomicU64,
    any_min: AtomicU64,
    peak: AtomicU32,
    dropped: AtomicU64,
    next_update: AtomicU64,
    baseline: Mutex<Baseline>,
    /// The baseline and the last interval's mean RTT, for reports.
    base_seen: AtomicU64,
    rtt_seen: AtomicU64,
}

/// A call's hold on the limit. [`Slot::finish`] with how it ended; dropped
/// unfinished (the gateway gave the call up) it frees its place without a
/// sample.
pub struct Slot {
    limit: Arc<AdaptiveLimit>,
    started: u64,
    clean: bool,
    done: bool,
}

impl AdaptiveLimit {
    pub fn new(settings: LimitSettings, clock: Arc<dyn Clock>) -> Self {
        let initial = settings.initial.clamp(settings.min, settings.max);
        let next = clock.now_nanos() + nanos(settings.interval);
        Self {
            settings,
            clock,
            limit: AtomicU32::new(initial),
            in_flight: AtomicU32::new(0),
            count: AtomicU64::new(0),
            rtt_sum: AtomicU64::new(0),
            clean_min: AtomicU64::new(u64::MAX),
            any_min: AtomicU64::new(u64::MAX),
            peak: AtomicU32::new(0),
            dropped: AtomicU64::new(0),
            next_update: AtomicU64::new(next),
            baseline: Mutex::new(Baseline::default()),
            base_seen: AtomicU64::new(0),
            rtt_seen: AtomicU64::new(0),
        }
    }

    /// The limit now.
    pub fn limit(&self) -> u32 {
        self.limit.load(Ordering::Relaxed)
    }

    /// Calls holding a slot now.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// The learned baseline and the last interval's mean RTT (zero when not
    /// yet known).
    pub fn rtts(&self) -> (Duration, Duration) {
        (
            Duration::from_nanos(self.base_seen.load(Ordering::Relaxed)),
            Duration::from_nanos(self.rtt_seen.load(Ordering::Relaxed)),
        )
    }

    /// A slot, if fewer than the limit are in flight. Lock-free.
    pub fn acquire(self: &Arc<Self>) -> Option<Slot> {
        let limit = self.limit();
        let mut n = self.in_flight.load(Ordering::Relaxed);
        loop {
            if n >= limit {
                return None;
            }
            match self.in_flight.compare_exchange_weak(
                n,
                n + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(now) => n = now,
            }
        }
        self.peak.fetch_max(n + 1, Ordering::Relaxed);
        Some(Slot {
            limit: self.clone(),
            started: self.clock.now_nanos(),
            clean: n < (limit / 2).max(self.settings.min),
            done: false,
        })
    }

    fn record(&self, rtt: u64, clean: bool, sample: Sample) {
        self.count.fetch_add(1, Ordering::Relaxed);
        self.rtt_sum.fetch_add(rtt, Ordering::Relaxed);
        self.any_min.fetch_min(rtt, Ordering::Relaxed);
        if clean {
            self.clean_min.fetch_min(rtt, Ordering::Relaxed);
        }
        if sample == Sample::Dropped {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        self.maybe_update();
    }

    /// Decides the limit again if the interval is over. One caller wins the
    /// interval (a CAS on its end); the others go on at once.
    fn maybe_update(&self) {
        let now = self.clock.now_nanos();
        let due = self.next_update.load(Ordering::Acquire);
        if now < due {
            return;
        }
        let next = now + nanos(self.settings.interval);
        if self
            .next_update
            .compare_exchange(due, next, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            return;
        }
        self.update(now);
    }

    fn update(&self, now: u64) {
        let count = self.count.swap(0, Ordering::AcqRel);
        let sum = self.rtt_sum.swap(0, Ordering::AcqRel);
        let clean_min = self.clean_min.swap(u64::MAX, Ordering::AcqRel);
        let any_min = self.any_min.swap(u64::MAX, Ordering::AcqRel);
        let peak = self.peak.swap(self.in_flight(), Ordering::AcqRel);
        let dropped = self.dropped.swap(0, Ordering::AcqRel);
        if count == 0 {
            return;
        }
        let rtt = sum / count;
        let base = self.rebase(now, clean_min, any_min);
        self.base_seen.store(base, Ordering::Relaxed);
        self.rtt_seen.store(rtt, Ordering::Relaxed);
        let limit = f64::from(self.limit());
        let log = limit.log10().max(1.0);
        let alpha = (3.0 * limit.log10()).max(2.0);
        let beta = (6.0 * limit.log10()).max(4.0);
        let queue = if rtt > base {
            limit * (1.0 - base as f64 / rtt as f64)
        } else {
            0.0
        };
        let next = if dropped > 0 {
            (limit * 0.9).min(limit - 1.0)
        } else if queue > beta {
            let target = limit * base as f64 / rtt as f64 + alpha;
            (limit + target) / 2.0
        } else if queue < alpha && f64::from(peak) >= limit / 2.0 {
            limit + log
        } else {
            limit
        };
        let next = (next.round() as u32).clamp(self.settings.min, self.settings.max);
        self.limit.store(next, Ordering::Relaxed);
    }

    /// Updates the baseline with the interval's least clean RTT and returns
    /// it. The updater alone takes the lock, so it is never contended.
    fn rebase(&self, now: u64, clean_min: u64, any_min: u64) -> u64 {
        let mut b = self.baseline.lock();
        let horizon = now.saturating_sub(nanos(self.settings.window));
        while b.minima.front().is_some_and(|(at, _)| *at < horizon) {
            b.minima.pop_front();
        }
        if clean_min != u64::MAX {
            // Only near the floor is a slow clean call the provider's own
            // pace: higher up, other gateways' calls may queue ahead of it.
            let near_floor = self.limit() <= self.settings.min.saturating_mul(2);
            if near_floor && b.nanos > 0 && clean_min >= b.nanos.saturating_mul(2) {
                b.slower += 1;
            } else {
                b.slower = 0;
            }
            if b.slower >= REBASE_AFTER {
                // A slower provider, not a queue: start over from it.
                b.minima.clear();
                b.slower = 0;
            }
            b.minima.push_back((now, clean_min));
        }
        let windowed = b.minima.iter().map(|(_, m)| *m).min();
        b.nanos = match (windowed, b.nanos) {
            (Some(m), _) => m,
            // Nothing clean in the window (sustained overload): hold it.
            (None, held) if held > 0 => held,
            // Never clean yet: the best seen so far.
            (None, _) => any_min,
        };
        b.nanos
    }
}

impl Slot {
    /// The call ended: its round trip is a sample.
    pub fn finish(mut self, sample: Sample) {
        self.done = true;
        let rtt = self.limit.clock.now_nanos().saturating_sub(self.started);
        self.limit.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.limit.record(rtt, self.clean, sample);
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if !self.done {
            self.limit.in_flight.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
