//! The part of a bench gateway's config every load-lab bench shares.

use std::path::Path;

/// `server`, `listeners`, `admin` and `logging` for a bench gateway:
/// `threads` workers, pid and upgrade files in `dir`, no config watch, a
/// one-second drain, warnings only and no access log (benches measure the
/// proxy, not the logger). Ends with a newline; the caller appends the rest.
pub fn bench_preamble(threads: usize, dir: &Path, listen: &str, admin: &str) -> String {
    format!(
        r#"server:
  threads: {threads}
  pid_file: {dir}/bw.pid
  upgrade_sock: {dir}/bw.sock
  watch_config: false
  grace_period_secs: 1
  graceful_shutdown_timeout_secs: 1
listeners:
  - address: {listen}
admin:
  address: {admin}
logging:
  level: warn
  access_log: false
"#,
        dir = dir.display()
    )
}
