//! One request's state, from the first filter to `logging`.
//!
//! Plain data with no Pingora session in it, so that admission and the
//! error table can be driven from unit tests.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use breakwater_plugins::overload::GateSlot;
use breakwater_plugins::{ErrorKind, Exchange, Failure, LocalResponse, Outcome, RequestKeys};
use http::{HeaderValue, Method};
use pingora::http::ResponseHeader;
use pingora::{Error, ErrorSource, ErrorType, Result};

use crate::config::snapshot::Snapshot;
use crate::proxy::attempts::Attempts;
use crate::proxy::errors::{self, Facts};
use crate::proxy::overload;
use crate::route::Route;

/// How early a timer may fire and still be the deadline's: timeouts are cut
/// to the time left, and Pingora's timer wheel rounds to a few milliseconds.
const DEADLINE_SLACK: Duration = Duration::from_millis(20);

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
    /// What the admitted policies left for the request.
    pub exchange: Exchange,
    /// A policy's fallback, taken for an upstream's server error: the
    /// exchange is ended and this is given instead (stale-if-error).
    /// Boxed: rare, and the context is moved with every request.
    pub instead: Option<Box<LocalResponse>>,
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
    /// Every endpoint stayed at its `max_in_flight` for the queue's timeout.
    pub endpoints_full: bool,
    pub attempts: Attempts,
    /// The request's place at its cluster's overload gate, held until the
    /// provider answers ([`crate::proxy::overload`]).
    pub overload: Option<GateSlot>,
}

impl RequestCtx {
    pub fn new(started: Instant) -> Self {
        Self {
            started,
            snapshot: None,
            route: None,
            keys: None,
            grpc: false,
            request_id: None,
            disposition: Disposition::Proxied,
            decided_by: None,
            exchange: Exchange::default(),
            instead: None,
            peer_ip: None,
            upstream_started: None,
            upstream_addr: None,
            upstream_status: None,
            upstream_grpc_status: None,
            deadline: None,
            deadline_is_callers: false,
            deadline_before_upstream: false,
            endpoints_full: false,
            attempts: Attempts::default(),
            overload: None,
        }
    }

    /// The outcome class of a failure: [`errors::classify`], except that a
    /// timeout at the caller's own deadline is
    /// [`ErrorKind::DeadlineExceeded`] (the upstream may be fine; the caller
    /// asked for little).
    pub fn failure_kind(&self, e: &Error) -> ErrorKind {
        let kind = errors::classify(e);
        let at_deadline = self
            .deadline
            .is_some_and(|d| crate::time::now() + DEADLINE_SLACK >= d);
        match kind {
            ErrorKind::Timeout | ErrorKind::ConnectTimeout
                if at_deadline && self.deadline_is_callers =>
            {
                ErrorKind::DeadlineExceeded
            }
            other => other,
        }
    }

    /// What the request's state adds to an error, for the error table.
    pub fn facts(&self, e: &Error) -> Facts {
        Facts {
            kind: self.failure_kind(e),
            deadline_before_upstream: self.deadline_before_upstream,
            endpoints_full: self.endpoints_full,
        }
    }

    /// How the current upstream attempt ended, for breakers and policies.
    pub fn attempt_outcome(&self, status: Option<u16>, error: Option<ErrorKind>) -> Outcome {
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

    /// The route the request matched, in the snapshot it started with.
    pub fn route(&self) -> Option<&Route> {
        self.route_in(self.snapshot.as_deref()?)
    }

    /// The route the request matched, in `snapshot` (a clone of the
    /// request's, so that the context stays free to change).
    pub fn route_in<'s>(&self, snapshot: &'s Snapshot) -> Option<&'s Route> {
        self.route.and_then(|i| snapshot.router.routes.get(i))
    }

    /// Books a failed upstream attempt and decides whether to retry it.
    /// `connected`: the failure came after the connection was made.
    pub fn after_failed_attempt(&mut self, method: &Method, e: &Error, connected: bool) -> bool {
        let kind = self.failure_kind(e);
        let outcome = self.attempt_outcome(None, Some(kind));
        self.exchange.attempt_failed(&outcome);
        let Some(snapshot) = self.snapshot.clone() else {
            return false;
        };
        let Some(route) = self.route_in(&snapshot) else {
            return false;
        };
        let responded = connected && self.upstream_status.is_some();
        self.attempts.may_retry(route, method, kind, responded)
    }

    /// A policy's stale copy for an upstream failure, if it left one for
    /// this kind of failure. `facts`: the error table's reading of `e`.
    pub fn stale_for(&mut self, e: &Error, facts: Facts) -> Option<LocalResponse> {
        if e.esource() != &ErrorSource::Upstream {
            return None;
        }
        let failure = match e.etype() {
            ErrorType::HTTPStatus(code) => Failure::Status(*code),
            _ if facts.deadline_before_upstream => Failure::Upstream(ErrorKind::DeadlineExceeded),
            _ => Failure::Upstream(facts.kind),
        };
        self.instead
            .take()
            .map(|b| *b)
            .or_else(|| self.exchange.fail(failure))
    }

    /// The upstream's response head arrived. Ends the attempt with an
    /// error when the route retries this status, or when it is a server
    /// error a policy's stale copy is to answer instead (`fail_to_proxy`
    /// gives it: stale-if-error).
    pub fn upstream_head(&mut self, method: &Method, head: &ResponseHeader) -> Result<()> {
        if head.status.is_informational() {
            return Ok(());
        }
        let status = head.status.as_u16();
        let snapshot = self.snapshot.clone();
        if let Some(route) = snapshot.as_deref().and_then(|s| self.route_in(s)) {
            if self.attempts.may_retry_status(route, method, status) {
                let outcome = self.attempt_outcome(Some(status), None);
                self.exchange.attempt_failed(&outcome);
                let why = "retrying this answer";
                return Err(errors::upstream_error(ErrorType::HTTPStatus(status), why));
            }
        }
        self.upstream_status = Some(status);
        // A trailers-only gRPC answer carries its status in the headers.
        if let Some(s) = errors::grpc_status(&head.headers) {
            self.upstream_grpc_status = Some(s);
        }
        let grpc_status = self.upstream_grpc_status;
        overload::answered(self, status, grpc_status);
        if head.status.is_server_error() {
            if let Some(stale) = self.exchange.fail(Failure::Status(status)) {
                self.instead = Some(Box::new(stale));
                let why = "the upstream answered with a server error";
                return Err(errors::upstream_error(ErrorType::HTTPStatus(status), why));
            }
        }
        Ok(())
    }
}
