//! The gate in front of an [`AdaptiveLimit`]: a short queue by priority,
//! then a fast, explicit refusal.
//!
//! A call that finds the limit full waits, at most `max_wait` and never past
//! the caller's own deadline, in the queue of its [`Class`]. A freed place
//! goes to a waiter of the highest class: the oldest while the queue is at
//! most half full, the newest past that (adaptive LIFO, as Facebook's
//! queues do under overload: the oldest have spent their wait, and serving
//! them first made every admitted call wait nearly all of it). A full queue sheds from
//! the bottom: an arrival evicts the newest waiter of a lower class (who is
//! refused at once), or is refused itself when none is lower. So under
//! overload the lowest class is shed first and the highest last, like
//! Google's criticality or Cinnamon's tiers.
//!
//! Waiting is bounded in count (`max_queue`) and in time; a waiter whose
//! future is dropped (its client left) leaves the queue, and a place handed
//! to it in that instant is passed on.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::oneshot;

use super::limit::{AdaptiveLimit, Sample, Slot};
use crate::{Clock, Rejection, RejectionKind};

/// The wait half a fast provider's round trip is not cut below (unless
/// `max_wait` is).
const MIN_WAIT: Duration = Duration::from_millis(5);

/// How long after its last refusal a gate counts as overloaded.
const OVERLOAD_MEMORY: Duration = Duration::from_secs(1);

/// A request's priority under overload, lowest first.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    /// Shed first: crawlers, batch jobs, prefetches.
    Sheddable = 0,
    /// Everything not classified.
    Default = 1,
    /// Shed late: logged-in users, paying tiers.
    Important = 2,
    /// Shed last: checkout, health of the business.
    Critical = 3,
}

impl Class {
    pub const ALL: [Class; 4] = [
        Class::Sheddable,
        Class::Default,
        Class::Important,
        Class::Critical,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Class::Sheddable => "sheddable",
            Class::Default => "default",
            Class::Important => "important",
            Class::Critical => "critical",
        }
    }

    /// The class named `name`, as the config writes it.
    pub fn parse(name: &str) -> Option<Class> {
        Class::ALL.into_iter().find(|c| c.as_str() == name)
    }
}

/// The queue's bounds.
#[derive(Debug, Clone, PartialEq)]
pub struct GateSettings {
    /// Waiters at most, all classes together.
    pub max_queue: usize,
    /// The longest wait for a place.
    pub max_wait: Duration,
}

impl Default for GateSettings {
    fn default() -> Self {
        Self {
            max_queue: 64,
            max_wait: Duration::from_millis(50),
        }
    }
}

struct Waiter {
    id: u64,
    tx: oneshot::Sender<Slot>,
}

#[derive(Default)]
struct Queues {
    by_class: [VecDeque<Waiter>; 4],
    len: usize,
    next_id: u64,
}

/// Why the gate refused a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The queue was full of calls of this class or higher.
    QueueFull,
    /// A call of a higher class took its place in the queue.
    Evicted,
    /// No place freed up within the wait.
    Timeout,
}

/// What `GET /overload` shows of a gate.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct GateReport {
    pub cluster: String,
    /// It refused a call within the last second.
    pub overloaded: bool,
    /// The learned limit: calls the provider is trusted to hold at once.
    pub limit: u32,
    pub in_flight: u32,
    pub queued: usize,
    /// The provider's learned unloaded round trip (0 until learned).
    pub min_rtt_ms: f64,
    /// The last interval's mean round trip.
    pub rtt_ms: f64,
    pub max_queue: usize,
    pub max_wait_ms: f64,
    /// Calls refused so far, by class.
    pub shed: std::collections::BTreeMap<&'static str, u64>,
}

/// A gate's move into or out of overload, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// It refused a call, the first in over a second.
    Entered,
    /// It admitted a call over a second after its last refusal.
    Left,
}

/// The gate. Share it as an `Arc`.
pub struct Gate {
    name: String,
    limit: Arc<AdaptiveLimit>,
    settings: GateSettings,
    clock: Arc<dyn Clock>,
    queues: Mutex<Queues>,
    shed: [AtomicU64; 4],
    overloaded: AtomicBool,
    last_shed: AtomicU64,
}

/// An admitted call's place. [`GateSlot::finish`] with how it ended; dropped
/// unfinished, it frees its place without a sample. Either way the place
/// goes to the next waiter.
pub struct GateSlot {
    slot: Option<Slot>,
    gate: Arc<Gate>,
}

impl Gate {
    pub fn new(
        name: impl Into<String>,
        limit: Arc<AdaptiveLimit>,
        settings: GateSettings,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            name: name.into(),
            limit,
            settings,
            clock,
            queues: Mutex::new(Queues::default()),
            shed: Default::default(),
            overloaded: AtomicBool::new(false),
            last_shed: AtomicU64::new(0),
        }
    }

    /// Its state, for the admin.
    pub fn report(&self) -> GateReport {
        let (base, recent) = self.limit.rtts();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        GateReport {
            cluster: self.name.clone(),
            overloaded: self.overloaded(),
            limit: self.limit.limit(),
            in_flight: self.limit.in_flight(),
            queued: self.queued(),
            min_rtt_ms: ms(base),
            rtt_ms: ms(recent),
            max_queue: self.settings.max_queue,
            max_wait_ms: ms(self.settings.max_wait),
            shed: Class::ALL
                .into_iter()
                .map(|c| (c.as_str(), self.shed(c)))
                .collect(),
        }
    }

    /// It refused a call within the last second.
    pub fn overloaded(&self) -> bool {
        self.overloaded.load(Ordering::Relaxed)
    }

    /// Books a call's admission or refusal; returns the move into or out of
    /// overload it makes, if any (one caller sees each move).
    pub fn note(&self, admitted: bool) -> Option<Change> {
        if admitted && !self.overloaded.load(Ordering::Relaxed) {
            // The common case: one load, no clock read.
            return None;
        }
        let now = self.clock.now_nanos();
        if !admitted {
            self.last_shed.store(now, Ordering::Relaxed);
            return (!self.overloaded.swap(true, Ordering::AcqRel)).then_some(Change::Entered);
        }
        let quiet = now.saturating_sub(self.last_shed.load(Ordering::Relaxed));
        if quiet < nanos(OVERLOAD_MEMORY) {
            return None;
        }
        self.overloaded
            .compare_exchange(true, false, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
            .then_some(Change::Left)
    }

    /// How long a call may wait for a place: `max_wait`, the time left
    /// before the caller's deadline, and half the provider's learned
    /// unloaded round trip (but at least 5 ms), whichever is least. The last keeps an admitted
    /// call's latency within about twice the provider's own: a wait longer
    /// than a round trip is a queue the provider's pace would not clear.
    fn wait_for(&self, left: Option<Duration>) -> Duration {
        let (base, _) = self.limit.rtts();
        let mut wait = self.settings.max_wait;
        if !base.is_zero() {
            // Not below a few milliseconds: for a fast provider the
            // gateway's own scheduling is most of a round trip.
            wait = wait.min((base / 2).max(MIN_WAIT));
        }
        left.map_or(wait, |l| l.min(wait))
    }

    /// The cluster it guards.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn limit(&self) -> &AdaptiveLimit {
        &self.limit
    }

    /// Calls waiting now.
    pub fn queued(&self) -> usize {
        self.queues.lock().len
    }

    /// Calls refused so far, of this class.
    pub fn shed(&self, class: Class) -> u64 {
        self.shed[class as usize].load(Ordering::Relaxed)
    }

    /// A place for a call of `class`, waiting at most `max_wait` and at most
    /// `left` (the time before the caller's deadline).
    pub async fn admit(
        self: &Arc<Self>,
        class: Class,
        left: Option<Duration>,
    ) -> Result<GateSlot, Refused> {
        let rx = {
            let mut q = self.queues.lock();
            // Nobody of this class or higher is waiting: no one to pass.
            let ahead = q.by_class[class as usize..].iter().any(|w| !w.is_empty());
            if !ahead {
                if let Some(slot) = self.limit.acquire() {
                    return Ok(self.wrap(slot));
                }
            }
            match self.enqueue(&mut q, class) {
                Ok(entry) => entry,
                Err(why) => {
                    drop(q);
                    self.count_shed(class);
                    return Err(why);
                }
            }
        };
        let (id, rx) = rx;
        // A place may have freed (or the limit grown) since it was full.
        self.dispatch();
        let wait = self.wait_for(left);
        let mut leave = Leave {
            gate: self,
            class,
            id,
            rx: Some(rx),
        };
        let rx = leave.rx.as_mut().expect("the receiver");
        match tokio::time::timeout(wait, rx).await {
            Ok(Ok(slot)) => {
                leave.rx = None;
                Ok(self.wrap(slot))
            }
            // The sender was dropped: evicted by a higher class.
            Ok(Err(_)) => {
                leave.rx = None;
                self.count_shed(class);
                Err(Refused::Evicted)
            }
            Err(_) => {
                // Out of time: leave the queue, but a place handed over in
                // this very instant is still taken.
                let taken = leave.leave();
                match taken {
                    Some(slot) => Ok(self.wrap(slot)),
                    None => {
                        self.count_shed(class);
                        Err(Refused::Timeout)
                    }
                }
            }
        }
    }

    /// The refusal the gateway answers with.
    pub fn rejection(&self, why: Refused) -> Rejection {
        let reason = match why {
            Refused::QueueFull => "the upstream is at its learned limit and the queue is full",
            Refused::Evicted => {
                "the upstream is at its learned limit; higher-priority calls took the queue"
            }
            Refused::Timeout => {
                "the upstream is at its learned limit and no place freed up in time"
            }
        };
        // The gateway's own refusal, naming no policy: the answer names
        // the cluster.
        Rejection::gateway(RejectionKind::Overloaded, 503, reason).with_header(
            http::header::RETRY_AFTER,
            http::HeaderValue::from_static("1"),
        )
    }

    fn wrap(self: &Arc<Self>, slot: Slot) -> GateSlot {
        GateSlot {
            slot: Some(slot),
            gate: self.clone(),
        }
    }

    fn count_shed(&self, class: Class) {
        self.shed[class as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Queues a waiter of `class`, evicting the newest waiter of the lowest
    /// lower class when the queue is full.
    fn enqueue(
        &self,
        q: &mut Queues,
        class: Class,
    ) -> Result<(u64, oneshot::Receiver<Slot>), Refused> {
        if q.len >= self.settings.max_queue {
            let lower = (0..class as usize).find(|c| !q.by_class[*c].is_empty());
            let Some(lowest) = lower else {
                return Err(Refused::QueueFull);
            };
            // Dropping its sender wakes it with a refusal.
            q.by_class[lowest].pop_back();
            q.len -= 1;
        }
        let (tx, rx) = oneshot::channel();
        q.next_id += 1;
        let id = q.next_id;
        q.by_class[class as usize].push_back(Waiter { id, tx });
        q.len += 1;
        Ok((id, rx))
    }

    /// Hands freed places to waiters, highest class first, oldest first.
    fn dispatch(&self) {
        loop {
            let mut q = self.queues.lock();
            let Some(class) = (0..4).rev().find(|c| !q.by_class[*c].is_empty()) else {
                return;
            };
            let Some(slot) = self.limit.acquire() else {
                return;
            };
            // Oldest first while the queue is short; newest first once it
            // is over half full (adaptive LIFO): in a long queue the
            // oldest have spent their wait, and serving them made every
            // admitted call wait nearly the whole of it.
            let long = q.len * 2 > self.settings.max_queue;
            let waiter = if long {
                q.by_class[class].pop_back()
            } else {
                q.by_class[class].pop_front()
            }
            .expect("a waiter");
            q.len -= 1;
            drop(q);
            // A waiter that left in the meantime gives the place back
            // (dropping the slot), and the next one is tried.
            if waiter.tx.send(slot).is_ok() {
                return;
            }
        }
    }
}

/// A waiter's way out of the queue, also when its future is dropped.
struct Leave<'g> {
    gate: &'g Arc<Gate>,
    class: Class,
    id: u64,
    rx: Option<oneshot::Receiver<Slot>>,
}

impl Leave<'_> {
    /// Leaves the queue; returns a place handed over meanwhile, if any.
    fn leave(&mut self) -> Option<Slot> {
        let mut rx = self.rx.take()?;
        {
            let mut q = self.gate.queues.lock();
            let queue = &mut q.by_class[self.class as usize];
            if let Some(i) = queue.iter().position(|w| w.id == self.id) {
                queue.remove(i);
                q.len -= 1;
            }
        }
        rx.try_recv().ok()
    }
}

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        // A place handed to a waiter that is gone goes to the next one.
        if let Some(slot) = self.leave() {
            drop(slot);
            self.gate.dispatch();
        }
    }
}

impl GateSlot {
    /// The client left while the upstream may still be working on the
    /// call: the place stays taken for `d` more (an estimate of the
    /// provider's remaining work), then frees without a sample. Needs a
    /// tokio runtime; the task holds nothing but the place.
    pub fn hold_for(self, d: Duration) {
        if d.is_zero() {
            return;
        }
        tokio::spawn(async move {
            tokio::time::sleep(d).await;
            drop(self);
        });
    }

    /// The call ended: its round trip is a sample, and its place goes on.
    pub fn finish(mut self, sample: Sample) {
        if let Some(slot) = self.slot.take() {
            slot.finish(sample);
        }
        self.gate.dispatch();
    }
}

impl Drop for GateSlot {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            drop(slot);
            self.gate.dispatch();
        }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
