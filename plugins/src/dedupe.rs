//! `dedupe`: one upstream call per idempotency key in flight.
//!
//! The seed incident's amplifier was the consumer itself: a Dubbo client that
//! times out sends the same call again while the first is still running, so a
//! slow provider gets each call two or three times. When requests carry an
//! idempotency key (`Idempotency-Key`, or `X-Request-Id` kept across client
//! retries), the gateway can stop that: the first request with a key is the
//! **leader** and goes upstream; a duplicate that arrives while the leader is
//! in flight either **joins** it — it waits and gets a copy of the leader's
//! response — or is refused at once with 409 (`on_duplicate: reject`).
//!
//! Limits, by design:
//! - Only duplicates that overlap the leader are caught; once the leader's
//!   response is complete, the key is forgotten.
//! - A response larger than `max_body` is not shared: joiners get 503.
//! - If the leader fails (upstream error, client gone), joiners get 503
//!   rather than a second upstream call — a retry storm is what this prevents.
//! - The in-flight table holds at most `max_in_flight` keys; past that, new
//!   keys are not deduplicated (and counted).

use std::any::Any;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};

use crate::bounds::{in_range, MAX_SLOTS};
use crate::duration::HumanDuration;
use crate::flight::{Flights, Joiner, Role};
use crate::store::KeyHasher;
use crate::{ConfigError, Decision, Permits, Policy, Rejection, RequestView, WaitOutcome};

/// `dedupe:` in a route's `policies`.
///
/// ```yaml
/// - dedupe:
///     header: idempotency-key
///     on_duplicate: join        # or reject (409)
///     wait: 10s                 # how long a joiner waits for the leader
///     max_body: 1MiB            # largest response shared (bytes)
///     max_in_flight: 10000
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DedupeConfig {
    #[serde(default)]
    pub name: Option<String>,
    pub header: String,
    #[serde(default)]
    pub on_duplicate: OnDuplicate,
    #[serde(default = "default_wait")]
    pub wait: HumanDuration,
    #[serde(default = "default_max_body")]
    pub max_body: usize,
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnDuplicate {
    #[default]
    Join,
    Reject,
}

/// The largest response a leader buffers to share (64 MiB).
const MAX_SHARED_BODY: u64 = 64 << 20;

fn default_wait() -> HumanDuration {
    Duration::from_secs(10).into()
}
fn default_max_body() -> usize {
    1 << 20
}
fn default_max_in_flight() -> usize {
    10_000
}

pub struct Dedupe {
    name: String,
    header: HeaderName,
    on_duplicate: OnDuplicate,
    wait: Duration,
    hasher: KeyHasher,
    flights: Flights,
    joined: Arc<AtomicU64>,
    refused: Arc<AtomicU64>,
    untracked: AtomicU64,
}

impl DedupeConfig {
    pub fn compile(&self, name: String, path: &str) -> Result<Dedupe, ConfigError> {
        let header = HeaderName::from_bytes(self.header.as_bytes()).map_err(|_| {
            ConfigError::new(
                format!("{path}.header"),
                format!("\"{}\" is not a valid header name", self.header),
            )
        })?;
        let wait = self.wait.as_duration();
        if wait.is_zero() || wait > Duration::from_secs(300) {
            return Err(ConfigError::new(
                format!("{path}.wait"),
                "must be between 1ms and 5m",
            ));
        }
        in_range(
            self.max_in_flight as u64,
            1..=MAX_SLOTS,
            format!("{path}.max_in_flight"),
        )?;
        // Each leader may buffer this much for its joiners.
        in_range(
            self.max_body as u64,
            0..=MAX_SHARED_BODY,
            format!("{path}.max_body"),
        )?;
        Ok(Dedupe {
            name,
            header,
            on_duplicate: self.on_duplicate,
            wait,
            hasher: KeyHasher::default(),
            flights: Flights::new(self.max_in_flight, self.max_body),
            joined: Arc::new(AtomicU64::new(0)),
            refused: Arc::new(AtomicU64::new(0)),
            untracked: AtomicU64::new(0),
        })
    }
}

fn duplicate(name: &str, status: u16, kind: &'static str, reason: String) -> Rejection {
    Rejection {
        status,
        grpc_status: if status == 409 { 6 } else { 14 }, // ALREADY_EXISTS / UNAVAILABLE
        kind,
        policy: name.to_string(),
        reason,
        headers: Vec::new(),
    }
}

impl Dedupe {
    pub fn in_flight(&self) -> usize {
        self.flights.in_flight()
    }

    /// Requests that got another request's answer.
    pub fn joined(&self) -> u64 {
        self.joined.load(Ordering::Relaxed)
    }
}

impl Policy for Dedupe {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "dedupe"
    }

    fn on_request(&self, req: &RequestView<'_>, permits: &mut Permits) -> Decision {
        let Some(value) = req.headers.get(&self.header).filter(|v| !v.is_empty()) else {
            return Decision::Continue;
        };
        let key = self.hasher.hash_bytes(value.as_bytes());
        if self.on_duplicate == OnDuplicate::Reject && self.flights.is_in_flight(key) {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return Decision::Reject(duplicate(
                &self.name,
                409,
                "duplicate",
                "a request with this idempotency key is already in flight".into(),
            ));
        }
        match self.flights.begin(key, || None) {
            Role::Lead(tap) => {
                permits.tap(tap);
                Decision::Continue
            }
            Role::Join(joiner) => self.join(joiner),
            Role::Untracked => {
                self.untracked.fetch_add(1, Ordering::Relaxed);
                Decision::Continue
            }
        }
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl Dedupe {
    fn join(&self, joiner: Joiner) -> Decision {
        let (name, wait, joined) = (self.name.clone(), self.wait, self.joined.clone());
        Decision::Wait(Box::pin(async move {
            match joiner.wait(wait).await {
                Ok(resp) => {
                    joined.fetch_add(1, Ordering::Relaxed);
                    let mut resp = (*resp).clone();
                    resp.headers.push((
                        HeaderName::from_static("x-breakwater-joined"),
                        HeaderValue::from_static("1"),
                    ));
                    WaitOutcome::Respond(resp)
                }
                Err(why) => WaitOutcome::Reject(duplicate(
                    &name,
                    503,
                    "duplicate_failed",
                    format!("joined a request with the same idempotency key, but {why}"),
                )),
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::keys;
    use http::{HeaderMap, Method};

    fn dedupe(yaml: &str) -> Dedupe {
        let cfg: DedupeConfig = serde_yaml::from_str(yaml).unwrap();
        cfg.compile("orders.dedupe".into(), "p").unwrap()
    }

    fn request(p: &Dedupe, key: Option<&str>) -> (Decision, Permits) {
        let mut headers = HeaderMap::new();
        if let Some(k) = key {
            headers.insert("idempotency-key", HeaderValue::from_str(k).unwrap());
        }
        let k = keys("10.0.0.1", None);
        let view = RequestView {
            method: &Method::POST,
            path: "/pay",
            query: None,
            headers: &headers,
            keys: &k,
            grpc: false,
            now_nanos: 0,
        };
        let mut permits = Permits::default();
        let d = p.on_request(&view, &mut permits);
        (d, permits)
    }

    fn respond(permits: &mut Permits, body: &[u8]) {
        let mut h = HeaderMap::new();
        h.insert("content-type", HeaderValue::from_static("application/json"));
        h.insert("x-request-id", HeaderValue::from_static("leader"));
        permits.tap_header(201, &h);
        let (a, b) = body.split_at(body.len() / 2);
        permits.tap_body(a, false);
        permits.tap_body(b, true);
    }

    #[tokio::test]
    async fn duplicates_join_the_leader_and_get_its_answer() {
        let p = dedupe("{ header: idempotency-key }");
        let (lead, mut leader) = request(&p, Some("k1"));
        assert!(matches!(lead, Decision::Continue));
        assert!(leader.has_taps());
        let Decision::Wait(w1) = request(&p, Some("k1")).0 else {
            panic!("expected to join")
        };
        let Decision::Wait(w2) = request(&p, Some("k1")).0 else {
            panic!("expected to join")
        };
        // Another key, or no key, is its own call.
        assert!(matches!(request(&p, Some("k2")).0, Decision::Continue));
        assert!(matches!(request(&p, None).0, Decision::Continue));
        respond(&mut leader, b"{\"paid\":true}");
        for w in [w1, w2] {
            let WaitOutcome::Respond(r) = w.await else {
                panic!("expected the shared answer")
            };
            assert_eq!(r.status, 201);
            assert_eq!(&r.body[..], b"{\"paid\":true}");
            assert!(r.headers.iter().any(|(n, _)| n == "x-breakwater-joined"));
            assert!(!r.headers.iter().any(|(n, _)| n == "x-request-id"));
        }
        assert_eq!(p.joined(), 2);
        // Completed: the key is free again.
        assert!(matches!(request(&p, Some("k1")).0, Decision::Continue));
    }

    #[tokio::test]
    async fn a_failed_leader_fails_its_joiners_instead_of_calling_again() {
        let p = dedupe("{ header: idempotency-key }");
        let (_, leader) = request(&p, Some("k"));
        let Decision::Wait(w) = request(&p, Some("k")).0 else {
            panic!("expected to join")
        };
        drop(leader); // upstream error or client gone
        let WaitOutcome::Reject(r) = w.await else {
            panic!("expected a refusal")
        };
        assert_eq!(r.status, 503);
        assert!(r.reason.contains("original request failed"), "{}", r.reason);
        assert_eq!(p.in_flight(), 0);
    }

    #[tokio::test]
    async fn reject_mode_and_oversized_responses() {
        let p = dedupe("{ header: idempotency-key, on_duplicate: reject }");
        let (_, _leader) = request(&p, Some("k"));
        match request(&p, Some("k")).0 {
            Decision::Reject(r) => assert_eq!(r.status, 409),
            other => panic!("{other:?}"),
        }
        let p = dedupe("{ header: idempotency-key, max_body: 4 }");
        let (_, mut leader) = request(&p, Some("k"));
        let Decision::Wait(w) = request(&p, Some("k")).0 else {
            panic!("expected to join")
        };
        respond(&mut leader, b"far too long");
        let WaitOutcome::Reject(r) = w.await else {
            panic!("expected a refusal")
        };
        assert!(r.reason.contains("too large"), "{}", r.reason);
    }

    #[test]
    fn the_table_is_bounded() {
        let p = dedupe("{ header: idempotency-key, max_in_flight: 2 }");
        let _a = request(&p, Some("a"));
        let _b = request(&p, Some("b"));
        let (d, permits) = request(&p, Some("c"));
        assert!(matches!(d, Decision::Continue));
        assert!(!permits.has_taps(), "past the bound, keys are not tracked");
        assert_eq!(p.in_flight(), 2);
    }

    #[test]
    fn sizes_past_their_bounds_are_config_errors() {
        for (yaml, path) in [
            ("{ header: k, max_in_flight: 0 }", "p.max_in_flight"),
            (
                "{ header: k, max_in_flight: 18446744073709551615 }",
                "p.max_in_flight",
            ),
            (
                "{ header: k, max_body: 18446744073709551615 }",
                "p.max_body",
            ),
        ] {
            let cfg: DedupeConfig = serde_yaml::from_str(yaml).unwrap();
            let err = cfg.compile("n".into(), "p").err().expect(yaml);
            assert_eq!(err.path, path, "{yaml}: {err}");
        }
    }
}
