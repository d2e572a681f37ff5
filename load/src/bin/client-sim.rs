//! `client-sim`: the avalanche lab's consumer (see `breakwater_load::sim::consumer`).
//!
//! client-sim --target 127.0.0.1:9100[,127.0.0.1:9101,...] --schedule 20s@700,30s@2000,30s@700 \
//!            --timeout-ms 3000 --retries 2 --out timeline.csv

use std::time::Duration;

use breakwater_load::sim::consumer::{self, ConsumerConfig, Phase};
use clap::Parser;

#[derive(Parser)]
struct Args {
    /// Where to send calls; several (comma-separated) take attempts in turn.
    #[arg(long, value_delimiter = ',', required = true)]
    target: Vec<std::net::SocketAddr>,
    #[arg(long, default_value = "/work")]
    path: String,
    /// Phases as `<duration>@<calls per second>`, comma-separated.
    #[arg(long, default_value = "20s@700,30s@2000,30s@700")]
    schedule: String,
    /// Per-attempt timeout T.
    #[arg(long, default_value_t = 3000)]
    timeout_ms: u64,
    /// Retries R after a timeout, an error or a non-2xx answer.
    #[arg(long, default_value_t = 2)]
    retries: u32,
    /// Send an idempotency key per logical call.
    #[arg(long)]
    idempotency: bool,
    /// Where to write the per-second CSV.
    #[arg(long)]
    out: Option<std::path::PathBuf>,
}

fn parse_schedule(s: &str) -> Result<Vec<Phase>, String> {
    s.split(',')
        .map(|part| {
            let (d, r) = part
                .split_once('@')
                .ok_or_else(|| format!("\"{part}\" is not <duration>@<rate>"))?;
            let duration =
                humantime::parse_duration(d.trim()).map_err(|e| format!("\"{d}\": {e}"))?;
            let rate: f64 = r
                .trim()
                .parse()
                .map_err(|_| format!("\"{r}\" is not a rate"))?;
            Ok(Phase { duration, rate })
        })
        .collect()
}

fn main() -> Result<(), String> {
    let args = Args::parse();
    let schedule = parse_schedule(&args.schedule)?;
    let cfg = ConsumerConfig {
        targets: args.target,
        path: args.path,
        timeout: Duration::from_millis(args.timeout_ms),
        retries: args.retries,
        idempotency_keys: args.idempotency,
        schedule,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let timeline = rt.block_on(consumer::run(cfg));
    let csv = consumer::to_csv(&timeline);
    match args.out {
        Some(path) => std::fs::write(&path, csv).map_err(|e| format!("{}: {e}", path.display()))?,
        None => print!("{csv}"),
    }
    let sum = |f: fn(&consumer::Second) -> u64| timeline.iter().map(f).sum::<u64>();
    eprintln!(
        "offered {} goodput {} failed {} attempts {} timeouts {} non-2xx {} (shed {}) errors {}",
        sum(|s| s.offered),
        sum(|s| s.goodput),
        sum(|s| s.failed),
        sum(|s| s.attempts),
        sum(|s| s.timeouts),
        sum(|s| s.non_2xx),
        sum(|s| s.shed),
        sum(|s| s.errors)
    );
    Ok(())
}
