//! Applying a new config to a running gateway.
//!
//! Every trigger (file change, SIGHUP, `POST /reload`) ends up in
//! [`Reloader::reload`]. Reloads are serialized so two triggers cannot race
//! and store snapshots out of order. The next snapshot is built completely
//! before one atomic store; if anything fails, nothing is stored, the old
//! snapshot keeps serving, and the error is logged, counted and kept for
//! `/config`.

use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use serde::Serialize;

use crate::config::snapshot::{text_hash, Snapshot};
use crate::state::{build_snapshot, read_config, GatewayState};

/// The result of one reload attempt.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum ReloadOutcome {
    /// A new snapshot is live.
    Ok {
        generation: u64,
        hash: String,
        /// Settings that changed but only apply after a restart or `-u` upgrade.
        pending_restart: Vec<String>,
    },
    /// The file is byte-for-byte what is already live.
    Unchanged { generation: u64, hash: String },
    /// The file was rejected; the previous snapshot keeps serving.
    Error { error: String },
}

impl ReloadOutcome {
    pub fn label(&self) -> &'static str {
        match self {
            Self::Ok { .. } => "ok",
            Self::Unchanged { .. } => "unchanged",
            Self::Error { .. } => "error",
        }
    }
}

/// The last reload attempt, for `/config`.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadRecord {
    pub at: SystemTime,
    pub trigger: &'static str,
    #[serde(flatten)]
    pub outcome: ReloadOutcome,
}

#[derive(Default)]
pub struct Reloader {
    serialize: Mutex<()>,
    last: ArcSwap<Option<ReloadRecord>>,
    last_error: ArcSwap<Option<ReloadRecord>>,
}

impl Reloader {
    /// Re-reads the config file and, if it is valid, makes it live.
    /// Blocking: it reads a file and may resolve endpoint host names.
    pub fn reload(&self, state: &GatewayState, trigger: &'static str) -> ReloadOutcome {
        self.apply(state, trigger, |current| self.try_reload(state, current))
    }

    /// Compiles the live config again as it is, so that its endpoint names
    /// are resolved again (a DNS refresh saw an address change). What the
    /// live snapshot holds is carried over as in any reload: endpoints that
    /// keep their address keep their state. Blocking: it resolves names.
    pub fn re_resolve(&self, state: &GatewayState) -> ReloadOutcome {
        self.apply(state, "dns", |current| {
            let mut next =
                crate::config::compile(current.source.clone(), "", state.compile_context(current))
                    .map_err(|e| e.to_string())?;
            next.hash = current.hash.clone();
            Ok(Some(next))
        })
    }

    /// Makes the snapshot `next` builds from the live one live, one change
    /// at a time; logs, counts and records the outcome.
    fn apply(
        &self,
        state: &GatewayState,
        trigger: &'static str,
        next: impl FnOnce(&Snapshot) -> Result<Option<Snapshot>, String>,
    ) -> ReloadOutcome {
        let _one_at_a_time = self.serialize.lock();
        let current = state.snapshot();
        let outcome = match next(&current) {
            Ok(Some(next)) => {
                let pending_restart = pending_restart(&current, &next);
                let outcome = ReloadOutcome::Ok {
                    generation: next.generation,
                    hash: next.hash.clone(),
                    pending_restart,
                };
                state.metrics.config_generation.set(next.generation as i64);
                state.blocks.set_ipv6_prefix(next.keys.ipv6_prefix);
                state.store.store(Arc::new(next));
                outcome
            }
            Ok(None) => ReloadOutcome::Unchanged {
                generation: current.generation,
                hash: current.hash.clone(),
            },
            Err(error) => ReloadOutcome::Error { error },
        };
        state
            .metrics
            .reloads
            .with_label_values(&[outcome.label()])
            .inc();
        match &outcome {
            ReloadOutcome::Ok {
                generation,
                hash,
                pending_restart,
            } => {
                tracing::info!(
                    trigger,
                    generation,
                    hash,
                    ?pending_restart,
                    "config reloaded"
                );
                if let Some(warning) =
                    crate::config::admin::insecure_warning(&state.snapshot().source.admin)
                {
                    tracing::warn!(target: "breakwater::admin", "{warning}");
                }
                for note in state.snapshot().source.deprecations() {
                    tracing::warn!(target: "breakwater::config", "deprecated: {note}");
                }
                if !pending_restart.is_empty() {
                    tracing::warn!(
                        ?pending_restart,
                        "some changed settings apply only after a restart or a graceful upgrade (-u)"
                    );
                }
            }
            ReloadOutcome::Unchanged { .. } => {
                tracing::debug!(trigger, "config unchanged, nothing to reload")
            }
            ReloadOutcome::Error { error } => {
                tracing::error!(trigger, %error, "config reload rejected; the previous config keeps serving")
            }
        }
        let record = ReloadRecord {
            at: SystemTime::now(),
            trigger,
            outcome: outcome.clone(),
        };
        if matches!(outcome, ReloadOutcome::Error { .. }) {
            self.last_error.store(Arc::new(Some(record.clone())));
        }
        self.last.store(Arc::new(Some(record)));
        outcome
    }

    /// `Ok(None)` when the file is unchanged.
    fn try_reload(
        &self,
        state: &GatewayState,
        current: &Snapshot,
    ) -> Result<Option<Snapshot>, String> {
        let text = read_config(&state.config_path).map_err(|e| e.to_string())?;
        if text_hash(&text) == current.hash {
            return Ok(None);
        }
        let next =
            build_snapshot(&text, state.compile_context(current)).map_err(|e| e.to_string())?;
        if let Some(bound) = state.admin_address {
            crate::config::admin::check_live_address(bound, &next.source.admin, &next.admin)
                .map_err(|e| e.to_string())?;
        }
        Ok(Some(next))
    }

    pub fn last(&self) -> Option<ReloadRecord> {
        self.last.load().as_ref().clone()
    }

    pub fn last_error(&self) -> Option<ReloadRecord> {
        self.last_error.load().as_ref().clone()
    }
}

/// Settings that a running process cannot change in place.
fn pending_restart(current: &Snapshot, next: &Snapshot) -> Vec<String> {
    let (a, b) = (&current.source, &next.source);
    let mut out = Vec::new();
    if a.listeners != b.listeners {
        out.push("listeners".to_string());
    }
    if a.admin.address != b.admin.address {
        out.push("admin.address".to_string());
    }
    if a.server != b.server {
        out.push("server".to_string());
    }
    // access_log is read per request from the snapshot; format and level
    // belong to the installed subscriber.
    if a.logging.format != b.logging.format || a.logging.level != b.logging.level {
        out.push("logging".to_string());
    }
    out
}
