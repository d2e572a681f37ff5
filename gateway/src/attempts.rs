//! Upstream attempts of one request: endpoint choice, outlier ejection and
//! budgeted retries.
//!
//! Retry rules (none unless the route has a `retry:` section):
//! - only idempotent requests (GET, HEAD, OPTIONS, PUT, DELETE, TRACE, or any
//!   method on a route marked `idempotent: true`);
//! - only failures the upstream provably did not process: the connection was
//!   refused, or it was reset before any response byte on a fresh connection;
//! - never while the route's cluster breaker is open or half-open;
//! - never beyond `attempts`, and never without a token from the cluster's
//!   retry budget;
//! - to another endpoint when there is one, after a jittered backoff.
//!
//! Pingora's own retry of an idempotent request whose *reused* keep-alive
//! connection turned out closed is kept as it is: that request never reached
//! the upstream either.

use std::net::SocketAddr;

use breakwater_plugins::breaker::{BreakerState, CircuitBreaker};
use breakwater_plugins::{ErrorKind, Outcome, Permit};
use http::Method;
use pingora::upstreams::peer::HttpPeer;

use crate::route::Route;
use crate::upstream::Cluster;

#[derive(Default)]
pub struct Attempts {
    /// Attempts made so far (1 = the first try).
    pub count: u32,
    /// Endpoints already tried, avoided by retries when others exist.
    tried: Vec<SocketAddr>,
    /// The endpoint breaker's permit for the attempt in flight.
    endpoint_permit: Option<Box<dyn Permit>>,
    /// Set when an answer's status was turned into a retry.
    status_retry: bool,
}

fn idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

impl Attempts {
    /// Chooses the endpoint for the next attempt; for a retry, first waits
    /// the backoff.
    pub async fn next_peer(&mut self, route: &Route) -> Option<Box<HttpPeer>> {
        self.count += 1;
        let cluster = &route.cluster;
        cluster.attempts.inc();
        if self.count == 1 {
            if route.retry.is_some() {
                cluster.budget.deposit();
            }
        } else if let Some(policy) = &route.retry {
            tokio::time::sleep(policy.backoff_for(self.count - 1)).await;
        }
        let breakers = route.outlier.as_deref();
        let tried = &self.tried;
        let fresh = |a: SocketAddr| !tried.contains(&a) || tried.len() >= cluster.addrs.len();
        let (peer, permit) = match breakers {
            None => (
                cluster
                    .next_peer_where(fresh)
                    .or_else(|| cluster.next_peer())?,
                None,
            ),
            Some(b) => select_with_breakers(cluster, b, fresh)?,
        };
        if let Some(addr) = peer._address.as_inet() {
            self.tried.push(*addr);
        }
        // A permit still held belongs to an attempt Pingora retried on its
        // own (a stale pooled connection): it never reached that endpoint.
        if let Some(stale) = std::mem::replace(&mut self.endpoint_permit, permit) {
            stale.cancel();
        }
        Some(peer)
    }

    /// Whether the attempt that just failed with `kind` may be retried,
    /// taking a budget token if so. `responded`: the upstream had already
    /// sent a response header.
    pub fn may_retry(
        &mut self,
        route: &Route,
        method: &Method,
        kind: ErrorKind,
        responded: bool,
    ) -> bool {
        let unprocessed = match kind {
            ErrorKind::ConnectRefused => true,
            ErrorKind::Reset => !responded,
            _ => false,
        };
        unprocessed && self.allowed(route, method)
    }

    /// Whether an answer with `status` is to be retried (the route opted in
    /// for that status), taking a budget token if so.
    pub fn may_retry_status(&mut self, route: &Route, method: &Method, status: u16) -> bool {
        let opted_in = route
            .retry
            .as_ref()
            .is_some_and(|p| p.on_statuses.contains(&status));
        self.status_retry = opted_in && self.allowed(route, method);
        self.status_retry
    }

    /// Whether the last failure was a status turned into a retry (once).
    pub fn take_status_retry(&mut self) -> bool {
        std::mem::take(&mut self.status_retry)
    }

    /// The checks every retry passes — the route retries, the method is
    /// idempotent, attempts are left, the cluster breaker is closed — and
    /// then the budget pays for it.
    fn allowed(&self, route: &Route, method: &Method) -> bool {
        let Some(policy) = &route.retry else {
            return false;
        };
        let breaker_closed = route.cluster_breaker.as_deref().is_none_or(|b| {
            b.breakers()
                .iter()
                .all(|b| b.state() == BreakerState::Closed)
        });
        if !((policy.idempotent || idempotent(method))
            && self.count <= policy.attempts
            && breaker_closed)
        {
            return false;
        }
        if route.cluster.budget.try_withdraw() {
            route.cluster.retries.inc();
            true
        } else {
            route.cluster.budget_exhausted.inc();
            false
        }
    }

    /// The attempt in flight ended with `outcome` and will be retried
    /// elsewhere: its endpoint breaker learns it now.
    pub fn fail_current(&mut self, outcome: &Outcome) {
        if let Some(p) = self.endpoint_permit.take() {
            p.complete(outcome);
        }
    }

    /// The request is over: the last endpoint's breaker learns how.
    pub fn finish(&mut self, outcome: &Outcome) {
        if let Some(p) = self.endpoint_permit.take() {
            p.complete(outcome);
        }
    }
}

/// A chosen peer and its endpoint breaker's permit, if any.
type Choice = (Box<HttpPeer>, Option<Box<dyn Permit>>);

/// Picks an endpoint round-robin among those `eligible`, skipping endpoints
/// whose breaker is open (or whose half-open probes are all out), with the
/// chosen endpoint's breaker permit. When too many endpoints are open
/// (`max_ejection_percent`), or none would take the call, every endpoint is
/// eligible again: panic routing.
fn select_with_breakers(
    cluster: &Cluster,
    breakers: &CircuitBreaker,
    eligible: impl Fn(SocketAddr) -> bool,
) -> Option<Choice> {
    if breakers.ejection_allowed() {
        let taken = std::cell::RefCell::new(None);
        let peer = cluster.next_peer_where(|addr| {
            if !eligible(addr) {
                return false;
            }
            match breakers.admit_endpoint(addr) {
                Some(p) => {
                    *taken.borrow_mut() = Some(p);
                    true
                }
                None => false,
            }
        });
        if let (Some(peer), Some(permit)) = (peer, taken.into_inner()) {
            return Some((peer, Some(Box::new(permit))));
        }
    }
    let peer = cluster
        .next_peer_where(&eligible)
        .or_else(|| cluster.next_peer())?;
    let permit = peer
        ._address
        .as_inet()
        .and_then(|a| breakers.observe_endpoint(*a))
        .map(|p| Box::new(p) as Box<dyn Permit>);
    Some((peer, permit))
}
