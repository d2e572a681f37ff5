//! One endpoint's health as the active probes see it: up or down, with
//! HAProxy's `rise`/`fall` hysteresis, so one lost probe does not take an
//! endpoint out and one lucky probe does not bring it back.
//!
//! The proxy reads [`EndpointHealth::is_up`] on every endpoint choice (one
//! relaxed atomic load); the prober writes through [`EndpointHealth::record`]
//! once per probe, under a lock no request takes.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;
use serde::Serialize;

/// A change of an endpoint's state, for the log and the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// It failed `fall` probes in a row: out of rotation.
    Down,
    /// It passed `rise` probes in a row: back in rotation.
    Up,
}

impl Change {
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Down => "down",
            Change::Up => "up",
        }
    }
}

/// What `GET /health` shows of an endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HealthReport {
    pub up: bool,
    /// Passes (when down) or failures (when up) in a row so far.
    pub streak: u32,
    pub checks: u64,
    pub failures: u64,
    /// The last probe's result: `ok`, or why it failed.
    pub last: Option<String>,
    /// Nanoseconds on the gateway's clock at the last change (or at
    /// creation), for "since".
    pub changed_at: u64,
    pub ups: u64,
    pub downs: u64,
}

#[derive(Debug, Default)]
struct Tally {
    streak: u32,
    checks: u64,
    failures: u64,
    last: Option<String>,
    ups: u64,
    downs: u64,
}

/// Up until probes say otherwise: a gateway that starts, or an endpoint a
/// reload adds, serves at once, and the first `fall` failures take it out.
#[derive(Debug)]
pub struct EndpointHealth {
    up: AtomicBool,
    changed_at: AtomicU64,
    tally: Mutex<Tally>,
}

impl EndpointHealth {
    pub fn new(now: u64) -> Self {
        Self {
            up: AtomicBool::new(true),
            changed_at: AtomicU64::new(now),
            tally: Mutex::new(Tally::default()),
        }
    }

    /// Whether the endpoint is in rotation.
    #[inline]
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// When it last came up (or was created), on the gateway's clock.
    pub fn changed_at(&self) -> u64 {
        self.changed_at.load(Ordering::Relaxed)
    }

    /// One probe's result: `Ok(())` passed, `Err(why)` failed. Returns the
    /// change it caused, if any.
    pub fn record(
        &self,
        result: Result<(), String>,
        now: u64,
        rise: u32,
        fall: u32,
    ) -> Option<Change> {
        let mut t = self.tally.lock();
        t.checks += 1;
        let passed = result.is_ok();
        t.last = Some(match result {
            Ok(()) => "ok".to_string(),
            Err(why) => why,
        });
        if !passed {
            t.failures += 1;
        }
        let up = self.is_up();
        // The streak counts results against the current state.
        if passed == up {
            t.streak = 0;
            return None;
        }
        t.streak += 1;
        let (needed, change) = if up {
            (fall, Change::Down)
        } else {
            (rise, Change::Up)
        };
        if t.streak < needed {
            return None;
        }
        t.streak = 0;
        match change {
            Change::Down => t.downs += 1,
            Change::Up => t.ups += 1,
        }
        self.changed_at.store(now, Ordering::Relaxed);
        self.up.store(!up, Ordering::Relaxed);
        Some(change)
    }

    pub fn report(&self) -> HealthReport {
        let t = self.tally.lock();
        HealthReport {
            up: self.is_up(),
            streak: t.streak,
            checks: t.checks,
            failures: t.failures,
            last: t.last.clone(),
            changed_at: self.changed_at(),
            ups: t.ups,
            downs: t.downs,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fail() -> Result<(), String> {
        Err("connection refused".into())
    }

    #[test]
    fn fall_failures_in_a_row_take_it_out_and_rise_passes_bring_it_back() {
        let h = EndpointHealth::new(0);
        assert!(h.is_up());
        assert_eq!(h.record(fail(), 1, 2, 3), None);
        assert_eq!(h.record(fail(), 2, 2, 3), None);
        assert_eq!(h.record(fail(), 3, 2, 3), Some(Change::Down));
        assert!(!h.is_up());
        assert_eq!(h.changed_at(), 3);
        assert_eq!(h.record(Ok(()), 4, 2, 3), None);
        assert!(!h.is_up(), "one pass is not enough with rise 2");
        assert_eq!(h.record(Ok(()), 5, 2, 3), Some(Change::Up));
        assert!(h.is_up());
        let r = h.report();
        assert_eq!((r.checks, r.failures, r.ups, r.downs), (5, 3, 1, 1));
        assert_eq!(r.last.as_deref(), Some("ok"));
        assert_eq!(r.changed_at, 5);
    }

    #[test]
    fn a_result_that_agrees_with_the_state_resets_the_streak() {
        let h = EndpointHealth::new(0);
        for _ in 0..10 {
            assert_eq!(h.record(fail(), 1, 2, 3), None);
            assert_eq!(h.record(fail(), 1, 2, 3), None);
            assert_eq!(h.record(Ok(()), 1, 2, 3), None);
        }
        assert!(h.is_up(), "never three failures in a row");
        assert_eq!(h.report().last.as_deref(), Some("ok"));
        assert_eq!(h.record(fail(), 1, 2, 3), None);
        assert_eq!(h.report().last.as_deref(), Some("connection refused"));
    }
}
