//! `upstream-sim`: the avalanche lab's provider (see `breakwater_load::sim::provider`).
//!
//! upstream-sim --listen 127.0.0.1:9100 --workers 50 --service-ms 50 --jitter-ms 10 \
//!              [--service-schedule 20s@50ms,40s@500ms]

use std::time::Duration;

use breakwater_load::sim::provider::{parse_service_schedule, Provider, ProviderConfig};
use clap::Parser;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:9100")]
    listen: String,
    /// Worker pool size N.
    #[arg(long, default_value_t = 50)]
    workers: usize,
    /// Service time S per request, in milliseconds.
    #[arg(long, default_value_t = 50)]
    service_ms: u64,
    /// Uniform jitter on S, ± milliseconds.
    #[arg(long, default_value_t = 10)]
    jitter_ms: u64,
    /// Service time over time, from the start: `<duration>@<service time>`,
    /// comma-separated; the last one holds after the schedule ends (the
    /// seed's provider slowing tenfold: `20s@50ms,40s@500ms`).
    #[arg(long)]
    service_schedule: Option<String>,
    /// Runtime threads (the work is waiting, so 1 is plenty).
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let schedule = match &args.service_schedule {
        Some(s) => parse_service_schedule(s).map_err(std::io::Error::other)?,
        None => Vec::new(),
    };
    let cfg = ProviderConfig {
        workers: args.workers,
        service: schedule
            .first()
            .map_or(Duration::from_millis(args.service_ms), |p| p.service),
        jitter: Duration::from_millis(args.jitter_ms),
        schedule,
    };
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()?
        .block_on(async {
            let listener = tokio::net::TcpListener::bind(&args.listen).await?;
            let provider = Provider::start(listener, cfg.clone())?;
            eprintln!(
                "upstream-sim on {}: {} workers x {:?} = capacity {:.0} req/s; stats at /stats",
                provider.addr,
                cfg.workers,
                cfg.service,
                cfg.capacity()
            );
            tokio::signal::ctrl_c().await?;
            eprintln!("{:?}", provider.stats.view());
            Ok(())
        })
}
