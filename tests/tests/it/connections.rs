//! The gateway's own connection caps: the connection past
//! `server.max_connections` (or past `max_connections_per_ip` from one
//! address) is closed at accept, and the ones already open keep working.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use breakwater_tests::config::{Cluster, Route, Server};
use breakwater_tests::{eventually, Config, MockUpstream};

use crate::gateway;

/// A connection from `from` (any 127.0.0.0/8 address: loopback answers
/// them all) to the gateway.
async fn connect(from: [u8; 4], to: u16) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::from((from, 0)))
        .expect("bind a loopback source address");
    socket
        .connect(SocketAddr::from(([127, 0, 0, 1], to)))
        .await
        .expect("the kernel accepts the connection")
}

/// One keep-alive request on `conn`: the status code, or `None` when the
/// gateway closed or reset the connection instead of answering.
async fn get(conn: &mut TcpStream) -> Option<u16> {
    let req = b"GET /x HTTP/1.1\r\nhost: gw\r\n\r\n";
    conn.write_all(req).await.ok()?;
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        loop {
            let n = conn.read(&mut buf).await.ok()?;
            if n == 0 {
                return None;
            }
            head.extend_from_slice(&buf[..n]);
            // The mock's answers are small: the whole answer is in by the
            // time its body is (content-length given).
            if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                let text = String::from_utf8_lossy(&head[..end]).to_ascii_lowercase();
                let len: usize = text
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                if head.len() >= end + 4 + len {
                    return text.get(9..12).and_then(|s| s.parse().ok());
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("an answer or a close within 10 s")
}

fn capped(up: &MockUpstream, total: u64, per_ip: u64) -> Config {
    Config::new()
        .server(Server::default().max_connections(total, per_ip))
        .cluster("up", Cluster::new([up.addr]).overload_off())
        .route(Route::new("all", "up"))
}

fn refused(metrics: &str, reason: &str) -> u64 {
    let prefix = format!("breakwater_connections_refused_total{{reason=\"{reason}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_connection_past_max_connections_is_closed_and_the_open_ones_keep_working() {
    let up = MockUpstream::start("a").await;
    let gw = gateway(&capped(&up, 2, 0)).start().await;
    let mut a = connect([127, 0, 0, 1], gw.port).await;
    let mut b = connect([127, 0, 0, 1], gw.port).await;
    assert_eq!(get(&mut a).await, Some(200));
    assert_eq!(get(&mut b).await, Some(200));
    let mut c = connect([127, 0, 0, 1], gw.port).await;
    assert_eq!(get(&mut c).await, None, "the third connection is closed");
    // The two open ones still work, again and again.
    for _ in 0..3 {
        assert_eq!(get(&mut a).await, Some(200));
        assert_eq!(get(&mut b).await, Some(200));
    }
    let metrics = gw.metrics().await;
    assert!(refused(&metrics, "max_connections") >= 1, "{metrics}");
    assert!(
        metrics.contains("breakwater_connections_open 2"),
        "{metrics}"
    );
    // A closed one frees its place.
    drop(a);
    eventually(Duration::from_secs(5), "a place to free up", || async {
        let mut d = connect([127, 0, 0, 1], gw.port).await;
        (get(&mut d).await == Some(200)).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn one_address_cannot_take_every_connection() {
    let up = MockUpstream::start("a").await;
    let gw = gateway(&capped(&up, 100, 2)).start().await;
    let mut first = Vec::new();
    for _ in 0..2 {
        let mut conn = connect([127, 0, 0, 1], gw.port).await;
        assert_eq!(get(&mut conn).await, Some(200));
        first.push(conn);
    }
    let mut third = connect([127, 0, 0, 1], gw.port).await;
    assert_eq!(get(&mut third).await, None, "a third from 127.0.0.1");
    // Another address is still served.
    let mut other = connect([127, 0, 0, 2], gw.port).await;
    assert_eq!(get(&mut other).await, Some(200));
    let metrics = gw.metrics().await;
    assert!(
        refused(&metrics, "max_connections_per_ip") >= 1,
        "{metrics}"
    );
    assert_eq!(refused(&metrics, "max_connections"), 0, "{metrics}");
}
