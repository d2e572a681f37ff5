//! The policy: lead, join or refuse.

use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};

use super::config::OnDuplicate;
use super::fingerprint::fingerprint;
use super::keys_in_flight::{Claim, KeysInFlight};
use crate::flight::{Flights, Joiner, Role};
use crate::{
    Decision, Exchange, Policy, Rejection, RejectionKind, RequestBody, RequestView, WaitOutcome,
};

pub struct Dedupe {
    name: String,
    header: HeaderName,
    on_duplicate: OnDuplicate,
    wait: Duration,
    /// Seeds the request fingerprint; drawn at compile time, never shown.
    seed: u64,
    /// `join`: the calls in flight, by request fingerprint.
    flights: Flights<u128>,
    /// `reject`: the keys in flight, with the request that holds each.
    keys: Arc<KeysInFlight>,
    counts: Arc<Counters>,
}

/// What `dedupe` did with the requests that carried its header.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DedupeCounts {
    /// Got another request's answer (the same request, in flight).
    pub joined: u64,
    /// Refused with 409: the same request in flight, or the key reused by a
    /// different request (`reject`).
    pub refused: u64,
    /// Not deduplicated because the in-flight table was full.
    pub untracked: u64,
    /// Not deduplicated because the body could not be read ahead (too large,
    /// or of unknown length).
    pub unhashable: u64,
}

#[derive(Default)]
struct Counters {
    joined: AtomicU64,
    refused: AtomicU64,
    untracked: AtomicU64,
    unhashable: AtomicU64,
}

/// 409 answers are ALREADY_EXISTS to a gRPC caller, others UNAVAILABLE.
fn refusal(name: &str, status: u16, kind: RejectionKind, reason: String) -> Rejection {
    Rejection::new(kind, status, name, reason)
}

impl Dedupe {
    pub(super) fn new(
        name: String,
        header: HeaderName,
        on_duplicate: OnDuplicate,
        wait: Duration,
        max_in_flight: usize,
        max_body: usize,
    ) -> Self {
        Self {
            name,
            header,
            on_duplicate,
            wait,
            // std's RandomState is keyed from the OS's randomness.
            seed: RandomState::new().hash_one(0x6465_6475_7065_u64),
            flights: Flights::new(max_in_flight, max_body),
            keys: KeysInFlight::new(max_in_flight),
            counts: Arc::default(),
        }
    }

    pub fn in_flight(&self) -> usize {
        match self.on_duplicate {
            OnDuplicate::Join => self.flights.in_flight(),
            OnDuplicate::Reject => self.keys.len(),
        }
    }

    /// Requests that got another request's answer.
    pub fn joined(&self) -> u64 {
        self.counts.joined.load(Ordering::Relaxed)
    }

    pub fn counts(&self) -> DedupeCounts {
        let c = &self.counts;
        DedupeCounts {
            joined: c.joined.load(Ordering::Relaxed),
            refused: c.refused.load(Ordering::Relaxed),
            untracked: c.untracked.load(Ordering::Relaxed),
            unhashable: c.unhashable.load(Ordering::Relaxed),
        }
    }

    /// The idempotency key, if the request carries a usable one.
    fn key<'r>(&self, headers: &'r HeaderMap) -> Option<&'r HeaderValue> {
        headers.get(&self.header).filter(|v| !v.is_empty())
    }

    fn lead_or_join(&self, fingerprint: u128, exchange: &mut Exchange) -> Decision {
        match self.flights.begin(fingerprint, || None) {
            Role::Lead(tap) => {
                exchange.hold(tap);
                Decision::Continue
            }
            Role::Join(joiner) => self.join(joiner),
            Role::Untracked => {
                self.counts.untracked.fetch_add(1, Ordering::Relaxed);
                Decision::Continue
            }
        }
    }

    fn claim_or_refuse(
        &self,
        key: &HeaderValue,
        fingerprint: u128,
        exchange: &mut Exchange,
    ) -> Decision {
        let refuse = |kind, reason: &str| {
            self.counts.refused.fetch_add(1, Ordering::Relaxed);
            Decision::Reject(refusal(&self.name, 409, kind, reason.into()))
        };
        match self.keys.claim(key, fingerprint) {
            Claim::Held(hold) => {
                exchange.hold(hold);
                Decision::Continue
            }
            Claim::SameRequest => refuse(
                RejectionKind::Duplicate,
                "the same request, with this idempotency key, is already in flight",
            ),
            Claim::OtherRequest => refuse(
                RejectionKind::IdempotencyKeyReused,
                "this idempotency key is in use by a different request in flight \
                 (another route, method, path, query, caller or body)",
            ),
            Claim::Full => {
                self.counts.untracked.fetch_add(1, Ordering::Relaxed);
                Decision::Continue
            }
        }
    }
}

impl Policy for Dedupe {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "dedupe"
    }

    /// Only requests with the key: the others are not deduplicated, so
    /// their bodies stream upstream untouched.
    fn wants_body(&self, headers: &HeaderMap) -> bool {
        self.key(headers).is_some()
    }

    fn on_request(&self, req: &RequestView<'_>, exchange: &mut Exchange) -> Decision {
        let Some(key) = self.key(req.headers) else {
            return Decision::Continue;
        };
        let RequestBody::Whole(body) = req.body else {
            // Without the body it cannot tell the same request from another.
            self.counts.unhashable.fetch_add(1, Ordering::Relaxed);
            return Decision::Continue;
        };
        let fingerprint = fingerprint(self.seed, key, req, body);
        match self.on_duplicate {
            OnDuplicate::Join => self.lead_or_join(fingerprint, exchange),
            OnDuplicate::Reject => self.claim_or_refuse(key, fingerprint, exchange),
        }
    }
}

impl Dedupe {
    fn join(&self, joiner: Joiner) -> Decision {
        let (name, wait, counts) = (self.name.clone(), self.wait, self.counts.clone());
        Decision::Wait(Box::pin(async move {
            match joiner.wait(wait).await {
                Ok(resp) => {
                    counts.joined.fetch_add(1, Ordering::Relaxed);
                    let mut resp = (*resp).clone();
                    resp.headers.push((
                        HeaderName::from_static("x-breakwater-joined"),
                        HeaderValue::from_static("1"),
                    ));
                    WaitOutcome::Respond(resp)
                }
                Err(why) => WaitOutcome::Reject(refusal(
                    &name,
                    503,
                    RejectionKind::DuplicateFailed,
                    format!("joined the same request in flight, but {why}"),
                )),
            }
        }))
    }
}
