//! Instructions per request, counted by callgrind: the throughput bench's
//! contenders, one at a time, each run under `valgrind --tool=callgrind`.
//!
//! Why: CPU time per request on a shared 2-core VM moves ±10–15% between
//! runs, too much to tell a 4% change from noise. Callgrind counts every
//! user-space instruction the proxy process executes (all its threads), so
//! the same build under the same load gives the same count within ~1%.
//!
//! How: start the contender under callgrind with instrumentation off (fast
//! start-up), switch it on (`callgrind_control -i on`), warm up with wrk,
//! zero the counters, run the measured wrk, dump, and divide the dump's
//! instruction total by the requests wrk counted. Requests in flight at the
//! edges (≤ the connection count) are the error, well under 1%.
//!
//! Limits: kernel work (the syscalls, the loopback TCP stack) is not
//! counted: it is about half of a proxy's CPU here, and about the same per
//! request for every contender (two reads and two writes). An instruction
//! is not a nanosecond: memory stalls and branch misses are not weighed, and
//! `rep movsb` counts once per byte copied. Under valgrind the process runs
//! ~50× slower and one thread at a time, so only the count means anything;
//! every contender gets one worker.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use super::{contenders, start_upstream, wrk, BenchConfig, Contender};

/// One contender's count.
#[derive(Debug, Clone)]
pub struct InstrSample {
    pub contender: Contender,
    pub requests: u64,
    pub instructions: u64,
}

impl InstrSample {
    pub fn per_request(&self) -> f64 {
        self.instructions as f64 / self.requests.max(1) as f64
    }
}

/// Whether valgrind (and its `callgrind_control`) can be run here.
pub fn available() -> bool {
    ["valgrind", "callgrind_control"].iter().all(|tool| {
        Command::new(tool)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

/// Counts each contender of `cfg` in turn (`direct` is skipped: it is not a
/// proxy). `cfg.bins.workers` should be 1; `cfg.bins.wrapper` is replaced.
pub async fn run(cfg: &BenchConfig) -> std::io::Result<(Vec<InstrSample>, Vec<Contender>)> {
    std::fs::create_dir_all(&cfg.bins.work_dir)?;
    let (upstream, _, _upstream) = start_upstream(cfg).await?;
    let mut samples = Vec::new();
    let mut skipped = Vec::new();
    for &c in &cfg.contenders {
        if c == Contender::Direct {
            continue;
        }
        match count(cfg, c, upstream).await? {
            Some(s) => {
                eprintln!(
                    "{:<17} {:>8} requests  {:>9.0} instructions/request",
                    c.name(),
                    s.requests,
                    s.per_request()
                );
                samples.push(s);
            }
            None => skipped.push(c),
        }
    }
    Ok((samples, skipped))
}

async fn count(
    cfg: &BenchConfig,
    c: Contender,
    upstream: SocketAddr,
) -> std::io::Result<Option<InstrSample>> {
    let out = cfg.bins.work_dir.join(format!("{}.callgrind", c.name()));
    let mut bins = cfg.bins.clone();
    bins.wrapper = vec![
        "valgrind".into(),
        "--tool=callgrind".into(),
        "--instr-atstart=no".into(),
        OsString::from(format!("--callgrind-out-file={}", out.display())),
    ];
    let Some(running) = contenders::start(c, upstream, &bins).await? else {
        return Ok(None);
    };
    let pid = running.process.pid();
    let url = format!("http://{}/goods/1", running.addr);
    control(pid, &["-i", "on"])?;
    if !cfg.warmup.is_zero() {
        let warm = wrk::WrkLoad {
            duration: cfg.warmup,
            ..cfg.load.clone()
        };
        // Only runs the code once under instrumentation (valgrind translates
        // it then); a warm-up too slow to finish a request is no error.
        let _ = wrk::run(&warm, &url);
    }
    control(pid, &["-z"])?;
    let report = wrk::run(&cfg.load, &url)?;
    control(pid, &["-d"])?;
    drop(running);
    let instructions = read_total(&dump_path(&out))?;
    Ok(Some(InstrSample {
        contender: c,
        requests: report.requests,
        instructions,
    }))
}

/// Sends one `callgrind_control` command to the process `pid`.
fn control(pid: u32, args: &[&str]) -> std::io::Result<()> {
    let out = Command::new("callgrind_control")
        .args(args)
        .arg(pid.to_string())
        .output()
        .map_err(|e| {
            std::io::Error::other(format!(
                "cannot run callgrind_control ({e}); apt-get install -y valgrind"
            ))
        })?;
    if !out.status.success() {
        return Err(std::io::Error::other(format!(
            "callgrind_control {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(())
}

/// Callgrind writes the first explicit dump to `<out>.1`.
fn dump_path(out: &Path) -> std::path::PathBuf {
    let mut p = out.as_os_str().to_owned();
    p.push(".1");
    p.into()
}

/// The instruction total of a callgrind dump.
fn read_total(path: &Path) -> std::io::Result<u64> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| std::io::Error::other(format!("no callgrind dump at {path:?}: {e}")))?;
    parse_total(&text)
        .ok_or_else(|| std::io::Error::other(format!("no instruction total in {path:?}")))
}

/// The `summary:` (or older `totals:`) line of a dump: its first event is Ir.
pub fn parse_total(dump: &str) -> Option<u64> {
    dump.lines()
        .find_map(|l| {
            l.strip_prefix("summary:")
                .or_else(|| l.strip_prefix("totals:"))
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// The markdown table: each contender's instructions per request, and how it
/// compares with nginx and with bare Pingora when those were counted.
pub fn table(samples: &[InstrSample], skipped: &[Contender], cfg: &BenchConfig) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "callgrind, user-space instructions per request (all threads of the proxy process); \
         wrk {} thread(s), {} connections, {}s counted after {}s of warm-up; 1 worker per proxy.\n",
        cfg.load.threads,
        cfg.load.connections,
        cfg.load.duration.as_secs(),
        cfg.warmup.as_secs()
    );
    out.push_str(
        "| contender | requests counted | instructions/request | × nginx | × bare Pingora |\n",
    );
    out.push_str("|---|---|---|---|---|\n");
    let base = |c: Contender| {
        samples
            .iter()
            .find(|s| s.contender == c)
            .map(InstrSample::per_request)
    };
    let ratio =
        |v: f64, b: Option<f64>| b.map_or_else(|| "–".to_string(), |b| format!("{:.2}", v / b));
    for s in samples {
        let v = s.per_request();
        let _ = writeln!(
            out,
            "| {} | {} | {:.0} | {} | {} |",
            s.contender.name(),
            s.requests,
            v,
            ratio(v, base(Contender::Nginx)),
            ratio(v, base(Contender::BarePingora))
        );
    }
    for c in skipped {
        let _ = writeln!(out, "| {} | not installed: skipped | | | |", c.name());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_instruction_total_of_a_dump() {
        let dump = "version: 1\ncreator: callgrind-3.19.0\nevents: Ir\n\nfn=(1) main\n3 10\n\nsummary: 773697922\ntotals: 773697922\n";
        assert_eq!(parse_total(dump), Some(773_697_922));
        assert_eq!(parse_total("events: Ir\ntotals: 42 7\n"), Some(42));
        assert_eq!(parse_total("events: Ir\n"), None);
        assert_eq!(
            dump_path(Path::new("/tmp/x.callgrind")),
            Path::new("/tmp/x.callgrind.1")
        );
    }
}
