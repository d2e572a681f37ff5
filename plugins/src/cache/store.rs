//! The hot-data local cache: GET answers for hot keys (or for every key with
//! `always: true`), served from memory to GET and HEAD.
//!
//! - **Key**: what makes two requests the same resource (RFC 9111 §4.1): the
//!   route, the scheme and host, the rule's key value, the method class
//!   (GET), the path, the normalized query, the credential (with
//!   `authorized: true`), the configured `vary` request headers, and the
//!   upstream's own `Vary` as a secondary key. [`super::key`] has the
//!   exact rule, [`super::query`] the query normalization.
//! - **GET fills, HEAD only reads**: a HEAD is answered from a stored GET
//!   answer (without its body). A HEAD miss goes upstream on its own: it
//!   never stores, never leads a fill that GETs would wait for, never waits
//!   for one (`Cache-Status: breakwater; fwd=miss; detail=head`).
//! - **Bounded**: a moka cache weighed in bytes (body, headers, the key's
//!   text cut to 128 bytes, and a fixed overhead per entry, variant index
//!   entries included), evicting by its TinyLFU policy past `max_bytes`.
//! - **Fresh, then stale**: an entry is fresh for `ttl` (or what is left of
//!   the upstream's `max-age` after its `Age`, if shorter:
//!   [`super::freshness`]), then kept `stale_ttl` longer for
//!   stale-if-error: served only when the upstream fails (no answer, or a
//!   5xx) or a later policy (an open breaker) refuses the refill.
//! - **What is stored**: configured statuses (200 by default; never 206 or
//!   304, which answer one request's `Range` or condition); never a response
//!   with `Cache-Control: no-store`, `private` or `no-cache`, with
//!   `max-age=0`, with an `Age` that reaches its max-age, with `Set-Cookie`
//!   or with `Vary: *`; never a request with `Authorization` unless
//!   `authorized: true`; bodies up to `max_body` (at most 1 GiB).
//! - **Dropped by key**: a key's entries (every route, path, query and
//!   variant) go when it cools, found by the key's hash, which the hot event
//!   carries; the admin drops them by the key's text or its hash
//!   ([`KeyRef`]).
//! - **Single flight**: concurrent GET misses on one key (the variant key,
//!   when a stored answer told which headers the resource varies on) make
//!   one upstream request; the others wait for it (up to `wait`) and get a
//!   copy, if every header the answer's `Vary` names was part of the key
//!   they waited on (the configured `vary` and the names known from a
//!   stored answer); otherwise they go upstream themselves. If the answer
//!   cannot be stored or the fill fails, they get the stale copy if one is
//!   kept, else go upstream. Past [`MAX_FILLS`] fills in flight, a miss goes
//!   upstream untracked (no single flight), still with its stale fallback.
//! - Every answer that involved the cache carries `Cache-Status` (RFC 9211).
//!
//! Limits: `If-None-Match` and other conditions are not evaluated (a stored
//! 200 answers them in full, as a cache may); `Vary` values are compared byte
//! for byte, without the per-header normalization RFC 9111 allows.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};
use moka::sync::Cache;
use serde::{Deserialize, Serialize};

use super::entry::{cache_status, Entry, Expiry, VariantIndex};
use super::entry::{CachedResponse, RuleKey};
use super::freshness::freshness;
use super::key::{CacheKeys, Vary};
use crate::block_list::parse_hash_ref;
use crate::bounds::{in_range, nanos};
use crate::duration::HumanDuration;
use crate::flight::{Accept, Flights, Role};
use crate::key_text::cut_key;
use crate::{ConfigError, Decision, Exchange, LocalResponse, RequestView, WaitOutcome};

/// `cache:` in a `hotkey` rule.
///
/// ```yaml
/// cache:
///   ttl: 5s                  # fresh for (or the upstream's max-age less its Age, if shorter)
///   stale_ttl: 30s           # then served on upstream errors / an open breaker
///   max_bytes: 67108864      # the rule's cache, in bytes
///   max_body: 1048576        # largest body stored (at most 1 GiB)
///   statuses: [200]          # never 206 or 304 (one request's Range or condition)
///   vary: [accept-encoding]  # request headers that are part of the key
///   authorized: false        # true: also cache requests with Authorization
///   always: false            # true: cache every key, hot or not
///   wait: 5s                 # how long concurrent misses wait for the first
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    #[serde(default = "default_ttl")]
    pub ttl: HumanDuration,
    #[serde(default = "default_stale_ttl")]
    pub stale_ttl: HumanDuration,
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
    #[serde(default = "default_max_body")]
    pub max_body: usize,
    #[serde(default = "default_statuses")]
    pub statuses: Vec<u16>,
    #[serde(default)]
    pub vary: Vec<String>,
    #[serde(default)]
    pub authorized: bool,
    #[serde(default)]
    pub always: bool,
    #[serde(default = "default_wait")]
    pub wait: HumanDuration,
}

fn default_ttl() -> HumanDuration {
    Duration::from_secs(5).into()
}
fn default_stale_ttl() -> HumanDuration {
    Duration::from_secs(30).into()
}
fn default_max_bytes() -> u64 {
    64 << 20
}
fn default_max_body() -> usize {
    1 << 20
}
fn default_statuses() -> Vec<u16> {
    vec![200]
}
fn default_wait() -> HumanDuration {
    Duration::from_secs(5).into()
}

/// Keys being filled at once per rule, at most.
pub(super) const MAX_FILLS: usize = 10_000;

/// The largest `max_body`: entries are weighed in `u32` bytes, and a fill
/// buffers the whole body before storing it.
const MAX_BODY: usize = 1 << 30;

/// Why waiters do not get a fill that is fine but may not be theirs: it
/// varies on a header they were not matched on, or on anything. They go
/// upstream, never to a stale copy (that is for errors).
const VARIES_UNMATCHED: &str =
    "the response varies on request headers the waiters were not matched on";
const VARIES_ON_ANYTHING: &str = "the response varies on anything (Vary: *)";

/// Counts for metrics and the admin.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct CacheCounts {
    pub hit: u64,
    pub miss: u64,
    pub stale: u64,
    pub collapsed: u64,
    pub bypass: u64,
    pub stored: u64,
    pub entries: u64,
    pub bytes: u64,
    /// Entries evicted to stay within `max_bytes` (not expired ones).
    pub evicted: u64,
    pub max_bytes: u64,
}

pub struct ResponseCache {
    store: Arc<Store>,
    flights: Flights,
    authorized: bool,
    always: bool,
    wait: Duration,
    counts: Arc<Counters>,
}

/// The entries and what storing into them takes: shared with the fills in
/// flight, which store the leader's answer when it completes.
struct Store {
    entries: Cache<u64, Entry>,
    keys: CacheKeys,
    ttl: u64,
    stale_ttl: u64,
    max_body: usize,
    statuses: Vec<u16>,
    counts: Arc<Counters>,
}

#[derive(Default)]
struct Counters {
    hit: AtomicU64,
    miss: AtomicU64,
    stale: AtomicU64,
    collapsed: AtomicU64,
    bypass: AtomicU64,
    stored: AtomicU64,
    evicted: AtomicU64,
}

/// What a lookup found for one request.
struct Lookup {
    /// The key its answer is (or would be) stored under, and fills are
    /// shared on: the primary key, or the variant key a stored index selects.
    key: u64,
    /// The index found under the primary key, if any.
    index: Option<Arc<VariantIndex>>,
    answer: Option<Arc<CachedResponse>>,
}

impl CacheConfig {
    pub fn compile(&self, path: &str) -> Result<ResponseCache, ConfigError> {
        let ttl = self.ttl.as_duration();
        if ttl.is_zero() || ttl > Duration::from_secs(24 * 3600) {
            return Err(ConfigError::new(
                format!("{path}.ttl"),
                "must be between 1ms and 24h",
            ));
        }
        if self.stale_ttl.as_duration() > Duration::from_secs(7 * 24 * 3600) {
            return Err(ConfigError::new(
                format!("{path}.stale_ttl"),
                "must be at most 7d",
            ));
        }
        if self.max_bytes < 1024 || self.max_bytes > 64 << 30 {
            return Err(ConfigError::new(
                format!("{path}.max_bytes"),
                "must be between 1 KiB and 64 GiB",
            ));
        }
        if self.max_body == 0 || self.max_body > MAX_BODY || self.max_body as u64 > self.max_bytes {
            return Err(ConfigError::new(
                format!("{path}.max_body"),
                format!("must be between 1 and {MAX_BODY} (1 GiB) and at most max_bytes"),
            ));
        }
        if self.statuses.is_empty() {
            return Err(ConfigError::new(
                format!("{path}.statuses"),
                "list HTTP statuses between 200 and 599",
            ));
        }
        for (i, status) in self.statuses.iter().enumerate() {
            in_range(*status, 200..=599, format!("{path}.statuses[{i}]"))?;
        }
        if let Some(s) = self.statuses.iter().find(|s| matches!(s, 206 | 304)) {
            return Err(ConfigError::new(
                format!("{path}.statuses"),
                format!("{s} answers one request's Range or condition, not the resource: it cannot be stored"),
            ));
        }
        let vary = self
            .vary
            .iter()
            .enumerate()
            .map(|(i, h)| {
                HeaderName::from_bytes(h.as_bytes()).map_err(|_| {
                    ConfigError::new(
                        format!("{path}.vary[{i}]"),
                        format!("\"{h}\" is not a valid header name"),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let wait = self.wait.as_duration();
        if wait.is_zero() || wait > Duration::from_secs(60) {
            return Err(ConfigError::new(
                format!("{path}.wait"),
                "must be between 1ms and 60s",
            ));
        }
        let counts = Arc::new(Counters::default());
        let evictions = counts.clone();
        Ok(ResponseCache {
            store: Arc::new(Store {
                entries: Cache::builder()
                    .max_capacity(self.max_bytes)
                    .weigher(|_k: &u64, v: &Entry| v.weight())
                    .eviction_listener(move |_k, _v, cause| {
                        // Memory pressure: the cache is full and its
                        // policy pushed an entry out before its time.
                        if cause == moka::notification::RemovalCause::Size {
                            evictions.evicted.fetch_add(1, Ordering::Relaxed);
                        }
                    })
                    .expire_after(Expiry)
                    .support_invalidation_closures()
                    .build(),
                keys: CacheKeys::new(vary, self.authorized),
                ttl: nanos(ttl),
                stale_ttl: nanos(self.stale_ttl.as_duration()),
                max_body: self.max_body,
                statuses: self.statuses.clone(),
                counts: counts.clone(),
            }),
            flights: Flights::new(MAX_FILLS, self.max_body),
            authorized: self.authorized,
            always: self.always,
            wait,
            counts,
        })
    }
}

/// How the admin names a key whose entries it drops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRef<'a> {
    /// `#<16 hex digits>`: the key's hash, as `GET /hotkeys` lists it. The
    /// one way to name a single key whose text was cut.
    Hash(u64),
    /// The key's text. A text past 128 bytes is compared cut, so it names
    /// every key whose text is cut alike.
    Text(&'a str),
}

impl<'a> KeyRef<'a> {
    /// `#0123456789abcdef` is a hash (as on the block list), anything else
    /// a text.
    pub fn parse(s: &'a str) -> Self {
        parse_hash_ref(s).map_or(KeyRef::Text(s), KeyRef::Hash)
    }
}

impl ResponseCache {
    /// Whether a key's requests are served from the cache: while it is hot,
    /// and for every key with `always: true`.
    pub fn serves(&self, hot: bool) -> bool {
        hot || self.always
    }

    /// The cache's part in a request for a key the rule serves from cache.
    /// `key_hash` identifies the rule's key value (cooling drops its entries
    /// by it); `key_text` renders it, only when a fill starts.
    pub fn on_request(
        &self,
        req: &RequestView<'_>,
        key_hash: u64,
        key_text: impl FnOnce() -> String,
        exchange: &mut Exchange,
    ) -> Decision {
        let head = req.method == Method::HEAD;
        if !(head || req.method == Method::GET) {
            return Decision::Continue;
        }
        if !self.authorized && req.headers.contains_key(http::header::AUTHORIZATION) {
            self.counts.bypass.fetch_add(1, Ordering::Relaxed);
            exchange.add_response_header(
                cache_status(),
                HeaderValue::from_static("breakwater; fwd=bypass; detail=authorization"),
            );
            return Decision::Continue;
        }
        let primary = self.store.keys.primary(req, key_hash);
        let found = self.lookup(primary, req.headers);
        let now = req.now_nanos;
        let stale = match found.answer {
            Some(e) if now < e.fresh_until => {
                self.counts.hit.fetch_add(1, Ordering::Relaxed);
                let ttl = (e.fresh_until - now).div_ceil(1_000_000_000);
                return Decision::Respond(e.answer(
                    now,
                    head,
                    format!("breakwater; hit; ttl={ttl}"),
                ));
            }
            Some(e) if now < e.stale_until => Some(e),
            _ => None,
        };
        if head {
            // Only GET answers are stored: a HEAD's (no body) would answer
            // GETs empty. So a HEAD neither fills nor leads a fill.
            self.forward(exchange, &stale, now, true);
            return Decision::Continue;
        }
        let role = self.flights.begin(found.key, || {
            let matched_on = found.index.as_ref().map(|ix| ix.names.clone());
            Some(self.store.clone().fill(
                primary,
                matched_on.unwrap_or_default(),
                req.headers.clone(),
                now,
                RuleKey::new(key_hash, key_text()),
            ))
        });
        match role {
            Role::Lead(tap) => {
                exchange.hold(tap);
                self.forward(exchange, &stale, now, false);
                Decision::Continue
            }
            Role::Join(joiner) => {
                let (wait, counts) = (self.wait, self.counts.clone());
                Decision::Wait(Box::pin(async move {
                    match joiner.wait(wait).await {
                        Ok(resp) => {
                            counts.collapsed.fetch_add(1, Ordering::Relaxed);
                            let mut resp = (*resp).clone();
                            resp.headers.push((
                                cache_status(),
                                HeaderValue::from_static("breakwater; fwd=miss; collapsed"),
                            ));
                            WaitOutcome::Respond(resp)
                        }
                        Err(VARIES_UNMATCHED | VARIES_ON_ANYTHING) => WaitOutcome::Admit(None),
                        Err(_) => match stale {
                            Some(e) => {
                                counts.stale.fetch_add(1, Ordering::Relaxed);
                                WaitOutcome::Respond(e.answer(
                                    now,
                                    false,
                                    "breakwater; hit; detail=stale-if-error".into(),
                                ))
                            }
                            None => WaitOutcome::Admit(None),
                        },
                    }
                }))
            }
            // Too many fills in flight: this miss is not shared, but is a
            // miss all the same, with its stale copy for errors.
            Role::Untracked => {
                self.forward(exchange, &stale, now, false);
                Decision::Continue
            }
        }
    }

    /// Finds the answer for `headers`' variant of the resource `primary`:
    /// one read, two when the resource varies.
    fn lookup(&self, primary: u64, headers: &http::HeaderMap) -> Lookup {
        let entries = &self.store.entries;
        match entries.get(&primary) {
            None => Lookup {
                key: primary,
                index: None,
                answer: None,
            },
            Some(Entry::Answer(answer)) => Lookup {
                key: primary,
                index: None,
                answer: Some(answer),
            },
            Some(Entry::Variants(index)) => {
                let key = self.store.keys.variant(primary, &index.names, headers);
                let answer = match entries.get(&key) {
                    Some(Entry::Answer(answer)) => Some(answer),
                    _ => None,
                };
                Lookup {
                    key,
                    index: Some(index),
                    answer,
                }
            }
        }
    }

    /// A miss goes upstream: says so, with a stale copy as the fallback.
    fn forward(
        &self,
        exchange: &mut Exchange,
        stale: &Option<Arc<CachedResponse>>,
        now: u64,
        head: bool,
    ) {
        self.counts.miss.fetch_add(1, Ordering::Relaxed);
        let status = match (stale.is_some(), head) {
            (false, false) => "breakwater; fwd=miss",
            (true, false) => "breakwater; fwd=stale",
            (false, true) => "breakwater; fwd=miss; detail=head",
            (true, true) => "breakwater; fwd=stale; detail=head",
        };
        exchange.add_response_header(cache_status(), HeaderValue::from_static(status));
        if let Some(e) = stale {
            let counts = self.counts.clone();
            exchange.set_fallback(
                e.answer(now, head, "breakwater; hit; detail=stale-if-error".into()),
                move || {
                    counts.stale.fetch_add(1, Ordering::Relaxed);
                },
            );
        }
    }

    /// A key cooled: its answers are not served from cache any more, so they
    /// go (with `always: true` they stay). `key_hash` is the hash the
    /// entries keep; the cooling event's text may be cut.
    pub fn cooled(&self, key_hash: u64) {
        if !self.always {
            self.invalidate(KeyRef::Hash(key_hash));
        }
    }

    /// Drops every entry of the rule's key `key`: every route, path, query
    /// and variant, and the variant indexes. Entries go lazily, as moka
    /// runs its pending tasks (on later reads and writes, or
    /// [`Self::counts`]); none is served after this returns.
    pub fn invalidate(&self, key: KeyRef<'_>) {
        let entries = &self.store.entries;
        let _ = match key {
            KeyRef::Hash(hash) => entries.invalidate_entries_if(move |_, v| v.key().hash == hash),
            KeyRef::Text(text) => {
                let text: Box<str> = cut_key(text.to_string()).into();
                entries.invalidate_entries_if(move |_, v| v.key().text == text)
            }
        };
    }

    pub fn purge(&self) {
        self.store.entries.invalidate_all();
    }

    /// `entries` and `bytes` count variant index entries too.
    pub fn counts(&self) -> CacheCounts {
        let entries = &self.store.entries;
        entries.run_pending_tasks();
        CacheCounts {
            hit: self.counts.hit.load(Ordering::Relaxed),
            miss: self.counts.miss.load(Ordering::Relaxed),
            stale: self.counts.stale.load(Ordering::Relaxed),
            collapsed: self.counts.collapsed.load(Ordering::Relaxed),
            bypass: self.counts.bypass.load(Ordering::Relaxed),
            stored: self.counts.stored.load(Ordering::Relaxed),
            entries: entries.entry_count(),
            bytes: entries.weighted_size(),
            evicted: self.counts.evicted.load(Ordering::Relaxed),
            max_bytes: entries.policy().max_capacity().unwrap_or(0),
        }
    }
}

impl Store {
    /// The fill's `accept` hook: stores the leader's answer if it may be
    /// stored, and lets the waiters have it if they were matched on every
    /// header it varies on. `matched_on` are the names from the index the
    /// fill's key was built with; `headers` the leader's request headers,
    /// which select the answer's variant.
    fn fill(
        self: Arc<Self>,
        primary: u64,
        matched_on: Box<[HeaderName]>,
        headers: http::HeaderMap,
        now: u64,
        key: RuleKey,
    ) -> Accept {
        Box::new(move |resp: &Arc<LocalResponse>| {
            // An answer with trailers is not stored: entries keep none.
            if !self.statuses.contains(&resp.status)
                || resp.body.len() > self.max_body
                || resp.trailers.is_some()
            {
                return Err("the response is not cacheable");
            }
            let upstream = freshness(&resp.headers)?;
            let Vary::On(names) = Vary::of(&resp.headers) else {
                return Err(VARIES_ON_ANYTHING);
            };
            // The upstream's max-age may be any number: saturate, never wrap.
            let fresh = upstream
                .lifetime
                .map_or(self.ttl, |d| nanos(d).min(self.ttl));
            let answer = Arc::new(CachedResponse {
                key: key.clone(),
                status: resp.status,
                // `answer` says the entry's own `Age`.
                headers: resp
                    .headers
                    .iter()
                    .filter(|(n, _)| n != http::header::AGE)
                    .cloned()
                    .collect(),
                body: resp.body.clone(),
                initial_age: upstream.age,
                stored_at: now,
                fresh_until: now.saturating_add(fresh),
                stale_until: now.saturating_add(fresh).saturating_add(self.stale_ttl),
            });
            let shared = names
                .iter()
                .all(|n| matched_on.contains(n) || self.keys.configured_vary().contains(n));
            if names.is_empty() {
                self.entries.insert(primary, Entry::Answer(answer));
            } else {
                let variant = self.keys.variant(primary, &names, &headers);
                let stale_until = match self.entries.get(&primary) {
                    Some(Entry::Variants(ix)) if ix.names == names => {
                        ix.stale_until.max(answer.stale_until)
                    }
                    _ => answer.stale_until,
                };
                self.entries.insert(variant, Entry::Answer(answer));
                self.entries.insert(
                    primary,
                    Entry::Variants(Arc::new(VariantIndex {
                        key,
                        names,
                        stored_at: now,
                        stale_until,
                    })),
                );
            }
            self.counts.stored.fetch_add(1, Ordering::Relaxed);
            if shared {
                Ok(())
            } else {
                Err(VARIES_UNMATCHED)
            }
        })
    }
}
