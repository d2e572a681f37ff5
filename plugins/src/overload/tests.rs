//! The adaptive limit against a simulated provider, on the fake clock.

use std::sync::Arc;
use std::time::Duration;

use super::{AdaptiveLimit, LimitSettings, Sample, Slot};
use crate::{Clock, FakeClock};

const MS: u64 = 1_000_000;

/// A provider of `workers` serving each call in `service`, first come first
/// served: a call that finds every worker busy waits for the first free one.
struct Provider {
    free_at: Vec<u64>,
    service: u64,
    /// Every call fails (a broken provider).
    failing: bool,
}

impl Provider {
    fn new(workers: usize, service_ms: u64) -> Self {
        Self {
            free_at: vec![0; workers],
            service: service_ms * MS,
            failing: false,
        }
    }

    /// When a call that arrives `now` is answered.
    fn answer_at(&mut self, now: u64) -> u64 {
        let (i, free) = self
            .free_at
            .iter()
            .enumerate()
            .min_by_key(|(_, f)| **f)
            .map(|(i, f)| (i, *f))
            .expect("a worker");
        let end = free.max(now) + self.service;
        self.free_at[i] = end;
        end
    }
}

/// `want` callers that each keep one call going, retrying a refusal 1 ms
/// later; the run in 1 ms steps.
struct Run {
    clock: Arc<FakeClock>,
    limit: Arc<AdaptiveLimit>,
    calls: Vec<(u64, Slot)>,
    refused: u64,
    answered: u64,
    /// The limit at the end of each 100 ms.
    limits: Vec<u32>,
}

impl Run {
    fn new(settings: LimitSettings) -> Self {
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

    fn run(&mut self, provider: &mut Provider, want: usize, secs: u64) {
        for step in 0..secs * 1000 {
            self.clock.advance(Duration::from_millis(1));
            let now = self.clock.now_nanos();
            let (done, going): (Vec<_>, Vec<_>) =
                self.calls.drain(..).partition(|(end, _)| *end <= now);
            self.calls = going;
            for (_, slot) in done {
                self.answered += 1;
                let sample = if provider.failing {
                    Sample::Dropped
                } else {
                    Sample::Answered
                };
                slot.finish(sample);
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
    fn range(&self, secs: usize) -> (u32, u32) {
        let tail = &self.limits[self.limits.len() - secs * 10..];
        (*tail.iter().min().unwrap(), *tail.iter().max().unwrap())
    }
}

#[test]
fn settles_near_the_providers_workers_and_does_not_drift_under_sustained_overload() {
    // From far below and far above the provider's 16 workers.
    for initial in [2, 200] {
        let mut run = Run::new(LimitSettings {
            initial,
            ..LimitSettings::default()
        });
        let mut provider = Provider::new(16, 100);
        // 300 callers against 16 workers: about 19x the provider's concurrency.
        run.run(&mut provider, 300, 20);
        let (low, high) = run.range(5);
        assert!(
            16 <= low && high <= 26,
            "from {initial}: settled in {low}..={high}"
        );
        // A minute more of the same overload: the baseline holds, the limit
        // stays put (no drift of the target latency).
        run.run(&mut provider, 300, 60);
        let (low, high) = run.range(60);
        assert!(
            16 <= low && high <= 26,
            "from {initial}: drifted to {low}..={high}"
        );
        let (base, rtt) = run.limit.rtts();
        assert!(base <= Duration::from_millis(110), "baseline {base:?}");
        assert!(
            rtt <= Duration::from_millis(170),
            "admitted calls' RTT {rtt:?}"
        );
    }
}

#[test]
fn a_healthy_load_is_never_refused_nor_probed() {
    let mut run = Run::new(LimitSettings::default());
    let mut provider = Provider::new(16, 100);
    // Half the provider's concurrency for a minute.
    run.run(&mut provider, 8, 60);
    assert_eq!(run.refused, 0);
    let (low, _) = run.range(60);
    assert!(
        low >= LimitSettings::default().initial,
        "the limit fell to {low}"
    );
}

#[test]
fn follows_a_provider_that_slows_tenfold_and_keeps_its_goodput() {
    let mut run = Run::new(LimitSettings::default());
    let mut provider = Provider::new(16, 100);
    run.run(&mut provider, 200, 20);
    // The seed's provider: the same workers, each call now 10x slower.
    provider.service = 1000 * MS;
    run.run(&mut provider, 200, 40);
    let before = run.answered;
    run.run(&mut provider, 200, 20);
    // 16 workers at 1 s a call: 16 calls a second is the new capacity.
    let goodput = (run.answered - before) as f64 / 20.0;
    assert!(goodput >= 0.9 * 16.0, "goodput {goodput}/s");
    let (low, high) = run.range(20);
    assert!(16 <= low && high <= 30, "settled in {low}..={high}");
}

#[test]
fn the_limit_stays_within_its_floor_and_ceiling() {
    let settings = LimitSettings {
        max: 100,
        ..LimitSettings::default()
    };
    // A provider that fails every call: the limit falls to the floor, and
    // calls still flow there.
    let mut run = Run::new(settings.clone());
    let mut broken = Provider::new(16, 10);
    broken.failing = true;
    run.run(&mut broken, 100, 30);
    assert_eq!(run.range(10), (2, 2));
    assert!(run.limit.in_flight() >= 1);
    // A provider with room for everything: the limit climbs to its ceiling.
    let mut run = Run::new(settings);
    let mut vast = Provider::new(1_000, 50);
    run.run(&mut vast, 300, 30);
    assert_eq!(run.range(5), (100, 100));
}

#[test]
fn a_slot_given_up_frees_its_place_without_a_sample() {
    let clock = Arc::new(FakeClock::new());
    let limit = Arc::new(AdaptiveLimit::new(
        LimitSettings {
            initial: 1,
            min: 1,
            ..LimitSettings::default()
        },
        clock.clone(),
    ));
    let slot = limit.acquire().expect("one slot");
    assert!(limit.acquire().is_none(), "the limit is 1");
    drop(slot);
    assert_eq!(limit.in_flight(), 0);
    clock.advance(Duration::from_secs(1));
    drop(limit.acquire().expect("free again"));
    // Calls given up are no samples: no interval has been decided.
    assert_eq!(limit.rtts(), (Duration::ZERO, Duration::ZERO));
    assert_eq!(limit.limit(), 1);
}
