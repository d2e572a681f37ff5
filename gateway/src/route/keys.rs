//! Extracting a request's keys, once, before any policy runs.
//!
//! # Client IP and `X-Forwarded-For`
//! The socket peer is the client unless the peer is a configured trusted
//! proxy. Then the `X-Forwarded-For` list is walked from the right, skipping
//! hops that are themselves trusted; the first untrusted hop is the client.
//! Everything left of it was written by the client and is ignored, so a client
//! cannot pick its own address to dodge a per-IP limit. An unparsable hop
//! stops the walk and the last trusted hop counts.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use breakwater_plugins::keys::{canonical_ip, ip_key};
use breakwater_plugins::RequestKeys;
use http::{HeaderMap, HeaderName, Method};
use ipnet::IpNet;

use crate::route::{Captures, Route};

/// Where a key's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    Header(HeaderName),
    Cookie(String),
    Query(String),
    /// A `{name}` capture of the matched route's path template.
    PathCapture(String),
}

/// The compiled `keys:` section.
#[derive(Debug)]
pub struct KeyExtractor {
    pub by_method: bool,
    /// An IPv6 client's `ip` key is its network of this many bits.
    pub ipv6_prefix: u8,
    pub trusted_proxies: Vec<IpNet>,
    pub user: Option<KeySource>,
    /// Custom keys by name, in [`breakwater_plugins::KeyRef::Custom`] order.
    pub custom: Vec<(String, KeySource)>,
}

impl KeyExtractor {
    /// As large CDNs count IPv6 clients: a /64 is one subscriber's.
    pub const DEFAULT_IPV6_PREFIX: u8 = 64;
}

impl Default for KeyExtractor {
    fn default() -> Self {
        Self {
            by_method: false,
            ipv6_prefix: Self::DEFAULT_IPV6_PREFIX,
            trusted_proxies: Vec::new(),
            user: None,
            custom: Vec::new(),
        }
    }
}

/// Per-route endpoint strings, built at compile time so that the hot path
/// never formats `route:METHOD`. Methods outside HTTP's nine share
/// `route:OTHER`: a method is any token a client likes, and an endpoint key
/// per method token would let it mint keys.
#[derive(Debug, Default)]
pub struct EndpointNames {
    plain: Arc<str>,
    by_method: HashMap<Method, Arc<str>>,
    other: Arc<str>,
}

impl EndpointNames {
    pub fn new(route_id: &str) -> Self {
        let by_method = [
            Method::GET,
            Method::HEAD,
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::PATCH,
            Method::OPTIONS,
            Method::CONNECT,
            Method::TRACE,
        ]
        .into_iter()
        .map(|m| {
            let name: Arc<str> = format!("{route_id}:{m}").into();
            (m, name)
        })
        .collect();
        Self {
            plain: route_id.into(),
            by_method,
            other: format!("{route_id}:OTHER").into(),
        }
    }

    /// `route:METHOD`, or `route:OTHER` for a method outside HTTP's nine.
    pub fn with_method(&self, method: &Method) -> Arc<str> {
        self.by_method.get(method).unwrap_or(&self.other).clone()
    }
}

/// What the extractor needs to see of a request.
pub struct RequestParts<'a> {
    pub method: &'a Method,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    pub peer: IpAddr,
}

impl KeyExtractor {
    pub fn extract(
        &self,
        req: &RequestParts<'_>,
        route: &Route,
        captures: &Captures,
    ) -> RequestKeys {
        // The endpoint is named by the config (the route), never by the
        // request: a key taken from the path (a gRPC method, say) would let a
        // client mint endpoint keys at will and slip past `key: endpoint`.
        let endpoint = &route.endpoint;
        let endpoint = if self.by_method {
            endpoint.with_method(req.method)
        } else {
            endpoint.plain.clone()
        };
        let user = self
            .user
            .as_ref()
            .and_then(|s| read_source(s, req, None, captures))
            .map(Into::into);
        let custom = self
            .custom
            .iter()
            .enumerate()
            .map(|(i, (_, source))| {
                let slot = route.capture_slots.get(i).copied().flatten();
                read_source(source, req, slot, captures).map(Into::into)
            })
            .collect();
        let client = self.client_ip(req.peer, req.headers);
        RequestKeys {
            endpoint,
            ip: ip_key(client, self.ipv6_prefix),
            client,
            user,
            custom,
        }
    }

    /// The client address, honouring `X-Forwarded-For` only from trusted peers.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = canonical_ip(peer);
        if !self.is_trusted(peer) {
            return peer;
        }
        let mut client = peer;
        // Later header lines were appended by later hops: walk them last-first.
        let lines: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        for hop in lines.iter().rev().flat_map(|l| l.rsplit(',')) {
            let hop = hop.trim();
            if hop.is_empty() {
                continue;
            }
            match parse_hop(hop) {
                Some(ip) => {
                    client = ip;
                    if !self.is_trusted(ip) {
                        return ip;
                    }
                }
                None => return client,
            }
        }
        client
    }

    /// Whether `ip` is one of `trusted_proxies`: its forwarding headers
    /// (`X-Forwarded-For`, `X-Forwarded-Proto`) are believed.
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|n| n.contains(&ip))
    }
}

/// Parses one `X-Forwarded-For` hop: a bare address, or `1.2.3.4:port` /
/// `[v6]:port` as some proxies write them.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(canonical_ip(ip));
    }
    hop.parse::<std::net::SocketAddr>()
        .ok()
        .map(|s| canonical_ip(s.ip()))
}

fn read_source(
    source: &KeySource,
    req: &RequestParts<'_>,
    capture_slot: Option<usize>,
    captures: &Captures,
) -> Option<String> {
    match source {
        KeySource::Header(name) => req
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_string),
        KeySource::Cookie(name) => req
            .headers
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .find_map(|pair| {
                let (k, v) = pair.trim().split_once('=')?;
                (k == name && !v.is_empty()).then(|| v.trim_matches('"').to_string())
            }),
        KeySource::Query(name) => req.query.and_then(|q| {
            // Percent-decoded, so `al%69ce` and `alice` are one key.
            form_urlencoded::parse(q.as_bytes())
                .find(|(k, v)| k == name && !v.is_empty())
                .map(|(_, v)| v.into_owned())
        }),
        KeySource::PathCapture(_) => capture_slot.and_then(|i| {
            let raw = captures.get(req.path, i)?;
            Some(
                percent_encoding::percent_decode_str(raw)
                    .decode_utf8_lossy()
                    .into_owned(),
            )
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn extractor(trusted: &[&str]) -> KeyExtractor {
        KeyExtractor {
            trusted_proxies: trusted.iter().map(|t| t.parse().unwrap()).collect(),
            ..Default::default()
        }
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn untrusted_peer_is_the_client_whatever_xff_says() {
        let e = extractor(&["10.0.0.0/8"]);
        assert_eq!(
            e.client_ip(ip("198.51.100.9"), &xff(&["1.1.1.1"])),
            ip("198.51.100.9")
        );
    }

    #[test]
    fn trusted_peer_yields_rightmost_untrusted_hop() {
        let e = extractor(&["10.0.0.0/8", "127.0.0.1/32"]);
        // The client prepended a fake 6.6.6.6; the real client is 203.0.113.5.
        let h = xff(&["6.6.6.6, 203.0.113.5, 10.0.0.2"]);
        assert_eq!(e.client_ip(ip("10.0.0.1"), &h), ip("203.0.113.5"));
        // Split across header lines: the last line is the nearest hop.
        let h = xff(&["6.6.6.6", "203.0.113.5", "10.0.0.2"]);
        assert_eq!(e.client_ip(ip("127.0.0.1"), &h), ip("203.0.113.5"));
    }

    #[test]
    fn all_trusted_or_garbage_falls_back_to_nearest_trusted_hop() {
        let e = extractor(&["10.0.0.0/8"]);
        assert_eq!(
            e.client_ip(ip("10.0.0.1"), &xff(&["10.0.0.7"])),
            ip("10.0.0.7")
        );
        assert_eq!(
            e.client_ip(ip("10.0.0.1"), &xff(&["6.6.6.6, not-an-ip, 10.0.0.9"])),
            ip("10.0.0.9")
        );
        assert_eq!(
            e.client_ip(ip("10.0.0.1"), &HeaderMap::new()),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn hops_with_ports_and_mapped_v6_parse() {
        let e = extractor(&["10.0.0.0/8"]);
        assert_eq!(
            e.client_ip(ip("::ffff:10.0.0.1"), &xff(&["203.0.113.5:4711"])),
            ip("203.0.113.5")
        );
        assert_eq!(
            e.client_ip(ip("10.0.0.1"), &xff(&["[2001:db8::1]:80"])),
            ip("2001:db8::1")
        );
    }

    #[test]
    fn sources_read_header_cookie_query_and_decoded_capture() {
        let mut headers = HeaderMap::new();
        headers.insert("x-user-id", HeaderValue::from_static(" alice "));
        headers.insert("cookie", HeaderValue::from_static("a=1; uid=bob; z=9"));
        let captures = crate::route::PathPattern::template("/goods/{id}", "p")
            .unwrap()
            .matches("/goods/a%20b")
            .unwrap();
        let req = RequestParts {
            method: &Method::GET,
            path: "/goods/a%20b",
            query: Some("x=1&user=al%69ce&empty="),
            headers: &headers,
            peer: ip("127.0.0.1"),
        };
        let read = |s: KeySource, slot| read_source(&s, &req, slot, &captures);
        assert_eq!(
            read(
                KeySource::Header(HeaderName::from_static("x-user-id")),
                None
            )
            .as_deref(),
            Some("alice")
        );
        assert_eq!(
            read(KeySource::Cookie("uid".into()), None).as_deref(),
            Some("bob")
        );
        assert_eq!(read(KeySource::Cookie("nope".into()), None), None);
        assert_eq!(
            read(KeySource::Query("user".into()), None).as_deref(),
            Some("alice")
        );
        assert_eq!(read(KeySource::Query("empty".into()), None), None);
        assert_eq!(
            read(KeySource::PathCapture("id".into()), Some(0)).as_deref(),
            Some("a b")
        );
        assert_eq!(read(KeySource::PathCapture("id".into()), None), None);
    }

    #[test]
    fn a_client_cannot_mint_endpoints_with_made_up_methods() {
        let names = EndpointNames::new("goods");
        let method = |m: &str| Method::from_bytes(m.as_bytes()).unwrap();
        let endpoint = |m: &Method| names.with_method(m).to_string();
        assert_eq!(endpoint(&Method::GET), "goods:GET");
        assert_eq!(endpoint(&Method::TRACE), "goods:TRACE");
        assert_eq!(endpoint(&method("FOO1")), "goods:OTHER");
        assert_eq!(endpoint(&method("FOO2")), "goods:OTHER");
    }
}
