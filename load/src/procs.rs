//! Processes the load lab starts: spawning them with a log file, waiting for
//! them to listen, stopping them on drop, and reading what they cost from
//! `/proc` (CPU time and resident memory of a whole process tree, so nginx's
//! and HAProxy's workers are charged to them).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A started process, stopped with its descendants on drop: SIGTERM first
/// (nginx's master then stops its workers), SIGKILL for whatever is left
/// after 3 s, so no orphaned worker keeps burning CPU into the next run.
pub struct Spawned(pub Child);

impl Spawned {
    /// Starts `cmd` with stdout and stderr going to `log`.
    pub fn start(mut cmd: Command, log: &Path) -> std::io::Result<Self> {
        let file = std::fs::File::create(log)?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()?;
        Ok(Self(child))
    }

    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let tree = process_tree(self.pid());
        signal(self.pid(), libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline && matches!(self.0.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(20));
        }
        for &pid in &tree {
            signal(pid, libc::SIGKILL);
        }
        let _ = self.0.wait();
    }
}

fn signal(pid: u32, sig: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: kill(2) has no memory-safety preconditions; a pid that has
        // exited already just yields ESRCH.
        unsafe { libc::kill(pid, sig) };
    }
}

/// A port that was free a moment ago (the OS picks it).
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Waits up to 30 s for `addr` to accept connections.
pub async fn wait_listening(addr: SocketAddr, log_dir: &Path) -> std::io::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        if Instant::now() > deadline {
            return Err(std::io::Error::other(format!(
                "{addr} did not start listening; see {}",
                log_dir.display()
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// The first of `candidates` that exists.
pub fn find_bin(candidates: &[&str]) -> Option<PathBuf> {
    candidates.iter().map(PathBuf::from).find(|p| p.exists())
}

/// The nginx binary, if installed.
pub fn nginx_bin() -> Option<PathBuf> {
    find_bin(&["/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/bin/nginx"])
}

/// `pid` and all its descendants (nginx's workers, for instance).
pub fn process_tree(pid: u32) -> Vec<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(p) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
                continue;
            };
            if let Some(ppid) = stat_fields(p).and_then(|f| f.get(1)?.parse().ok()) {
                parents.push((p, ppid));
            }
        }
    }
    let mut tree = vec![pid];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(
            parents
                .iter()
                .filter(|(_, pp)| *pp == parent)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    tree
}

/// The fields of `/proc/<pid>/stat` after the command name, so index 0 is
/// the state, 1 the ppid, 11 utime and 12 stime.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// CPU time (user + system) a process tree has used so far.
pub fn tree_cpu(pids: &[u32]) -> Duration {
    // SAFETY: sysconf has no preconditions; _SC_CLK_TCK is always valid.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let ticks: u64 = pids
        .iter()
        .filter_map(|&p| {
            let f = stat_fields(p)?;
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .sum();
    Duration::from_secs_f64(ticks as f64 / hz)
}

/// Resident memory of a process tree, in KiB.
pub fn tree_rss_kib(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|p| {
            let status = std::fs::read_to_string(format!("/proc/{p}/status")).ok()?;
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))?
                .split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process_and_its_children() {
        let me = std::process::id();
        let mut child = Command::new("sleep").arg("5").spawn().unwrap();
        let tree = process_tree(me);
        assert!(tree.contains(&me));
        assert!(tree.contains(&child.id()), "{tree:?} lacks the child");
        assert!(tree_rss_kib(&[me]) > 0);
        // Burn some CPU so the tick counter moves.
        let t0 = tree_cpu(&[me]);
        let mut x = 0u64;
        let start = Instant::now();
        while tree_cpu(&[me]) == t0 && start.elapsed() < Duration::from_secs(5) {
            x = x.wrapping_add(std::hint::black_box(x) ^ 7);
        }
        assert!(tree_cpu(&[me]) > t0);
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn dropping_stops_the_whole_tree() {
        // A shell that starts a grandchild and waits on it, as nginx's master
        // waits on its workers.
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg("sleep 30 & wait");
        let dir = std::env::temp_dir();
        let spawned = Spawned::start(
            cmd,
            &dir.join(format!("procs-test-{}.log", std::process::id())),
        )
        .unwrap();
        let root = spawned.pid();
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut tree = process_tree(root);
        while tree.len() < 2 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
            tree = process_tree(root);
        }
        assert!(tree.len() >= 2, "the grandchild did not start: {tree:?}");
        drop(spawned);
        // SIGKILL is delivered asynchronously: give the kernel a moment.
        let alive = || -> Vec<u32> {
            tree.iter()
                .copied()
                .filter(|p| stat_fields(*p).is_some_and(|f| f[0] != "Z"))
                .collect()
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while !alive().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(alive().is_empty(), "still running: {:?}", alive());
    }
}
