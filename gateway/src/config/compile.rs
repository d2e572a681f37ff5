//! Validation and compilation of a [`FileConfig`] into a [`Snapshot`].
//!
//! Compilation never touches the live snapshot: it reads the previous one only
//! to carry policy state over (a policy whose name and config are unchanged is
//! reused as the same `Arc`, with its windows, counters and breaker state).

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use breakwater_plugins::block_list::BlockList;
use breakwater_plugins::bounds::{duration_in, in_range, nanos, MAX_SLOTS, MAX_TIMEOUT};
use breakwater_plugins::breaker::{BreakerScope, CircuitBreaker};
use breakwater_plugins::concurrency::Scope;
use breakwater_plugins::hotkey::HotEventHub;
use breakwater_plugins::{Clock, ConfigError, Policy, PolicyEnv};
use http::{HeaderName, HeaderValue, Method};
use ipnet::IpNet;

use super::file::{
    ClusterFile, EndpointKeyMode, FileConfig, KeySourceFile, MatchFile, PathMatchFile, PolicyFile,
    RouteFile,
};
use crate::chain::{ChainEntry, PolicyChain};
use crate::key_extract::{EndpointNames, KeyExtractor, KeySource};
use crate::metrics::Metrics;
use crate::route::{
    HeaderMatch, HostMatch, PathPattern, Route, RouteMatcher, RouteTimeouts, Router,
};
use crate::snapshot::{text_hash, CompiledPolicy, Snapshot};
use crate::upstream::{Cluster, ClusterAccounting, ClusterTimeouts};

/// Most proxy worker threads.
const MAX_THREADS: u64 = 1024;
/// Longest drain on shutdown, and longest wait for services to stop.
const MAX_DRAIN_SECS: u64 = 3600;

/// What compilation needs besides the file.
pub struct CompileContext<'a> {
    pub metrics: &'a Metrics,
    pub clock: Arc<dyn Clock>,
    /// The live snapshot, whose unchanged policies are carried over.
    pub previous: Option<&'a Snapshot>,
    /// Looks up environment variables (injectable for tests).
    pub env: &'a dyn Fn(&str) -> Option<String>,
    /// The process-wide block list that `abuse` policies feed.
    pub blocks: Arc<BlockList>,
    /// The process-wide hot-key event feed that `hotkey` rules publish to.
    pub hot_events: Arc<HotEventHub>,
    /// Cluster mode's fleet, set up at startup from the `cluster` section.
    pub fleet: Option<Arc<breakwater_plugins::cluster::Fleet>>,
}

/// Validates `file` and builds a snapshot. `text` is the file's text, for the hash.
pub fn compile(
    file: FileConfig,
    text: &str,
    cx: &CompileContext<'_>,
) -> Result<Snapshot, ConfigError> {
    validate_static(&file, cx)?;
    let admin = super::admin::compile_admin(&file.admin, cx.env)?;
    let keys = compile_keys(&file)?;
    let custom_names: Vec<String> = keys.custom.iter().map(|(n, _)| n.clone()).collect();

    let mut clusters = BTreeMap::new();
    for (name, c) in &file.clusters {
        let cluster = compile_cluster(name, c, cx.metrics, cx.clock.clone())?;
        clusters.insert(name.clone(), Arc::new(cluster));
    }

    let mut policies = BTreeMap::new();
    let mut routes = Vec::with_capacity(file.routes.len());
    let mut route_ids = HashSet::new();
    for (i, r) in file.routes.iter().enumerate() {
        let path = format!("routes[{i}]");
        if r.id.trim().is_empty() {
            return Err(ConfigError::new(format!("{path}.id"), "must not be empty"));
        }
        if !route_ids.insert(r.id.as_str()) {
            return Err(ConfigError::new(
                format!("{path}.id"),
                format!("duplicate route id \"{}\"", r.id),
            ));
        }
        routes.push(compile_route(
            r,
            &path,
            &clusters,
            &keys,
            &custom_names,
            &mut policies,
            cx,
        )?);
    }

    Ok(Snapshot {
        generation: cx.previous.map_or(1, |p| p.generation + 1),
        hash: text_hash(text),
        loaded_at: SystemTime::now(),
        source: file,
        router: Router { routes },
        keys,
        clusters,
        policies,
        clock: cx.clock.clone(),
        admin,
    })
}

fn validate_static(file: &FileConfig, cx: &CompileContext<'_>) -> Result<(), ConfigError> {
    if let Some(cluster) = &file.cluster {
        cluster.compile()?;
    }
    // The fleet link is built once, at startup.
    if let Some(prev) = cx.previous {
        if prev.source.cluster != file.cluster {
            return Err(ConfigError::new(
                "cluster",
                "changes to the cluster section need a restart (the fleet link is set up once)",
            ));
        }
    }
    if file.listeners.is_empty() {
        return Err(ConfigError::new(
            "listeners",
            "at least one listener is required",
        ));
    }
    for (i, l) in file.listeners.iter().enumerate() {
        parse_socket_addr(&l.address, &format!("listeners[{i}].address"))?;
        if let Some(tls) = &l.tls {
            crate::server::tls_settings(tls)
                .map_err(|e| ConfigError::new(format!("listeners[{i}].tls"), e))?;
        }
    }
    validate_server(file)?;
    if file.clusters.is_empty() {
        return Err(ConfigError::new(
            "clusters",
            "at least one cluster is required",
        ));
    }
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&file.logging.level) {
        return Err(ConfigError::new(
            "logging.level",
            format!("invalid filter: {e}"),
        ));
    }
    Ok(())
}

/// The process settings' numbers. They take effect at startup, but `-t`
/// and a reload check them too.
fn validate_server(file: &FileConfig) -> Result<(), ConfigError> {
    let s = &file.server;
    in_range(s.threads as u64, 1..=MAX_THREADS, "server.threads")?;
    in_range(
        s.grace_period_secs,
        0..=MAX_DRAIN_SECS,
        "server.grace_period_secs",
    )?;
    in_range(
        s.graceful_shutdown_timeout_secs,
        0..=MAX_DRAIN_SECS,
        "server.graceful_shutdown_timeout_secs",
    )?;
    in_range(
        s.upstream_keepalive_pool_size as u64,
        0..=MAX_SLOTS,
        "server.upstream_keepalive_pool_size",
    )?;
    in_range(
        file.block_list.max_entries as u64,
        1..=MAX_SLOTS,
        "block_list.max_entries",
    )?;
    Ok(())
}

fn parse_socket_addr(raw: &str, path: &str) -> Result<SocketAddr, ConfigError> {
    raw.parse().map_err(|_| {
        ConfigError::new(
            path,
            format!("\"{raw}\" is not an address like 127.0.0.1:8080 or [::]:8080"),
        )
    })
}

fn compile_keys(file: &FileConfig) -> Result<KeyExtractor, ConfigError> {
    let k = &file.keys;
    let mut trusted_proxies = Vec::with_capacity(k.trusted_proxies.len());
    for (i, raw) in k.trusted_proxies.iter().enumerate() {
        let net = raw
            .parse::<IpNet>()
            .or_else(|_| raw.parse::<IpAddr>().map(IpNet::from))
            .map_err(|_| {
                ConfigError::new(
                    format!("keys.trusted_proxies[{i}]"),
                    format!("\"{raw}\" is not an IP address or CIDR range"),
                )
            })?;
        trusted_proxies.push(net.trunc());
    }
    let user = k
        .user
        .as_ref()
        .map(|s| compile_source(s, "keys.user"))
        .transpose()?;
    if matches!(user, Some(KeySource::PathCapture(_))) {
        // Allowed: `/users/{uid}/...` routes can key users by path.
    }
    let mut custom = Vec::with_capacity(k.custom.len());
    for (name, source) in &k.custom {
        let path = format!("keys.custom.{name}");
        if matches!(name.as_str(), "endpoint" | "ip" | "user") {
            return Err(ConfigError::new(
                path,
                format!("\"{name}\" is a built-in key name"),
            ));
        }
        if !breakwater_plugins::keys::is_valid_name(name) {
            return Err(ConfigError::new(
                path,
                "key names use letters, digits, '_' or '-' ('+' combines keys)",
            ));
        }
        custom.push((name.clone(), compile_source(source, &path)?));
    }
    let ipv6_prefix = in_range(
        k.ipv6_prefix
            .unwrap_or(u32::from(KeyExtractor::DEFAULT_IPV6_PREFIX)),
        1..=128,
        "keys.ipv6_prefix",
    )? as u8;
    Ok(KeyExtractor {
        by_method: k.endpoint == EndpointKeyMode::RouteMethod,
        ipv6_prefix,
        trusted_proxies,
        user,
        custom,
    })
}

fn compile_source(s: &KeySourceFile, path: &str) -> Result<KeySource, ConfigError> {
    let nonempty = |v: &str, field: &str| {
        if v.trim().is_empty() {
            Err(ConfigError::new(
                format!("{path}.{field}"),
                "must not be empty",
            ))
        } else {
            Ok(())
        }
    };
    Ok(match s {
        KeySourceFile::Header(h) => {
            let name = HeaderName::from_bytes(h.as_bytes()).map_err(|_| {
                ConfigError::new(
                    format!("{path}.header"),
                    format!("\"{h}\" is not a valid header name"),
                )
            })?;
            KeySource::Header(name)
        }
        KeySourceFile::Cookie(c) => {
            nonempty(c, "cookie")?;
            KeySource::Cookie(c.clone())
        }
        KeySourceFile::Query(q) => {
            nonempty(q, "query")?;
            KeySource::Query(q.clone())
        }
        KeySourceFile::PathCapture(p) => {
            nonempty(p, "path_capture")?;
            KeySource::PathCapture(p.clone())
        }
    })
}

fn compile_cluster(
    name: &str,
    c: &ClusterFile,
    metrics: &Metrics,
    clock: Arc<dyn Clock>,
) -> Result<Cluster, ConfigError> {
    let path = format!("clusters.{name}");
    if c.endpoints.is_empty() {
        return Err(ConfigError::new(
            format!("{path}.endpoints"),
            "at least one endpoint is required",
        ));
    }
    let mut seen = HashSet::new();
    for (i, e) in c.endpoints.iter().enumerate() {
        let ep_path = format!("{path}.endpoints[{i}]");
        let Some((host, port)) = e.rsplit_once(':') else {
            return Err(ConfigError::new(
                ep_path,
                format!("\"{e}\" needs a port, like 127.0.0.1:9000"),
            ));
        };
        if host.is_empty() || port.parse::<u16>().is_err() {
            return Err(ConfigError::new(
                ep_path,
                format!("\"{e}\" is not host:port"),
            ));
        }
        if !seen.insert(e.as_str()) {
            return Err(ConfigError::new(
                ep_path,
                format!("duplicate endpoint \"{e}\""),
            ));
        }
    }
    let ms = |v: u64, field: &str| {
        in_range(
            v,
            1..=nanos(MAX_TIMEOUT) / 1_000_000,
            format!("{path}.{field}"),
        )
        .map(Duration::from_millis)
    };
    let timeouts = ClusterTimeouts {
        connect: ms(c.connect_timeout_ms, "connect_timeout_ms")?,
        read: ms(c.read_timeout_ms, "read_timeout_ms")?,
        write: ms(c.write_timeout_ms, "write_timeout_ms")?,
        idle: ms(c.idle_timeout_ms, "idle_timeout_ms")?,
    };
    let accounting = ClusterAccounting {
        latency: metrics.upstream_latency.with_label_values(&[name]),
        budget: c
            .retry_budget
            .compile(&format!("{path}.retry_budget"), clock)?,
        attempts: metrics.attempts.with_label_values(&[name]),
        retries: metrics.retries.with_label_values(&[name]),
        budget_exhausted: metrics.budget_exhausted.with_label_values(&[name]),
    };
    in_range(c.h2_streams, 1..=10_000, format!("{path}.h2_streams"))?;
    let cluster = Cluster::new(
        name,
        c.endpoints.clone(),
        timeouts,
        c.tls,
        c.sni.clone(),
        accounting,
    )
    .map_err(|e| ConfigError::new(format!("{path}.endpoints"), format!("cannot resolve: {e}")))?;
    Ok(if c.protocol.is_h2() {
        cluster.speak_h2(c.h2_streams)
    } else {
        cluster
    })
}

fn compile_matcher(m: &MatchFile, path: &str) -> Result<RouteMatcher, ConfigError> {
    let path_pattern = match &m.path {
        None => None,
        Some(PathMatchFile::Exact(p)) => {
            Some(PathPattern::exact(p, &format!("{path}.path.exact"))?)
        }
        Some(PathMatchFile::Prefix(p)) => {
            Some(PathPattern::prefix(p, &format!("{path}.path.prefix"))?)
        }
        Some(PathMatchFile::Template(p)) => {
            Some(PathPattern::template(p, &format!("{path}.path.template"))?)
        }
    };
    let mut methods = Vec::with_capacity(m.methods.len());
    for (i, raw) in m.methods.iter().enumerate() {
        let upper = raw.to_ascii_uppercase();
        let method = Method::from_bytes(upper.as_bytes()).map_err(|_| {
            ConfigError::new(
                format!("{path}.methods[{i}]"),
                format!("\"{raw}\" is not an HTTP method"),
            )
        })?;
        methods.push(method);
    }
    let mut headers = Vec::with_capacity(m.headers.len());
    for (i, h) in m.headers.iter().enumerate() {
        let hp = format!("{path}.headers[{i}]");
        let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| {
            ConfigError::new(
                format!("{hp}.name"),
                format!("\"{}\" is not a valid header name", h.name),
            )
        })?;
        let value = h
            .value
            .as_ref()
            .map(|v| {
                HeaderValue::from_str(v).map_err(|_| {
                    ConfigError::new(format!("{hp}.value"), "is not a valid header value")
                })
            })
            .transpose()?;
        headers.push(HeaderMatch { name, value });
    }
    let host = match &m.host {
        Some(h) if h.trim().is_empty() => {
            return Err(ConfigError::new(
                format!("{path}.host"),
                "must not be empty",
            ))
        }
        Some(h) => Some(HostMatch::parse(h)),
        None => None,
    };
    Ok(RouteMatcher {
        host,
        path: path_pattern,
        methods,
        headers,
    })
}

fn compile_route(
    r: &RouteFile,
    path: &str,
    clusters: &BTreeMap<String, Arc<Cluster>>,
    keys: &KeyExtractor,
    custom_names: &[String],
    policies: &mut BTreeMap<String, CompiledPolicy>,
    cx: &CompileContext<'_>,
) -> Result<Route, ConfigError> {
    let cluster = clusters.get(&r.cluster).cloned().ok_or_else(|| {
        let known: Vec<&str> = clusters.keys().map(String::as_str).collect();
        ConfigError::new(
            format!("{path}.cluster"),
            format!(
                "unknown cluster \"{}\" (known: {})",
                r.cluster,
                known.join(", ")
            ),
        )
    })?;
    let matcher = compile_matcher(&r.matcher, &format!("{path}.match"))?;
    let capture_names = matcher
        .path
        .as_ref()
        .map(|p| p.capture_names().to_vec())
        .unwrap_or_default();
    let capture_slots = keys
        .custom
        .iter()
        .map(|(_, source)| match source {
            KeySource::PathCapture(name) => capture_names.iter().position(|n| n == name),
            _ => None,
        })
        .collect();

    let mut entries = Vec::with_capacity(r.policies.len());
    for (i, p) in r.policies.iter().enumerate() {
        let ppath = format!("{path}.policies[{i}]");
        let policy = compile_policy(p, r, &cluster, i, &ppath, custom_names, policies, cx)?;
        entries.push(ChainEntry {
            counters: cx.metrics.decision_counters(policy.name(), policy.kind()),
            policy,
        });
    }

    // An endpoint-scoped breaker steers endpoint selection; a cluster-scoped
    // one vetoes retries while it is not closed.
    let breaker = |endpoint: bool| {
        entries
            .iter()
            .find(|e| {
                e.policy
                    .as_any()
                    .downcast_ref::<CircuitBreaker>()
                    .is_some_and(|b| b.is_endpoint_scoped() == endpoint)
            })
            .map(|e| e.policy.clone())
    };
    let (outlier, cluster_breaker) = (breaker(true), breaker(false));
    let retry = r
        .retry
        .as_ref()
        .map(|c| c.compile(&format!("{path}.retry")))
        .transpose()?;
    // A deadline is an `Instant` plus this: bounded, it cannot overflow.
    let timeout = |d: Option<breakwater_plugins::duration::HumanDuration>, field: &str| {
        d.map(|d| {
            duration_in(
                d.as_duration(),
                Duration::from_millis(1)..=MAX_TIMEOUT,
                format!("{path}.timeouts.{field}"),
            )
        })
        .transpose()
    };
    let timeouts = RouteTimeouts {
        connect: timeout(r.timeouts.connect, "connect")?,
        response: timeout(r.timeouts.response, "response")?,
        // Every route has a total deadline unless it turns it off with `0s`
        // (as Envoy's route timeout): without one, an upstream that trickles
        // bytes holds the request and its slots for ever.
        total: match r.timeouts.total {
            None => Some(RouteTimeouts::DEFAULT_TOTAL),
            Some(d) if d.as_duration().is_zero() => None,
            d => timeout(d, "total")?,
        },
    };
    let deadline_header = r
        .deadline_header
        .as_deref()
        .map(|h| {
            HeaderName::from_bytes(h.as_bytes()).map_err(|_| {
                ConfigError::new(
                    format!("{path}.deadline_header"),
                    format!("\"{h}\" is not a valid header name"),
                )
            })
        })
        .transpose()?;
    Ok(Route {
        id: r.id.as_str().into(),
        outlier,
        cluster_breaker,
        retry,
        timeouts,
        deadline_header,
        endpoint: EndpointNames::new(&r.id),
        matcher,
        cluster,
        chain: PolicyChain { entries },
        capture_slots,
        requests: cx.metrics.status_counters(&r.id),
    })
}

/// The name a policy is known by. Unnamed policies are `<route>.<type>`
/// (`.<index>` added if the route has two of a type); a cluster-scoped
/// concurrency limit is `<cluster>.concurrency_limit`, so every route to the
/// cluster shares it.
fn policy_name(
    p: &PolicyFile,
    route: &RouteFile,
    index: usize,
    taken: &BTreeMap<String, CompiledPolicy>,
) -> String {
    if let Some(n) = p.explicit_name() {
        return n.to_string();
    }
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
    if taken.contains_key(&base) {
        format!("{base}.{index}")
    } else {
        base
    }
}

#[allow(clippy::too_many_arguments)]
fn compile_policy(
    p: &PolicyFile,
    route: &RouteFile,
    cluster: &Cluster,
    index: usize,
    path: &str,
    custom_names: &[String],
    policies: &mut BTreeMap<String, CompiledPolicy>,
    cx: &CompileContext<'_>,
) -> Result<Arc<dyn Policy>, ConfigError> {
    let kind = p.kind();
    if p.explicit_name().is_some_and(|n| n.trim().is_empty()) {
        return Err(ConfigError::new(
            format!("{path}.{kind}.name"),
            "must not be empty",
        ));
    }
    let name = policy_name(p, route, index, policies);
    let mut fingerprint = serde_json::to_string(p).unwrap_or_default();
    // Endpoint breakers are built per endpoint: new endpoints, new breakers.
    if matches!(p, PolicyFile::CircuitBreaker(c) if c.scope == BreakerScope::Endpoint) {
        fingerprint.push_str(&format!("|{:?}", cluster.addrs));
    }
    // The same name twice in one file: one shared policy if the configs are
    // equal (several routes under one limit), an error otherwise.
    if let Some(existing) = policies.get(&name) {
        if existing.fingerprint == fingerprint {
            return Ok(existing.policy.clone());
        }
        return Err(ConfigError::new(
            format!("{path}.{kind}"),
            format!("policy \"{name}\" is declared again with a different config; give it another `name`"),
        ));
    }
    let carried = cx
        .previous
        .and_then(|prev| prev.policies.get(&name))
        .filter(|prev| prev.fingerprint == fingerprint)
        .map(|prev| prev.policy.clone());
    let policy: Arc<dyn Policy> = match carried {
        Some(existing) => existing,
        None => {
            let env = PolicyEnv {
                custom_keys: custom_names,
                clock: cx.clock.clone(),
                blocks: cx.blocks.clone(),
                hot_events: cx.hot_events.clone(),
                fleet: cx.fleet.clone(),
                cluster: &route.cluster,
                cluster_endpoints: &cluster.addrs,
            };
            let path = format!("{path}.{kind}");
            match p {
                PolicyFile::Deny(c) => Arc::new(c.compile(name.clone(), &path)?),
                PolicyFile::RateLimit(c) => Arc::new(c.compile(name.clone(), &path, &env)?),
                PolicyFile::ConcurrencyLimit(c) => Arc::new(c.compile(name.clone(), &path)?),
                PolicyFile::Abuse(c) => Arc::new(c.compile(name.clone(), &path, &env)?),
                PolicyFile::CircuitBreaker(c) => Arc::new(c.compile(name.clone(), &path, &env)?),
                PolicyFile::Dedupe(c) => Arc::new(c.compile(name.clone(), &path)?),
                PolicyFile::Hotkey(c) => Arc::new(c.compile(name.clone(), &path, &env)?),
            }
        }
    };
    policies.insert(
        name,
        CompiledPolicy {
            fingerprint,
            policy: policy.clone(),
        },
    );
    Ok(policy)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_str;
    use breakwater_plugins::MonotonicClock;

    const BASE: &str = "\
listeners:
  - address: 127.0.0.1:8080
keys:
  trusted_proxies: [10.0.0.0/8]
  user: { header: x-user-id }
  custom:
    goods_id: { path_capture: id }
clusters:
  orders:
    endpoints: [127.0.0.1:9000, 127.0.0.1:9001]
routes:
  - id: goods
    match: { path: { template: '/goods/{id}' }, methods: [get] }
    cluster: orders
    policies:
      - deny: { ips: [203.0.113.0/24] }
  - id: all
    cluster: orders
";

    fn compile_text(
        text: &str,
        previous: Option<&Snapshot>,
        metrics: &Metrics,
    ) -> Result<Snapshot, ConfigError> {
        let file = parse_str(text)?;
        let env = |_: &str| None;
        let clock: Arc<dyn Clock> = Arc::new(MonotonicClock::new());
        compile(
            file,
            text,
            &CompileContext {
                metrics,
                blocks: Arc::new(BlockList::new(100, clock.clone())),
                hot_events: Default::default(),
                fleet: None,
                clock,
                previous,
                env: &env,
            },
        )
    }

    #[test]
    fn compiles_routes_keys_clusters_and_policies() {
        let m = Metrics::new();
        let s = compile_text(BASE, None, &m).unwrap();
        assert_eq!(s.router.routes.len(), 2);
        assert_eq!(s.router.routes[0].capture_slots, vec![Some(0)]);
        assert_eq!(s.router.routes[1].capture_slots, vec![None]);
        assert_eq!(s.router.routes[0].matcher.methods, vec![Method::GET]);
        assert!(s.policies.contains_key("goods.deny"));
        assert_eq!(s.generation, 1);
    }

    #[test]
    fn every_route_has_a_total_deadline_unless_it_turns_it_off() {
        let m = Metrics::new();
        let s = compile_text(BASE, None, &m).unwrap();
        let total = |s: &Snapshot, i: usize| s.router.routes[i].timeouts.total;
        assert_eq!(total(&s, 0), Some(RouteTimeouts::DEFAULT_TOTAL));
        assert_eq!(RouteTimeouts::DEFAULT_TOTAL, Duration::from_secs(15));
        let text = BASE
            .replace(
                "  - id: all\n    cluster: orders",
                "  - id: all\n    cluster: orders\n    timeouts: { total: 0s }",
            )
            .replace(
                "    cluster: orders\n    policies:",
                "    cluster: orders\n    timeouts: { total: 2s }\n    policies:",
            );
        let s = compile_text(&text, None, &m).unwrap();
        assert_eq!(total(&s, 0), Some(Duration::from_secs(2)));
        assert_eq!(
            total(&s, 1),
            None,
            "0s turns it off, for long-lived streams"
        );
    }

    #[test]
    fn unknown_cluster_names_path_and_known_clusters() {
        let m = Metrics::new();
        let text = BASE.replace(
            "  - id: all\n    cluster: orders",
            "  - id: all\n    cluster: ordrs",
        );
        let err = compile_text(&text, None, &m).unwrap_err();
        assert_eq!(err.path, "routes[1].cluster");
        assert_eq!(err.message, "unknown cluster \"ordrs\" (known: orders)");
    }

    #[test]
    fn validation_errors_name_their_paths() {
        let m = Metrics::new();
        let cases = [
            (
                "- address: 127.0.0.1:8080",
                "- address: localhost",
                "listeners[0].address",
            ),
            ("[10.0.0.0/8]", "[10.0.0.0/33]", "keys.trusted_proxies[0]"),
            (
                "127.0.0.1:9001]",
                "127.0.0.1]",
                "clusters.orders.endpoints[1]",
            ),
            (
                "methods: [get]",
                "methods: [\"g t\"]",
                "routes[0].match.methods[0]",
            ),
            ("/goods/{id}", "/goods/{id", "routes[0].match.path.template"),
            (
                "[203.0.113.0/24]",
                "[nope]",
                "routes[0].policies[0].deny.ips[0]",
            ),
            ("  - id: all", "  - id: goods", "routes[1].id"),
            (
                "{ header: x-user-id }",
                "{ header: \"bad header\" }",
                "keys.user.header",
            ),
        ];
        for (from, to, want) in cases {
            let text = BASE.replacen(from, to, 1);
            assert_ne!(text, BASE, "replacement {from:?} did not apply");
            let err = compile_text(&text, None, &m).unwrap_err();
            assert_eq!(err.path, want, "for {to:?}: {err}");
        }
    }

    #[test]
    fn unchanged_policies_carry_over_and_changed_ones_are_rebuilt() {
        let m = Metrics::new();
        let first = compile_text(BASE, None, &m).unwrap();
        let same = compile_text(
            &BASE.replace("  - id: all", "  - id: all2"),
            Some(&first),
            &m,
        )
        .unwrap();
        assert_eq!(same.generation, 2);
        assert!(Arc::ptr_eq(
            &first.policies["goods.deny"].policy,
            &same.policies["goods.deny"].policy
        ));
        let changed = compile_text(
            &BASE.replace("203.0.113.0/24", "203.0.114.0/24"),
            Some(&same),
            &m,
        )
        .unwrap();
        assert!(!Arc::ptr_eq(
            &same.policies["goods.deny"].policy,
            &changed.policies["goods.deny"].policy
        ));
    }

    #[test]
    fn admin_token_env_must_resolve() {
        let m = Metrics::new();
        let text = format!("{BASE}admin:\n  token_env: BW_TOKEN\n");
        let err = compile_text(&text, None, &m).unwrap_err();
        assert_eq!(err.path, "admin.token_env");
    }
}
