//! The mean round trip of the limit's first calls, which sets the first
//! baseline.
//!
//! The calls that end first after a start (or any burst) are the fast ones:
//! a mean over the first to *end* reads low (with ±20% jitter in service
//! time, 11%), and a baseline set from it reads every later interval as a
//! queue. So the first baseline is the mean over the first [`FIRST`] calls
//! to *start*, taken once every one of them has ended. They started with
//! fewer than [`FIRST`] calls in flight, so a provider of at least that many
//! workers served them without a queue of ours.
//!
//! Lock-free: a call's start is one load (and, for the first calls, one
//! `fetch_add`); its end, a few `fetch_add`s when it is one of them.

use std::sync::atomic::{AtomicU64, Ordering};

/// How many first calls make the first baseline.
pub(super) const FIRST: u64 = 20;

#[derive(Default)]
pub(super) struct FirstCalls {
    started: AtomicU64,
    ended: AtomicU64,
    sampled: AtomicU64,
    /// Their round trips' sum, in microseconds.
    sum: AtomicU64,
}

impl FirstCalls {
    /// A call starts; true when it is one of the first.
    pub(super) fn start(&self) -> bool {
        self.started.load(Ordering::Relaxed) < FIRST
            && self.started.fetch_add(1, Ordering::Relaxed) < FIRST
    }

    /// One of the first calls ended, answered in `rtt` nanoseconds or not.
    pub(super) fn end(&self, rtt: Option<u64>) {
        if let Some(rtt) = rtt {
            self.sampled.fetch_add(1, Ordering::Relaxed);
            self.sum.fetch_add(rtt / 1_000, Ordering::Relaxed);
        }
        self.ended.fetch_add(1, Ordering::AcqRel);
    }

    /// Their mean round trip in nanoseconds, once all of them have ended
    /// and at least half were answered.
    pub(super) fn mean(&self) -> Option<u64> {
        if self.ended.load(Ordering::Acquire) < FIRST {
            return None;
        }
        let sampled = self.sampled.load(Ordering::Relaxed);
        if sampled < FIRST / 2 {
            return None;
        }
        Some(self.sum.load(Ordering::Relaxed) / sampled * 1_000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mean_waits_for_every_first_call_fast_and_slow() {
        let f = FirstCalls::default();
        let firsts: Vec<bool> = (0..FIRST + 5).map(|_| f.start()).collect();
        assert_eq!(firsts.iter().filter(|b| **b).count() as u64, FIRST);
        // The fast half ends first: no mean yet.
        for _ in 0..FIRST / 2 {
            f.end(Some(80_000_000));
        }
        assert_eq!(f.mean(), None);
        for _ in 0..FIRST / 2 {
            f.end(Some(120_000_000));
        }
        assert_eq!(f.mean(), Some(100_000_000));
    }

    #[test]
    fn mostly_failed_first_calls_set_nothing() {
        let f = FirstCalls::default();
        for i in 0..FIRST {
            assert!(f.start());
            f.end((i < 3).then_some(10_000_000));
        }
        assert_eq!(f.mean(), None);
    }
}
