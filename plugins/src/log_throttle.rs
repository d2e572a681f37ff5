//! At most one log line per interval for events that can fire per request.
//!
//! A shadow limit or an abuse detector can trigger on every request of a hot
//! key; logging each would turn an attack into a log flood. This lets one line
//! through per interval and reports how many were held back.

use std::sync::atomic::{AtomicU64, Ordering};

pub struct LogThrottle {
    interval_nanos: u64,
    last: AtomicU64,
    suppressed: AtomicU64,
}

impl LogThrottle {
    pub fn new(interval_nanos: u64) -> Self {
        Self {
            interval_nanos,
            last: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(n)` when a line may be written now; `n` lines were held back
    /// since the last one.
    pub fn admit(&self, now: u64) -> Option<u64> {
        let last = self.last.load(Ordering::Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= self.interval_nanos;
        if due
            && self
                .last
                .compare_exchange(last, now.max(1), Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Ordering::Relaxed));
        }
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_with_a_count_of_the_rest() {
        let t = LogThrottle::new(1_000);
        assert_eq!(t.admit(10), Some(0));
        assert_eq!(t.admit(20), None);
        assert_eq!(t.admit(500), None);
        assert_eq!(t.admit(1_010), Some(2));
    }
}
