//! The `ProxyHttp` implementation: thin glue between Pingora and the snapshot.
//!
//! Per request: load the snapshot once, route, extract keys, run the route's
//! policy chain (`request_filter`), pick an endpoint (`upstream_peer`), add
//! forwarding headers, and at the end (`logging`) report the outcome to the
//! policies and permits, count metrics and write the access log line.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use breakwater_plugins::abuse::blocked_rejection;
use breakwater_plugins::keys::canonical_ip;
use breakwater_plugins::{
    Decision, ErrorKind, Outcome, Permits, Rejection, RequestBody, RequestKeys, RequestView,
};
use http::HeaderValue;
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::proxy::FailToProxy;
use pingora::{ErrorSource, ErrorType};

use crate::access_log;
use crate::answer;
use crate::attempts::Attempts;
use crate::deadline;
use crate::forwarded::{self, FORWARDED_FOR, FORWARDED_PROTO};
use crate::framing;
use crate::key_extract::RequestParts;
use crate::request_id;
use crate::responses::{render, GatewayResponse, Refusal};
use crate::route::Route;
use crate::snapshot::Snapshot;
use crate::state::GatewayState;

pub use crate::request_id::REQUEST_ID;

/// How early a timer may fire and still be the deadline's: timeouts are cut
/// to the time left, and Pingora's timer wheel rounds to a few milliseconds.
const DEADLINE_SLACK: std::time::Duration = std::time::Duration::from_millis(20);

/// The Breakwater proxy service.
pub struct Gateway {
    pub state: Arc<GatewayState>,
}

/// How the gateway disposed of a request, for logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Disposition {
    #[default]
    Proxied,
    NoRoute,
    Rejected,
    Responded,
}

impl Disposition {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Proxied => "proxied",
            Self::NoRoute => "no_route",
            Self::Rejected => "rejected",
            Self::Responded => "responded",
        }
    }
}

/// Per-request state, from the first filter to `logging`.
pub struct RequestCtx {
    pub started: Instant,
    pub snapshot: Option<Arc<Snapshot>>,
    pub route: Option<usize>,
    pub keys: Option<RequestKeys>,
    pub grpc: bool,
    pub request_id: Option<HeaderValue>,
    pub disposition: Disposition,
    /// The policy that rejected or answered the request, if one did.
    pub decided_by: Option<String>,
    /// How many policies let the request through (they see the outcome).
    pub admitted_by: usize,
    pub permits: Permits,
    pub peer_ip: Option<IpAddr>,
    pub upstream_started: Option<Instant>,
    pub upstream_addr: Option<std::net::SocketAddr>,
    pub upstream_status: Option<u16>,
    /// `grpc-status` from the upstream's headers or trailers.
    pub upstream_grpc_status: Option<u16>,
    /// When the caller (or the route's `total` timeout) stops waiting.
    pub deadline: Option<Instant>,
    /// The deadline is the caller's own (shorter than the route's `total`):
    /// running out of it says nothing about the upstream.
    pub deadline_is_callers: bool,
    /// The deadline ran out before the upstream was called (in a queue, or
    /// between retries).
    pub deadline_before_upstream: bool,
    pub attempts: Attempts,
}

impl RequestCtx {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            snapshot: None,
            route: None,
            keys: None,
            grpc: false,
            request_id: None,
            disposition: Disposition::Proxied,
            decided_by: None,
            admitted_by: 0,
            permits: Permits::default(),
            peer_ip: None,
            upstream_started: None,
            upstream_addr: None,
            upstream_status: None,
            upstream_grpc_status: None,
            deadline: None,
            deadline_is_callers: false,
            deadline_before_upstream: false,
            attempts: Attempts::default(),
        }
    }

    /// The outcome class of a failure: [`classify`], except that a timeout
    /// at the caller's own deadline is [`ErrorKind::DeadlineExceeded`] (the
    /// upstream may be fine; the caller asked for little).
    fn failure_kind(&self, e: &Error) -> ErrorKind {
        let kind = classify(e);
        let at_deadline = self
            .deadline
            .is_some_and(|d| Instant::now() + DEADLINE_SLACK >= d);
        match kind {
            ErrorKind::Timeout | ErrorKind::ConnectTimeout
                if at_deadline && self.deadline_is_callers =>
            {
                ErrorKind::DeadlineExceeded
            }
            other => other,
        }
    }

    /// How the current upstream attempt ended, for breakers and policies.
    fn attempt_outcome(&self, status: Option<u16>, error: Option<ErrorKind>) -> Outcome {
        Outcome {
            status,
            grpc_status: self.upstream_grpc_status,
            latency: self
                .upstream_started
                .map(|t| t.elapsed())
                .unwrap_or_default(),
            error,
            upstream: self.upstream_addr,
        }
    }

    fn route<'s>(&self, snapshot: &'s Snapshot) -> Option<&'s Route> {
        self.route.and_then(|i| snapshot.router.routes.get(i))
    }
}

/// The request's host without port, from the `Host` header or the URI.
fn request_host(req: &pingora::http::RequestHeader) -> Option<&str> {
    let raw = req
        .headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri.host())?;
    // `[v6]:port`, `host:port` or a bare host.
    Some(if let Some(rest) = raw.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        raw.rsplit_once(':').map_or(raw, |(h, _)| h)
    })
}

/// What a request's policy view needs besides its header and keys.
#[derive(Clone, Copy)]
struct Facts {
    tls: bool,
    grpc: bool,
    now_nanos: u64,
}

/// What the route's policies are shown of a request.
fn policy_view<'a>(
    req: &'a pingora::http::RequestHeader,
    route: &'a Route,
    keys: &'a RequestKeys,
    facts: Facts,
    body: RequestBody<'a>,
) -> RequestView<'a> {
    RequestView {
        route: &route.id,
        host: request_host(req),
        tls: facts.tls,
        method: &req.method,
        path: req.uri.path(),
        query: req.uri.query(),
        headers: &req.headers,
        keys,
        grpc: facts.grpc,
        now_nanos: facts.now_nanos,
        body,
    }
}

fn is_grpc(req: &pingora::http::RequestHeader) -> bool {
    req.headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc"))
}

async fn write_local(session: &mut Session, resp: GatewayResponse, ctx: &RequestCtx) -> Result<()> {
    answer::write(session, resp, ctx.grpc, ctx.request_id.as_ref()).await
}

/// The gateway's answer for a policy's rejection.
fn reject(r: Rejection, route: &Route, grpc: bool) -> GatewayResponse {
    render(
        Refusal {
            status: r.status,
            grpc_status: r.grpc_status,
            error: r.kind,
            reason: &r.reason,
            policy: Some(&r.policy),
            cluster: None,
            route: Some(&route.id),
            extra_headers: r.headers,
        },
        grpc,
    )
}

impl Gateway {
    /// Books a failed upstream attempt and decides whether to retry it.
    /// `connected`: the failure came after the connection was made.
    fn after_failed_attempt(
        &self,
        session: &Session,
        ctx: &mut RequestCtx,
        e: &Error,
        connected: bool,
    ) -> bool {
        let kind = ctx.failure_kind(e);
        let outcome = ctx.attempt_outcome(None, Some(kind));
        ctx.attempts.fail_current(&outcome);
        let Some(snapshot) = ctx.snapshot.clone() else {
            return false;
        };
        let Some(route) = ctx.route(&snapshot) else {
            return false;
        };
        let responded = connected && ctx.upstream_status.is_some();
        ctx.attempts
            .may_retry(route, &session.req_header().method, kind, responded)
    }

    /// The block list's verdict on the request's `ip` and `user`, checked on
    /// every route before any policy. An empty list costs one atomic load.
    fn blocked(&self, keys: &RequestKeys) -> Option<Rejection> {
        let blocks = &self.state.blocks;
        if blocks.is_empty() {
            return None;
        }
        [&self.state.ip_key, &self.state.user_key]
            .into_iter()
            .filter_map(|spec| blocks.hash_of(spec, keys))
            .find_map(|hash| blocks.check(hash))
            .map(|hit| blocked_rejection(&hit))
    }
}

/// Maps a Pingora error to the outcome class policies reason about.
pub fn classify(e: &Error) -> ErrorKind {
    if e.esource() == &ErrorSource::Downstream {
        return ErrorKind::Abandoned;
    }
    match e.etype() {
        ErrorType::ConnectRefused => ErrorKind::ConnectRefused,
        ErrorType::ConnectTimedout => ErrorKind::ConnectTimeout,
        ErrorType::ConnectNoRoute
        | ErrorType::ConnectError
        | ErrorType::TLSHandshakeFailure
        | ErrorType::TLSHandshakeTimedout
        | ErrorType::InvalidCert
        | ErrorType::HandshakeError
        | ErrorType::SocketError
        | ErrorType::BindError => ErrorKind::ConnectFailed,
        ErrorType::ReadTimedout | ErrorType::WriteTimedout => ErrorKind::Timeout,
        ErrorType::ConnectionClosed | ErrorType::ReadError | ErrorType::WriteError => {
            ErrorKind::Reset
        }
        ErrorType::InvalidHTTPHeader
        | ErrorType::H1Error
        | ErrorType::H2Error
        | ErrorType::InvalidH2 => ErrorKind::Protocol,
        _ => ErrorKind::Other,
    }
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> Self::CTX {
        RequestCtx::new()
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<bool> {
        let snapshot = self.state.snapshot();
        let req = session.req_header();
        ctx.grpc = is_grpc(req);
        ctx.request_id = Some(request_id::from_request_or_new(&req.headers));
        let peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip())
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        ctx.peer_ip = Some(peer);

        if framing::framed_twice(session) {
            ctx.disposition = Disposition::Rejected;
            ctx.snapshot = Some(snapshot);
            let resp = render(
                Refusal::gateway(
                    400,
                    3, // INVALID_ARGUMENT
                    "bad_request",
                    "the request has both Content-Length and Transfer-Encoding",
                ),
                ctx.grpc,
            );
            write_local(session, resp, ctx).await?;
            return Ok(true);
        }
        let req = session.req_header();
        let path = req.uri.path();
        let Some(matched) =
            snapshot
                .router
                .route(request_host(req), &req.method, path, &req.headers)
        else {
            ctx.disposition = Disposition::NoRoute;
            ctx.snapshot = Some(snapshot);
            let resp = render(
                Refusal::gateway(
                    404,
                    12, // UNIMPLEMENTED
                    "no_route",
                    "no route matches this request",
                ),
                ctx.grpc,
            );
            write_local(session, resp, ctx).await?;
            answer::drain_request_body(session).await;
            return Ok(true);
        };
        let parts = RequestParts {
            method: &req.method,
            path,
            query: req.uri.query(),
            headers: &req.headers,
            peer,
        };
        let keys = snapshot
            .keys
            .extract(&parts, matched.route, &matched.captures);
        let route = matched.route;
        ctx.route = Some(matched.index);
        let caller = deadline::caller_deadline(&req.headers, route.deadline_header.as_ref());
        let budget = deadline::earliest(caller, route.timeouts.total);
        ctx.deadline = budget.map(|b| ctx.started + b);
        ctx.deadline_is_callers =
            caller.is_some_and(|c| route.timeouts.total.is_none_or(|t| c < t));

        let local = match self.blocked(&keys) {
            _ if budget.is_some_and(|b| b.is_zero()) => {
                ctx.disposition = Disposition::Rejected;
                Some(render(
                    Refusal {
                        route: Some(&route.id),
                        ..Refusal::gateway(
                            504,
                            4, // DEADLINE_EXCEEDED
                            "deadline_exceeded",
                            "the caller's deadline had already passed",
                        )
                    },
                    ctx.grpc,
                ))
            }
            Some(r) => {
                ctx.disposition = Disposition::Rejected;
                ctx.decided_by = Some(r.policy.clone());
                Some(reject(r, route, ctx.grpc))
            }
            None if route.chain.is_empty() => None,
            None => {
                let facts = Facts {
                    tls: session.digest().is_some_and(|d| d.ssl_digest.is_some()),
                    grpc: ctx.grpc,
                    now_nanos: snapshot.clock.now_nanos(),
                };
                let view = policy_view(req, route, &keys, facts, RequestBody::Pending);
                let mut v = route.chain.decide(&view, &mut ctx.permits).await;
                if v.needs_body {
                    // A policy must see the body: the ones before it (the
                    // cheap limiters) have let the request through.
                    let body = match crate::body::read_ahead(session, ctx.deadline).await {
                        Ok(body) => body,
                        Err(e) => {
                            // The client's fault (gone, or too slow): still
                            // counted and logged under its route and keys.
                            ctx.permits.cancel();
                            ctx.keys = Some(keys);
                            ctx.snapshot = Some(snapshot);
                            return Err(e);
                        }
                    };
                    let req = session.req_header();
                    let view = policy_view(req, route, &keys, facts, body.view());
                    v = route
                        .chain
                        .decide_from(v.admitted_by, &view, &mut ctx.permits)
                        .await;
                }
                ctx.admitted_by = v.admitted_by;
                ctx.decided_by = v.decided_by(&route.chain).map(|p| p.name().to_string());
                match v.decision {
                    Decision::Continue | Decision::Wait(_) => None,
                    // A stale cached answer beats a refusal for unavailability
                    // (an open breaker, a full queue): stale-if-error. Never
                    // for access control (denied, blocked, rate limited).
                    Decision::Reject(r)
                        if ctx.permits.has_fallback()
                            && matches!(r.kind, "circuit_open" | "overloaded") =>
                    {
                        ctx.disposition = Disposition::Responded;
                        ctx.permits.take_fallback().map(GatewayResponse::from)
                    }
                    Decision::Reject(r) => {
                        ctx.disposition = Disposition::Rejected;
                        Some(reject(r, route, ctx.grpc))
                    }
                    Decision::Respond(lr) => {
                        ctx.disposition = Disposition::Responded;
                        Some(GatewayResponse::from(lr))
                    }
                }
            }
        };
        ctx.keys = Some(keys);
        ctx.snapshot = Some(snapshot);
        match local {
            None => Ok(false),
            Some(resp) => {
                // Nothing goes upstream: permits are released, not failed.
                ctx.permits.cancel();
                write_local(session, resp, ctx).await?;
                answer::drain_request_body(session).await;
                Ok(true)
            }
        }
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut Self::CTX,
    ) -> Result<Box<HttpPeer>> {
        let snapshot = ctx
            .snapshot
            .clone()
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "no snapshot in context"))?;
        let route = ctx
            .route(&snapshot)
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "no route in context"))?;
        let peer = ctx.attempts.next_peer(route).await.ok_or_else(|| {
            Error::explain(
                ErrorType::ConnectNoRoute,
                format!("cluster {} has no endpoint to send to", route.cluster.name),
            )
        })?;
        let mut peer = peer;
        let now = Instant::now();
        let t = &route.timeouts;
        let o = &mut peer.options;
        if let Some(c) = t.connect {
            o.connection_timeout = Some(c);
        }
        if let Some(r) = t.response {
            o.read_timeout = Some(r);
        }
        if let Some(deadline) = ctx.deadline {
            let left = deadline.saturating_duration_since(now);
            if left.is_zero() {
                ctx.deadline_before_upstream = true;
                let mut e = Error::explain(
                    ErrorType::ReadTimedout,
                    "deadline exceeded before calling the upstream",
                );
                e.esource = ErrorSource::Upstream;
                return Err(e);
            }
            // Nothing upstream may outlast the deadline.
            for timeout in [
                &mut o.connection_timeout,
                &mut o.read_timeout,
                &mut o.write_timeout,
            ] {
                *timeout = Some(timeout.map_or(left, |t| t.min(left)));
            }
        }
        ctx.upstream_started = Some(now);
        ctx.upstream_addr = peer._address.as_inet().copied();
        Ok(peer)
    }

    fn fail_to_connect(
        &self,
        session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Self::CTX,
        mut e: Box<Error>,
    ) -> Box<Error> {
        let retry = self.after_failed_attempt(session, ctx, &e, false);
        e.set_retry(retry);
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Self::CTX,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("Peer: {peer}"));
        let body_replayable = !session.as_ref().retry_buffer_truncated();
        if ctx.attempts.take_status_retry() {
            // An answer the route asked to retry; already paid for.
            e.set_retry(body_replayable);
        } else if client_reused && body_replayable && session.req_header().method.is_idempotent() {
            // Pingora's rule: a reused keep-alive connection found closed
            // never carried the request. Not a retry of ours: no budget.
            e.retry.decide_reuse(true);
        } else {
            let retry = body_replayable && self.after_failed_attempt(session, ctx, &e, true);
            e.set_retry(retry);
        }
        e
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut pingora::http::RequestHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        if let Some(peer) = ctx.peer_ip {
            let value = forwarded::with_peer(&upstream.headers, peer);
            upstream.insert_header(FORWARDED_FOR, value)?;
        }
        // The scheme the client used: ours, unless a trusted proxy in front
        // of us says what it saw. A client cannot claim `https` itself.
        let trusted = match (ctx.peer_ip, ctx.snapshot.as_deref()) {
            (Some(peer), Some(s)) => s.keys.is_trusted(canonical_ip(peer)),
            _ => false,
        };
        if !(trusted && forwarded::proto_is_valid(&upstream.headers)) {
            let tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
            upstream.insert_header(FORWARDED_PROTO, if tls { "https" } else { "http" })?;
        }
        if let Some(id) = &ctx.request_id {
            upstream.insert_header(REQUEST_ID, id.clone())?;
        }
        if let Some(deadline) = ctx.deadline {
            let header = ctx
                .snapshot
                .as_ref()
                .and_then(|s| ctx.route(s))
                .and_then(|r| r.deadline_header.clone());
            let left = deadline.saturating_duration_since(Instant::now());
            for (name, value) in
                deadline::forward(&upstream.headers, left, ctx.grpc, header.as_ref())
            {
                upstream.insert_header(name, value)?;
            }
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        if !upstream_response.status.is_informational() {
            let status = upstream_response.status.as_u16();
            if let Some(route) = ctx.snapshot.clone().as_deref().and_then(|s| ctx.route(s)) {
                if ctx
                    .attempts
                    .may_retry_status(route, &session.req_header().method, status)
                {
                    let outcome = ctx.attempt_outcome(Some(status), None);
                    ctx.attempts.fail_current(&outcome);
                    let mut e =
                        Error::explain(ErrorType::HTTPStatus(status), "retrying this answer");
                    e.esource = ErrorSource::Upstream;
                    return Err(e);
                }
            }
            ctx.upstream_status = Some(status);
            // A trailers-only gRPC answer carries its status in the headers.
            if let Some(s) = grpc_status(&upstream_response.headers) {
                ctx.upstream_grpc_status = Some(s);
            }
            // A server error, and a policy left a stale copy: end the exchange
            // here, and `fail_to_proxy` answers with the copy (stale-if-error).
            if upstream_response.status.is_server_error() && ctx.permits.has_fallback() {
                let mut e = Error::explain(
                    ErrorType::HTTPStatus(status),
                    "the upstream answered with a server error",
                );
                e.esource = ErrorSource::Upstream;
                return Err(e);
            }
        }
        Ok(())
    }

    async fn response_trailer_filter(
        &self,
        _session: &mut Session,
        trailers: &mut http::HeaderMap,
        ctx: &mut Self::CTX,
    ) -> Result<Option<bytes::Bytes>> {
        if ctx.permits.has_taps() {
            ctx.permits.tap_trailers(trailers);
        }
        Ok(None)
    }

    fn upstream_response_trailer_filter(
        &self,
        _session: &mut Session,
        trailers: &mut http::HeaderMap,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        if let Some(s) = grpc_status(trailers) {
            ctx.upstream_grpc_status = Some(s);
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        response: &mut ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        if let Some(id) = &ctx.request_id {
            response.insert_header(REQUEST_ID, id.clone())?;
        }
        if ctx.permits.has_taps() {
            ctx.permits
                .tap_header(response.status.as_u16(), &response.headers);
        }
        // Headers policies add to the upstream's answer.
        for (name, value) in ctx.permits.response_headers() {
            response.insert_header(name.clone(), value.clone())?;
        }
        Ok(())
    }

    /// Enforces the request's deadline while the response streams: each
    /// read is already bounded by the time that was left when the attempt
    /// began, and a chunk that arrives after the deadline ends the exchange.
    /// So an upstream that trickles bytes is cut at its first chunk past the
    /// deadline, at most one read timeout late.
    fn upstream_response_body_filter(
        &self,
        _session: &mut Session,
        _body: &mut Option<bytes::Bytes>,
        end_of_stream: bool,
        ctx: &mut Self::CTX,
    ) -> Result<Option<std::time::Duration>> {
        match ctx.deadline {
            Some(deadline) if !end_of_stream && Instant::now() >= deadline => {
                let mut e = Error::explain(
                    ErrorType::ReadTimedout,
                    "the request's deadline passed while the upstream was still sending",
                );
                e.esource = ErrorSource::Upstream;
                Err(e)
            }
            _ => Ok(None),
        }
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<bytes::Bytes>,
        end_of_stream: bool,
        ctx: &mut Self::CTX,
    ) -> Result<Option<std::time::Duration>> {
        if ctx.permits.has_taps() {
            ctx.permits
                .tap_body(body.as_deref().unwrap_or(&[]), end_of_stream);
        }
        Ok(None)
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut Self::CTX,
    ) -> FailToProxy {
        let cluster = ctx
            .snapshot
            .as_ref()
            .and_then(|s| ctx.route(s))
            .map(|r| (r.cluster.name.clone(), r.id.clone()));
        let (status, grpc_status, error, reason) = match (e.esource(), e.etype()) {
            (_, ErrorType::HTTPStatus(code)) => {
                (*code, 13, "http_error", "request failed".to_string())
            }
            (
                ErrorSource::Downstream,
                ErrorType::ReadError | ErrorType::WriteError | ErrorType::ConnectionClosed,
            ) => (0, 0, "client_gone", String::new()),
            (ErrorSource::Downstream, ErrorType::ReadTimedout) => (
                408,
                4, // DEADLINE_EXCEEDED
                "client_timeout",
                "the client did not send its request in time".to_string(),
            ),
            (ErrorSource::Downstream, _) => {
                (400, 3, "bad_request", "malformed request".to_string())
            }
            (ErrorSource::Upstream, _) if ctx.deadline_before_upstream => (
                504,
                4,
                "deadline_exceeded",
                "the deadline passed before the upstream was called".to_string(),
            ),
            (ErrorSource::Upstream, _) => match ctx.failure_kind(e) {
                ErrorKind::DeadlineExceeded => (
                    504,
                    4,
                    "deadline_exceeded",
                    "the caller's deadline passed before the upstream answered".to_string(),
                ),
                ErrorKind::Timeout | ErrorKind::ConnectTimeout => {
                    (504, 4, "upstream_timeout", describe_upstream_error(e))
                }
                _ => (502, 14, "upstream_unavailable", describe_upstream_error(e)),
            },
            _ => (500, 13, "internal", "internal error".to_string()),
        };
        // A deadline that ran out is the caller's or the route's, not the
        // cluster's: the answer names the route only.
        let cluster_name = cluster
            .as_ref()
            .filter(|_| error != "deadline_exceeded")
            .map(|(c, _)| c.as_ref());
        // The response has begun: no new status line can be sent. A gRPC
        // call still learns why from its trailers; others see it cut short.
        if session.response_written().is_some() {
            if ctx.grpc && status > 0 && session.is_http2() {
                let message = match cluster_name {
                    Some(c) => format!("{reason} ({c})"),
                    None => reason.clone(),
                };
                if let Err(write_err) =
                    answer::write_grpc_trailers(session, grpc_status, &message).await
                {
                    tracing::debug!(%write_err, "could not write the gRPC trailers");
                }
            }
            return FailToProxy {
                error_code: status,
                can_reuse_downstream: false,
            };
        }
        // The upstream failed: a stale cached answer, if a policy left one,
        // is better than an error (stale-if-error).
        let upstream_failed = matches!(error, "upstream_timeout" | "upstream_unavailable")
            || (error == "http_error" && status >= 500);
        let fallback = if upstream_failed {
            ctx.permits.take_fallback()
        } else {
            None
        };
        // The connection is not reused after a failed exchange: say so
        // (`Connection: close`), or a client would send its next request on
        // it and have it reset.
        session.set_keepalive(None);
        if let Some(stale) = fallback {
            let status = stale.status;
            ctx.disposition = Disposition::Responded;
            if let Err(write_err) = write_local(session, GatewayResponse::from(stale), ctx).await {
                tracing::debug!(%write_err, "could not write the stale response");
            }
            return FailToProxy {
                error_code: status,
                can_reuse_downstream: false,
            };
        }
        if status > 0 {
            let resp = render(
                Refusal {
                    status,
                    grpc_status,
                    error,
                    reason: &reason,
                    policy: None,
                    cluster: cluster_name,
                    route: cluster.as_ref().map(|(_, r)| r.as_ref()),
                    extra_headers: vec![],
                },
                ctx.grpc,
            );
            if let Err(write_err) = write_local(session, resp, ctx).await {
                tracing::debug!(%write_err, "could not write the error response");
            }
            answer::drain_request_body(session).await;
        }
        FailToProxy {
            error_code: status,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Self::CTX) {
        let status = session
            .response_written()
            .map(|r| r.status.as_u16())
            .unwrap_or(0);
        let snapshot = ctx.snapshot.clone();
        let route = snapshot.as_ref().and_then(|s| ctx.route(s));
        match route {
            Some(r) => r.requests.inc(status),
            None => self.state.unrouted.inc(status),
        }
        if let (Some(_), Some(r)) = (ctx.upstream_started, route) {
            let outcome = ctx.attempt_outcome(ctx.upstream_status, e.map(|e| ctx.failure_kind(e)));
            r.cluster.latency.observe(outcome.latency.as_secs_f64());
            ctx.attempts.finish(&outcome);
            if e.is_none() && ctx.permits.has_taps() {
                ctx.permits.end_taps();
            }
            ctx.permits.complete(&outcome);
            if let Some(keys) = &ctx.keys {
                r.chain.on_outcome(ctx.admitted_by, keys, &outcome);
            }
        }
        if snapshot
            .as_ref()
            .is_some_and(|s| s.source.logging.access_log)
        {
            access_log::write(session, ctx, route, status, e);
        }
    }
}

/// `grpc-status` as a number, if present and valid.
fn grpc_status(headers: &http::HeaderMap) -> Option<u16> {
    headers
        .get("grpc-status")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn describe_upstream_error(e: &Error) -> String {
    match e.etype() {
        ErrorType::ConnectRefused => "connection refused by upstream".into(),
        ErrorType::ConnectTimedout => "timed out connecting to upstream".into(),
        ErrorType::ReadTimedout => "upstream did not answer in time".into(),
        ErrorType::WriteTimedout => "timed out sending to upstream".into(),
        ErrorType::ConnectNoRoute => "no endpoint available".into(),
        ErrorType::ConnectionClosed => "upstream closed the connection".into(),
        other => format!("upstream error: {}", other.as_str()),
    }
}
