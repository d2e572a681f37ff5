//! Reading a small request body ahead, before the policy chain runs.
//!
//! A policy that must see the whole body to decide (`dedupe` hashes it, so
//! that only the same request joins another) says so with
//! [`Policy::wants_body`](breakwater_plugins::Policy::wants_body). The body
//! is read ahead only when that costs little and loses nothing:
//!
//! - its length is declared and at most [`READ_AHEAD_LIMIT`] (64 KiB), or it
//!   has none (no `content-length` nor `transfer-encoding` in HTTP/1;
//!   HEADERS with END_STREAM, or `content-length: 0`, in HTTP/2);
//! - or it is an HTTP/2 body of unknown length (gRPC and Dubbo Triple
//!   clients send none) that ends within [`H2_WAIT`] and
//!   [`H2_HOLD_LIMIT`] bytes, as a unary call's does. One that does not
//!   (a streaming call) is not held up longer: what was read waits in the
//!   retry buffer, which has room for one more DATA frame, and the proxy
//!   phase sends it first, then streams the rest;
//! - it is not an upgrade, and its client does not wait for `100 Continue`
//!   (that answer comes from the upstream, which is not called yet).
//!
//! It is read with Pingora's retry buffering on, and Pingora's proxy phase
//! sends the retry buffer upstream before anything it reads itself
//! (`proxy_h1.rs`/`proxy_h2.rs`, "send buffer if it exists"), so the body
//! read here still reaches the upstream, byte for byte. The buffer holds
//! 64 KiB; the declared length, which both protocols enforce, keeps the body
//! within it. Any other body is shown to policies as
//! [`RequestBody::Unread`] and streams upstream as it arrives.

use std::time::{Duration, Instant};

use breakwater_plugins::RequestBody;
use bytes::{Bytes, BytesMut};
use http::{header, HeaderMap, Method, Version};
use pingora::prelude::*;
use pingora::{ErrorSource, ErrorType};

/// The largest body read ahead: Pingora's retry buffer (`BODY_BUF_LIMIT` in
/// pingora-core 0.9, for HTTP/1 and HTTP/2). A larger one would overflow it
/// and could not be sent upstream any more.
pub const READ_AHEAD_LIMIT: usize = 64 * 1024;

/// The longest a client may take to send a body read ahead, unless the
/// request's deadline comes first: Pingora's HTTP/1 read timeout (HTTP/2 body
/// reads have none of their own).
pub const READ_AHEAD_TIMEOUT: Duration = Duration::from_secs(60);

/// How long an HTTP/2 body of unknown length may take to end before it is
/// left to stream: a unary call's single message arrives with its HEADERS.
pub const H2_WAIT: Duration = Duration::from_millis(50);

/// How much of an HTTP/2 body of unknown length is held at most: one more
/// DATA frame (16 KiB, h2's default frame size, which Pingora keeps) must
/// still fit the retry buffer, or what was read could not be sent upstream.
pub const H2_HOLD_LIMIT: usize = READ_AHEAD_LIMIT - 16 * 1024;

/// A request's body, as read ahead for its route's policies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadAhead {
    /// The whole body (empty when the request has none).
    Whole(Bytes),
    /// Not read: no policy wants it, or it cannot be read ahead.
    Unread,
}

impl ReadAhead {
    pub fn view(&self) -> RequestBody<'_> {
        match self {
            ReadAhead::Whole(body) => RequestBody::Whole(body),
            ReadAhead::Unread => RequestBody::Unread,
        }
    }
}

/// What the request's head says about reading its body ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    /// The request has no body.
    Empty,
    /// Exactly this many bytes (at most [`READ_AHEAD_LIMIT`]) follow.
    Read(usize),
    /// Ask the session: an HTTP/2 request without `content-length` has no
    /// body if its HEADERS ended the stream; otherwise it is read for as
    /// long as it ends soon ([`H2_WAIT`], [`H2_HOLD_LIMIT`]).
    AskSession,
    /// Too large, of unknown length, an upgrade, or `Expect: 100-continue`.
    Unread,
}

fn plan(method: &Method, version: Version, headers: &HeaderMap) -> Plan {
    if method == Method::CONNECT
        || headers.contains_key(header::UPGRADE)
        || headers.contains_key(header::EXPECT)
        || headers.contains_key(header::TRANSFER_ENCODING)
    {
        return Plan::Unread;
    }
    let mut lengths = headers.get_all(header::CONTENT_LENGTH).iter();
    match (lengths.next(), lengths.next()) {
        (None, _) if version >= Version::HTTP_2 => Plan::AskSession,
        // HTTP/1: neither a length nor a transfer coding means no body
        // (RFC 9112, section 6.3).
        (None, _) => Plan::Empty,
        (Some(value), None) => match value.to_str().ok().and_then(|v| v.parse().ok()) {
            Some(0) => Plan::Empty,
            Some(n) if n <= READ_AHEAD_LIMIT => Plan::Read(n),
            _ => Plan::Unread,
        },
        // Several lengths: leave the framing to Pingora.
        (Some(_), Some(_)) => Plan::Unread,
    }
}

/// Reads the request body ahead, when a policy of the route's chain wants it
/// (the chain stopped before that policy, after the ones before it let the
/// request through) and it can be read ahead; see the module doc. An error
/// is the client's (gone, or too slow for `deadline` or
/// [`READ_AHEAD_TIMEOUT`]).
pub async fn read_ahead(session: &mut Session, deadline: Option<Instant>) -> Result<ReadAhead> {
    let req = session.req_header();
    let len = match plan(&req.method, req.version, &req.headers) {
        Plan::Empty => return Ok(ReadAhead::Whole(Bytes::new())),
        Plan::AskSession if session.as_mut().is_body_empty() => {
            return Ok(ReadAhead::Whole(Bytes::new()))
        }
        Plan::AskSession => return read_h2_if_short(session).await,
        Plan::Unread => return Ok(ReadAhead::Unread),
        Plan::Read(len) => len,
    };
    let limit = crate::time::now() + READ_AHEAD_TIMEOUT;
    let limit = deadline.map_or(limit, |d| d.min(limit));
    let body = tokio::time::timeout_at(limit.into(), read_all(session, len))
        .await
        .unwrap_or_else(|_| {
            let mut e = Error::explain(
                ErrorType::ReadTimedout,
                "the client did not send its request body in time",
            );
            e.esource = ErrorSource::Downstream;
            Err(e)
        })?;
    Ok(ReadAhead::Whole(body))
}

/// Reads an HTTP/2 body of unknown length into the retry buffer while it
/// ends within [`H2_WAIT`] and [`H2_HOLD_LIMIT`]. Reading stops only at an
/// await point (h2's body reads hand over a frame only when they complete),
/// so every byte read is in the retry buffer, and goes upstream first.
async fn read_h2_if_short(session: &mut Session) -> Result<ReadAhead> {
    session.as_mut().enable_retry_buffering();
    let mut body = BytesMut::new();
    let read = async {
        while let Some(chunk) = session.read_request_body().await? {
            body.extend_from_slice(&chunk);
            if body.len() > H2_HOLD_LIMIT {
                return Ok::<bool, Box<Error>>(false);
            }
        }
        Ok(true)
    };
    let ended = match tokio::time::timeout(H2_WAIT, read).await {
        Ok(ended) => ended?,
        Err(_) => false,
    };
    if session.as_ref().retry_buffer_truncated() {
        // A DATA frame larger than h2's frame size limit: the peer broke it.
        let mut e = Error::explain(
            ErrorType::InvalidHTTPHeader,
            "a request body frame larger than the frame size limit",
        );
        e.esource = ErrorSource::Downstream;
        return Err(e);
    }
    Ok(if ended {
        ReadAhead::Whole(body.freeze())
    } else {
        ReadAhead::Unread
    })
}

/// Reads the whole body of declared length `len` into Pingora's retry buffer
/// (for the upstream) and a copy (for the policies). The copy grows as bytes
/// arrive: a client's claimed length reserves nothing.
async fn read_all(session: &mut Session, len: usize) -> Result<Bytes> {
    session.as_mut().enable_retry_buffering();
    let mut body = BytesMut::with_capacity(len.min(4096));
    while let Some(chunk) = session.read_request_body().await? {
        body.extend_from_slice(&chunk);
    }
    // Both protocols hold a body to its declared length, so this cannot
    // happen; if it did, the body could no longer be sent whole: fail the
    // request rather than send part of it.
    if session.as_ref().retry_buffer_truncated() || body.len() > READ_AHEAD_LIMIT {
        let mut e = Error::explain(
            ErrorType::InvalidHTTPHeader,
            "the request body is longer than its content-length",
        );
        e.esource = ErrorSource::Downstream;
        return Err(e);
    }
    Ok(body.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(n, v)| {
                (
                    header::HeaderName::from_static(n),
                    HeaderValue::from_static(v),
                )
            })
            .collect()
    }

    fn h1(pairs: &[(&'static str, &'static str)]) -> Plan {
        plan(&Method::POST, Version::HTTP_11, &headers(pairs))
    }

    #[test]
    fn small_bodies_of_declared_length_are_read_ahead() {
        assert_eq!(h1(&[("content-length", "10")]), Plan::Read(10));
        assert_eq!(h1(&[("content-length", "65536")]), Plan::Read(65536));
        assert_eq!(h1(&[("content-length", "0")]), Plan::Empty);
        assert_eq!(h1(&[]), Plan::Empty, "HTTP/1 without a length has no body");
    }

    #[test]
    fn other_bodies_are_left_to_stream() {
        assert_eq!(h1(&[("content-length", "65537")]), Plan::Unread);
        assert_eq!(h1(&[("content-length", "x")]), Plan::Unread);
        assert_eq!(h1(&[("transfer-encoding", "chunked")]), Plan::Unread);
        assert_eq!(
            h1(&[("content-length", "10"), ("expect", "100-continue")]),
            Plan::Unread,
            "its client waits for the upstream's 100 Continue"
        );
        assert_eq!(h1(&[("upgrade", "websocket")]), Plan::Unread);
        let mut two = headers(&[("content-length", "10")]);
        two.append(header::CONTENT_LENGTH, HeaderValue::from_static("10"));
        assert_eq!(plan(&Method::POST, Version::HTTP_11, &two), Plan::Unread);
    }

    #[test]
    fn http2_without_a_length_asks_whether_the_stream_ended() {
        let h2 = |pairs| plan(&Method::POST, Version::HTTP_2, &headers(pairs));
        assert_eq!(h2(&[]), Plan::AskSession);
        assert_eq!(h2(&[("content-length", "10")]), Plan::Read(10));
    }
}
