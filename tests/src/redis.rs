//! Real Redis servers on loopback: one standalone [`RedisServer`] or a
//! [`RedisCluster`] of masters, each a `redis-server` process (Debian package
//! `redis-server`, installed by `.ci/setup`) on ephemeral ports with its own
//! temp dir, killed when dropped.
//!
//! Tests need the real server, not a fake: what matters is how the gateway
//! behaves against Redis's own replies, redirections and failures (a killed
//! server, a restarted one). Nothing is persisted (`--save ""`,
//! `--appendonly no`), so a restart comes back empty.
//!
//! Each server's port (and a cluster node's bus port) is a [`PortLease`]
//! the server holds for its whole life (see `ports`): redis-server binds
//! it with `SO_REUSEADDR`, nobody else can take it, and a
//! [`RedisServer::restart`] comes back on the same port without a race.
//!
//! The API is blocking so that it works from sync and `#[tokio::test]` code
//! alike; starting takes milliseconds for a server and about a second for a
//! cluster, during which the calling thread is parked.

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::ports::PortLease;

/// How long a server may take to answer `PING` after it is spawned.
const READY_WITHIN: Duration = Duration::from_secs(10);
/// How long a cluster may take from `--cluster create` to `cluster_state:ok`.
const CLUSTER_OK_WITHIN: Duration = Duration::from_secs(20);

/// One `redis-server` process on `127.0.0.1`.
pub struct RedisServer {
    port: u16,
    /// The port and, for a cluster node, its bus port: held until drop.
    _leases: Vec<PortLease>,
    /// Working dir (`--dir`) and log; kept across [`RedisServer::restart`] so
    /// a cluster node finds its `nodes-<port>.conf` again.
    dir: TempDir,
    log_path: PathBuf,
    /// Options after the common ones (cluster mode), reused on restart.
    extra: Vec<String>,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a standalone server on a free port and waits until it answers
    /// `PING`.
    pub fn start() -> RedisServer {
        launch(false)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// What the server wrote to stdout and stderr (its log), across restarts.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Whether the server answers `PING` with `+PONG` right now.
    pub fn ping(&self) -> bool {
        ping(self.port)
    }

    /// `redis-cli -p <port> <args>`: its trimmed stdout. Replies are in
    /// redis-cli's raw format (`DBSIZE` gives `3`, `GET` of a missing key an
    /// empty string); when the server is down stdout is empty.
    pub fn command(&self, args: &[&str]) -> String {
        redis_cli(&["-p", &self.port.to_string()], args).unwrap_or_else(|(out, _)| out)
    }

    /// Like [`RedisServer::command`], but `Err` (stdout and stderr) when
    /// redis-cli fails, e.g. because it cannot connect.
    pub fn try_command(&self, args: &[&str]) -> Result<String, String> {
        redis_cli(&["-p", &self.port.to_string()], args)
            .map_err(|(out, err)| format!("{out}\n{err}").trim().to_string())
    }

    /// SIGKILLs the server and reaps it, so its port is free when this
    /// returns. Nothing happens if it is not running.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port, dir and options (killing it
    /// first if it still runs) and waits until it answers `PING`. The port
    /// stayed leased, so no other process can have taken it; panics if the
    /// server still does not come up.
    pub fn restart(&mut self) {
        self.kill();
        self.child = Some(self.spawn());
        if let Err(why) = self.wait_ready() {
            panic!(
                "redis-server did not restart on port {}: {why}\n{}",
                self.port,
                self.log()
            );
        }
    }

    fn spawn(&self) -> Child {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("redis log file");
        let err = log.try_clone().expect("redis log file");
        Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--protected-mode", "no"])
            .args(["--daemonize", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.extra)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run redis-server ({e}); install it with .ci/setup (Debian package redis-server)")
            })
    }

    /// Polls `PING` until `+PONG`. `Err` says why not: the process exited
    /// or the deadline passed.
    fn wait_ready(&mut self) -> Result<(), Unready> {
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                self.child = None;
                return Err(Unready::Exited(status.to_string()));
            }
            if ping(self.port) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Unready::Timeout);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

enum Unready {
    Exited(String),
    Timeout,
}

impl std::fmt::Display for Unready {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unready::Exited(status) => write!(f, "exited with {status}"),
            Unready::Timeout => write!(f, "no PONG within {READY_WITHIN:?}"),
        }
    }
}

/// Starts a server on a leased port, in cluster mode (with a leased bus
/// port) if `cluster`, and waits until it answers `PING`.
fn launch(cluster: bool) -> RedisServer {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut leases = vec![PortLease::new().expect("a loopback port lease")];
    let port = leases[0].port();
    let mut extra = Vec::new();
    if cluster {
        // The bus port defaults to port + 10000, which overflows for
        // ephemeral ports above 55535; lease one instead.
        let bus = PortLease::new().expect("a loopback port lease");
        extra = [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            &format!("nodes-{port}.conf"),
            "--cluster-node-timeout",
            "2000",
            "--cluster-port",
            &bus.port().to_string(),
        ]
        .map(String::from)
        .to_vec();
        leases.push(bus);
    }
    let mut server = RedisServer {
        port,
        _leases: leases,
        log_path: dir.path().join("redis.log"),
        dir,
        extra,
        child: None,
    };
    server.child = Some(server.spawn());
    if let Err(why) = server.wait_ready() {
        panic!("redis-server on port {port}: {why}\n{}", server.log());
    }
    server
}

/// A raw `PING`: true when the answer is `+PONG` (not `-LOADING`, not a
/// refused or silent connection).
fn ping(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut conn) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = conn.set_read_timeout(Some(Duration::from_millis(500)));
    let mut reply = [0u8; 7];
    conn.write_all(b"PING\r\n").is_ok()
        && conn.read_exact(&mut reply).is_ok()
        && &reply == b"+PONG\r\n"
}

/// Runs `redis-cli <pre> <args>`: `Ok(stdout)` on success, else
/// `Err((stdout, stderr))`, both trimmed.
fn redis_cli(pre: &[&str], args: &[&str]) -> Result<String, (String, String)> {
    let out = Command::new("redis-cli")
        .args(pre)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run redis-cli ({e}); install it with .ci/setup (Debian package redis-server)")
        });
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if out.status.success() {
        Ok(stdout)
    } else {
        Err((
            stdout,
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ))
    }
}

/// A Redis Cluster of masters without replicas, one `redis-server` per
/// master, all slots assigned and `cluster_state:ok` on every node.
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts `masters` (at least 3, as `redis-cli --cluster create` demands)
    /// nodes, joins them with the slots split evenly, and waits until every
    /// node reports `cluster_state:ok`.
    pub fn start(masters: usize) -> RedisCluster {
        assert!(
            masters >= 3,
            "a Redis Cluster needs at least 3 masters, asked for {masters}"
        );
        let nodes = (0..masters).map(|_| launch(true)).collect();
        let cluster = RedisCluster { nodes };
        let deadline = Instant::now() + CLUSTER_OK_WITHIN;
        let addrs: Vec<String> = cluster
            .ports()
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let mut create = vec!["--cluster", "create"];
        create.extend(addrs.iter().map(String::as_str));
        create.extend(["--cluster-replicas", "0", "--cluster-yes"]);
        if let Err((out, err)) = redis_cli(&[], &create) {
            panic!(
                "redis-cli --cluster create failed:\n{out}\n{err}\n{}",
                cluster.logs()
            );
        }
        // `create` returns once the nodes agree on the config; each node's
        // state turns ok on its own schedule.
        loop {
            let states: Vec<String> = cluster
                .nodes
                .iter()
                .map(|n| n.command(&["CLUSTER", "INFO"]))
                .collect();
            if states.iter().all(|s| s.contains("cluster_state:ok")) {
                return cluster;
            }
            if Instant::now() > deadline {
                panic!(
                    "cluster not ok after {CLUSTER_OK_WITHIN:?}:\n{}\n{}",
                    states.join("\n--\n"),
                    cluster.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(RedisServer::port).collect()
    }

    /// `redis://127.0.0.1:<port>` of every node.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// The nodes, e.g. to kill or restart one of them.
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    pub fn nodes_mut(&mut self) -> &mut [RedisServer] {
        &mut self.nodes
    }

    /// `redis-cli -c -p <first port> <args>`: its trimmed stdout. `-c`
    /// follows `MOVED`/`ASK`, so a key command reaches the key's master.
    pub fn command(&self, args: &[&str]) -> String {
        let port = self.nodes[0].port.to_string();
        redis_cli(&["-c", "-p", &port], args).unwrap_or_else(|(out, _)| out)
    }

    /// The hash slot of `key` (`CLUSTER KEYSLOT`), honouring `{hash tags}`.
    pub fn keyslot(&self, key: &str) -> u16 {
        let out = self.command(&["CLUSTER", "KEYSLOT", key]);
        out.parse()
            .unwrap_or_else(|_| panic!("CLUSTER KEYSLOT {key:?} answered {out:?}"))
    }

    fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("== redis-server :{} ==\n{}", n.port, n.log()))
            .collect::<Vec<_>>()
            .join("\n")
    }
}
