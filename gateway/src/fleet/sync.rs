//! The sync task: every `sync_interval`, one script call per key shard
//! flushes every global policy's deltas and reads the fleet totals back.
//!
//! Shards are hash-tag groups (`{bw:0}`, `{bw:1}`, ...): a key goes to shard
//! `hash % shards`, so in a Redis Cluster each call touches one slot. The
//! calls of a round run concurrently on one multiplexed connection. Shard 0
//! also carries the heartbeat, so a round is at least one command and at
//! most `shards` commands, whatever the request rate.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use breakwater_plugins::fleet::{GlobalSync, Section, SectionKind, SyncItem};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use redis::Value;

use super::link::{bounded, Link, LinkError};
use super::script::{invocation, parse_reply, CallHeader, CallReply};
use super::status::FleetStatus;
use super::Local;

/// Peers that missed this many intervals of heartbeats are no longer listed
/// (at least 3 s, so a slow instance is not dropped for one late round).
const PEER_TTL_INTERVALS: u32 = 30;

pub struct FleetSync {
    pub local: Local,
    pub status: Arc<FleetStatus>,
}

#[async_trait]
impl BackgroundService for FleetSync {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut link = Link::new(&self.status.config);
        let mut tick = tokio::time::interval(self.status.config.sync_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = tick.tick() => self.round(&mut link).await,
            }
        }
    }
}

/// One shard's part of a round: `(policy index, sub-section)`.
type ShardCalls = BTreeMap<u32, Vec<(usize, Section)>>;

impl FleetSync {
    /// One sync round. Never panics and never blocks requests: policies
    /// hand over their deltas through atomics and get totals back the same way.
    pub async fn round(&self, link: &mut Link) {
        let snapshot = self.local.snapshot();
        let cfg = &self.status.config;
        let now = self.local.clock.now_nanos();
        let globals: Vec<&dyn GlobalSync> = snapshot
            .policies
            .values()
            .filter_map(|p| p.policy.global())
            .collect();
        let sections: Vec<Section> = globals
            .iter()
            .map(|g| g.collect(now, cfg.max_keys_per_sync))
            .collect();
        let calls = split_by_shard(sections, cfg.shards);
        let started = crate::time::now();
        let handle = match link.handle().await {
            Ok(h) => h,
            Err(e) => {
                abandon(&globals, calls.values().flatten());
                self.status.failed(e.to_string());
                return;
            }
        };
        let peer_ttl_ms =
            (cfg.sync_interval.as_millis() as u64 * u64::from(PEER_TTL_INTERVALS)).max(3_000);
        let channel = cfg.channel();
        let timeout = link.timeout();
        let results = futures::future::join_all(calls.iter().map(|(shard, parts)| {
            let mut handle = handle.clone();
            let base = cfg.shard_base(*shard);
            let sections: Vec<Section> = parts.iter().map(|(_, s)| s.clone()).collect();
            let channel = channel.as_str();
            async move {
                let head = CallHeader {
                    base: &base,
                    instance_id: &cfg.instance_id,
                    heartbeat: *shard == 0,
                    peer_ttl_ms,
                    channel,
                };
                let inv = invocation(&head, &sections);
                let value: Value = bounded(timeout, inv.invoke_async(&mut handle)).await?;
                parse_reply(&value, sections.len())
            }
        }))
        .await;
        self.status.metrics.commands.inc_by(calls.len() as u64);
        let applied_at = self.local.clock.now_nanos();
        let mut error: Option<LinkError> = None;
        let mut heartbeat: Option<CallReply> = None;
        for ((shard, parts), result) in calls.iter().zip(results) {
            match result {
                Ok(mut reply) => {
                    for ((policy, section), answer) in parts.iter().zip(&reply.sections) {
                        globals[*policy].apply(section, answer, applied_at);
                    }
                    if *shard == 0 {
                        reply.sections.clear();
                        heartbeat = Some(reply);
                    }
                }
                Err(e) => {
                    abandon(&globals, parts.iter());
                    error = Some(e);
                }
            }
        }
        match error {
            Some(e) => {
                link.reset();
                self.status.failed(e.to_string());
            }
            None => {
                let (peers, now_ms) = heartbeat.map_or((None, 0), |h| (Some(h.peers), h.now_ms));
                self.status.succeeded(started.elapsed(), peers, now_ms);
            }
        }
    }
}

fn abandon<'a>(globals: &[&dyn GlobalSync], parts: impl Iterator<Item = &'a (usize, Section)>) {
    for (policy, section) in parts {
        globals[*policy].abandon(section);
    }
}

/// Splits each policy's section into per-shard sections. Hot-key sections go
/// to every shard even when empty (each shard's hot set is swept and read);
/// counter sections only where they have keys. Shard 0 is always called.
fn split_by_shard(sections: Vec<Section>, shards: u32) -> ShardCalls {
    let shards = shards.max(1);
    let mut calls: ShardCalls = BTreeMap::new();
    calls.entry(0).or_default();
    for (policy, mut section) in sections.into_iter().enumerate() {
        let hot = matches!(section.kind, SectionKind::Hot { .. });
        let mut split: Vec<Vec<SyncItem>> = vec![Vec::new(); shards as usize];
        for item in section.items.drain(..) {
            split[(item.hash % u64::from(shards)) as usize].push(item);
        }
        for (shard, items) in split.into_iter().enumerate() {
            if items.is_empty() && !hot {
                continue;
            }
            calls.entry(shard as u32).or_default().push((
                policy,
                Section {
                    items,
                    ..section.clone()
                },
            ));
        }
    }
    calls
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(kind: SectionKind, hashes: &[u64]) -> Section {
        Section {
            policy: "p".into(),
            kind,
            window_ms: 1000,
            buckets: 10,
            items: hashes
                .iter()
                .map(|&hash| SyncItem {
                    hash,
                    delta: 1,
                    name: String::new(),
                    lease: None,
                })
                .collect(),
        }
    }

    #[test]
    fn keys_go_to_their_shard_and_hot_sections_to_every_shard() {
        let hot = SectionKind::Hot {
            threshold: 10,
            hold_at: 8,
            hot_ttl_ms: 1000,
        };
        let calls = split_by_shard(
            vec![
                section(SectionKind::Counter { instances: 3 }, &[4, 5, 9]),
                section(hot, &[2]),
            ],
            4,
        );
        assert_eq!(calls.keys().copied().collect::<Vec<_>>(), vec![0, 1, 2, 3]);
        let counter_items = |shard: u32| -> Vec<u64> {
            calls[&shard]
                .iter()
                .filter(|(p, _)| *p == 0)
                .flat_map(|(_, s)| s.items.iter().map(|i| i.hash))
                .collect()
        };
        assert_eq!(counter_items(0), vec![4]);
        assert_eq!(counter_items(1), vec![5, 9]);
        assert!(counter_items(3).is_empty());
        for shard in 0..4 {
            assert!(
                calls[&shard].iter().any(|(p, _)| *p == 1),
                "hot section on {shard}"
            );
        }
        // Nothing global: shard 0 alone, for the heartbeat.
        let idle = split_by_shard(vec![], 16);
        assert_eq!(idle.len(), 1);
        assert!(idle[&0].is_empty());
    }
}
