//! Endpoints given by name follow DNS: the name's address changes and the
//! gateway, re-resolving every `dns_refresh`, sends to the new one.
//!
//! The gateway resolves with the system resolver (getaddrinfo). The test
//! makes the name's answer its own with cwrap's nss_wrapper (Debian's
//! `libnss-wrapper`, installed by `.ci/setup`), preloaded into the gateway
//! with a hosts file the test rewrites: glibc's own lookup path, no test
//! hook in the gateway.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use breakwater_tests::config::{Cluster, Route};
use breakwater_tests::{client, eventually, Config, MockUpstream};

use crate::gateway;

const NAME: &str = "svc.breakwater.test";

/// Points `NAME` at `ip` in the hosts file at `path`, atomically (a rename:
/// nss_wrapper reads a replaced file again).
fn point(path: &Path, ip: &str) {
    let next = path.with_extension("next");
    std::fs::write(&next, format!("{ip} {NAME}\n")).unwrap();
    std::fs::rename(&next, path).unwrap();
}

fn nss_wrapper() -> &'static str {
    let lib = "/usr/lib/x86_64-linux-gnu/libnss_wrapper.so";
    assert!(
        Path::new(lib).exists(),
        "{lib} is missing: run .ci/setup (it installs libnss-wrapper)"
    );
    lib
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dns_name_whose_address_changes_is_followed() {
    let lib = nss_wrapper();
    let a = MockUpstream::start("a").await;
    let b_addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)), a.addr.port());
    let b = MockUpstream::start_at("b", b_addr).await;
    let dir = tempfile::tempdir().unwrap();
    let hosts = dir.path().join("hosts");
    point(&hosts, "127.0.0.1");
    let config = Config::new()
        .cluster(
            "svc",
            Cluster::new([format!("{NAME}:{}", a.addr.port())])
                .overload_off()
                .set("dns_refresh", "200ms"),
        )
        .route(Route::new("all", "svc"));
    let gw = gateway(&config)
        .env("LD_PRELOAD", lib)
        .env("NSS_WRAPPER_HOSTS", hosts.to_str().unwrap())
        .start()
        .await;
    let who = || async {
        let r = client().get(gw.url("/x")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        r.headers()["x-upstream"].to_str().unwrap().to_string()
    };
    assert_eq!(who().await, "a");

    point(&hosts, "127.0.0.2");
    eventually(
        Duration::from_secs(10),
        "the gateway to follow the name",
        || async { (who().await == "b").then_some(()) },
    )
    .await;
    // Followed for good, not by one lucky choice.
    for _ in 0..10 {
        assert_eq!(who().await, "b");
    }
    let endpoints = gw.admin_json("/endpoints").await;
    let e = &endpoints["clusters"][0]["endpoints"][0];
    assert_eq!(e["endpoint"], format!("{NAME}:{}", a.addr.port()), "{e}");
    assert_eq!(e["address"], b_addr.to_string(), "{e}");
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains(
            r#"breakwater_upstream_dns_resolutions_total{cluster="svc",result="changed"}"#
        ),
        "{metrics}"
    );
    assert!(b.count() >= 11);
}
