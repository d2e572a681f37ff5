//! A small per-thread random source for arrivals and jitter. Load shapes need
//! spread, not cryptographic quality.

use std::cell::Cell;
use std::hash::{BuildHasher, Hasher};

thread_local! {
    static STATE: Cell<u64> = Cell::new({
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(0x2545_F491_4F6C_DD1D);
        h.finish() | 1
    });
}

/// A uniform draw from `[0, 1)`.
pub fn unit() -> f64 {
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        (x >> 11) as f64 / (1u64 << 53) as f64
    })
}

/// An exponential draw with the given mean (Poisson inter-arrival times).
pub fn exponential(mean: f64) -> f64 {
    -mean * (1.0 - unit()).ln()
}
