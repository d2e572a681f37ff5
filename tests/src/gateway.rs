//! Runs the real gateway binary on leased loopback ports.
//!
//! The proxy and admin ports are [`PortLease`]s held by the [`Gateway`] for
//! its whole life (see `ports` for what that guarantees): the gateway binds
//! them itself, no other process can take them meanwhile, and a sibling
//! started for a `-u` upgrade finds them still reserved. So a start never
//! loses a race for its ports and is not retried.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::config::text::{ADMIN, ADMIN_PORT, DIR, LISTEN};
use crate::config::ConfigText;
use crate::ports::PortLease;

/// How long a gateway may take to answer `/healthz` and accept on its port.
const READY_WITHIN: Duration = Duration::from_secs(30);

/// Builds the config around a test's own sections.
///
/// The body is a [`crate::config::Config`] or YAML text. Text may use the
/// placeholders `{listen}` (proxy address), `{admin}` (admin address),
/// `{admin_port}` (its port alone) and `{dir}` (the temp dir); its
/// `server`, `listeners`, `admin` and `logging` sections are added unless
/// it has its own. A `Config` always has all four.
pub struct GatewayBuilder {
    bin: PathBuf,
    body: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    admin_token: Option<String>,
}

pub struct Gateway {
    bin: PathBuf,
    pub port: u16,
    pub admin_port: u16,
    pub dir: TempDir,
    pub config_path: PathBuf,
    pub log_path: PathBuf,
    /// Sent as a bearer token by the admin helpers (`admin_json`, `reload`,
    /// `metrics`): a config with an admin token needs it for reads too.
    pub admin_token: Option<String>,
    /// The environment given to the process, given to siblings too.
    env: Vec<(String, String)>,
    child: Option<Child>,
    /// The proxy and admin ports, held until the gateway is dropped.
    _leases: [PortLease; 2],
}

fn render(body: &str, port: u16, admin_port: u16, dir: &Path) -> String {
    let mut out = String::new();
    let has = |section: &str| body.lines().any(|l| l.starts_with(&format!("{section}:")));
    if !has("server") {
        out.push_str(
            "server:\n  threads: 1\n  grace_period_secs: 5\n  graceful_shutdown_timeout_secs: 1\n  pid_file: {dir}/bw.pid\n  upgrade_sock: {dir}/upgrade.sock\n",
        );
    }
    if !has("listeners") {
        out.push_str("listeners:\n  - address: \"{listen}\"\n");
    }
    if !has("admin") {
        out.push_str("admin:\n  address: \"{admin}\"\n");
    }
    if !has("logging") {
        out.push_str("logging:\n  format: json\n  level: info\n  access_log: true\n");
    }
    out.push_str(body);
    out.replace(LISTEN, &format!("127.0.0.1:{port}"))
        .replace(ADMIN, &format!("127.0.0.1:{admin_port}"))
        .replace(ADMIN_PORT, &admin_port.to_string())
        .replace(DIR, &dir.display().to_string())
}

impl GatewayBuilder {
    /// `bin` is the gateway binary; `BREAKWATER_TEST_BIN` in the environment
    /// overrides it, to run tests against another build (e.g. to show that a
    /// new test fails on the previous release).
    pub fn new(bin: &str, body: &(impl ConfigText + ?Sized)) -> Self {
        let bin = std::env::var_os("BREAKWATER_TEST_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(bin));
        Self {
            bin,
            body: body.config_text(),
            args: Vec::new(),
            env: Vec::new(),
            admin_token: None,
        }
    }

    /// The admin token the config sets, for the harness's admin helpers.
    pub fn admin_token(mut self, token: &str) -> Self {
        self.admin_token = Some(token.to_string());
        self
    }

    pub fn arg(mut self, a: &str) -> Self {
        self.args.push(a.to_string());
        self
    }

    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.to_string(), v.to_string()));
        self
    }

    /// Runs `breakwater -t` on the file [`GatewayBuilder::start`] would
    /// write, without starting anything: `Ok` with the gateway's output if
    /// it accepts the file, else `Err` with it.
    pub fn check(&self) -> Result<String, String> {
        let dir = tempfile::tempdir().expect("temp dir");
        let leases = [
            PortLease::new().expect("a loopback port lease"),
            PortLease::new().expect("a loopback port lease"),
        ];
        let path = dir.path().join("gateway.yaml");
        let text = render(&self.body, leases[0].port(), leases[1].port(), dir.path());
        fs::write(&path, text).expect("write config");
        let out = Command::new(&self.bin)
            .arg("-t")
            .arg("-c")
            .arg(&path)
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env_remove("RUST_LOG")
            .output()
            .expect("run the gateway");
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if out.status.success() {
            Ok(said)
        } else {
            Err(said)
        }
    }

    /// Starts the gateway on leased ports and waits until `/healthz` is 200
    /// and the proxy port accepts. Panics with the gateway's log if it
    /// exits or is not ready within 30 s.
    pub async fn start(self) -> Gateway {
        let dir = tempfile::tempdir().expect("temp dir");
        let leases = [
            PortLease::new().expect("a loopback port lease"),
            PortLease::new().expect("a loopback port lease"),
        ];
        let (port, admin_port) = (leases[0].port(), leases[1].port());
        let config_path = dir.path().join("gateway.yaml");
        let log_path = dir.path().join("gateway.log");
        fs::write(
            &config_path,
            render(&self.body, port, admin_port, dir.path()),
        )
        .expect("write config");
        let child = spawn(&self.bin, &config_path, &log_path, &self.args, &self.env);
        let mut gw = Gateway {
            bin: self.bin,
            port,
            admin_port,
            config_path,
            log_path,
            dir,
            admin_token: self.admin_token,
            env: self.env,
            child: Some(child),
            _leases: leases,
        };
        if let Err(log) = gw.wait_ready(READY_WITHIN).await {
            panic!("gateway did not start: {log}");
        }
        gw
    }
}

fn spawn(
    bin: &Path,
    config: &Path,
    log: &Path,
    args: &[String],
    env: &[(String, String)],
) -> Child {
    let out = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log file");
    let err = out.try_clone().expect("log file");
    let mut cmd = Command::new(bin);
    cmd.arg("-c")
        .arg(config)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .env_remove("RUST_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn gateway")
}

impl Gateway {
    pub fn builder(bin: &str, body: &(impl ConfigText + ?Sized)) -> GatewayBuilder {
        GatewayBuilder::new(bin, body)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn admin(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin_port)
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).unwrap_or(0)
    }

    /// Sends a Unix signal to the gateway process.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid has no memory effects.
        unsafe {
            libc::kill(self.pid(), sig);
        }
    }

    /// Rewrites the config file (same ports and dir) from a new body.
    /// Written to a temp file and renamed over, as editors do.
    pub fn write_config(&self, body: &(impl ConfigText + ?Sized)) {
        let text = render(
            &body.config_text(),
            self.port,
            self.admin_port,
            self.dir.path(),
        );
        self.write_raw_config(&text);
    }

    /// Replaces the config file with exactly `text`.
    pub fn write_raw_config(&self, text: &str) {
        let tmp = self.dir.path().join(".gateway.yaml.tmp");
        fs::write(&tmp, text).expect("write config");
        fs::rename(&tmp, &self.config_path).expect("rename config");
    }

    /// `builder` with the admin token, if the config has one.
    fn with_token(&self, builder: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.admin_token {
            Some(token) => builder.bearer_auth(token),
            None => builder,
        }
    }

    /// `GET` an admin path, its JSON answer.
    pub async fn admin_json(&self, path: &str) -> serde_json::Value {
        self.with_token(crate::client().get(self.admin(path)))
            .send()
            .await
            .expect("admin answers")
            .json()
            .await
            .expect("admin answers JSON")
    }

    /// `POST /reload` (with the admin token, if any), its JSON answer.
    pub async fn reload(&self) -> serde_json::Value {
        self.with_token(crate::client().post(self.admin("/reload")))
            .send()
            .await
            .expect("admin answers")
            .json()
            .await
            .expect("admin answers JSON")
    }

    /// The Prometheus text of `/metrics`.
    pub async fn metrics(&self) -> String {
        self.with_token(crate::client().get(self.admin("/metrics")))
            .send()
            .await
            .expect("admin answers")
            .text()
            .await
            .expect("metrics text")
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Parsed JSON access-log lines.
    pub fn access_log(&self) -> Vec<serde_json::Value> {
        self.log()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["target"] == "breakwater::access")
            .collect()
    }

    /// Waits for the process to exit, up to `within`.
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        let child = self.child.as_mut()?;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Detaches the child so that drop does not kill it (for upgrade tests).
    pub fn take_child(&mut self) -> Option<Child> {
        self.child.take()
    }

    /// Starts another process on the same config, ports and environment
    /// with extra args (for `-u` upgrades); it is not waited on.
    pub fn spawn_sibling(&self, args: &[&str]) -> Child {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        spawn(
            &self.bin,
            &self.config_path,
            &self.log_path,
            &args,
            &self.env,
        )
    }

    async fn wait_ready(&mut self, within: Duration) -> Result<(), String> {
        let deadline = Instant::now() + within;
        let client = crate::client();
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!("gateway exited with {status}:\n{}", self.log()));
                }
            }
            let health = client.get(self.admin("/healthz")).send().await;
            if health.is_ok_and(|r| r.status() == 200)
                && tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                    .await
                    .is_ok()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "gateway not ready after {within:?}:\n{}",
                    self.log()
                ));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
