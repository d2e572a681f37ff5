//! Process-wide gateway state: the live snapshot and what outlives it.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use arc_swap::ArcSwap;
use breakwater_plugins::block_list::BlockList;
use breakwater_plugins::fleet::Fleet;
use breakwater_plugins::hotkey::HotEventHub;
use breakwater_plugins::{Clock, MonotonicClock};

use crate::config::snapshot::{Snapshot, SnapshotStore};
use crate::config::{compile, CompileContext};
use crate::config::{parse_str, LoadError};
use crate::fleet::FleetStatus;
use crate::metrics::{Metrics, StatusCounters};
use crate::state::drain::Drain;
use crate::state::health_metrics::HealthCollector;
use crate::state::overload_metrics::OverloadCollector;
use crate::state::policy_metrics::PolicyCollector;
use crate::state::reload::Reloader;

/// Shared by the proxy, the admin endpoint and the reload triggers.
pub struct GatewayState {
    pub config_path: PathBuf,
    pub store: Arc<SnapshotStore>,
    pub metrics: Metrics,
    pub clock: Arc<dyn Clock>,
    /// Blocks placed by `abuse` policies and the admin; outlives snapshots.
    pub blocks: Arc<BlockList>,
    /// Hot and cooled events of `hotkey` rules; outlives snapshots, so
    /// subscribers keep their stream across reloads.
    pub hot_events: Arc<HotEventHub>,
    pub reloader: Reloader,
    /// Set once the reload triggers (file watch, SIGHUP) are armed; `/healthz`
    /// answers 503 until then.
    pub ready: AtomicBool,
    /// Set by SIGTERM or `POST /drain`: `/ready` answers 503 while the
    /// listeners still serve.
    pub drain: Drain,
    /// `breakwater_requests_total{route="none"}` for requests no route matched.
    pub unrouted: StatusCounters,
    /// Fleet mode's link status; `None` without a `fleet` section.
    pub fleet_status: Option<Arc<FleetStatus>>,
    /// The address the admin listener was bound to at startup: a reload
    /// cannot move it, so access rules are checked against it.
    pub admin_address: Option<std::net::SocketAddr>,
}

impl GatewayState {
    /// Loads and compiles the config at `path`: the startup path, where any
    /// error is fatal.
    pub fn load(path: PathBuf) -> Result<Arc<Self>, LoadError> {
        let metrics = Metrics::new();
        let clock: Arc<dyn Clock> = Arc::new(MonotonicClock::new());
        let text = read_config(&path)?;
        let file = parse_str(&text)?;
        // Fleet mode is set up once: the fleet's hasher names keys alike on
        // every instance (global policies take it from the fleet).
        let fleet_status = match file.fleet_section() {
            Some((name, section)) => {
                let config = section.compile(name)?;
                let fleet = Arc::new(Fleet::new(config.settings()));
                Some(Arc::new(FleetStatus::new(config, fleet, &metrics.registry)))
            }
            None => None,
        };
        let fleet = fleet_status.as_ref().map(|c| c.fleet.clone());
        // The block list outlives snapshots: sized once, before the first
        // compile. In fleet mode it hashes with the fleet's hasher: blocks
        // travel between instances named by their key's hash.
        let blocks = Arc::new(match &fleet {
            Some(f) => BlockList::with_hasher(
                file.block_list.max_entries,
                clock.clone(),
                f.hasher().clone(),
            ),
            None => BlockList::new(file.block_list.max_entries, clock.clone()),
        });
        let hot_events = Arc::new(HotEventHub::default());
        let cx = CompileContext::new(
            &metrics,
            clock.clone(),
            blocks.clone(),
            hot_events.clone(),
            fleet,
        );
        let snapshot = compile(file, &text, cx)?;
        blocks.set_ipv6_prefix(snapshot.keys.ipv6_prefix);
        metrics.config_generation.set(snapshot.generation as i64);
        let unrouted = metrics.status_counters("none");
        let admin_address = snapshot.source.admin.address.parse().ok();
        let store = Arc::new(ArcSwap::from_pointee(snapshot));
        PolicyCollector::register(&metrics, store.clone(), blocks.clone());
        OverloadCollector::register(&metrics, store.clone());
        HealthCollector::register(&metrics, store.clone());
        Ok(Arc::new(Self {
            config_path: path,
            store,
            metrics,
            clock,
            blocks,
            hot_events,
            reloader: Reloader::default(),
            ready: AtomicBool::new(false),
            drain: Drain::default(),
            unrouted,
            fleet_status,
            admin_address,
        }))
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.store.load_full()
    }
}

/// Reads the config file's text.
pub fn read_config(path: &std::path::Path) -> Result<String, LoadError> {
    std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: path.display().to_string(),
        source,
    })
}

impl GatewayState {
    /// Fleet mode's fleet, if configured.
    pub fn fleet(&self) -> Option<Arc<Fleet>> {
        self.fleet_status.as_ref().map(|c| c.fleet.clone())
    }

    /// A context to compile the next snapshot in: what outlives snapshots,
    /// and the live snapshot `previous` to carry state over from.
    pub fn compile_context<'a>(&'a self, previous: &'a Snapshot) -> CompileContext<'a> {
        CompileContext::new(
            &self.metrics,
            self.clock.clone(),
            self.blocks.clone(),
            self.hot_events.clone(),
            self.fleet(),
        )
        .after(Some(previous))
    }
}

/// Parses, validates and compiles config text into a snapshot.
pub fn build_snapshot(text: &str, cx: CompileContext<'_>) -> Result<Snapshot, LoadError> {
    Ok(compile(parse_str(text)?, text, cx)?)
}
