//! The breaker's state machine.
//!
//! ```text
//!            trip rule fires                 open period over
//!   CLOSED ──────────────────────▶ OPEN ─────────────────────▶ HALF-OPEN
//!     ▲                             ▲                              │
//!     │   `half_open_successes`     │   any probe fails            │
//!     └─────── probes succeed ──────┼──────────────────────────────┘
//!                                   └── (open again, longer)
//! ```
//!
//! - **Closed**: every call passes and is counted; the [`TripRules`] decide.
//! - **Open**: calls fail fast for the open period. Repeated trips without a
//!   full recovery lengthen it: `open * multiplier^(trips-1)`, capped at
//!   `max_open`, as linkerd's breakers back off.
//! - **Half-open**: exactly `half_open_max_probes` calls pass at a time as
//!   probes; the rest fail fast. `half_open_successes` successful probes close
//!   the breaker; one failed (or abandoned, or slow when a slow-call rule is
//!   set) probe opens it again.
//!
//! The common case — closed — is one atomic load on the request path.
//! Transitions take a lock, but they happen a few times per incident. Every
//! transition is logged (`breakwater::breaker`), counted and timestamped.
//! Operators can force a state (`open`, `close`) or `reset`; a forced state
//! stays until released and is shown as forced.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use serde::Serialize;

use super::trip::{CallStats, SLOTS};
use super::{CallResult, Classifier, TripRules};
use crate::window::WindowSpec;
use crate::{Clock, End, Guard, Outcome};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::Open,
            2 => Self::HalfOpen,
            _ => Self::Closed,
        }
    }

    /// The value of the `breakwater_breaker_state` gauge.
    pub fn gauge(self) -> i64 {
        self as i64
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }
}

/// What a call holds while it is in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ticket {
    /// A call in the closed state.
    Normal,
    /// One of the half-open probes.
    Probe,
}

/// How long the breaker stays open, and how it recovers.
#[derive(Debug, Clone, PartialEq)]
pub struct Recovery {
    pub open: Duration,
    pub max_open: Duration,
    pub multiplier: u32,
    pub half_open_max_probes: u32,
    pub half_open_successes: u32,
}

pub struct Breaker {
    name: String,
    scope: String,
    rules: TripRules,
    classifier: Classifier,
    recovery: Recovery,
    spec: WindowSpec,
    clock: Arc<dyn Clock>,
    stats: CallStats,
    state: AtomicU8,
    forced: AtomicBool,
    since: AtomicU64,
    since_wall_ms: AtomicU64,
    open_until: AtomicU64,
    trips: AtomicU32,
    probes: AtomicU32,
    probe_successes: AtomicU32,
    /// Transitions into closed, open and half-open.
    transitions: [AtomicU64; 3],
    transition: Mutex<String>,
}

/// A breaker as the admin shows it.
#[derive(Debug, Clone, Serialize)]
pub struct BreakerSnapshot {
    pub name: String,
    pub scope: String,
    pub state: BreakerState,
    pub forced: bool,
    pub since: String,
    pub last_reason: String,
    pub window_requests: f64,
    pub error_ratio: f64,
    pub slow_ratio: f64,
    pub consecutive_failures: u32,
    /// While open: when it goes half-open (RFC 3339), and in how long.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub open_until: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_probe_in_ms: Option<u64>,
    pub probes_in_flight: u32,
    pub trips_in_a_row: u32,
    pub transitions: Transitions,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct Transitions {
    pub to_closed: u64,
    pub to_open: u64,
    pub to_half_open: u64,
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn rfc3339_ms(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

impl Breaker {
    pub fn new(
        name: String,
        scope: String,
        rules: TripRules,
        classifier: Classifier,
        recovery: Recovery,
        window: Duration,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let now = clock.now_nanos();
        Self {
            name,
            scope,
            rules,
            classifier,
            recovery,
            spec: WindowSpec::new(window, SLOTS as u32 - 1),
            clock,
            stats: CallStats::default(),
            state: AtomicU8::new(BreakerState::Closed as u8),
            forced: AtomicBool::new(false),
            since: AtomicU64::new(now),
            since_wall_ms: AtomicU64::new(wall_ms()),
            open_until: AtomicU64::new(0),
            trips: AtomicU32::new(0),
            probes: AtomicU32::new(0),
            probe_successes: AtomicU32::new(0),
            transitions: Default::default(),
            transition: Mutex::new("created".into()),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn state(&self) -> BreakerState {
        BreakerState::from_u8(self.state.load(Ordering::Acquire))
    }

    pub fn is_forced(&self) -> bool {
        self.forced.load(Ordering::Acquire)
    }

    /// Asks to make a call. `Err(retry_after)` means fail fast.
    pub fn acquire(&self) -> Result<Ticket, Duration> {
        match self.state() {
            BreakerState::Closed => Ok(Ticket::Normal),
            BreakerState::Open => {
                let now = self.clock.now_nanos();
                let until = self.open_until.load(Ordering::Acquire);
                if self.is_forced() || now < until {
                    return Err(
                        Duration::from_nanos(until.saturating_sub(now)).max(Duration::from_secs(1))
                    );
                }
                self.move_to(
                    BreakerState::Open,
                    BreakerState::HalfOpen,
                    "open period over".into(),
                );
                self.try_probe()
            }
            BreakerState::HalfOpen => self.try_probe(),
        }
    }

    fn try_probe(&self) -> Result<Ticket, Duration> {
        let max = self.recovery.half_open_max_probes;
        let taken = self
            .probes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |p| {
                (p < max).then_some(p + 1)
            });
        match (taken, self.state()) {
            (Ok(_), BreakerState::HalfOpen) => Ok(Ticket::Probe),
            (Ok(_), BreakerState::Closed) => {
                // Closed between our reads: an ordinary call.
                self.probes.fetch_sub(1, Ordering::AcqRel);
                Ok(Ticket::Normal)
            }
            (Ok(_), BreakerState::Open) => {
                self.probes.fetch_sub(1, Ordering::AcqRel);
                Err(Duration::from_secs(1))
            }
            (Err(_), _) => Err(Duration::from_secs(1)),
        }
    }

    /// Records how a call ended.
    pub fn record(&self, ticket: Ticket, outcome: &Outcome) {
        let result = self.classifier.classify(outcome);
        self.record_result(ticket, result);
    }

    fn record_result(&self, ticket: Ticket, result: CallResult) {
        match ticket {
            Ticket::Probe => {
                self.probes.fetch_sub(1, Ordering::AcqRel);
                let slow_matters = self.rules.slow_ratio.is_some();
                match result {
                    CallResult::Success { slow } if !(slow && slow_matters) => {
                        let ok = self.probe_successes.fetch_add(1, Ordering::AcqRel) + 1;
                        if ok >= self.recovery.half_open_successes {
                            self.move_to(
                                BreakerState::HalfOpen,
                                BreakerState::Closed,
                                format!("{ok} probes succeeded"),
                            );
                        }
                    }
                    other => {
                        let why = match other {
                            CallResult::Abandoned => "a probe was abandoned",
                            CallResult::AbandonedSlow => "a probe was abandoned, already slow",
                            CallResult::Success { .. } => "a probe was slow",
                            _ => "a probe failed",
                        };
                        self.move_to(BreakerState::HalfOpen, BreakerState::Open, why.into());
                    }
                }
            }
            Ticket::Normal => {
                if self.state() != BreakerState::Closed {
                    return;
                }
                let tick = self.spec.tick(self.clock.now_nanos());
                self.stats.record(result, tick);
                if self.is_forced() {
                    return;
                }
                if let Some(reason) = self.rules.evaluate(&self.stats, tick) {
                    self.move_to(BreakerState::Closed, BreakerState::Open, reason);
                }
            }
        }
    }

    /// A probe that was granted but never sent (a later policy refused the
    /// request): give its slot back without judging the upstream.
    pub fn release_unused(&self, ticket: Ticket) {
        if ticket == Ticket::Probe {
            self.probes.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Moves `from` → `to` if the breaker is still in `from` and not forced.
    fn move_to(&self, from: BreakerState, to: BreakerState, reason: String) -> bool {
        let mut last = self.transition.lock();
        if self.state() != from || self.is_forced() {
            return false;
        }
        self.enter(to, &reason);
        *last = reason;
        true
    }

    /// Enters `to`; the caller holds the transition lock.
    fn enter(&self, to: BreakerState, reason: &str) {
        let now = self.clock.now_nanos();
        let from = self.state();
        match to {
            BreakerState::Open => {
                let trips = self.trips.fetch_add(1, Ordering::AcqRel) + 1;
                let factor = u64::from(self.recovery.multiplier.max(1)).saturating_pow(trips - 1);
                let open = self
                    .recovery
                    .open
                    .saturating_mul(factor.min(u64::from(u32::MAX)) as u32)
                    .min(self.recovery.max_open);
                self.open_until.store(
                    now.saturating_add(crate::bounds::nanos(open)),
                    Ordering::Release,
                );
                self.probe_successes.store(0, Ordering::Release);
                tracing::warn!(target: "breakwater::breaker", breaker = %self.name, scope = %self.scope,
                    from = from.as_str(), to = "open", open_ms = open.as_millis() as u64, %reason, "breaker opened");
            }
            BreakerState::HalfOpen => {
                self.probe_successes.store(0, Ordering::Release);
                tracing::info!(target: "breakwater::breaker", breaker = %self.name, scope = %self.scope,
                    from = from.as_str(), to = "half_open", %reason, "breaker half-open: probing");
            }
            BreakerState::Closed => {
                self.trips.store(0, Ordering::Release);
                self.stats.clear();
                tracing::info!(target: "breakwater::breaker", breaker = %self.name, scope = %self.scope,
                    from = from.as_str(), to = "closed", %reason, "breaker closed");
            }
        }
        self.state.store(to as u8, Ordering::Release);
        self.since.store(now, Ordering::Release);
        self.since_wall_ms.store(wall_ms(), Ordering::Release);
        self.transitions[match to {
            BreakerState::Closed => 0,
            BreakerState::Open => 1,
            BreakerState::HalfOpen => 2,
        }]
        .fetch_add(1, Ordering::Relaxed);
    }

    /// Forces the breaker open (every call fails fast) until released.
    pub fn force_open(&self) {
        let mut last = self.transition.lock();
        self.forced.store(true, Ordering::Release);
        self.enter(BreakerState::Open, "forced open by an operator");
        self.open_until.store(u64::MAX, Ordering::Release);
        *last = "forced open by an operator".into();
    }

    /// Forces the breaker closed (it will not trip) until released.
    pub fn force_close(&self) {
        let mut last = self.transition.lock();
        self.forced.store(true, Ordering::Release);
        self.enter(BreakerState::Closed, "forced closed by an operator");
        *last = "forced closed by an operator".into();
    }

    /// Releases any forced state and starts afresh, closed.
    pub fn reset(&self) {
        let mut last = self.transition.lock();
        self.forced.store(false, Ordering::Release);
        self.enter(BreakerState::Closed, "reset by an operator");
        *last = "reset by an operator".into();
    }

    pub fn transitions(&self) -> Transitions {
        Transitions {
            to_closed: self.transitions[0].load(Ordering::Relaxed),
            to_open: self.transitions[1].load(Ordering::Relaxed),
            to_half_open: self.transitions[2].load(Ordering::Relaxed),
        }
    }

    pub fn snapshot(&self) -> BreakerSnapshot {
        let now = self.clock.now_nanos();
        let state = self.state();
        let (calls, errors, slow) = self.stats.ratios(self.spec.tick(now));
        let until = self.open_until.load(Ordering::Acquire);
        let (open_until, next_probe_in_ms) = if state == BreakerState::Open && until != u64::MAX {
            let left = Duration::from_nanos(until.saturating_sub(now));
            (
                Some(rfc3339_ms(
                    wall_ms().saturating_add(left.as_millis() as u64),
                )),
                Some(left.as_millis() as u64),
            )
        } else {
            (None, None)
        };
        BreakerSnapshot {
            name: self.name.clone(),
            scope: self.scope.clone(),
            state,
            forced: self.is_forced(),
            since: rfc3339_ms(self.since_wall_ms.load(Ordering::Acquire)),
            last_reason: self.transition.lock().clone(),
            window_requests: calls,
            error_ratio: errors,
            slow_ratio: slow,
            consecutive_failures: self.stats.consecutive.load(Ordering::Acquire),
            open_until,
            next_probe_in_ms,
            probes_in_flight: self.probes.load(Ordering::Acquire),
            trips_in_a_row: self.trips.load(Ordering::Acquire),
            transitions: self.transitions(),
        }
    }
}

/// A call's hold on a breaker: completed with the outcome, released unused
/// when the request never went upstream, or — dropped — an abandoned call
/// (which fails a half-open probe and frees its slot).
pub struct BreakerPermit {
    breaker: Arc<Breaker>,
    ticket: Option<Ticket>,
}

impl BreakerPermit {
    pub fn new(breaker: Arc<Breaker>, ticket: Ticket) -> Self {
        Self {
            breaker,
            ticket: Some(ticket),
        }
    }
}

impl Guard for BreakerPermit {
    fn finish(mut self: Box<Self>, end: End<'_>) {
        if let Some(t) = self.ticket.take() {
            match end {
                End::Upstream(outcome) => self.breaker.record(t, outcome),
                End::NotSent => self.breaker.release_unused(t),
            }
        }
    }
}

impl Drop for BreakerPermit {
    fn drop(&mut self) {
        if let Some(t) = self.ticket.take() {
            self.breaker.record_result(t, CallResult::Abandoned);
        }
    }
}
