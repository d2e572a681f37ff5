//! The one context a compilation runs in.

use std::collections::BTreeMap;
use std::sync::Arc;

use breakwater_plugins::block_list::BlockList;
use breakwater_plugins::fleet::Fleet;
use breakwater_plugins::hotkey::HotEventHub;
use breakwater_plugins::{Clock, PolicyEnv};

use super::registry::{Registries, TypedPolicy};
use crate::config::snapshot::{CompiledPolicy, Snapshot};
use crate::metrics::Metrics;
use crate::upstream::Cluster;

/// Everything a compilation reads besides the file, and what it fills.
///
/// It reads what outlives snapshots (the metrics registry, the clock, the
/// block list, the hot-key event feed, the fleet link) and the live snapshot
/// whose unchanged policies it carries over. It fills the compiled policies
/// by name and the typed registries, which become the new snapshot's.
/// Policies see a borrowed [`PolicyEnv`] made from it ([`Self::policy_env`]):
/// the plugins know nothing of the gateway's types.
pub struct CompileContext<'a> {
    pub metrics: &'a Metrics,
    pub clock: Arc<dyn Clock>,
    /// The process-wide block list that `abuse` policies feed.
    pub blocks: Arc<BlockList>,
    /// The process-wide hot-key event feed that `hotkey` rules publish to.
    pub hot_events: Arc<HotEventHub>,
    /// Fleet mode's fleet, set up at startup from the `fleet` section.
    pub fleet: Option<Arc<Fleet>>,
    /// The live snapshot, whose unchanged policies are carried over.
    previous: Option<&'a Snapshot>,
    /// Looks up environment variables (injectable for tests).
    env: &'a dyn Fn(&str) -> Option<String>,
    /// Filled: every policy compiled so far, by name.
    policies: BTreeMap<String, CompiledPolicy>,
    /// Filled: the same policies, typed, by what their readers need.
    registries: Registries,
}

/// The process environment, for `*_env` settings.
fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

impl<'a> CompileContext<'a> {
    /// A context for a first compile (nothing to carry over), reading the
    /// process environment.
    pub fn new(
        metrics: &'a Metrics,
        clock: Arc<dyn Clock>,
        blocks: Arc<BlockList>,
        hot_events: Arc<HotEventHub>,
        fleet: Option<Arc<Fleet>>,
    ) -> Self {
        Self {
            metrics,
            clock,
            blocks,
            hot_events,
            fleet,
            previous: None,
            env: &process_env,
            policies: BTreeMap::new(),
            registries: Registries::default(),
        }
    }

    /// Carries unchanged policies over from `previous`, the live snapshot.
    pub fn after(mut self, previous: Option<&'a Snapshot>) -> Self {
        self.previous = previous;
        self
    }

    /// Reads environment variables from `env` instead of the process's.
    pub fn with_env(mut self, env: &'a dyn Fn(&str) -> Option<String>) -> Self {
        self.env = env;
        self
    }

    pub fn previous(&self) -> Option<&'a Snapshot> {
        self.previous
    }

    pub fn env(&self) -> &'a dyn Fn(&str) -> Option<String> {
        self.env
    }

    /// The policies' view of this context, for a route to `cluster`.
    pub fn policy_env<'b>(
        &'b self,
        custom_keys: &'b [String],
        cluster: &'b Cluster,
    ) -> PolicyEnv<'b> {
        PolicyEnv {
            custom_keys,
            clock: self.clock.clone(),
            blocks: self.blocks.clone(),
            hot_events: self.hot_events.clone(),
            fleet: self.fleet.clone(),
            cluster: &cluster.name,
            cluster_endpoints: &cluster.addrs,
        }
    }

    /// The policy compiled earlier in this file under `name`, with its
    /// fingerprint.
    pub fn compiled(&self, name: &str) -> Option<(&str, &TypedPolicy)> {
        self.policies
            .get(name)
            .map(|c| (c.fingerprint.as_str(), &c.typed))
    }

    /// The live snapshot's policy `name`, if its config is unchanged: it is
    /// reused with its state (windows, counters, breaker states).
    pub fn carried(&self, name: &str, fingerprint: &str) -> Option<TypedPolicy> {
        self.previous?
            .policies
            .get(name)
            .filter(|prev| prev.fingerprint == fingerprint)
            .map(|prev| prev.typed.clone())
    }

    /// The live snapshot's cluster `name`, whose state a reload may keep.
    pub fn previous_cluster(&self, name: &str) -> Option<&Arc<Cluster>> {
        self.previous?.clusters.get(name)
    }

    /// Keeps a newly compiled (or carried) policy and files it in the
    /// registries.
    pub fn add(&mut self, name: String, fingerprint: String, policy: TypedPolicy) {
        self.registries.register(&name, &policy);
        self.policies
            .insert(name, CompiledPolicy::new(fingerprint, policy));
    }

    /// The generation of the snapshot being compiled.
    pub fn generation(&self) -> u64 {
        self.previous.map_or(1, |p| p.generation + 1)
    }

    /// What was filled: the policies by name and their registries.
    pub fn into_compiled(self) -> (BTreeMap<String, CompiledPolicy>, Registries) {
        (self.policies, self.registries)
    }
}
