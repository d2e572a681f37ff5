//! Compiled policies by their concrete types, and the registries the admin,
//! the metrics and load balancing read them from.
//!
//! Compilation knows each policy's type when it builds it. It keeps that type
//! ([`TypedPolicy`]) beside the `Arc<dyn Policy>` that goes into chains, and
//! files a typed `Arc` in the [`Registries`]: whoever needs a breaker or a
//! hot-key rule finds it there, by name, without asking a trait object what
//! it is.

use std::collections::BTreeMap;
use std::sync::Arc;

use breakwater_plugins::abuse::Abuse;
use breakwater_plugins::breaker::{Breaker, CircuitBreaker};
use breakwater_plugins::concurrency::ConcurrencyLimit;
use breakwater_plugins::dedupe::Dedupe;
use breakwater_plugins::deny::Deny;
use breakwater_plugins::hotkey::HotKeyRule;
use breakwater_plugins::rate_limit::RateLimit;
use breakwater_plugins::report::LimitReport;
use breakwater_plugins::Policy;

/// A compiled policy, by its concrete type: one variant per `policies:`
/// entry type of the file. Cloning clones the `Arc`, never the state.
#[derive(Clone)]
pub enum TypedPolicy {
    Deny(Arc<Deny>),
    RateLimit(Arc<RateLimit>),
    ConcurrencyLimit(Arc<ConcurrencyLimit>),
    Abuse(Arc<Abuse>),
    /// Cluster-scoped (a chain entry) or endpoint-scoped (an outlier
    /// detector, never in a chain).
    CircuitBreaker(Arc<CircuitBreaker>),
    Dedupe(Arc<Dedupe>),
    HotKey(Arc<HotKeyRule>),
}

impl TypedPolicy {
    /// The same policy, type-erased, as chains hold it.
    pub fn as_policy(&self) -> Arc<dyn Policy> {
        match self {
            Self::Deny(p) => p.clone(),
            Self::RateLimit(p) => p.clone(),
            Self::ConcurrencyLimit(p) => p.clone(),
            Self::Abuse(p) => p.clone(),
            Self::CircuitBreaker(p) => p.clone(),
            Self::Dedupe(p) => p.clone(),
            Self::HotKey(p) => p.clone(),
        }
    }

    /// The endpoint-scoped breaker this is, if it is one: it steers endpoint
    /// choice instead of running in the chain.
    pub fn outlier(&self) -> Option<&Arc<CircuitBreaker>> {
        match self {
            Self::CircuitBreaker(b) if b.is_endpoint_scoped() => Some(b),
            _ => None,
        }
    }

    /// The cluster-scoped breaker this is, if it is one: it fails requests
    /// fast while open and vetoes retries while not closed.
    pub fn cluster_breaker(&self) -> Option<&Arc<CircuitBreaker>> {
        match self {
            Self::CircuitBreaker(b) if !b.is_endpoint_scoped() => Some(b),
            _ => None,
        }
    }
}

/// A limit-like policy: one that keeps per-key counts and reports them on
/// `GET /limits` and in `breakwater_policy_*` metrics.
#[derive(Clone)]
pub enum Limit {
    Rate(Arc<RateLimit>),
    Concurrency(Arc<ConcurrencyLimit>),
    Abuse(Arc<Abuse>),
    HotKey(Arc<HotKeyRule>),
}

impl Limit {
    /// Counts, tracked keys and the `top` hottest keys.
    pub fn report(&self, top: usize) -> Option<LimitReport> {
        match self {
            Self::Rate(p) => p.limit_report(top),
            Self::Concurrency(p) => p.limit_report(top),
            Self::Abuse(p) => p.limit_report(top),
            Self::HotKey(p) => p.limit_report(top),
        }
    }
}

/// The snapshot's policies by what their readers need, each by policy name
/// (so in name order, as the admin lists them). Filled as policies compile;
/// a policy shared by several routes is filed once.
#[derive(Default)]
pub struct Registries {
    /// Cluster-scoped `circuit_breaker` policies.
    pub breakers: BTreeMap<String, Arc<CircuitBreaker>>,
    /// Endpoint-scoped `circuit_breaker` policies: outlier detectors, one
    /// breaker per endpoint, that load balancing consults.
    pub outliers: BTreeMap<String, Arc<CircuitBreaker>>,
    pub hot_keys: BTreeMap<String, Arc<HotKeyRule>>,
    pub dedupes: BTreeMap<String, Arc<Dedupe>>,
    pub limits: BTreeMap<String, Limit>,
}

impl Registries {
    /// Files `policy` under `name` in every registry it belongs to.
    pub fn register(&mut self, name: &str, policy: &TypedPolicy) {
        let name = name.to_string();
        let limit = match policy {
            TypedPolicy::Deny(_) => None,
            TypedPolicy::RateLimit(p) => Some(Limit::Rate(p.clone())),
            TypedPolicy::ConcurrencyLimit(p) => Some(Limit::Concurrency(p.clone())),
            TypedPolicy::Abuse(p) => Some(Limit::Abuse(p.clone())),
            TypedPolicy::CircuitBreaker(b) if b.is_endpoint_scoped() => {
                self.outliers.insert(name.clone(), b.clone());
                None
            }
            TypedPolicy::CircuitBreaker(b) => {
                self.breakers.insert(name.clone(), b.clone());
                None
            }
            TypedPolicy::Dedupe(p) => {
                self.dedupes.insert(name.clone(), p.clone());
                None
            }
            TypedPolicy::HotKey(p) => {
                self.hot_keys.insert(name.clone(), p.clone());
                Some(Limit::HotKey(p.clone()))
            }
        };
        if let Some(limit) = limit {
            self.limits.insert(name, limit);
        }
    }

    /// Every breaker, cluster- and endpoint-scoped, in the order of their
    /// policies' names (an endpoint-scoped policy's breakers in endpoint
    /// order): what `GET /breakers` lists and the metrics export.
    pub fn every_breaker(&self) -> Vec<Arc<Breaker>> {
        let mut policies: Vec<(&String, &Arc<CircuitBreaker>)> =
            self.breakers.iter().chain(&self.outliers).collect();
        policies.sort_by_key(|(name, _)| *name);
        policies
            .into_iter()
            .flat_map(|(_, policy)| policy.breakers())
            .collect()
    }
}
