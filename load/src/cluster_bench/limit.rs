//! Phase 2: how close the fleet keeps to a global limit. N instances, one
//! user for all the load (far above the limit), and the instances' admitted
//! counts sampled every 100 ms and summed, so every 1 s span of the run can
//! be checked against the bound documented in `plugins/src/cluster/mod.rs`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use super::config::{Mode, LIMIT_POLICY};
use super::fleet::{self, FleetSpec};
use super::redis::Redis;
use super::{admin, load, BenchConfig, Env};
use crate::throughput::wrk::{WrkLoad, WrkReport};

/// The sampling step; a window is `STEPS_PER_WINDOW` of them.
pub const STEP: Duration = Duration::from_millis(100);
pub const STEPS_PER_WINDOW: usize = 10;
/// The policy's window W and the sync interval I the configs use.
const WINDOW_SECS: f64 = 1.0;
const SYNC_INTERVAL_SECS: f64 = 0.1;

/// One sampling step: seconds since the load began (the first sample is
/// taken just before) and every instance's admitted count, or `None` when
/// an instance did not answer in time.
#[derive(Debug, Clone, PartialEq)]
pub struct Tick {
    pub at: f64,
    pub admitted: Option<Vec<f64>>,
}

impl Tick {
    pub fn total(&self) -> Option<f64> {
        self.admitted.as_ref().map(|v| v.iter().sum())
    }
}

/// The most admissions in any span of `STEPS_PER_WINDOW` steps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    pub count: f64,
    pub start: f64,
    /// The span's measured length (sampling can run late under load).
    pub span: f64,
}

#[derive(Debug, Clone)]
pub struct LimitResult {
    pub instances: usize,
    pub limit: u64,
    pub duration: Duration,
    pub ticks: Vec<Tick>,
    pub wrk: Vec<WrkReport>,
    /// Mean `last_round_trip_us` over `/cluster` reads during the run.
    pub round_trip_us: Option<f64>,
    pub rejected: f64,
}

impl LimitResult {
    /// d in seconds: the measured mean round trip, or 1 ms without one.
    pub fn d_secs(&self) -> f64 {
        self.round_trip_us.map_or(0.001, |us| us / 1e6)
    }

    pub fn steady_rate(&self) -> Option<f64> {
        steady_rate(&self.ticks, 1.0, self.duration.as_secs_f64())
    }

    /// Each instance's part of [`Self::steady_rate`].
    pub fn steady_rates(&self) -> Vec<Option<f64>> {
        (0..self.instances)
            .map(|i| {
                rate_of(&self.ticks, 1.0, self.duration.as_secs_f64(), |t| {
                    t.admitted.as_ref()?.get(i).copied()
                })
            })
            .collect()
    }

    pub fn worst(&self) -> Option<Window> {
        worst_window(&self.ticks, STEPS_PER_WINDOW)
    }

    /// The bound for a key every instance meets at once (the load starts
    /// on all of them together): limit · (1 + (I + d)/W).
    pub fn bound(&self) -> f64 {
        bound(self.limit, self.d_secs())
    }

    pub fn offered_rps(&self) -> f64 {
        self.wrk.iter().map(|r| r.rps).sum()
    }
}

/// `limit · (1 + 1/B + (S − 1)(2I + d)/W)`.
/// The documented bound (plugins/src/cluster/mod.rs) for a key known to
/// every instance: leases are counted for at least W from their grant but
/// may be spent up to I + d later.
pub fn bound(limit: u64, d_secs: f64) -> f64 {
    limit as f64 * (1.0 + (SYNC_INTERVAL_SECS + d_secs) / WINDOW_SECS)
}

/// Admissions per second between the first sample at or after `from` and
/// the last one at or before `to` (seconds since the load began).
pub fn steady_rate(ticks: &[Tick], from: f64, to: f64) -> Option<f64> {
    rate_of(ticks, from, to, Tick::total)
}

/// [`steady_rate`] of any figure of a tick (one instance's count, say).
pub fn rate_of(
    ticks: &[Tick],
    from: f64,
    to: f64,
    value: impl Fn(&Tick) -> Option<f64>,
) -> Option<f64> {
    let ok: Vec<(f64, f64)> = ticks
        .iter()
        .filter_map(|t| Some((t.at, value(t)?)))
        .collect();
    let first = ok.iter().find(|(at, _)| *at >= from)?;
    let last = ok.iter().rev().find(|(at, _)| *at <= to)?;
    (last.0 > first.0).then(|| (last.1 - first.1) / (last.0 - first.0))
}

/// The span of `steps` consecutive steps with the most admissions; spans
/// with a missing sample at either end are skipped.
pub fn worst_window(ticks: &[Tick], steps: usize) -> Option<Window> {
    ticks
        .windows(steps + 1)
        .filter_map(|w| {
            let (a, b) = (&w[0], &w[steps]);
            Some(Window {
                count: b.total()? - a.total()?,
                start: a.at,
                span: b.at - a.at,
            })
        })
        .max_by(|x, y| x.count.total_cmp(&y.count))
}

/// Each instance's admitted count, all read at once.
async fn sample(admins: &[SocketAddr]) -> Option<Vec<f64>> {
    let mut set = JoinSet::new();
    for (i, &a) in admins.iter().enumerate() {
        set.spawn(async move {
            let text = admin::get(a, "/metrics").await.ok()?;
            Some((
                i,
                admin::limit_count(&text, LIMIT_POLICY, "admitted").unwrap_or(0.0),
            ))
        });
    }
    let mut out = vec![0.0; admins.len()];
    while let Some(r) = set.join_next().await {
        let (i, v) = r.ok()??;
        out[i] = v;
    }
    Some(out)
}

async fn round_trips(admins: &[SocketAddr], into: &mut Vec<f64>) {
    for &a in admins {
        if let Ok(v) = admin::cluster_view(a).await {
            if let Some(us) = v["last_round_trip_us"].as_u64().filter(|us| *us > 0) {
                into.push(us as f64);
            }
        }
    }
}

pub async fn run(cfg: &BenchConfig, env: &Env, redis: &Redis) -> std::io::Result<LimitResult> {
    let c = &cfg.limit;
    let spec = FleetSpec {
        gateway_bin: cfg.gateway_bin.clone(),
        mode: Mode::Global,
        instances: c.instances,
        upstream: env.upstream,
        redis: redis.addr,
        key_prefix: "lim".into(),
        user_limit: c.limit,
    };
    let fleet = fleet::start(&spec, "limit", &env.work_dir).await?;
    let admins = fleet.admins();
    let targets: Vec<SocketAddr> = fleet.instances.iter().map(|i| i.addr).collect();
    let wrk_load = WrkLoad {
        threads: 1,
        connections: c.connections,
        duration: c.duration,
        script: Some(env.hot_script.clone()),
    };
    let t0 = Instant::now();
    let mut ticks = vec![Tick {
        at: 0.0,
        admitted: sample(&admins).await,
    }];
    let mut wrk = load::start(&wrk_load, &targets, &env.work_dir, "limit")?;
    let offset = wrk.started.duration_since(t0).as_secs_f64();
    ticks[0].at = -offset;
    let mut rtts = Vec::new();
    // A fixed schedule: a late sample does not push the later ones back.
    let mut k = 1u32;
    // Bounded: wrk's duration plus one step after it exits.
    while !wrk.done() && k as usize <= (c.duration.as_millis() / STEP.as_millis()) as usize + 150 {
        tokio::time::sleep_until((wrk.started + STEP * k).into()).await;
        let admitted = sample(&admins).await;
        ticks.push(Tick {
            at: wrk.started.elapsed().as_secs_f64(),
            admitted,
        });
        if k % 10 == 5 {
            round_trips(&admins, &mut rtts).await;
        }
        k += 1;
    }
    let reports = wrk.finish().await?;
    ticks.push(Tick {
        at: t0.elapsed().as_secs_f64() - offset,
        admitted: sample(&admins).await,
    });
    let mut rejected = 0.0;
    for &a in &admins {
        let text = admin::get(a, "/metrics").await?;
        rejected += admin::limit_count(&text, LIMIT_POLICY, "rejected").unwrap_or(0.0);
    }
    Ok(LimitResult {
        instances: c.instances,
        limit: c.limit,
        duration: c.duration,
        ticks,
        wrk: reports,
        round_trip_us: (!rtts.is_empty()).then(|| rtts.iter().sum::<f64>() / rtts.len() as f64),
        rejected,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ticks(totals: &[Option<f64>]) -> Vec<Tick> {
        totals
            .iter()
            .enumerate()
            .map(|(i, t)| Tick {
                at: i as f64 * 0.1,
                admitted: t.map(|v| vec![v / 2.0, v / 2.0]),
            })
            .collect()
    }

    #[test]
    fn the_documented_bound() {
        // plugins/src/cluster/mod.rs: 111 for a limit of 100, I = 100 ms and
        // d = 1 ms.
        assert!((bound(100, 0.001) - 110.1).abs() < 1e-9);
        assert!((bound(1000, 0.05) - 1150.0).abs() < 1e-9);
    }

    #[test]
    fn finds_the_busiest_span_and_skips_gaps() {
        // 100 per step, but 300 in step 12, and a missing sample at 3.
        let mut totals = Vec::new();
        let mut sum = 0.0;
        for i in 0..30 {
            sum += if i == 12 { 300.0 } else { 100.0 };
            totals.push(if i == 3 { None } else { Some(sum) });
        }
        let t = ticks(&totals);
        let w = worst_window(&t, 10).unwrap();
        assert_eq!(w.count, 1200.0);
        assert!((w.span - 1.0).abs() < 1e-9);
        assert!(w.start >= 0.2 && w.start < 1.25);
        let rate = steady_rate(&t, 1.25, 2.95).unwrap();
        assert!((rate - 1000.0).abs() < 1e-6, "{rate}");
    }
}
