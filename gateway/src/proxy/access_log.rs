//! One structured access-log line per request, through `tracing`.
//!
//! Written under the target `breakwater::access`, so operators can route or
//! filter it (`logging.level: "info,breakwater::access=off"`). The format (text
//! or JSON) is the subscriber's.

use pingora::prelude::*;

use crate::proxy::context::RequestCtx;
use crate::route::Route;

pub fn write(
    session: &Session,
    ctx: &RequestCtx,
    route: Option<&Route>,
    status: u16,
    e: Option<&Error>,
) {
    let req = session.req_header();
    let keys = ctx.keys.as_ref();
    let custom = match (keys, ctx.snapshot.as_deref()) {
        (Some(k), Some(s)) if !s.keys.custom.is_empty() => render_custom(k, &s.keys.custom),
        _ => String::new(),
    };
    tracing::info!(
        target: "breakwater::access",
        method = %req.method,
        path = req.uri.path(),
        status,
        route = route.map(|r| r.id.as_ref()).unwrap_or("-"),
        cluster = route.map(|r| r.cluster.name.as_ref()).unwrap_or("-"),
        upstream = %ctx.upstream_addr.map(|a| a.to_string()).unwrap_or_else(|| "-".into()),
        upstream_status = ctx.upstream_status.unwrap_or(0),
        decision = ctx.disposition.as_str(),
        policy = ctx.decided_by.as_deref().unwrap_or("-"),
        ip = %keys.map(|k| k.client).or(ctx.peer_ip).map(|ip| ip.to_string()).unwrap_or_default(),
        user = keys.and_then(|k| k.user.as_deref()).unwrap_or("-"),
        endpoint = keys.map(|k| k.endpoint.as_ref()).unwrap_or("-"),
        keys = custom.as_str(),
        latency_ms = ctx.started.elapsed().as_secs_f64() * 1000.0,
        request_id = ctx.request_id.as_ref().and_then(|v| v.to_str().ok()).unwrap_or("-"),
        error = e.map(|e| e.etype().as_str()).unwrap_or("-"),
        "request"
    );
}

/// Custom keys as `name=value,name=value`, skipping absent ones.
fn render_custom(
    keys: &breakwater_plugins::RequestKeys,
    names: &[(String, crate::route::keys::KeySource)],
) -> String {
    let mut out = String::new();
    for ((name, _), value) in names.iter().zip(&keys.custom) {
        if let Some(v) = value {
            if !out.is_empty() {
                out.push(',');
            }
            out.push_str(name);
            out.push('=');
            out.push_str(v);
        }
    }
    out
}
