//! `concurrency_limit`: a bulkhead on requests in flight.
//!
//! A request takes a slot before it goes upstream and holds it until the
//! exchange ends, whatever the ending: the slot is a [`Guard`] whose
//! drop returns it, so success, upstream error, timeout and a client that
//! hangs up all release it. When every slot is taken, the request waits in a
//! bounded FIFO queue for at most `queue.timeout`, or is refused at once with
//! 503 when there is no queue or it is full. This is the fix the seed's Dubbo
//! incident calls for: cap concurrency near what the provider can serve, so
//! excess load is shed at the gateway instead of piling up in the provider's
//! thread pool.
//!
//! With `scope: cluster`, every route that uses the cluster shares one limit.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::bounds::{in_range, MAX_SLOTS};
use crate::duration::HumanDuration;
use crate::rate_limit::config_checks::check_status;
use crate::report::{LimitCounts, LimitReport};
use crate::{
    ConfigError, Decision, Exchange, Guard, Policy, Rejection, RejectionKind, RequestView,
    WaitOutcome,
};

/// `concurrency_limit:` in a route's `policies`.
///
/// ```yaml
/// - concurrency_limit:
///     max: 50                          # requests in flight
///     scope: route                     # or cluster: shared by all routes to the cluster
///     queue: { max: 100, timeout: 50ms }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConcurrencyConfig {
    #[serde(default)]
    pub name: Option<String>,
    pub max: u32,
    #[serde(default)]
    pub scope: Scope,
    #[serde(default)]
    pub queue: Option<QueueConfig>,
    #[serde(default)]
    pub status: Option<u16>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    #[default]
    Route,
    Cluster,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    pub max: u32,
    pub timeout: HumanDuration,
}

pub struct ConcurrencyLimit {
    name: String,
    slots: Arc<Semaphore>,
    max: u32,
    queue: Option<(u64, Duration)>,
    waiting: Arc<AtomicU64>,
    status: u16,
    admitted: Arc<AtomicU64>,
    rejected: Arc<AtomicU64>,
    config: serde_json::Value,
}

impl ConcurrencyConfig {
    pub fn compile(&self, name: String, path: &str) -> Result<ConcurrencyLimit, ConfigError> {
        // Well under tokio's `Semaphore::MAX_PERMITS` on every platform.
        in_range(u64::from(self.max), 1..=MAX_SLOTS, format!("{path}.max"))?;
        let queue = match &self.queue {
            None => None,
            Some(q) => {
                in_range(u64::from(q.max), 1..=MAX_SLOTS, format!("{path}.queue.max"))?;
                let t = q.timeout.as_duration();
                if t.is_zero() || t > Duration::from_secs(60) {
                    return Err(ConfigError::new(
                        format!("{path}.queue.timeout"),
                        "must be between 1ms and 60s",
                    ));
                }
                Some((u64::from(q.max), t))
            }
        };
        Ok(ConcurrencyLimit {
            name,
            slots: Arc::new(Semaphore::new(self.max as usize)),
            max: self.max,
            queue,
            waiting: Arc::new(AtomicU64::new(0)),
            status: check_status(self.status, 503, path)?,
            admitted: Arc::new(AtomicU64::new(0)),
            rejected: Arc::new(AtomicU64::new(0)),
            config: serde_json::to_value(self).unwrap_or_default(),
        })
    }
}

/// A held slot. Dropping it, on any path, frees the slot.
struct Slot {
    _permit: OwnedSemaphorePermit,
}

/// Dropping it frees the slot, however the request ended.
impl Guard for Slot {}

/// Counts a waiter while its future lives, including when it is dropped.
struct Waiting(Arc<AtomicU64>);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn overloaded(name: &str, status: u16, reason: String) -> Rejection {
    Rejection::new(RejectionKind::Overloaded, status, name, reason).with_header(
        http::header::RETRY_AFTER,
        http::HeaderValue::from_static("1"),
    )
}

impl ConcurrencyLimit {
    pub fn in_flight(&self) -> u64 {
        u64::from(self.max) - self.slots.available_permits() as u64
    }

    pub fn queued(&self) -> u64 {
        self.waiting.load(Ordering::Acquire)
    }
}

impl Policy for ConcurrencyLimit {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "concurrency_limit"
    }

    fn on_request(&self, _req: &RequestView<'_>, exchange: &mut Exchange) -> Decision {
        if let Ok(p) = self.slots.clone().try_acquire_owned() {
            self.admitted.fetch_add(1, Ordering::Relaxed);
            exchange.hold(Box::new(Slot { _permit: p }));
            return Decision::Continue;
        }
        let Some((queue_max, timeout)) = self.queue else {
            self.rejected.fetch_add(1, Ordering::Relaxed);
            return Decision::Reject(overloaded(
                &self.name,
                self.status,
                format!("concurrency limit of {} reached", self.max),
            ));
        };
        // Join the queue if there is room (the count is the queue's length).
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= queue_max {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            self.rejected.fetch_add(1, Ordering::Relaxed);
            return Decision::Reject(overloaded(
                &self.name,
                self.status,
                format!(
                    "concurrency limit of {} reached and {queue_max} requests already queued",
                    self.max
                ),
            ));
        }
        let waiting = Waiting(self.waiting.clone());
        let slots = self.slots.clone();
        let (name, status, max) = (self.name.clone(), self.status, self.max);
        let (admitted, rejected) = (self.admitted.clone(), self.rejected.clone());
        Decision::Wait(Box::pin(async move {
            let _waiting = waiting;
            match tokio::time::timeout(timeout, slots.acquire_owned()).await {
                Ok(Ok(p)) => {
                    admitted.fetch_add(1, Ordering::Relaxed);
                    WaitOutcome::Admit(Some(Box::new(Slot { _permit: p })))
                }
                _ => {
                    rejected.fetch_add(1, Ordering::Relaxed);
                    WaitOutcome::Reject(overloaded(
                        &name,
                        status,
                        format!(
                            "concurrency limit of {max} reached; no slot freed within {}",
                            humantime::format_duration(timeout)
                        ),
                    ))
                }
            }
        }))
    }

    fn limit_report(&self, _top: usize) -> Option<LimitReport> {
        Some(LimitReport {
            name: self.name.clone(),
            kind: "concurrency_limit",
            config: self.config.clone(),
            tracked_keys: 0,
            max_keys: 0,
            evictions: 0,
            counts: LimitCounts {
                admitted: self.admitted.load(Ordering::Relaxed),
                rejected: self.rejected.load(Ordering::Relaxed),
                shadow_rejected: 0,
            },
            top_keys: Vec::new(),
            in_flight: Some(self.in_flight()),
            queued: Some(self.queued()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{keys, Env};

    fn limit(yaml: &str) -> ConcurrencyLimit {
        let cfg: ConcurrencyConfig = serde_yaml::from_str(yaml).unwrap();
        cfg.compile("bulkhead".into(), "p").unwrap()
    }

    #[test]
    fn holds_at_max_and_releases_on_drop() {
        let env = Env::new();
        let p = limit("{ max: 2 }");
        let k = keys("10.0.0.1", None);
        let (a, pa) = env.decide(&p, &k);
        let (b, pb) = env.decide(&p, &k);
        assert!(matches!(a, Decision::Continue) && matches!(b, Decision::Continue));
        match env.decide(&p, &k).0 {
            Decision::Reject(r) => {
                assert_eq!(r.status, 503);
                assert_eq!(r.grpc_status, 14);
                assert_eq!(r.kind, "overloaded");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(p.in_flight(), 2);
        // One completes, one is abandoned: both free their slot.
        let mut pa = pa;
        pa.complete(&crate::Outcome::default());
        drop(pb);
        assert_eq!(p.in_flight(), 0);
        assert!(matches!(env.decide(&p, &k).0, Decision::Continue));
    }

    #[tokio::test(start_paused = true)]
    async fn queue_waits_for_a_slot_or_times_out() {
        let env = Env::new();
        let p = limit("{ max: 1, queue: { max: 1, timeout: 50ms } }");
        let k = keys("10.0.0.1", None);
        let (_, held) = env.decide(&p, &k);
        let Decision::Wait(waiter) = env.decide(&p, &k).0 else {
            panic!("expected to queue")
        };
        assert_eq!(p.queued(), 1);
        // The queue holds one: the next is refused at once.
        assert!(matches!(env.decide(&p, &k).0, Decision::Reject(_)));
        // A slot frees within the timeout: the waiter gets it.
        let release = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            drop(held);
        });
        let WaitOutcome::Admit(Some(slot)) = waiter.await else {
            panic!("expected a slot")
        };
        release.await.unwrap();
        assert_eq!(p.queued(), 0);
        assert_eq!(p.in_flight(), 1);
        // Nobody releases now: the next waiter times out.
        let Decision::Wait(waiter) = env.decide(&p, &k).0 else {
            panic!("expected to queue")
        };
        let WaitOutcome::Reject(r) = waiter.await else {
            panic!("expected a timeout")
        };
        assert!(r.reason.contains("within 50ms"), "{}", r.reason);
        drop(slot);
        assert_eq!(p.in_flight(), 0);
        let report = p.limit_report(0).unwrap();
        assert_eq!((report.counts.admitted, report.counts.rejected), (2, 2));
    }

    #[tokio::test(start_paused = true)]
    async fn an_abandoned_waiter_leaves_the_queue() {
        let env = Env::new();
        let p = limit("{ max: 1, queue: { max: 5, timeout: 1s } }");
        let k = keys("10.0.0.1", None);
        let (_, _held) = env.decide(&p, &k);
        let Decision::Wait(waiter) = env.decide(&p, &k).0 else {
            panic!("expected to queue")
        };
        assert_eq!(p.queued(), 1);
        drop(waiter);
        assert_eq!(p.queued(), 0);
    }

    #[test]
    fn config_errors() {
        for (yaml, path) in [
            ("{ max: 0 }", "p.max"),
            ("{ max: 4294967295 }", "p.max"),
            (
                "{ max: 1, queue: { max: 4294967295, timeout: 1s } }",
                "p.queue.max",
            ),
            ("{ max: 1, queue: { max: 0, timeout: 1s } }", "p.queue.max"),
            (
                "{ max: 1, queue: { max: 1, timeout: 0s } }",
                "p.queue.timeout",
            ),
        ] {
            let cfg: ConcurrencyConfig = serde_yaml::from_str(yaml).unwrap();
            assert_eq!(cfg.compile("n".into(), "p").err().unwrap().path, path);
        }
    }
}
