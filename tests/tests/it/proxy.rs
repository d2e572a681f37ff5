//! Proxying: bodies both ways, headers, and the gateway's own error answers.

use breakwater_tests::upstream::{fnv, pattern_byte};
use breakwater_tests::{client, free_port, MockUpstream};
use serde_json::Value;

use crate::{gateway, single_route};

#[tokio::test(flavor = "multi_thread")]
async fn get_and_post_with_large_bodies_stream_through() {
    let up = MockUpstream::start("a").await;
    let gw = gateway(&single_route(&up)).start().await;
    let c = client();

    // 8 MiB upload, content-length framed.
    let body: Vec<u8> = (0..8 * 1024 * 1024).map(|i| (i * 7 % 256) as u8).collect();
    let resp = c
        .post(gw.url("/upload"))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let echo: Value = resp.json().await.unwrap();
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["body_len"], body.len());
    assert_eq!(echo["body_fnv"], fnv(&body).to_string());

    // 4 MiB upload, chunked (a stream of unknown length).
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..64).map(|i| Ok(vec![i as u8; 64 * 1024])).collect();
    let expected: Vec<u8> = (0..64).flat_map(|i| vec![i as u8; 64 * 1024]).collect();
    let resp = c
        .put(gw.url("/upload"))
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    let echo: Value = resp.json().await.unwrap();
    assert_eq!(echo["body_len"], expected.len());
    assert_eq!(echo["body_fnv"], fnv(&expected).to_string());

    // 16 MiB download, chunked by the upstream.
    let n = 16 * 1024 * 1024;
    let resp = c
        .get(gw.url(&format!("/download?bytes={n}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let got = resp.bytes().await.unwrap();
    assert_eq!(got.len(), n);
    assert!(got.iter().enumerate().all(|(i, b)| *b == pattern_byte(i)));
}

#[tokio::test(flavor = "multi_thread")]
async fn headers_pass_both_ways_and_forwarding_headers_are_added() {
    let up = MockUpstream::start("a").await;
    let gw = gateway(&single_route(&up)).start().await;
    let resp = client()
        .get(gw.url("/h?q=1"))
        .header("x-custom", "kept")
        .header("x-forwarded-for", "192.0.2.1")
        .header("x-request-id", "req-abc")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-upstream-custom"], "yes");
    assert_eq!(resp.headers()["x-request-id"], "req-abc");
    let echo: Value = resp.json().await.unwrap();
    assert_eq!(echo["query"], "q=1");
    let h = &echo["headers"];
    assert_eq!(h["x-custom"], "kept");
    assert_eq!(h["x-forwarded-for"], "192.0.2.1, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-request-id"], "req-abc");
    assert!(h["host"].as_str().unwrap().starts_with("127.0.0.1:"));

    // Without a client id (or with one that is not sane), one is generated
    // and sent both ways: 128 bits as 32 lowercase hex digits, like a W3C
    // trace id, and a new one per request.
    let mut ids = std::collections::HashSet::new();
    for sent in [None, Some("two words"), Some(&*"x".repeat(129))] {
        let mut req = client().get(gw.url("/h"));
        if let Some(v) = sent {
            req = req.header("x-request-id", v);
        }
        let resp = req.send().await.unwrap();
        let id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
        let echo: Value = resp.json().await.unwrap();
        assert_eq!(echo["headers"]["x-request-id"], id);
        assert_eq!(id.len(), 32, "{id}");
        assert!(
            id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
            "{id}"
        );
        assert!(id.bytes().any(|b| b != b'0'), "{id}");
        assert!(ids.insert(id), "a repeated id");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_connections_are_reused() {
    let up = MockUpstream::start("a").await;
    let gw = gateway(&single_route(&up)).start().await;
    let c = client();
    for _ in 0..20 {
        assert_eq!(c.get(gw.url("/x")).send().await.unwrap().status(), 200);
    }
    assert_eq!(up.count(), 20);
    // Sequential requests ride pooled keep-alive connections, not one each.
    assert!(
        up.connections() <= 2,
        "{} upstream connections for 20 requests",
        up.connections()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn no_route_is_a_404_json() {
    let up = MockUpstream::start("a").await;
    let body = format!(
        "clusters:\n  up:\n    endpoints: [\"{}\"]\nroutes:\n  - id: only\n    match: {{ path: {{ exact: /only }} }}\n    cluster: up\n",
        up.addr
    );
    let gw = gateway(&body).start().await;
    let resp = client().get(gw.url("/other")).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"], "no_route");
    assert_eq!(up.count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn dead_upstream_is_a_502_naming_the_cluster() {
    let dead = free_port();
    let body = format!(
        "clusters:\n  orders:\n    endpoints: [\"127.0.0.1:{dead}\"]\nroutes:\n  - id: all\n    cluster: orders\n"
    );
    let gw = gateway(&body).start().await;
    let resp = client().get(gw.url("/x")).send().await.unwrap();
    assert_eq!(resp.status(), 502);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"], "upstream_unavailable");
    assert_eq!(v["cluster"], "orders");
    assert_eq!(v["route"], "all");
    assert!(v["reason"].as_str().unwrap().contains("refused"), "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_upstream_is_a_504_naming_the_cluster() {
    let up = MockUpstream::start("a").await;
    let body = format!(
        "clusters:\n  slowpoke:\n    endpoints: [\"{}\"]\n    read_timeout_ms: 200\nroutes:\n  - id: all\n    cluster: slowpoke\n",
        up.addr
    );
    let gw = gateway(&body).start().await;
    let resp = client().get(gw.url("/slow?ms=3000")).send().await.unwrap();
    assert_eq!(resp.status(), 504);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"], "upstream_timeout");
    assert_eq!(v["cluster"], "slowpoke");
}
