//! `avalanche`: replays the seed's retry avalanche against each front and
//! writes a CSV timeline per run and `summary.md` to `--out-dir`.
//!
//! avalanche --gateway-bin target/release/breakwater --out-dir load/results

use std::path::PathBuf;
use std::time::Duration;

use breakwater_load::lab::{self, Front, LabConfig};
use breakwater_load::sim::consumer;
use breakwater_load::sim::provider::ProviderConfig;
use clap::Parser;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "target/release/breakwater")]
    gateway_bin: PathBuf,
    #[arg(long, default_value = "load/results")]
    out_dir: PathBuf,
    #[arg(long, default_value_t = 50)]
    workers: usize,
    #[arg(long, default_value_t = 50)]
    service_ms: u64,
    #[arg(long, default_value_t = 10)]
    jitter_ms: u64,
    #[arg(long, default_value_t = 3000)]
    timeout_ms: u64,
    #[arg(long, default_value_t = 2)]
    retries: u32,
    #[arg(long, default_value = "20s")]
    warm: humantime::Duration,
    #[arg(long, default_value = "30s")]
    spike: humantime::Duration,
    #[arg(long, default_value = "30s")]
    cool: humantime::Duration,
    /// Overload multipliers of C.
    #[arg(long, value_delimiter = ',', default_value = "2,3")]
    multipliers: Vec<f64>,
}

fn main() -> std::io::Result<()> {
    let args = Args::parse();
    std::fs::create_dir_all(&args.out_dir)?;
    let cfg = LabConfig {
        provider: ProviderConfig {
            workers: args.workers,
            service: Duration::from_millis(args.service_ms),
            jitter: Duration::from_millis(args.jitter_ms),
        },
        timeout: Duration::from_millis(args.timeout_ms),
        retries: args.retries,
        warm: args.warm.into(),
        spike: args.spike.into(),
        cool: args.cool.into(),
        gateway_bin: args.gateway_bin,
        work_dir: std::env::temp_dir().join(format!("breakwater-avalanche-{}", std::process::id())),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut runs = Vec::new();
    for &m in &args.multipliers {
        for front in [
            Front::Direct,
            Front::Nginx,
            Front::BreakwaterDefault,
            Front::BreakwaterTuned,
        ] {
            if front == Front::Nginx && breakwater_load::procs::nginx_bin().is_none() {
                eprintln!("nginx is not installed: skipping its scenario (apt-get install -y nginx-light)");
                continue;
            }
            eprintln!("running {} at {m}× C ...", front.name());
            let run = rt.block_on(lab::run(front, m, &cfg))?;
            let csv = args.out_dir.join(format!("{}-{m}x.csv", front.name()));
            std::fs::write(&csv, consumer::to_csv(&run.timeline))?;
            runs.push(run);
        }
    }
    let table = lab::summary_table(&runs, &cfg);
    std::fs::write(args.out_dir.join("summary.md"), &table)?;
    if let Err(e) = lab::chart(&runs, &cfg, &args.out_dir.join("goodput.svg")) {
        eprintln!("could not draw the chart: {e}");
    }
    print!("{table}");
    let _ = std::fs::remove_dir_all(&cfg.work_dir);
    Ok(())
}
