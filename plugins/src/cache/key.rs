//! What makes two requests the same resource for the hot-key cache (RFC 9111
//! §4.1; nginx's `proxy_cache_key` plus its Vary handling).
//!
//! The **primary key** hashes:
//! - the route's id: a rule declared by name on several routes is one
//!   policy with one cache, and each route keeps its own answers in it;
//! - the scheme (`https` or `http`) and the host the request named (without
//!   its port, ASCII case-insensitive; a request that named none differs
//!   from every host), like nginx's `$scheme$proxy_host`: one route may
//!   serve several hosts (tenants) whose answers differ;
//! - the rule's key value;
//! - the method class: GET. Only GET answers are stored; a HEAD looks up the
//!   GET entry and is answered without the body;
//! - the path, byte for byte as received;
//! - the query, normalized ([`super::query`]);
//! - with `authorized: true`, the `Authorization` value, byte for byte: each
//!   credential has its own entries (without it, requests that carry
//!   `Authorization` bypass the cache). `Cookie` is never part of the key:
//!   an upstream whose answers depend on it must mark them `private` (not
//!   stored) or `Vary: Cookie` (stored per cookie value), or the route must
//!   not cache them;
//! - the values of the configured `vary` request headers, byte for byte, in
//!   order (a header absent differs from a header present and empty).
//!
//! The upstream's own `Vary` adds a **secondary key**. An answer without
//! `Vary` is stored under the primary key. An answer with `Vary: a, b` is
//! stored under a variant key (the primary key, the names `a`, `b` and the
//! request's values of them), and the primary key then holds an index entry
//! naming `a`, `b`: a lookup that finds it hashes its own request's values
//! of those headers and looks the variant up. So one resource keeps several
//! variants, and a request whose values match none of them is a miss. An
//! answer with `Vary: *` (or a `Vary` that is not a list of header names) is
//! never stored.
//!
//! Keys are 64-bit hashes with a per-process random seed (foldhash's quality
//! hasher), not the parts themselves: two different requests share an entry
//! only if their hashes collide, by chance about once in 2^64 per pair.
//! foldhash is not a cryptographic hash: the secret seed makes a collision
//! hard to aim for, not impossible.

use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue};

use super::query::{hash_query, write_field};
use crate::RequestView;

/// The method class every entry is stored under (HEAD reads it too).
const GET_CLASS: u8 = 1;

/// Builds the cache keys of one rule's cache.
#[derive(Clone)]
pub(super) struct CacheKeys {
    hasher: foldhash::quality::RandomState,
    /// The configured `vary` request headers.
    vary: Arc<[HeaderName]>,
    /// `authorized: true`: the credential is part of the key.
    authorized: bool,
}

impl CacheKeys {
    pub(super) fn new(vary: Vec<HeaderName>, authorized: bool) -> Self {
        Self {
            hasher: Default::default(),
            vary: vary.into(),
            authorized,
        }
    }

    /// The configured `vary` request headers.
    pub(super) fn configured_vary(&self) -> &[HeaderName] {
        &self.vary
    }

    /// The key of the resource `req` asks for, with `key_hash` the rule's
    /// key value. Allocates nothing.
    pub(super) fn primary(&self, req: &RequestView<'_>, key_hash: u64) -> u64 {
        let mut h = self.hasher.build_hasher();
        GET_CLASS.hash(&mut h);
        req.route.hash(&mut h);
        req.tls.hash(&mut h);
        hash_host(&mut h, req.host);
        key_hash.hash(&mut h);
        req.path.hash(&mut h);
        hash_query(&mut h, req.query);
        if self.authorized {
            hash_values(&mut h, &[http::header::AUTHORIZATION], req.headers);
        }
        hash_values(&mut h, &self.vary, req.headers);
        h.finish()
    }

    /// The key of the variant of `primary` that `headers` select, for an
    /// upstream that varies on `names`.
    pub(super) fn variant(&self, primary: u64, names: &[HeaderName], headers: &HeaderMap) -> u64 {
        let mut h = self.hasher.build_hasher();
        primary.hash(&mut h);
        hash_values(&mut h, names, headers);
        h.finish()
    }
}

/// The host, lowercased byte by byte as it is fed (host names are
/// case-insensitive, RFC 9110 §4.2.3); none differs from every host.
fn hash_host(h: &mut impl Hasher, host: Option<&str>) {
    match host {
        None => h.write_u8(0),
        Some(host) => {
            h.write_u8(1);
            write_field(h, host.bytes().map(|b| b.to_ascii_lowercase()));
        }
    }
}

/// Each header's name and its values in order; a header absent differs
/// from one present with an empty value.
fn hash_values(h: &mut impl Hasher, names: &[HeaderName], headers: &HeaderMap) {
    for name in names {
        name.as_str().hash(h);
        let mut count = 0usize;
        for value in headers.get_all(name) {
            value.as_bytes().hash(h);
            count += 1;
        }
        count.hash(h);
    }
}

/// What an answer's `Vary` says about storing it.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Vary {
    /// Not stored: `Vary: *`, or a `Vary` that is not a list of header names.
    Anything,
    /// Stored per value of these request headers (lowercase, sorted,
    /// without repeats; empty: no `Vary`).
    On(Box<[HeaderName]>),
}

impl Vary {
    /// Reads the `Vary` fields of an answer (there may be several).
    pub(super) fn of(headers: &[(HeaderName, HeaderValue)]) -> Self {
        let mut names = Vec::new();
        for (_, value) in headers.iter().filter(|(n, _)| n == http::header::VARY) {
            let Ok(list) = value.to_str() else {
                return Vary::Anything;
            };
            for item in list.split(',').map(str::trim).filter(|i| !i.is_empty()) {
                match HeaderName::from_bytes(item.as_bytes()) {
                    Ok(name) if item != "*" => names.push(name),
                    _ => return Vary::Anything,
                }
            }
        }
        names.sort_unstable_by(|a, b| a.as_str().cmp(b.as_str()));
        names.dedup();
        Vary::On(names.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::keys;
    use crate::RequestBody;

    /// The primary key of `GET /` to `host` on route `r` over plain HTTP,
    /// with `headers`.
    fn primary_of(k: &CacheKeys, host: Option<&str>, headers: &HeaderMap) -> u64 {
        let keys = keys("10.0.0.1", None);
        let view = RequestView {
            route: "r",
            host,
            tls: false,
            method: &http::Method::GET,
            path: "/",
            query: None,
            headers,
            keys: &keys,
            grpc: false,
            now_nanos: 0,
            body: RequestBody::Unread,
        };
        k.primary(&view, 7)
    }

    #[test]
    fn hosts_differ_by_name_not_by_case() {
        let k = CacheKeys::new(vec![], false);
        let none = HeaderMap::new();
        let a = primary_of(&k, Some("tenant-a.shop.test"), &none);
        assert_eq!(a, primary_of(&k, Some("Tenant-A.SHOP.test"), &none));
        assert_ne!(a, primary_of(&k, Some("tenant-b.shop.test"), &none));
        assert_ne!(a, primary_of(&k, None, &none));
        assert_ne!(primary_of(&k, Some(""), &none), primary_of(&k, None, &none));
        // Past one 32-byte block of the field writer, too.
        let long = "a-rather-long-tenant-name-of-forty-bytes.shop.test";
        assert_eq!(
            primary_of(&k, Some(long), &none),
            primary_of(&k, Some(&long.to_ascii_uppercase()), &none)
        );
    }

    #[test]
    fn the_credential_is_part_of_the_key_only_when_authorized() {
        let with = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(http::header::AUTHORIZATION, HeaderValue::from_static(v));
            h
        };
        let authorized = CacheKeys::new(vec![], true);
        let alice = primary_of(&authorized, None, &with("Bearer alice"));
        assert_ne!(alice, primary_of(&authorized, None, &with("Bearer bob")));
        assert_ne!(alice, primary_of(&authorized, None, &HeaderMap::new()));
        assert_eq!(alice, primary_of(&authorized, None, &with("Bearer alice")));
        let plain = CacheKeys::new(vec![], false);
        assert_eq!(
            primary_of(&plain, None, &with("Bearer alice")),
            primary_of(&plain, None, &with("Bearer bob"))
        );
    }

    fn vary(values: &[&str]) -> Vary {
        let headers: Vec<_> = values
            .iter()
            .map(|v| (http::header::VARY, HeaderValue::from_str(v).unwrap()))
            .collect();
        Vary::of(&headers)
    }

    fn on(names: &[&'static str]) -> Vary {
        Vary::On(names.iter().map(|n| HeaderName::from_static(n)).collect())
    }

    #[test]
    fn vary_lists_are_read_as_sorted_lowercase_names() {
        assert_eq!(vary(&[]), on(&[]));
        assert_eq!(
            vary(&["Accept-Language, accept-encoding", "ACCEPT-LANGUAGE"]),
            on(&["accept-encoding", "accept-language"])
        );
        assert_eq!(vary(&[" , cookie ,"]), on(&["cookie"]));
    }

    #[test]
    fn a_star_or_a_broken_list_varies_on_anything() {
        assert_eq!(vary(&["*"]), Vary::Anything);
        assert_eq!(vary(&["accept", "cookie, *"]), Vary::Anything);
        assert_eq!(vary(&["not a header"]), Vary::Anything);
    }
}
