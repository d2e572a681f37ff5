//! The fleet section (`cluster:` in the file): Redis-backed fleet-wide state.

use breakwater_plugins::config_error::ConfigPath;
use breakwater_plugins::ConfigError;

use super::file::FileConfig;
use crate::config::snapshot::Snapshot;

/// Checks the fleet section, and that a reload leaves it as it was: the
/// fleet link is set up once, at startup.
pub fn validate(file: &FileConfig, previous: Option<&Snapshot>) -> Result<(), ConfigError> {
    if let Some(fleet) = &file.cluster {
        fleet.compile()?;
    }
    match previous {
        Some(prev) if prev.source.cluster != file.cluster => {
            Err(ConfigPath::root().field("cluster").error(
                "changes to the cluster section need a restart (the fleet link is set up once)",
            ))
        }
        _ => Ok(()),
    }
}
