//! The compiled `rate_limit` policy.
//!
//! Keys absent from a request (no user on an anonymous request) are not
//! limited by a policy on that key. With `algorithm: sliding_window`, the
//! check and the count are two atomic steps: under a burst of concurrent
//! requests for one key, up to (concurrency − 1) extra requests can pass at
//! the limit's edge. GCRA updates are a single compare-and-swap and exact.

use std::collections::{HashMap, HashSet};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use governor::state::InMemoryState;
use governor::{Quota, RateLimiter};
use http::HeaderValue;

use super::config::{Algorithm, RateLimitConfig};
use super::gcra::{deciding_at, DirectGcra, GcraCx, GcraEntry, GcraStore, KeyedGcra, PolicyClock};
use super::headers::{policy_value, rejection_headers};
use crate::bounds::{nanos, MAX_REFILL};
use crate::fleet::{Fleet, GlobalAdmit, GlobalCounter, GlobalSync, Section, SectionReply};
use crate::log_throttle::LogThrottle;
use crate::report::{LimitCounts, LimitReport, TopKey};
use crate::store::{KeyHasher, KeyNames, KeyState, KeyedStore};
use crate::window::{hottest, SlidingWindow, WindowSpec};
use crate::{
    Clock, Decision, Exchange, KeySpec, Policy, PolicyEnv, Rejection, RejectionKind, RequestView,
};

/// Sub-buckets of every window kept by this policy.
const BUCKETS: u32 = 4;

#[derive(Debug, Default)]
struct WindowEntry {
    admitted: SlidingWindow,
}

impl KeyState for WindowEntry {
    type Context = WindowSpec;

    fn heat(&self, now: u64, spec: &WindowSpec) -> u64 {
        self.admitted.heat(spec, now)
    }
}

enum Engine {
    Gcra {
        limiter: KeyedGcra,
        entries: Arc<KeyedStore<GcraEntry>>,
    },
    Window {
        entries: KeyedStore<WindowEntry>,
    },
    /// `scope: global`: fleet-wide sliding windows (see [`crate::fleet`]).
    Global {
        counter: GlobalCounter,
    },
}

/// A key with its own limit. Under GCRA it gets its own limiter; under a
/// sliding window it shares the store with a different threshold.
struct Override {
    limit: u64,
    gcra: Option<DirectGcra>,
}

#[derive(Default)]
struct Counts {
    admitted: AtomicU64,
    rejected: AtomicU64,
    shadow_rejected: AtomicU64,
}

pub struct RateLimit {
    name: String,
    key: KeySpec,
    hasher: KeyHasher,
    limit: u64,
    window: Duration,
    spec: WindowSpec,
    shadow: bool,
    status: u16,
    clock: Arc<dyn Clock>,
    engine: Engine,
    overrides: HashMap<Box<str>, Override>,
    allow: HashSet<Box<str>>,
    names: KeyNames,
    counts: Counts,
    policy_header: HeaderValue,
    reason: String,
    config: serde_json::Value,
    shadow_log: LogThrottle,
}

/// `limit` per `window` with `burst`, as a governor quota.
///
/// governor multiplies the emission interval by the burst in a `u64` of
/// nanoseconds. The config refuses a refill time past [`MAX_REFILL`]
/// (`check_refill`); the burst is also clamped to it here, so no quota this
/// builds can overflow that product whatever it is given.
fn quota(limit: u64, window: Duration, burst: Option<u32>) -> Quota {
    let period = (window / u32::try_from(limit).unwrap_or(u32::MAX)).max(Duration::from_nanos(1));
    let most = (nanos(MAX_REFILL) / nanos(period)).clamp(1, u64::from(u32::MAX)) as u32;
    let burst = burst
        .or_else(|| u32::try_from(limit).ok())
        .unwrap_or(u32::MAX)
        .min(most);
    Quota::with_period(period)
        .expect("period is at least 1ns")
        .allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN))
}

/// An override's burst: the policy's burst scaled by `override ÷ limit`, as
/// a VIP expects, so its bucket refills in the same time. The product is
/// formed in `u128`: a burst near `u32::MAX` times a limit near `u64::MAX`
/// overflows a `u64`.
fn scaled_burst(burst: u32, limit: u64, override_limit: u64) -> u32 {
    let scaled = u128::from(burst) * u128::from(override_limit) / u128::from(limit.max(1));
    scaled.clamp(1, u128::from(u32::MAX)) as u32
}

/// What one check found.
enum Check {
    /// `notable`: the key is new in its window, or has used half its limit
    /// or more. Its name is then recorded for the admin's top keys (while
    /// the names table has room; see `KeyNames`).
    Admit {
        notable: bool,
    },
    Refuse {
        retry_after: Duration,
    },
}

impl RateLimit {
    pub(crate) fn new(
        name: String,
        cfg: &RateLimitConfig,
        key: KeySpec,
        status: u16,
        config: serde_json::Value,
        env: &PolicyEnv<'_>,
        fleet: Option<Arc<Fleet>>,
    ) -> Self {
        let window = cfg.window.as_duration();
        let spec = WindowSpec::new(window, BUCKETS);
        let clock = env.clock.clone();
        // Global keys are named in Redis by a hash every instance agrees on.
        let hasher = fleet
            .as_ref()
            .map_or_else(KeyHasher::default, |f| f.hasher().clone());
        let engine = match (fleet, cfg.algorithm) {
            (Some(fleet), _) => Engine::Global {
                counter: GlobalCounter::new(name.clone(), window, cfg.max_keys, fleet),
            },
            (None, Algorithm::Gcra) => {
                let entries = Arc::new(KeyedStore::new(
                    cfg.max_keys,
                    GcraCx {
                        start: clock.now_nanos(),
                        spec,
                    },
                ));
                let limiter: KeyedGcra = RateLimiter::new(
                    quota(cfg.limit, window, cfg.burst),
                    GcraStore::new(entries.clone(), clock.clone()),
                    PolicyClock(clock.clone()),
                );
                Engine::Gcra { limiter, entries }
            }
            (None, Algorithm::SlidingWindow) => Engine::Window {
                entries: KeyedStore::new(cfg.max_keys, spec),
            },
        };
        let overrides = cfg
            .overrides
            .iter()
            .map(|o| {
                let gcra = (cfg.algorithm == Algorithm::Gcra).then(|| {
                    let burst = cfg.burst.map(|b| scaled_burst(b, cfg.limit, o.limit));
                    let direct: DirectGcra = RateLimiter::new(
                        quota(o.limit, window, burst),
                        InMemoryState::default(),
                        PolicyClock(clock.clone()),
                    );
                    direct
                });
                (
                    o.key.as_str().into(),
                    Override {
                        limit: o.limit,
                        gcra,
                    },
                )
            })
            .collect();
        let key_name = cfg.key.clone();
        Self {
            policy_header: policy_value(&name, cfg.limit, window),
            reason: format!(
                "rate limit of {} per {} exceeded for this {key_name}",
                cfg.limit,
                humantime::format_duration(window)
            ),
            name,
            key,
            hasher,
            limit: cfg.limit,
            window,
            spec,
            shadow: cfg.shadow,
            status,
            clock,
            engine,
            overrides,
            allow: cfg.allow.iter().map(|a| a.as_str().into()).collect(),
            names: KeyNames::new(4096),
            counts: Counts::default(),
            config,
            shadow_log: LogThrottle::new(1_000_000_000),
        }
    }

    fn check_window(entries: &KeyedStore<WindowEntry>, hash: u64, now: u64, limit: u64) -> Check {
        let spec = *entries.context();
        let tick = spec.tick(now);
        entries.with(hash, now, WindowEntry::default, |e| {
            let used = e.admitted.estimate_scaled_at(tick);
            if used + tick.scaled(1) <= tick.scaled(limit) {
                e.admitted.add_at(tick, 1);
                Check::Admit {
                    notable: used == 0 || used * 2 >= tick.scaled(limit),
                }
            } else {
                Check::Refuse {
                    retry_after: spec.until_next_bucket(now),
                }
            }
        })
    }

    fn gcra_check(
        &self,
        result: Result<
            governor::middleware::StateSnapshot,
            governor::NotUntil<governor::nanos::Nanos>,
        >,
        now: u64,
    ) -> Check {
        match result {
            Ok(snapshot) => {
                let (left, burst) = (
                    u64::from(snapshot.remaining_burst_capacity()),
                    u64::from(snapshot.quota().burst_size().get()),
                );
                Check::Admit {
                    notable: left + 1 == burst || left * 2 <= burst,
                }
            }
            Err(not_until) => Check::Refuse {
                retry_after: not_until.wait_time_from(governor::nanos::Nanos::from(now)),
            },
        }
    }

    fn check(&self, hash: u64, now: u64, rendered: Option<&str>) -> Check {
        let keyed = |limiter: &KeyedGcra| {
            self.gcra_check(deciding_at(now, || limiter.check_key(&hash)), now)
        };
        if let Some(o) = rendered.and_then(|r| self.overrides.get(r)) {
            return match (&o.gcra, &self.engine) {
                (Some(direct), _) => self.gcra_check(deciding_at(now, || direct.check()), now),
                (None, Engine::Window { entries }) => {
                    Self::check_window(entries, hash, now, o.limit)
                }
                (None, Engine::Global { counter }) => {
                    Self::check_global(counter, hash, now, o.limit)
                }
                // Not built that way; the keyed limit is the safe answer.
                (None, Engine::Gcra { limiter, .. }) => keyed(limiter),
            };
        }
        match &self.engine {
            Engine::Gcra { limiter, .. } => keyed(limiter),
            Engine::Window { entries } => Self::check_window(entries, hash, now, self.limit),
            Engine::Global { counter } => Self::check_global(counter, hash, now, self.limit),
        }
    }

    fn check_global(counter: &GlobalCounter, hash: u64, now: u64, limit: u64) -> Check {
        match counter.admit(hash, now, limit) {
            GlobalAdmit::Admit { fleet } => Check::Admit {
                notable: fleet == 0 || fleet * 2 >= limit,
            },
            GlobalAdmit::Refuse { retry_after } => Check::Refuse { retry_after },
        }
    }

    fn tracked(&self, hash: u64) -> bool {
        match &self.engine {
            Engine::Gcra { entries, .. } => entries.peek(hash, |_| ()).is_some(),
            Engine::Window { entries } => entries.peek(hash, |_| ()).is_some(),
            Engine::Global { counter } => counter.tracks(hash),
        }
    }

    fn note_name(&self, hash: u64, now: u64, req: &RequestView<'_>) {
        self.names
            .note(hash, now, || self.key.render(req.keys), |h| self.tracked(h));
    }
}

impl Policy for RateLimit {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "rate_limit"
    }

    fn on_request(&self, req: &RequestView<'_>, _exchange: &mut Exchange) -> Decision {
        let Some(hash) = self.hasher.hash_spec(&self.key, req.keys) else {
            return Decision::Continue;
        };
        let now = req.now_nanos;
        let rendered = if self.overrides.is_empty() && self.allow.is_empty() {
            None
        } else {
            self.key.render(req.keys)
        };
        if rendered.as_deref().is_some_and(|r| self.allow.contains(r)) {
            self.counts.admitted.fetch_add(1, Ordering::Relaxed);
            return Decision::Continue;
        }
        match self.check(hash, now, rendered.as_deref()) {
            Check::Admit { notable } => {
                self.counts.admitted.fetch_add(1, Ordering::Relaxed);
                if notable {
                    self.note_name(hash, now, req);
                }
                Decision::Continue
            }
            Check::Refuse { retry_after } => {
                self.note_name(hash, now, req);
                if self.shadow {
                    self.counts.shadow_rejected.fetch_add(1, Ordering::Relaxed);
                    if let Some(held_back) = self.shadow_log.admit(now) {
                        tracing::info!(
                            target: "breakwater::shadow",
                            policy = %self.name,
                            key = %self.names.name(hash),
                            held_back,
                            "shadow rate limit would have rejected"
                        );
                    }
                    return Decision::Continue;
                }
                self.counts.rejected.fetch_add(1, Ordering::Relaxed);
                Decision::Reject(Rejection {
                    headers: rejection_headers(&self.policy_header, &self.name, 0, retry_after),
                    ..Rejection::new(
                        RejectionKind::RateLimited,
                        self.status,
                        &self.name,
                        &self.reason,
                    )
                })
            }
        }
    }

    fn global(&self) -> Option<&dyn GlobalSync> {
        match &self.engine {
            Engine::Global { .. } => Some(self),
            _ => None,
        }
    }

    fn limit_report(&self, top: usize) -> Option<LimitReport> {
        let now = self.clock.now_nanos();
        let (stats, hot) = match &self.engine {
            Engine::Gcra { entries, .. } => (
                entries.stats(),
                hottest(entries, top, &self.spec, now, |e| &e.admitted),
            ),
            Engine::Window { entries } => (
                entries.stats(),
                hottest(entries, top, &self.spec, now, |e| &e.admitted),
            ),
            Engine::Global { counter } => (counter.stats(), counter.local_rates(top, now)),
        };
        let top_keys = TopKey::list(hot, &self.names, self.window);
        Some(LimitReport {
            name: self.name.clone(),
            kind: "rate_limit",
            config: self.config.clone(),
            tracked_keys: stats.tracked,
            max_keys: stats.max_keys,
            evictions: stats.evictions,
            counts: LimitCounts {
                admitted: self.counts.admitted.load(Ordering::Relaxed),
                rejected: self.counts.rejected.load(Ordering::Relaxed),
                shadow_rejected: self.counts.shadow_rejected.load(Ordering::Relaxed),
            },
            top_keys,
            in_flight: None,
            queued: None,
        })
    }
}

/// A global limit's counts travel with the fleet; local engines have none.
impl GlobalSync for RateLimit {
    fn collect(&self, now: u64, max_items: usize) -> Section {
        match &self.engine {
            Engine::Global { counter } => counter.collect(now, max_items),
            _ => Section::empty(&self.name),
        }
    }

    fn apply(&self, section: &Section, reply: &SectionReply, now: u64) {
        if let Engine::Global { counter } = &self.engine {
            counter.apply(section, reply, now);
        }
    }

    fn abandon(&self, section: &Section) {
        if let Engine::Global { counter } = &self.engine {
            counter.abandon(section);
        }
    }
}

#[cfg(test)]
mod arithmetic_tests {
    use super::*;
    use crate::FakeClock;

    #[test]
    fn override_bursts_scale_in_u128() {
        assert_eq!(scaled_burst(20, 100, 1000), 200);
        assert_eq!(scaled_burst(u32::MAX, 1, u64::MAX), u32::MAX);
        assert_eq!(scaled_burst(1, u64::MAX, 1), 1);
    }

    /// governor multiplies interval × burst in a u64: every quota `quota`
    /// builds, even from values the config refuses, stays within it.
    #[test]
    fn quotas_never_overflow_governor() {
        let clock: Arc<dyn Clock> = Arc::new(FakeClock::new());
        for (limit, window, burst) in [
            (1, crate::bounds::MAX_DURATION, Some(u32::MAX)),
            (1, Duration::from_secs(30 * 24 * 3600), Some(1_000_000_000)),
            (u64::MAX, Duration::from_millis(1), None),
            (u64::MAX, crate::bounds::MAX_DURATION, Some(u32::MAX)),
        ] {
            let q = quota(limit, window, burst);
            let direct: DirectGcra =
                RateLimiter::new(q, InMemoryState::default(), PolicyClock(clock.clone()));
            assert!(
                direct.check().is_ok(),
                "{limit} per {window:?}, burst {burst:?}"
            );
        }
    }
}
