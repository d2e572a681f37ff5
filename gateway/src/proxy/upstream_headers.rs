//! The headers the gateway adds to the request it sends upstream:
//! `X-Forwarded-For`, `X-Forwarded-Proto`, the request id, and the time left
//! before the deadline (`grpc-timeout`, or the route's deadline header).

use breakwater_plugins::keys::canonical_ip;
use pingora::http::RequestHeader;
use pingora::Result;

use crate::proxy::context::RequestCtx;
use crate::proxy::deadline;
use crate::proxy::forwarded::{self, FORWARDED_FOR, FORWARDED_PROTO};
use crate::proxy::request_id::REQUEST_ID;

/// Adds the forwarding headers to `upstream`; `tls`: the client came over TLS.
pub fn set(upstream: &mut RequestHeader, ctx: &RequestCtx, tls: bool) -> Result<()> {
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
        upstream.insert_header(FORWARDED_PROTO, if tls { "https" } else { "http" })?;
    }
    if let Some(id) = &ctx.request_id {
        upstream.insert_header(REQUEST_ID, id.clone())?;
    }
    if let Some(deadline) = ctx.deadline {
        let header = ctx.route().and_then(|r| r.deadline_header.clone());
        let left = deadline.saturating_duration_since(crate::time::now());
        for (name, value) in deadline::forward(&upstream.headers, left, ctx.grpc, header.as_ref()) {
            upstream.insert_header(name, value)?;
        }
    }
    Ok(())
}
