//! What makes two requests the same request, hashed.
//!
//! Two requests with one idempotency key are the same request when their
//! route, host (case-insensitive), method, path, query, caller (the `user`
//! key, else the client's own IP address, not the IPv6 network the `ip` key
//! counts) and body are equal too. A different request with the
//! key is a different call, however it came to carry it (reuse, a collision,
//! or someone aiming at another user's answer).
//!
//! XXH3-128 with a seed drawn from the OS's randomness when the policy is
//! built: 128 bits keep accidental collisions out of reach (below 2^-70 for
//! a full table of 10,000 at 50k requests a second for ten years), and the
//! secret seed keeps them from being aimed at. XXH3 is not a MAC: a seed that leaked would let someone
//! search for a collision offline, which is why it is never shown.

use std::net::IpAddr;

use http::HeaderValue;
use xxhash_rust::xxh3::Xxh3;

use crate::RequestView;

/// Everything that makes two requests with key `key` the same request,
/// hashed. Each variable-length part is length-prefixed, so that no two
/// different requests feed the hasher the same bytes.
pub(super) fn fingerprint(
    seed: u64,
    key: &HeaderValue,
    req: &RequestView<'_>,
    body: &[u8],
) -> u128 {
    let mut h = Xxh3::with_seed(seed);
    let mut part = |bytes: &[u8]| {
        h.update(&(bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    part(key.as_bytes());
    part(req.route.as_bytes());
    match req.host {
        Some(host) => part(host.to_ascii_lowercase().as_bytes()),
        None => part(b"\xff"),
    }
    part(req.method.as_str().as_bytes());
    part(req.path.as_bytes());
    // `/p` and `/p?` are different requests.
    match req.query {
        Some(q) => {
            part(b"?");
            part(q.as_bytes());
        }
        None => part(b""),
    }
    match (&req.keys.user, req.keys.client) {
        (Some(user), _) => {
            part(b"user");
            part(user.as_bytes());
        }
        (None, ip) => {
            part(b"ip");
            match ip {
                IpAddr::V4(ip) => part(&ip.octets()),
                IpAddr::V6(ip) => part(&ip.octets()),
            }
        }
    }
    part(body);
    h.digest128()
}
