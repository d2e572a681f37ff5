//! The lab's summary (markdown) and its one-row-per-run CSV.

use std::fmt::Write as _;

use super::run::RunResult;
use super::scenario::{label, Env, Group, Load, Skipped};
use super::targets::{self, verdicts, Verdict};

/// Whether the provider's own queueing without overload (Poisson arrivals
/// at 0.7 C into its pool) already passes the p99 bound: then no front can
/// meet that target on this provider.
fn calm_above_bound(r: &RunResult) -> bool {
    let bound = 2.0 * r.scenario.unloaded_latency().as_secs_f64() * 1000.0;
    r.p99_calm_ms().is_some_and(|p| p > bound)
}

fn calm_cell(r: &RunResult) -> String {
    match r.p99_calm_ms() {
        None => "–".into(),
        Some(p) if calm_above_bound(r) => format!("{p:.0} ms ¹"),
        Some(p) => format!("{p:.0} ms"),
    }
}

const CALM_NOTE: &str = "¹ Above the p99 bound already in the calm phase, before any overload: Poisson arrivals at 0.7 C into a pool this small queue at the provider itself, so no front can meet the p99 target on this provider.\n";

fn verdict_of<'a>(vs: &'a [Verdict], target: &str) -> Option<&'a Verdict> {
    vs.iter().find(|v| v.target == target)
}

fn cell(vs: &[Verdict], target: &str) -> String {
    verdict_of(vs, target).map_or("–".into(), Verdict::cell)
}

/// The fleet's total limit for cluster `provider` per second of `[from,
/// to)`, summed over instances: (mean, min, max), if `/overload` answered.
pub fn limit_stats(r: &RunResult, from: u64, to: u64) -> Option<(f64, f64, f64)> {
    let totals: Vec<f64> = (from..to)
        .filter_map(|s| {
            let at = r.limits_at(s);
            (!at.is_empty()).then(|| at.iter().map(|x| x.limit).sum())
        })
        .collect();
    if totals.is_empty() {
        return None;
    }
    let mean = totals.iter().sum::<f64>() / totals.len() as f64;
    let min = totals.iter().copied().fold(f64::INFINITY, f64::min);
    let max = totals.iter().copied().fold(0.0, f64::max);
    Some((mean, min, max))
}

fn limit_cell(r: &RunResult) -> String {
    let (from, to) = r.scenario.window();
    limit_stats(r, from, to).map_or("–".into(), |(mean, min, max)| {
        format!("{mean:.0} ({min:.0}–{max:.0})")
    })
}

fn load_label(r: &RunResult) -> String {
    match r.scenario.load {
        Load::Spike { multiplier, .. } => format!("{multiplier}× C"),
        Load::SlowProvider { .. } => "0.7 C then 10× slower".into(),
        Load::Steady { fraction, .. } => format!("{fraction}× C"),
    }
}

fn provider_label(r: &RunResult) -> String {
    let p = &r.scenario.provider;
    format!(
        "{} × {} (C = {:.0})",
        p.workers,
        label(p.service),
        p.capacity()
    )
}

/// The header: what ran, on what, for how long.
fn header(out: &mut String, runs: &[RunResult], env: &Env, note: &str) {
    let _ = writeln!(out, "# Avalanche lab\n");
    if !note.is_empty() {
        let _ = writeln!(out, "{note}\n");
    }
    let _ = writeln!(
        out,
        "Consumer: open-loop Poisson arrivals, timeout T = {:?}, R = {} immediate retries on a timeout, an error or any non-2xx (a fast 503 too; `Retry-After` ignored). Provider: cancel-unaware FIFO pool, service time ± {}% (uniform). Spikes: {} at 0.7 C, {} at the multiplier, {} at 0.7 C. Each run starts a fresh provider and fresh gateways. Figures are booked under the second a call arrived in.\n",
        env.timeout,
        env.retries,
        runs.first().map_or(0, |r| {
            let p = &r.scenario.provider;
            (p.jitter.as_nanos() * 100 / p.service.as_nanos().max(1)) as u32
        }),
        runs.iter()
            .find_map(|r| match r.scenario.load {
                Load::Spike { warm, .. } => Some(format!("{warm:?}")),
                _ => None,
            })
            .unwrap_or_else(|| "–".into()),
        runs.iter()
            .find_map(|r| match r.scenario.load {
                Load::Spike { spike, .. } => Some(format!("{spike:?}")),
                _ => None,
            })
            .unwrap_or_else(|| "–".into()),
        runs.iter()
            .find_map(|r| match r.scenario.load {
                Load::Spike { cool, .. } => Some(format!("{cool:?}")),
                _ => None,
            })
            .unwrap_or_else(|| "–".into()),
    );
    let total: std::time::Duration = runs.iter().map(|r| r.scenario.length()).sum();
    let _ = writeln!(
        out,
        "{} run(s), {:.1} minutes of load in all.\n",
        runs.len(),
        total.as_secs_f64() / 60.0
    );
    let disturbed: Vec<String> = runs
        .iter()
        .filter(|r| r.foreign_cores > 0.25)
        .map(|r| format!("{} ({:.2} cores)", r.scenario.name, r.foreign_cores))
        .collect();
    let _ = writeln!(
        out,
        "Other work on the box during a run (CPU busy beyond the lab's own processes): at most {:.2} cores; {}.\n",
        runs.iter().map(|r| r.foreign_cores).fold(0.0, f64::max),
        if disturbed.is_empty() {
            "no run shared the box with more than a quarter of a core".to_string()
        } else {
            format!("runs that shared it with more than a quarter of a core: {}", disturbed.join(", "))
        }
    );
    let _ = writeln!(
        out,
        "Columns: goodput = mean successful calls per second over the spike (or the slow phase) as a fraction of the provider's capacity then; amplification = requests the provider received per logical call offered; recovery = seconds after the spike until a second's goodput is ≥ 95% of its offer; after = goodput over offer from 5 s after the spike to the end (metastable collapse reads low); p99 = of admitted calls arriving from the spike's start on (the attempt the front let through and the provider answered: the front's queue wait and the provider's round trip), against 2× the service time; p99 calm = of admitted calls in the calm phase before the spike, what this box measures without overload; p99 call = the same calls as the consumer saw them, from their first attempt, so with the refused attempts and their queue waits before the admitted one; shed = attempts refused with `x-breakwater-error: overloaded`; limit = the gateway's adaptive limit from `GET /overload` during the spike, mean (min–max), summed over a fleet's instances.\n"
    );
}

fn targets_table(out: &mut String, runs: &[&RunResult]) {
    let _ = writeln!(out, "| front | provider | load | {} | {} | {} | {} | p99 calm | p99 call | after | shed attempts | wasted upstream work | limit |", targets::GOODPUT, targets::AMPLIFICATION, targets::RECOVERY, targets::P99);
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in runs {
        let vs = verdicts(r);
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {:.0} ms | {} | {} | {} of {} | {} |",
            r.scenario.front.name(),
            provider_label(r),
            load_label(r),
            cell(&vs, targets::GOODPUT),
            cell(&vs, targets::AMPLIFICATION),
            cell(&vs, targets::RECOVERY),
            cell(&vs, targets::P99),
            calm_cell(r),
            r.p99_call_ms(),
            r.success_after().map_or("–".into(), |a| format!("{a:.2}")),
            r.shed(),
            r.provider.wasted,
            r.provider.completed,
            limit_cell(r),
        );
    }
    let _ = writeln!(out);
}

/// The whole summary.
pub fn summary(runs: &[RunResult], skipped: &[Skipped], env: &Env, note: &str) -> String {
    let mut out = String::new();
    header(&mut out, runs, env, note);
    let of =
        |g: Group| -> Vec<&RunResult> { runs.iter().filter(|r| r.scenario.group == g).collect() };

    let main = of(Group::Targets);
    if !main.is_empty() {
        let defaults: Vec<&RunResult> = main
            .iter()
            .copied()
            .filter(|r| r.scenario.front == super::Front::BreakwaterDefault)
            .collect();
        let (pass, total) = targets::tally(&defaults);
        let _ = writeln!(
            out,
            "## The shipped default config against issue 16's targets\n"
        );
        let _ = writeln!(out, "breakwater-default is the README's minimal config (one cluster, one route, no policies) plus the lab's process plumbing (ports, pid file, no access log). Its targets: **{pass} of {total} met**. The other fronts are judged by the same targets for contrast.\n");
        targets_table(&mut out, &main);
    }

    let matrix = of(Group::Matrix);
    if !matrix.is_empty() || !skipped.is_empty() {
        let (pass, total) = targets::tally(&matrix);
        let _ = writeln!(
            out,
            "## Matrix: capacity × service time, default config, spike\n"
        );
        let _ = writeln!(out, "Targets met: **{pass} of {total}**.\n");
        let _ = writeln!(out, "| service time | C | workers | {} | {} | {} | {} | p99 calm | p99 call | after | shed attempts | limit | front CPU |", targets::GOODPUT, targets::AMPLIFICATION, targets::RECOVERY, targets::P99);
        let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|---|---|");
        for r in &matrix {
            let vs = verdicts(r);
            let p = &r.scenario.provider;
            let _ = writeln!(
                out,
                "| {} | {:.0} | {} | {} | {} | {} | {} | {} | {:.0} ms | {} | {} | {} | {:.1} s |",
                label(p.service),
                p.capacity(),
                p.workers,
                cell(&vs, targets::GOODPUT),
                cell(&vs, targets::AMPLIFICATION),
                cell(&vs, targets::RECOVERY),
                cell(&vs, targets::P99),
                calm_cell(r),
                r.p99_call_ms(),
                r.success_after().map_or("–".into(), |a| format!("{a:.2}")),
                r.shed(),
                limit_cell(r),
                r.front_cpu.as_secs_f64(),
            );
        }
        for s in skipped {
            let _ = writeln!(
                out,
                "| {} | {:.0} | – | not run: {} | | | | | | | | | |",
                label(s.service),
                s.capacity,
                s.why
            );
        }
        let _ = writeln!(out);
        if matrix.iter().any(|r| calm_above_bound(r)) {
            let _ = writeln!(out, "{CALM_NOTE}");
        }
    }

    let slow = of(Group::SlowProvider);
    if !slow.is_empty() {
        let _ = writeln!(out, "## Slow provider: service time rises 10× mid-run\n");
        let _ = writeln!(out, "Goodput while slow is over the whole slow phase; settled = seconds after the slowdown until five seconds in a row average ≥ 0.9 of the new capacity; late = goodput over the slow phase's second half.\n");
        let _ = writeln!(out, "| front | provider | load | goodput while slow (× new C) | settled after | late (× new C) | {} | {} | shed attempts | limit before | limit while slow |", targets::AMPLIFICATION, targets::P99);
        let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|");
        for r in &slow {
            let vs = verdicts(r);
            let (from, to) = r.scenario.window();
            let before = limit_stats(r, from.saturating_sub(5), from)
                .map_or("–".into(), |(m, _, _)| format!("{m:.0}"));
            let p = &r.scenario.provider;
            let _ = writeln!(
                out,
                "| {} | {} × {} → {} (C {:.0} → {:.0}) | {} | {} | {} | {:.2} | {} | {} | {} | {} | {} |",
                r.scenario.front.name(),
                p.workers,
                label(p.service),
                label(r.scenario.unloaded_latency()),
                p.capacity(),
                r.scenario.window_capacity(),
                load_label(r),
                cell(&vs, targets::GOODPUT),
                r.settle_secs().map_or("not within the run".into(), |s| format!("{s} s")),
                r.goodput_late_in_window(),
                cell(&vs, targets::AMPLIFICATION),
                cell(&vs, targets::P99),
                r.shed(),
                before,
                limit_stats(r, from + 5, to).map_or("–".into(), |(m, lo, hi)| format!(
                    "{m:.0} ({lo:.0}–{hi:.0})"
                )),
            );
        }
        let _ = writeln!(out);
    }

    let healthy = of(Group::Healthy);
    if !healthy.is_empty() {
        let _ = writeln!(out, "## Healthy upstream: no refusals\n");
        let _ = writeln!(out, "| front | provider | load | offered | attempts | non-2xx | of which shed | errors | timeouts | success | {} | limit |", targets::P99);
        let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|---|");
        for r in &healthy {
            let vs = verdicts(r);
            let _ = writeln!(
                out,
                "| {} | {} | {} for {:?} | {} | {} | {} | {} | {} | {} | {:.4} | {} | {} |",
                r.scenario.front.name(),
                provider_label(r),
                load_label(r),
                r.scenario.length(),
                r.offered(),
                r.attempts(),
                r.non_2xx(),
                r.shed(),
                r.errors(),
                r.timeouts(),
                r.success_in_window(),
                cell(&vs, targets::P99),
                limit_cell(r),
            );
        }
        let (pass, total) = (
            healthy
                .iter()
                .filter(|r| verdict_of(&verdicts(r), targets::NO_REFUSALS).is_some_and(|v| v.pass))
                .count(),
            healthy.len(),
        );
        let _ = writeln!(out, "\nZero refusals: **{pass} of {total}** runs.\n");
    }

    let fleet = of(Group::Fleet);
    if !fleet.is_empty() {
        let _ = writeln!(
            out,
            "## Fleet: several gateways, one provider, no coordination\n"
        );
        let _ = writeln!(out, "The consumer sends attempts to the instances in turn. Limit = the instances' limits summed.\n");
        targets_table(&mut out, &fleet);
        for r in &fleet {
            let (from, to) = r.scenario.window();
            let per: Vec<String> = (0..r.scenario.instances)
                .map(|i| {
                    let ls: Vec<f64> = r
                        .overload
                        .iter()
                        .filter(|s| {
                            s.instance == i
                                && s.cluster == "provider"
                                && (from..to).contains(&s.second)
                        })
                        .map(|s| s.limit)
                        .collect();
                    if ls.is_empty() {
                        "–".into()
                    } else {
                        format!("{:.0}", ls.iter().sum::<f64>() / ls.len() as f64)
                    }
                })
                .collect();
            let _ = writeln!(
                out,
                "{}: mean limit per instance during the spike: {} (provider pool: {} workers).\n",
                r.scenario.name,
                per.join(", "),
                r.scenario.provider.workers
            );
        }
    }
    out
}

/// One row per run, every headline figure: the tables' source.
pub fn runs_csv(runs: &[RunResult]) -> String {
    let mut out = String::from("run,group,front,instances,workers,service_ms,capacity,load,offered,attempts,goodput_x_c,success_in_window,amplification,recovery_s,success_after,p99_ms,p99_calm_ms,p99_call_ms,unloaded_ms,non_2xx,shed,errors,timeouts,failed,provider_received,provider_completed,provider_wasted,limit_mean,front_cpu_s,foreign_cores,targets_met,targets\n");
    for r in runs {
        let p = &r.scenario.provider;
        let vs = verdicts(r);
        let (from, to) = r.scenario.window();
        let _ = writeln!(
            out,
            "{},{:?},{},{},{},{},{:.0},{},{},{},{:.3},{:.4},{:.3},{},{},{:.1},{},{:.1},{:.1},{},{},{},{},{},{},{},{},{},{:.2},{:.2},{},{}",
            r.scenario.name,
            r.scenario.group,
            r.scenario.front.name(),
            r.scenario.instances,
            p.workers,
            p.service.as_millis(),
            p.capacity(),
            load_label(r),
            r.offered(),
            r.attempts(),
            r.goodput_in_window(),
            r.success_in_window(),
            r.amplification(),
            r.recovery_secs().map_or(String::new(), |s| s.to_string()),
            r.success_after().map_or(String::new(), |a| format!("{a:.3}")),
            r.p99_ms(),
            r.p99_calm_ms().map_or(String::new(), |p| format!("{p:.1}")),
            r.p99_call_ms(),
            r.scenario.unloaded_latency().as_secs_f64() * 1000.0,
            r.non_2xx(),
            r.shed(),
            r.errors(),
            r.timeouts(),
            r.failed(),
            r.provider.received,
            r.provider.completed,
            r.provider.wasted,
            limit_stats(r, from, to).map_or(String::new(), |(m, _, _)| format!("{m:.1}")),
            r.front_cpu.as_secs_f64(),
            r.foreign_cores,
            vs.iter().filter(|v| v.pass).count(),
            vs.len(),
        );
    }
    out
}
