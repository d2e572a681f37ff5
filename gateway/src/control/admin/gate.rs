//! The admin's gate: every request passes here before it is served.
//!
//! | request | needs |
//! |---|---|
//! | `GET /healthz`, `/ready`, `/live` | nothing: load balancers and orchestrators probe them |
//! | any other read (`GET`, `HEAD`) | a token (read or write) when one is configured; else a `Host` that names the admin |
//! | a mutation (any other method) | an own `Origin` (or none) and a `Host` that names the admin; the write token when one is configured |
//!
//! With a token set, reads do not check `Host`: a rebinding page has no
//! token. Without one, the `Host` check is what keeps such a page from
//! reading `/config`. Refusals are `403` for a foreign origin, host or a read
//! token that tries to mutate, `401` for a missing or wrong token.

use std::net::IpAddr;

use http::Method;

use super::origin::{check_host, check_origin};
use crate::config::admin_access::{AdminAccess, Grant};

/// The parts of a request the gate looks at (raw header values).
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    pub method: &'a Method,
    pub path: &'a str,
    pub host: Option<&'a str>,
    pub origin: Option<&'a str>,
    pub authorization: Option<&'a str>,
    /// The local address the connection arrived on.
    pub local_ip: Option<IpAddr>,
}

/// Why a request is not served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// 401: no token, or a wrong one.
    Unauthorized(String),
    /// 403: a foreign `Origin` or `Host`, or the read token on a mutation.
    Forbidden(String),
}

/// Whether a request changes state (anything but `GET` and `HEAD`).
pub fn is_mutation(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD)
}

/// Admits `req` or says why not.
pub fn admit(access: &AdminAccess, req: &RequestView<'_>) -> Result<(), Refusal> {
    if *req.method == Method::GET && matches!(req.path, "/healthz" | "/ready" | "/live") {
        return Ok(());
    }
    let mutation = is_mutation(req.method);
    if mutation || !access.tokens_required() {
        check_host(req.host, req.local_ip, &access.allowed_hosts).map_err(Refusal::Forbidden)?;
    }
    if mutation {
        check_origin(req.origin, req.host).map_err(Refusal::Forbidden)?;
    }
    match (access.grant(req.authorization), mutation) {
        (Grant::Write, _) | (Grant::Read, false) => Ok(()),
        (Grant::Read, true) => Err(Refusal::Forbidden(
            "the read token cannot change anything; use the write token (admin.token)".into(),
        )),
        (Grant::Nothing, _) => Err(Refusal::Unauthorized(
            "a valid bearer token is required".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> AdminAccess {
        AdminAccess {
            write_token: Some("w".into()),
            read_token: Some("r".into()),
            ..AdminAccess::default()
        }
    }

    fn req<'a>(method: &'a Method, path: &'a str) -> RequestView<'a> {
        RequestView {
            method,
            path,
            host: Some("127.0.0.1:9901"),
            origin: None,
            authorization: None,
            local_ip: Some("127.0.0.1".parse().unwrap()),
        }
    }

    #[test]
    fn without_tokens_curl_may_do_anything_but_pages_may_not() {
        let open = AdminAccess::default();
        assert_eq!(admit(&open, &req(&Method::POST, "/reload")), Ok(()));
        assert_eq!(admit(&open, &req(&Method::GET, "/config")), Ok(()));
        let cross_site = RequestView {
            origin: Some("http://evil.example"),
            ..req(&Method::POST, "/reload")
        };
        assert!(
            matches!(admit(&open, &cross_site), Err(Refusal::Forbidden(m)) if m.contains("Origin"))
        );
        let rebound = RequestView {
            host: Some("evil.example:9901"),
            origin: Some("http://evil.example:9901"),
            ..req(&Method::DELETE, "/blocks/ip:1.2.3.4")
        };
        assert!(matches!(admit(&open, &rebound), Err(Refusal::Forbidden(m)) if m.contains("Host")));
        // A rebound page cannot read either: no token stands in its way.
        let rebound_read = RequestView {
            host: Some("evil.example:9901"),
            ..req(&Method::GET, "/config")
        };
        assert!(matches!(
            admit(&open, &rebound_read),
            Err(Refusal::Forbidden(_))
        ));
    }

    #[test]
    fn the_probes_are_always_open_and_drain_is_not() {
        for path in ["/healthz", "/ready", "/live"] {
            let probe = RequestView {
                host: Some("lb.example"),
                ..req(&Method::GET, path)
            };
            assert_eq!(admit(&tokens(), &probe), Ok(()), "{path}");
            assert_eq!(admit(&AdminAccess::default(), &probe), Ok(()), "{path}");
        }
        let drain = RequestView {
            host: Some("lb.example"),
            ..req(&Method::POST, "/drain")
        };
        assert!(matches!(
            admit(&tokens(), &drain),
            Err(Refusal::Forbidden(_))
        ));
    }

    #[test]
    fn with_tokens_reads_need_either_and_mutations_the_write_token() {
        let a = tokens();
        let get = req(&Method::GET, "/config");
        assert!(matches!(admit(&a, &get), Err(Refusal::Unauthorized(_))));
        let read = RequestView {
            authorization: Some("Bearer r"),
            ..get
        };
        assert_eq!(admit(&a, &read), Ok(()));
        let write = RequestView {
            authorization: Some("Bearer w"),
            ..get
        };
        assert_eq!(admit(&a, &write), Ok(()));
        // A scrape through a DNS name needs no allowed_hosts entry: the token guards reads.
        let by_name = RequestView {
            host: Some("gw-1.internal:9901"),
            ..read
        };
        assert_eq!(admit(&a, &by_name), Ok(()));

        let post = req(&Method::POST, "/reload");
        assert!(matches!(admit(&a, &post), Err(Refusal::Unauthorized(_))));
        let read_post = RequestView {
            authorization: Some("Bearer r"),
            ..post
        };
        assert!(
            matches!(admit(&a, &read_post), Err(Refusal::Forbidden(m)) if m.contains("read token"))
        );
        let write_post = RequestView {
            authorization: Some("Bearer w"),
            ..post
        };
        assert_eq!(admit(&a, &write_post), Ok(()));
        // The token does not excuse a foreign origin.
        let forged = RequestView {
            origin: Some("http://evil.example"),
            ..write_post
        };
        assert!(matches!(admit(&a, &forged), Err(Refusal::Forbidden(_))));
    }
}
