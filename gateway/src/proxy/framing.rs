//! Requests framed two ways: `Content-Length` together with
//! `Transfer-Encoding`.
//!
//! That is the shape of request smuggling: a proxy and its upstream that
//! disagree on where the body ends disagree on where the next request
//! starts. Pingora takes RFC 9112 §6.3's forwarding option: it drops
//! `Content-Length`, frames the body by `Transfer-Encoding` and closes the
//! connection afterwards. That is safe, but it hides the attempt, and the
//! RFC says such a message "ought to be handled as an error". The gateway
//! refuses it with 400, as nginx does. Pingora removes the header before any
//! hook runs, so the raw header block is scanned — only for HTTP/1 requests
//! that carry a `Transfer-Encoding`, so other requests pay one map lookup.

use breakwater_plugins::{Rejection, RejectionKind};
use http::header::TRANSFER_ENCODING;
use pingora::prelude::*;

/// The refusal for a request framed both ways, if this one is.
pub fn refusal(session: &Session) -> Option<Rejection> {
    framed_twice(session).then(|| {
        Rejection::gateway(
            RejectionKind::BadRequest,
            400,
            "the request has both Content-Length and Transfer-Encoding",
        )
    })
}

/// Whether the client framed its request body both ways.
pub fn framed_twice(session: &Session) -> bool {
    if !session.req_header().headers.contains_key(TRANSFER_ENCODING) {
        return false;
    }
    session
        .as_http1()
        .is_some_and(|h1| names_content_length(&h1.get_headers_raw_bytes()))
}

/// Whether a raw HTTP/1 header block has a `Content-Length` field (the
/// request line is skipped; field names are case-insensitive).
fn names_content_length(raw: &[u8]) -> bool {
    const NAME: &[u8] = b"content-length:";
    raw.split(|b| *b == b'\n')
        .skip(1)
        .any(|line| line.len() >= NAME.len() && line[..NAME.len()].eq_ignore_ascii_case(NAME))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_content_length_fields_only() {
        let both = b"POST /a HTTP/1.1\r\nHost: x\r\nCONTENT-length: 4\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(names_content_length(both));
        let te = b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nx-content-length: 4\r\n\r\n";
        assert!(!names_content_length(te));
        let line = b"POST /content-length:4 HTTP/1.1\r\nHost: x\r\n\r\n";
        assert!(
            !names_content_length(line),
            "the request line is not a field"
        );
    }
}
