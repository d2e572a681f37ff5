//! The block list: keys refused outright until their block expires.
//!
//! Entries are added by `abuse` detection or through the admin endpoint, and
//! named `<key>:<value>` (`ip:203.0.113.7`, `user:alice`,
//! `user+endpoint:alice|goods`). The gateway checks every request's `ip` and
//! `user` against it before any policy runs; an `abuse` policy also checks its
//! own (possibly combined) key. Lookups hash the key straight from the request
//! and cost one sharded-map probe; an empty list costs one atomic load.
//!
//! An entry is keyed by the 64-bit hash of the full key, so a block matches
//! exactly the key it was placed on, however long. The text it keeps for
//! people to read (the key, the reason, the source) is cut to a few hundred
//! bytes ([`crate::key_text`]): a key can carry up to 1 MiB of header value,
//! and a list of 100k such keys would hold 100 GiB. An entry holds at most
//! [`ENTRY_BYTES`]; two long keys that share their first bytes are two
//! entries, shown alike and told apart by their `hash`, by which
//! [`BlockList::unblock_text`] also lifts them (`#<hash>`).
//!
//! Entries expire on their own: an expired entry is dropped when next looked
//! up, and [`BlockList::purge_expired`] (run every second by the gateway)
//! drops and logs the rest. The list is capped; when it is full of live
//! entries, new blocks are refused and counted rather than evicting a block an
//! operator placed.

use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;

use dashmap::DashMap;
use serde::Serialize;

use crate::fleet::BlockChange;
use crate::key_text::{cut_key, cut_to, NOTE_TEXT_MAX};
use crate::store::KeyHasher;
use crate::{Clock, KeySpec, Rejection, RejectionKind, RequestKeys};

/// One block.
#[derive(Debug, Clone)]
pub struct BlockEntry {
    /// Canonical `<key>:<value>` text, cut to
    /// [`KEY_TEXT_MAX`](crate::key_text::KEY_TEXT_MAX) bytes.
    pub key: String,
    pub reason: String,
    /// The policy that placed it, or `admin`.
    pub source: String,
    /// Status to refuse with (403 or 429 typically).
    pub status: u16,
    pub created_at: SystemTime,
    until_nanos: u64,
}

/// A live block, as the admin shows it.
#[derive(Debug, Clone, Serialize)]
pub struct BlockView {
    /// The key's text, cut to
    /// [`KEY_TEXT_MAX`](crate::key_text::KEY_TEXT_MAX) bytes (ending in `…`
    /// if cut).
    pub key: String,
    /// The block's identity, 16 hex digits: `DELETE /blocks/%23<hash>` lifts
    /// it, also when its key was cut.
    pub hash: String,
    pub reason: String,
    pub source: String,
    pub status: u16,
    pub created_at: String,
    pub expires_at: String,
    pub expires_in_ms: u64,
}

/// What a lookup found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockHit {
    pub key: String,
    pub reason: String,
    pub source: String,
    pub status: u16,
    pub remaining: Duration,
}

/// Why a block was not placed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    #[error("{0}")]
    BadKey(String),
    #[error("the block list is full ({0} live entries)")]
    Full(usize),
    #[error("ttl must be between 1s and 30d")]
    BadTtl,
}

/// Counters for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct BlockCounts {
    pub live: usize,
    pub blocked: u64,
    pub expired: u64,
    pub removed: u64,
    pub refused_full: u64,
}

pub struct BlockList {
    entries: DashMap<u64, BlockEntry>,
    len: AtomicUsize,
    cap: usize,
    hasher: KeyHasher,
    /// `keys.ipv6_prefix`, for keys named by text.
    ipv6_prefix: AtomicU8,
    clock: Arc<dyn Clock>,
    blocked: AtomicU64,
    expired: AtomicU64,
    removed: AtomicU64,
    refused_full: AtomicU64,
    /// Fleet mode: where local changes go to reach the fleet.
    outbox: OnceLock<mpsc::Sender<BlockChange>>,
    unannounced: AtomicU64,
}

const MAX_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// The most heap bytes one entry holds: its text (key and source at most
/// `KEY_TEXT_MAX`, reason at most [`NOTE_TEXT_MAX`]: 512 bytes) and its
/// slot in the map (112 bytes, times up to 2.3 for the hash table's load
/// factor and growth, plus a control byte). Measured in
/// `tests/key_text_memory.rs`.
pub const ENTRY_BYTES: usize = 800;

/// `#0123456789abcdef`, the form in which the admin names a block by hash.
pub(crate) fn parse_hash_ref(text: &str) -> Option<u64> {
    let hex = text.strip_prefix('#')?;
    (hex.len() == 16)
        .then(|| u64::from_str_radix(hex, 16).ok())
        .flatten()
}

/// The keys every request is checked for: `ip` and `user`.
static IP_KEY: std::sync::LazyLock<KeySpec> =
    std::sync::LazyLock::new(|| KeySpec::single(crate::KeyRef::Ip, "ip"));
static USER_KEY: std::sync::LazyLock<KeySpec> =
    std::sync::LazyLock::new(|| KeySpec::single(crate::KeyRef::User, "user"));

/// The refusal for a blocked key.
pub fn blocked_rejection(hit: &BlockHit) -> Rejection {
    let secs = hit.remaining.as_nanos().div_ceil(1_000_000_000).max(1) as u64;
    let reason = format!("{} is blocked for {secs}s more: {}", hit.key, hit.reason);
    // 429 blocks are RESOURCE_EXHAUSTED to gRPC callers, others PERMISSION_DENIED.
    Rejection::new(RejectionKind::Blocked, hit.status, &hit.source, reason)
        .with_header(http::header::RETRY_AFTER, http::HeaderValue::from(secs))
}

impl BlockList {
    /// A list of at most `cap` blocks, its keys hashed per process.
    pub fn new(cap: usize, clock: Arc<dyn Clock>) -> Self {
        Self::with_hasher(cap, clock, KeyHasher::default())
    }

    /// The `ip` key of an IPv6 client is its network of `bits` bits
    /// (`keys.ipv6_prefix`): blocks named by text (`ip:2001:db8::7`, from
    /// the admin) stand for that network too. Set with each snapshot.
    pub fn set_ipv6_prefix(&self, bits: u8) {
        self.ipv6_prefix
            .store(bits.clamp(1, 128), Ordering::Relaxed);
    }

    fn ipv6_prefix(&self) -> u8 {
        self.ipv6_prefix.load(Ordering::Relaxed)
    }

    /// A list whose keys hash with `hasher`. In fleet mode that is the
    /// fleet's: a block travels between instances with its key's hash, the
    /// block's identity (its text may be cut), so every instance must hash
    /// a request's key alike to find it.
    pub fn with_hasher(cap: usize, clock: Arc<dyn Clock>, hasher: KeyHasher) -> Self {
        Self {
            entries: DashMap::new(),
            len: AtomicUsize::new(0),
            cap: cap.max(1),
            hasher,
            ipv6_prefix: AtomicU8::new(64),
            clock,
            blocked: AtomicU64::new(0),
            expired: AtomicU64::new(0),
            removed: AtomicU64::new(0),
            refused_full: AtomicU64::new(0),
            outbox: OnceLock::new(),
            unannounced: AtomicU64::new(0),
        }
    }

    /// From now on, blocks placed and removed here (not those applied from
    /// the fleet) are also sent to `tx`. Set once; later calls are ignored.
    /// The channel is bounded: when the fleet link falls behind, a change is
    /// dropped with a warning rather than queued without bound.
    pub fn announce_to(&self, tx: mpsc::Sender<BlockChange>) {
        let _ = self.outbox.set(tx);
    }

    fn announce(&self, change: BlockChange) {
        if let Some(tx) = self.outbox.get() {
            if tx.try_send(change).is_err() {
                // Logged at the 1st, 2nd, 4th, 8th... drop: a flood of
                // blocks must not become a flood of log lines.
                let n = self.unannounced.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_power_of_two() {
                    tracing::warn!(target: "breakwater::blocks", dropped = n, "block changes not sent to the fleet (link behind or down)");
                }
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len.load(Ordering::Acquire) == 0
    }

    /// The block-list hash of a request's key under `spec`.
    pub fn hash_of(&self, spec: &KeySpec, keys: &RequestKeys) -> Option<u64> {
        self.hasher.hash_labeled(spec.text(), spec, keys)
    }

    /// The list's verdict on a request, checked on every route before any
    /// policy (the chain's implicit first entry): its `ip`, then its `user`.
    /// An empty list costs one atomic load.
    pub fn refuse(&self, keys: &RequestKeys) -> Option<Rejection> {
        if self.is_empty() {
            return None;
        }
        [&*IP_KEY, &*USER_KEY]
            .into_iter()
            .filter_map(|spec| self.hash_of(spec, keys))
            .find_map(|hash| self.check(hash))
            .map(|hit| blocked_rejection(&hit))
    }

    /// Whether the key with this hash is blocked now.
    pub fn check(&self, hash: u64) -> Option<BlockHit> {
        if self.is_empty() {
            return None;
        }
        let now = self.clock.now_nanos();
        let hit = self.entries.get(&hash).map(|e| {
            (
                e.until_nanos,
                BlockHit {
                    key: e.key.clone(),
                    reason: e.reason.clone(),
                    source: e.source.clone(),
                    status: e.status,
                    remaining: Duration::from_nanos(e.until_nanos.saturating_sub(now)),
                },
            )
        })?;
        if hit.0 > now {
            return Some(hit.1);
        }
        self.expire(hash, now);
        None
    }

    fn expire(&self, hash: u64, now: u64) {
        if let Some((_, e)) = self.entries.remove_if(&hash, |_, e| e.until_nanos <= now) {
            self.len.fetch_sub(1, Ordering::AcqRel);
            self.expired.fetch_add(1, Ordering::Relaxed);
            tracing::info!(target: "breakwater::blocks", key = %e.key, source = %e.source, "block expired");
        }
    }

    /// Blocks the key with `hash` (canonical text `key`) for `ttl`. A key
    /// already blocked keeps the later expiry.
    pub fn block_hashed(
        &self,
        hash: u64,
        key: String,
        ttl: Duration,
        reason: String,
        source: &str,
        status: u16,
    ) -> Result<(), BlockError> {
        let (key, reason) = (cut_key(key), cut_to(reason, NOTE_TEXT_MAX));
        let announce = self.outbox.get().is_some().then(|| BlockChange::Added {
            key: key.clone(),
            hash,
            ttl,
            reason: reason.clone(),
            source: source.to_string(),
            status,
        });
        let changed = self.insert(hash, key, ttl, reason, source, status)?;
        if let (true, Some(change)) = (changed, announce) {
            self.announce(change);
        }
        Ok(())
    }

    /// Applies a block another instance placed (not announced again). The
    /// TTL is what is left of the original block. `hash` is the fleet hash
    /// of the full key (the text may have been cut); an instance that did
    /// not send one sent the full text, which is hashed here.
    pub fn apply_fleet_block(
        &self,
        text: &str,
        hash: Option<u64>,
        ttl: Duration,
        reason: String,
        source: &str,
        status: u16,
    ) -> Result<(), BlockError> {
        let (hash, canonical) = self.identify(text, hash)?;
        self.insert(
            hash,
            cut_key(canonical),
            ttl,
            cut_to(reason, NOTE_TEXT_MAX),
            source,
            status,
        )
        .map(|_| ())
    }

    /// Removes a block another instance removed (not announced again).
    pub fn apply_fleet_unblock(&self, text: &str, hash: Option<u64>) -> Result<bool, BlockError> {
        let (hash, canonical) = self.identify(text, hash)?;
        Ok(self.remove(hash, &cut_key(canonical), "fleet"))
    }

    /// The hash and text of a key from the fleet.
    fn identify(&self, text: &str, hash: Option<u64>) -> Result<(u64, String), BlockError> {
        match hash {
            Some(hash) => Ok((hash, text.to_string())),
            None => self
                .hasher
                .hash_text(text, self.ipv6_prefix())
                .map_err(BlockError::BadKey),
        }
    }

    /// Inserts or extends a block; true when the list changed.
    fn insert(
        &self,
        hash: u64,
        key: String,
        ttl: Duration,
        reason: String,
        source: &str,
        status: u16,
    ) -> Result<bool, BlockError> {
        if ttl < Duration::from_secs(1) || ttl > MAX_TTL {
            return Err(BlockError::BadTtl);
        }
        let now = self.clock.now_nanos();
        let until = now.saturating_add(crate::bounds::nanos(ttl));
        let source = &cut_key(source.to_string());
        if !self.entries.contains_key(&hash) && self.len.load(Ordering::Acquire) >= self.cap {
            self.purge_expired();
            if self.len.load(Ordering::Acquire) >= self.cap {
                self.refused_full.fetch_add(1, Ordering::Relaxed);
                return Err(BlockError::Full(self.cap));
            }
        }
        let entry = BlockEntry {
            key: key.clone(),
            reason: reason.clone(),
            source: source.to_string(),
            status,
            created_at: SystemTime::now(),
            until_nanos: until,
        };
        let mut inserted = false;
        let mut extended = false;
        self.entries
            .entry(hash)
            .and_modify(|e| {
                if until > e.until_nanos {
                    extended = true;
                    e.until_nanos = until;
                    e.reason = reason.clone();
                    e.source = source.to_string();
                    e.status = status;
                }
            })
            .or_insert_with(|| {
                inserted = true;
                entry
            });
        if inserted {
            self.len.fetch_add(1, Ordering::AcqRel);
            self.blocked.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(target: "breakwater::blocks", %key, %source, %reason, ttl_secs = ttl.as_secs(), "key blocked");
        }
        Ok(inserted || extended)
    }

    /// Blocks a key written as `<key>:<value>` (the admin's form).
    /// Blocks `hash` (shown as `text`) and returns the refusal for the
    /// request that tripped the block. A full list still refuses this request
    /// (the detector fires again on the next one) and logs why it could not
    /// block.
    pub fn block_and_refuse(
        &self,
        hash: u64,
        text: String,
        duration: Duration,
        reason: String,
        source: &str,
        status: u16,
    ) -> Rejection {
        let text = cut_key(text);
        if let Err(e) =
            self.block_hashed(hash, text.clone(), duration, reason.clone(), source, status)
        {
            tracing::warn!(target: "breakwater::blocks", policy = %source, key = %text, error = %e, "could not block");
        }
        blocked_rejection(&BlockHit {
            key: text,
            reason,
            source: source.to_string(),
            status,
            remaining: duration,
        })
    }

    /// Returns the key's canonical text as kept (cut to `KEY_TEXT_MAX`).
    pub fn block_text(
        &self,
        text: &str,
        ttl: Duration,
        reason: String,
        source: &str,
        status: u16,
    ) -> Result<String, BlockError> {
        let (hash, canonical) = self
            .hasher
            .hash_text(text, self.ipv6_prefix())
            .map_err(BlockError::BadKey)?;
        let canonical = cut_key(canonical);
        self.block_hashed(hash, canonical.clone(), ttl, reason, source, status)?;
        Ok(canonical)
    }

    /// Removes a block by its text, or by its hash written `#<16 hex>` (the
    /// way to name a block whose key was cut). `Ok(false)` when it was not
    /// blocked.
    pub fn unblock_text(&self, text: &str) -> Result<bool, BlockError> {
        let (hash, canonical) = match parse_hash_ref(text) {
            Some(hash) => {
                let shown = self.entries.get(&hash).map(|e| e.key.clone());
                (hash, shown.unwrap_or_else(|| text.to_string()))
            }
            None => {
                let (hash, canonical) = self
                    .hasher
                    .hash_text(text, self.ipv6_prefix())
                    .map_err(BlockError::BadKey)?;
                (hash, cut_key(canonical))
            }
        };
        let removed = self.remove(hash, &canonical, "admin");
        // Announced even when not blocked here: another instance may hold it.
        self.announce(BlockChange::Removed {
            key: canonical,
            hash,
        });
        Ok(removed)
    }

    fn remove(&self, hash: u64, canonical: &str, by: &str) -> bool {
        match self.entries.remove(&hash) {
            Some(_) => {
                self.len.fetch_sub(1, Ordering::AcqRel);
                self.removed.fetch_add(1, Ordering::Relaxed);
                tracing::info!(target: "breakwater::blocks", key = %canonical, %by, "block removed");
                true
            }
            None => false,
        }
    }

    /// Drops every expired entry, logging each.
    pub fn purge_expired(&self) -> usize {
        let now = self.clock.now_nanos();
        let expired: Vec<u64> = self
            .entries
            .iter()
            .filter(|e| e.until_nanos <= now)
            .map(|e| *e.key())
            .collect();
        for hash in &expired {
            self.expire(*hash, now);
        }
        expired.len()
    }

    /// The live blocks, soonest to expire first.
    pub fn list(&self) -> Vec<BlockView> {
        let now = self.clock.now_nanos();
        let wall = SystemTime::now();
        let mut out: Vec<(u64, BlockView)> = self
            .entries
            .iter()
            .filter(|e| e.until_nanos > now)
            .map(|e| {
                let left = Duration::from_nanos(e.until_nanos - now);
                (
                    e.until_nanos,
                    BlockView {
                        key: e.key.clone(),
                        hash: format!("{:016x}", e.key()),
                        reason: e.reason.clone(),
                        source: e.source.clone(),
                        status: e.status,
                        created_at: humantime::format_rfc3339_millis(e.created_at).to_string(),
                        expires_at: humantime::format_rfc3339_millis(wall + left).to_string(),
                        expires_in_ms: left.as_millis() as u64,
                    },
                )
            })
            .collect();
        out.sort_by_key(|(until, _)| *until);
        out.into_iter().map(|(_, v)| v).collect()
    }

    pub fn counts(&self) -> BlockCounts {
        BlockCounts {
            live: self.len.load(Ordering::Acquire),
            blocked: self.blocked.load(Ordering::Relaxed),
            expired: self.expired.load(Ordering::Relaxed),
            removed: self.removed.load(Ordering::Relaxed),
            refused_full: self.refused_full.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FakeClock;

    fn keys(ip: &str) -> RequestKeys {
        RequestKeys {
            endpoint: Arc::from("r"),
            ip: ip.parse().unwrap(),
            client: ip.parse().unwrap(),
            user: Some("alice".into()),
            custom: vec![],
        }
    }

    /// Request keys as the gateway extracts them with `ipv6_prefix`.
    fn keys_v6(client: &str, ipv6_prefix: u8) -> RequestKeys {
        let client: std::net::IpAddr = client.parse().unwrap();
        RequestKeys {
            ip: crate::keys::ip_key(client, ipv6_prefix),
            client,
            ..keys("10.0.0.1")
        }
    }

    #[test]
    fn an_ipv6_block_by_text_covers_the_clients_network() {
        let list = BlockList::new(10, Arc::new(FakeClock::new()));
        let ip = KeySpec::parse("ip", &[], "k").unwrap();
        let canonical = list
            .block_text(
                "ip:2001:db8:1:2::7",
                Duration::from_secs(60),
                "rotating crawler".into(),
                "admin",
                403,
            )
            .unwrap();
        assert_eq!(canonical, "ip:2001:db8:1:2::");
        // Any address of the /64 is blocked; the next /64 is not.
        let other = list.hash_of(&ip, &keys_v6("2001:db8:1:2:ffff::9", 64));
        assert!(list.check(other.unwrap()).is_some());
        let next = list.hash_of(&ip, &keys_v6("2001:db8:1:3::7", 64));
        assert!(list.check(next.unwrap()).is_none());
        // With /128, a block names one address.
        let list = BlockList::new(10, Arc::new(FakeClock::new()));
        list.set_ipv6_prefix(128);
        list.block_text(
            "ip:2001:db8:1:2::7",
            Duration::from_secs(60),
            "one host".into(),
            "admin",
            403,
        )
        .unwrap();
        let same = list.hash_of(&ip, &keys_v6("2001:db8:1:2::7", 128));
        assert!(list.check(same.unwrap()).is_some());
        let other = list.hash_of(&ip, &keys_v6("2001:db8:1:2::8", 128));
        assert!(list.check(other.unwrap()).is_none());
    }

    #[test]
    fn admin_text_and_request_keys_meet_and_expire() {
        let clock = FakeClock::new();
        let list = BlockList::new(10, Arc::new(clock.clone()));
        let ip = KeySpec::parse("ip", &[], "k").unwrap();
        let h = list.hash_of(&ip, &keys("203.0.113.7")).unwrap();
        assert_eq!(list.check(h), None);
        let canonical = list
            .block_text(
                "ip:203.0.113.7",
                Duration::from_secs(60),
                "crawler".into(),
                "admin",
                403,
            )
            .unwrap();
        assert_eq!(canonical, "ip:203.0.113.7");
        let hit = list.check(h).unwrap();
        assert_eq!(hit.status, 403);
        assert_eq!(hit.remaining, Duration::from_secs(60));
        assert_eq!(
            list.check(list.hash_of(&ip, &keys("203.0.113.8")).unwrap()),
            None
        );
        // A user key with the same text is a different key.
        let user = KeySpec::parse("user", &[], "k").unwrap();
        assert_eq!(
            list.check(list.hash_of(&user, &keys("203.0.113.7")).unwrap()),
            None
        );

        clock.advance(Duration::from_secs(59));
        assert!(list.check(h).is_some());
        clock.advance(Duration::from_secs(1));
        assert_eq!(list.check(h), None);
        assert_eq!(list.counts().expired, 1);
        assert!(list.is_empty());
    }

    #[test]
    fn local_changes_are_announced_and_fleet_changes_are_not_echoed() {
        let clock = FakeClock::new();
        let list = BlockList::new(10, Arc::new(clock.clone()));
        let (tx, mut rx) = mpsc::channel(8);
        list.announce_to(tx);
        list.block_text(
            "user:mallory",
            Duration::from_secs(60),
            "abuse".into(),
            "admin",
            403,
        )
        .unwrap();
        match rx.try_recv().unwrap() {
            BlockChange::Added {
                key, ttl, status, ..
            } => {
                // (`hash` is checked with long keys below.)
                assert_eq!(
                    (key.as_str(), ttl, status),
                    ("user:mallory", Duration::from_secs(60), 403)
                );
            }
            other => panic!("{other:?}"),
        }
        // Re-blocking for less changes nothing and says nothing.
        list.block_text(
            "user:mallory",
            Duration::from_secs(5),
            "again".into(),
            "admin",
            403,
        )
        .unwrap();
        assert!(rx.try_recv().is_err());
        // From the fleet: applied, with the remaining TTL, not announced.
        list.apply_fleet_block(
            "ip:203.0.113.9",
            None,
            Duration::from_secs(30),
            "crawler".into(),
            "gw-2",
            429,
        )
        .unwrap();
        assert!(rx.try_recv().is_err());
        let views = list.list();
        let fleet = views.iter().find(|v| v.key == "ip:203.0.113.9").unwrap();
        assert_eq!((fleet.status, fleet.expires_in_ms), (429, 30_000));
        assert!(list.apply_fleet_unblock("ip:203.0.113.9", None).unwrap());
        assert!(rx.try_recv().is_err());
        let mallory = list.hasher.hash_text("user:mallory", 64).unwrap().0;
        assert!(list.unblock_text("user:mallory").unwrap());
        assert_eq!(
            rx.try_recv().unwrap(),
            BlockChange::Removed {
                key: "user:mallory".into(),
                hash: mallory,
            }
        );
        assert!(list
            .apply_fleet_block(
                "nonsense",
                None,
                Duration::from_secs(5),
                String::new(),
                "x",
                403
            )
            .is_err());
    }

    #[test]
    fn unblock_list_and_purge() {
        let clock = FakeClock::new();
        let list = BlockList::new(10, Arc::new(clock.clone()));
        list.block_text(
            "user:bob",
            Duration::from_secs(10),
            "r".into(),
            "admin",
            429,
        )
        .unwrap();
        list.block_text(
            "user:carol",
            Duration::from_secs(5),
            "r".into(),
            "admin",
            429,
        )
        .unwrap();
        let listed: Vec<String> = list.list().into_iter().map(|b| b.key).collect();
        assert_eq!(listed, ["user:carol", "user:bob"]);
        assert_eq!(list.unblock_text("user:bob"), Ok(true));
        assert_eq!(list.unblock_text("user:bob"), Ok(false));
        clock.advance(Duration::from_secs(6));
        assert_eq!(list.purge_expired(), 1);
        assert_eq!(
            list.counts(),
            BlockCounts {
                live: 0,
                blocked: 2,
                expired: 1,
                removed: 1,
                refused_full: 0
            }
        );
    }

    #[test]
    fn full_list_refuses_new_blocks_but_reuses_expired_room() {
        let clock = FakeClock::new();
        let list = BlockList::new(2, Arc::new(clock.clone()));
        list.block_text("user:a", Duration::from_secs(5), "r".into(), "p", 403)
            .unwrap();
        list.block_text("user:b", Duration::from_secs(50), "r".into(), "p", 403)
            .unwrap();
        assert_eq!(
            list.block_text("user:c", Duration::from_secs(5), "r".into(), "p", 403),
            Err(BlockError::Full(2))
        );
        clock.advance(Duration::from_secs(6));
        assert!(list
            .block_text("user:c", Duration::from_secs(5), "r".into(), "p", 403)
            .is_ok());
        assert_eq!(list.counts().refused_full, 1);
    }

    #[test]
    fn bad_keys_and_ttls_are_errors() {
        let list = BlockList::new(2, Arc::new(FakeClock::new()));
        assert!(matches!(
            list.block_text("ip:nope", Duration::from_secs(5), String::new(), "a", 403),
            Err(BlockError::BadKey(_))
        ));
        assert_eq!(
            list.block_text("user:x", Duration::from_millis(5), String::new(), "a", 403),
            Err(BlockError::BadTtl)
        );
    }

    /// A 1 MiB value that starts with the same 200 bytes as every other.
    fn long_value(fill: char) -> String {
        let mut v = "a".repeat(200);
        v.extend(std::iter::repeat_n(fill, 1 << 20));
        v
    }

    fn user_keys(user: &str) -> RequestKeys {
        RequestKeys {
            user: Some(user.into()),
            ..keys("10.0.0.1")
        }
    }

    #[test]
    fn a_long_key_is_kept_cut_but_blocks_by_its_full_value() {
        use crate::key_text::{is_cut, KEY_TEXT_MAX};
        let clock = FakeClock::new();
        let list = BlockList::new(10, Arc::new(clock.clone()));
        let (tx, mut rx) = mpsc::channel(8);
        list.announce_to(tx);
        let user = KeySpec::parse("user", &[], "k").unwrap();
        let (a, b) = (long_value('x'), long_value('y'));
        let (hash_a, hash_b) = (
            list.hash_of(&user, &user_keys(&a)).unwrap(),
            list.hash_of(&user, &user_keys(&b)).unwrap(),
        );
        let ttl = Duration::from_secs(60);
        let kept = list
            .block_text(&format!("user:{a}"), ttl, "r".repeat(1 << 20), "admin", 403)
            .unwrap();
        assert!(
            kept.len() <= KEY_TEXT_MAX && is_cut(&kept),
            "{}",
            kept.len()
        );
        assert!(kept.starts_with("user:aaaa"));
        assert!(list.check(hash_a).is_some(), "the full value is blocked");
        assert_eq!(
            list.check(hash_b),
            None,
            "same first 200 bytes: another key"
        );
        // The fleet hears the cut text and the full key's hash.
        match rx.try_recv().unwrap() {
            BlockChange::Added {
                key, hash, reason, ..
            } => {
                assert_eq!((key.as_str(), hash), (kept.as_str(), hash_a));
                assert!(reason.len() <= NOTE_TEXT_MAX);
            }
            other => panic!("{other:?}"),
        }
        // b blocked too: two entries, shown alike, told apart by hash.
        let refusal = list.block_and_refuse(
            hash_b,
            format!("user:{b}"),
            ttl,
            "abuse".into(),
            "crawler",
            403,
        );
        assert!(
            refusal.reason.len() < 2 * KEY_TEXT_MAX,
            "{}",
            refusal.reason
        );
        let views = list.list();
        assert_eq!(views.len(), 2);
        assert_eq!(views[0].key, views[1].key);
        assert_ne!(views[0].hash, views[1].hash);
        for v in &views {
            assert!(v.key.len() <= KEY_TEXT_MAX && v.reason.len() <= NOTE_TEXT_MAX);
        }
        // The shown text names no block; the hash does.
        assert_eq!(list.unblock_text(&kept), Ok(false));
        assert_eq!(list.unblock_text(&format!("#{hash_b:016x}")), Ok(true));
        assert!(list.check(hash_a).is_some());
        assert_eq!(list.check(hash_b), None);
    }

    #[test]
    fn a_cut_key_from_the_fleet_blocks_by_the_hash_it_came_with() {
        let clock: Arc<dyn Clock> = Arc::new(FakeClock::new());
        let here = BlockList::with_hasher(
            10,
            clock.clone(),
            KeyHasher::fleet(crate::store::FleetKey::from_seed("a fleet seed of 16+")),
        );
        let there = BlockList::with_hasher(
            10,
            clock,
            KeyHasher::fleet(crate::store::FleetKey::from_seed("a fleet seed of 16+")),
        );
        let (tx, mut rx) = mpsc::channel(8);
        here.announce_to(tx);
        let long = long_value('x');
        here.block_text(
            &format!("user:{long}"),
            Duration::from_secs(60),
            "r".into(),
            "admin",
            403,
        )
        .unwrap();
        let Ok(BlockChange::Added { key, hash, .. }) = rx.try_recv() else {
            panic!("announced")
        };
        there
            .apply_fleet_block(
                &key,
                Some(hash),
                Duration::from_secs(60),
                "r".into(),
                "gw-1",
                403,
            )
            .unwrap();
        let user = KeySpec::parse("user", &[], "k").unwrap();
        let full = there.hash_of(&user, &user_keys(&long)).unwrap();
        assert!(there.check(full).is_some());
        assert!(there.apply_fleet_unblock(&key, Some(hash)).unwrap());
        assert_eq!(there.check(full), None);
    }
}
