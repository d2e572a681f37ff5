//! Endpoint choice: which endpoint of a cluster takes the next attempt.
//!
//! A [`Balancer`] orders a cluster's endpoints for one choice and offers
//! them, best first, to the gateway, which skips the ones it cannot use
//! (down, ramping, already tried, breaker open, at `max_in_flight`) and
//! takes the first that is left. Three orders, as Envoy and nginx name
//! them:
//!
//! - **round robin**, smooth and weighted ([`schedule`]);
//! - **least request**: the less loaded of two endpoints drawn at random by
//!   weight, load being requests in flight over weight ([`Balancer::pick`],
//!   Envoy's default `LEAST_REQUEST` with `choice_count: 2`). Two random
//!   choices avoid the herd that a strict "least loaded" sends to one
//!   endpoint that just emptied, and cost two reads, not a scan;
//! - **consistent hash** of a request key ([`ring`]): requests with the same
//!   key reach the same endpoint while it is eligible, so the endpoint's own
//!   cache stays warm; an ineligible endpoint's keys move to the next
//!   endpoint on the ring and only those move.
//!
//! Every order ends with a scan of all endpoints, so a choice finds an
//! eligible endpoint whenever there is one. [`load`] counts each endpoint's
//! requests in flight and caps them (HAProxy's `maxconn`).

pub mod config;
pub mod load;
pub mod ring;
pub mod schedule;

pub use config::{BalanceFile, BalanceKind, EndpointFile};
pub use load::{Load, Ticket, Waiters};

use std::sync::atomic::{AtomicUsize, Ordering};

use ring::Ring;
use schedule::Schedule;

/// A cluster's endpoint order for one choice. Immutable but for a cursor:
/// built with the config snapshot, shared by every worker.
#[derive(Debug)]
pub struct Balancer {
    order: Order,
    /// Each endpoint's weight, in endpoint order.
    weights: Box<[u32]>,
    /// Running sums of `weights`, for draws in proportion to weight.
    cumulative: Box<[u64]>,
    cursor: AtomicUsize,
}

#[derive(Debug)]
enum Order {
    RoundRobin(Schedule),
    LeastRequest,
    Hash(Ring),
}

impl Balancer {
    /// Smooth weighted round robin over endpoints of these weights.
    pub fn round_robin(weights: &[u32]) -> Self {
        Self::new(Order::RoundRobin(Schedule::new(weights)), weights)
    }

    /// The less loaded of two weighted random draws.
    pub fn least_request(weights: &[u32]) -> Self {
        Self::new(Order::LeastRequest, weights)
    }

    /// A consistent-hash ring over endpoints known by `names` (their
    /// configured `host:port`, so the ring is the same on every gateway of a
    /// fleet and does not move when a name's address does).
    pub fn hash(names: &[&str], weights: &[u32]) -> Self {
        Self::new(Order::Hash(Ring::new(names, weights)), weights)
    }

    fn new(order: Order, weights: &[u32]) -> Self {
        let weights: Box<[u32]> = weights.iter().map(|w| (*w).max(1)).collect();
        let cumulative = weights
            .iter()
            .scan(0u64, |sum, w| {
                *sum += u64::from(*w);
                Some(*sum)
            })
            .collect();
        Self {
            order,
            weights,
            cumulative,
            cursor: AtomicUsize::new(0),
        }
    }

    pub fn len(&self) -> usize {
        self.weights.len()
    }

    pub fn is_empty(&self) -> bool {
        self.weights.is_empty()
    }

    pub fn is_least_request(&self) -> bool {
        matches!(self.order, Order::LeastRequest)
    }

    pub fn weight(&self, i: usize) -> u32 {
        self.weights[i]
    }

    /// The first endpoint, in this balancer's order, that `eligible` admits
    /// and `take` accepts; `take`'s result. `eligible` has no side effects
    /// (it may be asked about an endpoint that is then not chosen); `take`
    /// may (a breaker's permit, an in-flight slot) and is asked only about
    /// the endpoint about to be chosen. `load` is an endpoint's requests in
    /// flight (least request); `key` the request key's hash (consistent
    /// hash; without one, a weighted random draw starts the scan).
    pub fn pick<T>(
        &self,
        key: Option<u64>,
        eligible: impl Fn(usize) -> bool,
        load: impl Fn(usize) -> u32,
        mut take: impl FnMut(usize) -> Option<T>,
    ) -> Option<T> {
        let n = self.len();
        if n == 0 {
            return None;
        }
        let mut offer = |i: usize| if eligible(i) { take(i) } else { None };
        let start = match &self.order {
            Order::RoundRobin(s) => {
                // A few turns of the schedule keep the weights' proportion;
                // past them the scan finds whatever is left. A turn passed
                // over is used up (as Pingora's round robin does), so the
                // next choice starts after it: an endpoint that takes only a
                // share of its turns (slow start) keeps that share of a
                // normal endpoint's traffic.
                let mut at = 0;
                for _ in 0..(2 * n).min(s.len()) {
                    at = self.cursor.fetch_add(1, Ordering::Relaxed);
                    if let Some(t) = offer(s.at(at)) {
                        return Some(t);
                    }
                }
                s.at(at)
            }
            Order::LeastRequest => {
                if let Some((a, b)) = self.two_draws(&eligible) {
                    let (first, second) = if self.lighter(b, a, &load) {
                        (b, a)
                    } else {
                        (a, b)
                    };
                    if let Some(t) = offer(first).or_else(|| offer(second)) {
                        return Some(t);
                    }
                }
                self.draw()
            }
            Order::Hash(ring) => match key {
                Some(h) => {
                    for i in ring.walk(h).take(2 * n) {
                        if let Some(t) = offer(i) {
                            return Some(t);
                        }
                    }
                    ring.first(h)
                }
                None => self.draw(),
            },
        };
        (0..n).map(|k| (start + k) % n).find_map(offer)
    }

    /// Whether endpoint `a` carries less load per weight than `b`.
    fn lighter(&self, a: usize, b: usize, load: impl Fn(usize) -> u32) -> bool {
        u64::from(load(a)) * u64::from(self.weights[b])
            < u64::from(load(b)) * u64::from(self.weights[a])
    }

    /// Two distinct eligible endpoints drawn by weight (the second among
    /// the others), or `None` when a few draws find fewer (then the scan
    /// decides).
    fn two_draws(&self, eligible: impl Fn(usize) -> bool) -> Option<(usize, usize)> {
        let n = self.len();
        let tries = n.min(4);
        let a = (0..tries).map(|_| self.draw()).find(|i| eligible(*i))?;
        if n == 1 {
            return Some((a, a));
        }
        let b = (0..tries)
            .map(|_| self.draw_except(a))
            .find(|i| eligible(*i))
            .unwrap_or(a);
        Some((a, b))
    }

    /// An endpoint drawn with probability in proportion to its weight.
    fn draw(&self) -> usize {
        let total = *self.cumulative.last().unwrap_or(&1);
        let r = fastrand::u64(0..total);
        self.cumulative.partition_point(|&c| c <= r)
    }

    /// An endpoint other than `a`, drawn in proportion to weight.
    fn draw_except(&self, a: usize) -> usize {
        let total = *self.cumulative.last().unwrap_or(&1);
        let wa = u64::from(self.weights[a]);
        let before_a = self.cumulative[a] - wa;
        let mut r = fastrand::u64(0..(total - wa).max(1));
        if r >= before_a {
            r += wa;
        }
        self.cumulative
            .partition_point(|&c| c <= r)
            .min(self.len() - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    fn counts(b: &Balancer, picks: usize, eligible: impl Fn(usize) -> bool) -> Vec<usize> {
        let mut counts = vec![0; b.len()];
        for _ in 0..picks {
            let i = b.pick(None, &eligible, |_| 0, Some).unwrap();
            counts[i] += 1;
        }
        counts
    }

    #[test]
    fn round_robin_follows_the_weights_exactly_over_a_cycle() {
        let b = Balancer::round_robin(&[1, 3, 2]);
        assert_eq!(counts(&b, 600, |_| true), vec![100, 300, 200]);
    }

    #[test]
    fn every_order_skips_what_is_not_eligible_and_finds_what_is() {
        let weights = [1, 1000, 1];
        for b in [
            Balancer::round_robin(&weights),
            Balancer::least_request(&weights),
            Balancer::hash(&["a:1", "b:1", "c:1"], &weights),
        ] {
            let c = counts(&b, 300, |i| i != 1);
            assert_eq!(c[1], 0, "{b:?}");
            assert_eq!(c[0] + c[2], 300);
            assert!(b.pick(Some(7), |i| i == 2, |_| 0, Some) == Some(2));
            assert!(b.pick(Some(7), |_| false, |_| 0, Some).is_none());
        }
    }

    #[test]
    fn take_is_asked_only_about_the_endpoint_being_chosen() {
        let b = Balancer::least_request(&[1, 1, 1, 1]);
        let asked = Cell::new(0);
        let chosen = b.pick(
            None,
            |_| true,
            |_| 0,
            |i| {
                asked.set(asked.get() + 1);
                Some(i)
            },
        );
        assert!(chosen.is_some());
        assert_eq!(asked.get(), 1);
        // An endpoint that refuses (its breaker took no call) passes the
        // choice on.
        let chosen = b.pick(None, |_| true, |_| 0, |i| (i == 3).then_some(i));
        assert_eq!(chosen, Some(3));
    }

    #[test]
    fn least_request_prefers_the_endpoint_with_less_in_flight() {
        let b = Balancer::least_request(&[1, 1]);
        let busy = [10, 2];
        let c = (0..1000)
            .filter(|_| b.pick(None, |_| true, |i| busy[i], Some) == Some(1))
            .count();
        assert_eq!(c, 1000, "two endpoints: both are drawn, the lighter wins");
    }

    #[test]
    fn least_request_weighs_load_by_weight() {
        // 4 in flight on a weight-4 endpoint is lighter than 2 on weight 1.
        let b = Balancer::least_request(&[4, 1]);
        let busy = [4, 2];
        assert!((0..200).all(|_| b.pick(None, |_| true, |i| busy[i], Some) == Some(0)));
    }

    #[test]
    fn least_request_draws_in_proportion_to_weight_when_idle() {
        let b = Balancer::least_request(&[3, 1, 1, 1, 1, 1, 1, 1, 1, 1]);
        let c = counts(&b, 12_000, |_| true);
        // Equal load: the tie goes to the first draw, drawn by weight, so
        // endpoint 0 gets 3/12 of the choices; within a few standard
        // deviations (about 47) of 3000.
        assert!((2_700..3_300).contains(&c[0]), "{c:?}");
    }

    #[test]
    fn the_same_key_reaches_the_same_endpoint_and_different_keys_spread() {
        let b = Balancer::hash(&["a:1", "b:1", "c:1", "d:1"], &[1, 1, 1, 1]);
        for key in 0..100u64 {
            let first = b.pick(Some(key), |_| true, |_| 0, Some);
            assert!((0..5).all(|_| b.pick(Some(key), |_| true, |_| 0, Some) == first));
        }
        let mut c = [0; 4];
        for key in 0..4000u64 {
            let h = xxhash_rust::xxh3::xxh3_64(&key.to_le_bytes());
            c[b.pick(Some(h), |_| true, |_| 0, Some).unwrap()] += 1;
        }
        assert!(c.iter().all(|n| (700..1300).contains(n)), "{c:?}");
    }

    #[test]
    fn an_ineligible_endpoint_moves_only_its_own_keys() {
        let b = Balancer::hash(&["a:1", "b:1", "c:1", "d:1"], &[1, 1, 1, 1]);
        let hashes: Vec<u64> = (0..2000u64)
            .map(|k| xxhash_rust::xxh3::xxh3_64(&k.to_le_bytes()))
            .collect();
        let before: Vec<_> = hashes
            .iter()
            .map(|h| b.pick(Some(*h), |_| true, |_| 0, Some).unwrap())
            .collect();
        let after: Vec<_> = hashes
            .iter()
            .map(|h| b.pick(Some(*h), |i| i != 2, |_| 0, Some).unwrap())
            .collect();
        for (x, y) in before.iter().zip(&after) {
            if *x != 2 {
                assert_eq!(x, y, "a key of a still-eligible endpoint moved");
            } else {
                assert_ne!(*y, 2);
            }
        }
    }
}
