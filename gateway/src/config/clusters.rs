//! The `clusters:` section: upstream clusters, their endpoints, timeouts and
//! retry budgets.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use breakwater_plugins::balance::config::MAX_IN_FLIGHT;
use breakwater_plugins::balance::BalanceKind;
use breakwater_plugins::bounds::{duration_in, in_range, nanos, MAX_TIMEOUT};
use breakwater_plugins::config_error::ConfigPath;
use breakwater_plugins::ConfigError;

use super::context::CompileContext;
use super::file::ClusterFile;
use breakwater_plugins::overload::{AdaptiveLimit, Gate};

use crate::route::keys::KeyExtractor;
use crate::upstream::health::{ClusterHealth, EndpointCheck, ProbeTarget};
use crate::upstream::{Balance, Cluster, ClusterAccounting, ClusterOverload, ClusterTimeouts};

/// The upstream clusters by name.
pub type Clusters = BTreeMap<String, Arc<Cluster>>;

/// A config routes somewhere: at least one cluster.
pub fn require_one(clusters: &BTreeMap<String, ClusterFile>) -> Result<(), ConfigError> {
    if clusters.is_empty() {
        return Err(ConfigPath::root()
            .field("clusters")
            .error("at least one cluster is required"));
    }
    Ok(())
}

/// Compiles the clusters; `keys` names the request keys a consistent hash
/// may place requests by.
pub fn compile_clusters(
    clusters: &BTreeMap<String, ClusterFile>,
    keys: &KeyExtractor,
    cx: &CompileContext<'_>,
) -> Result<Clusters, ConfigError> {
    let custom: Vec<String> = keys.custom.iter().map(|(n, _)| n.clone()).collect();
    clusters
        .iter()
        .map(|(name, c)| {
            let cluster = compile_cluster(name, c, &custom, cx)?;
            Ok((name.clone(), Arc::new(cluster)))
        })
        .collect()
}

fn compile_cluster(
    name: &str,
    c: &ClusterFile,
    custom_keys: &[String],
    cx: &CompileContext<'_>,
) -> Result<Cluster, ConfigError> {
    let path = ConfigPath::root().field("clusters").field(name);
    let names: Vec<String> = c
        .endpoints
        .iter()
        .map(|e| e.address().to_string())
        .collect();
    check_endpoints(&names, &path)?;
    let balance = balance(c, custom_keys, &path)?;
    let timeouts = timeouts(c, &path)?;
    let m = cx.metrics;
    let accounting = ClusterAccounting {
        latency: m.upstream_latency.with_label_values(&[name]),
        budget: c
            .retry_budget
            .compile(&path.field("retry_budget"), cx.clock.clone())?,
        attempts: m.attempts.with_label_values(&[name]),
        retries: m.retries.with_label_values(&[name]),
        budget_exhausted: m.budget_exhausted.with_label_values(&[name]),
    };
    in_range(c.h2_streams, 1..=10_000, path.field("h2_streams"))?;
    let previous = cx.previous_cluster(name).map(|p| &**p);
    let addrs = resolve_all(&names, previous, &path)?;
    let cluster = Cluster::resolved(
        name,
        names,
        addrs,
        timeouts,
        c.tls,
        c.sni.clone(),
        accounting,
    )
    .refresh_dns(dns_refresh(c, &path)?)
    .balance(balance, previous);
    let cluster = match overload(name, c, &path, cx)? {
        Some(o) => cluster.with_overload(o),
        None => cluster,
    };
    let cluster = match health(name, c, &path, cx, &cluster.addrs)? {
        Some(h) => cluster.with_health(h),
        None => cluster,
    };
    Ok(if c.protocol.is_h2() {
        cluster.speak_h2(c.h2_streams)
    } else {
        cluster
    })
}

/// The cluster's overload gate: the live one when neither its settings nor
/// the endpoints changed (what it learned still holds), else a new one.
fn overload(
    name: &str,
    c: &ClusterFile,
    path: &ConfigPath,
    cx: &CompileContext<'_>,
) -> Result<Option<ClusterOverload>, ConfigError> {
    let Some(settings) = c.overload.compile(&path.field("overload"))? else {
        return Ok(None);
    };
    let live = cx
        .previous_cluster(name)
        .filter(|prev| {
            prev.endpoints
                .iter()
                .map(String::as_str)
                .eq(c.endpoints.iter().map(|e| e.address()))
        })
        .and_then(|prev| prev.overload.as_ref())
        .filter(|prev| prev.settings == settings);
    let gate = match live {
        Some(prev) => prev.gate.clone(),
        None => {
            let limit = AdaptiveLimit::new(settings.limit.clone(), cx.clock.clone());
            Arc::new(Gate::new(
                name,
                Arc::new(limit),
                settings.gate.clone(),
                cx.clock.clone(),
            ))
        }
    };
    Ok(Some(ClusterOverload { gate, settings }))
}

/// The cluster's health checks. An endpoint a reload keeps, probed the
/// same way, keeps its state (a down endpoint stays down until it passes
/// `rise` probes); a new one starts up, probed at once.
fn health(
    name: &str,
    c: &ClusterFile,
    path: &ConfigPath,
    cx: &CompileContext<'_>,
    addrs: &[std::net::SocketAddr],
) -> Result<Option<Arc<ClusterHealth>>, ConfigError> {
    let Some(file) = &c.health_check else {
        if c.slow_start.is_some() {
            return Err(path.field("slow_start").error(
                "needs `health_check`: slow start ramps an endpoint the probes bring back",
            ));
        }
        return Ok(None);
    };
    let settings = file.compile(&path.field("health_check"))?;
    let slow_start = duration_in(
        c.slow_start.map_or(Duration::ZERO, |d| d.as_duration()),
        Duration::ZERO..=MAX_SLOW_START,
        path.field("slow_start"),
    )?;
    let target = ProbeTarget {
        tls: c.tls,
        sni: c.sni.clone(),
        h2: c.protocol.is_h2(),
    };
    let live = cx
        .previous_cluster(name)
        .and_then(|prev| prev.health.as_deref())
        .filter(|prev| prev.settings == settings && prev.target == target);
    let now = cx.clock.now_nanos();
    // An endpoint added to a cluster that was serving ramps up; at startup,
    // or in a new cluster, every endpoint is new and none ramps.
    let serving = cx.previous_cluster(name).map(|prev| &prev.addrs);
    let endpoints = addrs
        .iter()
        .map(|addr| {
            live.and_then(|l| l.endpoints.iter().find(|e| e.addr == *addr).cloned())
                .unwrap_or_else(|| {
                    let added = serving.is_some_and(|s| !s.contains(addr));
                    Arc::new(EndpointCheck::new(*addr, now, added))
                })
        })
        .collect();
    Ok(Some(Arc::new(ClusterHealth::new(
        settings,
        target,
        endpoints,
        slow_start,
        cx.clock.clone(),
    ))))
}

/// Resolves each endpoint (`host:port`) to its first address, with the
/// system resolver. A name that fails to resolve keeps the address the live
/// cluster has for it, if any (a DNS hiccup does not undo a reload, nor
/// stop a refresh of the other names); a new one is an error.
fn resolve_all(
    names: &[String],
    previous: Option<&Cluster>,
    path: &ConfigPath,
) -> Result<Vec<SocketAddr>, ConfigError> {
    names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            crate::upstream::resolve(name).or_else(|e| {
                let kept = previous.and_then(|p| {
                    let at = p.endpoints.iter().position(|n| n == name)?;
                    Some(p.addrs[at])
                });
                match kept {
                    Some(addr) => {
                        tracing::warn!(
                            target: "breakwater::dns",
                            endpoint = %name,
                            address = %addr,
                            error = %e,
                            "endpoint name did not resolve; keeping its address"
                        );
                        Ok(addr)
                    }
                    None => Err(path
                        .item("endpoints", i)
                        .error(format!("cannot resolve \"{name}\": {e}"))),
                }
            })
        })
        .collect()
}

/// `dns_refresh`: 30s unless set; `0s` turns it off; else 100ms to 1h.
fn dns_refresh(c: &ClusterFile, path: &ConfigPath) -> Result<Duration, ConfigError> {
    match c.dns_refresh.map(|d| d.as_duration()) {
        None => Ok(DEFAULT_DNS_REFRESH),
        Some(d) if d.is_zero() => Ok(Duration::ZERO),
        Some(d) => duration_in(
            d,
            Duration::from_millis(100)..=Duration::from_secs(3600),
            path.field("dns_refresh"),
        ),
    }
}

/// Envoy refreshes every 5s; names behind a gateway change with deploys,
/// and a resolution costs a getaddrinfo per name.
const DEFAULT_DNS_REFRESH: Duration = Duration::from_secs(30);

/// How the cluster balances: its order, each endpoint's weight and cap.
fn balance(
    c: &ClusterFile,
    custom_keys: &[String],
    path: &ConfigPath,
) -> Result<Balance, ConfigError> {
    let kind = match &c.balance {
        Some(b) => b.compile(custom_keys, &path.field("balance"))?,
        None => BalanceKind::RoundRobin,
    };
    let default_cap = in_range(
        c.max_in_flight,
        0..=MAX_IN_FLIGHT,
        path.field("max_in_flight"),
    )?;
    let mut weights = Vec::with_capacity(c.endpoints.len());
    let mut caps = Vec::with_capacity(c.endpoints.len());
    for (i, e) in c.endpoints.iter().enumerate() {
        let at = path.item("endpoints", i);
        weights.push(e.weight(&at)?);
        caps.push(e.max_in_flight(&at)?.unwrap_or(default_cap));
    }
    Ok(Balance {
        kind,
        weights,
        caps,
        queue: c.endpoint_queue.compile(&path.field("endpoint_queue"))?,
    })
}

/// The longest slow start: an hour of ramping is already a deploy.
const MAX_SLOW_START: Duration = Duration::from_secs(3600);

/// At least one endpoint, each `host:port`, none twice.
fn check_endpoints(endpoints: &[String], path: &ConfigPath) -> Result<(), ConfigError> {
    if endpoints.is_empty() {
        return Err(path
            .field("endpoints")
            .error("at least one endpoint is required"));
    }
    let mut seen = HashSet::new();
    for (i, e) in endpoints.iter().enumerate() {
        let at = path.item("endpoints", i);
        let Some((host, port)) = e.rsplit_once(':') else {
            return Err(at.error(format!("\"{e}\" needs a port, like 127.0.0.1:9000")));
        };
        if host.is_empty() || port.parse::<u16>().is_err() {
            return Err(at.error(format!("\"{e}\" is not host:port")));
        }
        if !seen.insert(e.as_str()) {
            return Err(at.error(format!("duplicate endpoint \"{e}\"")));
        }
    }
    Ok(())
}

/// The cluster's timeouts, in milliseconds, each at most [`MAX_TIMEOUT`].
fn timeouts(c: &ClusterFile, path: &ConfigPath) -> Result<ClusterTimeouts, ConfigError> {
    let ms = |v: u64, field: &str| {
        in_range(v, 1..=nanos(MAX_TIMEOUT) / 1_000_000, path.field(field))
            .map(Duration::from_millis)
    };
    Ok(ClusterTimeouts {
        connect: ms(c.connect_timeout_ms, "connect_timeout_ms")?,
        read: ms(c.read_timeout_ms, "read_timeout_ms")?,
        write: ms(c.write_timeout_ms, "write_timeout_ms")?,
        idle: ms(c.idle_timeout_ms, "idle_timeout_ms")?,
    })
}
