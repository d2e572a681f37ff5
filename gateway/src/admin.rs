//! The admin listener: health, metrics, config status and reload.
//!
//! It is a separate Pingora service bound to `admin.address` (loopback by
//! default). Answers are JSON, except `/metrics`. Mutating endpoints (`POST`,
//! `DELETE`) require `Authorization: Bearer <token>` when a token is
//! configured; reads are open, as on Envoy's admin port.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use http::{Method, Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::{json, Value};

use crate::reload::ReloadOutcome;
use crate::state::GatewayState;

pub struct AdminApp {
    pub state: Arc<GatewayState>,
}

/// Most a request body to the admin may carry; larger bodies are refused.
const MAX_BODY: usize = 64 * 1024;

fn json_response(status: StatusCode, body: &Value) -> Response<Vec<u8>> {
    let bytes = serde_json::to_vec_pretty(body).unwrap_or_default();
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("cache-control", "no-store")
        .body(bytes)
        .expect("static response parts are valid")
}

fn error(status: StatusCode, message: &str) -> Response<Vec<u8>> {
    json_response(status, &json!({ "error": message }))
}

pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// Compares in time independent of where the inputs first differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl AdminApp {
    fn authorized(&self, session: &ServerSession) -> bool {
        let snapshot = self.state.snapshot();
        let Some(token) = snapshot.admin_token.as_deref() else {
            return true;
        };
        session
            .req_header()
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|given| constant_time_eq(given.trim().as_bytes(), token.as_bytes()))
    }

    fn healthz(&self) -> Response<Vec<u8>> {
        if self.state.ready.load(Ordering::Acquire) {
            json_response(StatusCode::OK, &json!({ "status": "ok" }))
        } else {
            json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &json!({ "status": "starting" }),
            )
        }
    }

    fn metrics(&self) -> Response<Vec<u8>> {
        Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "text/plain; version=0.0.4")
            .body(self.state.metrics.render())
            .expect("static response parts are valid")
    }

    fn config(&self) -> Response<Vec<u8>> {
        let s = self.state.snapshot();
        let record = |r: Option<crate::reload::ReloadRecord>| {
            r.map(|r| {
                let mut v = serde_json::to_value(&r.outcome).unwrap_or(Value::Null);
                v["at"] = json!(rfc3339(r.at));
                v["trigger"] = json!(r.trigger);
                v
            })
        };
        let clusters: serde_json::Map<String, Value> = s
            .clusters
            .iter()
            .map(|(name, c)| (name.clone(), json!({ "endpoints": c.endpoints })))
            .collect();
        json_response(
            StatusCode::OK,
            &json!({
                "path": self.state.config_path.display().to_string(),
                "generation": s.generation,
                "hash": s.hash,
                "loaded_at": rfc3339(s.loaded_at),
                "last_reload": record(self.state.reloader.last()),
                "last_error": record(self.state.reloader.last_error()),
                "routes": s.router.routes.iter().map(|r| json!({
                    "id": r.id.as_ref(),
                    "cluster": r.cluster.name.as_ref(),
                    "policies": r.chain.entries.iter().map(|e| json!({
                        "name": e.policy.name(),
                        "type": e.policy.kind(),
                    })).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
                "clusters": clusters,
            }),
        )
    }

    async fn reload(&self) -> Response<Vec<u8>> {
        let state = self.state.clone();
        let outcome = tokio::task::spawn_blocking(move || state.reloader.reload(&state, "admin"))
            .await
            .unwrap_or_else(|e| ReloadOutcome::Error {
                error: format!("reload task failed: {e}"),
            });
        let status = match outcome {
            ReloadOutcome::Error { .. } => StatusCode::BAD_REQUEST,
            _ => StatusCode::OK,
        };
        json_response(
            status,
            &serde_json::to_value(&outcome).unwrap_or(Value::Null),
        )
    }

    async fn drain_body(session: &mut ServerSession) -> Result<(), Response<Vec<u8>>> {
        let mut seen = 0;
        loop {
            match session.read_request_body().await {
                Ok(Some(chunk)) => {
                    seen += chunk.len();
                    if seen > MAX_BODY {
                        return Err(error(
                            StatusCode::PAYLOAD_TOO_LARGE,
                            "request body too large",
                        ));
                    }
                }
                Ok(None) => return Ok(()),
                Err(e) => {
                    return Err(error(
                        StatusCode::BAD_REQUEST,
                        &format!("cannot read body: {e}"),
                    ))
                }
            }
        }
    }
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        if let Err(resp) = Self::drain_body(session).await {
            return resp;
        }
        let method = session.req_header().method.clone();
        let path = session.req_header().uri.path().to_string();
        let mutating = method == Method::POST || method == Method::DELETE || method == Method::PUT;
        if mutating && !self.authorized(session) {
            let mut resp = error(StatusCode::UNAUTHORIZED, "a valid bearer token is required");
            resp.headers_mut()
                .insert("www-authenticate", http::HeaderValue::from_static("Bearer"));
            return resp;
        }
        match (method, path.as_str()) {
            (Method::GET, "/healthz") => self.healthz(),
            (Method::GET, "/metrics") => self.metrics(),
            (Method::GET, "/config") => self.config(),
            (Method::POST, "/reload") => self.reload().await,
            (_, "/healthz" | "/metrics" | "/config" | "/reload") => {
                error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
            }
            _ => error(StatusCode::NOT_FOUND, "no such admin endpoint"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
    }
}
