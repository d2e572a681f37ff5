//! Writing the gateway's own answers to the client.
//!
//! Three things here are easy to get subtly wrong, and grpc-core clients
//! (Python, C++, Ruby, PHP, C#) and Dubbo's Triple client punish each one,
//! while tonic forgives them all:
//!
//! - **A gRPC trailers-only answer is one HEADERS frame with END_STREAM**
//!   (gRPC over HTTP/2 spec). Pingora's `Session::write_response_header`
//!   drops its end-of-stream flag on HTTP/2, and the stream was then ended by
//!   an empty DATA frame: grpc-core reads that as a malformed answer
//!   (`UNKNOWN: Stream removed`) and Triple waits forever. The answer is
//!   written as response *tasks*, which carry the flag to the HTTP/2 writer.
//! - **An early answer leaves the request body unread.** On HTTP/2 the stream
//!   is then reset (`RST_STREAM(NO_ERROR)`) when the request ends: legal, but
//!   some clients mishandle it. What the client is still sending is read and
//!   dropped first, within a small bound ([`DRAIN_LIMIT`] bytes,
//!   [`DRAIN_WAIT`]); a larger or slower body is reset as before. HTTP/1
//!   bodies are left to Pingora, which drains them before reusing the
//!   connection or closes it.
//! - **A failure after the response began** cannot be answered with a new
//!   status line. A gRPC client would see a reset stream (`CANCELLED`); it
//!   gets trailers with the failure's `grpc-status` instead. Other clients
//!   see the response cut short, as from nginx.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::protocols::http::HttpTask;

use crate::proxy::request_id::REQUEST_ID;
use breakwater_plugins::{LocalResponse, Rejection};

use crate::proxy::responses::{render, GatewayResponse, Scope};

/// Unread request body an early answer drains, at most.
pub const DRAIN_LIMIT: usize = 64 * 1024;
/// How long an early answer waits for the rest of the request body.
pub const DRAIN_WAIT: Duration = Duration::from_millis(100);

/// Writes a complete answer the gateway made itself (or shares from another
/// request). `grpc`: the request is a gRPC call, and a bodiless answer is
/// trailers-only. Trailers are sent on HTTP/2 only; HTTP/1 answers carry
/// none (Pingora's HTTP/1 writer would drop them).
pub async fn write(
    session: &mut Session,
    resp: GatewayResponse,
    grpc: bool,
    request_id: Option<&HeaderValue>,
) -> Result<()> {
    let head = session.req_header().method == http::Method::HEAD;
    // An answer to HEAD sends no body (Pingora's HTTP/2 writer would send
    // it), only the length of the one a GET would get.
    let body_len = resp.body.len();
    let body = if head { Bytes::new() } else { resp.body };
    let has_body = !body.is_empty();
    let mut header = ResponseHeader::build(resp.status, Some(resp.headers.len() + 2))?;
    let mut has_length = false;
    for (name, value) in resp.headers {
        has_length |= name == http::header::CONTENT_LENGTH;
        header.append_header(name, value)?;
    }
    let h2 = session.is_http2();
    // HTTP/2 answers with trailers (a trailers-only gRPC answer, or a shared
    // gRPC answer) are framed by their END_STREAM, as gRPC servers send
    // them; an answer to HEAD keeps the length of the body it stands for.
    let trailers = resp.trailers.filter(|_| h2);
    let framed_by_stream = h2 && (trailers.is_some() || (grpc && !has_body));
    if !(framed_by_stream || (head && has_length)) {
        header.insert_header(http::header::CONTENT_LENGTH, body_len)?;
    }
    if let Some(id) = request_id {
        header.insert_header(REQUEST_ID, id.clone())?;
    }
    let ends_with_body = trailers.is_none();
    let mut tasks = vec![HttpTask::Header(
        Box::new(header),
        !has_body && ends_with_body,
    )];
    if has_body {
        tasks.push(HttpTask::Body(Some(body), ends_with_body));
    }
    if let Some(t) = trailers {
        tasks.push(HttpTask::Trailer(Some(Box::new(t))));
    }
    session.write_response_tasks(tasks).await?;
    Ok(())
}

/// Ends a gRPC call whose response has begun with `grpc-status` trailers.
pub async fn write_grpc_trailers(session: &mut Session, status: u8, message: &str) -> Result<()> {
    let mut trailers = HeaderMap::with_capacity(2);
    trailers.insert(
        HeaderName::from_static("grpc-status"),
        HeaderValue::from(u16::from(status)),
    );
    if let Ok(v) = HeaderValue::from_str(&crate::proxy::responses::grpc_message(message, None)) {
        trailers.insert(HeaderName::from_static("grpc-message"), v);
    }
    session
        .write_response_tasks(vec![HttpTask::Trailer(Some(Box::new(trailers)))])
        .await?;
    Ok(())
}

/// Reads and drops what is left of an HTTP/2 request body after an early
/// answer, up to [`DRAIN_LIMIT`] bytes and [`DRAIN_WAIT`], so the stream
/// can close cleanly. Returns whether the body was read to its end.
pub async fn drain_request_body(session: &mut Session) -> bool {
    if !session.is_http2() {
        return false;
    }
    if session.is_body_done() {
        return true;
    }
    let drain = async {
        let mut read = 0usize;
        loop {
            match session.read_request_body().await {
                Ok(Some(chunk)) => {
                    read += chunk.len();
                    if read > DRAIN_LIMIT {
                        return false;
                    }
                }
                Ok(None) => return true,
                Err(_) => return false,
            }
        }
    };
    tokio::time::timeout(DRAIN_WAIT, drain)
        .await
        .unwrap_or(false)
}

/// Writes a local answer, then reads (and drops) what the client still sends.
pub async fn write_and_drain(
    session: &mut Session,
    resp: GatewayResponse,
    grpc: bool,
    request_id: Option<&HeaderValue>,
) -> Result<()> {
    write(session, resp, grpc, request_id).await?;
    drain_request_body(session).await;
    Ok(())
}

/// Answers a request that failed: with `stale` when a policy's stale copy
/// replaces the failure, else with the rendered `rejection` (nothing for a
/// client that left). When the response has already begun, no status line
/// can be sent: a gRPC call still learns why from its trailers; others see
/// it cut short. Returns the status given (0: none).
pub async fn failure(
    session: &mut Session,
    rejection: Rejection,
    scope: Scope<'_>,
    stale: Option<LocalResponse>,
    grpc: bool,
    request_id: Option<&HeaderValue>,
) -> u16 {
    let status = rejection.status;
    if session.response_written().is_some() {
        if grpc && status > 0 && session.is_http2() {
            let message = match scope.cluster {
                Some(c) => format!("{} ({c})", rejection.reason),
                None => rejection.reason.clone(),
            };
            let code = rejection.grpc_status.as_u8();
            if let Err(write_err) = write_grpc_trailers(session, code, &message).await {
                tracing::debug!(%write_err, "could not write the gRPC trailers");
            }
        }
        return status;
    }
    // The connection is not reused after a failed exchange: say so
    // (`Connection: close`), or a client would send its next request on it
    // and have it reset.
    session.set_keepalive(None);
    if let Some(stale) = stale {
        let status = stale.status;
        if let Err(write_err) = write(session, stale.into(), grpc, request_id).await {
            tracing::debug!(%write_err, "could not write the stale response");
        }
        return status;
    }
    if status > 0 {
        let resp = render(rejection, scope, grpc);
        if let Err(write_err) = write_and_drain(session, resp, grpc, request_id).await {
            tracing::debug!(%write_err, "could not write the error response");
        }
    }
    status
}
