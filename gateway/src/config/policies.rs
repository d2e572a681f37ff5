//! A route's `policies:`: naming, sharing, carrying state over across
//! reloads, and filing each policy in the chain or beside it.

use std::sync::Arc;

use breakwater_plugins::breaker::{BreakerScope, CircuitBreaker};
use breakwater_plugins::concurrency::Scope;
use breakwater_plugins::config_error::ConfigPath;
use breakwater_plugins::{ConfigError, PolicyEnv};

use super::context::CompileContext;
use super::file::{PolicyFile, RouteFile};
use super::registry::TypedPolicy;
use crate::policy::chain::{ChainEntry, PolicyChain};
use crate::upstream::Cluster;

/// What a route's policies compile to.
pub struct RoutePolicies {
    /// The policies that decide on each request, in declared order.
    pub chain: PolicyChain,
    /// The route's (first) endpoint-scoped breaker: not in the chain, load
    /// balancing consults it to pick an endpoint (outlier ejection).
    pub outlier: Option<Arc<CircuitBreaker>>,
    /// The route's (first) cluster-scoped breaker, also in the chain: it
    /// vetoes retries while not closed.
    pub cluster_breaker: Option<Arc<CircuitBreaker>>,
}

/// Compiles the policies of route `r` (at `path`, `routes[i]`), whose
/// upstream is `cluster`.
pub fn compile_route_policies(
    r: &RouteFile,
    path: &ConfigPath,
    cluster: &Cluster,
    custom_names: &[String],
    cx: &mut CompileContext<'_>,
) -> Result<RoutePolicies, ConfigError> {
    let mut out = RoutePolicies {
        chain: PolicyChain {
            entries: Vec::with_capacity(r.policies.len()),
        },
        outlier: None,
        cluster_breaker: None,
    };
    for (i, p) in r.policies.iter().enumerate() {
        let at = PolicyAt {
            route: r,
            index: i,
            path: path.item("policies", i),
            cluster,
            custom_names,
        };
        let policy = compile_policy(p, &at, cx)?;
        if let Some(outlier) = policy.outlier() {
            out.outlier.get_or_insert_with(|| outlier.clone());
            continue;
        }
        if let Some(breaker) = policy.cluster_breaker() {
            out.cluster_breaker.get_or_insert_with(|| breaker.clone());
        }
        let policy = policy.as_policy();
        out.chain.entries.push(ChainEntry {
            counters: cx.metrics.decision_counters(policy.name(), policy.kind()),
            policy,
        });
    }
    Ok(out)
}

/// Where a policy entry stands: its route, index and path, and the route's
/// upstream.
struct PolicyAt<'a> {
    route: &'a RouteFile,
    index: usize,
    /// `routes[i].policies[j]`.
    path: ConfigPath,
    cluster: &'a Cluster,
    custom_names: &'a [String],
}

/// The policy for entry `p`: the one of the same name compiled earlier in
/// this file, the live one if its config is unchanged, or a new one.
fn compile_policy(
    p: &PolicyFile,
    at: &PolicyAt<'_>,
    cx: &mut CompileContext<'_>,
) -> Result<TypedPolicy, ConfigError> {
    let path = at.path.field(p.kind());
    if p.explicit_name().is_some_and(|n| n.trim().is_empty()) {
        return Err(path.field("name").error("must not be empty"));
    }
    let name = policy_name(p, at, cx);
    let fingerprint = fingerprint(p, at.cluster);
    // The same name twice in one file: one shared policy if the configs are
    // equal (several routes under one limit), an error otherwise.
    if let Some((existing, policy)) = cx.compiled(&name) {
        if existing == fingerprint {
            return Ok(policy.clone());
        }
        return Err(path.error(format!(
            "policy \"{name}\" is declared again with a different config; give it another `name`"
        )));
    }
    let policy = match cx.carried(&name, &fingerprint) {
        Some(existing) => existing,
        None => build(
            p,
            name.clone(),
            &path,
            &cx.policy_env(at.custom_names, at.cluster),
        )?,
    };
    cx.add(name, fingerprint, policy.clone());
    Ok(policy)
}

/// The policy's config, serialized: equal fingerprints mean the state can
/// be shared or carried over.
fn fingerprint(p: &PolicyFile, cluster: &Cluster) -> String {
    let mut fingerprint = serde_json::to_string(p).unwrap_or_default();
    // Endpoint breakers are built per endpoint: new endpoints, new breakers.
    if matches!(p, PolicyFile::CircuitBreaker(c) if c.scope == BreakerScope::Endpoint) {
        fingerprint.push_str(&format!("|{:?}", cluster.addrs));
    }
    fingerprint
}

/// The name a policy is known by. Unnamed policies are `<route>.<type>`
/// (`.<index>` added if the route has two of a type); a cluster-scoped
/// concurrency limit is `<cluster>.concurrency_limit`, so every route to the
/// cluster shares it.
fn policy_name(p: &PolicyFile, at: &PolicyAt<'_>, cx: &CompileContext<'_>) -> String {
    if let Some(n) = p.explicit_name() {
        return n.to_string();
    }
    let route = at.route;
    match p {
        PolicyFile::ConcurrencyLimit(c) if c.scope == Scope::Cluster => {
            return format!("{}.concurrency_limit", route.cluster);
        }
        // Breakers judge the upstream, not the route: one per cluster.
        PolicyFile::CircuitBreaker(c) => {
            let suffix = match c.scope {
                BreakerScope::Cluster => "circuit_breaker",
                BreakerScope::Endpoint => "endpoint_breaker",
            };
            return format!("{}.{suffix}", route.cluster);
        }
        _ => {}
    }
    let base = format!("{}.{}", route.id, p.kind());
    if cx.compiled(&base).is_some() {
        format!("{base}.{}", at.index)
    } else {
        base
    }
}

/// Builds a new policy from its config.
fn build(
    p: &PolicyFile,
    name: String,
    path: &ConfigPath,
    env: &PolicyEnv<'_>,
) -> Result<TypedPolicy, ConfigError> {
    Ok(match p {
        PolicyFile::Deny(c) => TypedPolicy::Deny(Arc::new(c.compile(name, path)?)),
        PolicyFile::RateLimit(c) => TypedPolicy::RateLimit(Arc::new(c.compile(name, path, env)?)),
        PolicyFile::ConcurrencyLimit(c) => {
            TypedPolicy::ConcurrencyLimit(Arc::new(c.compile(name, path)?))
        }
        PolicyFile::Abuse(c) => TypedPolicy::Abuse(Arc::new(c.compile(name, path, env)?)),
        PolicyFile::CircuitBreaker(c) => {
            TypedPolicy::CircuitBreaker(Arc::new(c.compile(name, path, env)?))
        }
        PolicyFile::Dedupe(c) => TypedPolicy::Dedupe(Arc::new(c.compile(name, path)?)),
        PolicyFile::Hotkey(c) => TypedPolicy::HotKey(Arc::new(c.compile(name, path, env)?)),
    })
}
