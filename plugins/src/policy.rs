//! The seam between the gateway and its policies.
//!
//! A route's policies run in declared order in the request phase. Each returns
//! a [`Decision`]; the first one that is not [`Decision::Continue`] ends the
//! chain and the gateway writes its answer. A policy that must see how the
//! request ended (a breaker, a concurrency limit) either implements
//! [`Policy::on_outcome`], or hands out a [`Permit`]: a guard that the gateway
//! completes with the outcome, or simply drops when the request is abandoned
//! (client gone, error path, panic). Dropping without completing is how a
//! permit learns the request was abandoned, so releases happen on every path.

use std::any::Any;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method};

use crate::block_list::BlockList;
use crate::report::LimitReport;
use crate::{Clock, RequestKeys};

/// What a policy's config needs from the gateway to compile.
#[derive(Clone)]
pub struct PolicyEnv<'a> {
    /// Custom key names, in `KeyRef::Custom` order.
    pub custom_keys: &'a [String],
    pub clock: Arc<dyn Clock>,
    /// The process-wide block list (abuse detection and admin blocks).
    pub blocks: Arc<BlockList>,
    /// The process-wide feed of hot-key events (`hotkey` rules publish).
    pub hot_events: Arc<crate::hotkey::HotEventHub>,
    /// Cluster mode's shared view of the fleet; `None` without a `cluster`
    /// section (then `scope: global` is a config error).
    pub fleet: Option<Arc<crate::fleet::Fleet>>,
    /// The route's upstream cluster and its endpoints (for breakers).
    pub cluster: &'a str,
    pub cluster_endpoints: &'a [std::net::SocketAddr],
}

/// What a policy is shown of a request. Borrowed: building it costs nothing.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    /// The id of the route the request matched.
    pub route: &'a str,
    /// The host the request named (`Host`, or the HTTP/2 authority), without
    /// its port, as routing saw it.
    pub host: Option<&'a str>,
    /// The request arrived over TLS (`https`).
    pub tls: bool,
    pub method: &'a Method,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    pub keys: &'a RequestKeys,
    /// True for gRPC requests (`content-type: application/grpc*`), whose
    /// rejections the gateway renders as gRPC statuses.
    pub grpc: bool,
    /// The policy clock's time when the request arrived, in nanoseconds.
    pub now_nanos: u64,
    /// The request body, when the gateway read it ahead for a policy that
    /// asked ([`Policy::wants_body`]).
    pub body: RequestBody<'a>,
}

/// What a policy is shown of the request body.
///
/// The body is read before the chain runs only when a policy of the route
/// asks for it, and only when it is small and of known size: a body is
/// otherwise streamed to the upstream as it arrives, and holding a large or
/// endless one back would cost memory and time before any policy decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestBody<'a> {
    /// The whole body (empty for a request without one).
    Whole(&'a [u8]),
    /// Not read: it is too large, of unknown length (chunked, or an HTTP/2
    /// stream that goes on), or its client waits for `100 Continue`. It goes
    /// upstream as it arrives.
    Unread,
    /// Not read yet: the chain stops before the first policy that wants it
    /// ([`Policy::wants_body`]), so that the policies before it (the cheap
    /// limiters) decide first, and the gateway reads it then. A policy that
    /// does not want the body sees this.
    Pending,
}

/// A policy's verdict on a request.
pub enum Decision {
    /// Let the request go on to the next policy, then upstream.
    Continue,
    /// Refuse it: the gateway answers with the rejection and never calls upstream.
    Reject(Rejection),
    /// Answer it locally (for example from a cache) without calling upstream.
    Respond(LocalResponse),
    /// Decide later (a queue). The gateway awaits the future, then goes on
    /// with the next policy or refuses. Dropping the future (the client left)
    /// must release whatever it waits for.
    Wait(Waiter),
}

/// What a [`Decision::Wait`] resolves to.
pub type Waiter = Pin<Box<dyn Future<Output = WaitOutcome> + Send>>;

/// The end of a wait.
pub enum WaitOutcome {
    /// Go on, holding this permit (if any) for the rest of the request.
    Admit(Option<Box<dyn Permit>>),
    Reject(Rejection),
    /// Answer locally (for example with another request's response).
    Respond(LocalResponse),
}

/// Sees the response the client gets: a policy that shares or stores
/// responses (request coalescing, caching) registers one with
/// [`Permits::tap`]. Dropped when the request ends, complete or not.
pub trait ResponseTap: Send + Sync {
    fn header(&mut self, status: u16, headers: &HeaderMap);
    fn body(&mut self, chunk: &[u8], end_of_stream: bool);
    /// Trailers (gRPC's status lives there); the body's end follows.
    fn trailers(&mut self, _trailers: &HeaderMap) {}
}

impl std::fmt::Debug for Decision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Decision::Continue => f.write_str("Continue"),
            Decision::Reject(r) => f.debug_tuple("Reject").field(r).finish(),
            Decision::Respond(r) => f.debug_tuple("Respond").field(r).finish(),
            Decision::Wait(_) => f.write_str("Wait(..)"),
        }
    }
}

/// Why and how a request is refused.
#[derive(Debug, Clone)]
pub struct Rejection {
    /// HTTP status, e.g. 403, 429, 503.
    pub status: u16,
    /// The gRPC status code used when the request is gRPC (7 PERMISSION_DENIED,
    /// 8 RESOURCE_EXHAUSTED, 14 UNAVAILABLE, ...).
    pub grpc_status: u8,
    /// A short machine-readable class: `denied`, `rate_limited`, `circuit_open`.
    pub kind: &'static str,
    /// The name of the policy that refused.
    pub policy: String,
    /// A human-readable reason for the body and the logs.
    pub reason: String,
    /// Extra response headers (`Retry-After`, `RateLimit`, ...).
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

/// A complete response made by a policy.
#[derive(Debug, Clone)]
pub struct LocalResponse {
    pub status: u16,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
    /// Trailers, sent after the body: a shared gRPC answer's `grpc-status`.
    pub trailers: Option<HeaderMap>,
}

/// How the upstream exchange ended, as a policy needs to know it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// The upstream's HTTP status, if it answered.
    pub status: Option<u16>,
    /// The `grpc-status` from headers or trailers, if any.
    pub grpc_status: Option<u16>,
    /// Time from sending upstream to the end of the exchange.
    pub latency: Duration,
    /// Set when the exchange failed rather than answered.
    pub error: Option<ErrorKind>,
    /// The endpoint the (last) attempt went to.
    pub upstream: Option<std::net::SocketAddr>,
}

/// Classes of upstream failure. Policies care about the class, not the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The connection was refused: the upstream provably did not see the request.
    ConnectRefused,
    /// Connecting took longer than the connect timeout.
    ConnectTimeout,
    /// Any other failure to connect (no route, TLS handshake).
    ConnectFailed,
    /// The upstream did not answer within the read timeout.
    Timeout,
    /// The connection broke (reset or closed) during the exchange.
    Reset,
    /// The upstream spoke malformed HTTP.
    Protocol,
    /// The client went away before the exchange finished.
    Abandoned,
    /// The caller's own deadline (`grpc-timeout`, the deadline header) ran
    /// out before the upstream finished. It says nothing about the upstream:
    /// a client that sends `grpc-timeout: 1m` must not trip breakers for
    /// everyone. (The route's own `total` running out is a [`Self::Timeout`].)
    DeadlineExceeded,
    /// Anything else.
    Other,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::ConnectRefused => "connect_refused",
            ErrorKind::ConnectTimeout => "connect_timeout",
            ErrorKind::ConnectFailed => "connect_failed",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Reset => "reset",
            ErrorKind::Protocol => "protocol",
            ErrorKind::Abandoned => "abandoned",
            ErrorKind::DeadlineExceeded => "deadline_exceeded",
            ErrorKind::Other => "other",
        }
    }
}

/// A guard held for the life of an admitted request.
///
/// The gateway calls [`Permit::complete`] once with the outcome. If the request
/// ends without an outcome, the permit is dropped instead; its `Drop` must then
/// treat the request as abandoned and release whatever it holds.
pub trait Permit: Send + Sync {
    /// The request went upstream and ended with `outcome`.
    fn complete(self: Box<Self>, outcome: &Outcome);

    /// The request never went upstream (a later policy refused it, or it was
    /// answered locally). Release without counting a success or a failure.
    /// The default just drops the permit; a permit whose `Drop` counts an
    /// abandonment must override this.
    fn cancel(self: Box<Self>) {}
}

/// The permits handed out to one request, completed or dropped together,
/// and the taps that watch its response.
#[derive(Default)]
pub struct Permits {
    held: Vec<Box<dyn Permit>>,
    taps: Vec<Box<dyn ResponseTap>>,
    taps_ended: bool,
    fallback: Option<(LocalResponse, Box<dyn FnOnce() + Send + Sync>)>,
    response_headers: Vec<(HeaderName, HeaderValue)>,
}

impl Permits {
    /// Registers a tap on the response.
    pub fn tap(&mut self, tap: Box<dyn ResponseTap>) {
        self.taps.push(tap);
    }

    pub fn has_taps(&self) -> bool {
        !self.taps.is_empty()
    }

    /// Feeds the response header to every tap.
    pub fn tap_header(&mut self, status: u16, headers: &HeaderMap) {
        for t in &mut self.taps {
            t.header(status, headers);
        }
    }

    /// Feeds a response body chunk to every tap.
    pub fn tap_body(&mut self, chunk: &[u8], end_of_stream: bool) {
        if self.taps_ended {
            return;
        }
        self.taps_ended = end_of_stream;
        for t in &mut self.taps {
            t.body(chunk, end_of_stream);
        }
    }

    /// Feeds the response's trailers to every tap, and ends the response:
    /// trailers are the last part of it.
    pub fn tap_trailers(&mut self, trailers: &HeaderMap) {
        if self.taps_ended {
            return;
        }
        for t in &mut self.taps {
            t.trailers(trailers);
        }
        self.tap_body(&[], true);
    }

    /// Ends the response for taps that saw no end of stream (a response
    /// without a body). Call only when the response completed.
    pub fn end_taps(&mut self) {
        self.tap_body(&[], true);
    }

    /// A response to give the client instead of a failure: the upstream
    /// failing, or a later policy refusing (an open breaker). The hot-key
    /// cache sets its stale entry here (stale-if-error).
    /// `on_served` runs if the gateway gives it.
    pub fn set_fallback(
        &mut self,
        response: LocalResponse,
        on_served: impl FnOnce() + Send + Sync + 'static,
    ) {
        self.fallback = Some((response, Box::new(on_served)));
    }

    /// The fallback, for the gateway to give now.
    pub fn take_fallback(&mut self) -> Option<LocalResponse> {
        self.fallback.take().map(|(response, on_served)| {
            on_served();
            response
        })
    }

    pub fn has_fallback(&self) -> bool {
        self.fallback.is_some()
    }

    /// A header for the upstream's response, if the request goes upstream
    /// (the cache's `Cache-Status` on a miss).
    pub fn add_response_header(&mut self, name: HeaderName, value: HeaderValue) {
        self.response_headers.push((name, value));
    }

    pub fn response_headers(&self) -> &[(HeaderName, HeaderValue)] {
        &self.response_headers
    }

    pub fn push(&mut self, permit: Box<dyn Permit>) {
        self.held.push(permit);
    }

    pub fn len(&self) -> usize {
        self.held.len()
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// Cancels every permit: the request never reached the upstream.
    pub fn cancel(&mut self) {
        while let Some(p) = self.held.pop() {
            p.cancel();
        }
    }

    /// Completes every permit with the outcome, in reverse order of admission.
    pub fn complete(&mut self, outcome: &Outcome) {
        while let Some(p) = self.held.pop() {
            p.complete(outcome);
        }
    }
}

impl std::fmt::Debug for Permits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Permits")
            .field("held", &self.held.len())
            .finish()
    }
}

/// A request policy. Implementations keep their mutable state lock-free or
/// sharded: `on_request` runs on every request of the routes that use it.
pub trait Policy: Send + Sync + 'static {
    /// The policy's unique name within the config (used in metrics, logs and
    /// rejection bodies).
    fn name(&self) -> &str;

    /// The policy type as written in the config (`deny`, `rate_limit`, ...).
    fn kind(&self) -> &'static str;

    /// Whether this policy must see the whole body of this request (as
    /// [`RequestView::body`]) to decide: `dedupe` hashes it, so that only
    /// the same request joins another. The gateway then reads a small body
    /// ahead; a body it cannot read ahead is shown as [`RequestBody::Unread`].
    /// The default is no: reading ahead costs a copy and delays the upstream
    /// call until the body has arrived.
    fn wants_body(&self, _headers: &HeaderMap) -> bool {
        false
    }

    /// Decides on a request. A policy that needs to see the outcome may push a
    /// [`Permit`] into `permits`.
    fn on_request(&self, req: &RequestView<'_>, permits: &mut Permits) -> Decision;

    /// Called once after the upstream answered or failed, for requests this
    /// policy let through. The default does nothing.
    fn on_outcome(&self, _keys: &RequestKeys, _outcome: &Outcome) {}

    /// Periodic upkeep off the request path (cooling hot keys, rolling
    /// statistics). The gateway calls it about every 100 ms with the policy
    /// clock's time. The default does nothing.
    fn tick(&self, _now_nanos: u64) {}

    /// The policy's fleet-wide state, for policies with `scope: global`.
    fn global(&self) -> Option<&dyn crate::fleet::GlobalSync> {
        None
    }

    /// For admin endpoints that inspect a policy's state by concrete type.
    fn as_any(&self) -> &dyn Any;

    /// For limit-like policies: counts, tracked keys and the `top` hottest
    /// keys, for `GET /limits` and the metrics. `None` for other policies.
    fn limit_report(&self, _top: usize) -> Option<LimitReport> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    struct CountingPermit {
        completed: Arc<AtomicUsize>,
        abandoned: Arc<AtomicUsize>,
        done: bool,
    }

    impl Permit for CountingPermit {
        fn complete(mut self: Box<Self>, _outcome: &Outcome) {
            self.done = true;
            self.completed.fetch_add(1, Ordering::SeqCst);
        }
    }

    impl Drop for CountingPermit {
        fn drop(&mut self) {
            if !self.done {
                self.abandoned.fetch_add(1, Ordering::SeqCst);
            }
        }
    }

    #[test]
    fn permits_complete_once_or_count_as_abandoned_on_drop() {
        let completed = Arc::new(AtomicUsize::new(0));
        let abandoned = Arc::new(AtomicUsize::new(0));
        let make = || {
            Box::new(CountingPermit {
                completed: completed.clone(),
                abandoned: abandoned.clone(),
                done: false,
            })
        };

        let mut finished = Permits::default();
        finished.push(make());
        finished.push(make());
        finished.complete(&Outcome::default());
        assert!(finished.is_empty());
        drop(finished);
        assert_eq!(completed.load(Ordering::SeqCst), 2);
        assert_eq!(abandoned.load(Ordering::SeqCst), 0);

        let mut dropped = Permits::default();
        dropped.push(make());
        drop(dropped);
        assert_eq!(abandoned.load(Ordering::SeqCst), 1);
    }
}
