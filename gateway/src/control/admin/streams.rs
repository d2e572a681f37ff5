//! The cap on `GET /hotkeys/stream` subscribers.
//!
//! Each subscriber is a task on the admin's one thread and a broadcast
//! receiver; without a cap any client could open them until the admin
//! starves. A slot is a guard: it is taken before the stream starts and
//! given back when the stream ends, however it ends (client gone, write
//! error, shutdown), because the guard is dropped. The cap is read from the
//! live config on every subscribe, so a reload that lowers it refuses new
//! subscribers until enough of the current ones leave.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Live subscribers, counted.
#[derive(Debug, Default)]
pub struct StreamSlots {
    live: AtomicUsize,
}

/// One subscriber's slot; given back on drop.
#[derive(Debug)]
pub struct StreamSlot<'a> {
    live: &'a AtomicUsize,
}

impl StreamSlots {
    /// A slot if fewer than `cap` are taken.
    pub fn try_take(&self, cap: usize) -> Option<StreamSlot<'_>> {
        self.live
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < cap).then_some(n + 1)
            })
            .ok()
            .map(|_| StreamSlot { live: &self.live })
    }

    /// Slots taken now.
    pub fn live(&self) -> usize {
        self.live.load(Ordering::Acquire)
    }
}

impl Drop for StreamSlot<'_> {
    fn drop(&mut self) {
        self.live.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_capped_and_given_back_on_drop() {
        let slots = StreamSlots::default();
        let a = slots.try_take(2).expect("first");
        let b = slots.try_take(2).expect("second");
        assert!(slots.try_take(2).is_none(), "third is past the cap");
        assert_eq!(slots.live(), 2);
        drop(a);
        assert_eq!(slots.live(), 1);
        let c = slots.try_take(2).expect("a freed slot is taken again");
        // A lowered cap (a reload) refuses until enough subscribers leave.
        assert!(slots.try_take(1).is_none());
        drop(b);
        assert!(slots.try_take(1).is_none());
        drop(c);
        assert!(slots.try_take(1).is_some());
        assert_eq!(slots.live(), 0, "the last guard was a temporary");
    }
}
