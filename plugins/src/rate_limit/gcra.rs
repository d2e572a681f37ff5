//! GCRA through `governor`, on Breakwater's capped store and injectable clock.
//!
//! governor's keyed limiter takes any [`StateStore`]. Ours keeps, per key, the
//! GCRA theoretical arrival time (the `AtomicU64` governor itself would keep)
//! beside a sliding window of admitted requests, which the admin's "top keys
//! by rate" needs and GCRA alone cannot tell. Both are updated in one store
//! lookup. The store is capped and evicts keys at rest first: a key whose
//! arrival time has passed has a full burst again, so forgetting it is exact,
//! the same rule as governor's `retain_recent`.

use std::num::NonZeroU64;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use governor::clock::Clock as GovClock;
use governor::middleware::StateInformationMiddleware;
use governor::nanos::Nanos;
use governor::state::{InMemoryState, NotKeyed, StateStore};
use governor::RateLimiter;

use crate::store::{KeyState, KeyedStore};
use crate::window::{SlidingWindow, WindowSpec};
use crate::Clock;

/// governor's view of the policy clock.
#[derive(Debug, Clone)]
pub(crate) struct PolicyClock(pub Arc<dyn Clock>);

impl GovClock for PolicyClock {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        Nanos::from(self.0.now_nanos())
    }
}

/// Per-key GCRA state plus the admitted-requests window. 48 bytes.
#[derive(Debug, Default)]
pub(crate) struct GcraEntry {
    /// Theoretical arrival time in nanoseconds since the limiter's start; 0 = none.
    tat: AtomicU64,
    pub(crate) admitted: SlidingWindow,
}

pub(crate) struct GcraCx {
    /// The policy-clock time the limiter started at (governor's origin).
    pub(crate) start: u64,
    pub(crate) spec: WindowSpec,
}

impl KeyState for GcraEntry {
    type Context = GcraCx;

    fn heat(&self, now: u64, cx: &GcraCx) -> u64 {
        let recent = self.admitted.heat(&cx.spec, now);
        let tat = self.tat.load(Ordering::Relaxed);
        // A bucket that is not yet full again still matters, even if the
        // window has slid past its last admission.
        if recent == 0 && tat != 0 && cx.start + tat > now {
            1
        } else {
            recent
        }
    }
}

/// The keyed store handed to governor.
pub(crate) struct GcraStore {
    pub(crate) entries: Arc<KeyedStore<GcraEntry>>,
    clock: Arc<dyn Clock>,
}

impl GcraStore {
    pub(crate) fn new(entries: Arc<KeyedStore<GcraEntry>>, clock: Arc<dyn Clock>) -> Self {
        Self { entries, clock }
    }
}

impl StateStore for GcraStore {
    type Key = u64;

    fn measure_and_replace<T, F, E>(&self, key: &u64, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let now = self.clock.now_nanos();
        let spec = self.entries.context().spec;
        self.entries.with(*key, now, GcraEntry::default, |entry| {
            // The compare-and-swap loop governor's own in-memory state runs.
            let mut prev = entry.tat.load(Ordering::Acquire);
            loop {
                let decision = f(NonZeroU64::new(prev).map(|n| n.get().into()));
                match decision {
                    Ok((result, next)) => {
                        match entry.tat.compare_exchange_weak(
                            prev,
                            next.as_u64(),
                            Ordering::AcqRel,
                            Ordering::Acquire,
                        ) {
                            Ok(_) => {
                                entry.admitted.add(&spec, now, 1);
                                return Ok(result);
                            }
                            Err(actual) => prev = actual,
                        }
                    }
                    Err(e) => return Err(e),
                }
            }
        })
    }
}

pub(crate) type KeyedGcra = RateLimiter<u64, GcraStore, PolicyClock, StateInformationMiddleware>;
pub(crate) type DirectGcra =
    RateLimiter<NotKeyed, InMemoryState, PolicyClock, StateInformationMiddleware>;
