//! Runs every cluster's health probes on time, off the request path.
//!
//! Each tick it walks the live snapshot's clusters and starts the probes
//! that are due, one at a time per endpoint (a probe slower than the
//! interval delays the next, never doubles it). A reload's new snapshot is
//! picked up at the next tick; endpoints it kept keep their state
//! (`config/clusters.rs` carries their checks over).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use breakwater_plugins::health::Change;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::state::GatewayState;
use crate::upstream::health::{probe, Claim, ClusterHealth};

/// How often due probes are looked for: the slack on `interval`.
const TICK: Duration = Duration::from_millis(50);

pub struct Prober {
    pub state: Arc<GatewayState>,
}

#[async_trait]
impl BackgroundService for Prober {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = tick.tick() => self.round(),
            }
        }
    }
}

impl Prober {
    /// Starts the probes that are due.
    fn round(&self) {
        let now = self.state.clock.now_nanos();
        for (name, cluster) in &self.state.snapshot().clusters {
            let Some(health) = &cluster.health else {
                continue;
            };
            for check in &health.endpoints {
                if let Some(claim) = check.claim(now, health.settings.interval) {
                    tokio::spawn(run(self.state.clone(), name.clone(), health.clone(), claim));
                }
            }
        }
    }
}

/// One probe, its result recorded, a change logged.
async fn run(state: Arc<GatewayState>, cluster: String, health: Arc<ClusterHealth>, claim: Claim) {
    let check = claim.check();
    let s = &health.settings;
    let result = probe(s, &health.target, check.addr).await;
    let failed = result.as_ref().err().cloned();
    let now = state.clock.now_nanos();
    match check.health.record(result, now, s.rise, s.fall) {
        Some(Change::Down) => tracing::warn!(
            target: "breakwater::health",
            cluster = %cluster,
            endpoint = %check.addr,
            probe = s.probe.kind(),
            reason = failed.as_deref().unwrap_or(""),
            fall = s.fall,
            "endpoint down: out of rotation"
        ),
        Some(Change::Up) => {
            check.ramp_from(now);
            tracing::info!(
                target: "breakwater::health",
                cluster = %cluster,
                endpoint = %check.addr,
                probe = s.probe.kind(),
                rise = s.rise,
                slow_start_ms = health.slow_start.as_millis() as u64,
                "endpoint up: back in rotation"
            )
        }
        None => {}
    }
}
