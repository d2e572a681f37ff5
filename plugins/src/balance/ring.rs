//! A consistent-hash ring (Ketama, as nginx's `hash ... consistent` and
//! Envoy's `RING_HASH`).
//!
//! Each endpoint puts points on a 64-bit ring, in proportion to its weight,
//! at the XXH3 hashes of its name and the point's number. A key's hash
//! belongs to the first point at or after it, going round. Adding or
//! removing an endpoint moves only the keys of the arcs it gains or loses;
//! an ineligible endpoint's keys go on to the next points of other
//! endpoints ([`Ring::walk`]), and only those keys move.
//!
//! Points are named by the endpoint's configured name, not its address:
//! every gateway of a fleet, and every build (XXH3 is specified, seed 0),
//! builds the same ring from the same config.
//!
//! Limit: 160 points per unit of weight (Ketama's figure, keys spread
//! within a few percent), scaled down so a ring has at most [`MAX_POINTS`]
//! (1 MiB); with a thousand endpoints that is 65 points each, and the
//! spread widens to about ±15%.

use xxhash_rust::xxh3::xxh3_64;

/// Points per unit of weight.
pub const POINTS_PER_WEIGHT: u64 = 160;
/// The most points a ring holds (16 bytes each).
pub const MAX_POINTS: u64 = 1 << 16;

#[derive(Debug)]
pub struct Ring {
    /// (hash, endpoint index), sorted by hash.
    points: Box<[(u64, u32)]>,
}

impl Ring {
    pub fn new(names: &[&str], weights: &[u32]) -> Self {
        let weight = |i: usize| u64::from(weights.get(i).copied().unwrap_or(1).max(1));
        let total: u64 = (0..names.len()).map(weight).sum::<u64>() * POINTS_PER_WEIGHT;
        let mut points = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let mut count = weight(i) * POINTS_PER_WEIGHT;
            if total > MAX_POINTS {
                count = (count * MAX_POINTS / total).max(1);
            }
            for p in 0..count {
                let point = xxh3_64(format!("{name}-{p}").as_bytes());
                points.push((point, i as u32));
            }
        }
        points.sort_unstable();
        Self {
            points: points.into(),
        }
    }

    /// The endpoint that owns `hash`.
    pub fn first(&self, hash: u64) -> usize {
        self.walk(hash).next().unwrap_or(0)
    }

    /// The endpoints of the points from `hash` on, going round once (an
    /// endpoint shows up once per point it has on the way).
    pub fn walk(&self, hash: u64) -> impl Iterator<Item = usize> + '_ {
        let start = self.points.partition_point(|(p, _)| *p < hash);
        let n = self.points.len();
        (0..n).map(move |k| self.points[(start + k) % n].1 as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_set_the_share_of_the_ring() {
        let r = Ring::new(&["a:1", "b:1"], &[3, 1]);
        let mut c = [0; 2];
        for k in 0..8000u64 {
            c[r.first(xxh3_64(&k.to_le_bytes()))] += 1;
        }
        assert!((5_400..6_600).contains(&c[0]), "{c:?}");
    }

    #[test]
    fn adding_an_endpoint_moves_only_the_keys_it_takes() {
        let three = Ring::new(&["a:1", "b:1", "c:1"], &[1, 1, 1]);
        let four = Ring::new(&["a:1", "b:1", "c:1", "d:1"], &[1, 1, 1, 1]);
        let mut moved = 0;
        for k in 0..4000u64 {
            let h = xxh3_64(&k.to_le_bytes());
            let (before, after) = (three.first(h), four.first(h));
            if before != after {
                assert_eq!(after, 3, "a key moved between old endpoints");
                moved += 1;
            }
        }
        // About a quarter of the keys go to the new endpoint.
        assert!((700..1_300).contains(&moved), "{moved}");
    }

    #[test]
    fn a_large_cluster_stays_within_the_point_budget() {
        let names: Vec<String> = (0..5000)
            .map(|i| format!("10.0.{}.{}:80", i / 256, i % 256))
            .collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let r = Ring::new(&refs, &vec![1; 5000]);
        assert!(r.points.len() as u64 <= MAX_POINTS + 5000);
        let mut seen = vec![false; 5000];
        r.points.iter().for_each(|(_, i)| seen[*i as usize] = true);
        assert!(seen.iter().all(|s| *s), "every endpoint keeps a point");
    }
}
