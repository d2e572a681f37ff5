//! `scope: local | global` on limits and hot-key rules.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::Fleet;
use crate::{ConfigError, PolicyEnv};

/// Whether a policy counts on this instance alone or across the fleet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Counts on this instance only.
    #[default]
    Local,
    /// Counts fleet-wide through the `fleet` section's Redis.
    Global,
}

impl Scope {
    /// The fleet a `scope: global` policy at `path` syncs with; `None` for
    /// local scope. Global scope without a `fleet` section is an error.
    pub fn fleet(self, env: &PolicyEnv<'_>, path: &str) -> Result<Option<Arc<Fleet>>, ConfigError> {
        match (self, &env.fleet) {
            (Scope::Local, _) => Ok(None),
            (Scope::Global, Some(fleet)) => Ok(Some(fleet.clone())),
            (Scope::Global, None) => Err(ConfigError::new(
                format!("{path}.scope"),
                "scope: global needs a top-level `cluster` section, now named `fleet` (the fleet's Redis)",
            )),
        }
    }

    pub fn is_local(&self) -> bool {
        *self == Scope::Local
    }
}
