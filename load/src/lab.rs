//! The avalanche lab: the same overload against several fronts.
//!
//! Each run starts a fresh provider (so no queue carries over), the front
//! under test, and the consumer; the schedule is a calm phase at 0.7 C, a
//! spike at `multiplier` × C, and a calm phase again. Every process is on
//! loopback and is stopped when the run ends.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::procs::{free_port, nginx_bin, wait_listening, Spawned};
use crate::sim::consumer::{self, ConsumerConfig, Phase, Second};
use crate::sim::provider::{Provider, ProviderConfig, StatsView};

/// What stands between consumer and provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Front {
    Direct,
    /// nginx as an operator would configure it: `proxy_next_upstream error
    /// timeout` and `proxy_read_timeout` equal to the consumer's timeout.
    Nginx,
    /// Breakwater with its shipped defaults: one route, no policies, no retries.
    BreakwaterDefault,
    /// Breakwater with a concurrency limit near the provider's pool, a breaker,
    /// and client-retry suppression (the consumer sends idempotency keys).
    BreakwaterTuned,
}

impl Front {
    pub fn name(self) -> &'static str {
        match self {
            Front::Direct => "direct",
            Front::Nginx => "nginx",
            Front::BreakwaterDefault => "breakwater-default",
            Front::BreakwaterTuned => "breakwater-tuned",
        }
    }
}

#[derive(Debug, Clone)]
pub struct LabConfig {
    pub provider: ProviderConfig,
    /// Consumer timeout T and retries R.
    pub timeout: Duration,
    pub retries: u32,
    /// Phase lengths: warm (0.7 C), spike (multiplier × C), cool (0.7 C).
    pub warm: Duration,
    pub spike: Duration,
    pub cool: Duration,
    pub gateway_bin: PathBuf,
    pub work_dir: PathBuf,
}

/// The headline figures of one run.
#[derive(Debug, Clone)]
pub struct RunSummary {
    pub front: Front,
    pub multiplier: f64,
    pub timeline: Vec<Second>,
    pub provider: StatsView,
    pub offered: u64,
    /// Mean goodput per second during the spike, as a fraction of C.
    pub goodput_during_overload: f64,
    /// Provider requests received per logical call offered.
    pub amplification: f64,
    pub p99_ms: f64,
    /// Seconds after the spike until a second's goodput is ≥ 95% of its offer
    /// (None: not within the run).
    pub recovery_secs: Option<u64>,
}

fn gateway_config(
    front: Front,
    upstream: SocketAddr,
    port: u16,
    admin: u16,
    dir: &Path,
    cfg: &LabConfig,
) -> String {
    let policies = match front {
        Front::BreakwaterTuned => format!(
            "    policies:\n      - dedupe: {{ header: idempotency-key }}\n      - circuit_breaker: {{ slow_call: {slow}ms, slow_ratio: 0.9, min_requests: 50, open: 1s }}\n      - concurrency_limit: {{ max: {max}, queue: {{ max: {max}, timeout: {wait}ms }} }}\n",
            slow = cfg.timeout.as_millis(),
            max = cfg.provider.workers,
            wait = cfg.provider.service.as_millis() * 2,
        ),
        _ => String::new(),
    };
    format!(
        "server:\n  threads: 2\n  pid_file: {dir}/bw.pid\n  upgrade_sock: {dir}/bw.sock\n  watch_config: false\n  grace_period_secs: 1\n  graceful_shutdown_timeout_secs: 1\nlisteners:\n  - address: 127.0.0.1:{port}\nadmin:\n  address: 127.0.0.1:{admin}\nlogging:\n  level: warn\n  access_log: false\nclusters:\n  provider:\n    endpoints: [\"{upstream}\"]\n    read_timeout_ms: 60000\nroutes:\n  - id: work\n    cluster: provider\n{policies}",
        dir = dir.display()
    )
}

async fn start_gateway(
    front: Front,
    upstream: SocketAddr,
    cfg: &LabConfig,
    run: &str,
) -> std::io::Result<(Spawned, SocketAddr)> {
    let dir = cfg.work_dir.join(run);
    // Private (0700 whatever the umask): the gateway refuses an upgrade
    // socket in a directory that others can write to.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)?;
    let (port, admin) = (free_port()?, free_port()?);
    let path = dir.join("gateway.yaml");
    std::fs::write(
        &path,
        gateway_config(front, upstream, port, admin, &dir, cfg),
    )?;
    let mut cmd = Command::new(&cfg.gateway_bin);
    cmd.arg("-c").arg(&path);
    let gw = Spawned::start(cmd, &dir.join("gateway.log"))?;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    wait_listening(addr, &dir).await?;
    Ok((gw, addr))
}

fn nginx_config(upstream: SocketAddr, port: u16, dir: &Path, cfg: &LabConfig) -> String {
    format!(
        "daemon off;\nworker_processes 2;\npid {dir}/nginx.pid;\nerror_log {dir}/nginx-error.log warn;\nevents {{ worker_connections 8192; }}\nhttp {{\n  access_log off;\n  upstream provider {{ server {upstream}; keepalive 256; }}\n  server {{\n    listen 127.0.0.1:{port};\n    location / {{\n      proxy_pass http://provider;\n      proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n      proxy_connect_timeout 1s;\n      proxy_read_timeout {t}ms;\n      proxy_next_upstream error timeout;\n    }}\n  }}\n}}\n",
        dir = dir.display(),
        t = cfg.timeout.as_millis()
    )
}

async fn start_nginx(
    upstream: SocketAddr,
    cfg: &LabConfig,
    run: &str,
) -> std::io::Result<(Spawned, SocketAddr)> {
    let bin = nginx_bin().ok_or_else(|| {
        std::io::Error::other("nginx is not installed (apt-get install -y nginx-light)")
    })?;
    let dir = cfg.work_dir.join(run);
    std::fs::create_dir_all(&dir)?;
    let port = free_port()?;
    let path = dir.join("nginx.conf");
    std::fs::write(&path, nginx_config(upstream, port, &dir, cfg))?;
    let mut cmd = Command::new(bin);
    cmd.arg("-c").arg(&path).arg("-p").arg(&dir);
    let gw = Spawned::start(cmd, &dir.join("nginx.out"))?;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    wait_listening(addr, &dir).await?;
    Ok((gw, addr))
}

/// Runs one front at one overload multiplier.
pub async fn run(front: Front, multiplier: f64, cfg: &LabConfig) -> std::io::Result<RunSummary> {
    let provider = Provider::start(TcpListener::bind("127.0.0.1:0").await?, cfg.provider)?;
    let run_name = format!("{}-{multiplier}x", front.name());
    let (_gateway, target) = match front {
        Front::Direct => (None, provider.addr),
        Front::Nginx => {
            let (g, a) = start_nginx(provider.addr, cfg, &run_name).await?;
            (Some(g), a)
        }
        _ => {
            let (g, a) = start_gateway(front, provider.addr, cfg, &run_name).await?;
            (Some(g), a)
        }
    };
    let c = cfg.provider.capacity();
    let schedule = vec![
        Phase {
            duration: cfg.warm,
            rate: 0.7 * c,
        },
        Phase {
            duration: cfg.spike,
            rate: multiplier * c,
        },
        Phase {
            duration: cfg.cool,
            rate: 0.7 * c,
        },
    ];
    let (timeline, latencies) = consumer::run_with_latencies(ConsumerConfig {
        target,
        path: "/work".into(),
        timeout: cfg.timeout,
        retries: cfg.retries,
        idempotency_keys: front == Front::BreakwaterTuned,
        schedule,
    })
    .await;
    let stats = provider.stats.view();
    let offered: u64 = timeline.iter().map(|s| s.offered).sum();
    let (spike_start, spike_end) = (cfg.warm.as_secs(), (cfg.warm + cfg.spike).as_secs());
    let spike: Vec<&Second> = timeline
        .iter()
        .filter(|s| s.second >= spike_start && s.second < spike_end)
        .collect();
    let goodput_during_overload =
        spike.iter().map(|s| s.goodput as f64).sum::<f64>() / (spike.len().max(1) as f64 * c);
    let recovery_secs = timeline
        .iter()
        .filter(|s| s.second >= spike_end && s.offered > 0)
        .find(|s| s.goodput as f64 >= 0.95 * s.offered as f64)
        .map(|s| s.second - spike_end);
    Ok(RunSummary {
        front,
        multiplier,
        provider: stats,
        offered,
        goodput_during_overload,
        amplification: stats.received as f64 / offered.max(1) as f64,
        p99_ms: consumer::quantile(&latencies, 0.99),
        recovery_secs,
        timeline,
    })
}

/// The markdown summary table of several runs.
pub fn summary_table(runs: &[RunSummary], cfg: &LabConfig) -> String {
    let mut out = format!(
        "Provider: {} workers × {:?} = C {:.0} req/s. Consumer: T = {:?}, R = {}. Schedule: {:?} at 0.7 C, {:?} at the multiplier, {:?} at 0.7 C.\n\n",
        cfg.provider.workers,
        cfg.provider.service,
        cfg.provider.capacity(),
        cfg.timeout,
        cfg.retries,
        cfg.warm,
        cfg.spike,
        cfg.cool
    );
    out.push_str("| front | load | goodput during overload (× C) | amplification | wasted upstream work | p99 | back to ≥ 95% goodput |\n");
    out.push_str("|---|---|---|---|---|---|---|\n");
    for r in runs {
        let recovery = r
            .recovery_secs
            .map(|s| format!("{s} s"))
            .unwrap_or_else(|| "not within the run".into());
        let _ = writeln!(
            out,
            "| {} | {}× C | {:.2} | {:.2} | {} of {} completed | {:.0} ms | {} |",
            r.front.name(),
            r.multiplier,
            r.goodput_during_overload,
            r.amplification,
            r.provider.wasted,
            r.provider.completed,
            r.p99_ms,
            recovery
        );
    }
    out
}

/// Draws goodput over time (as a fraction of C) for every run, one panel per
/// multiplier, all fronts on each panel, as an SVG.
pub fn chart(
    runs: &[RunSummary],
    cfg: &LabConfig,
    path: &Path,
) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;

    let mut multipliers: Vec<f64> = runs.iter().map(|r| r.multiplier).collect();
    multipliers.dedup();
    let height = 360 * multipliers.len().max(1) as u32;
    let root = SVGBackend::new(path, (960, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let panels = root.split_evenly((multipliers.len().max(1), 1));
    let c = cfg.provider.capacity();
    let secs = (cfg.warm + cfg.spike + cfg.cool).as_secs() as f64;
    // Calls are booked under their arrival second, so the first seconds of a
    // spike can exceed C (queued calls still answered in time): fit them.
    let top = runs
        .iter()
        .flat_map(|r| r.timeline.iter())
        .map(|s| s.goodput as f64 / c)
        .fold(1.2f64, f64::max)
        + 0.1;
    let colors = [RED, BLUE, MAGENTA, GREEN, BLACK];
    for (panel, m) in panels.iter().zip(&multipliers) {
        let mut chart = ChartBuilder::on(panel)
            .caption(
                format!(
                    "Goodput during a {m}x C spike (C = {c:.0} req/s, T = {:?}, R = {})",
                    cfg.timeout, cfg.retries
                ),
                ("sans-serif", 18),
            )
            .margin(12)
            .x_label_area_size(32)
            .y_label_area_size(48)
            .build_cartesian_2d(0f64..secs, 0f64..top)?;
        chart
            .configure_mesh()
            .x_desc("second")
            .y_desc("goodput (x C)")
            .draw()?;
        let (s0, s1) = (cfg.warm.as_secs_f64(), (cfg.warm + cfg.spike).as_secs_f64());
        chart.draw_series(std::iter::once(Rectangle::new(
            [(s0, 0.0), (s1, top)],
            RGBColor(240, 240, 240).filled(),
        )))?;
        for (i, r) in runs.iter().filter(|r| r.multiplier == *m).enumerate() {
            let color = colors[i % colors.len()];
            chart
                .draw_series(LineSeries::new(
                    r.timeline
                        .iter()
                        .map(|s| (s.second as f64 + 0.5, s.goodput as f64 / c)),
                    color.stroke_width(2),
                ))?
                .label(r.front.name())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperRight)
            .draw()?;
    }
    root.present()?;
    Ok(())
}
