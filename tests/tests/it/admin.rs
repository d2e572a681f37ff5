//! The admin listener: token enforcement, health, metrics.

use breakwater_tests::{client, metric_value as metric, MockUpstream};
use serde_json::Value;

use crate::{gateway, single_route};

#[tokio::test(flavor = "multi_thread")]
async fn mutations_need_the_bearer_token_reads_do_not() {
    let up = MockUpstream::start("a").await;
    let body = format!(
        "admin:\n  address: \"{{admin}}\"\n  token: s3cret\n{}",
        single_route(&up)
    );
    let gw = gateway(&body).start().await;
    let c = client();

    let resp = c.post(gw.admin("/reload")).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.headers()["www-authenticate"], "Bearer");
    let resp = c
        .post(gw.admin("/reload"))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let resp = c
        .post(gw.admin("/reload"))
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    assert_eq!(
        c.get(gw.admin("/config")).send().await.unwrap().status(),
        200
    );
    assert_eq!(
        c.get(gw.admin("/healthz")).send().await.unwrap().status(),
        200
    );
    assert_eq!(c.get(gw.admin("/nope")).send().await.unwrap().status(), 404);
    assert_eq!(
        c.get(gw.admin("/reload")).send().await.unwrap().status(),
        405
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn token_can_come_from_the_environment() {
    let up = MockUpstream::start("a").await;
    let body = format!(
        "admin:\n  address: \"{{admin}}\"\n  token_env: BW_TEST_TOKEN\n{}",
        single_route(&up)
    );
    let gw = gateway(&body)
        .env("BW_TEST_TOKEN", "from-env")
        .start()
        .await;
    let c = client();
    assert_eq!(
        c.post(gw.admin("/reload")).send().await.unwrap().status(),
        401
    );
    let resp = c
        .post(gw.admin("/reload"))
        .bearer_auth("from-env")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_requests_latency_and_decisions() {
    let up = MockUpstream::start("a").await;
    let body = format!(
        "clusters:\n  up:\n    endpoints: [\"{}\"]\nroutes:\n  - id: guarded\n    match: {{ path: {{ prefix: /guarded }} }}\n    cluster: up\n    policies:\n      - deny: {{ users: [mallory] }}\n  - id: all\n    cluster: up\n",
        up.addr
    );
    let gw = gateway(&body).start().await;
    let c = client();
    for _ in 0..3 {
        c.get(gw.url("/a")).send().await.unwrap();
    }
    c.get(gw.url("/guarded")).send().await.unwrap();
    let r = c
        .get(gw.url("/guarded"))
        .header("x-user-id", "mallory")
        .send()
        .await
        .unwrap();
    // No user key is configured, so mallory is not recognised: allowed.
    assert_eq!(r.status(), 200);

    // Counters move in the logging phase, just after the response is sent.
    let text = breakwater_tests::eventually(
        std::time::Duration::from_secs(5),
        "all five requests to be counted",
        || async {
            let text = client()
                .get(gw.admin("/metrics"))
                .send()
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            (metric(
                &text,
                "breakwater_upstream_latency_seconds_count{cluster=\"up\"}",
            ) == Some(5.0))
            .then_some(text)
        },
    )
    .await;
    assert_eq!(
        metric(
            &text,
            "breakwater_requests_total{route=\"all\",status=\"200\"}"
        ),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "breakwater_requests_total{route=\"guarded\",status=\"200\"}"
        ),
        Some(2.0)
    );
    assert_eq!(
        metric(
            &text,
            "breakwater_upstream_latency_seconds_count{cluster=\"up\"}"
        ),
        Some(5.0)
    );
    assert_eq!(
        metric(&text, "breakwater_policy_decisions_total{decision=\"allow\",kind=\"deny\",policy=\"guarded.deny\"}"),
        Some(2.0),
        "{text}"
    );
    assert_eq!(metric(&text, "breakwater_config_generation"), Some(1.0));
}

#[tokio::test(flavor = "multi_thread")]
async fn config_endpoint_describes_the_live_snapshot() {
    let up = MockUpstream::start("a").await;
    let gw = gateway(&crate::single_route(&up)).start().await;
    let v: Value = gw.admin_json("/config").await;
    assert_eq!(v["generation"], 1);
    assert_eq!(v["hash"].as_str().unwrap().len(), 16);
    assert!(v["loaded_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(v["routes"][0]["id"], "all");
    assert_eq!(v["clusters"]["up"]["endpoints"][0], up.addr.to_string());
    assert!(v["last_error"].is_null());
}
