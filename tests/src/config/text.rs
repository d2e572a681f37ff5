//! What the harness writes as a config file, and the YAML emitter.

use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;

use super::Config;

/// The proxy listener's address, filled in at start.
pub(crate) const LISTEN: &str = "{listen}";
/// The admin's loopback address, filled in at start.
pub(crate) const ADMIN: &str = "{admin}";
/// The admin's port alone, filled in at start.
pub(crate) const ADMIN_PORT: &str = "{admin_port}";
/// The gateway's temp dir, filled in at start.
pub(crate) const DIR: &str = "{dir}";

/// A config the harness can write: a [`Config`], or YAML text with the
/// harness's placeholders (for files a test writes by hand on purpose).
pub trait ConfigText {
    fn config_text(&self) -> String;
}

impl ConfigText for str {
    fn config_text(&self) -> String {
        self.to_string()
    }
}

impl ConfigText for String {
    fn config_text(&self) -> String {
        self.clone()
    }
}

impl ConfigText for Config {
    fn config_text(&self) -> String {
        self.to_yaml()
    }
}

/// YAML for `value`. Panics if serde_yaml cannot write it, which only a
/// non-string map key could cause (none of the builders has one).
pub(crate) fn yaml(value: &impl Serialize) -> String {
    serde_yaml::to_string(value).expect("the config builder writes YAML")
}

/// Writes `{ key: value }`: the file's spelling of a one-of choice such as
/// `path: { prefix: /api }` (serde_yaml would write an enum as a `!tag`).
pub(crate) fn one_entry<S: Serializer>(
    s: S,
    key: &str,
    value: &impl Serialize,
) -> Result<S::Ok, S::Error> {
    let mut map = s.serialize_map(Some(1))?;
    map.serialize_entry(key, value)?;
    map.end()
}
