//! The `routes:` list: each route's match, cluster, deadlines, retries and
//! policies.

use std::collections::HashSet;
use std::time::Duration;

use breakwater_plugins::bounds::{duration_in, MAX_TIMEOUT};
use breakwater_plugins::config_error::ConfigPath;
use breakwater_plugins::duration::HumanDuration;
use breakwater_plugins::ConfigError;
use http::HeaderName;

use super::clusters::Clusters;
use super::context::CompileContext;
use super::file::{RouteFile, TimeoutsFile};
use super::matcher::compile_matcher;
use super::policies::compile_route_policies;
use crate::route::keys::{EndpointNames, KeyExtractor, KeySource};
use crate::route::{Route, RouteTimeouts};

/// Compiles the routes in declared order (the order they match in). Route
/// ids are unique and not empty.
pub fn compile_routes(
    routes: &[RouteFile],
    clusters: &Clusters,
    keys: &KeyExtractor,
    cx: &mut CompileContext<'_>,
) -> Result<Vec<Route>, ConfigError> {
    let custom_names: Vec<String> = keys.custom.iter().map(|(n, _)| n.clone()).collect();
    let mut ids = HashSet::new();
    let mut compiled = Vec::with_capacity(routes.len());
    for (i, r) in routes.iter().enumerate() {
        let path = ConfigPath::root().item("routes", i);
        if r.id.trim().is_empty() {
            return Err(path.field("id").error("must not be empty"));
        }
        if !ids.insert(r.id.as_str()) {
            return Err(path
                .field("id")
                .error(format!("duplicate route id \"{}\"", r.id)));
        }
        let target = RouteTarget {
            clusters,
            keys,
            custom_names: &custom_names,
        };
        compiled.push(compile_route(r, &path, &target, cx)?);
    }
    Ok(compiled)
}

/// What every route compiles against.
struct RouteTarget<'a> {
    clusters: &'a Clusters,
    keys: &'a KeyExtractor,
    custom_names: &'a [String],
}

fn compile_route(
    r: &RouteFile,
    path: &ConfigPath,
    target: &RouteTarget<'_>,
    cx: &mut CompileContext<'_>,
) -> Result<Route, ConfigError> {
    let clusters = target.clusters;
    let cluster = clusters.get(&r.cluster).cloned().ok_or_else(|| {
        let known: Vec<&str> = clusters.keys().map(String::as_str).collect();
        path.field("cluster").error(format!(
            "unknown cluster \"{}\" (known: {})",
            r.cluster,
            known.join(", ")
        ))
    })?;
    let matcher = compile_matcher(&r.matcher, &path.field("match"))?;
    let capture_names = matcher
        .path
        .as_ref()
        .map(|p| p.capture_names().to_vec())
        .unwrap_or_default();
    let policies = compile_route_policies(r, path, &cluster, target.custom_names, cx)?;
    let retry = r
        .retry
        .as_ref()
        .map(|c| c.compile(&path.field("retry")))
        .transpose()?;
    let priority = r
        .priority
        .as_ref()
        .map(|p| p.compile(target.custom_names, &path.field("priority")))
        .transpose()?
        .unwrap_or_default();
    Ok(Route {
        priority,
        id: r.id.as_str().into(),
        outlier: policies.outlier,
        cluster_breaker: policies.cluster_breaker,
        retry,
        timeouts: route_timeouts(&r.timeouts, &path.field("timeouts"))?,
        deadline_header: deadline_header(r.deadline_header.as_deref(), path)?,
        endpoint: EndpointNames::new(&r.id),
        matcher,
        cluster,
        chain: policies.chain,
        capture_slots: capture_slots(target.keys, &capture_names),
        requests: cx.metrics.status_counters(&r.id),
    })
}

/// For each custom key, the index of the route's path capture it reads, when
/// it is a `path_capture` the route's template declares.
fn capture_slots(keys: &KeyExtractor, capture_names: &[String]) -> Vec<Option<usize>> {
    keys.custom
        .iter()
        .map(|(_, source)| match source {
            KeySource::PathCapture(name) => capture_names.iter().position(|n| n == name),
            _ => None,
        })
        .collect()
}

/// The route's deadlines. A deadline is an `Instant` plus one of these:
/// bounded, it cannot overflow.
fn route_timeouts(t: &TimeoutsFile, path: &ConfigPath) -> Result<RouteTimeouts, ConfigError> {
    let timeout = |d: Option<HumanDuration>, field: &str| {
        d.map(|d| {
            duration_in(
                d.as_duration(),
                Duration::from_millis(1)..=MAX_TIMEOUT,
                path.field(field),
            )
        })
        .transpose()
    };
    Ok(RouteTimeouts {
        connect: timeout(t.connect, "connect")?,
        response: timeout(t.response, "response")?,
        // Every route has a total deadline unless it turns it off with `0s`
        // (as Envoy's route timeout): without one, an upstream that trickles
        // bytes holds the request and its slots for ever.
        total: match t.total {
            None => Some(RouteTimeouts::DEFAULT_TOTAL),
            Some(d) if d.as_duration().is_zero() => None,
            d => timeout(d, "total")?,
        },
    })
}

/// The header that carries the caller's deadline, if the route names one.
fn deadline_header(
    raw: Option<&str>,
    path: &ConfigPath,
) -> Result<Option<HeaderName>, ConfigError> {
    raw.map(|h| {
        HeaderName::from_bytes(h.as_bytes()).map_err(|_| {
            path.field("deadline_header")
                .error(format!("\"{h}\" is not a valid header name"))
        })
    })
    .transpose()
}
