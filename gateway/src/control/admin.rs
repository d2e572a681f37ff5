//! The admin listener: health, metrics, config status and reload.
//!
//! It is a separate Pingora service bound to `admin.address` (loopback by
//! default; any other address needs a token). Answers are JSON, except
//! `/metrics`. Every request passes [`gate::admit`] first: tokens
//! ([`admin_access`](crate::config::admin_access)), the `Origin`/`Host` rule that keeps web pages out
//! ([`origin`]); `GET /hotkeys/stream` then takes one of a capped number of
//! slots ([`streams`]).

pub mod gate;
pub mod origin;
pub mod streams;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use http::{Method, Response, StatusCode};
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ReusedHttpStream};
use pingora::http::ResponseHeader;
use pingora::protocols::http::ServerSession;
use pingora::server::ShutdownWatch;
use serde_json::{json, Value};

use breakwater_plugins::breaker::Breaker;
use breakwater_plugins::Policy;

use crate::control::{admin_endpoints, admin_hotkeys, admin_overload};
use crate::state::drain::DrainCause;
use crate::state::reload::ReloadOutcome;
use crate::state::GatewayState;
use gate::{Refusal, RequestView};
use streams::StreamSlots;

pub struct AdminApp {
    pub state: Arc<GatewayState>,
    /// Live `GET /hotkeys/stream` subscribers, capped by
    /// `admin.max_stream_subscribers`.
    streams: StreamSlots,
}

/// Most a request body to the admin may carry; larger bodies are refused.
const MAX_BODY: usize = 64 * 1024;

pub(crate) fn json_response(status: StatusCode, body: &Value) -> Response<Vec<u8>> {
    let bytes = serde_json::to_vec_pretty(body).unwrap_or_default();
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("cache-control", "no-store")
        .body(bytes)
        .expect("static response parts are valid")
}

pub(crate) fn error(status: StatusCode, message: &str) -> Response<Vec<u8>> {
    json_response(status, &json!({ "error": message }))
}

pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

impl AdminApp {
    pub fn new(state: Arc<GatewayState>) -> Self {
        Self {
            state,
            streams: StreamSlots::default(),
        }
    }

    /// Runs the gate on the request just read: the refusal to send, if any.
    fn refusal(&self, session: &ServerSession) -> Option<Response<Vec<u8>>> {
        let req = session.req_header();
        // A header that is present but not text is kept as present (and empty),
        // so that it fails its check rather than being taken as absent.
        let header = |name: http::header::HeaderName| {
            req.headers
                .get(name)
                .map(|v| v.to_str().unwrap_or_default())
        };
        let view = RequestView {
            method: &req.method,
            path: req.uri.path(),
            host: header(http::header::HOST),
            origin: header(http::header::ORIGIN),
            authorization: header(http::header::AUTHORIZATION),
            local_ip: session
                .server_addr()
                .and_then(|a| a.as_inet())
                .map(|a| a.ip()),
        };
        let refusal = gate::admit(&self.state.snapshot().admin, &view).err()?;
        Some(match refusal {
            Refusal::Unauthorized(message) => {
                let mut resp = error(StatusCode::UNAUTHORIZED, &message);
                resp.headers_mut()
                    .insert("www-authenticate", http::HeaderValue::from_static("Bearer"));
                resp
            }
            Refusal::Forbidden(message) => error(StatusCode::FORBIDDEN, &message),
        })
    }

    /// `GET /live`: the process answers. Nothing else: a liveness probe
    /// that failed on overload or drain would get a busy instance killed.
    fn live(&self) -> Response<Vec<u8>> {
        json_response(StatusCode::OK, &json!({ "status": "live" }))
    }

    /// `GET /ready` and `GET /healthz`: whether to send this instance
    /// traffic. 503 while starting and while draining.
    fn ready(&self) -> Response<Vec<u8>> {
        if let Some(cause) = self.state.drain.cause() {
            return json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &json!({ "status": "draining", "drain": cause.as_str() }),
            );
        }
        if self.state.ready.load(Ordering::Acquire) {
            // A degraded fleet link still serves (with local limits): the
            // instance stays in rotation and says so.
            // `cluster` is `fleet`'s old name, kept for existing probes.
            match &self.state.fleet_status {
                Some(c) if !c.fleet.is_global() => json_response(
                    StatusCode::OK,
                    &json!({ "status": "degraded", "fleet": "degraded", "cluster": "degraded" }),
                ),
                Some(_) => json_response(
                    StatusCode::OK,
                    &json!({ "status": "ok", "fleet": "global", "cluster": "global" }),
                ),
                None => json_response(StatusCode::OK, &json!({ "status": "ok" })),
            }
        } else {
            json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &json!({ "status": "starting" }),
            )
        }
    }

    /// `POST /drain`: out of rotation on demand, still serving.
    fn drain(&self) -> Response<Vec<u8>> {
        if self.state.drain.start(DrainCause::Admin) {
            tracing::info!(target: "breakwater::admin", "drain started from the admin: /ready answers 503");
        }
        let cause = self.state.drain.cause().unwrap_or(DrainCause::Admin);
        json_response(
            StatusCode::OK,
            &json!({ "status": "draining", "drain": cause.as_str() }),
        )
    }

    /// `DELETE /drain`: back in rotation, unless the process is stopping.
    fn undrain(&self) -> Response<Vec<u8>> {
        let was = self.state.drain.cause();
        match self.state.drain.cancel() {
            None => {
                if was.is_some() {
                    tracing::info!(target: "breakwater::admin", "drain called off from the admin");
                }
                json_response(StatusCode::OK, &json!({ "status": "serving" }))
            }
            Some(cause) => json_response(
                StatusCode::CONFLICT,
                &json!({
                    "error": "the process is stopping (SIGTERM): its drain cannot be called off",
                    "drain": cause.as_str(),
                }),
            ),
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
        let record = |r: Option<crate::state::reload::ReloadRecord>| {
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
                    "policies": route_policies(r),
                })).collect::<Vec<_>>(),
                "clusters": clusters,
                "deprecated": s.source.deprecations(),
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

    async fn read_body(session: &mut ServerSession) -> Result<Vec<u8>, Response<Vec<u8>>> {
        let mut body = Vec::new();
        loop {
            match session.read_request_body().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > MAX_BODY {
                        return Err(error(
                            StatusCode::PAYLOAD_TOO_LARGE,
                            "request body too large",
                        ));
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => return Ok(body),
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

/// `POST /blocks` body.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct BlockRequest {
    key: String,
    ttl: breakwater_plugins::duration::HumanDuration,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    status: Option<u16>,
}

impl AdminApp {
    /// `GET /limits?top=N`: every limit-like policy with its top keys.
    fn limits(&self, query: &str) -> Response<Vec<u8>> {
        let top = form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == "top")
            .and_then(|(_, v)| v.parse::<usize>().ok())
            .unwrap_or(10)
            .min(1000);
        let snapshot = self.state.snapshot();
        let limits: Vec<Value> = snapshot
            .registries
            .limits
            .values()
            .filter_map(|l| l.report(top))
            .map(|r| serde_json::to_value(r).unwrap_or(Value::Null))
            .collect();
        json_response(StatusCode::OK, &json!({ "limits": limits }))
    }

    fn blocks_list(&self) -> Response<Vec<u8>> {
        let blocks = self.state.blocks.list();
        json_response(
            StatusCode::OK,
            &json!({ "count": blocks.len(), "blocks": blocks }),
        )
    }

    /// `POST /blocks {"key": "ip:203.0.113.7", "ttl": "10m", "reason": "..."}`.
    fn block(&self, body: &[u8]) -> Response<Vec<u8>> {
        let req: BlockRequest = match serde_json::from_slice(body) {
            Ok(r) => r,
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    &format!("expected {{\"key\": \"ip:203.0.113.7\", \"ttl\": \"10m\", \"reason\": \"...\"}}: {e}"),
                )
            }
        };
        let status = req.status.unwrap_or(403);
        if !(400..=599).contains(&status) {
            return error(StatusCode::BAD_REQUEST, "status must be 400-599");
        }
        let reason = req
            .reason
            .unwrap_or_else(|| "blocked by an operator".into());
        match self
            .state
            .blocks
            .block_text(&req.key, req.ttl.as_duration(), reason, "admin", status)
        {
            Ok(key) => json_response(
                StatusCode::CREATED,
                &json!({ "blocked": key, "ttl_secs": req.ttl.as_duration().as_secs() }),
            ),
            Err(e) => error(StatusCode::BAD_REQUEST, &e.to_string()),
        }
    }

    /// `DELETE /blocks/{key}`, the key percent-encoded or plain.
    fn unblock(&self, raw: &str) -> Response<Vec<u8>> {
        let key = percent_encoding::percent_decode_str(raw).decode_utf8_lossy();
        match self.state.blocks.unblock_text(&key) {
            Ok(true) => json_response(StatusCode::OK, &json!({ "unblocked": key })),
            Ok(false) => error(StatusCode::NOT_FOUND, &format!("{key} is not blocked")),
            Err(e) => error(StatusCode::BAD_REQUEST, &e.to_string()),
        }
    }
}

/// A route's policies for `GET /config`: its chain, then its outlier
/// detector (an endpoint-scoped breaker, which is not in the chain).
fn route_policies(r: &crate::route::Route) -> Vec<Value> {
    let chain = r.chain.entries.iter().map(|e| &e.policy);
    let outlier = r.outlier.iter().map(|o| o.as_ref() as &dyn Policy);
    chain
        .map(|p| p.as_ref())
        .chain(outlier)
        .map(|p| json!({ "name": p.name(), "type": p.kind() }))
        .collect()
}

impl AdminApp {
    /// Every breaker of the live config, cluster- and endpoint-scoped.
    fn all_breakers(&self) -> Vec<std::sync::Arc<Breaker>> {
        self.state.snapshot().registries.every_breaker()
    }

    fn find_breaker(&self, raw: &str) -> Option<std::sync::Arc<Breaker>> {
        let name = percent_encoding::percent_decode_str(raw).decode_utf8_lossy();
        self.all_breakers().into_iter().find(|b| b.name() == name)
    }

    fn breakers_list(&self) -> Response<Vec<u8>> {
        let breakers: Vec<_> = self.all_breakers().iter().map(|b| b.snapshot()).collect();
        json_response(StatusCode::OK, &json!({ "breakers": breakers }))
    }

    fn breaker(&self, raw: &str) -> Response<Vec<u8>> {
        match self.find_breaker(raw) {
            Some(b) => json_response(
                StatusCode::OK,
                &serde_json::to_value(b.snapshot()).unwrap_or(Value::Null),
            ),
            None => error(StatusCode::NOT_FOUND, "no such breaker"),
        }
    }

    /// `POST /breakers/{name}/open|close|reset`.
    fn breaker_force(&self, rest: &str) -> Response<Vec<u8>> {
        let Some((name, action)) = rest.rsplit_once('/') else {
            return error(
                StatusCode::NOT_FOUND,
                "use /breakers/{name}/open, /close or /reset",
            );
        };
        let Some(b) = self.find_breaker(name) else {
            return error(StatusCode::NOT_FOUND, "no such breaker");
        };
        match action {
            "open" => b.force_open(),
            "close" => b.force_close(),
            "reset" => b.reset(),
            _ => {
                return error(
                    StatusCode::NOT_FOUND,
                    "use /breakers/{name}/open, /close or /reset",
                )
            }
        }
        tracing::warn!(target: "breakwater::breaker", breaker = %b.name(), action, "breaker state forced by the admin");
        json_response(
            StatusCode::OK,
            &serde_json::to_value(b.snapshot()).unwrap_or(Value::Null),
        )
    }
}

/// The admin as a Pingora app: every request passes the gate, then
/// request/response endpoints go through [`AdminApp::serve`] and
/// `GET /hotkeys/stream` keeps the connection and streams.
pub struct AdminServer(pub AdminApp);

/// Writes a whole answer. `false` if the connection broke.
async fn write(http: &mut ServerSession, resp: Response<Vec<u8>>) -> bool {
    let (parts, body) = resp.into_parts();
    let header: ResponseHeader = parts.into();
    if http.write_response_header(Box::new(header)).await.is_err() {
        return false;
    }
    body.is_empty() || http.write_response_body(body.into(), true).await.is_ok()
}

#[async_trait]
impl HttpServerApp for AdminServer {
    async fn process_new_http(
        self: &Arc<Self>,
        mut http: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        match http.read_request().await {
            Ok(true) => {}
            Ok(false) => return None,
            Err(e) => {
                tracing::debug!(target: "breakwater::admin", error = %e, "could not read an admin request");
                return None;
            }
        }
        if let Some(refusal) = self.0.refusal(&http) {
            // The body, if any, is left unread: the connection cannot be reused.
            http.set_keepalive(None);
            write(&mut http, refusal).await;
            let _ = http.finish().await;
            return None;
        }
        let req = http.req_header();
        if req.method == Method::GET && req.uri.path() == "/hotkeys/stream" {
            let cap = self.0.state.snapshot().admin.max_stream_subscribers;
            let Some(_slot) = self.0.streams.try_take(cap) else {
                http.set_keepalive(None);
                let message = format!(
                    "too many hot-key stream subscribers ({cap}, admin.max_stream_subscribers); retry later"
                );
                write(&mut http, error(StatusCode::SERVICE_UNAVAILABLE, &message)).await;
                let _ = http.finish().await;
                return None;
            };
            admin_hotkeys::stream(&self.0.state, &mut http, shutdown).await;
            return None;
        }
        http.set_keepalive(if *shutdown.borrow() { None } else { Some(60) });
        let resp = self.0.serve(&mut http).await;
        if !write(&mut http, resp).await {
            return None;
        }
        let settings = HttpPersistentSettings::for_session(&http);
        match http.finish().await {
            Ok(reusable) => reusable.map(|s| ReusedHttpStream::from_reusable_stream(s, settings)),
            Err(_) => None,
        }
    }
}

impl AdminApp {
    /// Serves a request that passed the gate.
    async fn serve(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let body = match Self::read_body(session).await {
            Ok(b) => b,
            Err(resp) => return resp,
        };
        let method = session.req_header().method.clone();
        let path = session.req_header().uri.path().to_string();
        let query = session.req_header().uri.query().unwrap_or("").to_string();
        match (method, path.as_str()) {
            (Method::GET, "/healthz" | "/ready") => self.ready(),
            (Method::GET, "/live") => self.live(),
            (Method::POST, "/drain") => self.drain(),
            (Method::DELETE, "/drain") => self.undrain(),
            (Method::GET, "/metrics") => self.metrics(),
            (Method::GET, "/config") => self.config(),
            (Method::POST, "/reload") => self.reload().await,
            (Method::GET, "/limits") => self.limits(&query),
            (Method::GET, "/blocks") => self.blocks_list(),
            (Method::POST, "/blocks") => self.block(&body),
            (Method::DELETE, p) if p.starts_with("/blocks/") => {
                self.unblock(&p["/blocks/".len()..])
            }
            (Method::GET, "/breakers") => self.breakers_list(),
            (Method::GET, p) if p.starts_with("/breakers/") => {
                self.breaker(&p["/breakers/".len()..])
            }
            (Method::POST, p) if p.starts_with("/breakers/") => {
                self.breaker_force(&p["/breakers/".len()..])
            }
            // `/cluster` is `/fleet`'s old name, still served.
            (Method::GET, "/fleet" | "/cluster") => match &self.state.fleet_status {
                Some(c) => json_response(StatusCode::OK, &c.view()),
                None => json_response(
                    StatusCode::NOT_FOUND,
                    &json!({ "error": "fleet mode is off (no `fleet` section)" }),
                ),
            },
            (Method::GET, "/overload") => admin_overload::list(&self.state),
            (Method::GET, "/endpoints") => admin_endpoints::list(&self.state),
            (Method::GET, p) if p.starts_with("/overload/") => {
                admin_overload::one(&self.state, &p["/overload/".len()..])
            }
            (Method::GET, "/hotkeys") => admin_hotkeys::list(
                &self.state,
                json!({
                    "live": self.streams.live(),
                    "max": self.state.snapshot().admin.max_stream_subscribers,
                }),
            ),
            (Method::GET, "/hotkeys/stats") => admin_hotkeys::stats(&self.state, &query),
            (Method::DELETE, p) if p.starts_with("/hotkeys/") => {
                admin_hotkeys::forget(&self.state, &p["/hotkeys/".len()..])
            }
            (Method::DELETE, "/cache") => admin_hotkeys::purge(&self.state),
            (Method::DELETE, p) if p.starts_with("/cache/") => {
                admin_hotkeys::invalidate(&self.state, &p["/cache/".len()..])
            }
            (
                _,
                "/healthz" | "/ready" | "/live" | "/drain" | "/metrics" | "/config" | "/reload"
                | "/limits" | "/overload" | "/endpoints" | "/blocks" | "/breakers" | "/fleet"
                | "/cluster" | "/hotkeys" | "/hotkeys/stats" | "/hotkeys/stream" | "/cache",
            ) => error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
            _ => error(StatusCode::NOT_FOUND, "no such admin endpoint"),
        }
    }
}
