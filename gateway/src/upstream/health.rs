//! Active health checks of a cluster's endpoints: the probes (HTTP, TCP,
//! gRPC health) and each endpoint's state, carried across reloads.
//!
//! The state machine (`rise`/`fall`) is `breakwater_plugins::health`; the
//! loop that runs the probes on time is `server/prober.rs`. An HTTP/1 or
//! TCP probe opens a fresh connection every time, as HAProxy's `check`
//! does: a pooled one would hide a listener that stopped accepting.
//! (Pingora's HTTP/2 connector may carry a gRPC probe on a connection it
//! still holds from the last one.)

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use breakwater_plugins::health::{slow_start, EndpointHealth, HealthSettings, Probe};
use breakwater_plugins::Clock;
use bytes::{BufMut, Bytes, BytesMut};
use pingora::connectors::http::Connector as HttpConnector;
use pingora::connectors::TransportConnector;
use pingora::http::RequestHeader;
use pingora::protocols::http::client::HttpSession;
use pingora::protocols::ALPN;
use pingora::upstreams::peer::{BasicPeer, HttpPeer};

/// `ramping_since` of an endpoint at its full share.
const NOT_RAMPING: u64 = u64::MAX;

/// One endpoint's health and when it is next probed.
pub struct EndpointCheck {
    pub addr: SocketAddr,
    pub health: EndpointHealth,
    /// Nanoseconds on the gateway's clock; 0: at once.
    next: AtomicU64,
    /// A probe is running (the next waits for it).
    busy: AtomicBool,
    /// When its slow start began ([`NOT_RAMPING`]: at its full share).
    ramping_since: AtomicU64,
}

impl EndpointCheck {
    /// An endpoint in rotation, probed at once; `ramp`: starting its slow
    /// start now (an endpoint a reload adds to a serving cluster).
    pub fn new(addr: SocketAddr, now: u64, ramp: bool) -> Self {
        Self {
            addr,
            health: EndpointHealth::new(now),
            next: AtomicU64::new(0),
            busy: AtomicBool::new(false),
            ramping_since: AtomicU64::new(if ramp { now } else { NOT_RAMPING }),
        }
    }

    /// Starts its slow start at `now` (it just came back).
    pub fn ramp_from(&self, now: u64) {
        self.ramping_since.store(now, Ordering::Relaxed);
    }

    /// The share of a normal endpoint's traffic it takes now.
    fn share(&self, now: u64, window: Duration) -> f64 {
        let since = self.ramping_since.load(Ordering::Relaxed);
        if since == NOT_RAMPING {
            return 1.0;
        }
        let s = slow_start::share(Duration::from_nanos(now.saturating_sub(since)), window);
        if s >= 1.0 {
            // Ramped: later choices skip the arithmetic.
            let _ = self.ramping_since.compare_exchange(
                since,
                NOT_RAMPING,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
        s
    }

    /// Claims the probe due at `now`, if it is due and none is running;
    /// the next one is due `interval` later. The claim ends when dropped.
    pub fn claim(self: &Arc<Self>, now: u64, interval: Duration) -> Option<Claim> {
        if now < self.next.load(Ordering::Relaxed) {
            return None;
        }
        if self.busy.swap(true, Ordering::AcqRel) {
            return None;
        }
        let interval = u64::try_from(interval.as_nanos()).unwrap_or(u64::MAX);
        self.next
            .store(now.saturating_add(interval), Ordering::Relaxed);
        Some(Claim(self.clone()))
    }
}

/// A running probe's hold on its endpoint: the next probe waits for it to
/// drop, however the probe ends.
pub struct Claim(Arc<EndpointCheck>);

impl Claim {
    pub fn check(&self) -> &EndpointCheck {
        &self.0
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.0.busy.store(false, Ordering::Release);
    }
}

/// How a cluster's endpoints are reached, for a probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeTarget {
    pub tls: bool,
    pub sni: String,
    /// HTTP/2 with prior knowledge (the cluster's `h2c` or `grpc`).
    pub h2: bool,
}

/// A cluster's active health checking: its settings and its endpoints'
/// checks, in the order of the cluster's addresses.
pub struct ClusterHealth {
    pub settings: HealthSettings,
    pub target: ProbeTarget,
    pub endpoints: Vec<Arc<EndpointCheck>>,
    /// The slow-start window (zero: none).
    pub slow_start: Duration,
    clock: Arc<dyn Clock>,
    /// Endpoint by address, for the per-choice lookups.
    index: HashMap<SocketAddr, usize>,
}

impl ClusterHealth {
    pub fn new(
        settings: HealthSettings,
        target: ProbeTarget,
        endpoints: Vec<Arc<EndpointCheck>>,
        slow_start: Duration,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let index = endpoints
            .iter()
            .enumerate()
            .map(|(i, e)| (e.addr, i))
            .collect();
        Self {
            settings,
            target,
            endpoints,
            slow_start,
            clock,
            index,
        }
    }

    /// The check of `addr`, if it is one of the cluster's endpoints.
    pub fn get(&self, addr: SocketAddr) -> Option<&EndpointCheck> {
        self.index.get(&addr).map(|i| &*self.endpoints[*i])
    }

    /// The share of a normal endpoint's traffic `addr` takes now (below 1
    /// while it ramps up after coming back).
    pub fn share(&self, addr: SocketAddr) -> f64 {
        match self.get(addr) {
            Some(e) if !self.slow_start.is_zero() => {
                e.share(self.clock.now_nanos(), self.slow_start)
            }
            _ => 1.0,
        }
    }

    /// Whether a choice takes `addr` now, as far as slow start goes: a
    /// ramping endpoint is taken with the probability of its share.
    pub fn takes(&self, addr: SocketAddr) -> bool {
        if self.slow_start.is_zero() {
            return true;
        }
        let share = self.share(addr);
        share >= 1.0 || fastrand::f64() < share
    }

    /// Whether `addr` is in rotation as far as the probes know.
    pub fn is_up(&self, addr: SocketAddr) -> bool {
        self.get(addr).is_none_or(|e| e.health.is_up())
    }

    /// Whether any endpoint is up.
    pub fn any_up(&self) -> bool {
        self.endpoints.iter().any(|e| e.health.is_up())
    }
}

/// Runs one probe of `addr`, within the settings' timeout. `Err` says why
/// it failed, for the admin and the log.
pub async fn probe(
    settings: &HealthSettings,
    target: &ProbeTarget,
    addr: SocketAddr,
) -> Result<(), String> {
    let run = async {
        match &settings.probe {
            Probe::Tcp => tcp(target, addr, settings.timeout).await,
            Probe::Http { path, host, .. } => {
                let status = http(target, addr, settings.timeout, path, host.as_deref()).await?;
                if settings.probe.passes(status) {
                    Ok(())
                } else {
                    Err(format!("status {status}"))
                }
            }
            Probe::Grpc { service } => grpc(target, addr, settings.timeout, service).await,
        }
    };
    match tokio::time::timeout(settings.timeout, run).await {
        Ok(result) => result,
        Err(_) => Err(format!("no answer within {:?}", settings.timeout)),
    }
}

async fn tcp(target: &ProbeTarget, addr: SocketAddr, timeout: Duration) -> Result<(), String> {
    // For a TLS cluster, a TLS handshake, not only a connect: the
    // listener may accept and still not serve.
    let stream = if target.tls {
        let mut peer = HttpPeer::new(addr, true, target.sni.clone());
        peer.options.connection_timeout = Some(timeout);
        transport().new_stream(&peer).await
    } else {
        let mut peer = BasicPeer::new(&addr.to_string());
        peer.options.connection_timeout = Some(timeout);
        transport().new_stream(&peer).await
    };
    stream.map(|_| ()).map_err(why)
}

/// The probes' connectors, made once: making one builds a TLS context,
/// which took longer than a short probe's timeout in a debug build. Their
/// pools stay empty (no session is given back), so every probe connects
/// afresh.
fn transport() -> &'static TransportConnector {
    static CONNECTOR: OnceLock<TransportConnector> = OnceLock::new();
    CONNECTOR.get_or_init(|| TransportConnector::new(None))
}

fn http_connector() -> &'static HttpConnector {
    static CONNECTOR: OnceLock<HttpConnector> = OnceLock::new();
    CONNECTOR.get_or_init(|| HttpConnector::new(None))
}

/// A fresh HTTP session to `addr` (no pooled connection).
async fn session(
    target: &ProbeTarget,
    addr: SocketAddr,
    timeout: Duration,
    h2: bool,
) -> Result<HttpSession, String> {
    let mut peer = HttpPeer::new(addr, target.tls, target.sni.clone());
    let o = &mut peer.options;
    o.connection_timeout = Some(timeout);
    o.read_timeout = Some(timeout);
    o.write_timeout = Some(timeout);
    if h2 {
        o.alpn = ALPN::H2;
    }
    let (session, _) = http_connector()
        .get_http_session(&peer)
        .await
        .map_err(why)?;
    Ok(session)
}

/// `GET path`: the answer's status.
async fn http(
    target: &ProbeTarget,
    addr: SocketAddr,
    timeout: Duration,
    path: &str,
    host: Option<&str>,
) -> Result<u16, String> {
    let mut s = session(target, addr, timeout, target.h2).await?;
    let mut req = RequestHeader::build("GET", path.as_bytes(), None).map_err(why)?;
    let authority = host.map_or_else(|| addr.to_string(), str::to_string);
    req.insert_header("host", &authority).map_err(why)?;
    req.insert_header("user-agent", "breakwater-health-check")
        .map_err(why)?;
    s.write_request_header(Box::new(req)).await.map_err(why)?;
    s.finish_request_body().await.map_err(why)?;
    s.read_response_header().await.map_err(why)?;
    let status = s
        .response_header()
        .map(|r| r.status.as_u16())
        .ok_or("no response header")?;
    // Read the answer to its end: a probe that passes on the head of a
    // body that never finishes would pass a stuck server.
    while s.read_response_body().await.map_err(why)?.is_some() {}
    s.shutdown().await;
    Ok(status)
}

/// `grpc.health.v1.Health/Check` for `service`: passes on `SERVING`.
async fn grpc(
    target: &ProbeTarget,
    addr: SocketAddr,
    timeout: Duration,
    service: &str,
) -> Result<(), String> {
    let mut s = session(target, addr, timeout, true).await?;
    let authority = if target.sni.is_empty() {
        addr.to_string()
    } else {
        target.sni.clone()
    };
    let mut req =
        RequestHeader::build("POST", b"/grpc.health.v1.Health/Check", None).map_err(why)?;
    // Pingora's HTTP/2 client makes `:authority` of the Host header.
    for (name, value) in [
        ("host", authority.as_str()),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
        ("user-agent", "breakwater-health-check"),
    ] {
        req.insert_header(name, value).map_err(why)?;
    }
    s.write_request_header(Box::new(req)).await.map_err(why)?;
    s.write_request_body(health_request(service), true)
        .await
        .map_err(why)?;
    s.read_response_header().await.map_err(why)?;
    let head = s.response_header().ok_or("no response header")?.clone();
    if head.status.as_u16() != 200 {
        return Err(format!("HTTP status {}", head.status.as_u16()));
    }
    let mut body = BytesMut::new();
    while let Some(chunk) = s.read_response_body().await.map_err(why)? {
        if body.len() + chunk.len() > 64 * 1024 {
            return Err("health answer over 64 KiB".into());
        }
        body.extend_from_slice(&chunk);
    }
    let trailers = match &mut s {
        HttpSession::H2(h2) => h2.read_trailers().await.map_err(why)?,
        _ => None,
    };
    // A trailers-only answer carries the status in its head.
    let status_of = |h: &http::HeaderMap| {
        h.get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let code = trailers
        .as_ref()
        .and_then(status_of)
        .or_else(|| status_of(&head.headers))
        .ok_or("no grpc-status")?;
    if code != "0" {
        let message = trailers
            .as_ref()
            .and_then(|t| t.get("grpc-message"))
            .or_else(|| head.headers.get("grpc-message"))
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        return Err(format!("grpc-status {code} {message}")
            .trim_end()
            .to_string());
    }
    match serving_status(&body) {
        Some(1) => Ok(()),
        Some(2) => Err("NOT_SERVING".into()),
        Some(3) => Err("SERVICE_UNKNOWN".into()),
        Some(0) => Err("UNKNOWN".into()),
        Some(n) => Err(format!("serving status {n}")),
        None => Err("a health answer that does not parse".into()),
    }
}

/// A failed probe's reason, as the admin shows it.
fn why(e: impl std::fmt::Display) -> String {
    e.to_string().trim().to_string()
}

/// A `HealthCheckRequest { service }` in one gRPC message frame.
fn health_request(service: &str) -> Bytes {
    let mut msg = BytesMut::new();
    if !service.is_empty() {
        // Field 1, length-delimited; names are at most 256 bytes (config).
        msg.put_u8(0x0a);
        put_varint(&mut msg, service.len() as u64);
        msg.put_slice(service.as_bytes());
    }
    let mut frame = BytesMut::with_capacity(5 + msg.len());
    frame.put_u8(0);
    frame.put_u32(msg.len() as u32);
    frame.put_slice(&msg);
    frame.freeze()
}

fn put_varint(buf: &mut BytesMut, mut n: u64) {
    while n >= 0x80 {
        buf.put_u8((n as u8) | 0x80);
        n >>= 7;
    }
    buf.put_u8(n as u8);
}

/// The `status` of a `HealthCheckResponse` frame (field 1, an enum; absent
/// is 0, `UNKNOWN`). `None` when the frame does not parse.
fn serving_status(frame: &[u8]) -> Option<u64> {
    let (&flag, rest) = frame.split_first()?;
    if flag != 0 || rest.len() < 4 {
        return None;
    }
    let len = u32::from_be_bytes(rest[..4].try_into().ok()?) as usize;
    let mut msg = rest.get(4..4 + len)?;
    let mut status = 0;
    while !msg.is_empty() {
        let (key, n) = varint(msg)?;
        msg = &msg[n..];
        match (key >> 3, key & 7) {
            (1, 0) => {
                let (v, n) = varint(msg)?;
                status = v;
                msg = &msg[n..];
            }
            // Unknown fields are skipped, as protobuf readers do.
            (_, 0) => msg = &msg[varint(msg)?.1..],
            (_, 2) => {
                let (len, n) = varint(msg)?;
                msg = msg.get(n + usize::try_from(len).ok()?..)?;
            }
            (_, 1) => msg = msg.get(8..)?,
            (_, 5) => msg = msg.get(4..)?,
            _ => return None,
        }
    }
    Some(status)
}

/// A protobuf varint: its value and length.
fn varint(buf: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for (i, b) in buf.iter().enumerate().take(10) {
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_frames_the_service_name() {
        assert_eq!(&health_request("")[..], &[0, 0, 0, 0, 0]);
        assert_eq!(
            &health_request("ab")[..],
            &[0, 0, 0, 0, 4, 0x0a, 2, b'a', b'b']
        );
    }

    #[test]
    fn the_answer_is_read_and_bad_frames_are_refused() {
        assert_eq!(serving_status(&[0, 0, 0, 0, 2, 0x08, 1]), Some(1));
        assert_eq!(serving_status(&[0, 0, 0, 0, 2, 0x08, 2]), Some(2));
        // An empty message is the default, UNKNOWN.
        assert_eq!(serving_status(&[0, 0, 0, 0, 0]), Some(0));
        // An unknown field before it is skipped.
        assert_eq!(
            serving_status(&[0, 0, 0, 0, 5, 0x12, 1, b'x', 0x08, 1]),
            Some(1)
        );
        for bad in [
            &[][..],
            &[1, 0, 0, 0, 0],
            &[0, 0, 0, 0, 9, 0x08],
            &[0, 0, 0, 0, 2, 0x08, 0x80],
            &[0, 0, 0, 0, 2, 0x0b, 1],
        ] {
            assert_eq!(serving_status(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_ramping_endpoint_takes_its_share_and_then_stops_ramping() {
        let e = EndpointCheck::new("127.0.0.1:1".parse().unwrap(), 1_000, true);
        let w = Duration::from_secs(10);
        assert_eq!(e.share(1_000, w), slow_start::MIN_SHARE);
        assert!((e.share(5_000_001_000, w) - 0.5).abs() < 1e-6);
        assert_eq!(e.share(10_000_001_000, w), 1.0);
        assert_eq!(e.ramping_since.load(Ordering::Relaxed), NOT_RAMPING);
        assert_eq!(e.share(0, w), 1.0, "no longer ramping");
        e.ramp_from(20_000_000_000);
        assert_eq!(e.share(20_000_000_000, w), slow_start::MIN_SHARE);
    }

    #[test]
    fn a_probe_is_claimed_once_per_interval_and_not_while_running() {
        let e = Arc::new(EndpointCheck::new("127.0.0.1:1".parse().unwrap(), 0, false));
        let second = Duration::from_secs(1);
        let running = e.claim(0, second).expect("due at once");
        assert!(e.claim(2_000_000_000, second).is_none(), "one is running");
        drop(running);
        assert!(e.claim(500_000_000, second).is_none(), "not due yet");
        assert!(e.claim(1_000_000_000, second).is_some());
    }
}
