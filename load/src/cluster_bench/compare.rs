//! Phase 1: the same load through N instances counting locally and through
//! N instances counting fleet-wide, in alternation, with what the global
//! runs cost Redis.

use std::time::{Duration, Instant};

use super::config::Mode;
use super::fleet::{self, Fleet, FleetSpec};
use super::redis::{CommandStats, Redis};
use super::{admin, load, BenchConfig, Env};
use crate::procs::{process_tree, tree_cpu};
use crate::throughput::wrk::{WrkLoad, WrkReport};

/// One round of one mode: every instance under its own wrk at once.
#[derive(Debug, Clone)]
pub struct CompareSample {
    pub mode: Mode,
    pub round: usize,
    /// From the first wrk's start to the last one's exit.
    pub wall: Duration,
    /// One report per instance.
    pub wrk: Vec<WrkReport>,
    /// CPU (user + system) of all instances per request served.
    pub gateway_cpu_us_per_request: f64,
    /// What the run cost Redis (`global` only).
    pub redis: Option<RedisUse>,
}

/// Redis traffic during one global run.
#[derive(Debug, Clone)]
pub struct RedisUse {
    /// Commands Redis executed (`INFO commandstats`, all `calls=` but INFO's),
    /// those the sync script runs included.
    pub commands: u64,
    /// Of those, the script calls themselves: the clients' round trips.
    pub script_calls: u64,
    /// Calls per command over the run.
    pub by_command: CommandStats,
    /// Between the two `INFO commandstats` reads.
    pub span: Duration,
    /// The instances' own count: `breakwater_cluster_redis_commands_total`.
    pub gateway_commands: f64,
    pub redis_cpu: Duration,
    /// The instances' `last_round_trip_us` from `/cluster` after the run.
    pub round_trip_us: f64,
}

impl CompareSample {
    pub fn requests(&self) -> u64 {
        self.wrk.iter().map(|r| r.requests).sum()
    }

    /// The fleet's req/s: the sum over instances.
    pub fn rps(&self) -> f64 {
        self.wrk.iter().map(|r| r.rps).sum()
    }

    /// The mean of the instances' p50 (each wrk sees one instance).
    pub fn p50_ms(&self) -> f64 {
        mean(self.wrk.iter().map(|r| r.p50_ms))
    }

    pub fn p99_ms(&self) -> f64 {
        mean(self.wrk.iter().map(|r| r.p99_ms))
    }

    pub fn errors(&self) -> u64 {
        self.wrk.iter().map(|r| r.errors).sum()
    }

    pub fn commands_per_sec(&self) -> Option<f64> {
        let r = self.redis.as_ref()?;
        Some(r.commands as f64 / r.span.as_secs_f64().max(1e-9))
    }

    pub fn script_calls_per_sec(&self) -> Option<f64> {
        let r = self.redis.as_ref()?;
        Some(r.script_calls as f64 / r.span.as_secs_f64().max(1e-9))
    }

    pub fn commands_per_request(&self) -> Option<f64> {
        let r = self.redis.as_ref()?;
        Some(r.commands as f64 / self.requests().max(1) as f64)
    }
}

fn mean(xs: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = xs.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    sum / n.max(1) as f64
}

/// Runs both fleets side by side for the whole phase; each round runs local
/// then global, the next round global then local (ABBA), so drift of the
/// machine during a round does not favour one mode.
pub async fn run(
    cfg: &BenchConfig,
    env: &Env,
    redis: &Redis,
) -> std::io::Result<Vec<CompareSample>> {
    let c = &cfg.compare;
    let spec = |mode| FleetSpec {
        gateway_bin: cfg.gateway_bin.clone(),
        mode,
        instances: c.instances,
        upstream: env.upstream,
        redis: redis.addr,
        key_prefix: "cmp".into(),
        user_limit: c.user_limit,
    };
    let local = fleet::start(&spec(Mode::Local), "local", &env.work_dir).await?;
    let global = fleet::start(&spec(Mode::Global), "global", &env.work_dir).await?;
    let wrk_load = WrkLoad {
        threads: 1,
        connections: c.connections,
        duration: c.duration,
        script: Some(env.mix_script.clone()),
    };
    if !c.warmup.is_zero() {
        let warm = WrkLoad {
            duration: c.warmup,
            ..wrk_load.clone()
        };
        for (f, tag) in [(&local, "warm-local"), (&global, "warm-global")] {
            load::start(&warm, &addrs(f), &env.work_dir, tag)?
                .finish()
                .await?;
        }
    }
    let mut samples = Vec::new();
    for round in 1..=c.rounds {
        let order = if round % 2 == 1 {
            [Mode::Local, Mode::Global]
        } else {
            [Mode::Global, Mode::Local]
        };
        for mode in order {
            let f = if mode == Mode::Local { &local } else { &global };
            let s = run_once(&wrk_load, f, mode, round, env, redis).await?;
            eprintln!(
                "round {round} {:<6} {:>8.0} req/s  p50 {:>5.2} ms  p99 {:>6.2} ms  {:>5.1} µs CPU/req  {} errors{}",
                mode.name(),
                s.rps(),
                s.p50_ms(),
                s.p99_ms(),
                s.gateway_cpu_us_per_request,
                s.errors(),
                match (&s.redis, s.commands_per_sec(), s.commands_per_request()) {
                    (Some(r), Some(ps), Some(pr)) => format!(
                        "  redis {} commands ({ps:.1}/s, {pr:.6}/request), {} script calls, gateways counted {:.0}",
                        r.commands, r.script_calls, r.gateway_commands
                    ),
                    _ => String::new(),
                }
            );
            samples.push(s);
        }
    }
    Ok(samples)
}

fn addrs(f: &Fleet) -> Vec<std::net::SocketAddr> {
    f.instances.iter().map(|i| i.addr).collect()
}

async fn gateway_commands(f: &Fleet) -> std::io::Result<f64> {
    let mut sum = 0.0;
    for a in f.admins() {
        sum += admin::redis_commands(&admin::get(a, "/metrics").await?);
    }
    Ok(sum)
}

async fn run_once(
    wrk_load: &WrkLoad,
    f: &Fleet,
    mode: Mode,
    round: usize,
    env: &Env,
    redis: &Redis,
) -> std::io::Result<CompareSample> {
    let global = mode == Mode::Global;
    let trees: Vec<u32> = f.pids().into_iter().flat_map(process_tree).collect();
    let redis_tree = process_tree(redis.process.pid());
    let cpu0 = tree_cpu(&trees);
    let redis_cpu0 = tree_cpu(&redis_tree);
    let (gw0, cmd0, cmd0_at) = if global {
        (
            gateway_commands(f).await?,
            redis.commands()?,
            Instant::now(),
        )
    } else {
        (0.0, CommandStats::default(), Instant::now())
    };
    let started = Instant::now();
    let tag = format!("r{round}-{}", mode.name());
    let reports = load::start(wrk_load, &addrs(f), &env.work_dir, &tag)?
        .finish()
        .await?;
    let wall = started.elapsed();
    let redis_use = if global {
        let stats = cmd0.delta(&redis.commands()?);
        let span = cmd0_at.elapsed();
        let gateway_commands = gateway_commands(f).await? - gw0;
        let mut rtt = Vec::new();
        for a in f.admins() {
            if let Some(us) = admin::cluster_view(a).await?["last_round_trip_us"].as_u64() {
                rtt.push(us as f64);
            }
        }
        Some(RedisUse {
            commands: stats.total(),
            script_calls: stats.scripts(),
            by_command: stats,
            span,
            gateway_commands,
            redis_cpu: tree_cpu(&redis_tree).saturating_sub(redis_cpu0),
            round_trip_us: mean(rtt.into_iter()),
        })
    } else {
        None
    };
    let cpu = tree_cpu(&trees).saturating_sub(cpu0);
    let requests: u64 = reports.iter().map(|r| r.requests).sum();
    Ok(CompareSample {
        mode,
        round,
        wall,
        gateway_cpu_us_per_request: cpu.as_secs_f64() * 1e6 / requests.max(1) as f64,
        wrk: reports,
        redis: redis_use,
    })
}
