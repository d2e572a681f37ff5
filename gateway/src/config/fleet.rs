//! The `fleet:` section: Redis-backed fleet-wide state. `cluster:`, its old
//! name, is still read; loading it logs a warning
//! ([`FileConfig::deprecations`]).

use breakwater_plugins::config_error::ConfigPath;
use breakwater_plugins::ConfigError;

use super::file::FileConfig;
use crate::config::snapshot::Snapshot;

/// Checks the fleet section, and that a reload leaves it as it was: the
/// fleet link is set up once, at startup.
pub fn validate(file: &FileConfig, previous: Option<&Snapshot>) -> Result<(), ConfigError> {
    if file.fleet.is_some() && file.cluster.is_some() {
        return Err(ConfigPath::root()
            .field("cluster")
            .error("is the old name of `fleet`: keep only `fleet`"));
    }
    let section = file.fleet_section();
    if let Some((name, fleet)) = section {
        fleet.compile(name)?;
    }
    let Some(prev) = previous else {
        return Ok(());
    };
    let before = prev.source.fleet_section();
    if before.map(|(_, f)| f) == section.map(|(_, f)| f) {
        return Ok(());
    }
    let name = section.or(before).map_or("fleet", |(name, _)| name);
    Err(ConfigPath::root().field(name).error(format!(
        "changes to the {name} section need a restart (the fleet link is set up once)"
    )))
}
