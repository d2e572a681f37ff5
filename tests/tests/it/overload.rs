//! The overload gate in front of every cluster, through the real gateway:
//! on by default, a place held for provider work, shedding by priority,
//! its state on the admin and in metrics, and `overload: off`.

use std::time::{Duration, Instant};

use breakwater_tests::config::{Cluster, KeySource, Keys, Route};
use breakwater_tests::{client, eventually, Config, Gateway, MockUpstream};
use serde_json::Value;

use crate::gateway;

/// One cluster `up` with the gate held at `n` places, `queue` waiters for
/// at most `wait`; one route `api` with `route`'s extras.
fn fixed(up: &MockUpstream, n: u32, queue: usize, wait: &str, route: Route) -> Config {
    Config::new()
        .keys(Keys::new().custom("tier", KeySource::header("x-tier")))
        .cluster(
            "up",
            Cluster::new([up.addr])
                .read_timeout_ms(10_000)
                .overload_fixed(n, queue, wait),
        )
        .route(route)
}

async fn overload(gw: &Gateway) -> Value {
    gw.admin_json("/overload/up").await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_place_stays_taken_until_the_upstream_answers_a_client_that_left() {
    let up = MockUpstream::start("a").await;
    let gw = gateway(&fixed(&up, 1, 0, "50ms", Route::new("api", "up")))
        .start()
        .await;
    // The caller gives up after 150 ms; the (cancel-unaware) upstream
    // answers at 1.2 s.
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(150))
        .build()
        .unwrap();
    let started = Instant::now();
    assert!(impatient.get(gw.url("/slow?ms=1200")).send().await.is_err());
    // The provider is still working for it: the one place is taken.
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(
        overload(&gw).await["in_flight"],
        1,
        "held after the client left"
    );
    let refused = client().get(gw.url("/x")).send().await.unwrap();
    assert!(
        started.elapsed() < Duration::from_millis(1100),
        "checked while the upstream was still busy"
    );
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["x-breakwater-error"], "overloaded");
    assert_eq!(refused.headers()["retry-after"], "1");
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["cluster"], "up");
    assert_eq!(up.count(), 1, "the refused call never reached the upstream");
    // Once the upstream has answered, the place is free.
    eventually(
        Duration::from_secs(5),
        "the place to be freed once the upstream answered",
        || async { (overload(&gw).await["in_flight"] == 0).then_some(()) },
    )
    .await;
    assert!(
        started.elapsed() >= Duration::from_millis(1150),
        "freed only after the upstream's answer, at {:?}",
        started.elapsed()
    );
    assert_eq!(
        client().get(gw.url("/x")).send().await.unwrap().status(),
        200
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn under_overload_the_lowest_class_is_shed_first_and_the_highest_last() {
    let up = MockUpstream::start("a").await;
    let route = Route::new("api", "up").priority_by(
        "tier",
        "default",
        &[("bot", "sheddable"), ("gold", "critical")],
    );
    let gw = gateway(&fixed(&up, 1, 1, "5s", route)).start().await;
    let send = |tier: Option<&'static str>, path: &'static str| {
        let mut req = client().get(gw.url(path));
        if let Some(t) = tier {
            req = req.header("x-tier", t);
        }
        tokio::spawn(async move {
            let r = req.send().await.unwrap();
            (r.status().as_u16(), Instant::now())
        })
    };
    // One call holds the only place for 800 ms.
    let holder = send(None, "/slow?ms=800");
    tokio::time::sleep(Duration::from_millis(150)).await;
    // A crawler queues in the only queue place...
    let t0 = Instant::now();
    let bot = send(Some("bot"), "/x");
    tokio::time::sleep(Duration::from_millis(150)).await;
    // ...a gold customer takes it from him...
    let gold = send(Some("gold"), "/x");
    let (bot_status, bot_at) = bot.await.unwrap();
    assert_eq!(bot_status, 503, "the crawler is shed");
    assert!(
        bot_at.duration_since(t0) < Duration::from_millis(600),
        "refused when the gold call came, not after a wait"
    );
    // ...and an ordinary call finds the queue full of a higher class.
    let (plain_status, _) = send(None, "/x").await.unwrap();
    assert_eq!(plain_status, 503, "nobody lower to shed: refused");
    assert_eq!(holder.await.unwrap().0, 200);
    let (gold_status, _) = gold.await.unwrap();
    assert_eq!(gold_status, 200, "the highest class waited for the place");
    let shed = &overload(&gw).await["shed"];
    assert_eq!(shed["sheddable"], 1, "{shed}");
    assert_eq!(shed["default"], 1, "{shed}");
    assert_eq!(shed["critical"], 0, "{shed}");
    assert_eq!(up.count(), 2, "the holder and the gold call");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_gate_is_on_by_default_and_a_healthy_burst_is_never_refused() {
    let up = MockUpstream::start("a").await;
    let gw = gateway(&crate::single_route(&up)).start().await;
    // 100 calls at once on a fresh gateway: past the initial limit (20),
    // which doubles on demand while the upstream shows no queue, with the
    // rest in the queue.
    let c = client();
    let calls: Vec<_> = (0..100)
        .map(|i| {
            let req = c.get(gw.url(&format!("/slow?ms=10&i={i}")));
            tokio::spawn(async move { req.send().await.unwrap().status().as_u16() })
        })
        .collect();
    let mut statuses = Vec::new();
    for call in calls {
        statuses.push(call.await.unwrap());
    }
    let refused = statuses.iter().filter(|s| **s != 200).count();
    assert_eq!(refused, 0, "{refused} of 100 refused on a healthy upstream");
    let all = gw.admin_json("/overload").await;
    let up_gate = &all["clusters"][0];
    assert_eq!(up_gate["cluster"], "up");
    assert_eq!(up_gate["enabled"], true);
    assert_eq!(up_gate["in_flight"], 0);
    assert!(up_gate["limit"].as_u64().unwrap() >= 20, "{up_gate}");
    assert_eq!(up_gate["shed"]["default"], 0);
    let metrics = gw.metrics().await;
    for family in [
        "breakwater_overload_limit{cluster=\"up\"}",
        "breakwater_overload_in_flight{cluster=\"up\"} 0",
        "breakwater_overload_min_rtt_seconds{cluster=\"up\"}",
        "breakwater_overload_shed_total{class=\"critical\",cluster=\"up\"} 0",
    ] {
        assert!(metrics.contains(family), "{family} missing from /metrics");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn overload_off_turns_the_gate_off_and_bad_values_name_their_path() {
    let up = MockUpstream::start("a").await;
    let off = Config::new()
        .cluster("up", Cluster::new([up.addr]).overload_off())
        .route(Route::new("api", "up"));
    let gw = gateway(&off).start().await;
    let state = overload(&gw).await;
    assert_eq!(state["enabled"], false, "{state}");
    assert!(!gw.metrics().await.contains("breakwater_overload_limit{"));
    assert_eq!(
        client().get(gw.url("/x")).send().await.unwrap().status(),
        200
    );
    let bad = format!(
        "listeners:\n  - address: \"{{listen}}\"\nadmin: {{ address: \"{{admin}}\" }}\nclusters:\n  up: {{ endpoints: [\"{}\"], overload: {{ min: 10, max: 5 }} }}\nroutes:\n  - {{ id: api, cluster: up }}\n",
        up.addr
    );
    let e = gateway(bad.as_str()).check().unwrap_err();
    assert!(e.contains("clusters.up.overload.max"), "{e}");
    let bad_class = format!(
        "listeners:\n  - address: \"{{listen}}\"\nadmin: {{ address: \"{{admin}}\" }}\nclusters:\n  up: {{ endpoints: [\"{}\"] }}\nroutes:\n  - {{ id: api, cluster: up, priority: urgent }}\n",
        up.addr
    );
    let e = gateway(bad_class.as_str()).check().unwrap_err();
    assert!(e.contains("urgent") && e.contains("critical"), "{e}");
}
