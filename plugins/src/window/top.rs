//! The hottest keys of a store, by window estimate.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::{SlidingWindow, WindowSpec};
use crate::store::{KeyState, KeyedStore};

/// The `top` keys with the largest estimates at `now`, hottest first, as
/// `(key hash, estimated count)`. Scans the store (one shard locked at a
/// time) keeping a heap of `top` entries; nothing is scanned when `top` is 0.
pub fn hottest<V: KeyState, const S: usize>(
    store: &KeyedStore<V>,
    top: usize,
    spec: &WindowSpec,
    now: u64,
    window: impl Fn(&V) -> &SlidingWindow<S>,
) -> Vec<(u64, f64)> {
    if top == 0 {
        return Vec::new();
    }
    let tick = spec.tick(now);
    let mut heap: BinaryHeap<Reverse<(u128, u64)>> = BinaryHeap::with_capacity(top + 1);
    store.for_each(|hash, v| {
        let scaled = window(v).estimate_scaled_at(tick);
        if scaled == 0 {
            return;
        }
        heap.push(Reverse((scaled, hash)));
        if heap.len() > top {
            heap.pop();
        }
    });
    heap.into_sorted_vec()
        .into_iter()
        .map(|Reverse((scaled, hash))| (hash, tick.unscale(scaled)))
        .collect()
}
