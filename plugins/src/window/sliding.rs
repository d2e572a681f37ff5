//! A lock-free sliding-window counter for one key.
//!
//! # Algorithm
//! The window `W` is split into `B` sub-buckets of `W / B` each. The counter
//! keeps `B + 1` slots; a slot packs the bucket's epoch (which sub-bucket of
//! time it counts, low 32 bits) and its count (32 bits) into one `AtomicU64`,
//! so an update is a single CAS and a slot left over from an old epoch is
//! recognised and restarted, never mixed in.
//!
//! The estimate for `(now - W, now]` adds the current bucket and the `B - 1`
//! before it in full, plus the oldest bucket — which straddles the window's
//! start — weighted by the share of it still inside the window, as the
//! classic two-bucket sliding-window counter does (interpolation).
//!
//! # Error bound
//! Only the oldest bucket is estimated, by assuming its events were spread
//! evenly. The estimate therefore differs from the exact count in the window
//! by at most the number of events in that one sub-bucket: never more than
//! 1/B of a window's traffic when traffic is steady, and never more than the
//! busiest sub-bucket's count for bursty traffic. The property test in this
//! file checks exactly this bound.
//!
//! # Limits
//! - A slot counts up to `u32::MAX` events per sub-bucket (it saturates).
//! - Epochs are kept modulo 2³²: a slot untouched for exactly 2³² sub-buckets
//!   (49 days at 1 ms sub-buckets) would be mistaken for current. Idle keys
//!   are evicted long before that.
//! - Under concurrency, updates are exact (CAS); a read concurrent with an
//!   update sees it or not.
//!
//! # Memory
//! `8 * (B + 1)` bytes: 40 bytes for the default `B = 4`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::bounds::nanos;

/// The geometry of a window: its length and how it is split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSpec {
    bucket_nanos: u64,
    buckets: u64,
}

impl WindowSpec {
    /// A window of `window` split into `buckets` sub-buckets. Sub-buckets are
    /// at least 1 µs. A window past 584 years is taken as 584 years (configs
    /// stop at [`MAX_WINDOW`](crate::bounds::MAX_WINDOW)).
    pub fn new(window: Duration, buckets: u32) -> Self {
        let buckets = u64::from(buckets.max(1));
        let bucket_nanos = (nanos(window) / buckets).max(1_000);
        Self {
            bucket_nanos,
            buckets,
        }
    }

    pub fn window(&self) -> Duration {
        Duration::from_nanos(self.bucket_nanos.saturating_mul(self.buckets))
    }

    pub fn bucket(&self) -> Duration {
        Duration::from_nanos(self.bucket_nanos)
    }

    /// Where `now` falls: its sub-bucket and how far into it. One division,
    /// shared by every operation of a decision.
    #[inline]
    pub fn tick(&self, now: u64) -> Tick {
        Tick {
            epoch: now / self.bucket_nanos,
            into_bucket: now % self.bucket_nanos,
            bucket_nanos: self.bucket_nanos,
        }
    }

    /// Time until the current sub-bucket ends and the oldest one slides out.
    pub fn until_next_bucket(&self, now: u64) -> Duration {
        Duration::from_nanos(self.bucket_nanos - now % self.bucket_nanos)
    }
}

/// A point in time as a window sees it (see [`WindowSpec::tick`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tick {
    epoch: u64,
    into_bucket: u64,
    bucket_nanos: u64,
}

impl Tick {
    /// `count` events, in the scaled unit of [`SlidingWindow::estimate_scaled`].
    #[inline]
    pub fn scaled(&self, count: u64) -> u128 {
        u128::from(count) * u128::from(self.bucket_nanos)
    }

    /// A scaled estimate back in events.
    pub fn unscale(&self, scaled: u128) -> f64 {
        scaled as f64 / self.bucket_nanos as f64
    }
}

/// A counter over a sliding window with `SLOTS - 1` sub-buckets.
#[derive(Debug)]
pub struct SlidingWindow<const SLOTS: usize = 5> {
    slots: [AtomicU64; SLOTS],
}

impl<const SLOTS: usize> Default for SlidingWindow<SLOTS> {
    fn default() -> Self {
        Self {
            slots: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

#[inline]
fn pack(epoch: u64, count: u64) -> u64 {
    (epoch << 32) | count
}

#[inline]
fn unpack(v: u64) -> (u32, u64) {
    ((v >> 32) as u32, v & 0xFFFF_FFFF)
}

impl<const SLOTS: usize> SlidingWindow<SLOTS> {
    /// The number of sub-buckets, `B`.
    pub const BUCKETS: u64 = SLOTS as u64 - 1;

    /// Forgets every event.
    pub fn clear(&self) {
        for slot in &self.slots {
            slot.store(0, Ordering::Release);
        }
    }

    /// Counts `n` events at `now`.
    pub fn add(&self, spec: &WindowSpec, now: u64, n: u32) {
        debug_assert_eq!(spec.buckets, Self::BUCKETS, "spec and window disagree on B");
        self.add_at(spec.tick(now), n);
    }

    /// Counts `n` events at `tick`.
    #[inline]
    pub fn add_at(&self, tick: Tick, n: u32) {
        let epoch = tick.epoch;
        let slot = &self.slots[(epoch % SLOTS as u64) as usize];
        let tag = epoch as u32;
        let mut cur = slot.load(Ordering::Relaxed);
        loop {
            let (e, c) = unpack(cur);
            let next = if e == tag {
                pack(u64::from(tag), (c + u64::from(n)).min(u64::from(u32::MAX)))
            } else if tag.wrapping_sub(e) > u32::MAX / 2 {
                // The slot already holds a newer epoch: this caller's clock
                // reading is stale by a whole rotation. Drop the event.
                return;
            } else {
                pack(u64::from(tag), u64::from(n))
            };
            match slot.compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return,
                Err(actual) => cur = actual,
            }
        }
    }

    /// The estimated number of events in `(now - W, now]`, scaled by the
    /// sub-bucket length: an exact integer, compared against
    /// [`Tick::scaled`] counts without any division.
    #[inline]
    pub fn estimate_scaled_at(&self, tick: Tick) -> u128 {
        let (epoch, into_bucket, bucket_nanos) = (tick.epoch, tick.into_bucket, tick.bucket_nanos);
        let mut full: u128 = 0;
        let mut oldest: u128 = 0;
        for slot in &self.slots {
            let (e, c) = unpack(slot.load(Ordering::Acquire));
            let age = (epoch as u32).wrapping_sub(e);
            if u64::from(age) < Self::BUCKETS {
                full += u128::from(c);
            } else if u64::from(age) == Self::BUCKETS {
                oldest += u128::from(c);
            }
        }
        full * u128::from(bucket_nanos) + oldest * u128::from(bucket_nanos - into_bucket)
    }

    fn estimate_scaled(&self, spec: &WindowSpec, now: u64) -> u128 {
        self.estimate_scaled_at(spec.tick(now))
    }

    /// The estimated count in the window ending at `now`.
    pub fn estimate(&self, spec: &WindowSpec, now: u64) -> f64 {
        self.estimate_scaled(spec, now) as f64 / spec.bucket_nanos as f64
    }

    /// The estimate rounded up to whole events: 0 only when the window is empty.
    pub fn heat(&self, spec: &WindowSpec, now: u64) -> u64 {
        self.estimate_scaled(spec, now)
            .div_ceil(u128::from(spec.bucket_nanos))
            .min(u128::from(u64::MAX)) as u64
    }

    /// Events per second over the window.
    pub fn rate(&self, spec: &WindowSpec, now: u64) -> f64 {
        self.estimate(spec, now) / spec.window().as_secs_f64()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MS: u64 = 1_000_000;

    fn spec() -> WindowSpec {
        WindowSpec::new(Duration::from_millis(1000), 4) // 250 ms buckets
    }

    #[test]
    fn counts_within_the_window_and_forgets_after_it() {
        let (s, w) = (spec(), SlidingWindow::<5>::default());
        w.add(&s, 0, 10);
        w.add(&s, 300 * MS, 5);
        assert_eq!(w.estimate(&s, 900 * MS), 15.0);
        // At 1100 ms the window is (100, 1100]: the 0..250 bucket is 60% inside.
        let est = w.estimate(&s, 1100 * MS);
        assert!((est - (5.0 + 10.0 * 0.6)).abs() < 1e-9, "{est}");
        // At 1250 ms the first bucket is entirely out.
        assert_eq!(w.estimate(&s, 1250 * MS), 5.0);
        assert_eq!(w.estimate(&s, 10_000 * MS), 0.0);
    }

    #[test]
    fn window_edges_are_exact_at_bucket_boundaries() {
        let (s, w) = (spec(), SlidingWindow::<5>::default());
        w.add(&s, 999 * MS, 1);
        assert_eq!(w.estimate(&s, 999 * MS), 1.0);
        assert_eq!(w.estimate(&s, 1_749 * MS), 1.0);
        // Its bucket (750..1000) is half out at 1875 and all out at 2000.
        assert!((w.estimate(&s, 1_875 * MS) - 0.5).abs() < 1e-9);
        assert_eq!(w.estimate(&s, 2_000 * MS), 0.0);
    }

    #[test]
    fn stale_slots_restart_instead_of_accumulating() {
        let (s, w) = (spec(), SlidingWindow::<5>::default());
        w.add(&s, 0, 7);
        // 5 buckets later the same slot is reused for a new epoch.
        w.add(&s, 1_250 * MS, 1);
        assert_eq!(w.estimate(&s, 1_250 * MS), 1.0);
    }

    #[test]
    fn scaled_estimates_compare_without_division() {
        let (s, w) = (spec(), SlidingWindow::<5>::default());
        w.add(&s, 0, 9);
        let tick = s.tick(10 * MS);
        assert_eq!(w.estimate_scaled_at(tick), tick.scaled(9));
        assert_eq!(tick.unscale(w.estimate_scaled_at(tick)), 9.0);
        assert!((w.rate(&s, 10 * MS) - 9.0).abs() < 1e-9);
        assert_eq!(w.heat(&s, 10 * MS), 9);
    }

    #[test]
    fn a_window_past_u64_nanoseconds_saturates_instead_of_wrapping() {
        // `as u64` wrapped this window to a few hours' worth of nanoseconds.
        let s = WindowSpec::new(Duration::from_secs(u64::MAX), 4);
        assert_eq!(s.bucket(), Duration::from_nanos(u64::MAX / 4));
        assert!(s.window() >= Duration::from_secs(500 * 365 * 24 * 3600));
    }

    #[test]
    fn concurrent_adds_are_not_lost() {
        let (s, w) = (spec(), std::sync::Arc::new(SlidingWindow::<5>::default()));
        std::thread::scope(|scope| {
            for _ in 0..4 {
                let w = w.clone();
                scope.spawn(move || {
                    for _ in 0..10_000 {
                        w.add(&s, 100 * MS, 1);
                    }
                });
            }
        });
        assert_eq!(w.estimate(&s, 100 * MS), 40_000.0);
    }

    proptest! {
        /// The estimate never differs from the exact count in `(now - W, now]`
        /// by more than the count of the one sub-bucket it interpolates.
        #[test]
        fn estimate_is_within_one_sub_bucket_of_exact(
            mut times in proptest::collection::vec(0u64..20_000, 1..400),
            query_offsets in proptest::collection::vec(0u64..3_000, 1..20),
        ) {
            let s = spec();
            let w = SlidingWindow::<5>::default();
            times.sort_unstable();
            let bucket = 250 * MS;
            let mut added = 0;
            for q in query_offsets {
                let now = (times[times.len() - 1] + q) * MS;
                // Replay events up to `now` (they arrive in time order).
                while added < times.len() && times[added] * MS <= now {
                    w.add(&s, times[added] * MS, 1);
                    added += 1;
                }
                let exact = times[..added].iter().filter(|&&t| t * MS + 1_000 * MS > now).count() as f64;
                // Early on there is no bucket old enough to straddle the window start.
                let oldest = match (now / bucket).checked_sub(4) {
                    Some(oldest_epoch) => times[..added].iter().filter(|&&t| t * MS / bucket == oldest_epoch).count() as f64,
                    None => 0.0,
                };
                let est = w.estimate(&s, now);
                prop_assert!(est >= exact - oldest - 1e-9, "under-count: est {est} exact {exact} oldest {oldest}");
                prop_assert!(est <= exact + oldest + 1e-9, "over-count: est {est} exact {exact} oldest {oldest}");
            }
        }
    }
}
