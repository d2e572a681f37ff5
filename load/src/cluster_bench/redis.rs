//! The bench's own Redis: started on a free loopback port with persistence
//! off (no RDB or AOF writes competing for the disk and CPU), stopped on
//! drop, and asked how many commands it has executed.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use crate::procs::{wait_listening, PortLease, Spawned};

pub struct Redis {
    pub process: Spawned,
    pub addr: SocketAddr,
}

/// Starts `redis-server` on a free port, its log and working dir in `dir`.
pub async fn start(dir: &Path) -> std::io::Result<Redis> {
    std::fs::create_dir_all(dir)?;
    let lease = PortLease::new()?;
    let port = lease.port();
    let mut cmd = Command::new("redis-server");
    cmd.arg("--port")
        .arg(port.to_string())
        .arg("--bind")
        .arg("127.0.0.1")
        .arg("--save")
        .arg("")
        .arg("--appendonly")
        .arg("no")
        .arg("--dir")
        .arg(dir);
    let process = Spawned::start(cmd, &dir.join("redis.log"))
        .map_err(|e| {
            std::io::Error::other(format!(
                "cannot run redis-server ({e}); apt-get install -y redis-server"
            ))
        })?
        .holding([lease]);
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    wait_listening(addr, dir).await?;
    Ok(Redis { process, addr })
}

/// `INFO commandstats`: calls per command. Commands a script runs
/// (`redis.call`) are counted there too, under their own names, so the sum
/// is the work Redis did, and the script calls are the round trips clients
/// made for it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandStats(pub BTreeMap<String, u64>);

impl CommandStats {
    /// Every command but `INFO`, so that reading the figure does not move it.
    pub fn total(&self) -> u64 {
        self.0
            .iter()
            .filter(|(c, _)| c.as_str() != "info")
            .map(|(_, n)| n)
            .sum()
    }

    /// `EVALSHA`, `EVAL` and `FCALL` calls: one per sync round and shard.
    pub fn scripts(&self) -> u64 {
        self.0
            .iter()
            .filter(|(c, _)| c.starts_with("eval") || c.starts_with("fcall"))
            .map(|(_, n)| n)
            .sum()
    }

    /// What `later` counted that `self` had not.
    pub fn delta(&self, later: &CommandStats) -> CommandStats {
        CommandStats(
            later
                .0
                .iter()
                .map(|(c, n)| (c.clone(), n.saturating_sub(*self.0.get(c).unwrap_or(&0))))
                .filter(|(_, n)| *n > 0)
                .collect(),
        )
    }
}

impl Redis {
    pub fn commands(&self) -> std::io::Result<CommandStats> {
        let out = Command::new("redis-cli")
            .arg("-p")
            .arg(self.addr.port().to_string())
            .arg("INFO")
            .arg("commandstats")
            .output()?;
        if !out.status.success() {
            return Err(std::io::Error::other(format!(
                "redis-cli failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(parse(&String::from_utf8_lossy(&out.stdout)))
    }
}

/// `cmdstat_<name>:calls=<n>,...` lines.
pub fn parse(commandstats: &str) -> CommandStats {
    CommandStats(
        commandstats
            .lines()
            .filter_map(|l| {
                let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
                let calls = rest.split(',').find_map(|f| f.strip_prefix("calls="))?;
                Some((name.to_string(), calls.trim().parse().ok()?))
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_calls_but_not_info_and_tells_scripts_apart() {
        let stats = "# Commandstats\r\n\
            cmdstat_evalsha:calls=120,usec=3000,usec_per_call=25.00,rejected_calls=0,failed_calls=0\r\n\
            cmdstat_info:calls=7,usec=100,usec_per_call=14.29,rejected_calls=0,failed_calls=0\r\n\
            cmdstat_publish:calls=3,usec=9,usec_per_call=3.00,rejected_calls=0,failed_calls=0\r\n";
        let before = parse(stats);
        assert_eq!(before.total(), 123);
        assert_eq!(before.scripts(), 120);
        let later = parse(&stats.replace("calls=120", "calls=130"));
        let d = before.delta(&later);
        assert_eq!((d.total(), d.scripts()), (10, 10));
        assert_eq!(d.0.len(), 1);
    }
}
