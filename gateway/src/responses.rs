//! The gateway's own answers: rejections, 404, 502 and 504.
//!
//! Every refusal says why, in a form both a person and a program can read: a
//! short JSON body naming the policy or cluster, an `x-breakwater-*` header,
//! and for gRPC callers a trailers-only response with `grpc-status` and
//! `grpc-message`, since a gRPC client ignores HTTP bodies.

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

/// What went wrong, for [`render`].
pub struct Refusal<'a> {
    pub status: u16,
    pub grpc_status: u8,
    /// Machine-readable class: `no_route`, `denied`, `upstream_timeout`, ...
    pub error: &'a str,
    pub reason: &'a str,
    pub policy: Option<&'a str>,
    pub cluster: Option<&'a str>,
    pub route: Option<&'a str>,
    pub extra_headers: Vec<(HeaderName, HeaderValue)>,
}

impl<'a> Refusal<'a> {
    /// A refusal of the gateway's own, naming no policy, cluster or route.
    pub fn gateway(status: u16, grpc_status: u8, error: &'a str, reason: &'a str) -> Self {
        Self {
            status,
            grpc_status,
            error,
            reason,
            policy: None,
            cluster: None,
            route: None,
            extra_headers: Vec::new(),
        }
    }
}

pub const POLICY_HEADER: HeaderName = HeaderName::from_static("x-breakwater-policy");
pub const ERROR_HEADER: HeaderName = HeaderName::from_static("x-breakwater-error");

/// Builds the HTTP or gRPC form of a refusal.
pub fn render(r: Refusal<'_>, grpc: bool) -> GatewayResponse {
    let mut headers = r.extra_headers;
    if let Ok(v) = HeaderValue::from_str(r.error) {
        headers.push((ERROR_HEADER, v));
    }
    if let Some(p) = r.policy.and_then(|p| HeaderValue::from_str(p).ok()) {
        headers.push((POLICY_HEADER, p));
    }
    if grpc {
        headers.push((
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        ));
        headers.push((
            HeaderName::from_static("grpc-status"),
            HeaderValue::from(u16::from(r.grpc_status)),
        ));
        let pushback = retry_pushback_ms(r.error, r.grpc_status, &headers);
        headers.push((
            HeaderName::from_static("grpc-retry-pushback-ms"),
            HeaderValue::from(pushback),
        ));
        let message = grpc_message(r.reason, r.policy.or(r.cluster));
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
        error: r.error,
        reason: r.reason,
        policy: r.policy,
        cluster: r.cluster,
        route: r.route,
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
fn retry_pushback_ms(error: &str, grpc_status: u8, headers: &[(HeaderName, HeaderValue)]) -> i64 {
    if error == "circuit_open" {
        return -1;
    }
    let retry_after = headers
        .iter()
        .find(|(n, _)| n == http::header::RETRY_AFTER)
        .and_then(|(_, v)| v.to_str().ok()?.trim().parse::<i64>().ok());
    match (retry_after, grpc_status) {
        (Some(secs), _) => secs.saturating_mul(1000),
        // RESOURCE_EXHAUSTED, UNAVAILABLE: worth retrying a little later.
        (None, 8 | 14) => 1000,
        (None, _) => -1,
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
        error: &'static str,
        grpc_status: u8,
        retry_after: Option<u64>,
    ) -> GatewayResponse {
        render(
            Refusal {
                status: 429,
                grpc_status,
                error,
                reason: "r",
                policy: Some("p"),
                cluster: None,
                route: None,
                extra_headers: retry_after
                    .map(|s| vec![(http::header::RETRY_AFTER, HeaderValue::from(s))])
                    .unwrap_or_default(),
            },
            true,
        )
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
        assert_eq!(pushback(&grpc_refusal("rate_limited", 8, Some(2))), "2000");
        assert_eq!(pushback(&grpc_refusal("overloaded", 14, None)), "1000");
        assert_eq!(pushback(&grpc_refusal("circuit_open", 14, Some(5))), "-1");
        assert_eq!(pushback(&grpc_refusal("denied", 7, None)), "-1");
    }

    fn refusal() -> Refusal<'static> {
        Refusal {
            status: 403,
            grpc_status: 7,
            error: "denied",
            reason: "client address is denied",
            policy: Some("goods.deny"),
            cluster: None,
            route: Some("goods"),
            extra_headers: vec![],
        }
    }

    fn header<'a>(r: &'a GatewayResponse, name: &str) -> Option<&'a str> {
        r.headers
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.to_str().ok())
    }

    #[test]
    fn http_refusal_is_json_naming_the_policy() {
        let r = render(refusal(), false);
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
        f.reason = "100% denied";
        let r = render(f, true);
        assert_eq!(r.status, 200);
        assert!(r.body.is_empty());
        assert_eq!(header(&r, "grpc-status"), Some("7"));
        assert_eq!(
            header(&r, "grpc-message"),
            Some("100%25 denied (goods.deny)")
        );
    }
}
