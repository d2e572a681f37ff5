//! The gateway's own answers: rejections, 404, 502 and 504.
//!
//! Every refusal says why, in a form both a person and a program can read: a
//! short JSON body naming the policy or cluster, an `x-breakwater-*` header,
//! and for gRPC callers a trailers-only response with `grpc-status` and
//! `grpc-message`, since a gRPC client ignores HTTP bodies.

use breakwater_plugins::{GrpcCode, Rejection, RejectionKind};
use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use serde::Serialize;

/// A response built by the gateway itself.
#[derive(Debug, Clone)]
pub struct GatewayResponse {
    pub status: u16,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Empty for gRPC trailers-only answers.
    pub body: Bytes,
    /// Sent after the body (a shared gRPC answer's status).
    pub trailers: Option<http::HeaderMap>,
}

impl From<breakwater_plugins::LocalResponse> for GatewayResponse {
    fn from(r: breakwater_plugins::LocalResponse) -> Self {
        Self {
            status: r.status,
            headers: r.headers,
            body: r.body,
            trailers: r.trailers,
        }
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    reason: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    policy: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cluster: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    route: Option<&'a str>,
}

/// Whom a refusal names besides its policy: the route and, for upstream
/// failures, the cluster.
#[derive(Debug, Clone, Copy, Default)]
pub struct Scope<'a> {
    pub route: Option<&'a str>,
    pub cluster: Option<&'a str>,
}

pub const POLICY_HEADER: HeaderName = HeaderName::from_static("x-breakwater-policy");
pub const ERROR_HEADER: HeaderName = HeaderName::from_static("x-breakwater-error");

/// Builds the HTTP or gRPC form of a refusal.
pub fn render(r: Rejection, scope: Scope<'_>, grpc: bool) -> GatewayResponse {
    let policy = r.policy().map(str::to_owned);
    let policy = policy.as_deref();
    let mut headers = r.headers;
    headers.push((ERROR_HEADER, HeaderValue::from_static(r.kind.as_str())));
    if let Some(p) = policy.and_then(|p| HeaderValue::from_str(p).ok()) {
        headers.push((POLICY_HEADER, p));
    }
    if grpc {
        headers.push((
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        ));
        headers.push((
            HeaderName::from_static("grpc-status"),
            HeaderValue::from(u16::from(r.grpc_status.as_u8())),
        ));
        let pushback = retry_pushback_ms(r.kind, r.grpc_status, &headers);
        headers.push((
            HeaderName::from_static("grpc-retry-pushback-ms"),
            HeaderValue::from(pushback),
        ));
        let message = grpc_message(&r.reason, policy.or(scope.cluster));
        if let Ok(v) = HeaderValue::from_str(&message) {
            headers.push((HeaderName::from_static("grpc-message"), v));
        }
        return GatewayResponse {
            status: 200,
            headers,
            body: Bytes::new(),
            trailers: None,
        };
    }
    let body = serde_json::to_vec(&ErrorBody {
        error: r.kind.as_str(),
        reason: &r.reason,
        policy,
        cluster: scope.cluster,
        route: scope.route,
    })
    .unwrap_or_default();
    headers.push((
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    ));
    headers.push((
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    ));
    GatewayResponse {
        status: r.status,
        headers,
        body: Bytes::from(body),
        trailers: None,
    }
}

/// `grpc-retry-pushback-ms` for a refusal: gRPC clients with retry
/// throttling wait this long before retrying, or do not retry at all when it
/// is negative. Negative while a breaker is open (retrying cannot help until
/// it probes) and for refusals a retry cannot fix; otherwise the refusal's
/// `Retry-After`, or one second.
fn retry_pushback_ms(
    kind: RejectionKind,
    grpc_status: GrpcCode,
    headers: &[(HeaderName, HeaderValue)],
) -> i64 {
    if kind == RejectionKind::CircuitOpen {
        return -1;
    }
    let retry_after = headers
        .iter()
        .find(|(n, _)| n == http::header::RETRY_AFTER)
        .and_then(|(_, v)| v.to_str().ok()?.trim().parse::<i64>().ok());
    match retry_after {
        Some(secs) => secs.saturating_mul(1000),
        // RESOURCE_EXHAUSTED, UNAVAILABLE: worth retrying a little later.
        None if grpc_status.is_transient() => 1000,
        None => -1,
    }
}

/// `grpc-message` is percent-encoded (gRPC over HTTP/2 spec): space and
/// printable ASCII except `%` pass through.
pub fn grpc_message(reason: &str, who: Option<&str>) -> String {
    let text = match who {
        Some(w) => format!("{reason} ({w})"),
        None => reason.to_string(),
    };
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grpc_refusal(
        kind: RejectionKind,
        grpc: GrpcCode,
        retry_after: Option<u64>,
    ) -> GatewayResponse {
        let mut r = Rejection::new(kind, 429, "p", "r").with_grpc(grpc);
        if let Some(s) = retry_after {
            r = r.with_header(http::header::RETRY_AFTER, HeaderValue::from(s));
        }
        render(r, Scope::default(), true)
    }

    fn pushback(r: &GatewayResponse) -> &str {
        r.headers
            .iter()
            .find(|(n, _)| n == "grpc-retry-pushback-ms")
            .map(|(_, v)| v.to_str().unwrap())
            .unwrap()
    }

    #[test]
    fn grpc_refusals_tell_clients_when_to_retry() {
        use GrpcCode::*;
        use RejectionKind::*;
        assert_eq!(
            pushback(&grpc_refusal(RateLimited, ResourceExhausted, Some(2))),
            "2000"
        );
        assert_eq!(
            pushback(&grpc_refusal(Overloaded, Unavailable, None)),
            "1000"
        );
        assert_eq!(
            pushback(&grpc_refusal(CircuitOpen, Unavailable, Some(5))),
            "-1"
        );
        assert_eq!(
            pushback(&grpc_refusal(Denied, PermissionDenied, None)),
            "-1"
        );
    }

    fn refusal() -> Rejection {
        Rejection::new(
            RejectionKind::Denied,
            403,
            "goods.deny",
            "client address is denied",
        )
    }

    const GOODS: Scope<'static> = Scope {
        route: Some("goods"),
        cluster: None,
    };

    fn header<'a>(r: &'a GatewayResponse, name: &str) -> Option<&'a str> {
        r.headers
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.to_str().ok())
    }

    #[test]
    fn http_refusal_is_json_naming_the_policy() {
        let r = render(refusal(), GOODS, false);
        assert_eq!(r.status, 403);
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["error"], "denied");
        assert_eq!(body["policy"], "goods.deny");
        assert_eq!(body["route"], "goods");
        assert!(body.get("cluster").is_none());
        assert_eq!(header(&r, "x-breakwater-policy"), Some("goods.deny"));
        assert_eq!(header(&r, "content-type"), Some("application/json"));
    }

    #[test]
    fn grpc_refusal_is_trailers_only_with_encoded_message() {
        let mut f = refusal();
        f.reason = "100% denied".into();
        let r = render(f, GOODS, true);
        assert_eq!(r.status, 200);
        assert!(r.body.is_empty());
        assert_eq!(header(&r, "grpc-status"), Some("7"));
        assert_eq!(
            header(&r, "grpc-message"),
            Some("100%25 denied (goods.deny)")
        );
    }
}
