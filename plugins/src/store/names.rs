//! `KeyNames`: the text of the keys worth showing, bounded.
//!
//! Stores key state by hash only (see `KeyHasher`). To show an operator *which*
//! keys are hot, a policy records the text of a key when it becomes notable
//! (near or over its limit). The table is capped; when full, names of keys the
//! store no longer tracks are swept out, at most once a second.
//!
//! A name is the key's text cut to [`KEY_TEXT_MAX`] bytes ([`cut_key`]): the
//! text comes from the client (a header value may be 1 MiB), and the cap is in
//! bytes as well as in names. A table of `cap` names holds at most
//! `cap × NAME_BYTES`: 768 KiB for the 4096 names of a rate limit or abuse
//! policy. The names are only shown; the keys themselves are hashes of the
//! full value, so two keys whose text is cut alike stay two keys.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use dashmap::DashMap;

use crate::key_text::{cut_key, KEY_TEXT_MAX};

/// The most heap bytes one kept name holds: its text, and its slot in the
/// map (24 bytes, times up to 2.3 for the hash table's load factor and
/// growth, plus a control byte). Measured in `tests/key_text_memory.rs`.
pub const NAME_BYTES: usize = KEY_TEXT_MAX + 64;

pub struct KeyNames {
    map: DashMap<u64, Box<str>>,
    len: AtomicUsize,
    cap: usize,
    last_sweep: AtomicU64,
}

impl KeyNames {
    pub fn new(cap: usize) -> Self {
        Self {
            map: DashMap::new(),
            len: AtomicUsize::new(0),
            cap,
            last_sweep: AtomicU64::new(0),
        }
    }

    /// Records the name of `hash` if absent, cut to [`KEY_TEXT_MAX`] bytes.
    /// `render` runs only when needed.
    /// `tracked` tells, during a sweep, whether the store still has a key.
    pub fn note(
        &self,
        hash: u64,
        now: u64,
        render: impl FnOnce() -> Option<String>,
        tracked: impl Fn(u64) -> bool,
    ) {
        // When full, bail out on two atomic loads, before touching the map:
        // under a flood of new keys this runs on every request.
        if self.len.load(Ordering::Relaxed) >= self.cap {
            let last = self.last_sweep.load(Ordering::Relaxed);
            if now.saturating_sub(last) < 1_000_000_000
                || self
                    .last_sweep
                    .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
                    .is_err()
            {
                return;
            }
            self.map.retain(|k, _| tracked(*k));
            self.len.store(self.map.len(), Ordering::Relaxed);
            if self.len.load(Ordering::Relaxed) >= self.cap {
                return;
            }
        }
        if self.map.contains_key(&hash) {
            return;
        }
        if let Some(name) = render() {
            if self.map.insert(hash, cut_key(name).into()).is_none() {
                self.len.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The name of `hash`, or `#<hash>`.
    pub fn name(&self, hash: u64) -> String {
        self.map
            .get(&hash)
            .map(|n| n.to_string())
            .unwrap_or_else(|| format!("#{hash:016x}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_names_up_to_the_cap_and_sweeps_untracked_ones() {
        let names = KeyNames::new(2);
        names.note(1, 0, || Some("one".into()), |_| true);
        names.note(2, 0, || Some("two".into()), |_| true);
        names.note(3, 0, || Some("three".into()), |_| true);
        assert_eq!(names.name(1), "one");
        assert_eq!(names.name(3), "#0000000000000003");
        // A second later, with key 1 gone from the store, there is room again.
        names.note(3, 2_000_000_000, || Some("three".into()), |k| k != 1);
        assert_eq!(names.name(3), "three");
        assert_eq!(names.name(1), "#0000000000000001");
    }

    #[test]
    fn names_are_cut_to_the_cap_and_long_keys_stay_apart() {
        let names = KeyNames::new(8);
        // Two 1 MiB keys with the same first 128 bytes: two hashes, two names.
        let long = |fill: &str| format!("{}{}", "a".repeat(128), fill.repeat(1 << 20));
        names.note(1, 0, || Some(long("x")), |_| true);
        names.note(2, 0, || Some(long("y")), |_| true);
        for hash in [1, 2] {
            let name = names.name(hash);
            assert!(name.len() <= KEY_TEXT_MAX, "{}", name.len());
            assert!(name.starts_with("aaaa") && name.ends_with('…'));
        }
        assert_eq!(names.len.load(Ordering::Relaxed), 2);
    }
}
