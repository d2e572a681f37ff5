//! The adaptive limit's baseline: the provider's own pace, the round trip of
//! a call that queued behind nothing.
//!
//! # Why it is not a windowed minimum
//! The least clean RTT over a window (BBR's `min_rtt`) has two faults in
//! front of a shared provider. It is one sample, so one anomalously fast
//! answer sets it; and when the window expires it takes whatever clean calls
//! come next, which in a fleet queue behind the *other* gateways' calls, so
//! the baseline rises with the shared queue. And a minimum is not comparable
//! with the mean RTT the gradient reads: under jitter in service time the
//! gap between them reads as a queue.
//!
//! # The algorithm
//! - **The first calls set it.** The mean of the first 20 calls to *start*,
//!   once all of them have ended ([`super::first`]): the first to *end* are
//!   the fast ones, and with ±20% jitter in service time a first batch by
//!   end time read 11% low, which the gradient then took for a standing
//!   queue of a tenth of the limit, for good. Until then the least trimmed
//!   mean of an interval stands in, and the limit does not read it as a
//!   queue.
//! - **A trimmed mean of a batch, after.** Answered calls (not failures: a
//!   reset is fast, a timeout is the deadline) are gathered in a batch of at
//!   least [`BATCH`] and at most [`BATCH_MAX`]; its mean without the lowest
//!   and highest tenth is the batch's typical RTT. One fast answer in ten
//!   moves nothing, and it compares with a mean.
//! - **Falling beyond its noise.** A batch lowers the baseline to its
//!   trimmed mean plus two standard errors when that is below it, whether
//!   or not its calls were "clean": calls answered that fast under load
//!   prove the provider's pace is at most that. (Falling to the mean itself
//!   made the baseline the least of many noisy means, two or three
//!   standard errors under the provider's pace.)
//! - **Rising only at the floor.** The baseline never rises because time
//!   passed. It rises when, with the limit at its floor (at most `2·min`),
//!   the typical RTT stays at least [`RISE`] × the baseline for
//!   [`RISE_AFTER`] intervals in a row: sending the least did not bring the
//!   round trip back, so it is the provider's pace. It then takes the
//!   streak's least. A slower provider drives every gateway there, since the
//!   gradient reads its slowness as a queue.
//!
//! Envoy's adaptive concurrency instead re-measures its minRTT periodically
//! at a minimal concurrency (its users' success-rate dips, envoy#8337), and
//! a probe by one gateway cannot drain the others' queue anyway. Gradient2
//! compares with a smoothed long RTT, which drifts up under sustained
//! overload. Cinnamon's Vegas variant keeps a minimum, with the window
//! expiry fault above.
//!
//! # Limits
//! - A gateway that starts while others already queue at the provider takes
//!   that queue for its pace, and nothing it sees afterwards is faster while
//!   the queue stands: it holds more than its share and the fleet a standing
//!   queue (the known gap in [`super`]).
//! - A provider that gets slower by less than [`RISE`] is read as a standing
//!   queue: the limit holds near `beta / (1 - 1/slowdown)`.
//! - The batch comes from a reservoir of [`SLOTS`] samples per interval: in
//!   a busy interval the typical RTT is an estimate.
//! - A batch is the calls that *ended* in an interval, at least a round
//!   trip long: a burst's fast calls end first, so a batch cut short of the
//!   round trip reads low.
//! - After a provider gets much faster, the baseline follows only partly
//!   (see the module's known gaps).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Reservoir slots per interval.
pub(super) const SLOTS: usize = 64;
/// Clean samples a batch needs before its percentile counts.
pub(super) const BATCH: usize = 20;
/// Samples a batch keeps at most.
pub(super) const BATCH_MAX: usize = SLOTS;
/// How much slower than the baseline clean calls must be to count as
/// evidence of a slower provider.
pub(super) const RISE: f64 = 2.0;
/// How many intervals in a row the evidence must hold.
pub(super) const RISE_AFTER: u32 = 5;

/// A bounded, lock-free sample of one interval's values (reservoir sampling,
/// Vitter's algorithm R, with a hash of the arrival index for the draw so
/// that runs are deterministic).
pub(super) struct Reservoir {
    seen: AtomicU32,
    slots: [AtomicU64; SLOTS],
}

impl Reservoir {
    pub(super) fn new() -> Self {
        Self {
            seen: AtomicU32::new(0),
            slots: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    /// Offers a value. Lock-free: one `fetch_add`, at most one store.
    pub(super) fn offer(&self, value: u64) {
        let i = self.seen.fetch_add(1, Ordering::Relaxed) as usize;
        let j = if i < SLOTS {
            i
        } else {
            (mix(i as u64) % (i as u64 + 1)) as usize
        };
        if j < SLOTS {
            self.slots[j].store(value, Ordering::Relaxed);
        }
    }

    /// Takes the interval's sample, sorted, into `out` (cleared first), and
    /// starts the next interval.
    pub(super) fn drain(&self, out: &mut Vec<u64>) {
        out.clear();
        let seen = self.seen.swap(0, Ordering::AcqRel) as usize;
        out.extend(
            self.slots[..seen.min(SLOTS)]
                .iter()
                .map(|s| s.load(Ordering::Relaxed)),
        );
        out.sort_unstable();
    }
}

/// The mean of a sorted, non-empty sample without its lowest and highest
/// tenth: as comparable with a mean RTT as the mean is, and one odd answer
/// in ten moves it not at all.
pub(super) fn trimmed_mean(sorted: &[u64]) -> u64 {
    let cut = sorted.len() / 10;
    let kept = &sorted[cut..sorted.len() - cut];
    kept.iter().sum::<u64>() / kept.len() as u64
}

/// A sorted batch's trimmed mean plus two standard errors of it: a batch
/// lowers the baseline only by what its own noise cannot explain. The least
/// of many noisy means sits two or three standard errors under the
/// provider's mean pace (with ±20% jitter, 5 to 10%), which the gradient
/// reads as a standing queue of that share of the limit.
pub(super) fn upper_bound(sorted: &[u64]) -> u64 {
    let cut = sorted.len() / 10;
    let kept = &sorted[cut..sorted.len() - cut];
    let n = kept.len() as f64;
    let mean = kept.iter().sum::<u64>() as f64 / n;
    let var = kept.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
    (mean + 2.0 * (var / n).sqrt()) as u64
}

/// What one interval tells the baseline.
pub(super) struct Interval<'a> {
    /// A sample of the interval's answered RTTs, sorted (may be empty).
    pub rtts: &'a [u64],
    /// Whether the limit was at its floor (at most twice `min`).
    pub at_floor: bool,
}

/// The baseline's state, touched only by the interval's updater.
#[derive(Default)]
pub(super) struct Baseline {
    /// The baseline now (0: not yet known).
    nanos: u64,
    /// A full batch has been seen: the stand-in is over.
    settled: bool,
    /// The batch being gathered.
    batch: Vec<u64>,
    /// Intervals in a row of a slower provider at the floor, and the least
    /// typical RTT among them.
    slower: u32,
    slower_low: u64,
}

impl Baseline {
    /// Takes one interval into account and returns the baseline.
    pub(super) fn update(&mut self, iv: &Interval<'_>) -> u64 {
        if iv.rtts.is_empty() {
            return self.nanos;
        }
        let typical = trimmed_mean(iv.rtts);
        if !self.settled && (self.nanos == 0 || typical < self.nanos) {
            self.nanos = typical;
        }
        self.rise(iv.at_floor, typical);
        if !self.settled {
            return self.nanos;
        }
        let room = BATCH_MAX - self.batch.len();
        self.batch.extend(iv.rtts.iter().take(room));
        if self.batch.len() >= BATCH {
            self.batch.sort_unstable();
            let bound = upper_bound(&self.batch);
            self.batch.clear();
            self.nanos = self.nanos.min(bound);
        }
        self.nanos
    }

    /// The first calls' mean ([`super::first`]) sets the baseline, once.
    pub(super) fn settle(&mut self, mean: u64) {
        if !self.settled {
            self.nanos = mean;
            self.settled = true;
        }
    }

    /// A first batch has set the baseline; before it, the stand-in is
    /// only a guess that reads low.
    pub(super) fn settled(&self) -> bool {
        self.settled
    }

    /// Rises only at the floor, when sending the least did not bring the
    /// round trip back.
    fn rise(&mut self, at_floor: bool, typical: u64) {
        if at_floor && self.nanos > 0 && typical as f64 >= self.nanos as f64 * RISE {
            self.slower_low = if self.slower == 0 {
                typical
            } else {
                self.slower_low.min(typical)
            };
            self.slower += 1;
        } else {
            self.slower = 0;
        }
        if self.slower >= RISE_AFTER {
            self.nanos = self.slower_low;
            self.settled = true;
            self.batch.clear();
            self.slower = 0;
        }
    }
}

/// SplitMix64's finaliser: a well-spread hash of the arrival index.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}
