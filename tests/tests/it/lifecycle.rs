//! Process lifecycle: graceful drain on SIGTERM and SIGQUIT upgrades, with one
//! worker and with several (one single-thread service per worker on shared
//! listening sockets, `gateway/src/server/workers.rs`).

use std::time::Duration;

use breakwater_tests::config::{Cluster, Route, Server};
use breakwater_tests::{client, eventually, Config, MockUpstream};

use crate::{gateway, single_route};

/// `config` running `threads` workers.
fn with_workers(config: Config, threads: usize) -> Config {
    config.server(Server::default().threads(threads))
}

/// One route to `up` with the cluster's overload gate off. Tests whose
/// bursts must all be answered 200 use it: they are about the process's
/// lifecycle, and a fresh gateway's gate on a loaded 2-core machine reads
/// its own scheduling delay under a burst as upstream queue and may shed a
/// few (the gate's bursts are `overload.rs`' business).
fn ungated(up: &MockUpstream) -> Config {
    Config::new()
        .cluster(
            "up",
            Cluster::new([up.addr]).read_timeout_ms(2000).overload_off(),
        )
        .route(Route::new("all", "up"))
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_in_flight_requests_then_exits_cleanly() {
    sigterm_drains_then_exits(1).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_then_exits_with_two_workers() {
    sigterm_drains_then_exits(2).await;
}

async fn sigterm_drains_then_exits(threads: usize) {
    let up = MockUpstream::start("a").await;
    let mut gw = gateway(&with_workers(single_route(&up), threads))
        .start()
        .await;
    let url = gw.url("/slow?ms=1500");
    let in_flight = tokio::spawn(async move { client().get(url).send().await.map(|r| r.status()) });
    eventually(
        Duration::from_secs(5),
        "the slow request to reach the upstream",
        || async { (up.count() == 1).then_some(()) },
    )
    .await;
    gw.signal(libc::SIGTERM);
    let status = in_flight
        .await
        .unwrap()
        .expect("the in-flight request completes");
    assert_eq!(status, 200);
    let exit = tokio::task::spawn_blocking(move || gw.wait_exit(Duration::from_secs(20)))
        .await
        .unwrap()
        .expect("the gateway exits within its grace period");
    assert!(exit.success(), "{exit}");
}

#[tokio::test(flavor = "multi_thread")]
async fn graceful_upgrade_hands_over_listeners_without_failed_requests() {
    upgrade_without_failed_requests(1).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn graceful_upgrade_with_two_workers_hands_over_the_shared_listener() {
    upgrade_without_failed_requests(2).await;
}

async fn upgrade_without_failed_requests(threads: usize) {
    let up = MockUpstream::start("a").await;
    let mut old = gateway(&with_workers(ungated(&up), threads)).start().await;
    let c = client();
    assert_eq!(c.get(old.url("/x")).send().await.unwrap().status(), 200);

    // The new process waits on the upgrade socket for the old one's listeners.
    let mut new = KillOnDrop(old.spawn_sibling(&["-u"]));
    // Give the new process a moment to start listening on the upgrade socket;
    // the old one retries its connection to it, so this is not a race.
    let sock = old.dir.path().join("upgrade.sock");
    eventually(
        Duration::from_secs(20),
        "the new process to open the upgrade socket",
        || async { sock.exists().then_some(()) },
    )
    .await;
    old.signal(libc::SIGQUIT);

    // Requests keep succeeding through the handover.
    for _ in 0..50 {
        let r = c
            .get(old.url("/x"))
            .send()
            .await
            .expect("no refused connection during upgrade");
        assert_eq!(r.status(), 200);
    }
    let exit = tokio::task::spawn_blocking(move || {
        let e = old.wait_exit(Duration::from_secs(20));
        (e, old)
    })
    .await
    .unwrap();
    let (exit, old) = exit;
    assert!(exit.is_some(), "the old process exits after handing over");
    // The new process serves on the same port, on every worker.
    let r = client().get(old.url("/x")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    burst(&old.url("/x")).await;
    assert_eq!(
        listener_fds_watched(new.0.id(), old.port),
        threads,
        "each worker of the new process accepts on the listener it took over"
    );
    assert_eq!(
        proxy_worker_threads(new.0.id()),
        threads,
        "one proxy thread per worker"
    );
    assert!(
        new.0.try_wait().unwrap().is_none(),
        "the new process is still running"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn default_runtime_paths_are_private_and_carry_an_upgrade() {
    use std::os::unix::fs::PermissionsExt;

    let up = MockUpstream::start("a").await;
    let xdg = tempfile::tempdir().unwrap();
    // No pid_file or upgrade_sock: the defaults, under $XDG_RUNTIME_DIR.
    let body = single_route(&up).server(Server::default().default_runtime_paths());
    let mut old = gateway(&body)
        .env("RUNTIME_DIRECTORY", "")
        .env("XDG_RUNTIME_DIR", &xdg.path().display().to_string())
        .start()
        .await;
    let private = xdg.path().join("breakwater");
    let mode = std::fs::metadata(&private)
        .expect("the runtime directory is created at startup")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);

    // The new process (same environment) listens on the default socket there.
    let mut new = KillOnDrop(old.spawn_sibling(&["-u"]));
    let sock = private.join("upgrade.sock");
    eventually(
        Duration::from_secs(20),
        "the new process to open the upgrade socket in the private directory",
        || async { sock.exists().then_some(()) },
    )
    .await;
    old.signal(libc::SIGQUIT);
    let c = client();
    for _ in 0..20 {
        let r = c
            .get(old.url("/x"))
            .send()
            .await
            .expect("no refused connection during upgrade");
        assert_eq!(r.status(), 200);
    }
    let (exit, old) = tokio::task::spawn_blocking(move || {
        let e = old.wait_exit(Duration::from_secs(20));
        (e, old)
    })
    .await
    .unwrap();
    assert!(exit.is_some(), "the old process exits after handing over");
    assert_eq!(c.get(old.url("/x")).send().await.unwrap().status(), 200);
    assert!(
        new.0.try_wait().unwrap().is_none(),
        "the new process is still running"
    );
}

/// The upgraded process, stopped when the test ends, passed or failed.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// 32 connections at once, each making 40 requests; every answer is a 200.
async fn burst(url: &str) {
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let url = url.to_string();
            tokio::spawn(async move {
                // A client per task: a connection per task.
                let c = client();
                for _ in 0..40 {
                    let r = c.get(&url).send().await.expect("answered");
                    assert_eq!(r.status(), 200);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

/// The proxy worker threads of process `pid` (named after the proxy
/// service, `breakwater prox…`). Which worker accepts a given connection is
/// up to the kernel and the loops' timing (one loop may drain a whole
/// backlog), so the tests count threads and the listening descriptors each
/// loop watches, not connections per worker.
fn proxy_worker_threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("the process runs")
        .filter(|task| {
            let comm = task.as_ref().map(|t| t.path().join("comm")).ok();
            comm.and_then(|c| std::fs::read_to_string(c).ok())
                .is_some_and(|c| c.starts_with("breakwater prox"))
        })
        .count()
}

/// How many descriptors of the socket listening on `port` the event loops
/// of process `pid` watch. With one service per worker, each worker's loop
/// watches its own descriptor of the shared socket (it accepts, then serves,
/// its own connections); with Pingora's shared service there is one, watched
/// by the loop that runs the accept task. (A loop may show under two epoll
/// descriptors, so descriptors of the socket are counted, not loops.)
fn listener_fds_watched(pid: u32, port: u16) -> usize {
    let tcp = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let inode: u64 = tcp
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.len() > 9 && f[3] == "0A" && f[1].ends_with(&format!(":{port:04X}")))
        .and_then(|f| f[9].parse().ok())
        .expect("the proxy's listening socket is in /proc/net/tcp");
    let mut watched = std::collections::HashSet::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap() {
        let entry = entry.unwrap();
        let target = std::fs::read_link(entry.path()).unwrap_or_default();
        if target.to_string_lossy() != "anon_inode:[eventpoll]" {
            continue;
        }
        let fd = entry.file_name().to_string_lossy().to_string();
        let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).unwrap_or_default();
        // `tfd: 8 events: 19 data: 1 pos:0 ino:8c5942 sdev:9` (ino in hex).
        for line in info.lines().filter(|l| l.starts_with("tfd:")) {
            let words: Vec<&str> = line.split_whitespace().collect();
            let ino = words
                .iter()
                .find_map(|w| w.strip_prefix("ino:"))
                .and_then(|h| u64::from_str_radix(h, 16).ok());
            if ino == Some(inode) {
                watched.insert(words.get(1).map(|t| t.to_string()));
            }
        }
    }
    watched.len()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_worker_accepts_connections_on_the_shared_listener() {
    let up = MockUpstream::start("a").await;
    let gw = gateway(&with_workers(ungated(&up), 2)).start().await;
    burst(&gw.url("/x")).await;
    assert_eq!(
        listener_fds_watched(gw.pid() as u32, gw.port),
        2,
        "each worker's event loop accepts on the listening socket"
    );
    assert_eq!(
        proxy_worker_threads(gw.pid() as u32),
        2,
        "one proxy thread per worker"
    );
}

/// `(status, "status" field of the JSON body)` of an admin GET.
async fn probe(gw: &breakwater_tests::Gateway, path: &str) -> (u16, String) {
    let r = client().get(gw.admin(path)).send().await.unwrap();
    let status = r.status().as_u16();
    let body: serde_json::Value = r.json().await.unwrap();
    (
        status,
        body["status"].as_str().unwrap_or_default().to_string(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_turns_ready_off_and_keeps_serving_through_the_drain_delay() {
    let up = MockUpstream::start("a").await;
    let config = ungated(&up).server(Server::default().drain_delay_secs(3));
    let mut gw = gateway(&config).start().await;
    assert_eq!(probe(&gw, "/ready").await, (200, "ok".into()));
    assert_eq!(probe(&gw, "/live").await, (200, "live".into()));
    gw.signal(libc::SIGTERM);
    eventually(
        Duration::from_secs(2),
        "/ready to answer 503 after SIGTERM",
        || async { (probe(&gw, "/ready").await == (503, "draining".into())).then_some(()) },
    )
    .await;
    // Out of rotation, and still serving: a new connection (a fresh
    // client) is accepted and proxied, as a load balancer's stragglers are.
    let r = client().get(gw.url("/x")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-upstream"], "a");
    assert_eq!(probe(&gw, "/healthz").await, (503, "draining".into()));
    assert_eq!(probe(&gw, "/live").await, (200, "live".into()));
    // The admin cannot call a signal's drain off.
    let undo = client().delete(gw.admin("/drain")).send().await.unwrap();
    assert_eq!(undo.status(), 409);
    let exit = tokio::task::spawn_blocking(move || gw.wait_exit(Duration::from_secs(20)))
        .await
        .unwrap()
        .expect("the gateway exits after the drain delay and its grace period");
    assert!(exit.success(), "{exit}");
}

#[tokio::test(flavor = "multi_thread")]
async fn post_drain_takes_the_instance_out_of_rotation_and_delete_brings_it_back() {
    let up = MockUpstream::start("a").await;
    let gw = gateway(&ungated(&up)).start().await;
    let c = client();
    let r = c.post(gw.admin("/drain")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(probe(&gw, "/ready").await, (503, "draining".into()));
    assert_eq!(probe(&gw, "/healthz").await, (503, "draining".into()));
    let r = c.get(gw.url("/x")).send().await.unwrap();
    assert_eq!(r.status(), 200, "a drained instance still serves");
    let r = c.delete(gw.admin("/drain")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(probe(&gw, "/ready").await, (200, "ok".into()));
}
