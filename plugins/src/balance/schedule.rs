//! Smooth weighted round robin, precomputed.
//!
//! nginx's algorithm: each turn every endpoint's current weight grows by its
//! weight, the largest is chosen and loses the total. Over one cycle of
//! `sum(weights) / gcd` turns each endpoint is chosen exactly in proportion
//! to its weight, and the choices interleave (weights 5, 1, 1 give
//! `a a b a c a a`, not `a a a a a b c`), so no endpoint gets a burst.
//!
//! nginx runs it under a lock on every request. The sequence is fixed by the
//! weights, so it is computed once, when the config is compiled, and read
//! through an atomic cursor: lock-free, one load per choice.
//!
//! Limit: a cycle longer than [`MAX_CYCLE`] turns is scaled down first
//! (each weight in proportion, at least 1), so weights such as 1 and 10,000
//! across many endpoints lose some precision rather than memory.

/// The longest cycle kept: 64 Ki turns, 256 KiB.
pub const MAX_CYCLE: u64 = 1 << 16;

/// One cycle of smooth weighted round robin, as endpoint indexes.
#[derive(Debug)]
pub struct Schedule {
    turns: Box<[u32]>,
}

impl Schedule {
    pub fn new(weights: &[u32]) -> Self {
        let weights = fit(weights);
        let total: i64 = weights.iter().map(|w| i64::from(*w)).sum();
        let mut current = vec![0i64; weights.len()];
        let turns = (0..total)
            .map(|_| {
                for (c, w) in current.iter_mut().zip(&weights) {
                    *c += i64::from(*w);
                }
                let best = (0..current.len())
                    .max_by_key(|i| (current[*i], std::cmp::Reverse(*i)))
                    .unwrap_or(0);
                current[best] -= total;
                best as u32
            })
            .collect();
        Self { turns }
    }

    /// The turns in one cycle.
    pub fn len(&self) -> usize {
        self.turns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.turns.is_empty()
    }

    /// The endpoint of turn `at` (any number: the cycle repeats).
    pub fn at(&self, at: usize) -> usize {
        self.turns[at % self.turns.len()] as usize
    }
}

/// The weights divided by their greatest common divisor, and scaled down if
/// their sum is still above [`MAX_CYCLE`].
fn fit(weights: &[u32]) -> Vec<u32> {
    let weights: Vec<u64> = weights.iter().map(|w| u64::from((*w).max(1))).collect();
    let g = weights.iter().copied().fold(0, gcd).max(1);
    let reduced: Vec<u64> = weights.iter().map(|w| w / g).collect();
    let sum: u64 = reduced.iter().sum();
    reduced
        .iter()
        .map(|w| {
            let w = if sum > MAX_CYCLE {
                (w * MAX_CYCLE / sum).max(1)
            } else {
                *w
            };
            w as u32
        })
        .collect()
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cycle_interleaves_as_nginx_does() {
        let s = Schedule::new(&[5, 1, 1]);
        let seq: Vec<usize> = (0..7).map(|i| s.at(i)).collect();
        assert_eq!(seq, vec![0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn common_factors_shorten_the_cycle() {
        assert_eq!(Schedule::new(&[100, 200, 300]).len(), 6);
        assert_eq!(Schedule::new(&[1, 1, 1]).len(), 3);
    }

    #[test]
    fn a_huge_cycle_is_scaled_down_and_keeps_every_endpoint() {
        let mut weights = vec![1u32; 100];
        weights[0] = u32::MAX;
        let s = Schedule::new(&weights);
        assert!(s.len() as u64 <= MAX_CYCLE + 100);
        let mut seen = [false; 100];
        (0..s.len()).for_each(|i| seen[s.at(i)] = true);
        assert!(seen.iter().all(|s| *s));
    }
}
