//! A recording mock upstream.
//!
//! | path | answer |
//! |---|---|
//! | `/slow?ms=N` | echo JSON after N ms |
//! | `/status/N` | status N, empty body |
//! | `/download?bytes=N` | N bytes, streamed in 64 KiB chunks (chunked encoding) |
//! | `/trickle?every_ms=N&bytes=M` | M bytes, one every N ms (chunked encoding) |
//! | anything else | echo JSON: method, path, query, headers, body length and FNV hash |
//!
//! On the echo, `?cc=V` answers with `Cache-Control: V`, `?vary=V` with
//! `Vary: V` and `?age=V` with `Age: V`.
//!
//! Every answer carries `x-upstream: <name>` and `x-upstream-custom: yes`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::stream;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::ports::PortLease;

/// What the upstream saw of one request.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub headers: HeaderMap,
    pub body_len: usize,
}

#[derive(Default)]
struct Shared {
    seen: Mutex<Vec<Recorded>>,
    connections: AtomicUsize,
    /// When non-zero, every answer has this status (a sick upstream).
    forced_status: AtomicU16,
    /// Added delay before every answer, in milliseconds (a slow upstream).
    delay_ms: AtomicU64,
    /// Live connection tasks, aborted when the upstream is killed.
    conns: Mutex<Vec<tokio::task::AbortHandle>>,
}

pub struct MockUpstream {
    pub name: String,
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
    /// Keeps the port while the upstream is killed, so that it stays dead
    /// (refusing connections) until revived, and nobody else takes it.
    /// The port's lease, for an upstream on a leased port.
    _lease: Option<PortLease>,
}

/// FNV-1a over a byte slice: a cheap content fingerprint for body checks.
pub fn fnv(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The byte at `i` of `/download` bodies, so clients can verify content.
pub fn pattern_byte(i: usize) -> u8 {
    (i % 251) as u8
}

type Body = BoxBody<Bytes, Infallible>;

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).boxed()
}

fn query_str<'a>(query: Option<&'a str>, key: &str) -> Option<&'a str> {
    query?
        .split('&')
        .find_map(|kv| kv.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
}

fn query_num(query: Option<&str>, key: &str) -> u64 {
    query
        .unwrap_or("")
        .split('&')
        .find_map(|kv| kv.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

async fn handle(
    name: Arc<str>,
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    shared.seen.lock().unwrap().push(Recorded {
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        headers: parts.headers.clone(),
        body_len: body.len(),
    });
    let path = parts.uri.path();
    let query = parts.uri.query();
    let delay = shared.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let forced = shared.forced_status.load(Ordering::SeqCst);
    if forced != 0 {
        let status = StatusCode::from_u16(forced).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let resp = Response::builder()
            .status(status)
            .header("x-upstream", name.as_ref())
            .body(full(Bytes::new()));
        return Ok(resp.expect("valid response"));
    }
    let builder = Response::builder()
        .header("x-upstream", name.as_ref())
        .header("x-upstream-custom", "yes");
    let echo = || {
        let headers: serde_json::Map<String, serde_json::Value> = parts
            .headers
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::json!(v.to_str().unwrap_or(""))))
            .collect();
        serde_json::json!({
            "upstream": name.as_ref(),
            "method": parts.method.as_str(),
            "path": path,
            "query": query,
            "headers": headers,
            "body_len": body.len(),
            "version": format!("{:?}", parts.version),
            "body_fnv": fnv(&body).to_string(),
        })
        .to_string()
    };
    let resp = if path == "/slow" {
        tokio::time::sleep(Duration::from_millis(query_num(query, "ms"))).await;
        builder.body(full(echo()))
    } else if let Some(code) = path.strip_prefix("/status/") {
        let status = code
            .parse::<u16>()
            .ok()
            .and_then(|c| StatusCode::from_u16(c).ok())
            .unwrap_or(StatusCode::BAD_REQUEST);
        builder.status(status).body(full(Bytes::new()))
    } else if path == "/download" {
        let total = query_num(query, "bytes") as usize;
        let chunk = 64 * 1024;
        let chunks = (0..total).step_by(chunk).map(move |start| {
            let end = (start + chunk).min(total);
            let data: Vec<u8> = (start..end).map(pattern_byte).collect();
            Ok::<_, Infallible>(Frame::data(Bytes::from(data)))
        });
        builder.body(StreamBody::new(stream::iter(chunks)).boxed())
    } else if path == "/trickle" {
        let every = Duration::from_millis(query_num(query, "every_ms"));
        let bytes = query_num(query, "bytes");
        let drip = stream::unfold(0u64, move |sent| async move {
            if sent == bytes {
                return None;
            }
            tokio::time::sleep(every).await;
            Some((
                Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"."))),
                sent + 1,
            ))
        });
        builder.body(StreamBody::new(drip).boxed())
    } else {
        // `?cc=no-store` answers with that `Cache-Control`, `?vary=cookie`
        // with that `Vary`, `?age=50` with that `Age`.
        let builder = match query_str(query, "cc") {
            Some(cc) => builder.header("cache-control", cc),
            None => builder,
        };
        let builder = match query_str(query, "age") {
            Some(age) => builder.header("age", age),
            None => builder,
        };
        let builder = match query_str(query, "vary") {
            Some(vary) => builder.header("vary", vary),
            None => builder,
        };
        builder
            .header("content-type", "application/json")
            .body(full(echo()))
    };
    Ok(resp.expect("valid response"))
}

fn serve(listener: TcpListener, name: Arc<str>, shared: Arc<Shared>) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            shared.connections.fetch_add(1, Ordering::SeqCst);
            let conn_shared = shared.clone();
            let name = name.clone();
            let task = tokio::spawn(async move {
                let svc = service_fn(move |req| handle(name.clone(), conn_shared.clone(), req));
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
            shared.conns.lock().unwrap().push(task.abort_handle());
        }
    })
}

impl MockUpstream {
    /// Starts an upstream named `name` on a leased loopback port (Tokio
    /// binds with `SO_REUSEADDR`, see `ports`).
    pub async fn start(name: &str) -> Self {
        let lease = PortLease::new().expect("a loopback port lease");
        let listener = TcpListener::bind(lease.addr())
            .await
            .expect("bind the leased port");
        let addr = listener.local_addr().expect("addr");
        let shared = Arc::new(Shared::default());
        let task = serve(listener, name.into(), shared.clone());
        Self {
            name: name.to_string(),
            addr,
            shared,
            task,
            _lease: Some(lease),
        }
    }

    /// Starts an upstream named `name` listening at `addr` exactly (say, a
    /// second loopback address on another upstream's port, for a DNS name
    /// that moves between them).
    pub async fn start_at(name: &str, addr: std::net::SocketAddr) -> Self {
        let listener = TcpListener::bind(addr).await.expect("bind the address");
        let shared = Arc::new(Shared::default());
        let task = serve(listener, name.into(), shared.clone());
        Self {
            name: name.to_string(),
            addr,
            shared,
            task,
            _lease: None,
        }
    }

    /// From now on, answer every request with `status` (0: behave normally).
    pub fn fail_with(&self, status: u16) {
        self.shared.forced_status.store(status, Ordering::SeqCst);
    }

    /// From now on, wait `delay` before every answer.
    pub fn slow_down(&self, delay: Duration) {
        self.shared
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// Stops listening and drops every open connection: connects are
    /// refused, and the port stays leased for [`Self::revive`].
    pub fn kill(&mut self) {
        self.task.abort();
        for c in self.shared.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }

    /// Listens again on the same port after [`Self::kill`], once the old
    /// listener is closed (its task is aborted, not joined).
    pub async fn revive(&mut self) {
        let listener = crate::eventually(
            Duration::from_secs(5),
            "the old listener to close",
            || async { TcpListener::bind(self.addr).await.ok() },
        )
        .await;
        self.task = serve(listener, self.name.as_str().into(), self.shared.clone());
    }

    /// Every request received so far.
    pub fn received(&self) -> Vec<Recorded> {
        self.shared.seen.lock().unwrap().clone()
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    pub fn count(&self) -> usize {
        self.shared.seen.lock().unwrap().len()
    }
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_killed_upstream_refuses_connections_until_revived_on_its_port() {
        let mut up = MockUpstream::start("a").await;
        let addr = up.addr;
        up.kill();
        crate::eventually(Duration::from_secs(5), "the listener to close", || async {
            let refused = tokio::net::TcpStream::connect(addr).await.is_err();
            refused.then_some(())
        })
        .await;
        // Still leased: nobody else can bind the port meanwhile.
        let plain = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None);
        assert!(plain.unwrap().bind(&addr.into()).is_err());
        up.revive().await;
        assert_eq!(up.addr, addr);
        let resp = crate::client()
            .get(format!("http://{addr}/x"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(up.count(), 1);
    }
}
