//! The typed config builder writes files the gateway accepts: every
//! builder method, checked by `breakwater -t`.

use breakwater_tests::config::{
    Abuse, Action, Admin, Breaker, Cache, Cluster, Concurrency, Dedupe, Deny, Fleet, HotKey,
    KeySource, Keys, Listener, Policy, Protocol, RateLimit, Retry, Route, Server,
};
use breakwater_tests::Config;

use crate::gateway;

/// A config that calls every builder method at least once.
fn everything() -> Config {
    let endpoint = "127.0.0.1:1";
    Config::new()
        .server(Server::default().threads(2).watch_config(false))
        .listener(Listener::http1())
        .listener(Listener::h2c())
        .admin(
            Admin::default()
                .on_all_interfaces()
                .token("w")
                .read_token("r")
                .allowed_hosts(["gw-1.internal"])
                .max_stream_subscribers(3),
        )
        .keys(
            Keys::new()
                .trusted_proxies(["127.0.0.1/32", "10.0.0.0/8"])
                .ipv6_prefix(64)
                .user(KeySource::header("x-user-id"))
                .custom("goods_id", KeySource::path_capture("id"))
                .custom("sku", KeySource::query("sku"))
                .custom("tenant", KeySource::cookie("tenant")),
        )
        .fleet(
            Fleet::redis("redis://127.0.0.1:1")
                .instance_id("gw-0")
                .hash_seed("0123456789abcdef0123")
                .expected_instances(3)
                .timeout("1s"),
        )
        .cluster(
            "web",
            Cluster::new([endpoint, "127.0.0.1:2"])
                .connect_timeout_ms(300)
                .read_timeout_ms(3000)
                .protocol(Protocol::Http1)
                .retry_budget(10.0, 0),
        )
        .cluster("rpc", Cluster::new([endpoint]).protocol(Protocol::Grpc))
        .cluster("h2", Cluster::new([endpoint]).protocol(Protocol::H2c))
        .route(
            Route::new("goods", "web")
                .host("*.shop.test")
                .path_template("/goods/{id}")
                .methods(["GET", "HEAD"])
                .header("x-canary", "1")
                .total_timeout("2s")
                .deadline_header("x-timeout-ms")
                .retry(
                    Retry::attempts(2)
                        .backoff("1ms", "5ms")
                        .idempotent(true)
                        .on_statuses([502, 504]),
                )
                .policy(Deny::new().ips(["198.51.100.0/24"]).users(["mallory"]))
                .policy(
                    RateLimit::per_ip(5, "1m")
                        .gcra()
                        .burst(5)
                        .shadow()
                        .name("per-ip"),
                )
                .policy(RateLimit::new("user", 100, "1s").sliding_window().global())
                .policy(Concurrency::max(2).queue(4, "5s"))
                .policy(Abuse::new("ip", 5, "1s", "2s").status(429))
                .policy(
                    Breaker::consecutive_failures(3)
                        .open("30s")
                        .half_open(2, 2)
                        .set("min_requests", 10),
                )
                .policy(
                    Breaker::consecutive_failures(3)
                        .per_endpoint()
                        .max_ejection_percent(50),
                )
                .policy(Dedupe::header("idempotency-key").join())
                .policy(
                    HotKey::new("goods_id", 20, "1s")
                        .hot_ttl("5s")
                        .actions([Action::Observe, Action::Cache, Action::Limit])
                        .limit(10, "1s", 10)
                        .cache(
                            Cache::new()
                                .ttl("3s")
                                .stale_ttl("60s")
                                .always()
                                .authorized(),
                        )
                        .global(),
                ),
        )
        .route(
            Route::new("pay", "rpc")
                .path_prefix("/pay.Svc/")
                .policy(Dedupe::header("idempotency-key").reject())
                .policy(
                    HotKey::new("user", 30, "1s")
                        .actions([Action::Block])
                        .block_for("1m"),
                )
                .policy(Policy::raw("deny: { users: [eve], status: 451 }")),
        )
        .route(Route::new("health", "h2").path_exact("/health"))
}

#[test]
fn every_builder_method_writes_what_the_gateway_accepts() {
    let config = everything();
    if let Err(said) = gateway(&config).check() {
        panic!("breakwater -t refused it: {said}\n{}", config.to_yaml());
    }
}

/// The check is not a formality: a mistake in a built config is reported
/// with its path, as in a file written by hand.
#[test]
fn a_mistake_in_a_built_config_is_reported_with_its_path() {
    let config = Config::new()
        .cluster("up", Cluster::new(["127.0.0.1:1"]))
        .route(Route::new("api", "nope"));
    let said = gateway(&config).check().unwrap_err();
    assert!(
        said.contains("routes[0].cluster: unknown cluster \"nope\""),
        "{said}"
    );
    let said =
        gateway(&everything().route(Route::new("late", "web").policy(RateLimit::per_ip(0, "1m"))))
            .check()
            .unwrap_err();
    assert!(said.contains("routes[3].policies[0]"), "{said}");
}
