//! The admin's overload endpoints:
//!
//! - `GET /overload`: every cluster's overload gate: whether it is on and
//!   overloaded, the learned limit, calls in flight and queued, the
//!   provider's learned unloaded round trip (`min_rtt_ms`) and the last
//!   interval's (`rtt_ms`), the queue's bounds, and calls refused by class;
//! - `GET /overload/{cluster}`: one cluster's.

use http::{Response, StatusCode};
use serde_json::{json, Value};

use crate::control::admin::{error, json_response};
use crate::state::GatewayState;
use crate::upstream::Cluster;

/// `GET /overload`.
pub fn list(state: &GatewayState) -> Response<Vec<u8>> {
    let snapshot = state.snapshot();
    let clusters: Vec<Value> = snapshot.clusters.values().map(|c| report(c)).collect();
    json_response(StatusCode::OK, &json!({ "clusters": clusters }))
}

/// `GET /overload/{cluster}`.
pub fn one(state: &GatewayState, raw: &str) -> Response<Vec<u8>> {
    let name = percent_encoding::percent_decode_str(raw).decode_utf8_lossy();
    match state.snapshot().clusters.get(name.as_ref()) {
        Some(c) => json_response(StatusCode::OK, &report(c)),
        None => error(StatusCode::NOT_FOUND, "no such cluster"),
    }
}

fn report(c: &Cluster) -> Value {
    match &c.overload {
        Some(o) => {
            let mut v = serde_json::to_value(o.gate.report()).unwrap_or(Value::Null);
            if let Some(m) = v.as_object_mut() {
                m.insert("enabled".into(), Value::Bool(true));
            }
            v
        }
        None => json!({ "cluster": &*c.name, "enabled": false }),
    }
}
