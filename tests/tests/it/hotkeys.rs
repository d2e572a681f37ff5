//! Hot-key detection through the real gateway: detection on a skewed load,
//! the event stream, the `block` and `limit` actions, the admin and metrics.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use breakwater_tests::config::{Action, Cluster, HotKey, KeySource, Keys, Route};
use breakwater_tests::{client, eventually, metric_value, Config, Gateway, MockUpstream};
use serde_json::Value;

use crate::gateway;

/// Route `goods` (`/goods/{id}`, custom key `goods_id`) with this rule;
/// `keys` adds to the user and `goods_id` keys.
fn goods_route(up: &MockUpstream, more_keys: impl FnOnce(Keys) -> Keys, rule: HotKey) -> Config {
    let keys = Keys::new()
        .user(KeySource::header("x-user-id"))
        .custom("goods_id", KeySource::path_capture("id"));
    Config::new()
        .keys(more_keys(keys))
        .cluster("up", Cluster::new([up.addr]))
        .route(
            Route::new("goods", "up")
                .path_template("/goods/{id}")
                .policy(rule),
        )
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// `n` GETs of `path` from `conc` concurrent loops; returns their statuses.
async fn burst(
    gw: &Gateway,
    path: &str,
    n: usize,
    conc: usize,
    headers: &[(&str, &str)],
) -> Vec<u16> {
    let c = client();
    let mut tasks = Vec::new();
    for w in 0..conc {
        let (c, url) = (c.clone(), gw.url(path));
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for _ in (w..n).step_by(conc) {
                let mut req = c.get(&url);
                for (k, v) in &headers {
                    req = req.header(k, v);
                }
                out.push(req.send().await.unwrap().status().as_u16());
            }
            out
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all
}

fn hot_keys(v: &Value) -> Vec<String> {
    v["rules"][0]["hot"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["key"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_spiking_key_is_detected_quickly_and_cold_keys_are_not() {
    let up = MockUpstream::start("a").await;
    let gw = gateway(&goods_route(
        &up,
        |k| k,
        HotKey::new("goods_id", 100, "1s").hot_ttl("5s"),
    ))
    .start()
    .await;
    // A skewed background: item i gets about 60 / i requests.
    let mut background = Vec::new();
    for i in 1..=30u32 {
        background.extend(std::iter::repeat_n(
            format!("/goods/{i}"),
            (60 / i) as usize,
        ));
    }
    let c = client();
    for path in &background {
        assert_eq!(c.get(gw.url(path)).send().await.unwrap().status(), 200);
    }
    // The spike: item 123 at several hundred requests a second.
    let spike_start = unix_ms();
    let statuses = burst(&gw, "/goods/123", 400, 8, &[]).await;
    assert!(
        statuses.iter().all(|&s| s == 200),
        "observe changes nothing"
    );
    let v = gw.admin_json("/hotkeys").await;
    assert_eq!(hot_keys(&v), vec!["123"], "{v:#}");
    let rule = &v["rules"][0];
    assert_eq!(rule["rule"], "goods.hotkey");
    assert_eq!(rule["actions"][0], "observe");
    let event = &v["recent_events"][0];
    assert_eq!(
        (event["event"].as_str(), event["key"].as_str()),
        (Some("hot"), Some("123"))
    );
    let detected_after = event["at_unix_ms"]
        .as_u64()
        .unwrap()
        .saturating_sub(spike_start);
    assert!(
        detected_after <= 1100,
        "detected {detected_after} ms after the spike began (bound: window + 100 ms)"
    );
    let metrics = gw.metrics().await;
    assert_eq!(
        metric_value(&metrics, "breakwater_hotkeys_hot{rule=\"goods.hotkey\"}"),
        Some(1.0)
    );
    assert_eq!(
        metric_value(
            &metrics,
            "breakwater_hotkey_events_total{event=\"hot\",rule=\"goods.hotkey\"}"
        ),
        Some(1.0)
    );
    // The operator forgets it; it is still hot, so it comes back with a new event.
    let forgot = client()
        .delete(gw.admin("/hotkeys/goods.hotkey/123"))
        .send()
        .await
        .unwrap();
    assert_eq!(forgot.status(), 200);
    assert!(hot_keys(&gw.admin_json("/hotkeys").await).is_empty());
    burst(&gw, "/goods/123", 20, 2, &[]).await;
    assert_eq!(hot_keys(&gw.admin_json("/hotkeys").await), vec!["123"]);
    // Statistics: shape and validation (minutes fill in once a minute).
    let stats = gw.admin_json("/hotkeys/stats?minutes=5").await;
    assert_eq!(stats["minutes"], 5);
    assert_eq!(stats["rules"][0]["rule"], "goods.hotkey");
    let bad = client()
        .get(gw.admin("/hotkeys/stats?minutes=0"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
}

#[tokio::test(flavor = "multi_thread")]
async fn subscribers_get_hot_and_cooled_events() {
    let up = MockUpstream::start("a").await;
    let gw = gateway(&goods_route(
        &up,
        |k| k,
        HotKey::new("goods_id", 50, "1s").hot_ttl("1s"),
    ))
    .start()
    .await;
    let mut stream = client()
        .get(gw.admin("/hotkeys/stream"))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    assert_eq!(stream.headers()["content-type"], "text/event-stream");
    burst(&gw, "/goods/7", 150, 4, &[]).await;
    let mut seen = String::new();
    let read = tokio::time::timeout(Duration::from_secs(15), async {
        while !seen.contains("event: cooled") {
            match stream.chunk().await.unwrap() {
                Some(chunk) => seen.push_str(&String::from_utf8_lossy(&chunk)),
                None => break,
            }
        }
    })
    .await;
    assert!(read.is_ok(), "no cooled event; stream so far:\n{seen}");
    let hot = seen.find("event: hot").expect("a hot event");
    let cooled = seen.find("event: cooled").unwrap();
    assert!(hot < cooled);
    let data: Value = serde_json::from_str(
        seen[hot..]
            .lines()
            .nth(1)
            .unwrap()
            .strip_prefix("data: ")
            .unwrap(),
    )
    .unwrap();
    assert_eq!(data["key"], "7");
    assert_eq!(data["rule"], "goods.hotkey");
}

#[tokio::test(flavor = "multi_thread")]
async fn block_keeps_an_abusive_ip_off_the_upstream() {
    let up = MockUpstream::start("a").await;
    let gw = gateway(&goods_route(
        &up,
        |k| k.trusted_proxies(["127.0.0.1"]),
        HotKey::new("ip", 30, "1s")
            .actions([Action::Block])
            .block_for("1m"),
    ))
    .start()
    .await;
    let statuses = burst(
        &gw,
        "/goods/1",
        120,
        4,
        &[("x-forwarded-for", "203.0.113.9")],
    )
    .await;
    let blocked = statuses.iter().filter(|&&s| s == 403).count();
    assert!(blocked >= 60, "{statuses:?}");
    let reached = up.count();
    assert!(reached <= 60, "the upstream saw {reached} of 120");
    // Once blocked, nothing more gets through.
    let more = burst(
        &gw,
        "/goods/1",
        20,
        2,
        &[("x-forwarded-for", "203.0.113.9")],
    )
    .await;
    assert!(more.iter().all(|&s| s == 403));
    assert_eq!(up.count(), reached);
    // Another client is served.
    let other = burst(
        &gw,
        "/goods/1",
        5,
        1,
        &[("x-forwarded-for", "203.0.113.10")],
    )
    .await;
    assert_eq!(other, vec![200; 5]);
    let blocks = gw.admin_json("/blocks").await;
    assert_eq!(blocks["blocks"][0]["key"], "ip:203.0.113.9");
    assert_eq!(blocks["blocks"][0]["source"], "goods.hotkey");
}

#[tokio::test(flavor = "multi_thread")]
async fn limit_caps_each_hot_key_and_leaves_cold_keys_alone() {
    let up = MockUpstream::start("a").await;
    let gw = gateway(&goods_route(
        &up,
        |k| k,
        HotKey::new("goods_id", 40, "1s")
            .actions([Action::Limit])
            .limit(10, "1s", 10),
    ))
    .start()
    .await;
    let statuses = burst(&gw, "/goods/5", 200, 4, &[]).await;
    let limited = statuses.iter().filter(|&&s| s == 429).count();
    assert!(limited >= 100, "{} of 200 limited", limited);
    eventually(
        Duration::from_secs(5),
        "the hot-key limit in metrics",
        || async {
            let m = gw.metrics().await;
            metric_value(
                &m,
                "breakwater_hotkey_events_total{event=\"limited\",rule=\"goods.hotkey\"}",
            )
            .filter(|&n| n as usize == limited)
        },
    )
    .await;
    // A cold item is not limited.
    let cold = burst(&gw, "/goods/6", 10, 1, &[]).await;
    assert_eq!(cold, vec![200; 10]);
}
