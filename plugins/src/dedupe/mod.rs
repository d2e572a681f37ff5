//! `dedupe`: one upstream call per request in flight.
//!
//! The seed incident's amplifier was the consumer itself: a Dubbo client that
//! times out sends the same call again while the first is still running, so a
//! slow provider gets each call two or three times. When requests carry an
//! idempotency key (`Idempotency-Key`, or `X-Request-Id` kept across client
//! retries), the gateway can stop that: the first request is the **leader**
//! and goes upstream; the same request arriving while the leader is in flight
//! either **joins** it — it waits and gets a copy of the leader's response —
//! or is refused at once with 409 (`on_duplicate: reject`).
//!
//! # The same request
//! A key names a call, not an answer: a client may reuse one, and another
//! client may pick the same one (by accident, or to read someone else's
//! answer). So a request joins a leader only when it *is* the same request:
//! same idempotency key, same route (the `endpoint` key), method, path and
//! query, same caller (the `user` key if the request has one, else the client
//! IP) and the same body. These are hashed together into a 128-bit
//! fingerprint (XXH3-128 with a secret seed drawn when the policy is built, so an outsider can
//! neither predict nor aim at one); the in-flight table is keyed by it.
//! A request that shares only the key is a different call: with `join` it
//! goes upstream as its own call (and may lead its own flight); with `reject`
//! it gets 409 `idempotency_key_reused`, as
//! draft-ietf-httpapi-idempotency-key-header treats a reused key with another
//! payload as an error, never as the same call.
//!
//! Limits, by design:
//! - The body is part of the request, so it must be read before the upstream
//!   call: the gateway reads it ahead only when it is at most 64 KiB with a
//!   declared length (Pingora keeps that much to replay it upstream). A larger
//!   body, a body of unknown length (chunked, HTTP/2 without
//!   `content-length`) or one whose client waits for `100 Continue` is shown
//!   as [`RequestBody::Unread`]: the request is not deduplicated, goes
//!   upstream as its own call, and is counted (`unhashable`).
//! - Only duplicates that overlap the leader are caught; once the leader's
//!   response is complete, the key is forgotten.
//! - A response larger than `max_body` is not shared: joiners get 503.
//! - If the leader fails (upstream error, client gone), joiners get 503
//!   rather than a second upstream call — a retry storm is what this prevents.
//! - The in-flight table holds at most `max_in_flight` requests; past that,
//!   new requests are not deduplicated (and counted, `untracked`).
//! - Headers other than the key and the caller's identity are not part of
//!   the request's identity: two requests that differ only in, say,
//!   `Accept` share an answer.
//!
//! One file per concern: [`config`] (the YAML and its validation),
//! [`fingerprint`] (what makes two requests the same request), [`policy`]
//! (lead, join or refuse) and [`keys_in_flight`] (`reject` mode's table).

mod config;
mod fingerprint;
mod keys_in_flight;
mod policy;

pub use config::{DedupeConfig, OnDuplicate};
pub use policy::{Dedupe, DedupeCounts};

#[cfg(test)]
mod tests;
