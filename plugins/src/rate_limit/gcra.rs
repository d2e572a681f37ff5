//! GCRA through `governor`, on Breakwater's capped store and injectable clock.
//!
//! governor's keyed limiter takes any [`StateStore`]. Ours keeps, per key, the
//! GCRA theoretical arrival time (the `AtomicU64` governor itself would keep)
//! beside a sliding window of admitted requests, which the admin's "top keys
//! by rate" needs and GCRA alone cannot tell. Both are updated in one store
//! lookup. The store is capped and evicts keys at rest first: a key whose
//! arrival time has passed has a full burst again, so forgetting it is exact,
//! the same rule as governor's `retain_recent`.

use std::cell::Cell;
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

thread_local! {
    /// The time of the request being decided on this thread, if any.
    static DECIDING_AT: Cell<Option<u64>> = const { Cell::new(None) };
}

/// Runs `f` (a governor check) with the policy clock reading `now`.
///
/// A request is decided at one instant, read once by the gateway. Without
/// this, governor and the store would each read the clock again — three
/// clock reads per decision, the largest single cost of a cached decision.
/// Decisions are synchronous, so the value cannot leak to another request;
/// the guard restores the previous value even if `f` unwinds.
pub(crate) fn deciding_at<R>(now: u64, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<u64>);
    impl Drop for Restore {
        fn drop(&mut self) {
            DECIDING_AT.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(DECIDING_AT.with(|c| c.replace(Some(now))));
    f()
}

/// governor's view of the policy clock: the request's time while deciding
/// (see [`deciding_at`]), the clock itself otherwise.
#[derive(Debug, Clone)]
pub(crate) struct PolicyClock(pub Arc<dyn Clock>);

impl PolicyClock {
    fn now_nanos(&self) -> u64 {
        DECIDING_AT
            .with(|c| c.get())
            .unwrap_or_else(|| self.0.now_nanos())
    }
}

impl GovClock for PolicyClock {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        Nanos::from(self.now_nanos())
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
    clock: PolicyClock,
}

impl GcraStore {
    pub(crate) fn new(entries: Arc<KeyedStore<GcraEntry>>, clock: Arc<dyn Clock>) -> Self {
        Self {
            entries,
            clock: PolicyClock(clock),
        }
    }
}

impl StateStore for GcraStore {
    type Key = u64;

    fn measure_and_replace<T, F, E>(&self, key: &u64, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let now = self.clock.now_nanos();
        let tick = self.entries.context().spec.tick(now);
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
                                entry.admitted.add_at(tick, 1);
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
