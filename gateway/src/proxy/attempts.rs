//! Upstream attempts of one request: endpoint choice, outlier ejection and
//! budgeted retries.
//!
//! The retry rules are a pure function in `breakwater_plugins::retry`
//! (which failures, idempotency, attempts, the breaker, the budget); this
//! module performs its verdict: the backoff, then another endpoint when
//! there is one.
//!
//! Pingora's own retry of an idempotent request whose *reused* keep-alive
//! connection turned out closed is kept as it is: that request never reached
//! the upstream either.

use std::net::SocketAddr;

use breakwater_plugins::breaker::{BreakerState, CircuitBreaker};
use breakwater_plugins::retry::{self, Attempt, NoRetry};
use breakwater_plugins::Guard;
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
    /// Set when an answer's status was turned into a retry.
    status_retry: bool,
}

/// A chosen peer and its outlier detector's guard for the attempt, if any.
pub type Choice = (Box<HttpPeer>, Option<Box<dyn Guard>>);

impl Attempts {
    /// Chooses the endpoint for the next attempt; for a retry, first waits
    /// the backoff.
    pub async fn next_peer(&mut self, route: &Route) -> Option<Choice> {
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
        let choice = match breakers {
            None => (
                cluster
                    .next_peer_where(fresh)
                    .or_else(|| cluster.next_peer())?,
                None,
            ),
            Some(b) => select_with_breakers(cluster, b, fresh)?,
        };
        if let Some(addr) = choice.0._address.as_inet() {
            self.tried.push(*addr);
        }
        Some(choice)
    }

    /// Whether the attempt that just failed with `kind` may be retried,
    /// taking a budget token if so. `responded`: the upstream had already
    /// sent a response header.
    pub fn may_retry(
        &mut self,
        route: &Route,
        method: &Method,
        kind: breakwater_plugins::ErrorKind,
        responded: bool,
    ) -> bool {
        self.decide(route, method, Attempt::Failed { kind, responded })
    }

    /// Whether an answer with `status` is to be retried (the route opted in
    /// for that status), taking a budget token if so.
    pub fn may_retry_status(&mut self, route: &Route, method: &Method, status: u16) -> bool {
        self.status_retry =
            route.retry.is_some() && self.decide(route, method, Attempt::Answered { status });
        self.status_retry
    }

    /// Whether the last failure was a status turned into a retry (once).
    pub fn take_status_retry(&mut self) -> bool {
        std::mem::take(&mut self.status_retry)
    }

    /// Performs the retry rules ([`retry::retry`]) and counts the verdict.
    fn decide(&self, route: &Route, method: &Method, attempt: Attempt) -> bool {
        let breaker_closed = route.cluster_breaker.as_deref().is_none_or(|b| {
            b.breakers()
                .iter()
                .all(|b| b.state() == BreakerState::Closed)
        });
        let cx = retry::Context {
            method,
            made: self.count,
            breaker_closed,
            budget: &route.cluster.budget,
        };
        match retry::retry(route.retry.as_ref(), attempt, cx) {
            Ok(()) => {
                route.cluster.retries.inc();
                true
            }
            Err(NoRetry::BudgetExhausted) => {
                route.cluster.budget_exhausted.inc();
                false
            }
            Err(_) => false,
        }
    }
}

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
        .map(|p| Box::new(p) as Box<dyn Guard>);
    Some((peer, permit))
}
