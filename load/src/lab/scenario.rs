//! What a lab run is: a front, a provider, a load, and how many gateways.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::sim::consumer::Phase;
use crate::sim::provider::{ProviderConfig, ServicePhase};

/// What stands between consumer and provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Front {
    Direct,
    /// nginx as an operator would configure it: `proxy_next_upstream error
    /// timeout` and `proxy_read_timeout` equal to the consumer's timeout.
    Nginx,
    /// Breakwater with the README's minimal config, nothing added: one
    /// cluster, one route, no policies. Since issue 16 that means the
    /// adaptive concurrency limit per cluster is on.
    BreakwaterDefault,
    /// The minimal config with `overload: off` on the cluster: Breakwater
    /// before issue 16.
    BreakwaterOff,
    /// Breakwater with a static concurrency limit at the provider's pool, a
    /// breaker, and client-retry suppression (the consumer sends idempotency
    /// keys): what an operator who knows the provider's capacity configures.
    BreakwaterTuned,
}

impl Front {
    pub const ALL: [Front; 5] = [
        Front::Direct,
        Front::Nginx,
        Front::BreakwaterDefault,
        Front::BreakwaterOff,
        Front::BreakwaterTuned,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Front::Direct => "direct",
            Front::Nginx => "nginx",
            Front::BreakwaterDefault => "breakwater-default",
            Front::BreakwaterOff => "breakwater-off",
            Front::BreakwaterTuned => "breakwater-tuned",
        }
    }

    pub fn parse(s: &str) -> Option<Front> {
        Front::ALL.into_iter().find(|f| f.name() == s)
    }

    pub fn is_breakwater(self) -> bool {
        matches!(
            self,
            Front::BreakwaterDefault | Front::BreakwaterOff | Front::BreakwaterTuned
        )
    }
}

/// The consumer's load over time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Load {
    /// `warm` at 0.7 C, `spike` at `multiplier` × C, `cool` at 0.7 C.
    Spike {
        multiplier: f64,
        warm: Duration,
        spike: Duration,
        cool: Duration,
    },
    /// 0.7 × the provider's first capacity throughout, while the provider's
    /// service time follows its schedule (it slows down after `before`).
    SlowProvider { before: Duration, after: Duration },
    /// `fraction` × C for `duration`: a healthy upstream.
    Steady { fraction: f64, duration: Duration },
}

/// Which table of the summary a run belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Group {
    /// The shipped default config against the targets, beside the
    /// other fronts.
    Targets,
    /// The default config over capacity × service time.
    Matrix,
    /// The provider slows down tenfold mid-run.
    SlowProvider,
    /// A healthy upstream: no refusals wanted.
    Healthy,
    /// Several gateways, one provider.
    Fleet,
}

/// One run of the lab.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Scenario {
    /// The run's name: its CSV's file stem.
    pub name: String,
    pub group: Group,
    pub front: Front,
    /// Gateway instances, each its own process and config (1 unless a
    /// fleet). The consumer sends attempts to them in turn.
    pub instances: usize,
    pub provider: ProviderConfig,
    pub load: Load,
}

/// What every run shares.
#[derive(Debug, Clone)]
pub struct Env {
    pub gateway_bin: PathBuf,
    /// Configs, pid files and logs of the fronts, one directory per run.
    pub work_dir: PathBuf,
    /// Consumer timeout T and retries R.
    pub timeout: Duration,
    pub retries: u32,
}

/// A provider of `workers` × `service`, with jitter of ±20% of the service
/// time.
pub fn provider(workers: usize, service: Duration) -> ProviderConfig {
    provider_with_jitter(workers, service, 20)
}

/// A provider of `workers` × `service` ± `jitter_pct`% of it.
pub fn provider_with_jitter(workers: usize, service: Duration, jitter_pct: u32) -> ProviderConfig {
    ProviderConfig::new(workers, service, service * jitter_pct / 100)
}

impl Scenario {
    /// The consumer's schedule.
    pub fn phases(&self) -> Vec<Phase> {
        let c = self.provider.capacity();
        match self.load {
            Load::Spike {
                multiplier,
                warm,
                spike,
                cool,
            } => vec![
                Phase {
                    duration: warm,
                    rate: 0.7 * c,
                },
                Phase {
                    duration: spike,
                    rate: multiplier * c,
                },
                Phase {
                    duration: cool,
                    rate: 0.7 * c,
                },
            ],
            Load::SlowProvider { before, after } => vec![Phase {
                duration: before + after,
                rate: 0.7 * c,
            }],
            Load::Steady { fraction, duration } => vec![Phase {
                duration,
                rate: fraction * c,
            }],
        }
    }

    /// The whole schedule's length.
    pub fn length(&self) -> Duration {
        self.phases().iter().map(|p| p.duration).sum()
    }

    /// The seconds `[from, to)` the targets are measured over: the spike,
    /// the slow phase, or all of a steady run.
    pub fn window(&self) -> (u64, u64) {
        match self.load {
            Load::Spike { warm, spike, .. } => (warm.as_secs(), (warm + spike).as_secs()),
            Load::SlowProvider { before, after } => (before.as_secs(), (before + after).as_secs()),
            Load::Steady { duration, .. } => (0, duration.as_secs()),
        }
    }

    /// When the overload ends and recovery is measured from (spikes only).
    pub fn spike_end(&self) -> Option<u64> {
        match self.load {
            Load::Spike { .. } => Some(self.window().1),
            _ => None,
        }
    }

    /// The provider's capacity (req/s) during second `s` of the schedule.
    pub fn capacity_at(&self, s: u64) -> f64 {
        self.provider
            .capacity_at(Duration::from_secs(s) + Duration::from_millis(500))
    }

    /// The provider's mean capacity over the measured window.
    pub fn window_capacity(&self) -> f64 {
        let (from, to) = self.window();
        let n = (to - from).max(1);
        (from..to.max(from + 1))
            .map(|s| self.capacity_at(s))
            .sum::<f64>()
            / n as f64
    }

    /// The provider's unloaded latency during the window: its service time.
    pub fn unloaded_latency(&self) -> Duration {
        self.provider
            .service_at(Duration::from_secs(self.window().0))
    }

    /// The spike's multiplier, if a spike.
    pub fn multiplier(&self) -> Option<f64> {
        match self.load {
            Load::Spike { multiplier, .. } => Some(multiplier),
            _ => None,
        }
    }
}

/// The phases of the lab, shortened where the table allows: 10 s
/// calm, 20 s spike, 20 s calm.
pub const WARM: Duration = Duration::from_secs(10);
pub const SPIKE: Duration = Duration::from_secs(20);
pub const COOL: Duration = Duration::from_secs(20);

/// A spike scenario of `front` at `multiplier` × C.
pub fn spike(
    name: String,
    group: Group,
    front: Front,
    provider: ProviderConfig,
    multiplier: f64,
    phases: (Duration, Duration, Duration),
) -> Scenario {
    Scenario {
        name,
        group,
        front,
        instances: 1,
        provider,
        load: Load::Spike {
            multiplier,
            warm: phases.0,
            spike: phases.1,
            cool: phases.2,
        },
    }
}

/// One cell of the capacity × service-time matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    pub service: Duration,
    /// The capacity asked for; the provider's is `workers / service`.
    pub capacity: f64,
    pub workers: usize,
}

/// A cell the lab cannot run, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Skipped {
    pub service: Duration,
    pub capacity: f64,
    pub why: String,
}

/// The matrix: service time × capacity, with each cell's pool. A cell that
/// needs less than one worker cannot be built; one that needs a fraction
/// gets the nearest pool (its capacity is reported as built); one whose
/// load the 2-core box cannot drive (more than `max_attempts_per_sec`
/// attempts at the spike: 3 × C offered, most shed and retried twice) is
/// skipped.
pub fn matrix(
    services: &[Duration],
    capacities: &[f64],
    multiplier: f64,
    max_offered: f64,
) -> (Vec<Cell>, Vec<Skipped>) {
    let mut cells = Vec::new();
    let mut skipped = Vec::new();
    for &service in services {
        for &capacity in capacities {
            let exact = capacity * service.as_secs_f64();
            if exact < 1.0 {
                skipped.push(Skipped {
                    service,
                    capacity,
                    why: format!(
                        "needs {exact:.2} workers: one worker of {service:?} already serves {:.0} req/s",
                        1.0 / service.as_secs_f64()
                    ),
                });
                continue;
            }
            if multiplier * capacity > max_offered {
                skipped.push(Skipped {
                    service,
                    capacity,
                    why: format!(
                        "{multiplier}× C = {:.0} calls/s, up to 3 attempts each, is more than this 2-core box drives beside the gateway and the provider (≤ {max_offered:.0} calls/s offered)",
                        multiplier * capacity
                    ),
                });
                continue;
            }
            let workers = exact.round().max(1.0) as usize;
            cells.push(Cell {
                service,
                capacity,
                workers,
            });
        }
    }
    (cells, skipped)
}

/// A short label for a duration: `5ms`, `1s`.
pub fn label(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// The slow-provider scenario: `provider`'s service time rises by `factor`
/// after `before`, the load stays at 0.7 × its first capacity.
pub fn slow_provider(
    front: Front,
    mut provider: ProviderConfig,
    factor: u32,
    before: Duration,
    after: Duration,
) -> Scenario {
    let slow = provider.service * factor;
    provider.schedule = vec![
        ServicePhase {
            duration: before,
            service: provider.service,
        },
        ServicePhase {
            duration: after,
            service: slow,
        },
    ];
    Scenario {
        name: format!("slow-provider-{}", front.name()),
        group: Group::SlowProvider,
        front,
        instances: 1,
        provider,
        load: Load::SlowProvider { before, after },
    }
}

/// Where a run's fronts listen: what the consumer is pointed at.
pub type Targets = Vec<SocketAddr>;
