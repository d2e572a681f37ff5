//! Rate limits, concurrency limits, abuse blocking and the block list,
//! through the real gateway.

use std::time::{Duration, Instant};

use breakwater_tests::config::{
    Abuse, Admin, Cluster, Concurrency, KeySource, Keys, Policy, RateLimit, Route, Server,
};
use breakwater_tests::{client, eventually, Config, Gateway, MockUpstream};
use serde_json::Value;

use crate::gateway;

/// Route `api` to `up` with this one policy.
fn with_policy(up: &MockUpstream, keys: Keys, policy: impl Into<Policy>) -> Config {
    Config::new()
        .keys(keys)
        .cluster("up", Cluster::new([up.addr]).read_timeout_ms(10000))
        .route(Route::new("api", "up").policy(policy))
}

fn user_header() -> Keys {
    Keys::new().user(KeySource::header("x-user-id"))
}

fn trusting_loopback() -> Keys {
    Keys::new().trusted_proxies(["127.0.0.1"])
}

async fn get(gw: &Gateway, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut req = client().get(gw.url(path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

async fn limits(gw: &Gateway) -> Value {
    gw.admin_json("/limits").await
}

/// Sends `rate` requests per second for `secs`, paced; returns how many got 200.
async fn paced(gw: &Gateway, rate: u64, secs: u64, headers: &[(&str, &str)]) -> (u64, u64) {
    let c = client();
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
    let (mut ok, mut limited) = (0, 0);
    for _ in 0..rate * secs {
        tick.tick().await;
        let mut req = c.get(gw.url("/x"));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        match req.send().await.unwrap().status().as_u16() {
            200 => ok += 1,
            429 => limited += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    (ok, limited)
}

#[tokio::test(flavor = "multi_thread")]
async fn steady_load_at_twice_the_limit_admits_the_limit() {
    let up = MockUpstream::start("a").await;
    for algo in ["sliding_window", "gcra"] {
        let limit = RateLimit::per_ip(40, "1s");
        // A small burst absorbs the jitter of real arrival times; it adds at most 5 of 200.
        let limit = if algo == "gcra" {
            limit.gcra().burst(5)
        } else {
            limit.sliding_window()
        };
        let body = with_policy(&up, Keys::new(), limit);
        let gw = gateway(&body).start().await;
        let (ok, limited) = paced(&gw, 80, 5, &[]).await;
        let expected = 40.0 * 5.0;
        let error = (ok as f64 - expected).abs() / expected;
        assert!(
            error <= 0.05,
            "{algo}: admitted {ok} of {} (expected {expected} ± 5%)",
            ok + limited
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn ips_are_limited_independently_and_spoofing_does_not_evade() {
    let up = MockUpstream::start("a").await;
    let policy = RateLimit::per_ip(5, "1m");
    // Behind a trusted proxy, two clients each get their own 5.
    let trusted = gateway(&with_policy(&up, trusting_loopback(), policy.clone()))
        .start()
        .await;
    for client_ip in ["203.0.113.1", "203.0.113.2"] {
        let mut ok = 0;
        for _ in 0..8 {
            if get(&trusted, "/x", &[("x-forwarded-for", client_ip)])
                .await
                .status()
                == 200
            {
                ok += 1;
            }
        }
        assert_eq!(ok, 5, "{client_ip}");
    }
    // Directly exposed, a client that invents a new X-Forwarded-For for each
    // request is still one IP.
    let exposed = gateway(&with_policy(&up, Keys::new(), policy))
        .start()
        .await;
    let mut ok = 0;
    for i in 0..8 {
        let fake = format!("198.51.100.{i}");
        if get(&exposed, "/x", &[("x-forwarded-for", &fake)])
            .await
            .status()
            == 200
        {
            ok += 1;
        }
    }
    assert_eq!(ok, 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn rejections_carry_retry_after_and_ratelimit_headers() {
    let up = MockUpstream::start("a").await;
    let body = with_policy(
        &up,
        user_header(),
        RateLimit::new("user", 2, "1m")
            .name("per-user")
            .sliding_window(),
    );
    let gw = gateway(&body).start().await;
    let alice = [("x-user-id", "alice")];
    assert_eq!(get(&gw, "/x", &alice).await.status(), 200);
    assert_eq!(get(&gw, "/x", &alice).await.status(), 200);
    let resp = get(&gw, "/x", &alice).await;
    assert_eq!(resp.status(), 429);
    let h = resp.headers();
    let retry: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(h["ratelimit-policy"], "\"per-user\";q=2;w=60");
    assert_eq!(
        h["ratelimit"].to_str().unwrap(),
        format!("\"per-user\";r=0;t={retry}")
    );
    assert_eq!(h["x-breakwater-policy"], "per-user");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"], "rate_limited");
    assert_eq!(v["policy"], "per-user");
    assert_eq!(up.count(), 2);
    // Another user is unaffected.
    assert_eq!(get(&gw, "/x", &[("x-user-id", "bob")]).await.status(), 200);

    // gRPC callers get RESOURCE_EXHAUSTED.
    let resp = client()
        .post(gw.url("/pkg.Svc/Call"))
        .header("content-type", "application/grpc")
        .header("x-user-id", "alice")
        .body(vec![0u8; 5])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["grpc-status"], "8");
}

#[tokio::test(flavor = "multi_thread")]
async fn shadow_mode_admits_and_reports_what_it_would_reject() {
    let up = MockUpstream::start("a").await;
    let body = with_policy(&up, Keys::new(), RateLimit::per_ip(3, "1m").shadow());
    let gw = gateway(&body).start().await;
    for _ in 0..10 {
        assert_eq!(get(&gw, "/x", &[]).await.status(), 200);
    }
    assert_eq!(up.count(), 10);
    let v = limits(&gw).await;
    let l = &v["limits"][0];
    assert_eq!(l["name"], "api.rate_limit");
    assert_eq!(l["admitted"], 3);
    assert_eq!(l["shadow_rejected"], 7);
    assert_eq!(l["rejected"], 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn limits_endpoint_and_metrics_show_keys_and_counts() {
    let up = MockUpstream::start("a").await;
    let body = with_policy(
        &up,
        trusting_loopback(),
        RateLimit::per_ip(100, "1m").sliding_window(),
    );
    let gw = gateway(&body).start().await;
    for (ip, n) in [("203.0.113.1", 60), ("203.0.113.2", 10)] {
        for _ in 0..n {
            get(&gw, "/x", &[("x-forwarded-for", ip)]).await;
        }
    }
    let v = limits(&gw).await;
    let l = &v["limits"][0];
    assert_eq!(l["type"], "rate_limit");
    assert_eq!(l["tracked_keys"], 2);
    assert_eq!(l["max_keys"], 100_000);
    assert_eq!(l["config"]["limit"], 100);
    assert_eq!(l["top_keys"][0]["key"], "203.0.113.1");
    assert_eq!(l["top_keys"][0]["count"], 60.0);
    let text = gw.metrics().await;
    assert!(
        text.contains("breakwater_limit_requests_total{kind=\"rate_limit\",policy=\"api.rate_limit\",result=\"admitted\"} 70"),
        "{text}"
    );
    assert!(text.contains(
        "breakwater_limit_tracked_keys{kind=\"rate_limit\",policy=\"api.rate_limit\"} 2"
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrency_limit_holds_under_parallel_slow_requests() {
    let up = MockUpstream::start("a").await;
    let body = with_policy(&up, Keys::new(), Concurrency::max(2));
    let gw = gateway(&body).start().await;
    let started = Instant::now();
    let calls: Vec<_> = (0..6)
        .map(|_| {
            let url = gw.url("/slow?ms=800");
            tokio::spawn(async move { client().get(url).send().await.unwrap().status().as_u16() })
        })
        .collect();
    let mut statuses = Vec::new();
    for c in calls {
        statuses.push(c.await.unwrap());
    }
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 200, 503, 503, 503, 503]);
    assert_eq!(up.count(), 2, "refused requests never reach the upstream");
    assert!(started.elapsed() < Duration::from_secs(5));
    // All slots are back.
    eventually(Duration::from_secs(5), "slots to be released", || async {
        (limits(&gw).await["limits"][0]["in_flight"] == 0).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrency_queue_lets_waiters_through_in_turn() {
    let up = MockUpstream::start("a").await;
    let body = with_policy(&up, Keys::new(), Concurrency::max(1).queue(4, "5s"));
    let gw = gateway(&body).start().await;
    let calls: Vec<_> = (0..3)
        .map(|_| {
            let url = gw.url("/slow?ms=200");
            tokio::spawn(async move { client().get(url).send().await.unwrap().status().as_u16() })
        })
        .collect();
    for c in calls {
        assert_eq!(c.await.unwrap(), 200);
    }
    assert_eq!(up.count(), 3);
}

/// A client that gives up does not end the provider's work: the call goes
/// on (the gateway keeps reading its answer) and its slot stays taken until
/// the upstream answers, then frees at once.
#[tokio::test(flavor = "multi_thread")]
async fn concurrency_slot_is_held_until_the_upstream_answers_a_client_that_left() {
    let up = MockUpstream::start("a").await;
    let body = with_policy(&up, Keys::new(), Concurrency::max(1));
    let gw = gateway(&body).start().await;
    let started = Instant::now();
    // The client gives up long before the upstream answers (1.5 s).
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    assert!(impatient.get(gw.url("/slow?ms=1500")).send().await.is_err());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(limits(&gw).await["limits"][0]["in_flight"], 1);
    let busy = get(&gw, "/x", &[]).await;
    assert!(started.elapsed() < Duration::from_millis(1400));
    assert_eq!(busy.status(), 503, "the provider is still working");
    assert_eq!(up.count(), 1);
    eventually(
        Duration::from_secs(5),
        "the slot to be released once the upstream answered",
        || async { (limits(&gw).await["limits"][0]["in_flight"] == 0).then_some(()) },
    )
    .await;
    assert!(started.elapsed() >= Duration::from_millis(1450));
    assert_eq!(get(&gw, "/x", &[]).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn abuse_detection_blocks_then_unblocks_after_the_ttl() {
    let up = MockUpstream::start("a").await;
    let body = with_policy(
        &up,
        Keys::new(),
        Abuse::new("ip", 5, "1s", "2s").status(429),
    );
    let gw = gateway(&body).start().await;
    let mut statuses = Vec::new();
    for _ in 0..8 {
        statuses.push(get(&gw, "/x", &[]).await.status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429, 429, 429]);
    assert_eq!(up.count(), 5, "a blocked IP never reaches the upstream");
    let resp = get(&gw, "/x", &[]).await;
    assert!(resp.headers().contains_key("retry-after"));
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"], "blocked");
    assert_eq!(v["policy"], "api.abuse");
    let blocks: Value = gw.admin_json("/blocks").await;
    assert_eq!(blocks["blocks"][0]["key"], "ip:127.0.0.1");
    assert_eq!(blocks["blocks"][0]["source"], "api.abuse");
    // The block lapses by itself.
    eventually(Duration::from_secs(10), "the block to expire", || async {
        (get(&gw, "/x", &[]).await.status() == 200).then_some(())
    })
    .await;
    let blocks: Value = gw.admin_json("/blocks").await;
    assert_eq!(blocks["count"], 0);
    assert!(gw.log().contains("key blocked") && gw.log().contains("block expired"));
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_block_list_end_to_end() {
    let up = MockUpstream::start("a").await;
    let body = Config::new()
        .admin(Admin::default().token("t0k"))
        .keys(user_header())
        .cluster("up", Cluster::new([up.addr]))
        .route(Route::new("open", "up"));
    let gw = gateway(&body).admin_token("t0k").start().await;
    let c = client();
    let mallory = [("x-user-id", "mallory")];
    assert_eq!(get(&gw, "/x", &mallory).await.status(), 200);

    let block = serde_json::json!({ "key": "user:mallory", "ttl": "10m", "reason": "fraud" });
    assert_eq!(
        c.post(gw.admin("/blocks"))
            .json(&block)
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let resp = c
        .post(gw.admin("/blocks"))
        .bearer_auth("t0k")
        .json(&block)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    // Blocks apply on every route, with no policy configured there.
    let resp = get(&gw, "/x", &mallory).await;
    assert_eq!(resp.status(), 403);
    let v: Value = resp.json().await.unwrap();
    assert!(v["reason"].as_str().unwrap().contains("fraud"), "{v}");
    assert_eq!(
        get(&gw, "/x", &[("x-user-id", "alice")]).await.status(),
        200
    );

    let listed: Value = gw.admin_json("/blocks").await;
    assert_eq!(listed["blocks"][0]["key"], "user:mallory");
    assert_eq!(listed["blocks"][0]["reason"], "fraud");
    assert!(listed["blocks"][0]["expires_in_ms"].as_u64().unwrap() > 590_000);

    let bad = serde_json::json!({ "key": "ip:not-an-ip", "ttl": "1m" });
    let resp = c
        .post(gw.admin("/blocks"))
        .bearer_auth("t0k")
        .json(&bad)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);

    assert_eq!(
        c.delete(gw.admin("/blocks/user:mallory"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let resp = c
        .delete(gw.admin("/blocks/user:mallory"))
        .bearer_auth("t0k")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(get(&gw, "/x", &mallory).await.status(), 200);
    let resp = c
        .delete(gw.admin("/blocks/user:mallory"))
        .bearer_auth("t0k")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
}

/// A 32 KiB user id; every one starts with the same 200 bytes.
fn long_user(fill: &str) -> String {
    format!("{}{}", "m".repeat(200), fill.repeat(32 << 10))
}

#[tokio::test(flavor = "multi_thread")]
async fn long_keys_are_shown_cut_and_still_told_apart_by_their_full_value() {
    let up = MockUpstream::start("a").await;
    let body = with_policy(
        &up,
        user_header(),
        RateLimit::new("user", 1, "1m").sliding_window(),
    );
    let gw = gateway(&body).start().await;
    let (a, b, c) = (long_user("a"), long_user("b"), long_user("c"));
    // a and b share their first 200 bytes, yet each has its own limit.
    for user in [&a, &b] {
        assert_eq!(get(&gw, "/x", &[("x-user-id", user)]).await.status(), 200);
        assert_eq!(get(&gw, "/x", &[("x-user-id", user)]).await.status(), 429);
    }
    let limits = limits(&gw).await;
    let top = limits["limits"][0]["top_keys"].as_array().unwrap();
    assert_eq!(top.len(), 2, "{limits}");
    for k in top {
        let shown = k["key"].as_str().unwrap();
        assert!(
            shown.len() <= 128 && shown.ends_with('…'),
            "{} bytes",
            shown.len()
        );
        assert!(shown.starts_with("mmmm"));
    }

    // A block on a long key: kept cut, enforced on the full value.
    let resp = client()
        .post(gw.admin("/blocks"))
        .json(&serde_json::json!({ "key": format!("user:{c}"), "ttl": "10m" }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let placed: Value = resp.json().await.unwrap();
    let shown = placed["blocked"].as_str().unwrap();
    assert!(
        shown.len() <= 128 && shown.ends_with('…'),
        "{} bytes",
        shown.len()
    );
    let listed = gw.admin_json("/blocks").await;
    let entry = &listed["blocks"][0];
    assert_eq!(entry["key"], shown);
    assert_eq!(get(&gw, "/x", &[("x-user-id", &c)]).await.status(), 403);
    let twin = long_user("d");
    assert_eq!(get(&gw, "/x", &[("x-user-id", &twin)]).await.status(), 200);
    // The shown text is not the key; the hash lifts the block.
    let hash = entry["hash"].as_str().unwrap();
    let resp = client()
        .delete(gw.admin(&format!("/blocks/%23{hash}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(get(&gw, "/x", &[("x-user-id", &c)]).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn limit_state_survives_a_reload_that_leaves_it_unchanged() {
    let up = MockUpstream::start("a").await;
    let body = |limit: u64| {
        with_policy(&up, Keys::new(), RateLimit::per_ip(limit, "1m"))
            .server(Server::default().watch_config(false))
    };
    let gw = gateway(&body(3)).start().await;
    for _ in 0..3 {
        assert_eq!(get(&gw, "/x", &[]).await.status(), 200);
    }
    assert_eq!(get(&gw, "/x", &[]).await.status(), 429);
    // An unrelated change: the limit keeps its count.
    gw.write_config(&body(3).route(Route::new("other", "up").path_prefix("/other")));
    let v: Value = gw.reload().await;
    assert_eq!(v["result"], "ok");
    assert_eq!(get(&gw, "/x", &[]).await.status(), 429);
    // A changed limit starts afresh.
    gw.write_config(&body(4));
    let v: Value = gw.reload().await;
    assert_eq!(v["result"], "ok");
    assert_eq!(get(&gw, "/x", &[]).await.status(), 200);
}
