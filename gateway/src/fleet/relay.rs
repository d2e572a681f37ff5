//! The relay of fleet events: subscribes to the channel and applies what
//! arrives (hot and cooled keys, blocks), and publishes this instance's own
//! block changes.
//!
//! Pub/sub is fire-and-forget, so nothing depends on it alone: the sync
//! reply carries every shard's hot set each round (a missed `hot` event is
//! applied one interval later), blocks are also kept in a Redis hash that
//! is read back on every (re)subscription, and a missed `cooled` event ends
//! with the key's local `hot_ttl`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use breakwater_plugins::fleet::BlockChange;
use futures::StreamExt;
use parking_lot::Mutex;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use redis::{Script, Value};
use tokio::sync::mpsc;

use super::events::FleetEvent;
use super::link::{bounded, Link};
use super::script::parse_hash;
use super::status::FleetStatus;
use super::Local;
use crate::config::fleet_file::RedisTarget;

/// Stores a block in the fleet's block hash and announces it, atomically.
const BLOCK_SCRIPT: &str = r#"
if ARGV[1] == 'add' then
  redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
else
  redis.call('HDEL', KEYS[1], ARGV[2])
end
redis.call('PUBLISH', ARGV[4], ARGV[3])
return 1
"#;

/// Changes not yet sent wait here (bounded) while Redis is away.
const UNSENT_MAX: usize = 1024;

pub struct FleetEvents {
    pub local: Local,
    pub status: Arc<FleetStatus>,
    outbox: Mutex<Option<mpsc::Receiver<BlockChange>>>,
}

/// A block's field in the fleet's block hash: its key hash, so that two
/// keys whose text was cut alike are two fields (instances that sent no hash
/// used the full text).
fn block_field(key: &str, hash: &Option<String>) -> String {
    hash.clone().unwrap_or_else(|| key.to_string())
}

/// The hash an event names a block by, if it names one (and a valid one).
fn fleet_hash(hex: Option<&str>) -> Option<u64> {
    hex.and_then(parse_hash)
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl FleetEvents {
    /// Wires the block list's outbox to this task.
    pub fn new(local: Local, status: Arc<FleetStatus>) -> Self {
        let (tx, rx) = mpsc::channel(UNSENT_MAX);
        local.blocks.announce_to(tx);
        Self {
            local,
            status,
            outbox: Mutex::new(Some(rx)),
        }
    }

    fn blocks_key(&self) -> String {
        format!("{}:blocks", self.status.config.shard_base(0))
    }

    /// The event for a local change, and the block hash's field for it.
    fn event_for(&self, change: BlockChange) -> FleetEvent {
        let from = self.status.config.instance_id.clone();
        match change {
            BlockChange::Added {
                key,
                hash,
                ttl,
                reason,
                source,
                status,
            } => FleetEvent::Block {
                key,
                hash: Some(format!("{hash:016x}")),
                reason,
                source,
                status,
                expires_at_ms: unix_ms() + ttl.as_millis() as u64,
                from,
            },
            BlockChange::Removed { key, hash } => FleetEvent::Unblock {
                key,
                hash: Some(format!("{hash:016x}")),
                from,
            },
        }
    }

    /// Applies one event from the channel (or the block hash).
    pub fn apply(&self, event: FleetEvent) {
        let me = self.status.config.instance_id.as_str();
        let now = self.local.clock.now_nanos();
        let metrics = &self.status.metrics.events;
        match event {
            FleetEvent::Hot {
                rule,
                hash,
                key,
                count,
                ..
            } => {
                metrics.with_label_values(&["hot", "in"]).inc();
                self.hot_rule(&rule, &hash, |g, h| g.fleet_hot(h, &key, count, true, now));
            }
            FleetEvent::Cooled {
                rule, hash, key, ..
            } => {
                metrics.with_label_values(&["cooled", "in"]).inc();
                self.hot_rule(&rule, &hash, |g, h| g.fleet_hot(h, &key, 0, false, now));
            }
            FleetEvent::Block { from, .. } | FleetEvent::Unblock { from, .. } if from == me => {}
            FleetEvent::Block {
                key,
                hash,
                reason,
                source,
                status,
                expires_at_ms,
                ..
            } => {
                let left = expires_at_ms.saturating_sub(unix_ms());
                if left == 0 {
                    return;
                }
                metrics.with_label_values(&["block", "in"]).inc();
                // The list's floor is 1 s; a block with less left is kept that long.
                let ttl = Duration::from_millis(left).max(Duration::from_secs(1));
                if let Err(e) = self.local.blocks.apply_fleet_block(
                    &key,
                    fleet_hash(hash.as_deref()),
                    ttl,
                    reason,
                    &source,
                    status,
                ) {
                    tracing::warn!(target: "breakwater::fleet", %key, error = %e, "fleet block not applied");
                }
            }
            FleetEvent::Unblock { key, hash, .. } => {
                metrics.with_label_values(&["unblock", "in"]).inc();
                if let Err(e) = self
                    .local
                    .blocks
                    .apply_fleet_unblock(&key, fleet_hash(hash.as_deref()))
                {
                    tracing::warn!(target: "breakwater::fleet", %key, error = %e, "fleet unblock not applied");
                }
            }
        }
    }

    fn hot_rule(
        &self,
        rule: &str,
        hash: &str,
        f: impl FnOnce(&dyn breakwater_plugins::fleet::GlobalSync, u64),
    ) {
        let Some(hash) = parse_hash(hash) else {
            return;
        };
        let snapshot = self.local.snapshot();
        if let Some(g) = snapshot.policies.get(rule).and_then(|p| p.policy.global()) {
            f(g, hash);
        }
    }

    /// Reads the fleet's live blocks (on every subscription: what was
    /// announced while this instance was away is applied now).
    async fn load_blocks(&self, link: &mut Link) -> Result<usize, super::link::LinkError> {
        let mut handle = link.handle().await?;
        let mut cmd = redis::cmd("HGETALL");
        cmd.arg(self.blocks_key());
        let value: Value = link.within(cmd.query_async(&mut handle)).await?;
        self.status.metrics.commands.inc();
        let pairs: Vec<(&Value, &Value)> = match &value {
            Value::Array(items) => items
                .chunks(2)
                .filter_map(|p| Some((p.first()?, p.get(1)?)))
                .collect(),
            Value::Map(map) => map.iter().map(|(k, v)| (k, v)).collect(),
            _ => Vec::new(),
        };
        let mut expired = Vec::new();
        let mut applied = 0;
        for pair in pairs {
            let (Value::BulkString(field), Value::BulkString(json)) = pair else {
                continue;
            };
            match serde_json::from_slice::<FleetEvent>(json) {
                Ok(FleetEvent::Block { expires_at_ms, .. }) if expires_at_ms <= unix_ms() => {
                    expired.push(field.clone());
                }
                Ok(mut event @ FleetEvent::Block { .. }) => {
                    // Blocks this instance placed before a restart apply too.
                    if let FleetEvent::Block { from, .. } = &mut event {
                        from.clear();
                    }
                    self.apply(event);
                    applied += 1;
                }
                _ => expired.push(field.clone()),
            }
        }
        if !expired.is_empty() {
            let mut del = redis::cmd("HDEL");
            del.arg(self.blocks_key()).arg(expired);
            let _: Result<Value, _> = link.within(del.query_async(&mut handle)).await;
            self.status.metrics.commands.inc();
        }
        Ok(applied)
    }

    /// Sends queued local block changes; stops at the first failure (they
    /// stay queued for the next connection).
    async fn flush(&self, link: &mut Link, outbox: &mut Outbox) {
        let unsent = &mut outbox.unsent;
        let script = Script::new(BLOCK_SCRIPT);
        while let Some(event) = unsent.front() {
            let (op, field) = match event {
                FleetEvent::Block { key, hash, .. } => ("add", block_field(key, hash)),
                FleetEvent::Unblock { key, hash, .. } => ("del", block_field(key, hash)),
                _ => {
                    unsent.pop_front();
                    continue;
                }
            };
            let json = serde_json::to_string(event).unwrap_or_default();
            let mut handle = match link.handle().await {
                Ok(h) => h,
                Err(_) => return,
            };
            let mut inv = script.prepare_invoke();
            inv.key(self.blocks_key())
                .arg(op)
                .arg(&field)
                .arg(&json)
                .arg(self.status.config.channel());
            let sent: Result<Value, _> =
                bounded(link.timeout(), inv.invoke_async(&mut handle)).await;
            self.status.metrics.commands.inc();
            match sent {
                Ok(_) => {
                    let kind = if op == "add" { "block" } else { "unblock" };
                    self.status
                        .metrics
                        .events
                        .with_label_values(&[kind, "out"])
                        .inc();
                    unsent.pop_front();
                }
                Err(e) => {
                    tracing::debug!(target: "breakwater::fleet", error = %e, "block change not sent yet");
                    link.reset();
                    return;
                }
            }
        }
    }

    /// The URL the subscription connects to. Pub/sub reaches every node of
    /// a Redis Cluster from any one of them, so each attempt takes the next
    /// seed node: a dead node is not retried forever.
    fn subscribe_url(&self, attempt: usize) -> String {
        match &self.status.config.target {
            RedisTarget::Standalone(url) => url.clone(),
            RedisTarget::Cluster(nodes) => nodes[attempt % nodes.len()].clone(),
        }
    }

    /// One subscription's life: subscribe, catch up on blocks, then relay
    /// events both ways until the connection fails or shutdown.
    async fn session(
        &self,
        link: &mut Link,
        outbox: &mut Outbox,
        shutdown: &mut ShutdownWatch,
        attempt: usize,
    ) -> Result<(), String> {
        let timeout = link.timeout();
        let client = redis::Client::open(self.subscribe_url(attempt)).map_err(|e| e.to_string())?;
        let pubsub = bounded(timeout, client.get_async_pubsub())
            .await
            .map_err(|e| e.to_string())?;
        let (mut sink, mut stream) = pubsub.split();
        bounded(timeout, sink.subscribe(self.status.config.channel()))
            .await
            .map_err(|e| e.to_string())?;
        self.load_blocks(link).await.map_err(|e| e.to_string())?;
        outbox.subscribed = true;
        self.flush(link, outbox).await;
        tracing::info!(target: "breakwater::fleet", channel = %self.status.config.channel(), "subscribed to fleet events");
        let mut ping = tokio::time::interval(Duration::from_secs(1));
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.changed() => return Ok(()),
                msg = stream.next() => {
                    let Some(msg) = msg else {
                        return Err("subscription closed".into());
                    };
                    match serde_json::from_slice::<FleetEvent>(msg.get_payload_bytes()) {
                        Ok(event) => self.apply(event),
                        Err(e) => tracing::debug!(target: "breakwater::fleet", error = %e, "unreadable fleet event ignored"),
                    }
                }
                change = outbox.rx.recv() => {
                    let Some(change) = change else { return Ok(()) };
                    outbox.queue(self.event_for(change));
                    self.flush(link, outbox).await;
                }
                _ = ping.tick() => {
                    // A silent, half-open connection would never end the stream.
                    let pong: Result<Value, _> = bounded(timeout, sink.ping()).await;
                    if let Err(e) = pong {
                        return Err(format!("subscription ping: {e}"));
                    }
                    if !outbox.unsent.is_empty() {
                        self.flush(link, outbox).await;
                    }
                }
            }
        }
    }
}

/// Local block changes on their way to the fleet.
struct Outbox {
    rx: mpsc::Receiver<BlockChange>,
    /// Waiting for a connection (bounded: the oldest go first).
    unsent: VecDeque<FleetEvent>,
    /// The current session got as far as subscribing.
    subscribed: bool,
}

impl Outbox {
    fn queue(&mut self, event: FleetEvent) {
        if self.unsent.len() == UNSENT_MAX {
            self.unsent.pop_front();
        }
        self.unsent.push_back(event);
    }
}

#[async_trait]
impl BackgroundService for FleetEvents {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let Some(rx) = self.outbox.lock().take() else {
            return;
        };
        let mut outbox = Outbox {
            rx,
            unsent: VecDeque::new(),
            subscribed: false,
        };
        let mut link = Link::new(&self.status.config);
        let mut backoff = Duration::from_millis(100);
        for attempt in 0.. {
            outbox.subscribed = false;
            match self
                .session(&mut link, &mut outbox, &mut shutdown, attempt)
                .await
            {
                Ok(()) => return,
                Err(e) => {
                    tracing::debug!(target: "breakwater::fleet", error = %e, "fleet events: reconnecting");
                    link.reset();
                }
            }
            // A session that worked for a while starts the backoff over.
            if outbox.subscribed {
                backoff = Duration::from_millis(100);
            }
            // Local changes keep queueing while Redis is away.
            let wait = tokio::time::sleep(backoff);
            tokio::pin!(wait);
            loop {
                tokio::select! {
                    _ = shutdown.changed() => return,
                    _ = &mut wait => break,
                    change = outbox.rx.recv() => match change {
                        Some(change) => outbox.queue(self.event_for(change)),
                        None => return,
                    },
                }
            }
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }
}
