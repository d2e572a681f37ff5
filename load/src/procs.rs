//! Processes the load lab starts: spawning them with a log file, handing
//! them loopback ports that nobody else can take, waiting for them to
//! listen, stopping them on drop, and reading what they cost from `/proc`
//! (CPU time and resident memory of a whole process tree, so nginx's and
//! HAProxy's workers are charged to them).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

/// A started process, stopped with its descendants on drop: SIGTERM first
/// (nginx's master then stops its workers), SIGKILL for whatever is left
/// after 3 s, so no orphaned worker keeps burning CPU into the next run.
/// The ports it was given ([`Spawned::holding`]) are released after it is
/// gone.
pub struct Spawned(pub Child, Vec<PortLease>);

impl Spawned {
    /// Starts `cmd` with stdout and stderr going to `log`.
    pub fn start(mut cmd: Command, log: &Path) -> std::io::Result<Self> {
        let file = std::fs::File::create(log)?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()?;
        Ok(Self(child, Vec::new()))
    }

    /// Keeps `leases` until the process is stopped, so that its ports stay
    /// out of everyone else's reach for its whole life.
    pub fn holding(mut self, leases: impl IntoIterator<Item = PortLease>) -> Self {
        self.1.extend(leases);
        self
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

/// A loopback port reserved for a child process, held until dropped.
///
/// Binding port 0 and closing the socket again (what this module used to
/// do) leaves a window in which another socket (a parallel run's listener,
/// the source port of an outgoing connection: the lab makes thousands) can
/// take the port before the child binds it. A lease is a socket bound with
/// `SO_REUSEADDR` and *not* listening: on Linux it keeps the port out of the
/// kernel's choice for port 0 and for outgoing connections, and out of
/// every explicit bind without `SO_REUSEADDR`, while a child that binds it
/// with `SO_REUSEADDR` and listens succeeds, because the lease does not
/// listen. Every child the lab starts sets it (Pingora, nginx, HAProxy,
/// redis-server, Tokio's and mio's listeners). The harness in `tests/`
/// leases its ports with this too (`tests/src/ports.rs` has the unit tests
/// of these semantics); keep the lease for the child's whole life
/// ([`Spawned::holding`]).
#[derive(Debug)]
pub struct PortLease {
    _socket: Socket,
    addr: SocketAddr,
}

impl PortLease {
    /// Leases a loopback port the kernel picks.
    pub fn new() -> std::io::Result<PortLease> {
        // Close-on-exec (socket2's default): children do not inherit it.
        let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
        socket.set_reuse_address(true)?;
        socket.bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, 0)).into())?;
        let addr = socket
            .local_addr()?
            .as_socket()
            .ok_or_else(|| std::io::Error::other("a leased port without an address"))?;
        Ok(PortLease {
            _socket: socket,
            addr,
        })
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
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

/// CPU time the whole machine has spent busy so far (every core: user,
/// nice, system, steal), from `/proc/stat`. Interrupt time is left out: on
/// a loopback lab it is mostly the lab's own packets, which no process is
/// charged for.
pub fn machine_busy() -> Duration {
    // SAFETY: as in `tree_cpu`.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let ticks: u64 = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| {
            let line = s.lines().next()?.to_owned();
            let f: Vec<u64> = line
                .split_whitespace()
                .skip(1)
                .filter_map(|x| x.parse().ok())
                .collect();
            // user nice system idle iowait irq softirq steal
            Some(
                f.iter()
                    .take(8)
                    .enumerate()
                    .filter(|(i, _)| [0, 1, 2, 7].contains(i))
                    .map(|(_, v)| v)
                    .sum(),
            )
        })
        .unwrap_or(0);
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
    fn a_leased_port_is_kept_from_others_and_given_to_a_reusing_child() {
        let lease = PortLease::new().unwrap();
        // A plain bind (no SO_REUSEADDR) cannot take it.
        let plain = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        assert!(plain.bind(&lease.addr().into()).is_err());
        // A child that binds with SO_REUSEADDR and listens, as the lab's
        // children do (Tokio's listener sets it), gets it.
        let child = std::net::TcpListener::bind(lease.addr()).expect("the child binds it");
        let conn = std::net::TcpStream::connect(lease.addr()).unwrap();
        assert_eq!(
            child.accept().unwrap().1,
            conn.local_addr().unwrap(),
            "the child serves on the leased port"
        );
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
