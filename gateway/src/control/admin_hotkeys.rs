//! The admin's hot-key endpoints:
//!
//! - `GET /hotkeys`: every `hotkey` rule with its hot keys (key, hash, rate,
//!   since, actions), the recent events, and the stream subscribers (live
//!   and cap);
//! - `GET /hotkeys/stats?minutes=N`: each rule's top keys over the last N
//!   complete minutes (at most 60), with counts;
//! - `GET /hotkeys/stream`: Server-Sent Events, one `hot` or `cooled` event
//!   per change, for applications that subscribe as seed 000's Burning
//!   clients do; at most `admin.max_stream_subscribers` at once (the caller,
//!   `admin.rs`, holds the slot while [`stream`] runs);
//! - `DELETE /hotkeys/{rule}/{key}`: forget that a key is hot;
//!   it turns hot again, with a new event, if it still crosses the threshold;
//! - `DELETE /cache/{rule}/{key}`: drop a key's cached answers (every route,
//!   path, query and `vary` variant); the key is its text, or `%23<hash>`
//!   (`#` and the 16 hex digits `GET /hotkeys` shows), the one way to name a
//!   single key whose text was cut; `DELETE /cache`: purge every rule's cache.
//!
//! Who may call which is decided before these run (`admin::gate`).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::{Response, StatusCode};
use pingora::http::ResponseHeader;
use pingora::protocols::http::ServerSession;
use pingora::server::ShutdownWatch;
use serde_json::{json, Value};
use tokio::sync::broadcast::error::RecvError;

use breakwater_plugins::cache::KeyRef;
use breakwater_plugins::hotkey::{HotKeyRule, STATS_MINUTES};
use breakwater_plugins::Policy;

use crate::control::admin::{error, json_response, rfc3339};
use crate::state::GatewayState;

/// A comment line this often keeps idle proxies and clients from timing out.
const HEARTBEAT: Duration = Duration::from_secs(15);

/// The live config's `hotkey` rules, in name order.
fn rules(state: &GatewayState) -> Vec<Arc<HotKeyRule>> {
    state
        .snapshot()
        .registries
        .hot_keys
        .values()
        .cloned()
        .collect()
}

/// `GET /hotkeys`. `streams` is the subscriber count, shown as is.
pub fn list(state: &GatewayState, streams: Value) -> Response<Vec<u8>> {
    let now = state.clock.now_nanos();
    let wall = SystemTime::now();
    let rules: Vec<Value> = rules(state)
        .iter()
        .map(|r| {
            let cfg = r.detector().config();
            let tracked = r.detector().tracked();
            let hot: Vec<Value> = r
                .hot_keys()
                .into_iter()
                .map(|k| {
                    let ago = Duration::from_nanos(now.saturating_sub(k.since_nanos));
                    json!({
                        "key": k.key,
                        "hash": format!("{:016x}", k.hash),
                        "rate_per_sec": (k.rate * 10.0).round() / 10.0,
                        "since": rfc3339(wall.checked_sub(ago).unwrap_or(wall)),
                        "actions": r.actions(),
                    })
                })
                .collect();
            json!({
                "rule": r.name(),
                "key": r.key_text(),
                "threshold": cfg.threshold,
                "window": humantime::format_duration(cfg.window).to_string(),
                "hot_ttl": humantime::format_duration(cfg.hot_ttl).to_string(),
                "actions": r.actions(),
                "tracked": tracked.tracked,
                "max_tracked": tracked.max_keys,
                "counts": r.counts(),
                "cache": r.cache().map(|c| c.counts()),
                "hot": hot,
            })
        })
        .collect();
    let recent: Vec<Value> = state
        .hot_events
        .recent()
        .iter()
        .map(|e| serde_json::to_value(e.as_ref()).unwrap_or(Value::Null))
        .collect();
    json_response(
        StatusCode::OK,
        &json!({ "rules": rules, "recent_events": recent, "stream_subscribers": streams }),
    )
}

/// `GET /hotkeys/stats?minutes=N`.
pub fn stats(state: &GatewayState, query: &str) -> Response<Vec<u8>> {
    let minutes = match form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == "minutes") {
        None => 5,
        Some((_, v)) => match v.parse::<usize>() {
            Ok(n) if (1..=STATS_MINUTES).contains(&n) => n,
            _ => {
                return error(
                    StatusCode::BAD_REQUEST,
                    &format!("minutes must be a whole number from 1 to {STATS_MINUTES}"),
                )
            }
        },
    };
    let rules: Vec<Value> = rules(state)
        .iter()
        .map(|r| {
            let top: Vec<Value> = r
                .top_over(minutes)
                .into_iter()
                .map(|(key, count)| json!({ "key": key, "count": count }))
                .collect();
            json!({ "rule": r.name(), "key": r.key_text(), "top": top })
        })
        .collect();
    json_response(
        StatusCode::OK,
        &json!({ "minutes": minutes, "rules": rules }),
    )
}

/// `DELETE /hotkeys/{rule}/{key}`.
pub fn forget(state: &GatewayState, rest: &str) -> Response<Vec<u8>> {
    let Some((rule, key)) = rest.split_once('/') else {
        return error(StatusCode::NOT_FOUND, "use /hotkeys/{rule}/{key}");
    };
    let key = percent_encoding::percent_decode_str(key).decode_utf8_lossy();
    let rules = rules(state);
    let Some(p) = rules.iter().find(|p| p.name() == rule) else {
        return error(StatusCode::NOT_FOUND, "no such hotkey rule");
    };
    if p.forget(&key) {
        tracing::info!(target: "breakwater::hotkeys", rule, key = %key, "hot key forgotten by the admin");
        json_response(StatusCode::OK, &json!({ "forgotten": key }))
    } else {
        error(StatusCode::NOT_FOUND, "that key is not hot")
    }
}

/// `DELETE /cache/{rule}/{key}`.
pub fn invalidate(state: &GatewayState, rest: &str) -> Response<Vec<u8>> {
    let Some((rule, key)) = rest.split_once('/') else {
        return error(
            StatusCode::NOT_FOUND,
            "use /cache/{rule}/{key} or DELETE /cache",
        );
    };
    let key = percent_encoding::percent_decode_str(key).decode_utf8_lossy();
    let rules = rules(state);
    let Some(cache) = rules
        .iter()
        .find(|p| p.name() == rule)
        .and_then(|p| p.cache())
    else {
        return error(
            StatusCode::NOT_FOUND,
            "no hotkey rule with a cache by that name",
        );
    };
    let named = KeyRef::parse(&key);
    let by = match named {
        KeyRef::Hash(_) => "hash",
        KeyRef::Text(_) => "text",
    };
    cache.invalidate(named);
    tracing::info!(target: "breakwater::cache", rule, key = %key, by, "cache entries invalidated by the admin");
    json_response(
        StatusCode::OK,
        &json!({ "invalidated": key, "by": by, "rule": rule }),
    )
}

/// `DELETE /cache`.
pub fn purge(state: &GatewayState) -> Response<Vec<u8>> {
    let mut purged = Vec::new();
    for p in rules(state) {
        if let Some(cache) = p.cache() {
            cache.purge();
            purged.push(p.name().to_string());
        }
    }
    tracing::info!(target: "breakwater::cache", rules = ?purged, "caches purged by the admin");
    json_response(StatusCode::OK, &json!({ "purged": purged }))
}

/// `GET /hotkeys/stream`: writes events until the client leaves or the
/// process shuts down. The connection is never reused.
///
/// A client that leaves is noticed at once, not at the next write: the
/// loop also waits for the connection to close (`read_body_or_idle`), so the
/// caller's subscriber slot is given back as soon as the client is gone.
pub async fn stream(state: &GatewayState, session: &mut ServerSession, shutdown: &ShutdownWatch) {
    let mut rx = state.hot_events.subscribe();
    let mut shutdown = shutdown.clone();
    let mut header = ResponseHeader::build(200, None).expect("static status");
    for (k, v) in [
        ("content-type", "text/event-stream"),
        ("cache-control", "no-store"),
    ] {
        header.insert_header(k, v).expect("static header");
    }
    session.set_keepalive(None);
    if session
        .write_response_header(Box::new(header))
        .await
        .is_err()
    {
        return;
    }
    if session
        .write_response_body(": breakwater hot-key events\n\n".into(), false)
        .await
        .is_err()
    {
        return;
    }
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    heartbeat.tick().await;
    loop {
        let chunk = tokio::select! {
            _ = shutdown.changed() => break,
            // The request has no body: this ends only when the client closes
            // the connection (or sends bytes it should not).
            _ = session.read_body_or_idle(true) => return,
            _ = heartbeat.tick() => ": heartbeat\n\n".to_string(),
            event = rx.recv() => match event {
                Ok(e) => format!(
                    "event: {}\ndata: {}\n\n",
                    e.event,
                    serde_json::to_string(e.as_ref()).unwrap_or_default()
                ),
                // Fell behind: say how many were lost, as a comment.
                Err(RecvError::Lagged(n)) => format!(": {n} events dropped (slow reader)\n\n"),
                Err(RecvError::Closed) => break,
            },
        };
        if session
            .write_response_body(chunk.into(), false)
            .await
            .is_err()
        {
            return;
        }
    }
    let _ = session.write_response_body(Vec::new().into(), true).await;
}
