//! The hot-data local cache: GET and HEAD answers for hot keys (or for every
//! key with `always: true`), served from memory.
//!
//! - **Bounded**: a moka cache weighed in bytes (body, headers and a fixed
//!   overhead per entry), evicting by its TinyLFU policy past `max_bytes`.
//! - **Fresh, then stale**: an entry is fresh for `ttl` (or the upstream's
//!   `max-age`, if shorter), then kept `stale_ttl` longer for stale-if-error:
//!   served only when the upstream fails (no answer, or a 5xx) or a later
//!   policy (an open breaker) refuses the refill.
//! - **What is stored**: configured statuses (200 by default); never a
//!   response with `Cache-Control: no-store`, `private` or `no-cache`, with
//!   `max-age=0`, or with `Set-Cookie`; never a request with `Authorization`
//!   unless `authorized: true`; bodies up to `max_body`.
//! - **Key**: the rule (so the route), the rule's key value, and the values
//!   of the `vary` headers. GET and HEAD share entries.
//! - **Single flight**: concurrent misses on one cache key make one upstream
//!   request; the others wait for it (up to `wait`) and get a copy. If that
//!   response is not cacheable, they go upstream themselves.
//! - Every answer that involved the cache carries `Cache-Status` (RFC 9211).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method};
use moka::sync::Cache;
use serde::{Deserialize, Serialize};

use crate::bounds::{in_range, nanos};
use crate::duration::HumanDuration;
use crate::flight::{Accept, Flights, Role};
use crate::{ConfigError, Decision, LocalResponse, Permits, RequestView, WaitOutcome};

/// `cache:` in a `hotkey` rule.
///
/// ```yaml
/// cache:
///   ttl: 5s                  # fresh for (or the upstream's max-age, if shorter)
///   stale_ttl: 30s           # then served on upstream errors / an open breaker
///   max_bytes: 67108864      # the rule's cache, in bytes
///   max_body: 1048576        # largest body stored
///   statuses: [200]
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

/// Bytes charged per entry besides its body and headers (the entry, the
/// moka node, the key).
const ENTRY_OVERHEAD: u32 = 160;
/// Keys being filled at once per rule, at most.
const MAX_FILLS: usize = 10_000;

/// One stored answer.
#[derive(Debug)]
pub struct CachedResponse {
    /// The rule's key value, for invalidation by key.
    pub key: Box<str>,
    pub status: u16,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
    /// Policy clock, nanoseconds.
    pub stored_at: u64,
    pub fresh_until: u64,
    pub stale_until: u64,
}

impl CachedResponse {
    fn weight(&self) -> u32 {
        let headers: usize = self
            .headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 16)
            .sum();
        (self.body.len() + headers + self.key.len())
            .try_into()
            .unwrap_or(u32::MAX)
            .saturating_add(ENTRY_OVERHEAD)
    }

    /// The answer for a client, with `Age` and `Cache-Status`.
    fn answer(&self, now: u64, head: bool, status: String) -> LocalResponse {
        let mut headers = self.headers.clone();
        let age = now.saturating_sub(self.stored_at) / 1_000_000_000;
        headers.push((http::header::AGE, HeaderValue::from(age)));
        headers.push((cache_status(), header_value(status)));
        LocalResponse {
            status: self.status,
            headers,
            body: if head {
                Bytes::new()
            } else {
                self.body.clone()
            },
        }
    }
}

fn cache_status() -> HeaderName {
    HeaderName::from_static("cache-status")
}

fn header_value(s: String) -> HeaderValue {
    HeaderValue::try_from(s).unwrap_or_else(|_| HeaderValue::from_static("breakwater"))
}

struct Expiry;

impl moka::Expiry<u64, Arc<CachedResponse>> for Expiry {
    fn expire_after_create(
        &self,
        _key: &u64,
        value: &Arc<CachedResponse>,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(Duration::from_nanos(
            value.stale_until.saturating_sub(value.stored_at),
        ))
    }
}

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
}

pub struct ResponseCache {
    entries: Cache<u64, Arc<CachedResponse>>,
    flights: Flights,
    ttl: u64,
    stale_ttl: u64,
    max_body: usize,
    statuses: Vec<u16>,
    vary: Vec<HeaderName>,
    authorized: bool,
    always: bool,
    wait: Duration,
    hasher: foldhash::quality::RandomState,
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
        if self.max_body == 0 || self.max_body as u64 > self.max_bytes {
            return Err(ConfigError::new(
                format!("{path}.max_body"),
                "must be > 0 and at most max_bytes",
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
        Ok(ResponseCache {
            entries: Cache::builder()
                .max_capacity(self.max_bytes)
                .weigher(|_k: &u64, v: &Arc<CachedResponse>| v.weight())
                .expire_after(Expiry)
                .support_invalidation_closures()
                .build(),
            flights: Flights::new(MAX_FILLS, self.max_body),
            ttl: nanos(ttl),
            stale_ttl: nanos(self.stale_ttl.as_duration()),
            max_body: self.max_body,
            statuses: self.statuses.clone(),
            vary,
            authorized: self.authorized,
            always: self.always,
            wait,
            hasher: Default::default(),
            counts: Default::default(),
        })
    }
}

/// How long the upstream lets a response be stored: `None` for "not at
/// all", `Some(None)` for "no limit of its own", `Some(Some(d))` for max-age.
fn upstream_permission(headers: &[(HeaderName, HeaderValue)]) -> Option<Option<Duration>> {
    let mut max_age = None;
    for (name, value) in headers {
        if name == http::header::SET_COOKIE {
            return None;
        }
        if name != http::header::CACHE_CONTROL {
            continue;
        }
        for directive in value.to_str().unwrap_or("").split(',') {
            let d = directive.trim().to_ascii_lowercase();
            match d.split_once('=') {
                None if matches!(d.as_str(), "no-store" | "private" | "no-cache") => return None,
                Some(("private" | "no-cache", _)) => return None,
                Some(("max-age" | "s-maxage", v)) => {
                    let secs = v.trim_matches('"').parse::<u64>().ok()?;
                    if secs == 0 {
                        return None;
                    }
                    max_age = Some(Duration::from_secs(secs).min(max_age.unwrap_or(Duration::MAX)));
                }
                _ => {}
            }
        }
    }
    Some(max_age)
}

impl ResponseCache {
    pub fn always(&self) -> bool {
        self.always
    }

    /// The cache's part in a request for a key the rule serves from cache.
    /// `key_hash` identifies the rule's key value; `key_text` renders it.
    pub fn on_request(
        &self,
        req: &RequestView<'_>,
        key_hash: u64,
        key_text: impl FnOnce() -> String,
        permits: &mut Permits,
    ) -> Decision {
        let head = req.method == Method::HEAD;
        if !(head || req.method == Method::GET) {
            return Decision::Continue;
        }
        if !self.authorized && req.headers.contains_key(http::header::AUTHORIZATION) {
            self.counts.bypass.fetch_add(1, Ordering::Relaxed);
            permits.add_response_header(
                cache_status(),
                HeaderValue::from_static("breakwater; fwd=bypass; detail=authorization"),
            );
            return Decision::Continue;
        }
        let ckey = self.cache_key(req, key_hash);
        let now = req.now_nanos;
        let stale = match self.entries.get(&ckey) {
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
        let role = self
            .flights
            .begin(ckey, || Some(self.store_hook(ckey, now, key_text())));
        match role {
            Role::Lead(tap) => {
                self.counts.miss.fetch_add(1, Ordering::Relaxed);
                permits.tap(tap);
                let fwd = if stale.is_some() { "stale" } else { "miss" };
                permits.add_response_header(
                    cache_status(),
                    header_value(format!("breakwater; fwd={fwd}")),
                );
                if let Some(e) = &stale {
                    let counts = self.counts.clone();
                    permits.set_fallback(
                        e.answer(now, head, "breakwater; hit; detail=stale-if-error".into()),
                        move || {
                            counts.stale.fetch_add(1, Ordering::Relaxed);
                        },
                    );
                }
                Decision::Continue
            }
            Role::Join(joiner) => {
                let (wait, counts) = (self.wait, self.counts.clone());
                Decision::Wait(Box::pin(async move {
                    match joiner.wait(wait).await {
                        Ok(resp) => {
                            counts.collapsed.fetch_add(1, Ordering::Relaxed);
                            let mut resp = (*resp).clone();
                            if head {
                                resp.body = Bytes::new();
                            }
                            resp.headers.push((
                                cache_status(),
                                HeaderValue::from_static("breakwater; fwd=miss; collapsed"),
                            ));
                            WaitOutcome::Respond(resp)
                        }
                        Err(_) => match stale {
                            Some(e) => {
                                counts.stale.fetch_add(1, Ordering::Relaxed);
                                WaitOutcome::Respond(e.answer(
                                    now,
                                    head,
                                    "breakwater; hit; detail=stale-if-error".into(),
                                ))
                            }
                            None => WaitOutcome::Admit(None),
                        },
                    }
                }))
            }
            Role::Untracked => Decision::Continue,
        }
    }

    fn cache_key(&self, req: &RequestView<'_>, key_hash: u64) -> u64 {
        use std::hash::{BuildHasher, Hash, Hasher};
        let mut h = self.hasher.build_hasher();
        key_hash.hash(&mut h);
        for name in &self.vary {
            for v in req.headers.get_all(name) {
                v.as_bytes().hash(&mut h);
            }
            0xFFu8.hash(&mut h);
        }
        h.finish()
    }

    /// Stores the leader's response if it may be stored.
    fn store_hook(&self, ckey: u64, now: u64, key: String) -> Accept {
        let entries = self.entries.clone();
        let statuses = self.statuses.clone();
        let (ttl, stale_ttl, max_body) = (self.ttl, self.stale_ttl, self.max_body);
        let counts = self.counts.clone();
        Box::new(move |resp: &Arc<LocalResponse>| {
            if !statuses.contains(&resp.status) || resp.body.len() > max_body {
                return Err("the response is not cacheable");
            }
            let Some(max_age) = upstream_permission(&resp.headers) else {
                return Err("the upstream forbids storing the response");
            };
            // The upstream's max-age may be any number: saturate, never wrap.
            let fresh = max_age.map_or(ttl, |d| nanos(d).min(ttl));
            entries.insert(
                ckey,
                Arc::new(CachedResponse {
                    key: key.into_boxed_str(),
                    status: resp.status,
                    headers: resp.headers.clone(),
                    body: resp.body.clone(),
                    stored_at: now,
                    fresh_until: now.saturating_add(fresh),
                    stale_until: now.saturating_add(fresh).saturating_add(stale_ttl),
                }),
            );
            counts.stored.fetch_add(1, Ordering::Relaxed);
            Ok(())
        })
    }

    /// Drops every entry of the rule's key `key` (all `vary` variants).
    pub fn invalidate_key(&self, key: &str) {
        let key: Box<str> = key.into();
        let _ = self.entries.invalidate_entries_if(move |_, v| v.key == key);
    }

    pub fn purge(&self) {
        self.entries.invalidate_all();
    }

    pub fn counts(&self) -> CacheCounts {
        self.entries.run_pending_tasks();
        CacheCounts {
            hit: self.counts.hit.load(Ordering::Relaxed),
            miss: self.counts.miss.load(Ordering::Relaxed),
            stale: self.counts.stale.load(Ordering::Relaxed),
            collapsed: self.counts.collapsed.load(Ordering::Relaxed),
            bypass: self.counts.bypass.load(Ordering::Relaxed),
            stored: self.counts.stored.load(Ordering::Relaxed),
            entries: self.entries.entry_count(),
            bytes: self.entries.weighted_size(),
        }
    }
}
