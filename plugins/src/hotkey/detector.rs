//! Hot-key detection: a sketch to find candidates, exact sliding windows to
//! confirm them, and a hot set with hysteresis.
//!
//! # Pipeline (per event)
//! 1. A key already tracked as a *candidate* is counted in its own sliding
//!    window (exact but for the window's interpolated oldest bucket).
//! 2. Any other key is counted in a [`WindowedSketch`]; when the sketch's
//!    estimate, less its noise floor, reaches `admit_at` (a twentieth of the
//!    threshold), the key becomes a candidate. The candidate table is capped at
//!    `max_tracked`; when full, the coldest candidates make room.
//! 3. A candidate whose windowed count reaches the threshold becomes *hot*
//!    (an event). It stays hot while its count stays at or above
//!    `cool_ratio × threshold` (hysteresis) and for `hot_ttl` after the last
//!    time it did; then [`HotKeyDetector::sweep`] cools it (an event).
//!
//! # Error bounds
//! - **No false hot keys from the sketch.** Only a candidate's own window can
//!   declare it hot, and that window counts only events seen after admission,
//!   so it never over-counts (beyond the sliding window's own interpolation
//!   error: at most one sub-bucket's events, a tenth of a window).
//! - **Detection delay.** A key is admitted once its estimate stands
//!   `admit_at` above the noise floor: when its true count reaches
//!   `admit_at`, plus however far its own share of noise falls below the
//!   floor (the median) — a few events; ±5 at Zipf 0.9 and 1M events/s.
//!   It misses at most those events in its first window. A key that holds a rate at
//!   or above `threshold / window` is therefore declared hot within
//!   `window × (1 + admit_at / threshold)`: 1.05 windows by default — 50 ms
//!   late for a 1 s window. A key going faster is found sooner. One
//!   exception: when the candidate table is full of established keys (see
//!   below), a new key waits until some of them cool, up to one more window.
//! - **Misses.** A candidate at or above `admit_at` in its window is never
//!   evicted: newcomers only replace the sketch's false admissions and
//!   cooled keys. A key is missed only if it cannot get in — when more than
//!   `max_tracked` keys hold at least `admit_at` per window at once (size
//!   `max_tracked` above that count; refusals are counted) — or if its burst
//!   is shorter than a window and within `admit_at` of the threshold.
//!
//! # Memory
//! The sketch (256 KiB at the default width), per candidate 136 bytes at
//! most (its windows and the table's share), and up to 512 key names cut to
//! 128 bytes (`key_text`, 192 bytes each with the table's share): 896 KiB per
//! rule at the default `max_tracked` of 4096 (measured: 781 KiB). The hot
//! set holds only hot keys, their names cut alike.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use dashmap::DashMap;

use super::sketch::WindowedSketch;
use crate::bounds::nanos;
use crate::key_text::cut_key;
use crate::store::{KeyNames, KeyState, KeyedStore, NAME_BYTES};
use crate::window::{SlidingWindow, WindowSpec};

/// How a detector is tuned.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DetectorConfig {
    /// Events per window that make a key hot.
    pub threshold: u64,
    pub window: Duration,
    /// How long a key stays hot after its count last held up.
    pub hot_ttl: Duration,
    /// While hot, a count at or above `cool_ratio × threshold` keeps it hot.
    pub cool_ratio: f64,
    /// The candidate table's cap.
    pub max_tracked: usize,
    /// Counters per sketch row.
    pub sketch_width: usize,
}

/// Why a key is reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HotChange {
    Hot,
    Cooled,
}

/// A key that turned hot or cooled.
#[derive(Debug, Clone, PartialEq)]
pub struct HotEvent {
    pub change: HotChange,
    pub hash: u64,
    pub key: String,
    /// The key's windowed count when the event fired.
    pub count: u64,
    /// When the key turned hot (policy clock, nanoseconds).
    pub since_nanos: u64,
    pub at_nanos: u64,
}

/// One hot key, for listings.
#[derive(Debug, Clone, PartialEq)]
pub struct HotKey {
    pub hash: u64,
    pub key: String,
    /// Events per second over the window, now.
    pub rate: f64,
    pub since_nanos: u64,
}

/// What [`HotKeyDetector::observe`] found.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    pub hot: bool,
    /// Set on the event that made the key hot.
    pub became_hot: Option<HotEvent>,
}

/// A candidate's counters.
#[derive(Debug, Default)]
struct Candidate {
    window: SlidingWindow<{ BUCKETS as usize + 1 }>,
    /// Counts per minute for the minute statistics: `minute << 32 | count`,
    /// in slot `minute % 2`, so the last minute stays readable all through
    /// the current one.
    minutes: [AtomicU64; 2],
    /// Events since the last fleet sync (`scope: global` rules send them).
    pending: AtomicU32,
}

impl KeyState for Candidate {
    type Context = WindowSpec;

    fn heat(&self, now: u64, spec: &WindowSpec) -> u64 {
        self.window.heat(spec, now)
    }
}

struct HotEntry {
    key: String,
    since: u64,
    last_held: AtomicU64,
}

pub struct HotKeyDetector {
    cfg: DetectorConfig,
    admit_at: u32,
    /// `cool_ratio × threshold`, rounded up, at least 1.
    hold_at: u64,
    sketch: WindowedSketch,
    candidates: KeyedStore<Candidate>,
    hot: DashMap<u64, HotEntry>,
    names: KeyNames,
    /// Admissions refused because the candidate table was full of
    /// established keys.
    refused: AtomicU64,
    /// Whether candidates' events are kept for fleet syncs (`scope:
    /// global`); a local rule skips that atomic on every event.
    fleet_deltas: bool,
}

const MINUTE: u64 = 60_000_000_000;

/// Sub-buckets of a candidate's window: its estimate is off by at most one
/// sub-bucket's events (a tenth of a window), where rate limits use four.
const BUCKETS: u32 = 10;

impl HotKeyDetector {
    pub fn new(cfg: DetectorConfig) -> Self {
        let window_nanos = nanos(cfg.window);
        let threshold = cfg.threshold.max(1);
        Self {
            admit_at: (threshold / 20).clamp(1, u64::from(u32::MAX)) as u32,
            hold_at: ((threshold as f64 * cfg.cool_ratio).ceil() as u64).clamp(1, threshold),
            sketch: WindowedSketch::new(cfg.sketch_width, window_nanos),
            candidates: KeyedStore::new(cfg.max_tracked, WindowSpec::new(cfg.window, BUCKETS)),
            hot: DashMap::new(),
            names: KeyNames::new(NAMES),
            refused: AtomicU64::new(0),
            fleet_deltas: false,
            cfg,
        }
    }

    /// Keeps candidates' events for [`Self::take_pending`] (global rules).
    pub fn with_fleet_deltas(mut self) -> Self {
        self.fleet_deltas = true;
        self
    }

    pub fn config(&self) -> &DetectorConfig {
        &self.cfg
    }

    /// Counts one event for the key `hash` at `now`. `name` renders the key's
    /// text; it is called only when the key is admitted or turns hot.
    pub fn observe(&self, hash: u64, now: u64, name: impl Fn() -> Option<String>) -> Observation {
        let spec = self.candidates.context();
        let tick = spec.tick(now);
        let count = self.candidates.peek(hash, |c| {
            c.window.add_at(tick, 1);
            if self.fleet_deltas {
                c.pending.fetch_add(1, Ordering::Relaxed);
            }
            bump_minute(&c.minutes, now);
            c.window.estimate_scaled_at(tick)
        });
        let scaled = match count {
            Some(scaled) => scaled,
            None => {
                let estimate = self.sketch.add(hash, now);
                if estimate.saturating_sub(self.sketch.floor()) < self.admit_at {
                    return Observation {
                        hot: self.is_hot(hash),
                        became_hot: None,
                    };
                }
                self.names.note(hash, now, &name, |h| {
                    self.candidates.peek(h, |_| ()).is_some()
                });
                // Established candidates (at least `admit_at` in their
                // window) are never pushed out by newcomers: only the
                // sketch's false admissions and cooled keys make room.
                let admitted = self.candidates.with_if_room(
                    hash,
                    now,
                    u64::from(self.admit_at),
                    spec.bucket().as_nanos() as u64,
                    Candidate::default,
                    |c| {
                        c.window.add_at(tick, 1);
                        // The events that got the key admitted count
                        // fleet-wide too (the sketch saw them first).
                        if self.fleet_deltas {
                            c.pending
                                .fetch_add(estimate.min(self.admit_at), Ordering::Relaxed);
                        }
                        bump_minute(&c.minutes, now);
                        c.window.estimate_scaled_at(tick)
                    },
                );
                match admitted {
                    Some(scaled) => scaled,
                    None => {
                        self.refused.fetch_add(1, Ordering::Relaxed);
                        return Observation {
                            hot: false,
                            became_hot: None,
                        };
                    }
                }
            }
        };
        if scaled < tick.scaled(self.hold_at) {
            return Observation {
                hot: self.is_hot(hash),
                became_hot: None,
            };
        }
        if let Some(entry) = self.hot.get(&hash) {
            entry.last_held.store(now, Ordering::Relaxed);
            return Observation {
                hot: true,
                became_hot: None,
            };
        }
        if scaled < tick.scaled(self.cfg.threshold) {
            return Observation {
                hot: false,
                became_hot: None,
            };
        }
        let key = name().map(cut_key).unwrap_or_else(|| self.names.name(hash));
        let count = tick.unscale(scaled).round() as u64;
        Observation {
            hot: true,
            became_hot: self.insert_hot(hash, key, count, now),
        }
    }

    /// Makes `hash` hot unless it already is; the event when it was not.
    fn insert_hot(&self, hash: u64, key: String, count: u64, now: u64) -> Option<HotEvent> {
        let mut event = None;
        self.hot.entry(hash).or_insert_with(|| {
            event = Some(HotEvent {
                change: HotChange::Hot,
                hash,
                key: key.clone(),
                count,
                since_nanos: now,
                at_nanos: now,
            });
            HotEntry {
                key,
                since: now,
                last_held: AtomicU64::new(now),
            }
        });
        event
    }

    /// Whether `hash` is hot now (no counting).
    pub fn is_hot(&self, hash: u64) -> bool {
        !self.hot.is_empty() && self.hot.contains_key(&hash)
    }

    /// Cools keys whose count has not held up for `hot_ttl`, returning an
    /// event for each. Call it periodically (the gateway does every 100 ms);
    /// a key's cooling is late by at most that period.
    pub fn sweep(&self, now: u64) -> Vec<HotEvent> {
        let ttl = nanos(self.cfg.hot_ttl);
        let spec = self.candidates.context();
        let mut cooled = Vec::new();
        self.hot.retain(|&hash, e| {
            let held = e.last_held.load(Ordering::Relaxed);
            if now.saturating_sub(held) <= ttl {
                return true;
            }
            let count = self
                .candidates
                .peek(hash, |c| c.window.estimate(spec, now))
                .unwrap_or(0.0);
            cooled.push(HotEvent {
                change: HotChange::Cooled,
                hash,
                key: e.key.clone(),
                count: count.round() as u64,
                since_nanos: e.since,
                at_nanos: now,
            });
            false
        });
        cooled
    }

    /// The hot keys, hottest first.
    pub fn hot_keys(&self, now: u64) -> Vec<HotKey> {
        let spec = self.candidates.context();
        let secs = self.cfg.window.as_secs_f64().max(1e-9);
        let mut keys: Vec<HotKey> = self
            .hot
            .iter()
            .map(|e| HotKey {
                hash: *e.key(),
                key: e.key.clone(),
                rate: self
                    .candidates
                    .peek(*e.key(), |c| c.window.estimate(spec, now))
                    .unwrap_or(0.0)
                    / secs,
                since_nanos: e.since,
            })
            .collect();
        keys.sort_by(|a, b| b.rate.total_cmp(&a.rate));
        keys
    }

    /// The `threshold` and the hold line (`cool_ratio × threshold`).
    pub fn lines(&self) -> (u64, u64) {
        (self.cfg.threshold, self.hold_at)
    }

    /// Takes the events counted per candidate since the last call, with the
    /// keys' names: a fleet sync's deltas. At most `max` keys, busiest
    /// first is not guaranteed (the rest keep their counts for next time).
    pub fn take_pending(&self, max: usize) -> Vec<(u64, u32, String)> {
        let mut out = Vec::new();
        self.candidates.for_each(|hash, c| {
            if out.len() < max {
                let n = c.pending.swap(0, Ordering::Relaxed);
                if n > 0 {
                    out.push((hash, n));
                }
            }
        });
        out.into_iter()
            .map(|(h, n)| (h, n, self.names.name(h)))
            .collect()
    }

    /// The fleet says `hash` is hot: it is hot here too, held as if its own
    /// count had held up now. Returns the event when it was not hot here.
    pub fn mark_hot(&self, hash: u64, key: &str, count: u64, now: u64) -> Option<HotEvent> {
        if let Some(entry) = self.hot.get(&hash) {
            entry.last_held.store(now, Ordering::Relaxed);
            return None;
        }
        self.insert_hot(hash, cut_key(key.to_string()), count, now)
    }

    /// The fleet says `hash` cooled. Returns the event when it was hot here.
    pub fn cool(&self, hash: u64, now: u64) -> Option<HotEvent> {
        let spec = self.candidates.context();
        let (_, e) = self.hot.remove(&hash)?;
        let count = self
            .candidates
            .peek(hash, |c| c.window.estimate(spec, now))
            .unwrap_or(0.0);
        Some(HotEvent {
            change: HotChange::Cooled,
            hash,
            key: e.key,
            count: count.round() as u64,
            since_nanos: e.since,
            at_nanos: now,
        })
    }

    pub fn hot_len(&self) -> usize {
        self.hot.len()
    }

    /// Forgets that `hash` is hot (an operator's invalidation); it turns hot
    /// again, with a new event, if it still crosses the threshold.
    pub fn forget(&self, hash: u64) -> bool {
        self.hot.remove(&hash).is_some()
    }

    /// The `top` candidates by their count in the minute before `now`'s, with
    /// their names: the minute statistics. Counts start when a key became a
    /// candidate, so a key admitted mid-minute is under-counted by at most
    /// the admission count.
    pub fn top_of_last_minute(&self, now: u64, top: usize) -> Vec<(String, u64)> {
        let last = (now / MINUTE).saturating_sub(1);
        let mut counts: Vec<(u64, u64)> = Vec::new();
        self.candidates.for_each(|hash, c| {
            let v = c.minutes[(last % 2) as usize].load(Ordering::Relaxed);
            if v >> 32 == last & 0xFFFF_FFFF && v & 0xFFFF_FFFF > 0 {
                counts.push((hash, v & 0xFFFF_FFFF));
            }
        });
        counts.sort_unstable_by_key(|c| std::cmp::Reverse(c.1));
        counts.truncate(top);
        counts
            .into_iter()
            .map(|(h, n)| (self.names.name(h), n))
            .collect()
    }

    /// Admissions refused so far because every candidate was established.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Candidates tracked, the cap, and evictions so far.
    pub fn tracked(&self) -> crate::store::StoreStats {
        self.candidates.stats()
    }

    /// Bytes held by the sketch and, at most, by the candidate table.
    pub fn memory_bound_bytes(&self) -> usize {
        self.sketch.memory_bytes() + self.cfg.max_tracked * CANDIDATE_BYTES + NAMES * NAME_BYTES
    }
}

/// A candidate's bytes in the table: its 104 bytes of state and key, plus
/// the hash map's control byte and load-factor slack (131 to 150 bytes measured by
/// `benches/hotkey_accuracy.rs`).
pub const CANDIDATE_BYTES: usize = 160;

/// Key names kept per rule (for hot keys and the minute statistics), each
/// cut to `KEY_TEXT_MAX` bytes: together at most 96 KiB.
const NAMES: usize = 512;

/// Counts one event in the current minute's slot, restarting it when it
/// still holds the minute before last.
fn bump_minute(slots: &[AtomicU64; 2], now: u64) {
    let minute = (now / MINUTE) & 0xFFFF_FFFF;
    let slot = &slots[(minute % 2) as usize];
    let mut cur = slot.load(Ordering::Relaxed);
    loop {
        let next = if cur >> 32 == minute {
            cur + 1
        } else {
            (minute << 32) | 1
        };
        match slot.compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return,
            Err(actual) => cur = actual,
        }
    }
}
