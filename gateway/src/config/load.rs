//! Reading and parsing the YAML file, with errors that name the field path
//! and the line and column where the parser knows them.

use breakwater_plugins::ConfigError;

use super::file::FileConfig;

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(#[from] ConfigError),
}

/// Parses YAML text into the file model.
pub fn parse_str(text: &str) -> Result<FileConfig, ConfigError> {
    // Enums are written as one-key maps (`deny: {...}`, `path: { prefix: / }`),
    // which serde_yaml 0.9 reads only through `singleton_map_recursive`. The
    // path tracker sits beneath it so errors still name the field path.
    let mut track = serde_path_to_error::Track::new();
    let de = serde_yaml::Deserializer::from_str(text);
    let tracked = serde_path_to_error::Deserializer::new(de, &mut track);
    serde_yaml::with::singleton_map_recursive::deserialize(tracked).map_err(
        |inner: serde_yaml::Error| {
            let path = track.path().to_string();
            let path = if path == "." { String::new() } else { path };
            let location = inner.location();
            // serde_yaml appends " at line L column C" and may prefix its own
            // idea of the path; we report both separately.
            let mut message = strip_position(&inner.to_string());
            if let Some((prefix, rest)) = message.split_once(": ") {
                if !prefix.contains(' ') {
                    message = rest.to_string();
                }
            }
            let err = ConfigError::new(path, message);
            match location {
                Some(loc) => err.at(loc.line(), loc.column()),
                None => err,
            }
        },
    )
}

/// Removes serde_yaml's " at line L column C" from a message.
fn strip_position(message: &str) -> String {
    let Some(start) = message.find(" at line ") else {
        return message.to_string();
    };
    let rest = &message[start + " at line ".len()..];
    let rest = rest.trim_start_matches(|c: char| c.is_ascii_digit());
    let rest = rest.strip_prefix(" column ").unwrap_or(rest);
    let rest = rest.trim_start_matches(|c: char| c.is_ascii_digit());
    format!("{}{}", &message[..start], rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "\
listeners:
  - address: 127.0.0.1:8080
clusters:
  demo:
    endpoints: [127.0.0.1:9000]
routes:
  - id: all
    cluster: demo
";

    #[test]
    fn minimal_config_parses_with_defaults() {
        let cfg = parse_str(MINIMAL).unwrap();
        assert_eq!(cfg.server.threads, 2);
        assert_eq!(cfg.admin.address, "127.0.0.1:9901");
        assert_eq!(cfg.clusters["demo"].connect_timeout_ms, 1000);
    }

    #[test]
    fn unknown_field_names_path_line_and_column() {
        let text = MINIMAL.replace("    cluster: demo", "    clustr: demo");
        let err = parse_str(&text).unwrap_err();
        assert_eq!(err.path, "routes[0].clustr");
        assert!(err.message.starts_with("unknown field `clustr`"), "{err}");
        assert_eq!(err.line, Some(8));
        assert!(err.column.is_some());
    }

    #[test]
    fn wrong_type_names_nested_path() {
        let text = MINIMAL.replace(
            "    endpoints: [127.0.0.1:9000]",
            "    endpoints: [127.0.0.1:9000]\n    connect_timeout_ms: soon",
        );
        let err = parse_str(&text).unwrap_err();
        assert_eq!(err.path, "clusters.demo.connect_timeout_ms");
        assert!(err.message.contains("invalid type"), "{err}");
    }

    #[test]
    fn unknown_policy_type_is_rejected() {
        let text = format!("{MINIMAL}    policies:\n      - dney: {{ ips: [1.2.3.4] }}\n");
        let err = parse_str(&text).unwrap_err();
        assert_eq!(err.path, "routes[0].policies[0].dney");
        assert!(err.message.contains("dney"), "{err}");
    }

    #[test]
    fn broken_yaml_reports_position() {
        let err = parse_str("listeners: [\n").unwrap_err();
        assert!(err.line.is_some(), "{err}");
        assert!(!err.message.contains(" at line "), "{err}");
    }
}
