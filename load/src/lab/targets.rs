//! Issue 16's targets for the shipped default config, checked per run.
//!
//! At 2× and 3× C with 2 retries: goodput ≥ 0.9 C during the spike,
//! upstream amplification ≤ 1.05, ≥ 95% goodput within 5 s after the
//! spike, and p99 of admitted (successful) calls ≤ 2× the provider's
//! unloaded latency (its service time). An admitted call is the attempt the
//! front let through and the provider answered: its latency holds the wait
//! in the front's queue and the provider's round trip, not the refused
//! attempts the consumer made before it (the summary shows that figure
//! too, as "p99 call"). A slow provider: goodput ≥ 0.9 of
//! the new capacity while slow. A healthy upstream: no refusal at all.

use super::run::RunResult;
use super::scenario::Load;

/// One target and how a run did against it.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub target: &'static str,
    /// The measured figure, formatted.
    pub measured: String,
    pub pass: bool,
}

impl Verdict {
    pub fn mark(&self) -> &'static str {
        if self.pass {
            "pass"
        } else {
            "**FAIL**"
        }
    }

    /// `0.97 (pass)`.
    pub fn cell(&self) -> String {
        format!("{} ({})", self.measured, self.mark())
    }
}

pub const GOODPUT: &str = "goodput ≥ 0.9 C";
pub const AMPLIFICATION: &str = "amplification ≤ 1.05";
pub const RECOVERY: &str = "≥ 95% goodput within 5 s";
pub const P99: &str = "p99 ≤ 2× unloaded";
pub const NO_REFUSALS: &str = "zero refusals";

/// The verdicts that apply to `run`'s kind of load.
pub fn verdicts(run: &RunResult) -> Vec<Verdict> {
    let unloaded_ms = run.scenario.unloaded_latency().as_secs_f64() * 1000.0;
    let goodput = Verdict {
        target: GOODPUT,
        measured: format!("{:.2}", run.goodput_in_window()),
        pass: run.goodput_in_window() >= 0.9,
    };
    let amplification = Verdict {
        target: AMPLIFICATION,
        measured: format!("{:.2}", run.amplification()),
        pass: run.amplification() <= 1.05,
    };
    let p99 = Verdict {
        target: P99,
        measured: format!("{:.0} ms of {:.0}", run.p99_ms(), 2.0 * unloaded_ms),
        pass: run.p99_ms() <= 2.0 * unloaded_ms,
    };
    match run.scenario.load {
        Load::Spike { .. } => vec![
            goodput,
            amplification,
            Verdict {
                target: RECOVERY,
                measured: run
                    .recovery_secs()
                    .map_or("never".into(), |s| format!("{s} s")),
                pass: run.recovery_secs().is_some_and(|s| s <= 5),
            },
            p99,
        ],
        Load::SlowProvider { .. } => vec![goodput, amplification, p99],
        Load::Steady { .. } => {
            let refused = run.non_2xx() + run.errors() + run.timeouts();
            vec![
                Verdict {
                    target: NO_REFUSALS,
                    measured: format!(
                        "{} non-2xx, {} errors, {} timeouts",
                        run.non_2xx(),
                        run.errors(),
                        run.timeouts()
                    ),
                    pass: refused == 0,
                },
                p99,
            ]
        }
    }
}

/// `passed of total`.
pub fn tally(runs: &[&RunResult]) -> (usize, usize) {
    runs.iter()
        .flat_map(|r| verdicts(r))
        .fold((0, 0), |(p, n), v| (p + usize::from(v.pass), n + 1))
}
