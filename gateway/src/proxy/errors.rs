//! The error table: what a Pingora error means to the policies and to the
//! client.
//!
//! Two readings of one error. [`classify`] gives the class the policies
//! reason about (breakers, retries, stale-if-error); [`rejection_for`] gives
//! the answer the client gets (status, gRPC code, kind, reason). Both live
//! here so that a new Pingora error type is mapped once.

use breakwater_plugins::{ErrorKind, Rejection, RejectionKind};
use pingora::{Error, ErrorSource, ErrorType};

use crate::proxy::responses::Scope;
use crate::route::Route;

/// Maps a Pingora error to the outcome class policies reason about.
pub fn classify(e: &Error) -> ErrorKind {
    if e.esource() == &ErrorSource::Downstream {
        return ErrorKind::Abandoned;
    }
    match e.etype() {
        ErrorType::ConnectRefused => ErrorKind::ConnectRefused,
        ErrorType::ConnectTimedout => ErrorKind::ConnectTimeout,
        ErrorType::ConnectNoRoute
        | ErrorType::ConnectError
        | ErrorType::TLSHandshakeFailure
        | ErrorType::TLSHandshakeTimedout
        | ErrorType::InvalidCert
        | ErrorType::HandshakeError
        | ErrorType::SocketError
        | ErrorType::BindError => ErrorKind::ConnectFailed,
        ErrorType::ReadTimedout | ErrorType::WriteTimedout => ErrorKind::Timeout,
        ErrorType::ConnectionClosed | ErrorType::ReadError | ErrorType::WriteError => {
            ErrorKind::Reset
        }
        ErrorType::InvalidHTTPHeader
        | ErrorType::H1Error
        | ErrorType::H2Error
        | ErrorType::InvalidH2 => ErrorKind::Protocol,
        _ => ErrorKind::Other,
    }
}

/// What the request's state adds to an error's meaning.
#[derive(Debug, Clone, Copy)]
pub struct Facts {
    /// The class of the failure as the request saw it ([`classify`], with a
    /// timeout at the caller's own deadline made
    /// [`ErrorKind::DeadlineExceeded`]).
    pub kind: ErrorKind,
    /// The deadline ran out before the upstream was called.
    pub deadline_before_upstream: bool,
    /// Every endpoint stayed at its `max_in_flight` (the cluster's
    /// `endpoint_queue` timed out or was full).
    pub endpoints_full: bool,
}

/// The client's answer for a failed request. A client that left gets a
/// [`RejectionKind::ClientGone`] with status 0: nothing is written.
pub fn rejection_for(e: &Error, facts: Facts) -> Rejection {
    use RejectionKind as K;
    let (kind, status, reason) = match (e.esource(), e.etype()) {
        (_, ErrorType::HTTPStatus(code)) => (K::HttpError, *code, "request failed".to_string()),
        (
            ErrorSource::Downstream,
            ErrorType::ReadError | ErrorType::WriteError | ErrorType::ConnectionClosed,
        ) => (K::ClientGone, 0, String::new()),
        (ErrorSource::Downstream, ErrorType::ReadTimedout) => (
            K::ClientTimeout,
            408,
            "the client did not send its request in time".to_string(),
        ),
        (ErrorSource::Downstream, _) => (K::BadRequest, 400, "malformed request".to_string()),
        (ErrorSource::Upstream, _) if facts.endpoints_full => (
            K::Overloaded,
            503,
            "every endpoint is at its max_in_flight".to_string(),
        ),
        (ErrorSource::Upstream, _) if facts.deadline_before_upstream => (
            K::DeadlineExceeded,
            504,
            "the deadline passed before the upstream was called".to_string(),
        ),
        (ErrorSource::Upstream, _) => match facts.kind {
            ErrorKind::DeadlineExceeded => (
                K::DeadlineExceeded,
                504,
                "the caller's deadline passed before the upstream answered".to_string(),
            ),
            ErrorKind::Timeout | ErrorKind::ConnectTimeout => {
                (K::UpstreamTimeout, 504, describe_upstream_error(e))
            }
            _ => (K::UpstreamUnavailable, 502, describe_upstream_error(e)),
        },
        _ => (K::Internal, 500, "internal error".to_string()),
    };
    Rejection::gateway(kind, status, reason)
}

fn describe_upstream_error(e: &Error) -> String {
    match e.etype() {
        ErrorType::ConnectRefused => "connection refused by upstream".into(),
        ErrorType::ConnectTimedout => "timed out connecting to upstream".into(),
        ErrorType::ReadTimedout => "upstream did not answer in time".into(),
        ErrorType::WriteTimedout => "timed out sending to upstream".into(),
        ErrorType::ConnectNoRoute => "no endpoint available".into(),
        ErrorType::ConnectionClosed => "upstream closed the connection".into(),
        other => format!("upstream error: {}", other.as_str()),
    }
}

/// Whom a failure's answer names: the route, and the cluster unless the
/// deadline ran out (that is the caller's or the route's, not the cluster's).
pub fn scope_for<'r>(route: Option<&'r Route>, rejection: &Rejection) -> Scope<'r> {
    Scope {
        route: route.map(|r| r.id.as_ref()),
        cluster: route
            .filter(|_| rejection.kind != RejectionKind::DeadlineExceeded)
            .map(|r| r.cluster.name.as_ref()),
    }
}

/// An error the gateway raises about the upstream exchange.
pub fn upstream_error(etype: ErrorType, why: &'static str) -> Box<Error> {
    let mut e = Error::explain(etype, why);
    e.esource = ErrorSource::Upstream;
    e
}

/// `grpc-status` as a number, if present and valid.
pub fn grpc_status(headers: &http::HeaderMap) -> Option<u16> {
    headers
        .get("grpc-status")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use breakwater_plugins::GrpcCode;

    fn error(source: ErrorSource, etype: ErrorType) -> Box<Error> {
        let mut e = Error::new(etype);
        e.esource = source;
        e
    }

    fn answer(
        source: ErrorSource,
        etype: ErrorType,
        kind: ErrorKind,
    ) -> (u16, GrpcCode, &'static str) {
        let e = error(source, etype);
        let r = rejection_for(
            &e,
            Facts {
                kind,
                deadline_before_upstream: false,
                endpoints_full: false,
            },
        );
        (r.status, r.grpc_status, r.kind.as_str())
    }

    #[test]
    fn upstream_failures_are_502_or_504_with_the_grpc_code_clients_retry_on() {
        use ErrorSource::Upstream;
        assert_eq!(
            answer(
                Upstream,
                ErrorType::ConnectRefused,
                ErrorKind::ConnectRefused
            ),
            (502, GrpcCode::Unavailable, "upstream_unavailable")
        );
        assert_eq!(
            answer(Upstream, ErrorType::ReadTimedout, ErrorKind::Timeout),
            (504, GrpcCode::DeadlineExceeded, "upstream_timeout")
        );
        assert_eq!(
            answer(
                Upstream,
                ErrorType::ReadTimedout,
                ErrorKind::DeadlineExceeded
            ),
            (504, GrpcCode::DeadlineExceeded, "deadline_exceeded")
        );
        assert_eq!(
            answer(Upstream, ErrorType::HTTPStatus(503), ErrorKind::Other),
            (503, GrpcCode::Internal, "http_error")
        );
    }

    #[test]
    fn client_faults_are_4xx_and_a_client_gone_gets_nothing() {
        use ErrorSource::Downstream;
        assert_eq!(
            answer(Downstream, ErrorType::ReadTimedout, ErrorKind::Abandoned),
            (408, GrpcCode::DeadlineExceeded, "client_timeout")
        );
        assert_eq!(
            answer(
                Downstream,
                ErrorType::InvalidHTTPHeader,
                ErrorKind::Abandoned
            ),
            (400, GrpcCode::InvalidArgument, "bad_request")
        );
        assert_eq!(
            answer(
                Downstream,
                ErrorType::ConnectionClosed,
                ErrorKind::Abandoned
            )
            .0,
            0
        );
    }

    #[test]
    fn a_deadline_spent_before_the_upstream_is_the_callers() {
        let e = error(ErrorSource::Upstream, ErrorType::ReadTimedout);
        let r = rejection_for(
            &e,
            Facts {
                kind: ErrorKind::Timeout,
                deadline_before_upstream: true,
                endpoints_full: false,
            },
        );
        assert_eq!((r.status, r.kind), (504, RejectionKind::DeadlineExceeded));
        assert_eq!(classify(&e), ErrorKind::Timeout);
        assert_eq!(
            classify(&error(ErrorSource::Downstream, ErrorType::ReadError)),
            ErrorKind::Abandoned
        );
    }
}
