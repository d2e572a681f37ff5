//! How an upstream exchange ended, as a policy needs to know it.

use std::time::Duration;

/// How the upstream exchange ended, as a policy needs to know it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// The upstream's HTTP status, if it answered.
    pub status: Option<u16>,
    /// The `grpc-status` from headers or trailers, if any.
    pub grpc_status: Option<u16>,
    /// Time from sending upstream to the end of the exchange.
    pub latency: Duration,
    /// Set when the exchange failed rather than answered.
    pub error: Option<ErrorKind>,
    /// The endpoint the (last) attempt went to.
    pub upstream: Option<std::net::SocketAddr>,
}

/// Classes of upstream failure. Policies care about the class, not the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The connection was refused: the upstream provably did not see the request.
    ConnectRefused,
    /// Connecting took longer than the connect timeout.
    ConnectTimeout,
    /// Any other failure to connect (no route, TLS handshake).
    ConnectFailed,
    /// The upstream did not answer within the read timeout.
    Timeout,
    /// The connection broke (reset or closed) during the exchange.
    Reset,
    /// The upstream spoke malformed HTTP.
    Protocol,
    /// The client went away before the exchange finished.
    Abandoned,
    /// The caller's own deadline (`grpc-timeout`, the deadline header) ran
    /// out before the upstream finished. It says nothing about the upstream:
    /// a client that sends `grpc-timeout: 1m` must not trip breakers for
    /// everyone. (The route's own `total` running out is a [`Self::Timeout`].)
    DeadlineExceeded,
    /// Anything else.
    Other,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::ConnectRefused => "connect_refused",
            ErrorKind::ConnectTimeout => "connect_timeout",
            ErrorKind::ConnectFailed => "connect_failed",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Reset => "reset",
            ErrorKind::Protocol => "protocol",
            ErrorKind::Abandoned => "abandoned",
            ErrorKind::DeadlineExceeded => "deadline_exceeded",
            ErrorKind::Other => "other",
        }
    }
}
