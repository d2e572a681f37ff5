//! A configuration error that names where in the file it is, and the path
//! builder that names it.

use std::fmt;
use std::ops::Deref;

/// An error in the configuration, with the path of the offending field
/// (`routes[1].policies[0].deny.ips[2]`) and, where the parser knows it, the
/// line and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub message: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
}

impl ConfigError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
            line: None,
            column: None,
        }
    }

    pub fn at(mut self, line: usize, column: usize) -> Self {
        self.line = Some(line);
        self.column = Some(column);
        self
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)?;
        } else {
            write!(f, "{}: {}", self.path, self.message)?;
        }
        if let (Some(line), Some(column)) = (self.line, self.column) {
            write!(f, " (line {line}, column {column})")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Where a value sits in the config file, built one step at a time, so that
/// no error site formats a path by hand:
///
/// ```
/// use breakwater_plugins::config_error::ConfigPath;
///
/// let route = ConfigPath::root().item("routes", 2);
/// let total = route.field("timeouts").field("total");
/// assert_eq!(total.as_str(), "routes[2].timeouts.total");
/// let err = total.error("must be between 1ms and 24h");
/// assert_eq!(err.to_string(), "routes[2].timeouts.total: must be between 1ms and 24h");
/// ```
///
/// It dereferences to `str` and converts into `String`, so it goes where the
/// older `&str` and `impl Into<String>` paths went (`bounds::in_range`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ConfigPath(String);

impl ConfigPath {
    /// The top of the file: its fields are named bare (`routes`, `keys`).
    pub fn root() -> Self {
        Self::default()
    }

    /// The field `name` of this value (`routes[0]` → `routes[0].match`).
    /// Map keys are fields too (`clusters.orders`).
    pub fn field(&self, name: impl fmt::Display) -> Self {
        if self.0.is_empty() {
            Self(name.to_string())
        } else {
            Self(format!("{}.{name}", self.0))
        }
    }

    /// Item `i` of this list (`ips` → `ips[3]`).
    pub fn index(&self, i: usize) -> Self {
        Self(format!("{}[{i}]", self.0))
    }

    /// Item `i` of the list in field `name`: `field(name).index(i)`.
    pub fn item(&self, name: impl fmt::Display, i: usize) -> Self {
        self.field(name).index(i)
    }

    /// An error at this path.
    pub fn error(&self, message: impl Into<String>) -> ConfigError {
        ConfigError::new(self.0.clone(), message)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for ConfigPath {
    fn from(path: &str) -> Self {
        Self(path.to_string())
    }
}

impl From<String> for ConfigPath {
    fn from(path: String) -> Self {
        Self(path)
    }
}

impl From<ConfigPath> for String {
    fn from(path: ConfigPath) -> Self {
        path.0
    }
}

impl From<&ConfigPath> for String {
    fn from(path: &ConfigPath) -> Self {
        path.0.clone()
    }
}

impl Deref for ConfigPath {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ConfigPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_path_then_position() {
        let e = ConfigError::new("routes[1].cluster", "unknown cluster \"ordrs\"").at(12, 14);
        assert_eq!(
            e.to_string(),
            "routes[1].cluster: unknown cluster \"ordrs\" (line 12, column 14)"
        );
    }

    #[test]
    fn paths_join_fields_with_dots_and_items_with_brackets() {
        let root = ConfigPath::root();
        assert_eq!(root.as_str(), "");
        assert_eq!(root.field("listeners").as_str(), "listeners");
        assert_eq!(root.item("listeners", 0).as_str(), "listeners[0]");
        let policy = root.item("routes", 2).item("policies", 0).field("deny");
        assert_eq!(policy.as_str(), "routes[2].policies[0].deny");
        assert_eq!(
            policy.item("ips", 3).as_str(),
            "routes[2].policies[0].deny.ips[3]"
        );
        assert_eq!(
            root.field("keys")
                .field("custom")
                .field("goods_id")
                .as_str(),
            "keys.custom.goods_id"
        );
        // A path handed over as text goes on from where it stood.
        let given = ConfigPath::from("routes[0].policies[1].hotkey");
        assert_eq!(
            given.field("limit").field("burst").as_str(),
            "routes[0].policies[1].hotkey.limit.burst"
        );
    }

    #[test]
    fn errors_name_the_path_and_paths_go_where_strings_went() {
        let p = ConfigPath::root().item("routes", 1).field("cluster");
        let e = p.error("unknown cluster \"ordrs\"");
        assert_eq!(
            e,
            ConfigError::new("routes[1].cluster", "unknown cluster \"ordrs\"")
        );
        let as_str: &str = &p;
        assert_eq!(as_str, "routes[1].cluster");
        let e = crate::bounds::in_range(0u64, 1..=5, p.field("x")).unwrap_err();
        assert_eq!(e.path, "routes[1].cluster.x");
        assert_eq!(p.to_string(), "routes[1].cluster");
    }
}
