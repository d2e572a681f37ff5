//! The seam between the gateway and its policies: decide.
//!
//! A route's policies run in declared order in the request phase. Each returns
//! a [`Decision`]; the first one that is not [`Decision::Continue`] ends the
//! chain and the gateway writes its answer. A policy that must see the rest of
//! the request (a breaker, a concurrency limit, a cache fill) leaves a
//! [`Guard`] in the request's [`Exchange`], which the gateway drives through
//! the upstream attempts, the response and the end (see [`crate::exchange`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use http::{HeaderMap, Method};

use crate::block_list::BlockList;
use crate::exchange::{Exchange, Guard};
use crate::report::LimitReport;
use crate::{Clock, LocalResponse, Rejection, RequestKeys};

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
    /// Go on, holding this guard (if any) for the rest of the request.
    Admit(Option<Box<dyn Guard>>),
    Reject(Rejection),
    /// Answer locally (for example with another request's response).
    Respond(LocalResponse),
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

    /// Decides on a request. A policy that must see the rest of the
    /// request (its response, how it ended) leaves a [`Guard`] in
    /// `exchange` ([`Exchange::hold`]).
    fn on_request(&self, req: &RequestView<'_>, exchange: &mut Exchange) -> Decision;

    /// Periodic upkeep off the request path (cooling hot keys, rolling
    /// statistics). The gateway calls it about every 100 ms with the policy
    /// clock's time. The default does nothing.
    fn tick(&self, _now_nanos: u64) {}

    /// The policy's fleet-wide state, for policies with `scope: global`.
    fn global(&self) -> Option<&dyn crate::fleet::GlobalSync> {
        None
    }

    /// For limit-like policies: counts, tracked keys and the `top` hottest
    /// keys, for `GET /limits` and the metrics. `None` for other policies.
    fn limit_report(&self, _top: usize) -> Option<LimitReport> {
        None
    }
}
