//! Routing: first match, in declared order, on host, path, method and headers.

mod matcher;
mod path;
mod router;

pub use matcher::{HeaderMatch, HostMatch, RouteMatcher};
pub use path::{Captures, PathPattern};
pub use router::{Route, RouteMatch, RouteTimeouts, Router};
