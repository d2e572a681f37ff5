//! Upstream attempts of one request: endpoint choice, outlier ejection,
//! the wait for an endpoint under its cap, and budgeted retries.
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
use std::time::Duration;

use breakwater_plugins::balance::Ticket;
use breakwater_plugins::breaker::{BreakerState, CircuitBreaker};
use breakwater_plugins::retry::{self, Attempt, NoRetry};
use breakwater_plugins::Guard;
use http::Method;
use pingora::upstreams::peer::HttpPeer;

use crate::route::Route;
use crate::upstream::{Cluster, NoPeer};

/// How long a queued request waits for a wake-up before it looks again on
/// its own (a wake-up can be lost to a reload that rebuilt the cluster).
const REQUEUE: Duration = Duration::from_millis(50);

#[derive(Default)]
pub struct Attempts {
    /// Attempts made so far (1 = the first try).
    pub count: u32,
    /// Endpoints already tried, avoided by retries when others exist.
    tried: Vec<SocketAddr>,
    /// Set when an answer's status was turned into a retry.
    status_retry: bool,
    /// The attempt in flight's place on its endpoint.
    ticket: Option<Ticket>,
}

/// A chosen peer and its outlier detector's guard for the attempt, if any
/// (its in-flight ticket stays in [`Attempts`]).
pub type Choice = (Box<HttpPeer>, Option<Box<dyn Guard>>);

impl Attempts {
    /// Chooses the endpoint for the next attempt; for a retry, first waits
    /// the backoff. `key`: the request key's hash, for a cluster balanced
    /// by one. When every endpoint is at its `max_in_flight`, waits in the
    /// cluster's queue up to its timeout for one to free up.
    pub async fn next_peer(&mut self, route: &Route, key: Option<u64>) -> Result<Choice, NoPeer> {
        // The attempt before this one is over: its endpoint has room again.
        self.ticket = None;
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
        let (peer, ticket, guard) = match self.choose(route, key) {
            Err(NoPeer::Full) => self.queue(route, key).await?,
            other => other?,
        };
        if let Some(addr) = peer._address.as_inet() {
            self.tried.push(*addr);
        }
        self.ticket = Some(ticket);
        Ok((peer, guard))
    }

    /// One choice, with the endpoint's ticket.
    fn choose(&self, route: &Route, key: Option<u64>) -> Result<Taken, NoPeer> {
        let cluster = &route.cluster;
        let tried = &self.tried;
        let fresh = |a: SocketAddr| !tried.contains(&a) || tried.len() >= cluster.addrs.len();
        match route.outlier.as_deref() {
            None => {
                let c = match cluster.choose(key, fresh, |_| Some(())) {
                    Err(NoPeer::None) => cluster.choose(key, |_| true, |_| Some(()))?,
                    other => other?,
                };
                Ok((c.peer, c.ticket, None))
            }
            Some(b) => select_with_breakers(cluster, b, key, fresh),
        }
    }

    /// Waits in the cluster's queue for an endpoint under its cap, up to
    /// the queue's timeout; `Full` when the queue is full or the wait ran
    /// out.
    async fn queue(&self, route: &Route, key: Option<u64>) -> Result<Taken, NoPeer> {
        let cluster = &route.cluster;
        let Some(place) = cluster.waiters.join(cluster.queue.size) else {
            return Err(NoPeer::Full);
        };
        let until = tokio::time::Instant::now() + cluster.queue.timeout;
        loop {
            let left = until.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Err(NoPeer::Full);
            }
            place.freed(left.min(REQUEUE)).await;
            match self.choose(route, key) {
                Err(NoPeer::Full) => continue,
                other => return other,
            }
        }
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

/// A chosen endpoint: its peer, its ticket, its breaker's permit.
type Taken = (Box<HttpPeer>, Ticket, Option<Box<dyn Guard>>);

/// Picks an endpoint among those `eligible`, skipping endpoints whose
/// breaker is open (or whose half-open probes are all out), with the
/// chosen endpoint's breaker permit. When too many endpoints are open
/// (`max_ejection_percent`), or none would take the call, every endpoint is
/// eligible again: panic routing.
fn select_with_breakers(
    cluster: &Cluster,
    breakers: &CircuitBreaker,
    key: Option<u64>,
    eligible: impl Fn(SocketAddr) -> bool,
) -> Result<Taken, NoPeer> {
    if breakers.ejection_allowed() {
        match cluster.choose(key, &eligible, |addr| breakers.admit_endpoint(addr)) {
            Ok(c) => return Ok((c.peer, c.ticket, Some(Box::new(c.taken)))),
            // Endpoints the breakers allow are merely busy: wait for them
            // rather than route to one the breakers ejected.
            Err(NoPeer::Full) => return Err(NoPeer::Full),
            Err(NoPeer::None) => {}
        }
    }
    let c = match cluster.choose(key, &eligible, |_| Some(())) {
        Err(NoPeer::None) => cluster.choose(key, |_| true, |_| Some(()))?,
        other => other?,
    };
    let permit = c
        .peer
        ._address
        .as_inet()
        .and_then(|a| breakers.observe_endpoint(*a))
        .map(|p| Box::new(p) as Box<dyn Guard>);
    Ok((c.peer, c.ticket, permit))
}
