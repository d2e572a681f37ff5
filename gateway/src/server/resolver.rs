//! Follows the endpoints given by name: resolves each cluster's names again
//! every `dns_refresh` and, when one resolves to a new address, compiles the
//! live config again so the cluster sends to the new one
//! ([`crate::state::Reloader::re_resolve`]).
//!
//! Rebuilding the snapshot, rather than patching a cluster in place, keeps
//! the rule that a snapshot never changes: the new one carries over what the
//! old one knew, by address (health, requests in flight, breakers of the
//! endpoints that stayed), and an endpoint at a new address starts as an
//! endpoint a reload added (probed at once, ramping with `slow_start`).
//!
//! Names go through the system resolver (getaddrinfo, on Tokio's blocking
//! pool, so `/etc/hosts`, `nsswitch.conf` and search domains apply), first
//! address only, as at compile time. A name that fails to resolve keeps its
//! address: a DNS outage does not empty a cluster. Limits: the refresh does
//! not follow DNS TTLs, and a name with several addresses is one endpoint
//! (its first), not several.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::state::GatewayState;
use crate::upstream::Cluster;

/// How often due refreshes are looked for: the slack on `dns_refresh`.
const TICK: Duration = Duration::from_millis(100);

pub struct Resolver {
    pub state: Arc<GatewayState>,
}

#[async_trait]
impl BackgroundService for Resolver {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut last: HashMap<String, u64> = HashMap::new();
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = tick.tick() => self.round(&mut last).await,
            }
        }
    }
}

impl Resolver {
    /// Resolves the clusters that are due (`last`: when each was, on the
    /// gateway's clock); recompiles once if any moved.
    async fn round(&self, last: &mut HashMap<String, u64>) {
        let snapshot = self.state.snapshot();
        let now = self.state.clock.now_nanos();
        last.retain(|name, _| snapshot.clusters.contains_key(name));
        let mut moved = false;
        for (name, cluster) in &snapshot.clusters {
            if cluster.dns_refresh.is_zero() || cluster.named().next().is_none() {
                continue;
            }
            let due = last
                .get(name)
                .is_none_or(|at| now.saturating_sub(*at) >= cluster.dns_refresh.as_nanos() as u64);
            if !due {
                continue;
            }
            last.insert(name.clone(), now);
            moved |= self.refresh(cluster).await;
        }
        if moved {
            let state = self.state.clone();
            let outcome =
                tokio::task::spawn_blocking(move || state.reloader.re_resolve(&state)).await;
            if let Err(e) = outcome {
                tracing::error!(target: "breakwater::dns", error = %e, "re-resolving failed");
            }
        }
    }

    /// Resolves one cluster's names; whether any has a new address.
    async fn refresh(&self, cluster: &Cluster) -> bool {
        let metric = |result: &str| {
            self.state
                .metrics
                .dns
                .with_label_values(&[&cluster.name, result])
                .inc()
        };
        let mut moved = false;
        for (i, name) in cluster.named() {
            let old = cluster.addrs[i];
            match first_address(name).await {
                Ok(new) if new != old => {
                    tracing::info!(
                        target: "breakwater::dns",
                        cluster = %cluster.name,
                        endpoint = name,
                        old = %old,
                        new = %new,
                        "endpoint address changed"
                    );
                    metric("changed");
                    moved = true;
                }
                Ok(_) => metric("same"),
                Err(e) => {
                    tracing::warn!(
                        target: "breakwater::dns",
                        cluster = %cluster.name,
                        endpoint = name,
                        address = %old,
                        error = %e,
                        "endpoint name did not resolve; keeping its address"
                    );
                    metric("failed");
                }
            }
        }
        moved
    }
}

/// The first address `host:port` resolves to.
async fn first_address(endpoint: &str) -> std::io::Result<SocketAddr> {
    tokio::net::lookup_host(endpoint)
        .await?
        .next()
        .ok_or_else(|| std::io::Error::other(format!("{endpoint} resolves to nothing")))
}
