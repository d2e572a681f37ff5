//! Starting the fronts: the gateway (one or a fleet) and nginx, each on
//! leased loopback ports, with its config, pid file and log in its own
//! directory.

use std::net::SocketAddr;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::process::Command;

use super::scenario::{Env, Front, Scenario};
use crate::procs::{nginx_bin, wait_listening, PortLease, Spawned};

/// A running front instance: its process (stopped on drop), where it
/// listens, and its admin address (Breakwater only).
pub struct Instance {
    pub process: Spawned,
    pub addr: SocketAddr,
    pub admin: Option<SocketAddr>,
}

/// The process plumbing every lab gateway needs and the README's minimal
/// config leaves to defaults that several gateways on one host cannot
/// share: its own pid file and upgrade socket, its own admin port, no
/// config watching, a short drain, and logging at `warn` without an access
/// log (thousands of lines a second would measure the logger). None of it
/// touches the data path.
fn plumbing(listen: SocketAddr, admin: SocketAddr, dir: &Path) -> String {
    format!(
        "server:\n  pid_file: {dir}/bw.pid\n  upgrade_sock: {dir}/bw.sock\n  watch_config: false\n  grace_period_secs: 1\n  graceful_shutdown_timeout_secs: 1\nlisteners:\n  - address: {listen}\nadmin:\n  address: {admin}\nlogging:\n  level: warn\n  access_log: false\n",
        dir = dir.display()
    )
}

/// The gateway's config for `front`: the plumbing, then the README's
/// minimal config (one cluster, one route), then what the front adds.
pub fn gateway_config(
    scenario: &Scenario,
    upstream: SocketAddr,
    listen: SocketAddr,
    admin: SocketAddr,
    dir: &Path,
    env: &Env,
) -> String {
    let cluster_extra = match scenario.front {
        Front::BreakwaterOff => "    overload: off\n".to_string(),
        _ => String::new(),
    };
    let policies = match scenario.front {
        Front::BreakwaterTuned => format!(
            "    policies:\n      - dedupe: {{ header: idempotency-key }}\n      - circuit_breaker: {{ slow_call: {slow}ms, slow_ratio: 0.9, min_requests: 50, open: 1s }}\n      - concurrency_limit: {{ max: {workers}, queue: {{ max: {workers}, timeout: {wait}ms }} }}\n",
            slow = env.timeout.as_millis(),
            workers = scenario.provider.workers,
            wait = scenario.provider.service.as_millis() * 2,
        ),
        _ => String::new(),
    };
    format!(
        "{plumbing}clusters:\n  provider:\n    endpoints: [\"{upstream}\"]\n{cluster_extra}routes:\n  - id: work\n    cluster: provider\n{policies}",
        plumbing = plumbing(listen, admin, dir)
    )
}

/// Starts `scenario.instances` gateways in front of `upstream`, under
/// `env.work_dir/<scenario>/<i>/`.
pub async fn start_gateways(
    scenario: &Scenario,
    upstream: SocketAddr,
    env: &Env,
) -> std::io::Result<Vec<Instance>> {
    let mut instances = Vec::new();
    for i in 0..scenario.instances.max(1) {
        let dir = env.work_dir.join(&scenario.name).join(i.to_string());
        // Private (0700 whatever the umask): the gateway refuses an upgrade
        // socket in a directory that others can write to.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)?;
        let leases = [PortLease::new()?, PortLease::new()?];
        let (listen, admin) = (leases[0].addr(), leases[1].addr());
        let path = dir.join("gateway.yaml");
        std::fs::write(
            &path,
            gateway_config(scenario, upstream, listen, admin, &dir, env),
        )?;
        let mut cmd = Command::new(&env.gateway_bin);
        cmd.arg("-c").arg(&path);
        let process = Spawned::start(cmd, &dir.join("gateway.log"))?.holding(leases);
        instances.push(Instance {
            process,
            addr: listen,
            admin: Some(admin),
        });
    }
    for (i, inst) in instances.iter().enumerate() {
        let dir = env.work_dir.join(&scenario.name).join(i.to_string());
        wait_listening(inst.addr, &dir).await?;
        if let Some(admin) = inst.admin {
            wait_listening(admin, &dir).await?;
        }
    }
    Ok(instances)
}

fn nginx_config(upstream: SocketAddr, port: u16, dir: &Path, env: &Env) -> String {
    format!(
        "daemon off;\nworker_processes 2;\npid {dir}/nginx.pid;\nerror_log {dir}/nginx-error.log warn;\nevents {{ worker_connections 8192; }}\nhttp {{\n  access_log off;\n  upstream provider {{ server {upstream}; keepalive 256; }}\n  server {{\n    listen 127.0.0.1:{port};\n    location / {{\n      proxy_pass http://provider;\n      proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n      proxy_connect_timeout 1s;\n      proxy_read_timeout {t}ms;\n      proxy_next_upstream error timeout;\n    }}\n  }}\n}}\n",
        dir = dir.display(),
        t = env.timeout.as_millis()
    )
}

/// Starts nginx in front of `upstream`.
pub async fn start_nginx(
    scenario: &Scenario,
    upstream: SocketAddr,
    env: &Env,
) -> std::io::Result<Instance> {
    let bin = nginx_bin().ok_or_else(|| {
        std::io::Error::other("nginx is not installed (apt-get install -y nginx-light)")
    })?;
    let dir = env.work_dir.join(&scenario.name);
    std::fs::create_dir_all(&dir)?;
    let lease = PortLease::new()?;
    let (port, addr) = (lease.port(), lease.addr());
    let path = dir.join("nginx.conf");
    std::fs::write(&path, nginx_config(upstream, port, &dir, env))?;
    let mut cmd = Command::new(bin);
    cmd.arg("-c").arg(&path).arg("-p").arg(&dir);
    let process = Spawned::start(cmd, &dir.join("nginx.out"))?.holding([lease]);
    wait_listening(addr, &dir).await?;
    Ok(Instance {
        process,
        addr,
        admin: None,
    })
}
