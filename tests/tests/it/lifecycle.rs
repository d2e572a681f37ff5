//! Process lifecycle: graceful drain on SIGTERM and SIGQUIT upgrades.

use std::time::Duration;

use breakwater_tests::{client, eventually, MockUpstream};

use crate::{gateway, single_route};

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_in_flight_requests_then_exits_cleanly() {
    let up = MockUpstream::start("a").await;
    let mut gw = gateway(&single_route(&up)).start().await;
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
    let up = MockUpstream::start("a").await;
    let mut old = gateway(&single_route(&up)).start().await;
    let c = client();
    assert_eq!(c.get(old.url("/x")).send().await.unwrap().status(), 200);

    // The new process waits on the upgrade socket for the old one's listeners.
    let mut new = old.spawn_sibling(&["-u"]);
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
    // The new process serves on the same port.
    let r = client().get(old.url("/x")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        new.try_wait().unwrap().is_none(),
        "the new process is still running"
    );
    let _ = new.kill();
    let _ = new.wait();
}
