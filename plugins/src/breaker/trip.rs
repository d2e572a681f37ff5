//! The strategies that open a breaker. Any one of them trips it.
//!
//! - **Error ratio**: failures / calls in the sliding window ≥ `error_ratio`.
//! - **Slow-call ratio**: calls slower than `slow_call` / calls ≥ `slow_ratio`.
//! - **Consecutive failures**: `consecutive_failures` failures in a row,
//!   whatever the window says (a dead upstream trips it at once).
//!
//! The ratio strategies wait for `min_requests` calls in the window, so one
//! failure out of two calls at night does not open anything. Counts live in
//! 10-sub-bucket sliding windows (see `window`), so a ratio is exact to
//! within one sub-bucket at the window's trailing edge.

use std::sync::atomic::{AtomicU32, Ordering};

use super::CallResult;
use crate::window::{SlidingWindow, Tick};

/// Sub-buckets per breaker window (+1 slot): breakers are few, so precision
/// is cheap here.
pub(crate) const SLOTS: usize = 11;

#[derive(Debug, Clone, PartialEq)]
pub struct TripRules {
    pub min_requests: u64,
    pub error_ratio: Option<f64>,
    pub slow_ratio: Option<f64>,
    pub consecutive_failures: Option<u32>,
}

/// Call counts of the closed state.
#[derive(Debug, Default)]
pub(crate) struct CallStats {
    pub(crate) calls: SlidingWindow<SLOTS>,
    pub(crate) failures: SlidingWindow<SLOTS>,
    pub(crate) slow: SlidingWindow<SLOTS>,
    pub(crate) consecutive: AtomicU32,
}

impl CallStats {
    pub(crate) fn record(&self, result: CallResult, tick: Tick) {
        let (failed, slow) = match result {
            CallResult::Success { slow } => (false, slow),
            CallResult::Failure { slow } => (true, slow),
            CallResult::AbandonedSlow => (false, true),
            CallResult::Abandoned => return,
        };
        self.calls.add_at(tick, 1);
        if failed {
            self.failures.add_at(tick, 1);
            self.consecutive.fetch_add(1, Ordering::AcqRel);
        } else if result != CallResult::AbandonedSlow {
            // An abandoned call proves no success: the run of failures
            // goes on.
            self.consecutive.store(0, Ordering::Release);
        }
        if slow {
            self.slow.add_at(tick, 1);
        }
    }

    pub(crate) fn clear(&self) {
        self.calls.clear();
        self.failures.clear();
        self.slow.clear();
        self.consecutive.store(0, Ordering::Release);
    }

    /// `(calls, error ratio, slow ratio)` in the window.
    pub(crate) fn ratios(&self, tick: Tick) -> (f64, f64, f64) {
        let calls = tick.unscale(self.calls.estimate_scaled_at(tick));
        if calls <= 0.0 {
            return (0.0, 0.0, 0.0);
        }
        (
            calls,
            tick.unscale(self.failures.estimate_scaled_at(tick)) / calls,
            tick.unscale(self.slow.estimate_scaled_at(tick)) / calls,
        )
    }
}

impl TripRules {
    /// Why the breaker should open now, if it should.
    pub(crate) fn evaluate(&self, stats: &CallStats, tick: Tick) -> Option<String> {
        if let Some(n) = self.consecutive_failures {
            let c = stats.consecutive.load(Ordering::Acquire);
            if c >= n {
                return Some(format!("{c} consecutive failures"));
            }
        }
        let (calls, errors, slow) = stats.ratios(tick);
        // Round: the window's interpolated edge can leave 19.97 of 20 calls.
        if calls.round() < self.min_requests as f64 {
            return None;
        }
        if let Some(r) = self.error_ratio {
            if errors >= r {
                return Some(format!(
                    "error ratio {:.0}% over {calls:.0} calls",
                    errors * 100.0
                ));
            }
        }
        if let Some(r) = self.slow_ratio {
            if slow >= r {
                return Some(format!(
                    "slow-call ratio {:.0}% over {calls:.0} calls",
                    slow * 100.0
                ));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::window::WindowSpec;
    use std::time::Duration;

    fn rules() -> TripRules {
        TripRules {
            min_requests: 10,
            error_ratio: Some(0.5),
            slow_ratio: Some(0.8),
            consecutive_failures: Some(5),
        }
    }

    fn tick() -> Tick {
        WindowSpec::new(Duration::from_secs(10), 10).tick(1_000_000)
    }

    fn record(stats: &CallStats, n: usize, result: CallResult) {
        for _ in 0..n {
            stats.record(result, tick());
        }
    }

    const OK: CallResult = CallResult::Success { slow: false };
    const FAIL: CallResult = CallResult::Failure { slow: false };

    #[test]
    fn error_ratio_waits_for_min_requests() {
        let s = CallStats::default();
        record(&s, 4, FAIL);
        record(&s, 1, OK);
        assert_eq!(rules().evaluate(&s, tick()), None, "5 calls < min_requests");
        record(&s, 4, OK);
        record(&s, 1, FAIL);
        // 10 calls, 5 failures: 50%.
        assert!(rules()
            .evaluate(&s, tick())
            .unwrap()
            .contains("error ratio 50%"));
    }

    #[test]
    fn consecutive_failures_trip_without_min_requests() {
        let s = CallStats::default();
        record(&s, 4, FAIL);
        assert_eq!(rules().evaluate(&s, tick()), None);
        record(&s, 1, OK);
        record(&s, 4, FAIL);
        assert_eq!(
            rules().evaluate(&s, tick()),
            None,
            "the success reset the run"
        );
        record(&s, 1, FAIL);
        assert_eq!(
            rules().evaluate(&s, tick()).as_deref(),
            Some("5 consecutive failures")
        );
    }

    #[test]
    fn slow_ratio_counts_slow_successes() {
        let s = CallStats::default();
        record(&s, 8, CallResult::Success { slow: true });
        record(&s, 2, OK);
        assert!(rules()
            .evaluate(&s, tick())
            .unwrap()
            .contains("slow-call ratio 80%"));
    }

    #[test]
    fn abandoned_calls_count_for_nothing() {
        let s = CallStats::default();
        record(&s, 20, CallResult::Abandoned);
        assert_eq!(s.ratios(tick()).0, 0.0);
    }

    #[test]
    fn a_call_abandoned_already_slow_is_slow_but_breaks_no_run_of_failures() {
        let s = CallStats::default();
        record(&s, 2, FAIL);
        record(&s, 8, CallResult::AbandonedSlow);
        assert_eq!(s.consecutive.load(Ordering::Acquire), 2);
        assert!(rules()
            .evaluate(&s, tick())
            .unwrap()
            .contains("slow-call ratio 80%"));
    }
}
