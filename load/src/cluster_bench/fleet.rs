//! Starting N gateway instances side by side, each with its own ports and
//! run dir, and waiting until they serve (and, in `global` mode, have synced
//! with Redis at least once, so no run starts in degraded mode).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::admin;
use super::config::{gateway_yaml, GatewaySpec, Mode};
use crate::procs::{wait_listening, PortLease, Spawned};

/// What every instance of a fleet shares.
#[derive(Debug, Clone)]
pub struct FleetSpec {
    pub gateway_bin: PathBuf,
    pub mode: Mode,
    pub instances: usize,
    pub upstream: SocketAddr,
    pub redis: SocketAddr,
    pub key_prefix: String,
    pub user_limit: u64,
}

/// A running instance.
pub struct Instance {
    pub process: Spawned,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
}

/// Running instances; all stop when it drops.
pub struct Fleet {
    pub instances: Vec<Instance>,
}

impl Fleet {
    pub fn admins(&self) -> Vec<SocketAddr> {
        self.instances.iter().map(|i| i.admin).collect()
    }

    pub fn pids(&self) -> Vec<u32> {
        self.instances.iter().map(|i| i.process.pid()).collect()
    }
}

/// Starts `spec.instances` gateways under `dir/<name>-<i>/`.
pub async fn start(spec: &FleetSpec, name: &str, dir: &Path) -> std::io::Result<Fleet> {
    let mut instances = Vec::new();
    for i in 0..spec.instances {
        let run_dir = dir.join(format!("{name}-{i}"));
        std::fs::create_dir_all(&run_dir)?;
        let leases = [PortLease::new()?, PortLease::new()?];
        let (addr, admin) = (leases[0].addr(), leases[1].addr());
        let yaml = gateway_yaml(&GatewaySpec {
            mode: spec.mode,
            instance_id: format!("{name}-{i}"),
            listen: addr,
            admin,
            upstream: spec.upstream,
            redis: spec.redis,
            key_prefix: &spec.key_prefix,
            expected_instances: spec.instances,
            user_limit: spec.user_limit,
            dir: &run_dir,
        });
        let conf = run_dir.join("gateway.yaml");
        std::fs::write(&conf, yaml)?;
        let mut cmd = Command::new(&spec.gateway_bin);
        cmd.arg("-c").arg(&conf);
        let process = Spawned::start(cmd, &run_dir.join("out.log"))?.holding(leases);
        instances.push(Instance {
            process,
            addr,
            admin,
        });
    }
    for (i, inst) in instances.iter().enumerate() {
        let run_dir = dir.join(format!("{name}-{i}"));
        wait_listening(inst.addr, &run_dir).await?;
        wait_listening(inst.admin, &run_dir).await?;
        if spec.mode == Mode::Global {
            admin::wait_global(inst.admin).await?;
        }
    }
    Ok(Fleet { instances })
}
