//! What the hot-key cache stores under a key: an answer, or (under a
//! resource's primary key, when the upstream's answers carry `Vary`) the
//! index that names the headers its variants are keyed on. Both are weighed
//! in bytes, expire at their `stale_until`, and name the rule's key value
//! they belong to ([`RuleKey`]), by which cooling and the admin drop them.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue};

use crate::key_text::cut_key;
use crate::LocalResponse;

/// Bytes charged per entry besides its body, headers and key text (the
/// entry, the moka node, the key).
pub(super) const ENTRY_OVERHEAD: u32 = 160;
/// Bytes charged per header besides its name and value.
const HEADER_OVERHEAD: usize = 16;

/// One value in the cache.
#[derive(Clone)]
pub(super) enum Entry {
    Answer(Arc<CachedResponse>),
    Variants(Arc<VariantIndex>),
}

/// The rule's key value an entry belongs to.
///
/// Entries are dropped by its `hash` when the key cools: the hot event names
/// the key by the same hash, and only by a cut text. The text is kept for
/// the admin's `DELETE /cache/{rule}/{key}`, cut to
/// [`KEY_TEXT_MAX`](crate::key_text::KEY_TEXT_MAX) bytes like every key text
/// kept: the key is client-chosen and may be a 1 MiB header value, which an
/// entry must not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleKey {
    /// The hash the rule knows the key by (the detector's and the hot
    /// events').
    pub hash: u64,
    /// Its text, cut.
    pub text: Box<str>,
}

impl RuleKey {
    /// The key `hash` rendered as `text`, which is cut.
    pub fn new(hash: u64, text: String) -> Self {
        Self {
            hash,
            text: cut_key(text).into_boxed_str(),
        }
    }
}

/// One stored answer.
#[derive(Debug)]
pub struct CachedResponse {
    /// The rule's key value, for invalidation by key.
    pub key: RuleKey,
    pub status: u16,
    /// The upstream's headers but `Age`, which [`CachedResponse::answer`]
    /// computes.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
    /// Seconds the answer had spent in caches upstream when it was stored
    /// (its `Age`).
    pub initial_age: u64,
    /// Policy clock, nanoseconds.
    pub stored_at: u64,
    pub fresh_until: u64,
    pub stale_until: u64,
}

/// Under a resource's primary key: its answers vary on these request
/// headers, so each is stored under the variant key they select.
#[derive(Debug)]
pub(super) struct VariantIndex {
    /// The rule's key value, for invalidation by key.
    pub key: RuleKey,
    /// Lowercase, sorted, never empty.
    pub names: Box<[HeaderName]>,
    pub stored_at: u64,
    /// The last `stale_until` of the variants stored with these names.
    pub stale_until: u64,
}

impl Entry {
    /// The rule's key value it belongs to.
    pub(super) fn key(&self) -> &RuleKey {
        match self {
            Entry::Answer(a) => &a.key,
            Entry::Variants(v) => &v.key,
        }
    }

    fn lifetime(&self) -> Duration {
        let (from, until) = match self {
            Entry::Answer(a) => (a.stored_at, a.stale_until),
            Entry::Variants(v) => (v.stored_at, v.stale_until),
        };
        Duration::from_nanos(until.saturating_sub(from))
    }

    pub(super) fn weight(&self) -> u32 {
        let bytes = match self {
            Entry::Answer(a) => {
                let headers: usize = a
                    .headers
                    .iter()
                    .map(|(n, v)| n.as_str().len() + v.len() + HEADER_OVERHEAD)
                    .sum();
                a.body.len() + headers + a.key.text.len()
            }
            Entry::Variants(v) => {
                let names: usize = v
                    .names
                    .iter()
                    .map(|n| n.as_str().len() + HEADER_OVERHEAD)
                    .sum();
                names + v.key.text.len()
            }
        };
        // Bodies are at most 1 GiB (`max_body`) and key texts 128 bytes:
        // the weight saturates only for headers of over 3 GiB.
        u32::try_from(bytes)
            .unwrap_or(u32::MAX)
            .saturating_add(ENTRY_OVERHEAD)
    }
}

impl CachedResponse {
    /// The answer for a client, with `Age` (its age upstream plus its time
    /// here, RFC 9111 §5.1) and `Cache-Status`; without the body for a HEAD.
    pub(super) fn answer(&self, now: u64, head: bool, status: String) -> LocalResponse {
        let mut headers = self.headers.clone();
        let resident = now.saturating_sub(self.stored_at) / 1_000_000_000;
        let age = self.initial_age.saturating_add(resident);
        headers.push((http::header::AGE, HeaderValue::from(age)));
        headers.push((cache_status(), header_value(status)));
        if head {
            // A HEAD answer has no body but the length of the GET's.
            headers.push((
                http::header::CONTENT_LENGTH,
                HeaderValue::from(self.body.len()),
            ));
        }
        LocalResponse {
            status: self.status,
            headers,
            body: if head {
                Bytes::new()
            } else {
                self.body.clone()
            },
            trailers: None,
        }
    }
}

pub(super) fn cache_status() -> HeaderName {
    HeaderName::from_static("cache-status")
}

pub(super) fn header_value(s: String) -> HeaderValue {
    HeaderValue::try_from(s).unwrap_or_else(|_| HeaderValue::from_static("breakwater"))
}

/// Entries live until their `stale_until`: from their creation, and again
/// from a replacement (a refill, a wider index), which moka would otherwise
/// leave on the replaced entry's clock.
pub(super) struct Expiry;

impl moka::Expiry<u64, Entry> for Expiry {
    fn expire_after_create(
        &self,
        _key: &u64,
        value: &Entry,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(value.lifetime())
    }

    fn expire_after_update(
        &self,
        _key: &u64,
        value: &Entry,
        _updated_at: std::time::Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.lifetime())
    }
}
