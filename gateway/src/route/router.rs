//! The route table: a list scanned in declared order, first match wins.
//!
//! A linear scan is deliberate: declared order is the contract operators rely
//! on (as with nginx regex locations or Envoy's route list), and each matcher
//! is a few comparisons. Hundreds of routes cost well under a microsecond.

use std::sync::Arc;

use breakwater_plugins::breaker::CircuitBreaker;
use breakwater_plugins::Policy as _;
use http::{HeaderMap, Method};

use super::{Captures, RouteMatcher};
use crate::metrics::StatusCounters;
use crate::policy::chain::PolicyChain;
use crate::route::keys::EndpointNames;
use crate::upstream::Cluster;

/// One compiled route.
pub struct Route {
    pub id: Arc<str>,
    /// The `endpoint` key values for this route.
    pub endpoint: EndpointNames,
    pub matcher: RouteMatcher,
    pub cluster: Arc<Cluster>,
    pub chain: PolicyChain,
    /// For each custom key (by index), the capture index in this route's path
    /// template, when that key is a `path_capture` this template declares.
    pub capture_slots: Vec<Option<usize>>,
    /// `breakwater_requests_total{route, status}` handles for this route.
    pub requests: StatusCounters,
    /// The route's endpoint-scoped `circuit_breaker`: an outlier detector,
    /// not in the chain, consulted when picking an endpoint (outlier
    /// ejection).
    pub outlier: Option<Arc<CircuitBreaker>>,
    /// The route's cluster-scoped `circuit_breaker` (also in the chain),
    /// which vetoes retries.
    pub cluster_breaker: Option<Arc<CircuitBreaker>>,
    pub retry: Option<breakwater_plugins::retry::RetryPolicy>,
    pub timeouts: RouteTimeouts,
    /// The header carrying the caller's deadline in milliseconds, if any.
    pub deadline_header: Option<http::HeaderName>,
    /// The class its requests queue in at the cluster's overload gate.
    pub priority: breakwater_plugins::overload::Priority,
}

/// Route overrides of the cluster's timeouts, and the route's deadline.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RouteTimeouts {
    pub connect: Option<std::time::Duration>,
    pub response: Option<std::time::Duration>,
    /// The whole request, from arrival to the upstream's last byte; `None`
    /// only when the config turns it off (`total: 0s`).
    pub total: Option<std::time::Duration>,
}

impl RouteTimeouts {
    /// A route's `total` when its config names none (Envoy's route timeout).
    pub const DEFAULT_TOTAL: std::time::Duration = std::time::Duration::from_secs(15);
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Route")
            .field("id", &self.id)
            .field("cluster", &self.cluster.name)
            .field("chain", &self.chain)
            .field(
                "outlier",
                &self.outlier.as_ref().map(|p| p.name().to_string()),
            )
            .finish()
    }
}

/// A matched route and its path captures.
#[derive(Debug)]
pub struct RouteMatch<'r> {
    pub index: usize,
    pub route: &'r Route,
    pub captures: Captures,
}

#[derive(Debug, Default)]
pub struct Router {
    pub routes: Vec<Route>,
}

impl Router {
    /// Finds the first route whose conditions all hold.
    pub fn route(
        &self,
        host: Option<&str>,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
    ) -> Option<RouteMatch<'_>> {
        self.routes.iter().enumerate().find_map(|(index, route)| {
            route
                .matcher
                .matches(host, method, path, headers)
                .map(|captures| RouteMatch {
                    index,
                    route,
                    captures,
                })
        })
    }
}
