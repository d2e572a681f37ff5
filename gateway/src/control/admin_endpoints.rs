//! `GET /endpoints`: every cluster's endpoints and what the gateway knows
//! of them: the active health checks' verdict (in rotation or not, the
//! current streak, probes and failures, the last probe's result, how long
//! since the last change) and the probe settings; how the cluster balances,
//! each endpoint's weight, cap and requests in flight, and the requests
//! waiting for an endpoint under its cap.

use http::{Response, StatusCode};
use serde_json::{json, Value};

use crate::control::admin::json_response;
use crate::state::GatewayState;
use crate::upstream::Cluster;

/// `GET /endpoints`.
pub fn list(state: &GatewayState) -> Response<Vec<u8>> {
    let snapshot = state.snapshot();
    let now = state.clock.now_nanos();
    let clusters: Vec<Value> = snapshot.clusters.values().map(|c| report(c, now)).collect();
    json_response(StatusCode::OK, &json!({ "clusters": clusters }))
}

fn report(c: &Cluster, now: u64) -> Value {
    let health = c.health.as_deref();
    let endpoints: Vec<Value> = c
        .endpoints
        .iter()
        .zip(&c.addrs)
        .enumerate()
        .map(|(i, (name, addr))| {
            let checked = health.and_then(|h| h.get(*addr)).map(|e| {
                let r = e.health.report();
                json!({
                    "up": r.up,
                    "streak": r.streak,
                    "checks": r.checks,
                    "failures": r.failures,
                    "last": r.last,
                    "since_ms": now.saturating_sub(r.changed_at) / 1_000_000,
                    "ups": r.ups,
                    "downs": r.downs,
                })
            });
            json!({
                "endpoint": name,
                "address": addr.to_string(),
                "in_rotation": health.is_none_or(|h| h.is_up(*addr) || !h.any_up()),
                "share": health.map_or(1.0, |h| h.share(*addr)),
                "weight": c.balancer.weight(i),
                "in_flight": c.loads[i].in_flight(),
                "max_in_flight": c.caps[i],
                "health": checked,
            })
        })
        .collect();
    let settings = health.map(|h| {
        let s = &h.settings;
        json!({
            "probe": s.probe.kind(),
            "interval_ms": s.interval.as_millis() as u64,
            "timeout_ms": s.timeout.as_millis() as u64,
            "rise": s.rise,
            "fall": s.fall,
            "all_down": !h.any_up(),
        })
    });
    json!({
        "cluster": &*c.name,
        "balance": c.balance_name(),
        "queued": c.waiters.waiting(),
        "health_check": settings,
        "endpoints": endpoints,
    })
}
