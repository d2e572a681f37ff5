//! The cluster's overload gate on the request path: a place among the calls
//! the provider is learned to hold, taken after the route's policies let the
//! request through, and given back when the provider answers.
//!
//! A place is provider work, not client work. It is taken last (a request a
//! policy refuses or a cache answers costs the provider nothing) and freed
//! when the upstream's response head arrives, the round trip being the
//! limit's sample. When the client leaves first, the call goes on: the
//! client's connection is kept half-open (`abort_on_close` off, HTTP/1) so
//! the gateway still reads the provider's answer and samples it. A client
//! that resets the connection, or cancels an HTTP/2 stream, takes the
//! upstream call down with it (Pingora drops it); the provider may still be
//! working, so the place is held for the provider's recent round trip less
//! the time already spent, without a sample.

use breakwater_plugins::overload::{Change, Gate, Sample};
use breakwater_plugins::{Decision, ErrorKind, RequestKeys};
use pingora::{Error, ErrorSource, ErrorType};

use crate::proxy::context::RequestCtx;
use crate::route::Route;

/// The policy name refusals and logs give the gate.
pub const NAME: &str = "overload";

/// Waits for a place at the route's cluster's gate. `None`: go upstream
/// (with the place in `ctx`, or with no gate); a decision: the refusal.
pub async fn admit(route: &Route, keys: &RequestKeys, ctx: &mut RequestCtx) -> Option<Decision> {
    let gate = &route.cluster.overload.as_ref()?.gate;
    let class = route.priority.class_of(keys);
    let left = ctx
        .deadline
        .map(|d| d.saturating_duration_since(crate::time::now()));
    let result = gate.admit(class, left).await;
    if let Some(change) = gate.note(result.is_ok()) {
        log_change(gate, change);
    }
    match result {
        Ok(slot) => {
            ctx.overload = Some(slot);
            None
        }
        Err(why) => Some(Decision::Reject(gate.rejection(why))),
    }
}

/// The upstream's response head arrived: the round trip is a sample, and
/// the place goes to the next call. A provider that sheds (429, 503, 504,
/// or a trailers-only gRPC `UNAVAILABLE`, `RESOURCE_EXHAUSTED` or
/// `DEADLINE_EXCEEDED`) is a drop.
pub fn answered(ctx: &mut RequestCtx, status: u16, grpc_status: Option<u16>) {
    if let Some(slot) = ctx.overload.take() {
        let shed = matches!(status, 429 | 503 | 504) || matches!(grpc_status, Some(4 | 8 | 14));
        slot.finish(if shed {
            Sample::Dropped
        } else {
            Sample::Answered
        });
    }
}

/// The request ended without an answer from the provider (`e`), or ended
/// at all (`None`). An upstream failure (timeout, reset, refused
/// connection) is a drop; a client that left, or a caller's deadline that
/// ran out, leaves the provider working: the place is held a while longer.
pub fn ended(ctx: &mut RequestCtx, route: &Route, e: Option<&Error>) {
    let Some(slot) = ctx.overload.take() else {
        return;
    };
    let Some(e) = e else {
        return;
    };
    if ctx.deadline_before_upstream || ctx.upstream_started.is_none() {
        return;
    }
    if let ErrorType::HTTPStatus(status) = e.etype() {
        // A status the route retried, out of attempts.
        let grpc_status = ctx.upstream_grpc_status;
        ctx.overload = Some(slot);
        answered(ctx, *status, grpc_status);
        return;
    }
    let kind = ctx.failure_kind(e);
    let client_left = e.esource() == &ErrorSource::Downstream || kind == ErrorKind::Abandoned;
    if client_left || kind == ErrorKind::DeadlineExceeded {
        let Some(gate) = route.cluster.overload.as_ref().map(|o| &o.gate) else {
            return;
        };
        let spent = ctx
            .upstream_started
            .map(|t| t.elapsed())
            .unwrap_or_default();
        let (_, recent) = gate.limit().rtts();
        let rest = recent
            .saturating_sub(spent)
            .min(route.cluster.timeouts.read);
        slot.hold_for(rest);
        return;
    }
    match kind {
        ErrorKind::Timeout
        | ErrorKind::ConnectTimeout
        | ErrorKind::ConnectRefused
        | ErrorKind::ConnectFailed
        | ErrorKind::Reset => slot.finish(Sample::Dropped),
        // Nothing the provider's load explains: free the place unsampled.
        _ => drop(slot),
    }
}

fn log_change(gate: &Gate, change: Change) {
    let limit = gate.limit();
    let (base, recent) = limit.rtts();
    let (cluster, limit_now, in_flight) = (gate.name(), limit.limit(), limit.in_flight());
    let (min_rtt_ms, rtt_ms) = (base.as_secs_f64() * 1e3, recent.as_secs_f64() * 1e3);
    match change {
        Change::Entered => tracing::warn!(
            target: "breakwater::overload",
            cluster,
            limit = limit_now,
            in_flight,
            queued = gate.queued(),
            min_rtt_ms,
            rtt_ms,
            "cluster entered overload: calls past its learned limit are refused"
        ),
        Change::Left => tracing::info!(
            target: "breakwater::overload",
            cluster,
            limit = limit_now,
            in_flight,
            min_rtt_ms,
            rtt_ms,
            "cluster left overload: no refusal for a second"
        ),
    }
}
