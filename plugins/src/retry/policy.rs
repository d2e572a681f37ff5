//! The `retry:` and `retry_budget:` sections, the backoff and the budget.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::bounds::{duration_in, in_range, MAX_SLOTS};
use crate::duration::HumanDuration;
use crate::window::{SlidingWindow, WindowSpec};
use crate::{Clock, ConfigError};

/// A route's `retry:` section.
///
/// ```yaml
/// retry:
///   attempts: 2              # retries after the first try, at most
///   backoff: 25ms            # base of the jittered exponential backoff
///   max_backoff: 250ms
///   idempotent: false        # true: also retry POST and PATCH on this route
///   on_statuses: [502]       # opt-in: also retry these answers (never 429 or 503)
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    #[serde(default = "default_attempts")]
    pub attempts: u32,
    #[serde(default = "default_backoff")]
    pub backoff: HumanDuration,
    #[serde(default = "default_max_backoff")]
    pub max_backoff: HumanDuration,
    #[serde(default)]
    pub idempotent: bool,
    /// Upstream statuses that are retried too. 429 and 503 mean "overloaded":
    /// retrying them is how retry storms start, so they are refused here.
    #[serde(default)]
    pub on_statuses: Vec<u16>,
}

/// A cluster's `retry_budget:` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryBudgetConfig {
    #[serde(default = "default_percent")]
    pub budget_percent: f64,
    #[serde(default = "default_min_per_sec")]
    pub min_retries_per_sec: u32,
}

impl Default for RetryBudgetConfig {
    fn default() -> Self {
        Self {
            budget_percent: default_percent(),
            min_retries_per_sec: default_min_per_sec(),
        }
    }
}

fn default_attempts() -> u32 {
    1
}
fn default_backoff() -> HumanDuration {
    Duration::from_millis(25).into()
}
fn default_max_backoff() -> HumanDuration {
    Duration::from_millis(250).into()
}
fn default_percent() -> f64 {
    20.0
}
fn default_min_per_sec() -> u32 {
    3
}

/// The longest wait between two tries.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// A validated `retry:` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub backoff: Duration,
    pub max_backoff: Duration,
    pub idempotent: bool,
    pub on_statuses: Vec<u16>,
}

impl RetryConfig {
    pub fn compile(&self, path: &str) -> Result<RetryPolicy, ConfigError> {
        if self.attempts == 0 || self.attempts > 5 {
            return Err(ConfigError::new(
                format!("{path}.attempts"),
                "must be 1-5 (omit `retry` for none)",
            ));
        }
        // Each bound first, then how they relate, so that an error names
        // the field that is out of range.
        let backoff = duration_in(
            self.backoff.as_duration(),
            Duration::ZERO..=MAX_BACKOFF,
            format!("{path}.backoff"),
        )?;
        let max_backoff = duration_in(
            self.max_backoff.as_duration(),
            Duration::ZERO..=MAX_BACKOFF,
            format!("{path}.max_backoff"),
        )?;
        if max_backoff < backoff {
            return Err(ConfigError::new(
                format!("{path}.max_backoff"),
                "must be at least `backoff`",
            ));
        }
        for (i, s) in self.on_statuses.iter().enumerate() {
            let p = format!("{path}.on_statuses[{i}]");
            if matches!(s, 429 | 503) {
                return Err(ConfigError::new(
                    p,
                    format!("{s} means the upstream is overloaded; it is never retried"),
                ));
            }
            if !(500..=599).contains(s) {
                return Err(ConfigError::new(p, "only 5xx statuses can be retried"));
            }
        }
        Ok(RetryPolicy {
            attempts: self.attempts,
            backoff,
            max_backoff,
            idempotent: self.idempotent,
            on_statuses: self.on_statuses.clone(),
        })
    }
}

impl RetryPolicy {
    /// The wait before retry number `retry` (1-based): "full jitter", a
    /// uniform draw from `[0, min(max_backoff, backoff * 2^(retry-1))]`, so
    /// that many clients retrying at once spread out instead of stampeding.
    pub fn backoff_for(&self, retry: u32) -> Duration {
        let ceiling = self
            .backoff
            .saturating_mul(1u32 << retry.saturating_sub(1).min(16))
            .min(self.max_backoff);
        ceiling.mul_f64(fastrand::f64())
    }
}

/// A cluster's retry budget over a 10-second window.
pub struct RetryBudget {
    spec: WindowSpec,
    requests: SlidingWindow<11>,
    retries: SlidingWindow<11>,
    percent: f64,
    floor: u64,
    clock: Arc<dyn Clock>,
    exhausted: AtomicU64,
}

/// The budget's accounting window.
pub const BUDGET_WINDOW: Duration = Duration::from_secs(10);

impl RetryBudgetConfig {
    pub fn compile(&self, path: &str, clock: Arc<dyn Clock>) -> Result<RetryBudget, ConfigError> {
        if !(0.0..=100.0).contains(&self.budget_percent) {
            return Err(ConfigError::new(
                format!("{path}.budget_percent"),
                "must be 0-100",
            ));
        }
        in_range(
            u64::from(self.min_retries_per_sec),
            0..=MAX_SLOTS,
            format!("{path}.min_retries_per_sec"),
        )?;
        Ok(RetryBudget {
            spec: WindowSpec::new(BUDGET_WINDOW, 10),
            requests: SlidingWindow::default(),
            retries: SlidingWindow::default(),
            percent: self.budget_percent,
            floor: u64::from(self.min_retries_per_sec) * BUDGET_WINDOW.as_secs(),
            clock,
            exhausted: AtomicU64::new(0),
        })
    }
}

impl RetryBudget {
    /// Counts an original request (not a retry).
    pub fn deposit(&self) {
        self.requests.add(&self.spec, self.clock.now_nanos(), 1);
    }

    /// Takes one retry from the budget, if there is one left.
    pub fn try_withdraw(&self) -> bool {
        let tick = self.spec.tick(self.clock.now_nanos());
        let requests = tick.unscale(self.requests.estimate_scaled_at(tick));
        let retries = tick.unscale(self.retries.estimate_scaled_at(tick));
        let allowed = (requests * self.percent / 100.0).max(self.floor as f64);
        if retries + 1.0 > allowed {
            self.exhausted.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        self.retries.add_at(tick, 1);
        true
    }

    /// How many retries were refused for lack of budget.
    pub fn exhausted(&self) -> u64 {
        self.exhausted.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FakeClock;

    fn budget(percent: f64, min: u32, clock: &FakeClock) -> RetryBudget {
        RetryBudgetConfig {
            budget_percent: percent,
            min_retries_per_sec: min,
        }
        .compile("b", Arc::new(clock.clone()))
        .unwrap()
    }

    #[test]
    fn retries_stay_within_the_percentage_of_recent_requests() {
        let clock = FakeClock::new();
        let b = budget(20.0, 0, &clock);
        for _ in 0..100 {
            b.deposit();
        }
        let granted = (0..100).filter(|_| b.try_withdraw()).count();
        assert_eq!(granted, 20);
        assert_eq!(b.exhausted(), 80);
        // The window slides: old requests and retries are forgotten together.
        clock.advance(BUDGET_WINDOW * 2);
        assert!(!b.try_withdraw(), "no recent requests, no floor: no budget");
    }

    #[test]
    fn the_floor_lets_a_quiet_cluster_retry() {
        let clock = FakeClock::new();
        let b = budget(20.0, 3, &clock);
        b.deposit();
        let granted = (0..100).filter(|_| b.try_withdraw()).count();
        assert_eq!(granted, 30, "3 per second over a 10 s window");
    }

    #[test]
    fn backoff_is_jittered_below_the_exponential_ceiling() {
        let p = RetryConfig {
            attempts: 3,
            backoff: Duration::from_millis(10).into(),
            max_backoff: Duration::from_millis(25).into(),
            idempotent: false,
            on_statuses: vec![],
        }
        .compile("r")
        .unwrap();
        let draws: Vec<Duration> = (0..200).map(|_| p.backoff_for(2)).collect();
        assert!(draws.iter().all(|d| *d <= Duration::from_millis(20)));
        assert!(
            draws.iter().any(|d| *d < Duration::from_millis(10)),
            "spread low"
        );
        assert!(
            draws.iter().any(|d| *d > Duration::from_millis(10)),
            "and high"
        );
        assert!(
            (0..200).all(|_| p.backoff_for(5) <= Duration::from_millis(25)),
            "capped"
        );
    }

    #[test]
    fn config_errors() {
        let bad = |attempts, backoff: u64, max: u64, on_statuses: Vec<u16>| {
            RetryConfig {
                attempts,
                backoff: Duration::from_millis(backoff).into(),
                max_backoff: Duration::from_millis(max).into(),
                idempotent: false,
                on_statuses,
            }
            .compile("r")
            .unwrap_err()
            .path
        };
        assert_eq!(bad(0, 1, 2, vec![]), "r.attempts");
        assert_eq!(bad(1, 10, 2, vec![]), "r.max_backoff");
        assert_eq!(bad(1, 1, 2, vec![502, 503]), "r.on_statuses[1]");
        assert_eq!(bad(1, 1, 2, vec![404]), "r.on_statuses[0]");
        // A backoff past its own bound is named, not the max_backoff below it.
        assert_eq!(bad(1, 3_600_000, 250, vec![]), "r.backoff");
        let clock = FakeClock::new();
        let budget_err = |budget_percent, min_retries_per_sec| {
            RetryBudgetConfig {
                budget_percent,
                min_retries_per_sec,
            }
            .compile("c", Arc::new(clock.clone()))
            .err()
            .unwrap()
            .path
        };
        assert_eq!(budget_err(120.0, 1), "c.budget_percent");
        assert_eq!(budget_err(f64::NAN, 1), "c.budget_percent");
        assert_eq!(budget_err(20.0, u32::MAX), "c.min_retries_per_sec");
    }
}
