//! The request path: Pingora's `ProxyHttp` hooks ([`service`]) and the steps
//! they call, from admission to the access log.

pub mod access_log;
pub mod admission;
pub mod answer;
pub mod attempts;
pub mod body;
pub mod context;
pub mod deadline;
pub mod errors;
pub mod forwarded;
pub mod framing;
pub mod overload;
pub mod request_id;
pub mod responses;
pub mod service;
pub mod upstream_headers;

pub use service::Gateway;
