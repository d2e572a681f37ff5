//! Periodic chores off the request path.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::state::pressure::{self, Pressure};
use crate::state::GatewayState;

/// How often policies are ticked: hot keys cool at most this late.
pub const TICK: Duration = Duration::from_millis(100);

/// Expires blocks on time (logging each), even for keys that never come
/// back, ticks every policy of the live snapshot (hot keys cool here), and
/// looks for memory pressure on the bounded stores (`state/pressure.rs`).
pub struct Housekeeping {
    pub state: Arc<GatewayState>,
}

#[async_trait]
impl BackgroundService for Housekeeping {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tick = tokio::time::interval(TICK);
        let mut ticks: u64 = 0;
        let mut pressure = Pressure::default();
        let look_every = (pressure::EVERY.as_millis() / TICK.as_millis()) as u64;
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = tick.tick() => {
                    let now = self.state.clock.now_nanos();
                    for compiled in self.state.snapshot().policies.values() {
                        compiled.policy.tick(now);
                    }
                    ticks += 1;
                    if ticks.is_multiple_of(10) {
                        self.state.blocks.purge_expired();
                    }
                    if ticks.is_multiple_of(look_every) {
                        pressure.look(&self.state.snapshot());
                    }
                }
            }
        }
    }
}
