//! Hot reload: by file change, SIGHUP and `POST /reload`; bad configs rejected
//! while the old one serves; no request lost while reloading under load.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use breakwater_tests::config::{Cluster, Deny, Route, Server};
use breakwater_tests::{client, eventually, metric_value, Config, Gateway, MockUpstream};
use serde_json::Value;

use crate::gateway;

fn body(up: &MockUpstream, watch: bool, deny_local: bool) -> Config {
    body_with(up, watch, deny_local, |route| route)
}

/// [`body`] with route `all` finished by `route`.
fn body_with(
    up: &MockUpstream,
    watch: bool,
    deny_local: bool,
    route: impl FnOnce(Route) -> Route,
) -> Config {
    let mut all = route(Route::new("all", "up"));
    if deny_local {
        all = all.policy(Deny::new().ips(["127.0.0.1"]));
    }
    let config = Config::new()
        .cluster("up", Cluster::new([up.addr]))
        .route(all);
    if watch {
        config
    } else {
        config.server(Server::default().watch_config(false))
    }
}

async fn status(gw: &Gateway) -> u16 {
    let resp = client().get(gw.url("/x")).send().await.unwrap();
    let status = resp.status().as_u16();
    if status >= 500 {
        // Not expected anywhere in these tests: say why, for a flaky run.
        let body = resp.text().await.unwrap_or_default();
        let log = gw.log();
        let tail: Vec<&str> = log.lines().rev().take(15).collect();
        eprintln!(
            "unexpected {status}: {body}\n--- gateway log, newest first ---\n{}",
            tail.join("\n")
        );
    }
    status
}

async fn config(gw: &Gateway) -> Value {
    gw.admin_json("/config").await
}

#[tokio::test(flavor = "multi_thread")]
async fn file_change_reloads() {
    let up = MockUpstream::start("a").await;
    let gw = gateway(&body(&up, true, false)).start().await;
    assert_eq!(status(&gw).await, 200);
    gw.write_config(&body(&up, true, true));
    eventually(
        Duration::from_secs(10),
        "the file change to apply",
        || async { (status(&gw).await == 403).then_some(()) },
    )
    .await;
    let cfg = config(&gw).await;
    assert_eq!(cfg["generation"], 2);
    assert_eq!(cfg["last_reload"]["trigger"], "file");
    assert_eq!(cfg["last_reload"]["result"], "ok");
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_reloads() {
    let up = MockUpstream::start("a").await;
    let gw = gateway(&body(&up, false, false)).start().await;
    gw.write_config(&body(&up, false, true));
    // Not watched: nothing changes until the signal.
    assert_eq!(status(&gw).await, 200);
    assert_eq!(config(&gw).await["generation"], 1);
    gw.signal(libc::SIGHUP);
    eventually(Duration::from_secs(10), "SIGHUP to reload", || async {
        (status(&gw).await == 403).then_some(())
    })
    .await;
    let cfg = config(&gw).await;
    assert_eq!(cfg["generation"], 2);
    assert_eq!(cfg["last_reload"]["trigger"], "sighup");
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_post_reloads_and_reports() {
    let up = MockUpstream::start("a").await;
    let gw = gateway(&body(&up, false, false)).start().await;
    let c = client();
    // Unchanged file: nothing to do.
    let v = gw.reload().await;
    assert_eq!(v["result"], "unchanged");
    gw.write_config(&body(&up, false, true));
    let resp = c.post(gw.admin("/reload")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["result"], "ok");
    assert_eq!(v["generation"], 2);
    // The answer comes after the swap: the very next request sees it.
    assert_eq!(status(&gw).await, 403);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_config_is_rejected_and_the_old_one_keeps_serving() {
    let up = MockUpstream::start("a").await;
    let gw = gateway(&body(&up, true, false)).start().await;
    let c = client();
    let good_hash = config(&gw).await["hash"].clone();

    let bad = Config::new()
        .cluster("up", Cluster::new([up.addr]))
        .route(Route::new("all", "nope"));
    gw.write_config(&bad);
    // The watcher tries it and rejects it.
    let cfg = eventually(
        Duration::from_secs(10),
        "the bad file to be rejected",
        || async {
            let cfg = config(&gw).await;
            cfg["last_error"].is_object().then_some(cfg)
        },
    )
    .await;
    assert!(
        cfg["last_error"]["error"]
            .as_str()
            .unwrap()
            .contains("routes[0].cluster: unknown cluster \"nope\""),
        "{cfg}"
    );
    assert_eq!(cfg["hash"], good_hash);
    assert_eq!(cfg["generation"], 1);
    assert_eq!(status(&gw).await, 200);

    // The admin trigger says so too.
    let resp = c.post(gw.admin("/reload")).send().await.unwrap();
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["result"], "error");
    assert!(v["error"].as_str().unwrap().contains("routes[0].cluster"));
    assert_eq!(status(&gw).await, 200);

    // Syntax errors too.
    gw.write_raw_config("listeners: [\n");
    let resp = c.post(gw.admin("/reload")).send().await.unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(status(&gw).await, 200);

    let metrics = gw.metrics().await;
    let errors = metric_value(
        &metrics,
        "breakwater_config_reloads_total{result=\"error\"}",
    )
    .unwrap_or(0.0);
    assert!(errors >= 2.0, "{metrics}");
}

#[tokio::test(flavor = "multi_thread")]
async fn reloading_under_steady_load_loses_no_request() {
    let a = MockUpstream::start("a").await;
    let b = MockUpstream::start("b").await;
    let config_for = |up: &MockUpstream, extra_route: bool| {
        let mut config = Config::new().cluster("up", Cluster::new([up.addr]));
        if extra_route {
            config = config.route(
                Route::new("extra", "up")
                    .path_exact("/never")
                    .policy(Deny::new().users(["nobody"])),
            );
        }
        config.route(Route::new("all", "up"))
    };
    let gw = Arc::new(gateway(&config_for(&a, false)).start().await);
    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (gw, ok, failed, stop) = (gw.clone(), ok.clone(), failed.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            let c = client();
            // Bounded: stops on the flag, or after 5000 requests per worker.
            for _ in 0..5000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                match c.get(gw.url("/x")).send().await {
                    Ok(r) if r.status() == 200 => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    for i in 0..20 {
        let up = if i % 2 == 0 { &b } else { &a };
        gw.write_config(&config_for(up, i % 3 == 0));
        let v = gw.reload().await;
        assert_ne!(v["result"], "error", "{v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "requests failed during reloads"
    );
    assert!(ok.load(Ordering::Relaxed) > 100);
    assert!(
        a.count() > 0 && b.count() > 0,
        "both configs served traffic"
    );
    assert!(config(&gw).await["generation"].as_u64().unwrap() >= 11);
}

#[tokio::test(flavor = "multi_thread")]
async fn in_flight_requests_finish_on_the_snapshot_they_started_with() {
    let up = MockUpstream::start("a").await;
    let gw = gateway(&body(&up, false, false)).start().await;
    let url = gw.url("/slow?ms=800");
    let slow = tokio::spawn(async move { client().get(url).send().await.map(|r| r.status()) });
    eventually(
        Duration::from_secs(5),
        "the slow request to reach the upstream",
        || async { (up.count() == 1).then_some(()) },
    )
    .await;
    // The new config has no route for it at all.
    let moved = body_with(&up, false, false, |r| r.path_exact("/elsewhere"));
    gw.write_config(&moved);
    let v: Value = gw.reload().await;
    assert_eq!(v["result"], "ok");
    assert_eq!(status(&gw).await, 404, "new requests see the new config");
    assert_eq!(
        slow.await.unwrap().unwrap(),
        200,
        "the in-flight request kept its snapshot"
    );
}
