//! A TLS listener: ALPN picks HTTP/2 or HTTP/1.1; a bad certificate is a
//! config error naming the listener.

use std::process::Command;

use breakwater_tests::config::{Cluster, Listener, Route};
use breakwater_tests::{Config, MockUpstream};
use serde_json::Value;

use crate::{gateway, BIN};

fn write_cert(dir: &std::path::Path) -> (String, String) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.key_pair.serialize_pem()).unwrap();
    (cert.display().to_string(), key.display().to_string())
}

fn tls_config(up: &MockUpstream, cert: &str, key: &str) -> Config {
    Config::new()
        .listener(Listener::tls(cert, key))
        .cluster("up", Cluster::new([up.addr]))
        .route(Route::new("all", "up"))
}

#[tokio::test(flavor = "multi_thread")]
async fn alpn_chooses_http2_or_http1_on_a_tls_listener() {
    let up = MockUpstream::start("a").await;
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = write_cert(certs.path());
    let gw = gateway(&tls_config(&up, &cert, &key)).start().await;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], gw.port));
    let url = format!("https://localhost:{}/x", gw.port);
    let builder = || {
        reqwest::Client::builder()
            .danger_accept_invalid_certs(true)
            .resolve("localhost", addr)
            .no_proxy()
    };
    let h2 = builder().build().unwrap();
    let r = h2.get(&url).send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2, "ALPN h2");
    let echo: Value = r.json().await.unwrap();
    assert_eq!(echo["headers"]["x-forwarded-proto"], "https");
    let h1 = builder().http1_only().build().unwrap();
    let r = h1.get(&url).send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_11, "ALPN http/1.1");
    assert_eq!(r.status(), 200);
}

#[test]
fn a_missing_certificate_is_a_config_error_naming_the_listener() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.yaml");
    std::fs::write(
        &path,
        "listeners:\n  - address: 127.0.0.1:0\n    tls: { cert: /nonexistent/cert.pem, key: /nonexistent/key.pem }\nclusters:\n  up:\n    endpoints: [127.0.0.1:1]\nroutes:\n  - id: all\n    cluster: up\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg("-t")
        .arg("-c")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("listeners[0].tls") && text.contains("/nonexistent/cert.pem"),
        "{text}"
    );
}
