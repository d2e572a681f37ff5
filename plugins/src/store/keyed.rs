//! `KeyedStore`: a sharded, capped map from 64-bit key hashes to atomic state.
//!
//! # Design
//! - **Sharded.** Keys spread over up to 64 shards, each a `parking_lot`
//!   `RwLock<HashMap>`. The common case, a key that is already tracked, takes a
//!   shard *read* lock and updates the entry's atomics in place, so concurrent
//!   requests for different keys (and even the same key) do not serialize.
//!   Only inserting a new key takes a write lock.
//! - **Capped.** Each shard holds at most `max_keys / shards` entries, so the
//!   store never exceeds `max_keys`, however many distinct keys arrive. To
//!   keep hash tables well filled the per-shard capacity may be rounded down
//!   by up to an eighth (see `shard_capacity`).
//! - **Cold keys go first.** When a shard is full, entries at rest
//!   ([`KeyState::heat`] = 0: an empty window, a GCRA bucket back to full) are
//!   dropped; that loses nothing. If the shard is still over 7/8 full — a
//!   flood of fresh keys — entries at or below the lower quartile of a sample
//!   of heats are dropped, so a few hot keys survive a flood of one-hit keys.
//!   Evictions are counted. One sweep frees at least 1/8 of the shard, so its
//!   O(shard) cost is amortized over many inserts.
//!
//! # Limits
//! Evicting a warm key forgets its count: it can then get up to one more
//! window's worth of requests. That only happens when more than `max_keys`
//! keys are live at once, and only to the coldest keys.
//!
//! # Memory
//! An entry is 8 bytes of key plus `size_of::<V>()`, in a hash table that
//! runs between 7/16 and 7/8 full. `bytes_per_key` in the benches measures it.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::RwLock;

/// Per-key state kept in a [`KeyedStore`].
pub trait KeyState: Send + Sync {
    /// What the store shares with all its entries (a window's geometry, a
    /// limiter's quota), so entries need not carry it.
    type Context: Send + Sync;

    /// How active the key is at `now` (policy-clock nanoseconds). 0 means at
    /// rest: evicting it loses nothing. Only compared within one store.
    fn heat(&self, now: u64, cx: &Self::Context) -> u64;
}

/// Keys are already uniformly random 64-bit hashes: use them as they are.
#[derive(Default)]
struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type Map<V> = HashMap<u64, V, BuildHasherDefault<IdentityHasher>>;

/// One shard, on its own cache lines so that two cores updating neighbouring
/// shards do not bounce one line between them.
#[repr(align(128))]
struct Shard<V> {
    map: RwLock<Map<V>>,
    /// For [`KeyedStore::with_if_room`]: until when (store time) the shard
    /// was found to have no room, so a refused key does not rescan it.
    full_until: AtomicU64,
}

pub struct KeyedStore<V: KeyState> {
    cx: V::Context,
    shards: Box<[Shard<V>]>,
    mask: u64,
    shard_cap: usize,
    max_keys: usize,
    evictions: AtomicU64,
}

/// Counts for metrics and the admin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreStats {
    pub tracked: usize,
    pub max_keys: usize,
    pub evictions: u64,
}

impl<V: KeyState> KeyedStore<V> {
    /// A store for at most `max_keys` keys (at least 1).
    pub fn new(max_keys: usize, cx: V::Context) -> Self {
        let max_keys = max_keys.max(1);
        // About 1k keys per shard, between 1 and 64 shards (a power of two).
        let shards = (max_keys / 1024).clamp(1, 64).next_power_of_two().min(64);
        let shard_cap = shard_capacity(max_keys / shards);
        Self {
            cx,
            shards: (0..shards)
                .map(|_| Shard {
                    map: RwLock::new(Map::default()),
                    full_until: AtomicU64::new(0),
                })
                .collect(),
            mask: shards as u64 - 1,
            shard_cap,
            max_keys,
            evictions: AtomicU64::new(0),
        }
    }

    pub fn context(&self) -> &V::Context {
        &self.cx
    }

    fn shard(&self, key: u64) -> &Shard<V> {
        // Middle bits pick the shard: the map itself uses the low bits for
        // the bucket and the top 7 for its tags, so all three stay independent.
        &self.shards[((key >> 32) & self.mask) as usize]
    }

    /// Runs `f` on the key's state, creating it with `init` if absent (which
    /// may first evict cold keys).
    pub fn with<R>(
        &self,
        key: u64,
        now: u64,
        init: impl FnOnce() -> V,
        f: impl FnOnce(&V) -> R,
    ) -> R {
        let shard = self.shard(key);
        {
            let map = shard.map.read();
            if let Some(v) = map.get(&key) {
                return f(v);
            }
        }
        let mut map = shard.map.write();
        if !map.contains_key(&key) && map.len() >= self.shard_cap {
            let evicted = evict_cold(&mut map, self.shard_cap, now, &self.cx);
            self.evictions.fetch_add(evicted as u64, Ordering::Relaxed);
        }
        f(map.entry(key).or_insert_with(init))
    }

    /// Like [`KeyedStore::with`], but a full shard makes room only by
    /// dropping keys whose heat is below `floor`, and only if at least a
    /// sixteenth of the shard can go (so a rebuild is amortised over many
    /// inserts). Otherwise the key is not inserted and `None` is returned;
    /// the shard is then not rescanned before `now + retry_after`.
    ///
    /// This is admission control for stores where a newcomer must not push
    /// out an established key (the hot-key detector's candidates): keys at or
    /// above `floor` are never evicted.
    pub fn with_if_room<R>(
        &self,
        key: u64,
        now: u64,
        floor: u64,
        retry_after: u64,
        init: impl FnOnce() -> V,
        f: impl FnOnce(&V) -> R,
    ) -> Option<R> {
        let shard = self.shard(key);
        {
            let map = shard.map.read();
            if let Some(v) = map.get(&key) {
                return Some(f(v));
            }
            if map.len() >= self.shard_cap && shard.full_until.load(Ordering::Relaxed) > now {
                return None;
            }
        }
        let mut map = shard.map.write();
        if !map.contains_key(&key) && map.len() >= self.shard_cap {
            let dropped = drop_below(&mut map, self.shard_cap, now, floor, &self.cx);
            if dropped == 0 {
                shard
                    .full_until
                    .store(now.saturating_add(retry_after), Ordering::Relaxed);
                return None;
            }
            self.evictions.fetch_add(dropped as u64, Ordering::Relaxed);
        }
        Some(f(map.entry(key).or_insert_with(init)))
    }

    /// Runs `f` on the key's state if it is tracked; never inserts.
    pub fn peek<R>(&self, key: u64, f: impl FnOnce(&V) -> R) -> Option<R> {
        self.shard(key).map.read().get(&key).map(f)
    }

    /// Calls `f` for every tracked key (one shard read-locked at a time).
    pub fn for_each(&self, mut f: impl FnMut(u64, &V)) {
        for shard in self.shards.iter() {
            for (k, v) in shard.map.read().iter() {
                f(*k, v);
            }
        }
    }

    /// Drops every key at rest. Returns how many were dropped.
    pub fn drop_idle(&self, now: u64) -> usize {
        let mut dropped = 0;
        for shard in self.shards.iter() {
            let mut map = shard.map.write();
            let before = map.len();
            map.retain(|_, v| v.heat(now, &self.cx) > 0);
            dropped += before - map.len();
        }
        dropped
    }

    pub fn stats(&self) -> StoreStats {
        StoreStats {
            tracked: self.shards.iter().map(|s| s.map.read().len()).sum(),
            max_keys: self.max_keys,
            evictions: self.evictions.load(Ordering::Relaxed),
        }
    }
}

/// A shard's capacity for `want` keys. hashbrown tables have a power-of-two
/// number of buckets and grow at 7/8 full, so `want` just above a table's
/// 7/8 would leave the next table half empty; then the capacity is rounded
/// down to fill the smaller table, giving up at most an eighth of `want`.
fn shard_capacity(want: usize) -> usize {
    let want = want.max(1);
    let buckets = (want * 8 / 7).max(1).next_power_of_two();
    let smaller = buckets / 2 * 7 / 8;
    if smaller > 0 && want - smaller.min(want) <= want / 8 {
        smaller
    } else {
        want
    }
}

/// Frees an eighth of a full shard, coldest first, and returns how many
/// entries it removed that were not at rest (real evictions).
///
/// The survivors are moved into a fresh table. Removing entries in place
/// leaves tombstones in a hashbrown table, and a table full of tombstones
/// grows to twice its size on the next insert even though it holds no more
/// keys; rebuilding keeps the memory per key where the cap puts it.
fn evict_cold<V: KeyState>(map: &mut Map<V>, cap: usize, now: u64, cx: &V::Context) -> usize {
    let target = cap - (cap / 8).max(1).min(cap);
    let heats: Vec<u64> = map.values().map(|v| v.heat(now, cx)).collect();
    let warm = heats.iter().filter(|h| **h > 0).count();
    let mut budget = warm.saturating_sub(target);
    // The heat below which `budget` of the warm entries lie, estimated from
    // a sample (hash order is random, so the first entries are a fair one).
    let mut sample: Vec<u64> = heats.iter().copied().filter(|h| *h > 0).take(256).collect();
    sample.sort_unstable();
    let threshold = if budget == 0 || sample.is_empty() {
        0
    } else {
        let idx = ((budget * sample.len()).div_ceil(warm)).min(sample.len() - 1);
        sample[idx]
    };
    let mut rebuilt = Map::with_capacity_and_hasher(cap, Default::default());
    for ((k, v), heat) in map.drain().zip(heats) {
        if heat == 0 {
            continue;
        }
        if budget > 0 && heat <= threshold {
            budget -= 1;
            continue;
        }
        rebuilt.insert(k, v);
    }
    // The sample misjudged: drop arbitrary entries for what is left.
    if budget > 0 {
        let excess: Vec<u64> = rebuilt.keys().take(budget).copied().collect();
        for k in excess {
            rebuilt.remove(&k);
        }
    }
    *map = rebuilt;
    warm - map.len()
}

/// Drops every entry whose heat is below `floor`, if that frees at least a
/// sixteenth of `cap`; returns how many went (0: nothing changed).
fn drop_below<V: KeyState>(
    map: &mut Map<V>,
    cap: usize,
    now: u64,
    floor: u64,
    cx: &V::Context,
) -> usize {
    let heats: Vec<u64> = map.values().map(|v| v.heat(now, cx)).collect();
    let cold = heats.iter().filter(|h| **h < floor).count();
    if cold == 0 || cold < (cap / 16).max(1) {
        return 0;
    }
    let mut rebuilt = Map::with_capacity_and_hasher(cap, Default::default());
    for ((k, v), heat) in map.drain().zip(heats) {
        if heat >= floor {
            rebuilt.insert(k, v);
        }
    }
    *map = rebuilt;
    cold
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A test state whose heat is a plain number.
    struct Heat(AtomicU64);

    impl KeyState for Heat {
        type Context = ();
        fn heat(&self, _now: u64, _cx: &()) -> u64 {
            self.0.load(Ordering::Relaxed)
        }
    }

    fn bump(store: &KeyedStore<Heat>, key: u64, by: u64) {
        store.with(
            key,
            0,
            || Heat(AtomicU64::new(0)),
            |h| {
                h.0.fetch_add(by, Ordering::Relaxed);
            },
        );
    }

    #[test]
    fn shard_capacity_fills_tables_and_never_exceeds_the_request() {
        assert_eq!(shard_capacity(15_625), 14_336); // 16k buckets, not 32k
        assert_eq!(shard_capacity(1_562), 1_562); // rounding down would cost too much
        assert_eq!(shard_capacity(1), 1);
        for want in 1..5_000 {
            let c = shard_capacity(want);
            assert!(c <= want && c >= want - want / 8, "{want} -> {c}");
        }
    }

    #[test]
    fn tracks_and_updates_in_place() {
        let s = KeyedStore::new(100, ());
        bump(&s, 1, 2);
        bump(&s, 1, 3);
        assert_eq!(s.peek(1, |h| h.heat(0, &())), Some(5));
        assert_eq!(s.peek(2, |h| h.heat(0, &())), None);
        assert_eq!(s.stats().tracked, 1);
    }

    #[test]
    fn never_exceeds_the_cap_under_a_flood() {
        let s = KeyedStore::new(10_000, ());
        for k in 0..200_000u64 {
            bump(&s, k.wrapping_mul(0x9E37_79B9_7F4A_7C15), 1);
        }
        let stats = s.stats();
        assert!(stats.tracked <= 10_000, "{stats:?}");
        // Equally cold keys: an eighth of a shard goes at a time, not all of it.
        assert!(stats.tracked >= 8_500, "{stats:?}");
        assert!(stats.evictions >= 190_000, "{stats:?}");
    }

    #[test]
    fn hot_keys_survive_a_flood_of_cold_ones() {
        let s = KeyedStore::new(2_048, ());
        let hot: Vec<u64> = (0..20u64)
            .map(|k| k.wrapping_mul(0xD6E8_FEB8_6659_FD93))
            .collect();
        for &k in &hot {
            bump(&s, k, 1_000);
        }
        for k in 1_000..100_000u64 {
            bump(&s, k.wrapping_mul(0x9E37_79B9_7F4A_7C15), 1);
        }
        for &k in &hot {
            assert_eq!(
                s.peek(k, |h| h.heat(0, &())),
                Some(1_000),
                "hot key {k} was evicted"
            );
        }
    }

    #[test]
    fn idle_keys_are_dropped_first_and_not_counted_as_evictions() {
        let s = KeyedStore::new(8, ());
        for k in 0..shard_capacity(8) as u64 {
            s.with(k << 32, 0, || Heat(AtomicU64::new(0)), |_| ());
        }
        bump(&s, 100 << 32, 1);
        assert_eq!(s.stats().evictions, 0);
        assert_eq!(s.stats().tracked, 1);
        assert_eq!(s.drop_idle(0), 0);
    }

    #[test]
    fn with_if_room_never_pushes_out_an_established_key() {
        // One shard of 16 (shard_capacity(16) = 14 keys).
        let store: KeyedStore<Heat> = KeyedStore::new(16, ());
        let cap = store.shard_cap;
        for k in 0..cap as u64 {
            let got = store.with_if_room(k, 0, 10, 1_000, || Heat(AtomicU64::new(50)), |_| ());
            assert!(got.is_some());
        }
        // Full of keys at heat 50 >= floor 10: a newcomer is refused...
        assert!(store
            .with_if_room(999, 0, 10, 1_000, || Heat(AtomicU64::new(1)), |_| ())
            .is_none());
        assert_eq!(store.stats().tracked, cap);
        // ...and the shard is not rescanned before `retry_after`.
        store.peek(0, |h| h.0.store(0, Ordering::Relaxed));
        assert!(store
            .with_if_room(999, 500, 10, 1_000, || Heat(AtomicU64::new(1)), |_| ())
            .is_none());
        // Once enough keys cool below the floor, they make room; warm ones stay.
        for k in 0..cap as u64 / 2 {
            store.peek(k, |h| h.0.store(3, Ordering::Relaxed));
        }
        assert!(store
            .with_if_room(999, 2_000, 10, 1_000, || Heat(AtomicU64::new(1)), |_| ())
            .is_some());
        assert_eq!(store.stats().evictions, cap as u64 / 2);
        for k in cap as u64 / 2..cap as u64 {
            assert!(store.peek(k, |_| ()).is_some(), "warm key {k} was kept");
        }
    }
}
