//! Routing: first match, in declared order, on host, path, method and headers;
//! and the keys a matched route extracts from the request ([`keys`]).

pub mod keys;
mod matcher;
mod path;
mod router;

pub use matcher::{HeaderMatch, HostMatch, RouteMatcher};
pub use path::{Captures, PathPattern};
pub use router::{Route, RouteMatch, RouteTimeouts, Router};
