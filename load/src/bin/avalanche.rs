//! `avalanche`: replays the seed's retry avalanche against the fronts and
//! runs issue 16's scenarios for the shipped default config; writes a CSV
//! timeline per run, `runs.csv`, `summary.md` and `goodput.svg` to
//! `--out-dir`.
//!
//! avalanche --gateway-bin target/release/breakwater --out-dir load/results
//! avalanche --groups targets --fronts breakwater-default --multipliers 3 --dry-run

use std::path::PathBuf;
use std::time::Duration;

use breakwater_load::lab::scenario::{self, label, Skipped};
use breakwater_load::lab::{self, chart, overload, report, Env, Front, Group, Load, Scenario};
use breakwater_load::sim::consumer;
use clap::Parser;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "target/release/breakwater")]
    gateway_bin: PathBuf,
    #[arg(long, default_value = "load/results")]
    out_dir: PathBuf,
    /// Which groups of scenarios to run: targets, matrix, slow, healthy, fleet.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "targets,matrix,slow,healthy,fleet"
    )]
    groups: Vec<String>,
    /// The fronts of the targets group (direct, nginx, breakwater-default,
    /// breakwater-off, breakwater-tuned).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "direct,breakwater-default"
    )]
    fronts: Vec<String>,
    /// Overload multipliers of C for the targets group.
    #[arg(long, value_delimiter = ',', default_value = "2,3")]
    multipliers: Vec<f64>,
    /// The main provider: workers × service time.
    #[arg(long, default_value_t = 50)]
    workers: usize,
    #[arg(long, default_value = "50ms")]
    service: humantime::Duration,
    /// Every provider's jitter: ± this percentage of its service time,
    /// uniform.
    #[arg(long, default_value_t = 20)]
    jitter_pct: u32,
    #[arg(long, default_value_t = 3000)]
    timeout_ms: u64,
    #[arg(long, default_value_t = 2)]
    retries: u32,
    #[arg(long, default_value = "10s")]
    warm: humantime::Duration,
    #[arg(long, default_value = "20s")]
    spike: humantime::Duration,
    #[arg(long, default_value = "20s")]
    cool: humantime::Duration,
    /// The matrix's service times and capacities (req/s).
    #[arg(long, value_delimiter = ',', default_value = "5ms,50ms,1s")]
    matrix_services: Vec<humantime::Duration>,
    #[arg(long, value_delimiter = ',', default_value = "50,200,2000")]
    matrix_capacities: Vec<f64>,
    #[arg(long, default_value_t = 3.0)]
    matrix_multiplier: f64,
    /// The most calls per second offered this box is asked to drive.
    #[arg(long, default_value_t = 6000.0)]
    max_offered: f64,
    /// Slow provider: the main provider, `slow_factor`× slower after
    /// `slow_before`, for `slow_after`.
    #[arg(long, default_value_t = 10)]
    slow_factor: u32,
    #[arg(long, default_value = "20s")]
    slow_before: humantime::Duration,
    #[arg(long, default_value = "40s")]
    slow_after: humantime::Duration,
    #[arg(long, value_delimiter = ',', default_value = "breakwater-default")]
    slow_fronts: Vec<String>,
    /// Healthy upstream: 0.7 C for this long, for each provider
    /// (`<workers>x<service>`).
    #[arg(long, default_value = "60s")]
    healthy: humantime::Duration,
    #[arg(long, value_delimiter = ',', default_value = "50x50ms,200x1s")]
    healthy_providers: Vec<String>,
    /// Fleet: this many gateways in front of the main provider.
    #[arg(long, default_value_t = 3)]
    fleet: usize,
    #[arg(long, default_value_t = 3.0)]
    fleet_multiplier: f64,
    /// A line for the summary's head (build, date, machine).
    #[arg(long, default_value = "")]
    note: String,
    /// Keep the fronts' configs and logs (in the temp dir printed at the
    /// start) instead of removing them at the end.
    #[arg(long)]
    keep_work_dir: bool,
    /// Where every run is saved (JSON), to be reported again later.
    #[arg(long, default_value = "target/avalanche-runs")]
    runs_dir: PathBuf,
    /// Run only these scenarios (by name); report the others from their
    /// saved runs in `--runs-dir` (those never run are left out). For
    /// rerunning a run that shared the box with a build.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// List the runs and their length, run nothing.
    #[arg(long)]
    dry_run: bool,
}

fn front(name: &str) -> std::io::Result<Front> {
    Front::parse(name).ok_or_else(|| std::io::Error::other(format!("unknown front \"{name}\"")))
}

fn parse_provider(s: &str) -> std::io::Result<(usize, Duration)> {
    let bad = || std::io::Error::other(format!("\"{s}\" is not <workers>x<service time>"));
    let (w, t) = s.split_once('x').ok_or_else(bad)?;
    let workers = w.trim().parse().map_err(|_| bad())?;
    let service = humantime::parse_duration(t.trim()).map_err(|_| bad())?;
    Ok((workers, service))
}

fn scenarios(a: &Args) -> std::io::Result<(Vec<Scenario>, Vec<Skipped>)> {
    let provider = |w, s| scenario::provider_with_jitter(w, s, a.jitter_pct);
    let phases = (a.warm.into(), a.spike.into(), a.cool.into());
    let main = provider(a.workers, a.service.into());
    let mut out = Vec::new();
    let mut skipped = Vec::new();
    let wants = |g: &str| a.groups.iter().any(|x| x == g);
    if wants("targets") {
        for &m in &a.multipliers {
            for f in &a.fronts {
                let f = front(f)?;
                if f == Front::Nginx && breakwater_load::procs::nginx_bin().is_none() {
                    eprintln!("nginx is not installed: skipping its scenario (apt-get install -y nginx-light)");
                    continue;
                }
                out.push(scenario::spike(
                    format!("{}-{m}x", f.name()),
                    Group::Targets,
                    f,
                    main.clone(),
                    m,
                    phases,
                ));
            }
        }
    }
    if wants("matrix") {
        let services: Vec<Duration> = a.matrix_services.iter().map(|d| (*d).into()).collect();
        let (cells, skip) = scenario::matrix(
            &services,
            &a.matrix_capacities,
            a.matrix_multiplier,
            a.max_offered,
        );
        skipped = skip;
        for c in cells {
            out.push(scenario::spike(
                format!(
                    "matrix-{}x{}-{}x",
                    c.workers,
                    label(c.service),
                    a.matrix_multiplier
                ),
                Group::Matrix,
                Front::BreakwaterDefault,
                provider(c.workers, c.service),
                a.matrix_multiplier,
                phases,
            ));
        }
    }
    if wants("slow") {
        for f in &a.slow_fronts {
            out.push(scenario::slow_provider(
                front(f)?,
                main.clone(),
                a.slow_factor,
                a.slow_before.into(),
                a.slow_after.into(),
            ));
        }
    }
    if wants("healthy") {
        for p in &a.healthy_providers {
            let (workers, service) = parse_provider(p)?;
            out.push(Scenario {
                name: format!("healthy-{workers}x{}", label(service)),
                group: Group::Healthy,
                front: Front::BreakwaterDefault,
                instances: 1,
                provider: provider(workers, service),
                load: Load::Steady {
                    fraction: 0.7,
                    duration: a.healthy.into(),
                },
            });
        }
    }
    if wants("fleet") {
        let mut s = scenario::spike(
            format!("fleet-{}-{}x", a.fleet, a.fleet_multiplier),
            Group::Fleet,
            Front::BreakwaterDefault,
            main.clone(),
            a.fleet_multiplier,
            phases,
        );
        s.instances = a.fleet;
        out.push(s);
    }
    Ok((out, skipped))
}

fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let (scenarios, skipped) = scenarios(&args)?;
    let env = Env {
        gateway_bin: args.gateway_bin.clone(),
        work_dir: std::env::temp_dir().join(format!("breakwater-avalanche-{}", std::process::id())),
        timeout: Duration::from_millis(args.timeout_ms),
        retries: args.retries,
    };
    // Each run: its schedule, then at most (R + 1) × T for the last calls,
    // and a few seconds to start and stop.
    let tail = env.timeout * (env.retries + 1) + Duration::from_secs(3);
    let total: Duration = scenarios.iter().map(|s| s.length() + tail).sum();
    eprintln!(
        "{} runs, at most {:.1} minutes:",
        scenarios.len(),
        total.as_secs_f64() / 60.0
    );
    for s in &scenarios {
        eprintln!(
            "  {} ({} × {}, C = {:.0}, {:?})",
            s.name,
            s.provider.workers,
            label(s.provider.service),
            s.provider.capacity(),
            s.length()
        );
    }
    for s in &skipped {
        eprintln!(
            "  skipped: {} at C = {:.0}: {}",
            label(s.service),
            s.capacity,
            s.why
        );
    }
    if args.dry_run {
        return Ok(());
    }
    std::fs::create_dir_all(&args.out_dir)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut runs = Vec::new();
    for s in &scenarios {
        if !args.only.is_empty() && !args.only.contains(&s.name) {
            match lab::run::load(&args.runs_dir, &s.name) {
                Some(saved) => {
                    eprintln!("{}: the saved run", s.name);
                    runs.push(saved);
                }
                None => eprintln!("{}: no saved run, left out", s.name),
            }
            continue;
        }
        eprintln!("running {} ...", s.name);
        let run = rt.block_on(lab::run(s, &env))?;
        lab::run::save(&run, &args.runs_dir)?;
        std::fs::write(
            args.out_dir.join(format!("{}.csv", s.name)),
            consumer::to_csv(&run.timeline),
        )?;
        if !run.overload.is_empty() {
            std::fs::write(
                args.out_dir.join(format!("{}-overload.csv", s.name)),
                overload::to_csv(&run.overload),
            )?;
        }
        eprintln!(
            "  goodput {:.2} C, amplification {:.2}, recovery {:?}, p99 {:.0} ms (call {:.0} ms), shed {}, non-2xx {}, other work on the box {:.2} cores",
            run.goodput_in_window(),
            run.amplification(),
            run.recovery_secs(),
            run.p99_ms(),
            run.p99_call_ms(),
            run.shed(),
            run.non_2xx(),
            run.foreign_cores
        );
        runs.push(run);
        // Written after every run, so an interrupted lab keeps its figures.
        std::fs::write(args.out_dir.join("runs.csv"), report::runs_csv(&runs))?;
    }
    let summary = report::summary(&runs, &skipped, &env, &args.note);
    std::fs::write(args.out_dir.join("summary.md"), &summary)?;
    if let Err(e) = chart::draw(&chart::panels(&runs), &args.out_dir.join("goodput.svg")) {
        eprintln!("could not draw the chart: {e}");
    }
    print!("{summary}");
    if args.keep_work_dir {
        eprintln!("configs and logs kept in {}", env.work_dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&env.work_dir);
    }
    Ok(())
}
