//! A configuration error that names where in the file it is.

use std::fmt;

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
}
