//! The throughput bench's contenders and how each is started. Every proxy
//! gets the same worker count, keeps upstream connections alive, logs no
//! access lines, and adds the same request headers (X-Forwarded-For,
//! X-Forwarded-Proto, X-Request-Id) — except bare Pingora, which shows the
//! framework's floor with its defaults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::procs::{find_bin, nginx_bin, wait_listening, PortLease, Spawned};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contender {
    /// wrk straight to the upstream; the CPU charged is the upstream's.
    Direct,
    Nginx,
    Haproxy,
    /// Pingora's proxy with the default `ProxyHttp` (`bare-pingora`).
    BarePingora,
    /// Breakwater, one route, no policies: the shipped defaults, the
    /// cluster's overload gate included.
    BreakwaterBare,
    /// The same with `overload: off`: what the default gate costs is the
    /// difference.
    BreakwaterNoGate,
    /// Breakwater with per-IP and per-user rate limits, per-user abuse
    /// windows, per-user hot-key detection, a circuit breaker and a
    /// concurrency limit.
    BreakwaterChain,
}

impl Contender {
    pub const ALL: [Contender; 7] = [
        Contender::Direct,
        Contender::Nginx,
        Contender::Haproxy,
        Contender::BarePingora,
        Contender::BreakwaterBare,
        Contender::BreakwaterNoGate,
        Contender::BreakwaterChain,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Contender::Direct => "direct",
            Contender::Nginx => "nginx",
            Contender::Haproxy => "haproxy",
            Contender::BarePingora => "bare-pingora",
            Contender::BreakwaterBare => "breakwater",
            Contender::BreakwaterNoGate => "breakwater-no-gate",
            Contender::BreakwaterChain => "breakwater-chain",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == name)
    }
}

/// Where the binaries are and how many workers each proxy gets.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub gateway: PathBuf,
    pub bare_pingora: PathBuf,
    pub workers: usize,
    pub work_dir: PathBuf,
    /// A command every contender runs under (`valgrind --tool=callgrind …`),
    /// or empty. Under one, nginx runs as a single process
    /// (`master_process off`), so the one process measured does all the work.
    pub wrapper: Vec<std::ffi::OsString>,
}

/// A started contender: the process whose tree is charged, and its address.
pub struct Running {
    pub contender: Contender,
    pub process: Spawned,
    pub addr: SocketAddr,
}

/// Starts `c` in front of `upstream`. Direct needs no process: the caller
/// charges the upstream instead. Returns `Ok(None)` when the contender's
/// software is not installed.
pub async fn start(
    c: Contender,
    upstream: SocketAddr,
    bins: &Binaries,
) -> std::io::Result<Option<Running>> {
    let dir = bins.work_dir.join(c.name());
    std::fs::create_dir_all(&dir)?;
    let (listen, admin) = (PortLease::new()?, PortLease::new()?);
    let (port, addr) = (listen.port(), listen.addr());
    let cmd = match c {
        Contender::Direct => return Ok(None),
        Contender::Nginx => {
            let Some(bin) = nginx_bin() else {
                return Ok(None);
            };
            let conf = dir.join("nginx.conf");
            let single = !bins.wrapper.is_empty();
            std::fs::write(
                &conf,
                nginx_config(upstream, port, bins.workers, single, &dir),
            )?;
            let mut cmd = Command::new(bin);
            cmd.arg("-c").arg(&conf).arg("-p").arg(&dir);
            cmd
        }
        Contender::Haproxy => {
            let Some(bin) = find_bin(&["/usr/sbin/haproxy", "/usr/local/sbin/haproxy"]) else {
                return Ok(None);
            };
            let conf = dir.join("haproxy.cfg");
            std::fs::write(&conf, haproxy_config(upstream, port, bins.workers))?;
            let mut cmd = Command::new(bin);
            cmd.arg("-db").arg("-f").arg(&conf);
            cmd
        }
        Contender::BarePingora => {
            let mut cmd = Command::new(&bins.bare_pingora);
            cmd.arg("--listen")
                .arg(addr.to_string())
                .arg("--upstream")
                .arg(upstream.to_string())
                .arg("--threads")
                .arg(bins.workers.to_string())
                .arg("--run-dir")
                .arg(&dir);
            cmd
        }
        Contender::BreakwaterBare | Contender::BreakwaterNoGate | Contender::BreakwaterChain => {
            let conf = dir.join("gateway.yaml");
            std::fs::write(
                &conf,
                gateway_config(upstream, port, admin.port(), bins.workers, &dir, c),
            )?;
            let mut cmd = Command::new(&bins.gateway);
            cmd.arg("-c").arg(&conf);
            cmd
        }
    };
    let cmd = wrapped(cmd, &bins.wrapper);
    let process = Spawned::start(cmd, &dir.join("out.log"))?.holding([listen, admin]);
    wait_listening(addr, &dir).await?;
    Ok(Some(Running {
        contender: c,
        process,
        addr,
    }))
}

/// `cmd` run under `wrapper` (its program and arguments appended), or `cmd`
/// itself when there is no wrapper.
fn wrapped(cmd: Command, wrapper: &[std::ffi::OsString]) -> Command {
    let Some((program, args)) = wrapper.split_first() else {
        return cmd;
    };
    let mut outer = Command::new(program);
    outer.args(args).arg(cmd.get_program()).args(cmd.get_args());
    outer
}

fn nginx_config(
    upstream: SocketAddr,
    port: u16,
    workers: usize,
    single_process: bool,
    dir: &Path,
) -> String {
    let master = if single_process { "off" } else { "on" };
    format!(
        r#"daemon off;
master_process {master};
worker_processes {workers};
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 8192; }}
http {{
  access_log off;
  upstream up {{ server {upstream}; keepalive 256; }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://up;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Request-Id $request_id;
    }}
  }}
}}
"#,
        dir = dir.display()
    )
}

fn haproxy_config(upstream: SocketAddr, port: u16, workers: usize) -> String {
    format!(
        r#"global
  nbthread {workers}
  maxconn 8000
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  option http-keep-alive
  http-reuse always
frontend fe
  bind 127.0.0.1:{port}
  option forwardfor
  unique-id-format %{{+X}}o\ %ci:%cp_%fi:%fp_%Ts_%rt:%pid
  http-request set-header X-Forwarded-Proto http
  http-request set-header X-Request-Id %[unique-id]
  default_backend be
backend be
  server up {upstream}
"#
    )
}

fn gateway_config(
    upstream: SocketAddr,
    port: u16,
    admin: u16,
    workers: usize,
    dir: &Path,
    c: Contender,
) -> String {
    // Limits far above the offered load: the bench measures what deciding
    // costs, not what rejecting saves.
    let policies = if c == Contender::BreakwaterChain {
        r#"    policies:
      - rate_limit: { key: ip, limit: 10000000, window: 1s, burst: 1000000 }
      - rate_limit: { key: user, limit: 1000000, window: 1s, burst: 100000 }
      - abuse: { key: user, threshold: 100000000, window: 10s, block_for: 1m }
      - hotkey: { key: user, threshold: 100000000, window: 1s, actions: [observe] }
      - circuit_breaker: { consecutive_failures: 5, error_ratio: 0.5, min_requests: 20, open: 5s }
      - concurrency_limit: { max: 100000 }
"#
    } else {
        ""
    };
    let gate = if c == Contender::BreakwaterNoGate {
        "    overload: off\n"
    } else {
        ""
    };
    let preamble = crate::gateway_yaml::bench_preamble(
        workers,
        dir,
        &format!("127.0.0.1:{port}"),
        &format!("127.0.0.1:{admin}"),
    );
    format!(
        r#"{preamble}keys:
  user: {{ header: x-user-id }}
clusters:
  up:
    endpoints: ["{upstream}"]
{gate}routes:
  - id: goods
    cluster: up
{policies}"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for c in Contender::ALL {
            assert_eq!(Contender::parse(c.name()), Some(c));
        }
        assert_eq!(Contender::parse("envoy"), None);
    }
}
