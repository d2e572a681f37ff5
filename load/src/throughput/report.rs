//! The throughput bench's outputs: every sample as CSV, a markdown table of
//! each contender's median round, and a chart of CPU per request and p99.

use std::fmt::Write as _;
use std::path::Path;

use super::{BenchConfig, Contender, Sample};

/// The median-by-CPU sample of each contender, in the configured order.
fn medians<'a>(samples: &'a [Sample], cfg: &BenchConfig) -> Vec<&'a Sample> {
    cfg.contenders
        .iter()
        .filter_map(|c| {
            let mut mine: Vec<&Sample> = samples.iter().filter(|s| s.contender == *c).collect();
            mine.sort_by(|a, b| a.cpu_us_per_request.total_cmp(&b.cpu_us_per_request));
            mine.get(mine.len().saturating_sub(1) / 2).copied()
        })
        .collect()
}

/// Every sample, one row each.
pub fn csv(samples: &[Sample]) -> String {
    let mut out = String::from(
        "contender,round,requests,rps,p50_ms,p99_ms,errors,cpu_us_per_request,rss_kib\n",
    );
    for s in samples {
        let _ = writeln!(
            out,
            "{},{},{},{:.0},{:.3},{:.3},{},{:.2},{}",
            s.contender.name(),
            s.round,
            s.wrk.requests,
            s.wrk.rps,
            s.wrk.p50_ms,
            s.wrk.p99_ms,
            s.wrk.errors,
            s.cpu_us_per_request,
            s.rss_kib
        );
    }
    out
}

/// The markdown table: each contender's median round (by CPU per request),
/// with the range over rounds for CPU.
pub fn summary_table(samples: &[Sample], skipped: &[Contender], cfg: &BenchConfig) -> String {
    let mut out = format!(
        "wrk {} thread(s), {} connections, {:?} per run, {} round(s), contenders in alternation; upstream {} thread(s); every proxy {} worker(s); {} CPU core(s).\n\n",
        cfg.load.threads,
        cfg.load.connections,
        cfg.load.duration,
        cfg.rounds,
        cfg.upstream_threads,
        cfg.bins.workers,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    out.push_str("| contender | req/s | p50 | p99 | CPU µs/request (range) | RSS | errors |\n|---|---|---|---|---|---|---|\n");
    for m in medians(samples, cfg) {
        let (lo, hi) = samples
            .iter()
            .filter(|s| s.contender == m.contender)
            .fold((f64::MAX, 0f64), |(lo, hi), s| {
                (lo.min(s.cpu_us_per_request), hi.max(s.cpu_us_per_request))
            });
        let _ = writeln!(
            out,
            "| {}{} | {:.0} | {:.2} ms | {:.2} ms | {:.1} ({:.1}–{:.1}) | {:.1} MiB | {} |",
            m.contender.name(),
            if m.contender == Contender::Direct {
                " (upstream's CPU)"
            } else {
                ""
            },
            m.wrk.rps,
            m.wrk.p50_ms,
            m.wrk.p99_ms,
            m.cpu_us_per_request,
            lo,
            hi,
            m.rss_kib as f64 / 1024.0,
            m.wrk.errors
        );
    }
    for c in skipped {
        let _ = writeln!(out, "| {} | not installed: skipped | | | | | |", c.name());
    }
    out
}

/// One figure read off a sample, for a chart panel.
type Metric = fn(&Sample) -> f64;

/// Two bar panels: CPU µs per request and p99, one bar per contender.
pub fn chart(
    samples: &[Sample],
    cfg: &BenchConfig,
    path: &Path,
) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;

    let rows = medians(samples, cfg);
    let root = SVGBackend::new(path, (960, 640)).into_drawing_area();
    root.fill(&WHITE)?;
    let panels = root.split_evenly((2, 1));
    let metrics: [(&str, Metric); 2] = [
        ("proxy CPU per request (µs)", |s| s.cpu_us_per_request),
        ("p99 latency (ms)", |s| s.wrk.p99_ms),
    ];
    for (panel, (title, value)) in panels.iter().zip(metrics) {
        let top = rows.iter().map(|s| value(s)).fold(0f64, f64::max) * 1.2 + 1e-9;
        let n = rows.len().max(1) as f64;
        let mut chart = ChartBuilder::on(panel)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(32)
            .y_label_area_size(56)
            .build_cartesian_2d(0f64..n, 0f64..top)?;
        let labels: Vec<&str> = rows.iter().map(|s| s.contender.name()).collect();
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(rows.len() * 2 + 1)
            .x_label_formatter(&|x| {
                let i = x.floor() as usize;
                if (x - x.floor() - 0.5).abs() < 0.01 && i < labels.len() {
                    labels[i].to_string()
                } else {
                    String::new()
                }
            })
            .draw()?;
        let colors = [BLACK, RED, MAGENTA, CYAN, BLUE, GREEN];
        chart.draw_series(rows.iter().enumerate().map(|(i, s)| {
            let color = colors[i % colors.len()];
            Rectangle::new(
                [(i as f64 + 0.15, 0.0), (i as f64 + 0.85, value(s))],
                color.mix(0.7).filled(),
            )
        }))?;
        chart.draw_series(rows.iter().enumerate().map(|(i, s)| {
            Text::new(
                format!("{:.1}", value(s)),
                (i as f64 + 0.4, value(s) + top * 0.06),
                ("sans-serif", 14),
            )
        }))?;
    }
    root.present()?;
    Ok(())
}
