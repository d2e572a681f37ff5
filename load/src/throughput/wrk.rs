//! Running wrk and reading its report.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// What one wrk run reports.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WrkReport {
    pub requests: u64,
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Responses outside 2xx/3xx plus socket errors: should be 0 in a fair run.
    pub errors: u64,
}

/// The wrk options every contender gets.
#[derive(Debug, Clone)]
pub struct WrkLoad {
    pub threads: usize,
    pub connections: usize,
    pub duration: Duration,
    /// A Lua script shaping the requests (paths, users), or none for a plain GET.
    pub script: Option<std::path::PathBuf>,
}

/// The wrk command line for `load` against `url`, for callers that run
/// several wrk processes at once (the cluster bench).
pub fn command(load: &WrkLoad, url: &str) -> Command {
    let mut cmd = Command::new("wrk");
    cmd.arg(format!("-t{}", load.threads))
        .arg(format!("-c{}", load.connections))
        .arg(format!("-d{}s", load.duration.as_secs().max(1)))
        // wrk's own default (2 s) counts slower answers as timeouts, not
        // latencies: a proxy under callgrind answers its first requests
        // that slowly while valgrind translates its code.
        .arg("--timeout")
        .arg("10s")
        .arg("--latency");
    if let Some(script) = &load.script {
        cmd.arg("-s").arg(script);
    }
    cmd.arg(url);
    cmd
}

/// Runs wrk against `url` and parses its report.
pub fn run(load: &WrkLoad, url: &str) -> std::io::Result<WrkReport> {
    let out = command(load, url).output().map_err(|e| {
        std::io::Error::other(format!("cannot run wrk ({e}); apt-get install -y wrk"))
    })?;
    if !out.status.success() {
        return Err(std::io::Error::other(format!(
            "wrk failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    parse(&String::from_utf8_lossy(&out.stdout))
        .ok_or_else(|| std::io::Error::other("could not read wrk's report"))
}

/// Parses wrk's `--latency` report.
pub fn parse(report: &str) -> Option<WrkReport> {
    let mut r = WrkReport::default();
    for line in report.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["50%", v] => r.p50_ms = latency_ms(v)?,
            ["99%", v] => r.p99_ms = latency_ms(v)?,
            ["Requests/sec:", v] => r.rps = v.parse().ok()?,
            [n, "requests", "in", ..] => r.requests = n.parse().ok()?,
            ["Non-2xx", "or", "3xx", "responses:", n] => r.errors += n.parse::<u64>().ok()?,
            ["Socket", "errors:", rest @ ..] => {
                r.errors += rest
                    .iter()
                    .filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok())
                    .sum::<u64>()
            }
            _ => {}
        }
    }
    (r.requests > 0).then_some(r)
}

/// `612.00us`, `1.25ms`, `1.01s` → milliseconds.
fn latency_ms(v: &str) -> Option<f64> {
    let (num, scale) = if let Some(n) = v.strip_suffix("us") {
        (n, 1e-3)
    } else if let Some(n) = v.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1e3)
    } else {
        return None;
    };
    Some(num.parse::<f64>().ok()? * scale)
}

/// The request mix: 100 items and 1000 users, so per-user limits and key
/// tables see many keys. Every contender gets the same script.
pub fn write_mix_script(path: &Path) -> std::io::Result<()> {
    std::fs::write(
        path,
        r#"-- Breakwater throughput bench: rotate over items and users.
local n = 0
request = function()
  n = n + 1
  return wrk.format("GET", "/goods/" .. (n % 100), { ["x-user-id"] = "user" .. (n % 1000) })
end
"#,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORT: &str = "Running 10s test @ http://127.0.0.1:18080/goods/1
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.30ms    0.77ms  18.41ms   92.13%
    Req/Sec    25.31k     4.56k   32.26k    59.26%
  Latency Distribution
     50%  612.00us
     75%    1.29ms
     90%    1.63ms
     99%    1.01s
  251845 requests in 10.00s, 54.76MB read
  Socket errors: connect 0, read 2, write 0, timeout 3
  Non-2xx or 3xx responses: 7
Requests/sec:  25178.54
Transfer/sec:      5.47MB
";

    #[test]
    fn reads_throughput_latency_and_errors() {
        let r = parse(REPORT).unwrap();
        assert_eq!(r.requests, 251_845);
        assert_eq!(r.rps, 25_178.54);
        assert!((r.p50_ms - 0.612).abs() < 1e-9);
        assert_eq!(r.p99_ms, 1010.0);
        assert_eq!(r.errors, 12);
    }

    #[test]
    fn a_report_without_requests_is_rejected() {
        assert_eq!(parse("wrk: connection refused"), None);
    }
}
