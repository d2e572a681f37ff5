//! Validation and compilation of a [`FileConfig`] into a [`Snapshot`].
//!
//! Compilation never touches the live snapshot: it reads the previous one only
//! to carry policy state over (a policy whose name and config are unchanged is
//! reused as the same `Arc`, with its windows, counters and breaker state).
//! Each part of the file compiles in its own module: [`server`](super::server)
//! (listeners and process settings), [`fleet`](super::fleet),
//! [`keys`](super::keys), [`clusters`](super::clusters),
//! [`routes`](super::routes) and [`policies`](super::policies).

use std::time::SystemTime;

use breakwater_plugins::ConfigError;

use super::context::CompileContext;
use super::file::FileConfig;
use super::{clusters, fleet, keys, routes, server};
use crate::config::snapshot::{text_hash, Snapshot};
use crate::route::Router;

/// Validates `file` and builds a snapshot. `text` is the file's text, for the
/// hash.
pub fn compile(
    file: FileConfig,
    text: &str,
    mut cx: CompileContext<'_>,
) -> Result<Snapshot, ConfigError> {
    validate_static(&file, &cx)?;
    let admin = super::admin::compile_admin(&file.admin, cx.env())?;
    let keys = keys::compile_keys(&file.keys)?;
    let clusters = clusters::compile_clusters(&file.clusters, &keys, &cx)?;
    let routes = routes::compile_routes(&file.routes, &clusters, &keys, &mut cx)?;
    let generation = cx.generation();
    let clock = cx.clock.clone();
    let (policies, registries) = cx.into_compiled();
    Ok(Snapshot {
        generation,
        hash: text_hash(text),
        loaded_at: SystemTime::now(),
        source: file,
        router: Router { routes },
        keys,
        clusters,
        policies,
        registries,
        clock,
        admin,
    })
}

/// The sections that compile to nothing in the snapshot but must be valid:
/// the fleet, the listeners, the process settings and the log filter.
fn validate_static(file: &FileConfig, cx: &CompileContext<'_>) -> Result<(), ConfigError> {
    fleet::validate(file, cx.previous())?;
    server::validate_listeners(&file.listeners)?;
    server::validate_server(file)?;
    clusters::require_one(&file.clusters)?;
    server::validate_logging(&file.logging)
}
