//! grpc-core (Python's `grpcio`) as a client and as an upstream.
//!
//! tonic forgives answers that grpc-core clients (Python, C++, Ruby, PHP, C#)
//! cannot read, so every gRPC answer the gateway makes is also checked with
//! a client this project did not write. `tests/python/grpc_echo.py` is the
//! `test.Echo` service and client in grpcio; `.ci/setup` installs grpcio.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde_json::{Map, Value};

fn script() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/python/grpc_echo.py"))
}

/// Panics with the install hint when Python or grpcio is missing.
pub fn require_grpcio() {
    let ok = Command::new("python3")
        .args(["-c", "import grpc"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "python3 with grpcio is missing: .ci/setup installs it (pip install grpcio)"
    );
}

/// One call for [`call`]. Built with [`GrpcCall::new`] and its setters.
#[derive(Debug, Clone, Serialize)]
pub struct GrpcCall {
    method: &'static str,
    text: String,
    n: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    messages: Option<Vec<(String, u32)>>,
    timeout: f64,
    metadata: Vec<(String, String)>,
    parallel: usize,
}

/// The four call shapes of `test.Echo`.
pub const SHAPES: [&str; 4] = ["Unary", "ServerStream", "ClientStream", "Bidi"];

impl GrpcCall {
    /// A call of `test.Echo/<method>` sending `text` (and `n`).
    pub fn new(method: &'static str, text: &str) -> Self {
        Self {
            method,
            text: text.to_string(),
            n: 1,
            messages: None,
            timeout: 10.0,
            metadata: Vec::new(),
            parallel: 1,
        }
    }

    pub fn n(mut self, n: u32) -> Self {
        self.n = n;
        self
    }

    /// The messages a client-streaming or bidi call sends.
    pub fn messages(mut self, messages: &[(&str, u32)]) -> Self {
        self.messages = Some(messages.iter().map(|(t, n)| (t.to_string(), *n)).collect());
        self
    }

    /// The client's own deadline, in seconds.
    pub fn timeout(mut self, secs: f64) -> Self {
        self.timeout = secs;
        self
    }

    pub fn metadata(mut self, name: &str, value: &str) -> Self {
        self.metadata.push((name.to_string(), value.to_string()));
        self
    }

    /// Runs `copies` of this call at once.
    pub fn parallel(mut self, copies: usize) -> Self {
        self.parallel = copies;
        self
    }
}

/// What the client saw of one call.
#[derive(Debug, Clone)]
pub struct CallResult {
    pub method: String,
    /// The status as grpcio names it: `OK`, `RESOURCE_EXHAUSTED`, ...
    pub code: String,
    pub details: String,
    pub initial: Map<String, Value>,
    pub trailing: Map<String, Value>,
    pub messages: Vec<(String, u32)>,
}

impl CallResult {
    /// A trailing (or, for trailers-only answers, the only) metadata value.
    pub fn trailer(&self, name: &str) -> Option<&str> {
        self.trailing.get(name).and_then(Value::as_str)
    }
}

fn parse_result(line: &str) -> CallResult {
    let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    let map = |k: &str| v[k].as_object().cloned().unwrap_or_default();
    CallResult {
        method: v["method"].as_str().unwrap_or_default().to_string(),
        code: v["code"].as_str().unwrap_or_default().to_string(),
        details: v["details"].as_str().unwrap_or_default().to_string(),
        initial: map("initial"),
        trailing: map("trailing"),
        messages: v["messages"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| {
                (
                    m[0].as_str().unwrap_or_default().to_string(),
                    m[1].as_u64().unwrap_or_default() as u32,
                )
            })
            .collect(),
    }
}

/// Makes `calls` in order on one grpcio channel to `target` (a blocking
/// child process: call it from `spawn_blocking`, or use [`call_async`]).
pub fn call(target: SocketAddr, calls: &[GrpcCall]) -> Vec<CallResult> {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("calls.json");
    std::fs::write(&path, serde_json::to_vec(calls).expect("calls as JSON")).expect("write calls");
    let out = Command::new("python3")
        .arg(script())
        .arg("call")
        .arg(target.to_string())
        .arg(&path)
        .stdin(Stdio::null())
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "grpc_echo.py call failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(parse_result)
        .collect()
}

/// [`call`] off the async runtime's threads.
pub async fn call_async(target: SocketAddr, calls: Vec<GrpcCall>) -> Vec<CallResult> {
    tokio::task::spawn_blocking(move || call(target, &calls))
        .await
        .expect("the grpcio client ran")
}

/// `test.Echo` served by grpcio on an ephemeral loopback port (the script
/// binds port 0 and reports the port it got: no bind-and-release race).
pub struct PyGrpcUpstream {
    pub addr: SocketAddr,
    child: Child,
    calls: Arc<Mutex<Vec<String>>>,
    /// `HEALTH-SET` acknowledgements from the script.
    health_acks: Arc<Mutex<Vec<String>>>,
}

impl PyGrpcUpstream {
    pub fn start() -> Self {
        let mut child = Command::new("python3")
            .arg(script())
            .arg("serve")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the grpcio upstream");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let first = lines
            .next()
            .and_then(Result::ok)
            .expect("the grpcio upstream reports its port");
        let port: u16 = first
            .strip_prefix("PORT ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line: {first}"));
        let calls = Arc::new(Mutex::new(Vec::new()));
        let health_acks = Arc::new(Mutex::new(Vec::new()));
        let (seen, acks) = (calls.clone(), health_acks.clone());
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                if let Some(call) = line.strip_prefix("CALL ") {
                    seen.lock().unwrap().push(call.to_string());
                } else if line.starts_with("HEALTH-SET ") {
                    acks.lock().unwrap().push(line);
                }
            }
        });
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            child,
            calls,
            health_acks,
        }
    }

    /// Calls that reached the upstream.
    pub fn calls(&self) -> usize {
        self.calls.lock().unwrap().len()
    }

    /// Sets `grpc.health.v1` status of `service` (`""`: the server) to
    /// `status` (`SERVING`, `NOT_SERVING`), in grpcio-health-checking's own
    /// servicer. Returns once the server has applied it.
    pub fn set_health(&mut self, service: &str, status: &str) {
        use std::io::Write;
        let service = if service.is_empty() { "-" } else { service };
        let stdin = self.child.stdin.as_mut().expect("the upstream's stdin");
        writeln!(stdin, "HEALTH {service} {status}").expect("write to the grpcio upstream");
        stdin.flush().expect("flush");
        let want = format!("HEALTH-SET {service} {status}");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if self.health_acks.lock().unwrap().contains(&want) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("the grpcio upstream did not apply {want}");
    }
}

/// Panics with the install hint when grpcio-health-checking is missing.
pub fn require_grpc_health() {
    let ok = Command::new("python3")
        .args(["-c", "import grpc_health.v1.health"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "python3 with grpcio-health-checking is missing: .ci/setup installs it"
    );
}

impl Drop for PyGrpcUpstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Panics with the install hint when Apache Dubbo's Python client is missing.
pub fn require_dubbo() {
    let ok = Command::new("python3")
        .args(["-c", "import dubbo"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "python3 with apache-dubbo is missing: .ci/setup installs it (pip install apache-dubbo)"
    );
}

/// `count` unary calls of `<service>/Unary` on the gateway at `port` with
/// Apache Dubbo's Triple client (`tests/python/triple_call.py`): each call's
/// status name and description. A client that hangs (it waited for ever on
/// malformed answers) fails the test after 30 s.
pub async fn triple_calls(port: u16, service: &str, count: usize) -> Vec<(String, String)> {
    let script = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/python/triple_call.py"
    ));
    let child = tokio::process::Command::new("python3")
        .arg(script)
        .arg(port.to_string())
        .arg(service)
        .arg(count.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("run python3");
    let out = tokio::time::timeout(std::time::Duration::from_secs(30), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("the Triple client hung on {service}"))
        .expect("the Triple client ran");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            (
                v["code"].as_str().unwrap_or_default().to_string(),
                v["details"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}
