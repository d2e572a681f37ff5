//! Circuit breakers through the gateway, against an upstream that can be
//! switched between healthy, failing, slow and dead.

use std::time::Duration;

use breakwater_tests::config::{Admin, Breaker, Cluster, Route, Server};
use breakwater_tests::{client, eventually, Config, Gateway, MockUpstream};
use serde_json::Value;

use crate::gateway;

fn config(up: &MockUpstream, breaker: Breaker) -> Config {
    Config::new()
        .server(Server::default().watch_config(false))
        .cluster("orders", Cluster::new([up.addr]).read_timeout_ms(3000))
        .route(Route::new("api", "orders").policy(breaker))
}

/// Two endpoints, each with its own breaker.
fn per_endpoint(endpoints: [&MockUpstream; 2], failures: u32) -> Config {
    let breaker = Breaker::consecutive_failures(failures)
        .per_endpoint()
        .open("30s")
        .max_ejection_percent(50);
    Config::new()
        .cluster("orders", Cluster::new(endpoints.map(|up| up.addr)))
        .route(Route::new("api", "orders").policy(breaker))
}

async fn status(gw: &Gateway) -> u16 {
    client()
        .get(gw.url("/x"))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn breaker(gw: &Gateway, name: &str) -> Value {
    gw.admin_json(&format!("/breakers/{name}")).await
}

#[tokio::test(flavor = "multi_thread")]
async fn opens_on_consecutive_failures_then_spares_the_upstream() {
    let up = MockUpstream::start("a").await;
    let gw = gateway(&config(&up, Breaker::consecutive_failures(5).open("30s")))
        .start()
        .await;
    up.fail_with(500);
    for _ in 0..5 {
        assert_eq!(status(&gw).await, 500);
    }
    let resp = client().get(gw.url("/x")).send().await.unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(
        resp.headers()["x-breakwater-breaker"],
        "orders.circuit_breaker"
    );
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((25..=30).contains(&retry), "{retry}");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"], "circuit_open");
    assert!(
        v["reason"]
            .as_str()
            .unwrap()
            .contains("5 consecutive failures"),
        "{v}"
    );
    // Open: the upstream sees nothing more.
    for _ in 0..20 {
        assert_eq!(status(&gw).await, 503);
    }
    assert_eq!(up.count(), 5);
    let b = breaker(&gw, "orders.circuit_breaker").await;
    assert_eq!(b["state"], "open");
    assert_eq!(b["transitions"]["to_open"], 1);
    assert!(b["next_probe_in_ms"].as_u64().unwrap() > 20_000);
}

#[tokio::test(flavor = "multi_thread")]
async fn dead_upstream_trips_it_too() {
    let mut up = MockUpstream::start("a").await;
    let gw = gateway(&config(&up, Breaker::consecutive_failures(3).open("30s")))
        .start()
        .await;
    assert_eq!(status(&gw).await, 200);
    up.kill();
    for _ in 0..3 {
        assert_eq!(status(&gw).await, 502);
    }
    assert_eq!(status(&gw).await, 503);
}

#[tokio::test(flavor = "multi_thread")]
async fn half_open_lets_exactly_the_probes_through_and_recovery_closes() {
    let up = MockUpstream::start("a").await;
    let gw = gateway(&config(
        &up,
        Breaker::consecutive_failures(2).open("1s").half_open(2, 2),
    ))
    .start()
    .await;
    up.fail_with(500);
    for _ in 0..2 {
        assert_eq!(status(&gw).await, 500);
    }
    assert_eq!(status(&gw).await, 503);
    // The upstream recovers, slowly enough that probes overlap.
    up.fail_with(0);
    up.slow_down(Duration::from_millis(600));
    let before = up.count();
    eventually(Duration::from_secs(5), "the open period to end", || async {
        (breaker(&gw, "orders.circuit_breaker").await["next_probe_in_ms"]
            .as_u64()
            .unwrap_or(0)
            == 0)
            .then_some(())
    })
    .await;
    let calls: Vec<_> = (0..6)
        .map(|_| {
            let url = gw.url("/x");
            tokio::spawn(async move { client().get(url).send().await.unwrap().status().as_u16() })
        })
        .collect();
    let mut statuses = Vec::new();
    for c in calls {
        statuses.push(c.await.unwrap());
    }
    statuses.sort_unstable();
    assert_eq!(
        statuses,
        [200, 200, 503, 503, 503, 503],
        "exactly two probes pass"
    );
    assert_eq!(up.count() - before, 2);
    let b = breaker(&gw, "orders.circuit_breaker").await;
    assert_eq!(b["state"], "closed", "two successful probes close it");
    up.slow_down(Duration::ZERO);
    assert_eq!(status(&gw).await, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_endpoint_is_ejected_while_the_good_one_serves() {
    let bad = MockUpstream::start("bad").await;
    let good = MockUpstream::start("good").await;
    bad.fail_with(500);
    let gw = gateway(&per_endpoint([&bad, &good], 3)).start().await;
    let mut failures = 0;
    for _ in 0..40 {
        if status(&gw).await != 200 {
            failures += 1;
        }
    }
    assert_eq!(
        failures, 3,
        "the bad endpoint got exactly the failures that tripped it"
    );
    assert_eq!(bad.count(), 3);
    assert_eq!(good.count(), 37);
    let v: Value = gw.admin_json("/breakers").await;
    let states: Vec<(String, String)> = v["breakers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["name"].as_str().unwrap().to_string(),
                b["state"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        states.contains(&(
            format!("orders.endpoint_breaker/{}", bad.addr),
            "open".into()
        )),
        "{states:?}"
    );
    assert!(states.contains(&(
        format!("orders.endpoint_breaker/{}", good.addr),
        "closed".into()
    )));
}

#[tokio::test(flavor = "multi_thread")]
async fn all_endpoints_sick_means_panic_routing_not_a_blackout() {
    let a = MockUpstream::start("a").await;
    let b = MockUpstream::start("b").await;
    a.fail_with(500);
    b.fail_with(500);
    let gw = gateway(&per_endpoint([&a, &b], 2)).start().await;
    for _ in 0..10 {
        // Still routed upstream (500), never refused by the gateway (503).
        assert_eq!(status(&gw).await, 500);
    }
    assert_eq!(a.count() + b.count(), 10);
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_forces_states_and_metrics_show_them() {
    let up = MockUpstream::start("a").await;
    let body = config(&up, Breaker::consecutive_failures(5)).admin(Admin::default().token("k"));
    let gw = gateway(&body).admin_token("k").start().await;
    let c = client();
    let url = gw.admin("/breakers/orders.circuit_breaker/open");
    assert_eq!(c.post(&url).send().await.unwrap().status(), 401);
    let v: Value = c
        .post(&url)
        .bearer_auth("k")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["state"], "open");
    assert_eq!(v["forced"], true);
    assert_eq!(status(&gw).await, 503);
    assert_eq!(up.count(), 0);
    let text = gw.metrics().await;
    assert!(
        text.contains("breakwater_breaker_state{breaker=\"orders.circuit_breaker\"} 1"),
        "{text}"
    );
    let v: Value = c
        .post(gw.admin("/breakers/orders.circuit_breaker/reset"))
        .bearer_auth("k")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["state"], "closed");
    assert_eq!(v["forced"], false);
    assert_eq!(status(&gw).await, 200);
    let resp = c
        .post(gw.admin("/breakers/nope/open"))
        .bearer_auth("k")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_open_breaker_stays_open_across_an_unrelated_reload() {
    let up = MockUpstream::start("a").await;
    let body = config(&up, Breaker::consecutive_failures(2).open("60s"));
    let gw = gateway(&body).start().await;
    up.fail_with(500);
    status(&gw).await;
    status(&gw).await;
    assert_eq!(status(&gw).await, 503);
    gw.write_config(&body.route(Route::new("other", "orders").path_prefix("/other")));
    let v: Value = gw.reload().await;
    assert_eq!(v["result"], "ok");
    up.fail_with(0);
    assert_eq!(status(&gw).await, 503, "the breaker kept its state");
    assert_eq!(
        breaker(&gw, "orders.circuit_breaker").await["state"],
        "open"
    );
}
