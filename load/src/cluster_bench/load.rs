//! The load: one wrk per instance, all started at once, and the Lua
//! scripts that shape their requests.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::procs::Spawned;
use crate::throughput::wrk::{self, WrkLoad, WrkReport};

/// The mix: `x-user-id` drawn from 1000 users and `/goods/<id>` from 100
/// ids, independently, so the per-user limit tracks ~1000 keys and the
/// hot-key rule ~100 on every instance — what a global policy has to sync.
pub fn write_mix_script(path: &Path) -> std::io::Result<()> {
    std::fs::write(
        path,
        r#"-- Breakwater cluster bench: random users and items.
request = function()
  return wrk.format("GET", "/goods/" .. math.random(0, 99),
    { ["x-user-id"] = "user" .. math.random(0, 999) })
end
"#,
    )
}

/// Every request from one user, `hot`, so the per-user limit is the only
/// thing between wrk and the upstream (the limit phase).
pub fn write_hot_user_script(path: &Path) -> std::io::Result<()> {
    std::fs::write(
        path,
        r#"-- Breakwater cluster bench: one user for the whole fleet.
local n = 0
request = function()
  n = n + 1
  return wrk.format("GET", "/goods/" .. (n % 100), { ["x-user-id"] = "hot" })
end
"#,
    )
}

/// wrk processes running side by side, one per target.
pub struct Running {
    procs: Vec<(Spawned, PathBuf)>,
    pub started: Instant,
    deadline: Instant,
}

/// Starts one wrk per target at once; each writes its report to
/// `dir/<tag>-<i>.wrk.txt`.
pub fn start(
    load: &WrkLoad,
    targets: &[SocketAddr],
    dir: &Path,
    tag: &str,
) -> std::io::Result<Running> {
    let mut procs = Vec::new();
    for (i, addr) in targets.iter().enumerate() {
        let log = dir.join(format!("{tag}-{i}.wrk.txt"));
        let cmd = wrk::command(load, &format!("http://{addr}/goods/1"));
        let p = Spawned::start(cmd, &log).map_err(|e| {
            std::io::Error::other(format!("cannot run wrk ({e}); apt-get install -y wrk"))
        })?;
        procs.push((p, log));
    }
    let started = Instant::now();
    Ok(Running {
        procs,
        started,
        // wrk stops itself after its duration; past this, something hangs.
        deadline: started + load.duration + Duration::from_secs(15),
    })
}

impl Running {
    /// Whether every wrk has exited.
    pub fn done(&mut self) -> bool {
        self.procs
            .iter_mut()
            .all(|(p, _)| !matches!(p.0.try_wait(), Ok(None)))
    }

    /// Waits for every wrk (killing them past the deadline) and reads their
    /// reports, in target order.
    pub async fn finish(mut self) -> std::io::Result<Vec<WrkReport>> {
        while !self.done() {
            if Instant::now() > self.deadline {
                return Err(std::io::Error::other("wrk did not finish in time"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut reports = Vec::new();
        for (_, log) in &self.procs {
            let text = std::fs::read_to_string(log)?;
            reports.push(wrk::parse(&text).ok_or_else(|| {
                std::io::Error::other(format!("could not read wrk's report in {}", log.display()))
            })?);
        }
        Ok(reports)
    }
}
