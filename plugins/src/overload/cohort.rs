//! Round trips grouped by when the calls *started*, for an unbiased mean.
//!
//! The calls that end in a window are not a fair sample of round trips when
//! they started together (a burst, the first calls after start or after an
//! idle spell): the first to end are the fast ones. A mean over them reads
//! low, and a baseline that falls to it reads every later, fair interval as
//! a queue (with ±20% jitter in service time: 11% low, and the limit held at
//! half the provider's capacity). So calls are grouped into cohorts by the
//! interval they started in, and a cohort counts only once every call of it
//! has ended: its mean is then over all its calls, fast and slow alike.
//!
//! Lock-free: a call's start and end are a few `fetch_add`s on its cohort's
//! counters, in a ring of [`RING`] cohorts. A cohort still open when its
//! slot is needed again (a call longer than `RING` intervals) is given up,
//! and a call that ends after that finds its slot taken and is not counted.

use std::sync::atomic::{AtomicU64, Ordering};

/// Cohorts kept: at 100 ms intervals, calls up to 6.4 s long are counted.
pub(super) const RING: u64 = 64;

#[derive(Default)]
struct Cohort {
    /// The cohort this slot holds now.
    id: AtomicU64,
    started: AtomicU64,
    ended: AtomicU64,
    /// Ended calls with a round trip (answered), and their sum in
    /// microseconds.
    sampled: AtomicU64,
    sum: AtomicU64,
}

/// The ring, and which cohort is current and which closes next.
pub(super) struct Cohorts {
    ring: [Cohort; RING as usize],
    current: AtomicU64,
    /// The oldest cohort not yet closed; touched only by the updater.
    next: AtomicU64,
}

/// What a closed cohort's answered calls add up to.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(super) struct Sums {
    pub count: u64,
    /// In microseconds.
    pub sum: u64,
}

impl Sums {
    pub(super) fn add(&mut self, other: Sums) {
        self.count += other.count;
        self.sum = self.sum.saturating_add(other.sum);
    }

    /// The mean, in nanoseconds (0 for none).
    pub(super) fn mean(&self) -> u64 {
        self.sum
            .checked_div(self.count)
            .unwrap_or(0)
            .saturating_mul(1_000)
    }
}

impl Cohorts {
    pub(super) fn new() -> Self {
        Self {
            ring: std::array::from_fn(|i| Cohort {
                id: AtomicU64::new(i as u64),
                ..Cohort::default()
            }),
            current: AtomicU64::new(0),
            next: AtomicU64::new(0),
        }
    }

    /// A call starts: it joins the current cohort, whose id it keeps.
    pub(super) fn start(&self) -> u64 {
        let id = self.current.load(Ordering::Acquire);
        self.ring[(id % RING) as usize]
            .started
            .fetch_add(1, Ordering::AcqRel);
        id
    }

    /// A call of cohort `id` ended, answered in `rtt` nanoseconds or not.
    pub(super) fn end(&self, id: u64, rtt: Option<u64>) {
        let c = &self.ring[(id % RING) as usize];
        if c.id.load(Ordering::Acquire) != id {
            return;
        }
        if let Some(rtt) = rtt {
            let us = rtt / 1_000;
            c.sampled.fetch_add(1, Ordering::Relaxed);
            c.sum.fetch_add(us, Ordering::Relaxed);
        }
        c.ended.fetch_add(1, Ordering::AcqRel);
    }

    /// Ends the current cohort (the interval is over) and hands the cohorts
    /// that closed since the last call, oldest first, to `closed`. Called
    /// by the interval's updater only.
    pub(super) fn advance(&self, mut closed: impl FnMut(Sums)) {
        let current = self.current.load(Ordering::Acquire);
        let mut next = self.next.load(Ordering::Relaxed);
        while next < current {
            let c = &self.ring[(next % RING) as usize];
            let done = c.ended.load(Ordering::Acquire) >= c.started.load(Ordering::Acquire);
            // The oldest open cohort holds the others back only until its
            // slot is needed.
            if !done && next + RING - 1 > current {
                break;
            }
            if done && c.sampled.load(Ordering::Relaxed) > 0 {
                closed(Sums {
                    count: c.sampled.load(Ordering::Relaxed),
                    sum: c.sum.load(Ordering::Relaxed),
                });
            }
            next += 1;
        }
        self.next.store(next, Ordering::Relaxed);
        // The slot of the new current cohort starts over.
        let new = current + 1;
        let c = &self.ring[(new % RING) as usize];
        c.id.store(new, Ordering::Release);
        for counter in [&c.started, &c.ended, &c.sampled, &c.sum] {
            counter.store(0, Ordering::Relaxed);
        }
        self.current.store(new, Ordering::Release);
        if next + RING <= new {
            // Never more open than the ring holds.
            self.next.store(new + 1 - RING, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cohort_counts_only_once_all_its_calls_ended() {
        let c = Cohorts::new();
        let fast = c.start();
        let slow = c.start();
        c.end(fast, Some(80_000_000));
        let mut seen = Vec::new();
        c.advance(|s| seen.push(s));
        assert!(seen.is_empty(), "the current cohort is never closed");
        c.advance(|s| seen.push(s));
        assert!(seen.is_empty(), "a call of it is still out");
        c.end(slow, Some(120_000_000));
        c.advance(|s| seen.push(s));
        assert_eq!(seen.len(), 1);
        assert_eq!(
            seen[0].mean(),
            100_000_000,
            "the fast and the slow call alike"
        );
    }

    #[test]
    fn a_call_given_up_closes_its_cohort_unsampled_and_a_late_one_is_ignored() {
        let c = Cohorts::new();
        let a = c.start();
        let b = c.start();
        c.end(a, Some(10_000_000));
        c.end(b, None);
        let mut seen = Vec::new();
        c.advance(|s| seen.push(s));
        c.advance(|s| seen.push(s));
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].count, 1);
        // A call outliving the ring finds its slot taken.
        let old = c.start();
        for _ in 0..RING + 1 {
            c.advance(|_| {});
        }
        c.end(old, Some(1));
        let mut late = Vec::new();
        c.advance(|s| late.push(s));
        assert!(late.iter().all(|s| s.count == 0), "{late:?}");
    }
}
