//! Client-retry suppression: duplicate idempotency keys reach the upstream once.

use breakwater_tests::{client, MockUpstream};

use crate::gateway;

fn config(up: &MockUpstream, mode: &str) -> String {
    format!(
        "clusters:\n  orders:\n    endpoints: [\"{}\"]\nroutes:\n  - id: pay\n    cluster: orders\n    policies:\n      - dedupe: {{ header: idempotency-key, on_duplicate: {mode} }}\n",
        up.addr
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn duplicates_in_flight_join_the_first_call() {
    let up = MockUpstream::start("a").await;
    let gw = gateway(&config(&up, "join")).start().await;
    let call = |url: String| {
        tokio::spawn(async move {
            let resp = client()
                .post(url)
                .header("idempotency-key", "order-42")
                .body("pay 10")
                .send()
                .await
                .unwrap();
            let joined = resp.headers().contains_key("x-breakwater-joined");
            (resp.status().as_u16(), joined, resp.text().await.unwrap())
        })
    };
    // The first call reaches the upstream; the others are the client's retries.
    let mut calls = vec![call(gw.url("/slow?ms=800"))];
    breakwater_tests::eventually(
        std::time::Duration::from_secs(5),
        "the first call upstream",
        || async { (up.count() == 1).then_some(()) },
    )
    .await;
    calls.extend((0..4).map(|_| call(gw.url("/slow?ms=800"))));
    let mut results = Vec::new();
    for c in calls {
        results.push(c.await.unwrap());
    }
    assert_eq!(up.count(), 1, "the upstream saw the call once");
    assert!(results.iter().all(|(s, _, _)| *s == 200), "{results:?}");
    assert_eq!(results.iter().filter(|(_, joined, _)| *joined).count(), 4);
    assert!(
        results.iter().all(|(_, _, body)| body == &results[0].2),
        "everyone got the same answer"
    );
    // Later, the same key is a new call.
    let resp = client()
        .post(gw.url("/x"))
        .header("idempotency-key", "order-42")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(up.count(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn reject_mode_answers_409_to_duplicates() {
    let up = MockUpstream::start("a").await;
    let gw = gateway(&config(&up, "reject")).start().await;
    let url = gw.url("/slow?ms=600");
    let first = tokio::spawn(async move {
        client()
            .post(url)
            .header("idempotency-key", "k")
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    });
    breakwater_tests::eventually(
        std::time::Duration::from_secs(5),
        "the first call upstream",
        || async { (up.count() == 1).then_some(()) },
    )
    .await;
    let dup = client()
        .post(gw.url("/slow?ms=600"))
        .header("idempotency-key", "k")
        .send()
        .await
        .unwrap();
    assert_eq!(dup.status(), 409);
    assert_eq!(first.await.unwrap(), 200);
    assert_eq!(up.count(), 1);
}
