//! The admin listener: tokens, the Origin/Host rule, the stream cap,
//! health, metrics.

use std::time::Duration;

use breakwater_tests::config::{Admin, Cluster, Deny, Route};
use breakwater_tests::{client, eventually, metric_value as metric, Config, Gateway, MockUpstream};
use serde_json::Value;

use crate::{gateway, single_route};

#[tokio::test(flavor = "multi_thread")]
async fn mutations_need_the_write_token() {
    let up = MockUpstream::start("a").await;
    let body = single_route(&up).admin(Admin::default().token("s3cret"));
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

    let get = |path: &str| c.get(gw.admin(path)).bearer_auth("s3cret").send();
    assert_eq!(get("/config").await.unwrap().status(), 200);
    assert_eq!(get("/nope").await.unwrap().status(), 404);
    assert_eq!(get("/reload").await.unwrap().status(), 405);
}

#[tokio::test(flavor = "multi_thread")]
async fn with_a_token_reads_need_a_token_and_the_read_token_cannot_mutate() {
    let up = MockUpstream::start("a").await;
    let body = single_route(&up).admin(Admin::default().token("w-s3cret").read_token("r-s3cret"));
    let gw = gateway(&body).start().await;
    let c = client();
    let status = |method: reqwest::Method, path: &str, token: Option<&str>| {
        let req = c.request(method, gw.admin(path));
        let req = match token {
            Some(t) => req.bearer_auth(t),
            None => req,
        };
        async move { req.send().await.unwrap().status().as_u16() }
    };
    use reqwest::Method as M;

    // Load balancers probe /healthz without credentials.
    assert_eq!(status(M::GET, "/healthz", None).await, 200);
    for path in [
        "/config",
        "/metrics",
        "/blocks",
        "/hotkeys",
        "/hotkeys/stream",
    ] {
        assert_eq!(status(M::GET, path, None).await, 401, "{path}");
        assert_eq!(status(M::GET, path, Some("wrong")).await, 401, "{path}");
    }
    for path in ["/config", "/metrics", "/blocks", "/limits"] {
        assert_eq!(status(M::GET, path, Some("r-s3cret")).await, 200, "{path}");
        assert_eq!(status(M::GET, path, Some("w-s3cret")).await, 200, "{path}");
    }
    let resp = c
        .post(gw.admin("/reload"))
        .bearer_auth("r-s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let v: Value = resp.json().await.unwrap();
    assert!(v["error"].as_str().unwrap().contains("read token"), "{v}");
    let block = serde_json::json!({ "key": "ip:203.0.113.7", "ttl": "1m" });
    let resp = c
        .post(gw.admin("/blocks"))
        .bearer_auth("r-s3cret")
        .json(&block)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert_eq!(status(M::DELETE, "/cache", Some("r-s3cret")).await, 403);
    assert_eq!(status(M::POST, "/reload", Some("w-s3cret")).await, 200);
    let blocks: Value = gw_json(&c, &gw, "/blocks", "r-s3cret").await;
    assert_eq!(
        blocks["count"], 0,
        "the read token blocked nothing: {blocks}"
    );
}

async fn gw_json(c: &reqwest::Client, gw: &Gateway, path: &str, token: &str) -> Value {
    c.get(gw.admin(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_web_page_cannot_mutate_but_curl_can() {
    let up = MockUpstream::start("a").await;
    let gw = gateway(&single_route(&up)).start().await;
    let c = client();
    let own = format!("127.0.0.1:{}", gw.admin_port);

    // A cross-site form post or no-cors fetch: the browser names the page's origin.
    let resp = c
        .post(gw.admin("/reload"))
        .header("origin", "http://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let v: Value = resp.json().await.unwrap();
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("Origin \"http://evil.example\""),
        "{v}"
    );
    let block = serde_json::json!({ "key": "user:alice", "ttl": "10m" });
    let resp = c
        .post(gw.admin("/blocks"))
        .header("origin", "http://evil.example")
        .json(&block)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let resp = c
        .post(gw.admin("/blocks"))
        .header("origin", "null")
        .json(&block)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403, "a sandboxed page's Origin is null");

    // DNS rebinding: evil.example now resolves to 127.0.0.1, so the page is
    // same-origin to the browser; Host names the attacker's domain.
    for (method, path) in [
        (reqwest::Method::POST, "/reload"),
        (reqwest::Method::DELETE, "/cache"),
        (reqwest::Method::GET, "/config"),
    ] {
        let resp = c
            .request(method.clone(), gw.admin(path))
            .header("host", format!("evil.example:{}", gw.admin_port))
            .header("origin", format!("http://evil.example:{}", gw.admin_port))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 403, "{method} {path}");
        let v: Value = resp.json().await.unwrap();
        assert!(v["error"].as_str().unwrap().contains("Host"), "{v}");
    }
    let blocks: Value = gw.admin_json("/blocks").await;
    assert_eq!(blocks["count"], 0, "nothing was blocked: {blocks}");

    // curl sends no Origin; a page served by the admin's own origin may post.
    assert_eq!(gw.reload().await["result"], "unchanged");
    let resp = c
        .post(gw.admin("/blocks"))
        .header("origin", format!("http://{own}"))
        .json(&block)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let resp = c
        .delete(gw.admin("/blocks/user:alice"))
        .header("host", format!("localhost:{}", gw.admin_port))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "localhost names the admin");
}

#[tokio::test(flavor = "multi_thread")]
async fn allowed_hosts_name_the_admin_too() {
    let up = MockUpstream::start("a").await;
    let body = single_route(&up).admin(Admin::default().allowed_hosts(["gw-1.internal"]));
    let gw = gateway(&body).start().await;
    let c = client();
    let post = |host: &str| {
        c.post(gw.admin("/reload"))
            .header("host", format!("{host}:{}", gw.admin_port))
            .send()
    };
    assert_eq!(post("gw-1.internal").await.unwrap().status(), 200);
    assert_eq!(post("gw-2.internal").await.unwrap().status(), 403);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_cannot_open_the_admin_to_the_network_without_a_token() {
    let up = MockUpstream::start("a").await;
    let gw = gateway(&single_route(&up)).start().await;
    // The address only changes on restart, but the file must stay valid.
    gw.write_config(&single_route(&up).admin(Admin::default().on_all_interfaces()));
    let v = gw.reload().await;
    assert_eq!(v["result"], "error", "{v}");
    let error = v["error"].as_str().unwrap();
    assert!(
        error.starts_with("admin.address: ") && error.contains("admin.token"),
        "{error}"
    );
}

/// `admin.address` changes only with a restart: a reload that moves it to
/// loopback and drops the token must not leave the live admin, still on
/// every interface, open.
#[tokio::test(flavor = "multi_thread")]
async fn a_reload_cannot_drop_the_token_of_an_admin_still_on_the_network() {
    let up = MockUpstream::start("a").await;
    let gw = gateway(&single_route(&up).admin(Admin::default().on_all_interfaces().token("t0k")))
        .admin_token("t0k")
        .start()
        .await;
    // Back on loopback, the port unchanged, and no token.
    gw.write_config(&single_route(&up).admin(Admin::default()));
    let v = gw.reload().await;
    assert_eq!(v["result"], "error", "{v}");
    let error = v["error"].as_str().unwrap();
    assert!(
        error.starts_with("admin.token: ") && error.contains("0.0.0.0"),
        "{error}"
    );
    // Still guarded: without the token, no reads and no mutations.
    let c = client();
    assert_eq!(
        c.get(gw.admin("/config")).send().await.unwrap().status(),
        401
    );
    assert_eq!(
        c.post(gw.admin("/reload")).send().await.unwrap().status(),
        401
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn stream_subscribers_are_capped_and_a_dropped_one_frees_its_slot() {
    let up = MockUpstream::start("a").await;
    let body = single_route(&up).admin(Admin::default().max_stream_subscribers(2));
    let gw = gateway(&body).start().await;
    // A client each: each stream is its own connection.
    let subscribe = || client().get(gw.admin("/hotkeys/stream")).send();
    let first = subscribe().await.unwrap();
    let second = subscribe().await.unwrap();
    assert_eq!(
        (first.status().as_u16(), second.status().as_u16()),
        (200, 200)
    );
    let third = subscribe().await.unwrap();
    assert_eq!(third.status(), 503);
    let v: Value = third.json().await.unwrap();
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("admin.max_stream_subscribers"),
        "{v}"
    );
    let live = || async { gw.admin_json("/hotkeys").await["stream_subscribers"]["live"].as_u64() };
    assert_eq!(live().await, Some(2));

    // The client goes away (its connection closes): the slot comes back at
    // once, not at the next heartbeat (15 s).
    drop(first);
    eventually(
        Duration::from_secs(5),
        "the abandoned stream to give its slot back",
        || async { (live().await == Some(1)).then_some(()) },
    )
    .await;
    let again = subscribe().await.unwrap();
    assert_eq!(again.status(), 200);
    assert_eq!(subscribe().await.unwrap().status(), 503);
    drop(second);
    drop(again);
    eventually(
        Duration::from_secs(5),
        "every slot to be given back",
        || async { (live().await == Some(0)).then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn token_can_come_from_the_environment() {
    let up = MockUpstream::start("a").await;
    let body = single_route(&up).admin(Admin::default().token_env("BW_TEST_TOKEN"));
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
    let body = Config::new()
        .cluster("up", Cluster::new([up.addr]))
        .route(
            Route::new("guarded", "up")
                .path_prefix("/guarded")
                .policy(Deny::new().users(["mallory"])),
        )
        .route(Route::new("all", "up"));
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
