//! The simulated provider and callers the adaptive limit's tests run
//! against, on the fake clock: a FIFO pool of workers, closed-loop callers,
//! and a fleet of gateways sharing one provider.

use std::sync::Arc;
use std::time::Duration;

use super::{AdaptiveLimit, LimitSettings, Sample, Slot};
use crate::{Clock, FakeClock};

pub(super) const MS: u64 = 1_000_000;

/// A provider of `workers` serving each call in `service`, first come first
/// served: a call that finds every worker busy waits for the first free one.
pub(super) struct Provider {
    pub(super) free_at: Vec<u64>,
    pub(super) service: u64,
    /// Every call fails (a broken provider).
    pub(super) failing: bool,
    /// Service time varies by up to ± this percentage (uniform,
    /// deterministic).
    pub(super) jitter_pct: u64,
    /// Every `reset_every`-th call fails though the provider is healthy (a
    /// connection reset); 0: none.
    pub(super) reset_every: u64,
    pub(super) calls: u64,
    pub(super) rng: u64,
}

impl Provider {
    pub(super) fn new(workers: usize, service_ms: u64) -> Self {
        Self {
            free_at: vec![0; workers],
            service: service_ms * MS,
            failing: false,
            jitter_pct: 0,
            reset_every: 0,
            calls: 0,
            rng: 0x9E37_79B9_7F4A_7C15,
        }
    }

    /// The next call's service time.
    pub(super) fn service(&mut self) -> u64 {
        if self.jitter_pct == 0 {
            return self.service;
        }
        // xorshift64: the same jitter on every run.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let spread = 2 * self.jitter_pct + 1;
        let pct = 100 - self.jitter_pct + self.rng % spread;
        self.service / 100 * pct
    }

    /// How the next call ends.
    pub(super) fn sample(&mut self) -> Sample {
        self.calls += 1;
        let reset = self.reset_every > 0 && self.calls.is_multiple_of(self.reset_every);
        if self.failing || reset {
            Sample::Dropped
        } else {
            Sample::Answered
        }
    }

    /// When a call that arrives `now` is answered.
    pub(super) fn answer_at(&mut self, now: u64) -> u64 {
        let (i, free) = self
            .free_at
            .iter()
            .enumerate()
            .min_by_key(|(_, f)| **f)
            .map(|(i, f)| (i, *f))
            .expect("a worker");
        let end = free.max(now) + self.service();
        self.free_at[i] = end;
        end
    }
}

/// `want` callers that each keep one call going, retrying a refusal 1 ms
/// later; the run in 1 ms steps.
pub(super) struct Run {
    pub(super) clock: Arc<FakeClock>,
    pub(super) limit: Arc<AdaptiveLimit>,
    pub(super) calls: Vec<(u64, Slot)>,
    pub(super) refused: u64,
    pub(super) answered: u64,
    /// The limit at the end of each 100 ms.
    pub(super) limits: Vec<u32>,
}

impl Run {
    pub(super) fn new(settings: LimitSettings) -> Self {
        let clock = Arc::new(FakeClock::new());
        let limit = Arc::new(AdaptiveLimit::new(settings, clock.clone()));
        Self {
            clock,
            limit,
            calls: Vec::new(),
            refused: 0,
            answered: 0,
            limits: Vec::new(),
        }
    }

    pub(super) fn run(&mut self, provider: &mut Provider, want: usize, secs: u64) {
        for step in 0..secs * 1000 {
            self.clock.advance(Duration::from_millis(1));
            let now = self.clock.now_nanos();
            let (done, going): (Vec<_>, Vec<_>) =
                self.calls.drain(..).partition(|(end, _)| *end <= now);
            self.calls = going;
            for (_, slot) in done {
                self.answered += 1;
                slot.finish(provider.sample());
            }
            while self.calls.len() < want {
                match self.limit.acquire() {
                    Some(slot) => self.calls.push((provider.answer_at(now), slot)),
                    None => {
                        self.refused += 1;
                        break;
                    }
                }
            }
            if step % 100 == 99 {
                self.limits.push(self.limit.limit());
            }
        }
    }

    /// The limit's range over the last `secs`.
    pub(super) fn range(&self, secs: usize) -> (u32, u32) {
        let tail = &self.limits[self.limits.len() - secs * 10..];
        (*tail.iter().min().unwrap(), *tail.iter().max().unwrap())
    }
}

/// Several gateways, each with its own limit and `want` callers, in front of
/// one provider; the gateway that fills first rotates every millisecond.
pub(super) struct Fleet {
    pub(super) clock: Arc<FakeClock>,
    pub(super) limits: Vec<Arc<AdaptiveLimit>>,
    pub(super) calls: Vec<Vec<(u64, Slot)>>,
    pub(super) answered: u64,
    /// Calls in flight, all gateways together, at the end of each 100 ms.
    pub(super) in_flight: Vec<u32>,
}

impl Fleet {
    pub(super) fn new(gateways: usize) -> Self {
        let clock = Arc::new(FakeClock::new());
        let limits = (0..gateways)
            .map(|_| Arc::new(AdaptiveLimit::new(LimitSettings::default(), clock.clone())))
            .collect();
        Self {
            clock,
            limits,
            calls: (0..gateways).map(|_| Vec::new()).collect(),
            answered: 0,
            in_flight: Vec::new(),
        }
    }

    pub(super) fn run(&mut self, provider: &mut Provider, want: usize, secs: u64) {
        let n = self.limits.len();
        for step in 0..secs * 1000 {
            self.clock.advance(Duration::from_millis(1));
            let now = self.clock.now_nanos();
            for calls in &mut self.calls {
                let (done, going): (Vec<_>, Vec<_>) =
                    calls.drain(..).partition(|(end, _)| *end <= now);
                *calls = going;
                for (_, slot) in done {
                    self.answered += 1;
                    slot.finish(provider.sample());
                }
            }
            for k in 0..n {
                let g = (k + step as usize) % n;
                while self.calls[g].len() < want {
                    let Some(slot) = self.limits[g].acquire() else {
                        break;
                    };
                    self.calls[g].push((provider.answer_at(now), slot));
                }
            }
            if step % 100 == 99 {
                self.in_flight
                    .push(self.limits.iter().map(|l| l.in_flight()).sum());
            }
        }
    }

    pub(super) fn range(&self, secs: usize) -> (u32, u32) {
        let tail = &self.in_flight[self.in_flight.len() - secs * 10..];
        (*tail.iter().min().unwrap(), *tail.iter().max().unwrap())
    }
}
