//! An adaptive concurrency limit: how many calls a provider can hold at
//! once, learned from round trips alone.
//!
//! # The algorithm
//! Every `interval` (100 ms), or once per round trip when the baseline is
//! longer (as Vegas adjusts once per RTT: an interval much shorter than the
//! round trip sees only the first calls of a burst end, and its mean swings
//! with the burst rather than the queue), the limit is decided again from
//! the round trips that ended in it:
//!
//! - **Baseline**: the provider's unloaded round trip ([`super::baseline`]):
//!   the trimmed mean (10% cut each side) of batches of at least 20 answered
//!   calls, falling at once to any batch below it, never rising because time
//!   passed. Under sustained overload every batch is slower, so it holds: it
//!   cannot drift up with the queue, the failure of Gradient2's smoothed long
//!   RTT. A provider that really got slower drives the limit to its floor;
//!   when calls there stay at least twice the baseline for 5 intervals in a
//!   row, the baseline follows them and the limit climbs back.
//! - **Decrease**: the interval's mean RTT above the baseline means a queue
//!   at the provider of `limit × (1 − base/rtt)` calls (Little's law, as
//!   Vegas reads it). Past `beta` the limit moves half way to
//!   `limit × base/rtt + alpha` (Gradient2's target): a provider of `c`
//!   workers settles at about `c + alpha`, a queue of `alpha` calls, whatever
//!   the limit was. A failed call (timeout, reset, 5xx) cuts the limit by
//!   10%, and by at least one (loss, as TCP reads it), but only when the
//!   interval also shows congestion (a queue past `alpha`, or at least half
//!   the limit in use): a few resets on a lightly used, healthy provider say
//!   nothing about its capacity, and cutting on them ratchets the limit down
//!   to the load and refuses calls.
//! - **Increase**: below `alpha` queued, and only when the interval used at
//!   least 80% of the limit, the limit grows by `log10(limit)` (at least 1):
//!   an idle or lightly loaded cluster keeps its limit, so a healthy
//!   upstream sees no probing and no refusals. When the limit itself bound
//!   the interval (calls waited for it) with no queue at the provider, the
//!   limit is what is short: it doubles when there was no congestion in the
//!   last 30 s (TCP's slow start: a fresh gateway in front of a big
//!   provider, or a healthy load that rises tenfold, is followed in a few
//!   intervals, not seconds). In slow start the limit also grows on demand
//!   within an interval, call by call, up to twice what the interval began
//!   with, so a burst on a calm, healthy provider is not refused while the
//!   interval runs. Near congestion it creeps by `log10(limit)`:
//!   there a jump would overshoot into the provider's queue, and jitter in
//!   service times would turn the jumps into a sawtooth below capacity.
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
//! The baseline needs one batch first: a gateway that starts under overload
//! (its own or other gateways') takes the least typical RTT of its first
//! intervals, queue included, and only a faster batch corrects it (see
//! [`super`]'s known gap). Round trips longer than a provider's service time
//! for reasons other than queueing (a slow network path) read as queue. A
//! provider that gets slower by less than 2x is read as a standing queue:
//! the limit holds near `beta / (1 - 1/slowdown)` until the load lets it
//! reach the floor. The controller sees only what ends: a call that never
//! returns is seen when the gateway's deadline ends it (a drop).

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use super::baseline::{Baseline, Interval, Reservoir};
use super::first::FirstCalls;
use crate::Clock;

/// How long without congestion before a limit that binds doubles again
/// instead of creeping up.
const SLOW_START_AFTER: Duration = Duration::from_secs(30);

/// `congested_at` before any congestion.
const NEVER: u64 = u64::MAX;

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
}

impl Default for LimitSettings {
    fn default() -> Self {
        Self {
            initial: 20,
            min: 2,
            max: 10_000,
            interval: Duration::from_millis(100),
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

/// The limit and its counters. Share it as an `Arc`; [`AdaptiveLimit::acquire`]
/// hands out [`Slot`]s.
pub struct AdaptiveLimit {
    settings: LimitSettings,
    clock: Arc<dyn Clock>,
    limit: AtomicU32,
    in_flight: AtomicU32,
    // The current interval's samples.
    answered: AtomicU64,
    rtt_sum: AtomicU64,
    rtts: Reservoir,
    /// The first calls' round trips, for the first baseline.
    first: FirstCalls,
    peak: AtomicU32,
    dropped: AtomicU64,
    next_update: AtomicU64,
    state: Mutex<State>,
    /// The baseline and the last interval's mean RTT, for reports.
    base_seen: AtomicU64,
    rtt_seen: AtomicU64,
    overloaded: AtomicBool,
    /// How far the limit may grow on demand before the next interval: twice
    /// it in slow start, else the limit itself.
    room: AtomicU32,
    /// When it last saw congestion ([`NEVER`]): slow start waits for a
    /// calm of [`SLOW_START_AFTER`].
    congested_at: AtomicU64,
}

/// What the interval's updater alone touches.
#[derive(Default)]
struct State {
    baseline: Baseline,
    rtts: Vec<u64>,
}

/// A call's hold on the limit. [`Slot::finish`] with how it ended; dropped
/// unfinished (the gateway gave the call up) it frees its place without a
/// sample.
pub struct Slot {
    limit: Arc<AdaptiveLimit>,
    started: u64,
    /// One of the limit's first calls, whose mean sets the first baseline.
    first: bool,
    done: bool,
}

impl AdaptiveLimit {
    pub fn new(settings: LimitSettings, clock: Arc<dyn Clock>) -> Self {
        let initial = settings.initial.clamp(settings.min, settings.max);
        let room = initial.saturating_mul(2).min(settings.max);
        let next = clock.now_nanos() + nanos(settings.interval);
        Self {
            settings,
            clock,
            limit: AtomicU32::new(initial),
            in_flight: AtomicU32::new(0),
            answered: AtomicU64::new(0),
            rtt_sum: AtomicU64::new(0),
            rtts: Reservoir::new(),
            first: FirstCalls::default(),
            peak: AtomicU32::new(0),
            dropped: AtomicU64::new(0),
            next_update: AtomicU64::new(next),
            state: Mutex::new(State::default()),
            base_seen: AtomicU64::new(0),
            rtt_seen: AtomicU64::new(0),
            overloaded: AtomicBool::new(false),
            congested_at: AtomicU64::new(NEVER),
            room: AtomicU32::new(room),
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

    /// Whether the last interval saw the provider overloaded: a queue past
    /// `beta`, or a loss under congestion, either of which cut the limit.
    pub fn overloaded(&self) -> bool {
        self.overloaded.load(Ordering::Relaxed)
    }

    /// A slot, if fewer than the limit are in flight. Lock-free.
    pub fn acquire(self: &Arc<Self>) -> Option<Slot> {
        let mut limit = self.limit();
        let mut n = self.in_flight.load(Ordering::Relaxed);
        loop {
            if n >= limit {
                // In slow start the limit grows on demand within the
                // interval, up to its room.
                if limit >= self.room.load(Ordering::Relaxed) {
                    return None;
                }
                let _ = self.limit.compare_exchange(
                    limit,
                    limit + 1,
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                );
                limit = self.limit();
                continue;
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
            first: self.first.start(),
            done: false,
        })
    }

    /// Lock-free: counters and a reservoir offer.
    fn record(&self, rtt: u64, sample: Sample) {
        match sample {
            Sample::Answered => {
                self.answered.fetch_add(1, Ordering::Relaxed);
                self.rtt_sum.fetch_add(rtt, Ordering::Relaxed);
                self.rtts.offer(rtt);
            }
            // A failure's round trip is not the provider's pace (a reset is
            // fast, a timeout is the deadline): it is counted, not timed.
            Sample::Dropped => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
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
        // Once per round trip at least, as Vegas adjusts: an interval much
        // shorter than the round trip sees only the first calls of a burst
        // end, and its mean swings with the burst, not the queue.
        let base = self.base_seen.load(Ordering::Relaxed);
        let next = now + nanos(self.settings.interval).max(base);
        if self
            .next_update
            .compare_exchange(due, next, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            return;
        }
        self.update(now);
    }

    /// The interval's decision. Only the interval's winner gets here, so the
    /// lock is never contended.
    fn update(&self, now: u64) {
        let mut state = self.state.lock();
        let State { baseline, rtts } = &mut *state;
        let answered = self.answered.swap(0, Ordering::AcqRel);
        let sum = self.rtt_sum.swap(0, Ordering::AcqRel);
        self.rtts.drain(rtts);
        if let Some(mean) = self.first.mean() {
            baseline.settle(mean);
        }
        let peak = self.peak.swap(self.in_flight(), Ordering::AcqRel);
        let dropped = self.dropped.swap(0, Ordering::AcqRel);
        if answered == 0 && dropped == 0 {
            return;
        }
        let limit = f64::from(self.limit());
        let log = limit.log10().max(1.0);
        let alpha = (3.0 * limit.log10()).max(2.0);
        let beta = (6.0 * limit.log10()).max(4.0);
        // The queue at the provider, in calls: `limit × (1 − base/rtt)`
        // (Little's law, as Vegas reads it).
        let mut queue = 0.0;
        if let Some(rtt) = sum.checked_div(answered) {
            let base = baseline.update(&Interval {
                rtts,
                at_floor: self.limit() <= self.settings.min.saturating_mul(2),
            });
            self.base_seen.store(base, Ordering::Relaxed);
            self.rtt_seen.store(rtt, Ordering::Relaxed);
            if rtt > base && baseline.settled() {
                queue = limit * (1.0 - base as f64 / rtt as f64);
            }
        }
        let busy = f64::from(peak) >= limit / 2.0;
        // Growth needs the limit nearly used: grown on any interval that
        // used half, a calm limit sat at three times the calls in flight,
        // all let in at the first second of a spike.
        let used = f64::from(peak) >= limit * 0.8;
        // The limit itself bound the interval's calls.
        let full = f64::from(peak) >= limit;
        // Loss cuts only under congestion: a few resets on a lightly used,
        // healthy provider say nothing about its capacity.
        let lost = dropped > 0 && (queue > alpha || busy);
        let next = if lost {
            (limit * 0.9).min(limit - 1.0)
        } else if queue > beta {
            (limit + (limit - queue + alpha)) / 2.0
        } else if queue < alpha && full {
            // Calls wait for the limit while the provider shows no queue:
            // the limit, not the provider, is short. Far from any
            // congestion it doubles (TCP's slow start); near it, it creeps.
            let at = self.congested_at.load(Ordering::Relaxed);
            if at == NEVER || now.saturating_sub(at) >= nanos(SLOW_START_AFTER) {
                f64::from(peak).max(limit) * 2.0
            } else {
                limit + log
            }
        } else if queue < alpha && used {
            limit + log
        } else if full && queue <= beta && queue < limit / 2.0 {
            // Between alpha and beta with calls waiting: a real queue that
            // small is harmless, and a phantom one (jitter read against a
            // baseline on the fast side) would otherwise hold the limit
            // below the provider's capacity for good. Creep by one. Not
            // when round trips are over twice the baseline: that is a
            // slower provider, which the floor's rebase must see.
            limit + 1.0
        } else {
            limit
        };
        self.overloaded
            .store(lost || queue > beta, Ordering::Relaxed);
        if lost || queue > beta {
            self.congested_at.store(now, Ordering::Relaxed);
        }
        let next = (next.round() as u32).clamp(self.settings.min, self.settings.max);
        self.limit.store(next, Ordering::Relaxed);
        // Slow start, on demand: with no congestion for a while and none
        // now, the next interval may double the limit as calls arrive,
        // rather than refuse them until the interval ends.
        let at = self.congested_at.load(Ordering::Relaxed);
        let calm = at == NEVER || now.saturating_sub(at) >= nanos(SLOW_START_AFTER);
        let room = if calm && queue < alpha {
            next.saturating_mul(2).min(self.settings.max)
        } else {
            next
        };
        self.room.store(room, Ordering::Relaxed);
    }
}

impl Slot {
    /// The call ended: its round trip is a sample.
    pub fn finish(mut self, sample: Sample) {
        self.done = true;
        let rtt = self.limit.clock.now_nanos().saturating_sub(self.started);
        self.limit.in_flight.fetch_sub(1, Ordering::AcqRel);
        let timed = (sample == Sample::Answered).then_some(rtt);
        if self.first {
            self.limit.first.end(timed);
        }
        self.limit.record(rtt, sample);
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if !self.done {
            self.limit.in_flight.fetch_sub(1, Ordering::AcqRel);
            if self.first {
                self.limit.first.end(None);
            }
        }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
