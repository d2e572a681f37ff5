//! The `ProxyHttp` implementation: thin glue between Pingora and the snapshot.
//!
//! A request's path through the gateway, hook by hook:
//!
//! - `request_filter`: [`admission`](crate::proxy::admission) routes it, extracts
//!   its keys, sets its deadline and runs the chain (block list first); a
//!   local answer is written here.
//! - `upstream_peer`: [`attempts`](crate::proxy::attempts) picks the endpoint (the
//!   outlier detector's guard goes to the exchange) and the timeouts are cut
//!   to the deadline.
//! - `fail_to_connect` / `error_while_proxy`: the retry rules decide.
//! - `upstream_response_filter` … `response_body_filter`: the exchange sees
//!   the response (a 5xx may give way to a policy's stale copy).
//! - `fail_to_proxy`: the [`errors`](crate::proxy::errors) table answers.
//! - `logging`: the exchange finishes with the outcome; metrics and the
//!   access log.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use async_trait::async_trait;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::FailToProxy;
use pingora::ErrorType;

use crate::config::snapshot::Snapshot;
use crate::proxy::access_log;
use crate::proxy::admission::{self, Admission, Admit, Arrival};
use crate::proxy::answer;
use crate::proxy::context::{Disposition, RequestCtx};
use crate::proxy::deadline;
use crate::proxy::errors;
use crate::proxy::forwarded;
use crate::proxy::framing;
use crate::proxy::overload;
use crate::proxy::request_id;
use crate::proxy::responses::{render, Scope};
use crate::proxy::upstream_headers;
use crate::state::GatewayState;
use crate::upstream::NoPeer;

pub use crate::proxy::request_id::REQUEST_ID;

/// The Breakwater proxy service.
pub struct Gateway {
    pub state: Arc<GatewayState>,
}

impl Gateway {
    fn step<'a>(
        &'a self,
        snapshot: &'a Arc<Snapshot>,
        req: &'a RequestHeader,
        peer: IpAddr,
        tls: bool,
    ) -> Admit<'a> {
        Admit {
            snapshot,
            blocks: &self.state.blocks,
            arrival: Arrival { req, peer, tls },
        }
    }

    /// Runs admission, reading the body ahead when a policy must see it.
    async fn admit(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<Admission> {
        let snapshot = self.state.snapshot();
        let peer = ctx.peer_ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let tls = forwarded::is_tls(session);
        let first = self.step(&snapshot, session.req_header(), peer, tls);
        let at = match first.run(ctx).await {
            Admission::NeedsBody { at } => at,
            done => return Ok(done),
        };
        // A policy must see the body: the ones before it (the cheap
        // limiters) have let the request through. A client that fails to
        // send it (gone, too slow) is still logged under its route and keys.
        let body = crate::proxy::body::read_ahead(session, ctx.deadline)
            .await
            .inspect_err(|_| ctx.exchange.cancel())?;
        let step = self.step(&snapshot, session.req_header(), peer, tls);
        Ok(step.resume(ctx, at, body.view()).await)
    }
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> Self::CTX {
        RequestCtx::new(crate::time::now())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<bool> {
        let req = session.req_header();
        ctx.grpc = admission::is_grpc(req);
        ctx.request_id = Some(request_id::from_request_or_new(&req.headers));
        ctx.peer_ip = Some(
            session
                .client_addr()
                .and_then(|a| a.as_inet())
                .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |a| a.ip()),
        );
        if let Some(r) = framing::refusal(session) {
            ctx.disposition = Disposition::Rejected;
            ctx.snapshot = Some(self.state.snapshot());
            let resp = render(r, Scope::default(), ctx.grpc);
            answer::write(session, resp, ctx.grpc, ctx.request_id.as_ref()).await?;
            return Ok(true);
        }
        match self.admit(session, ctx).await? {
            Admission::Proxy | Admission::NeedsBody { .. } => {
                if ctx.overload.is_some() {
                    // The call is provider work from here: a client that
                    // closes its side is not a reason to drop it.
                    session.downstream_session.set_abort_on_close(false);
                }
                Ok(false)
            }
            Admission::Answer(resp) => {
                // Nothing goes upstream: guards are released, not failed.
                ctx.exchange.cancel();
                answer::write_and_drain(session, resp, ctx.grpc, ctx.request_id.as_ref()).await?;
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
            .route_in(&snapshot)
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "no route in context"))?;
        let key = route.cluster.key_hash(ctx.keys.as_ref());
        let (mut peer, endpoint) = match ctx.attempts.next_peer(route, key).await {
            Ok(choice) => choice,
            Err(NoPeer::Full) => {
                ctx.endpoints_full = true;
                return Err(errors::upstream_error(
                    ErrorType::ConnectNoRoute,
                    "every endpoint is at its max_in_flight",
                ));
            }
            Err(NoPeer::None) => {
                return Err(Error::explain(
                    ErrorType::ConnectNoRoute,
                    format!("cluster {} has no endpoint to send to", route.cluster.name),
                ))
            }
        };
        // The first attempt holds no earlier endpoint guard: without an
        // outlier detector, nothing to hand over.
        if endpoint.is_some() || ctx.attempts.count > 1 {
            ctx.exchange.attempt(endpoint);
        }
        let now = crate::time::now();
        let left = ctx.deadline.map(|d| d.saturating_duration_since(now));
        if left.is_some_and(|l| l.is_zero()) {
            ctx.deadline_before_upstream = true;
            return Err(errors::upstream_error(
                ErrorType::ReadTimedout,
                "deadline exceeded before calling the upstream",
            ));
        }
        deadline::bound_timeouts(&mut peer.options, &route.timeouts, left);
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
        let retry = ctx.after_failed_attempt(&session.req_header().method, &e, false);
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
            let retry =
                body_replayable && ctx.after_failed_attempt(&session.req_header().method, &e, true);
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
        upstream_headers::set(upstream, ctx, forwarded::is_tls(session))
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        ctx.upstream_head(&session.req_header().method, upstream_response)
    }

    async fn response_trailer_filter(
        &self,
        _session: &mut Session,
        trailers: &mut http::HeaderMap,
        ctx: &mut Self::CTX,
    ) -> Result<Option<bytes::Bytes>> {
        ctx.exchange.response_trailers(trailers);
        Ok(None)
    }

    fn upstream_response_trailer_filter(
        &self,
        _session: &mut Session,
        trailers: &mut http::HeaderMap,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        if let Some(s) = errors::grpc_status(trailers) {
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
        // Guards read the head; the headers policies add come back.
        let added = ctx
            .exchange
            .response_head(response.status.as_u16(), &response.headers);
        for (name, value) in added {
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
            Some(deadline) if !end_of_stream && crate::time::now() >= deadline => {
                Err(errors::upstream_error(
                    ErrorType::ReadTimedout,
                    "the request's deadline passed while the upstream was still sending",
                ))
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
        ctx.exchange
            .response_body(body.as_deref().unwrap_or(&[]), end_of_stream);
        Ok(None)
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut Self::CTX,
    ) -> FailToProxy {
        let facts = ctx.facts(e);
        let rejection = errors::rejection_for(e, facts);
        let snapshot = ctx.snapshot.clone();
        let route = snapshot.as_deref().and_then(|s| ctx.route_in(s));
        let scope = errors::scope_for(route, &rejection);
        // The upstream failed: a stale cached answer, if a policy left one,
        // is better than an error (stale-if-error).
        let stale = match session.response_written() {
            None => ctx.stale_for(e, facts),
            Some(_) => None,
        };
        if stale.is_some() {
            ctx.disposition = Disposition::Responded;
        }
        let error_code = answer::failure(
            session,
            rejection,
            scope,
            stale,
            ctx.grpc,
            ctx.request_id.as_ref(),
        )
        .await;
        FailToProxy {
            error_code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Self::CTX) {
        let status = session
            .response_written()
            .map(|r| r.status.as_u16())
            .unwrap_or(0);
        let snapshot = ctx.snapshot.clone();
        let route = snapshot.as_deref().and_then(|s| ctx.route_in(s));
        match route {
            Some(r) => r.requests.inc(status),
            None => self.state.unrouted.inc(status),
        }
        if let (Some(_), Some(r)) = (ctx.upstream_started, route) {
            let outcome = ctx.attempt_outcome(ctx.upstream_status, e.map(|e| ctx.failure_kind(e)));
            r.cluster.latency.observe(outcome.latency.as_secs_f64());
            ctx.exchange.finish(&outcome);
        }
        if let Some(r) = route {
            overload::ended(ctx, r, e);
        }
        if snapshot
            .as_ref()
            .is_some_and(|s| s.source.logging.access_log)
        {
            access_log::write(session, ctx, route, status, e);
        }
    }
}
