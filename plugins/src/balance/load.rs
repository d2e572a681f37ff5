//! Requests in flight per endpoint, and the cap on them.
//!
//! [`Load`] counts an endpoint's attempts in flight: least request reads it,
//! `max_in_flight` caps it (HAProxy's per-server `maxconn`), and the admin
//! shows it. A [`Ticket`] is one attempt's place: taken when the endpoint is
//! chosen, given back when it drops (the attempt failed and moved on, or
//! the request ended), on every path.
//!
//! A request that finds every endpoint at its cap waits in the cluster's
//! queue ([`Waiters`]) for a ticket to come back, as HAProxy queues a
//! request in its backend when every server is at `maxconn`. A freed ticket
//! wakes one waiter; waiters also look again on their own every so often,
//! so a wake-up lost to a reload that rebuilt the cluster costs a short
//! delay, never a stuck request.
//!
//! A `Load` belongs to an endpoint's address and a reload that keeps the
//! address keeps it: requests in flight across a reload stay counted.

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

/// One endpoint's attempts in flight.
#[derive(Debug)]
pub struct Load {
    in_flight: AtomicU32,
    waiters: Arc<Waiters>,
}

/// The requests of one cluster waiting for an endpoint under its cap.
#[derive(Debug, Default)]
pub struct Waiters {
    notify: Notify,
    count: AtomicUsize,
}

/// One attempt's place on an endpoint; given back on drop.
#[derive(Debug)]
pub struct Ticket(Arc<Load>);

impl Load {
    pub fn new(waiters: Arc<Waiters>) -> Self {
        Self {
            in_flight: AtomicU32::new(0),
            waiters,
        }
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// A place, if fewer than `max` are in flight (`0`: no cap).
    pub fn try_take(self: &Arc<Self>, max: u32) -> Option<Ticket> {
        let mut now = self.in_flight.load(Ordering::Relaxed);
        loop {
            if max != 0 && now >= max {
                return None;
            }
            match self.in_flight.compare_exchange_weak(
                now,
                now + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(Ticket(self.clone())),
                Err(seen) => now = seen,
            }
        }
    }

    /// Whether this load's queue is `waiters` (a reload that rebuilt the
    /// cluster's queue leaves older loads on the old one).
    pub fn shares(&self, waiters: &Arc<Waiters>) -> bool {
        Arc::ptr_eq(&self.waiters, waiters)
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
        let waiters = &self.0.waiters;
        if waiters.count.load(Ordering::Acquire) > 0 {
            waiters.notify.notify_one();
        }
    }
}

impl Waiters {
    /// Requests waiting now.
    pub fn waiting(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// Joins the queue if fewer than `max` wait: the place, which leaves the
    /// queue on drop.
    pub fn join(self: &Arc<Self>, max: usize) -> Option<Place> {
        let mut now = self.count.load(Ordering::Relaxed);
        loop {
            if now >= max {
                return None;
            }
            match self.count.compare_exchange_weak(
                now,
                now + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(Place(self.clone())),
                Err(seen) => now = seen,
            }
        }
    }
}

/// A request's place in a cluster's queue.
#[derive(Debug)]
pub struct Place(Arc<Waiters>);

impl Place {
    /// Waits for a ticket to be given back, or `at_most`, whichever is
    /// first; the caller then looks again.
    pub async fn freed(&self, at_most: std::time::Duration) {
        let _ = tokio::time::timeout(at_most, self.0.notify.notified()).await;
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn tickets_count_in_flight_and_stop_at_the_cap() {
        let load = Arc::new(Load::new(Arc::default()));
        let a = load.try_take(2).unwrap();
        let b = load.try_take(2).unwrap();
        assert_eq!(load.in_flight(), 2);
        assert!(load.try_take(2).is_none());
        drop(a);
        assert_eq!(load.in_flight(), 1);
        let _c = load.try_take(2).unwrap();
        drop(b);
        // No cap: always a place.
        let many: Vec<_> = (0..100).map(|_| load.try_take(0).unwrap()).collect();
        assert_eq!(load.in_flight(), 101);
        drop(many);
        assert_eq!(load.in_flight(), 1);
    }

    #[test]
    fn the_queue_is_bounded_and_a_place_leaves_on_drop() {
        let w = Arc::new(Waiters::default());
        let a = w.join(1).unwrap();
        assert!(w.join(1).is_none());
        assert_eq!(w.waiting(), 1);
        drop(a);
        assert!(w.join(1).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_freed_ticket_wakes_a_waiter_before_its_timeout() {
        let w = Arc::new(Waiters::default());
        let load = Arc::new(Load::new(w.clone()));
        let held = load.try_take(1).unwrap();
        let place = w.join(10).unwrap();
        let start = tokio::time::Instant::now();
        let waiter = tokio::spawn(async move {
            place.freed(Duration::from_secs(60)).await;
            tokio::time::Instant::now()
        });
        tokio::time::sleep(Duration::from_millis(5)).await;
        drop(held);
        let woke = waiter.await.unwrap();
        assert!(
            woke - start < Duration::from_secs(60),
            "woken, not timed out"
        );
        assert!(load.try_take(1).is_some());
    }
}
