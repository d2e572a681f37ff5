//! Injectable monotonic time.
//!
//! Every time-based policy reads time through [`Clock`] so that tests can drive
//! it with [`FakeClock`] instead of sleeping. Time is a `u64` of nanoseconds
//! since an arbitrary per-clock origin: it packs into atomics, which is what the
//! lock-free per-key state in later policies needs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A monotonic source of nanoseconds.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Nanoseconds since this clock's origin. Never decreases.
    fn now_nanos(&self) -> u64;
}

/// The real clock: nanoseconds since the clock was created.
#[derive(Debug, Clone)]
pub struct MonotonicClock {
    origin: Instant,
}

impl MonotonicClock {
    pub fn new() -> Self {
        Self { origin: now() }
    }
}

impl Default for MonotonicClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for MonotonicClock {
    fn now_nanos(&self) -> u64 {
        // u64 nanoseconds cover 584 years of uptime.
        self.origin.elapsed().as_nanos() as u64
    }
}

/// A clock that only moves when a test tells it to. Clones share the same time.
#[derive(Debug, Clone, Default)]
pub struct FakeClock {
    nanos: Arc<AtomicU64>,
}

impl FakeClock {
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves time forward by `by`.
    pub fn advance(&self, by: Duration) {
        self.nanos.fetch_add(by.as_nanos() as u64, Ordering::SeqCst);
    }
}

impl Clock for FakeClock {
    fn now_nanos(&self) -> u64 {
        self.nanos.load(Ordering::SeqCst)
    }
}

/// The monotonic clock's time now: the one place in the policies where the
/// workspace's clippy ban on `Instant::now` is lifted ([`MonotonicClock`]).
#[allow(clippy::disallowed_methods)]
fn now() -> Instant {
    Instant::now()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fake_clock_moves_only_when_advanced_and_clones_share_time() {
        let clock = FakeClock::new();
        let other = clock.clone();
        assert_eq!(clock.now_nanos(), 0);
        other.advance(Duration::from_millis(1500));
        assert_eq!(clock.now_nanos(), 1_500_000_000);
    }

    #[test]
    fn monotonic_clock_never_goes_back() {
        let clock = MonotonicClock::new();
        let a = clock.now_nanos();
        let b = clock.now_nanos();
        assert!(b >= a);
    }
}
