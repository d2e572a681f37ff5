//! The hot-key event feed: every rule's hot and cooled events, for the
//! admin's Server-Sent Events stream, its listing of recent events, and
//! the logs.
//!
//! One hub per process, outliving config snapshots, so a subscriber keeps its
//! stream across reloads. Publishing never blocks: subscribers that fall more
//! than [`CHANNEL`] events behind lose the oldest ones and are told how many.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::broadcast;

use super::detector::{HotChange, HotEvent};

/// Events a slow subscriber may fall behind by before it loses some.
pub const CHANNEL: usize = 1024;
/// Recent events kept for `GET /hotkeys` and new subscribers.
pub const RECENT: usize = 256;

/// One event, as subscribers see it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RuleEvent {
    /// `hot` or `cooled`.
    pub event: &'static str,
    /// The rule (policy name) that watched the key.
    pub rule: String,
    pub key: String,
    /// The key's count in the rule's window when the event fired.
    pub count: u64,
    /// What the rule does while the key is hot (`observe`, `limit`, ...).
    pub actions: Vec<&'static str>,
    /// Wall-clock times, Unix milliseconds.
    pub since_unix_ms: u64,
    pub at_unix_ms: u64,
}

pub struct HotEventHub {
    tx: broadcast::Sender<Arc<RuleEvent>>,
    recent: Mutex<VecDeque<Arc<RuleEvent>>>,
}

impl Default for HotEventHub {
    fn default() -> Self {
        Self {
            tx: broadcast::channel(CHANNEL).0,
            recent: Mutex::new(VecDeque::with_capacity(RECENT)),
        }
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl HotEventHub {
    /// Publishes a detector event of `rule`, logs it, and returns what
    /// subscribers got.
    pub fn publish(&self, rule: &str, actions: &[&'static str], e: &HotEvent) -> Arc<RuleEvent> {
        let at = unix_ms();
        let ago_ms = e.at_nanos.saturating_sub(e.since_nanos) / 1_000_000;
        let event = Arc::new(RuleEvent {
            event: match e.change {
                HotChange::Hot => "hot",
                HotChange::Cooled => "cooled",
            },
            rule: rule.to_string(),
            key: e.key.clone(),
            count: e.count,
            actions: actions.to_vec(),
            since_unix_ms: at.saturating_sub(ago_ms),
            at_unix_ms: at,
        });
        tracing::info!(target: "breakwater::hotkeys", rule, key = %e.key, event = event.event,
            count = e.count, actions = ?actions, "hot key {}", event.event);
        {
            let mut recent = self.recent.lock();
            if recent.len() == RECENT {
                recent.pop_front();
            }
            recent.push_back(event.clone());
        }
        // No subscriber is not an error.
        let _ = self.tx.send(event.clone());
        event
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<RuleEvent>> {
        self.tx.subscribe()
    }

    /// The last [`RECENT`] events, oldest first.
    pub fn recent(&self) -> Vec<Arc<RuleEvent>> {
        self.recent.lock().iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(change: HotChange, key: &str) -> HotEvent {
        HotEvent {
            change,
            hash: 1,
            key: key.into(),
            count: 10,
            since_nanos: 1_000_000_000,
            at_nanos: 3_000_000_000,
        }
    }

    #[test]
    fn subscribers_and_the_recent_list_see_every_event() {
        let hub = HotEventHub::default();
        let mut rx = hub.subscribe();
        hub.publish("goods.hotkey", &["observe"], &event(HotChange::Hot, "123"));
        hub.publish(
            "goods.hotkey",
            &["observe"],
            &event(HotChange::Cooled, "123"),
        );
        let first = rx.try_recv().unwrap();
        assert_eq!((first.event, first.key.as_str()), ("hot", "123"));
        assert_eq!(first.at_unix_ms - first.since_unix_ms, 2000);
        assert_eq!(rx.try_recv().unwrap().event, "cooled");
        assert_eq!(hub.recent().len(), 2);
    }

    #[test]
    fn the_recent_list_is_bounded() {
        let hub = HotEventHub::default();
        for i in 0..RECENT + 10 {
            hub.publish("r", &[], &event(HotChange::Hot, &i.to_string()));
        }
        let recent = hub.recent();
        assert_eq!(recent.len(), RECENT);
        assert_eq!(recent[0].key, "10");
    }
}
