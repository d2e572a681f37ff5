//! A Zipf(s) stream over `n` keys for the hot-key benches: rank r has
//! probability ∝ 1 / r^s. Keys are scrambled 64-bit hashes of the rank, as a
//! rule would see them.

pub struct Zipf {
    cdf: Vec<f64>,
    rng: fastrand::Rng,
}

impl Zipf {
    pub fn new(n: usize, s: f64, seed: u64) -> Self {
        let mut cdf = Vec::with_capacity(n);
        let mut total = 0.0;
        for r in 1..=n {
            total += 1.0 / (r as f64).powf(s);
            cdf.push(total);
        }
        for c in &mut cdf {
            *c /= total;
        }
        Self {
            cdf,
            rng: fastrand::Rng::with_seed(seed),
        }
    }

    /// The next key's rank (0 = most frequent).
    pub fn rank(&mut self) -> usize {
        let u = self.rng.f64();
        self.cdf.partition_point(|&c| c < u).min(self.cdf.len() - 1)
    }

    /// The key of a rank.
    pub fn key(rank: usize) -> u64 {
        (rank as u64 + 1)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .rotate_left(17)
    }

    /// `count` keys.
    pub fn keys(&mut self, count: usize) -> Vec<u64> {
        (0..count).map(|_| Self::key(self.rank())).collect()
    }
}
