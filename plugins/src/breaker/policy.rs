//! The `circuit_breaker` policy: one breaker for the cluster, or one per
//! endpoint for outlier ejection.
//!
//! With `scope: cluster`, the policy fails requests fast (503, or gRPC 14, or
//! the static `fallback`) while the breaker is open, and lets probes through
//! when half-open. With `scope: endpoint`, it answers nothing itself: the
//! gateway asks it, while choosing an endpoint, which endpoints may take a
//! call ([`CircuitBreaker::admit_endpoint`]), so a sick endpoint is skipped
//! while the others keep serving — but never more than
//! `max_ejection_percent` of them; past that the gateway routes to all of
//! them (panic routing), because sending traffic to a sick endpoint beats
//! sending it nowhere.

use std::net::SocketAddr;
use std::sync::Arc;

use http::{HeaderName, HeaderValue};

use super::config::{BreakerConfig, BreakerScope};
use super::machine::{Breaker, BreakerPermit, BreakerState, Ticket};
use crate::{
    ConfigError, Decision, Exchange, LocalResponse, Policy, PolicyEnv, Rejection, RejectionKind,
    RequestView,
};

pub const BREAKER_HEADER: HeaderName = HeaderName::from_static("x-breakwater-breaker");

pub struct CircuitBreaker {
    name: String,
    scope: BreakerScope,
    cluster: Option<Arc<Breaker>>,
    endpoints: Vec<(SocketAddr, Arc<Breaker>)>,
    max_ejection_percent: u32,
    fallback: Option<LocalResponse>,
    status: u16,
}

impl BreakerConfig {
    pub fn compile(
        &self,
        name: String,
        path: &str,
        env: &PolicyEnv<'_>,
    ) -> Result<CircuitBreaker, ConfigError> {
        let c = self.validate(path)?;
        let make = |breaker_name: String, scope: String| {
            Arc::new(Breaker::new(
                breaker_name,
                scope,
                c.rules.clone(),
                c.classifier.clone(),
                c.recovery.clone(),
                c.window,
                env.clock.clone(),
            ))
        };
        let (cluster, endpoints) = match self.scope {
            BreakerScope::Cluster => (
                Some(make(name.clone(), format!("cluster:{}", env.cluster))),
                Vec::new(),
            ),
            BreakerScope::Endpoint => {
                let mut eps: Vec<(SocketAddr, Arc<Breaker>)> = env
                    .cluster_endpoints
                    .iter()
                    .map(|a| {
                        (
                            *a,
                            make(
                                format!("{name}/{a}"),
                                format!("endpoint:{}/{a}", env.cluster),
                            ),
                        )
                    })
                    .collect();
                eps.sort_by_key(|(a, _)| *a);
                (None, eps)
            }
        };
        let fallback = self.fallback.as_ref().map(|f| LocalResponse {
            trailers: None,
            status: f.status,
            headers: vec![
                (
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_str(&f.content_type)
                        .unwrap_or(HeaderValue::from_static("text/plain")),
                ),
                (
                    BREAKER_HEADER,
                    HeaderValue::from_str(&name).unwrap_or(HeaderValue::from_static("breaker")),
                ),
                (
                    HeaderName::from_static("x-breakwater-fallback"),
                    HeaderValue::from_static("1"),
                ),
            ],
            body: bytes::Bytes::from(f.body.clone()),
        });
        Ok(CircuitBreaker {
            name,
            scope: self.scope,
            cluster,
            endpoints,
            max_ejection_percent: self.max_ejection_percent,
            fallback,
            status: c.status,
        })
    }
}

impl CircuitBreaker {
    /// Every breaker this policy holds (one, or one per endpoint).
    pub fn breakers(&self) -> Vec<Arc<Breaker>> {
        self.cluster
            .iter()
            .cloned()
            .chain(self.endpoints.iter().map(|(_, b)| b.clone()))
            .collect()
    }

    pub fn is_endpoint_scoped(&self) -> bool {
        self.scope == BreakerScope::Endpoint
    }

    fn endpoint(&self, addr: SocketAddr) -> Option<&Arc<Breaker>> {
        self.endpoints
            .binary_search_by_key(&addr, |(a, _)| *a)
            .ok()
            .map(|i| &self.endpoints[i].1)
    }

    /// Whether skipping open endpoints is allowed now: false once the open
    /// share exceeds `max_ejection_percent` (then route to all: panic mode).
    pub fn ejection_allowed(&self) -> bool {
        if self.endpoints.is_empty() {
            return false;
        }
        let open = self
            .endpoints
            .iter()
            .filter(|(_, b)| b.state() == BreakerState::Open)
            .count();
        open * 100 <= self.max_ejection_percent as usize * self.endpoints.len()
    }

    /// Asks the endpoint's breaker for a call. `None`: skip this endpoint.
    pub fn admit_endpoint(&self, addr: SocketAddr) -> Option<BreakerPermit> {
        let breaker = self.endpoint(addr)?;
        breaker
            .acquire()
            .ok()
            .map(|t| BreakerPermit::new(breaker.clone(), t))
    }

    /// A permit that records the call without asking (panic routing).
    pub fn observe_endpoint(&self, addr: SocketAddr) -> Option<BreakerPermit> {
        let breaker = self.endpoint(addr)?;
        (breaker.state() == BreakerState::Closed)
            .then(|| BreakerPermit::new(breaker.clone(), Ticket::Normal))
    }
}

impl Policy for CircuitBreaker {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "circuit_breaker"
    }

    fn on_request(&self, _req: &RequestView<'_>, exchange: &mut Exchange) -> Decision {
        let Some(breaker) = &self.cluster else {
            return Decision::Continue;
        };
        match breaker.acquire() {
            Ok(ticket) => {
                exchange.hold(Box::new(BreakerPermit::new(breaker.clone(), ticket)));
                Decision::Continue
            }
            Err(retry_after) => {
                if let Some(f) = &self.fallback {
                    return Decision::Respond(f.clone());
                }
                let secs = retry_after.as_nanos().div_ceil(1_000_000_000).max(1) as u64;
                let reason = format!(
                    "circuit breaker {} is {}: {}",
                    self.name,
                    breaker.state().as_str().replace('_', "-"),
                    breaker.snapshot().last_reason
                );
                Decision::Reject(
                    Rejection::new(RejectionKind::CircuitOpen, self.status, &self.name, reason)
                        .with_header(http::header::RETRY_AFTER, HeaderValue::from(secs))
                        .with_header(
                            BREAKER_HEADER,
                            HeaderValue::from_str(&self.name)
                                .unwrap_or(HeaderValue::from_static("breaker")),
                        ),
                )
            }
        }
    }
}
