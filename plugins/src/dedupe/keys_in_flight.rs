//! `reject` mode's table of idempotency keys in flight.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use http::HeaderValue;

use crate::store::KeyHasher;
use crate::Guard;

/// `reject` mode's table: each idempotency key in flight, with the
/// fingerprint of the request that holds it. One request per key: a second
/// one, the same or not, is refused, so nothing needs its answer and
/// nothing copies it.
pub(super) struct KeysInFlight {
    hasher: KeyHasher,
    table: DashMap<u64, u128>,
    len: AtomicUsize,
    max: usize,
}

pub(super) enum Claim {
    /// The key is this request's until the permit is dropped.
    Held(Box<dyn Guard>),
    SameRequest,
    OtherRequest,
    /// The table is full: not deduplicated.
    Full,
}

impl KeysInFlight {
    /// A table of at most `max` keys.
    pub(super) fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            hasher: KeyHasher::default(),
            table: DashMap::new(),
            len: AtomicUsize::new(0),
            max,
        })
    }

    /// Keys held now.
    pub(super) fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    /// Claims `key` for the request with `fingerprint`, or says who holds it.
    pub(super) fn claim(self: &Arc<Self>, key: &HeaderValue, fingerprint: u128) -> Claim {
        // A 64-bit key hash is enough here: a collision costs a wrong 409,
        // never a shared answer.
        let key = self.hasher.hash_bytes(key.as_bytes());
        if let Some(holder) = self.table.get(&key).map(|e| *e) {
            return Self::conflict(holder, fingerprint);
        }
        if self.len.load(Ordering::Acquire) >= self.max {
            return Claim::Full;
        }
        match self.table.entry(key) {
            Entry::Occupied(e) => Self::conflict(*e.get(), fingerprint),
            Entry::Vacant(e) => {
                e.insert(fingerprint);
                self.len.fetch_add(1, Ordering::AcqRel);
                Claim::Held(Box::new(KeyHold {
                    key,
                    fingerprint,
                    keys: self.clone(),
                }))
            }
        }
    }

    fn conflict(holder: u128, fingerprint: u128) -> Claim {
        if holder == fingerprint {
            Claim::SameRequest
        } else {
            Claim::OtherRequest
        }
    }
}

/// Holds a key for its request; frees it when the request ends, however.
struct KeyHold {
    key: u64,
    fingerprint: u128,
    keys: Arc<KeysInFlight>,
}

/// Dropping it frees the key, however the request ended.
impl Guard for KeyHold {}

impl Drop for KeyHold {
    fn drop(&mut self) {
        let fingerprint = self.fingerprint;
        if self
            .keys
            .table
            .remove_if(&self.key, |_, holder| *holder == fingerprint)
            .is_some()
        {
            self.keys.len.fetch_sub(1, Ordering::AcqRel);
        }
    }
}
