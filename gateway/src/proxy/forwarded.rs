//! `X-Forwarded-For`: the caller's chain with the socket peer appended, as
//! nginx's `$proxy_add_x_forwarded_for` builds it.
//!
//! Built into one byte buffer, IPv4 digits written by hand: this runs on every
//! proxied request, and `Display` for an address plus `format!` cost more
//! than the rest of the header handling.

use std::net::IpAddr;

use http::{HeaderMap, HeaderValue};

pub const FORWARDED_FOR: http::HeaderName = http::HeaderName::from_static("x-forwarded-for");
pub const FORWARDED_PROTO: http::HeaderName = http::HeaderName::from_static("x-forwarded-proto");

/// The request came over TLS (`https`).
pub fn is_tls(session: &pingora::proxy::Session) -> bool {
    session.digest().is_some_and(|d| d.ssl_digest.is_some())
}

/// Whether the request carries exactly one `X-Forwarded-Proto`, `http` or
/// `https`: the only values kept from a trusted proxy.
pub fn proto_is_valid(headers: &HeaderMap) -> bool {
    let mut values = headers.get_all(&FORWARDED_PROTO).iter();
    match (values.next(), values.next()) {
        (Some(v), None) => {
            v.as_bytes().eq_ignore_ascii_case(b"http")
                || v.as_bytes().eq_ignore_ascii_case(b"https")
        }
        _ => false,
    }
}

/// The value to send upstream: every prior `X-Forwarded-For` value (lines
/// joined by `, `; ones that are not visible ASCII are dropped) then `peer`.
pub fn with_peer(headers: &HeaderMap, peer: IpAddr) -> HeaderValue {
    let mut out = Vec::with_capacity(48);
    for prior in headers.get_all(&FORWARDED_FOR) {
        if prior.to_str().is_ok() {
            out.extend_from_slice(prior.as_bytes());
            out.extend_from_slice(b", ");
        }
    }
    push_ip(&mut out, peer);
    HeaderValue::from_maybe_shared(bytes::Bytes::from(out))
        .expect("visible ASCII values and an address are a valid header value")
}

fn push_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                if octet >= 100 {
                    out.push(b'0' + octet / 100);
                }
                if octet >= 10 {
                    out.push(b'0' + octet / 10 % 10);
                }
                out.push(b'0' + octet % 10);
            }
        }
        IpAddr::V6(v6) => out.extend_from_slice(v6.to_string().as_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn formats_addresses_as_display_does() {
        for s in [
            "0.0.0.0",
            "127.0.0.1",
            "10.20.100.255",
            "9.99.199.200",
            "::1",
            "2001:db8::7",
        ] {
            assert_eq!(with_peer(&HeaderMap::new(), ip(s)), s);
        }
    }

    #[test]
    fn appends_to_every_prior_line() {
        let mut h = HeaderMap::new();
        h.append(&FORWARDED_FOR, HeaderValue::from_static("1.2.3.4, 5.6.7.8"));
        h.append(&FORWARDED_FOR, HeaderValue::from_static("9.9.9.9"));
        h.append(
            &FORWARDED_FOR,
            HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap(),
        );
        assert_eq!(
            with_peer(&h, ip("127.0.0.1")),
            "1.2.3.4, 5.6.7.8, 9.9.9.9, 127.0.0.1"
        );
    }
}
