//! One run: a fresh provider, the front(s), the consumer, and the figures.

use std::time::Duration;

use tokio::net::TcpListener;

use super::fronts::{self, Instance};
use super::overload::{self, Sample};
use super::scenario::{Env, Front, Scenario};
use crate::procs::{machine_busy, process_tree, tree_cpu};
use crate::sim::consumer::{self, ConsumerConfig, Latencies, Second};
use crate::sim::provider::{Provider, StatsView};

/// What one run measured. Saved as JSON ([`save`]) so that a later
/// invocation can rerun some scenarios and report all of them.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RunResult {
    pub scenario: Scenario,
    pub timeline: Vec<Second>,
    pub latencies: Latencies,
    pub provider: StatsView,
    /// Every instance's `/overload` once a second (empty without it).
    pub overload: Vec<Sample>,
    /// The raw `/overload` answers, one JSON line each.
    pub overload_raw: String,
    /// CPU time of the front's processes during the run.
    pub front_cpu: Duration,
    /// Cores busy with work that is not the lab's (another build on the
    /// box), on average over the run: the machine's busy time minus this
    /// process's and its children's, over the wall time.
    pub foreign_cores: f64,
}

impl RunResult {
    fn sum(&self, f: impl Fn(&Second) -> u64) -> u64 {
        self.timeline.iter().map(f).sum()
    }

    pub fn offered(&self) -> u64 {
        self.sum(|s| s.offered)
    }
    pub fn attempts(&self) -> u64 {
        self.sum(|s| s.attempts)
    }
    pub fn non_2xx(&self) -> u64 {
        self.sum(|s| s.non_2xx)
    }
    pub fn shed(&self) -> u64 {
        self.sum(|s| s.shed)
    }
    pub fn errors(&self) -> u64 {
        self.sum(|s| s.errors)
    }
    pub fn timeouts(&self) -> u64 {
        self.sum(|s| s.timeouts)
    }
    pub fn failed(&self) -> u64 {
        self.sum(|s| s.failed)
    }

    fn in_window(&self, from: u64, to: u64) -> impl Iterator<Item = &Second> {
        self.timeline
            .iter()
            .filter(move |s| s.second >= from && s.second < to)
    }

    /// Mean goodput per second over the measured window, as a fraction of
    /// the provider's capacity then (1.0 is the best any front can do).
    pub fn goodput_in_window(&self) -> f64 {
        let (from, to) = self.scenario.window();
        let goodput: f64 = self.in_window(from, to).map(|s| s.goodput as f64).sum();
        goodput / ((to - from).max(1) as f64 * self.scenario.window_capacity())
    }

    /// Seconds from the window's start until goodput holds ≥ 0.9 of the
    /// capacity (the mean of five seconds in a row), e.g. how long a
    /// slower provider takes to be served at its new pace again. None: not
    /// within the window.
    pub fn settle_secs(&self) -> Option<u64> {
        let (from, to) = self.scenario.window();
        let good = |s: u64| {
            self.timeline
                .get(s as usize)
                .map_or(0.0, |x| x.goodput as f64)
        };
        (from..to.saturating_sub(4))
            .find(|&s| {
                let mean = (s..s + 5).map(good).sum::<f64>() / 5.0;
                mean >= 0.9 * self.scenario.capacity_at(s)
            })
            .map(|s| s - from)
    }

    /// Mean goodput over the second half of the window, as a fraction of
    /// the capacity then.
    pub fn goodput_late_in_window(&self) -> f64 {
        let (from, to) = self.scenario.window();
        let mid = from + (to - from) / 2;
        let goodput: f64 = self.in_window(mid, to).map(|s| s.goodput as f64).sum();
        let capacity: f64 = (mid..to).map(|s| self.scenario.capacity_at(s)).sum();
        goodput / capacity.max(1.0)
    }

    /// Logical calls that succeeded over those offered in the window.
    pub fn success_in_window(&self) -> f64 {
        let (from, to) = self.scenario.window();
        let (good, offered) = self
            .in_window(from, to)
            .fold((0, 0), |(g, o), s| (g + s.goodput, o + s.offered));
        good as f64 / offered.max(1) as f64
    }

    /// Requests the provider received per logical call offered.
    pub fn amplification(&self) -> f64 {
        self.provider.received as f64 / self.offered().max(1) as f64
    }

    /// Seconds after the spike until a second's goodput is ≥ 95% of its
    /// offer (None: not within the run, or not a spike).
    pub fn recovery_secs(&self) -> Option<u64> {
        let end = self.scenario.spike_end()?;
        self.timeline
            .iter()
            .filter(|s| s.second >= end && s.offered > 0)
            .find(|s| s.goodput as f64 >= 0.95 * s.offered as f64)
            .map(|s| s.second - end)
    }

    /// Goodput over offer from 5 s after the spike to the end: whether the
    /// system stayed recovered (metastable failure reads low here).
    pub fn success_after(&self) -> Option<f64> {
        let end = self.scenario.spike_end()? + 5;
        let (good, offered) = self
            .in_window(end, u64::MAX)
            .fold((0, 0), |(g, o), s| (g + s.goodput, o + s.offered));
        (offered > 0).then(|| good as f64 / offered as f64)
    }

    /// p99 (ms) of the admitted calls (the attempt the front let through
    /// and that succeeded: its wait in the front's queue and the provider's
    /// answer) that arrived from the window's start on.
    pub fn p99_ms(&self) -> f64 {
        let (from, _) = self.scenario.window();
        consumer::quantile(&self.latencies.admitted_between(from, u64::MAX), 0.99)
    }

    /// p99 (ms) of the admitted calls before the window (the calm phase of
    /// a spike run): what this box measures with no overload, for scale.
    pub fn p99_calm_ms(&self) -> Option<f64> {
        let (from, _) = self.scenario.window();
        let calm = self.latencies.admitted_between(0, from);
        (!calm.is_empty()).then(|| consumer::quantile(&calm, 0.99))
    }

    /// p99 (ms) of the same calls as the consumer saw them: from the first
    /// attempt, so with the refused and timed-out attempts before the one
    /// that succeeded.
    pub fn p99_call_ms(&self) -> f64 {
        let (from, _) = self.scenario.window();
        consumer::quantile(&self.latencies.between(from, u64::MAX), 0.99)
    }

    /// The `/overload` samples of cluster `provider` at `second` (one per
    /// instance).
    pub fn limits_at(&self, second: u64) -> Vec<&Sample> {
        self.overload
            .iter()
            .filter(|s| s.second == second && s.cluster == "provider")
            .collect()
    }
}

/// Runs one scenario. Every process it starts is stopped when it returns.
pub async fn run(scenario: &Scenario, env: &Env) -> std::io::Result<RunResult> {
    let provider = Provider::start(
        TcpListener::bind("127.0.0.1:0").await?,
        scenario.provider.clone(),
    )?;
    let instances: Vec<Instance> = match scenario.front {
        Front::Direct => Vec::new(),
        Front::Nginx => vec![fronts::start_nginx(scenario, provider.addr, env).await?],
        _ => fronts::start_gateways(scenario, provider.addr, env).await?,
    };
    let targets = if instances.is_empty() {
        vec![provider.addr]
    } else {
        instances.iter().map(|i| i.addr).collect()
    };
    let pids: Vec<u32> = instances
        .iter()
        .flat_map(|i| process_tree(i.process.pid()))
        .collect();
    let cpu_before = tree_cpu(&pids);
    let me = std::process::id();
    let own_before = tree_cpu(&process_tree(me));
    let busy_before = machine_busy();
    let wall = std::time::Instant::now();
    let admins = instances.iter().filter_map(|i| i.admin).collect();
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let poller = tokio::spawn(overload::poll(admins, stopped));
    provider.begin_schedule();
    let (timeline, latencies) = consumer::run_with_latencies(ConsumerConfig {
        targets,
        path: "/work".into(),
        timeout: env.timeout,
        retries: env.retries,
        idempotency_keys: scenario.front == Front::BreakwaterTuned,
        schedule: scenario.phases(),
    })
    .await;
    let _ = stop.send(());
    let (overload, overload_raw) = poller.await.unwrap_or_default();
    let front_cpu = tree_cpu(&pids).saturating_sub(cpu_before);
    let own = tree_cpu(&process_tree(me)).saturating_sub(own_before);
    let foreign = machine_busy()
        .saturating_sub(busy_before)
        .saturating_sub(own);
    let foreign_cores = foreign.as_secs_f64() / wall.elapsed().as_secs_f64().max(1e-3);
    let stats = provider.stats.view();
    drop(instances);
    Ok(RunResult {
        scenario: scenario.clone(),
        timeline,
        latencies,
        provider: stats,
        overload,
        overload_raw,
        front_cpu,
        foreign_cores,
    })
}

/// Saves `run` as `<dir>/<name>.json`.
pub fn save(run: &RunResult, dir: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let json = serde_json::to_vec(run).map_err(std::io::Error::other)?;
    std::fs::write(dir.join(format!("{}.json", run.scenario.name)), json)
}

/// The run saved as `<dir>/<name>.json`, if any.
pub fn load(dir: &std::path::Path, name: &str) -> Option<RunResult> {
    let bytes = std::fs::read(dir.join(format!("{name}.json"))).ok()?;
    serde_json::from_slice(&bytes).ok()
}
