//! Why and how a request is refused, and the answers a policy gives itself.
//!
//! One type for every refusal, the policies' and the gateway's own (no
//! route, a malformed request, an upstream that failed): the gateway renders
//! each the same way, as a JSON body with `x-breakwater-error`, or for gRPC
//! callers as a trailers-only answer whose `grpc-status` is the [`GrpcCode`].
//! Kinds are an enum, so a decision never depends on matching text.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};

/// Why a request was refused: the `error` field of the answer and the
/// `x-breakwater-error` header, in one word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectionKind {
    /// A `deny` rule matched.
    Denied,
    /// The key is on the block list (abuse detection or an admin block).
    Blocked,
    /// A rate limit (or a hot key's limit) ran out.
    RateLimited,
    /// The cluster's circuit breaker is open, or its half-open probes are out.
    CircuitOpen,
    /// A concurrency limit is full, or its queue timed out.
    Overloaded,
    /// The same request, with the same idempotency key, is in flight.
    Duplicate,
    /// An idempotency key in flight names a different request.
    IdempotencyKeyReused,
    /// The request joined the same one in flight, which failed (or could
    /// not be shared).
    DuplicateFailed,
    /// No route matches.
    NoRoute,
    /// The request is malformed (or framed twice).
    BadRequest,
    /// The caller's or the route's deadline ran out.
    DeadlineExceeded,
    /// The client did not send its request in time.
    ClientTimeout,
    /// The client went away: nothing is written.
    ClientGone,
    /// The upstream did not answer (or connect) in time.
    UpstreamTimeout,
    /// The upstream could not be reached, or broke the exchange.
    UpstreamUnavailable,
    /// The upstream's answer was turned into an error (a status retried to
    /// exhaustion).
    HttpError,
    /// A fault of the gateway's own.
    Internal,
}

impl RejectionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Denied => "denied",
            Self::Blocked => "blocked",
            Self::RateLimited => "rate_limited",
            Self::CircuitOpen => "circuit_open",
            Self::Overloaded => "overloaded",
            Self::Duplicate => "duplicate",
            Self::IdempotencyKeyReused => "idempotency_key_reused",
            Self::DuplicateFailed => "duplicate_failed",
            Self::NoRoute => "no_route",
            Self::BadRequest => "bad_request",
            Self::DeadlineExceeded => "deadline_exceeded",
            Self::ClientTimeout => "client_timeout",
            Self::ClientGone => "client_gone",
            Self::UpstreamTimeout => "upstream_timeout",
            Self::UpstreamUnavailable => "upstream_unavailable",
            Self::HttpError => "http_error",
            Self::Internal => "internal",
        }
    }
}

impl std::fmt::Display for RejectionKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for RejectionKind {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// gRPC status codes (grpc/doc/statuscodes.md): what a gRPC client is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum GrpcCode {
    Ok = 0,
    Cancelled = 1,
    Unknown = 2,
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    NotFound = 5,
    AlreadyExists = 6,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    FailedPrecondition = 9,
    Aborted = 10,
    OutOfRange = 11,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    DataLoss = 15,
    Unauthenticated = 16,
}

impl GrpcCode {
    pub fn as_u8(self) -> u8 {
        self as u8
    }

    /// Codes a client may retry a little later (with pushback).
    pub fn is_transient(self) -> bool {
        matches!(self, Self::ResourceExhausted | Self::Unavailable)
    }
}

impl PartialEq<u8> for GrpcCode {
    fn eq(&self, other: &u8) -> bool {
        self.as_u8() == *other
    }
}

/// Why and how a request is refused.
#[derive(Debug, Clone)]
pub struct Rejection {
    /// HTTP status, e.g. 403, 429, 503.
    pub status: u16,
    /// What a gRPC caller is told instead.
    pub grpc_status: GrpcCode,
    pub kind: RejectionKind,
    /// The name of the policy that refused; empty for the gateway's own
    /// refusals (no route, upstream failures).
    pub policy: String,
    /// A human-readable reason for the body and the logs.
    pub reason: String,
    /// Extra response headers (`Retry-After`, `RateLimit`, ...).
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl Rejection {
    /// A refusal by `policy`, with the gRPC code its kind implies.
    pub fn new(
        kind: RejectionKind,
        status: u16,
        policy: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        Self {
            status,
            grpc_status: default_grpc(kind, status),
            kind,
            policy: policy.into(),
            reason: reason.into(),
            headers: Vec::new(),
        }
    }

    /// A refusal of the gateway's own, naming no policy.
    pub fn gateway(kind: RejectionKind, status: u16, reason: impl Into<String>) -> Self {
        Self::new(kind, status, String::new(), reason)
    }

    pub fn with_grpc(mut self, code: GrpcCode) -> Self {
        self.grpc_status = code;
        self
    }

    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    /// The refusing policy's name, if a policy refused.
    pub fn policy(&self) -> Option<&str> {
        Some(self.policy.as_str()).filter(|p| !p.is_empty())
    }
}

/// The gRPC code a kind of refusal means, when its maker says nothing else.
fn default_grpc(kind: RejectionKind, status: u16) -> GrpcCode {
    use RejectionKind as K;
    match kind {
        K::Denied => GrpcCode::PermissionDenied,
        K::Blocked if status == 429 => GrpcCode::ResourceExhausted,
        K::Blocked => GrpcCode::PermissionDenied,
        K::RateLimited => GrpcCode::ResourceExhausted,
        K::CircuitOpen | K::Overloaded | K::UpstreamUnavailable => GrpcCode::Unavailable,
        K::Duplicate | K::IdempotencyKeyReused if status == 409 => GrpcCode::AlreadyExists,
        K::Duplicate | K::IdempotencyKeyReused | K::DuplicateFailed => GrpcCode::Unavailable,
        K::NoRoute => GrpcCode::Unimplemented,
        K::BadRequest => GrpcCode::InvalidArgument,
        K::DeadlineExceeded | K::ClientTimeout | K::UpstreamTimeout => GrpcCode::DeadlineExceeded,
        K::ClientGone => GrpcCode::Cancelled,
        K::HttpError | K::Internal => GrpcCode::Internal,
    }
}

/// A complete response made by a policy.
#[derive(Debug, Clone)]
pub struct LocalResponse {
    pub status: u16,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
    /// Trailers, sent after the body: a shared gRPC answer's `grpc-status`.
    pub trailers: Option<HeaderMap>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_read_as_their_wire_names() {
        assert_eq!(
            RejectionKind::IdempotencyKeyReused,
            "idempotency_key_reused"
        );
        assert_eq!(RejectionKind::CircuitOpen.to_string(), "circuit_open");
        assert_eq!(GrpcCode::Unavailable, 14);
    }

    #[test]
    fn each_kind_maps_to_the_grpc_code_clients_expect() {
        let code = |kind, status| Rejection::new(kind, status, "p", "r").grpc_status;
        assert_eq!(code(RejectionKind::Denied, 403), GrpcCode::PermissionDenied);
        assert_eq!(
            code(RejectionKind::Blocked, 429),
            GrpcCode::ResourceExhausted
        );
        assert_eq!(
            code(RejectionKind::Blocked, 403),
            GrpcCode::PermissionDenied
        );
        assert_eq!(
            code(RejectionKind::RateLimited, 429),
            GrpcCode::ResourceExhausted
        );
        assert_eq!(code(RejectionKind::CircuitOpen, 503), GrpcCode::Unavailable);
        assert_eq!(code(RejectionKind::Duplicate, 409), GrpcCode::AlreadyExists);
        assert_eq!(code(RejectionKind::Duplicate, 503), GrpcCode::Unavailable);
        assert_eq!(code(RejectionKind::NoRoute, 404), GrpcCode::Unimplemented);
        assert_eq!(
            code(RejectionKind::DeadlineExceeded, 504),
            GrpcCode::DeadlineExceeded
        );
        assert_eq!(
            Rejection::gateway(RejectionKind::NoRoute, 404, "x").policy(),
            None
        );
        assert_eq!(
            Rejection::new(RejectionKind::Denied, 403, "d", "x").policy(),
            Some("d")
        );
    }
}
