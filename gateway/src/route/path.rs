//! Path patterns: exact, prefix, and templates with `{name}` captures.
//!
//! A template such as `/goods/{id}/reviews` is split into segments once, at
//! compile time. Matching walks the request path's segments without
//! allocating, and records each capture as a byte range into the path, so a
//! key extractor can later read `id` without copying it.

use std::ops::Range;

use breakwater_plugins::ConfigError;

/// Captures of one template match, as byte ranges into the matched path, in
/// the order the template declares them. At most [`MAX_CAPTURES`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Captures {
    ranges: [Range<u16>; MAX_CAPTURES],
    len: u8,
}

/// Templates may capture at most this many segments.
pub const MAX_CAPTURES: usize = 8;

impl Captures {
    /// The text of capture `index` in `path`.
    pub fn get<'p>(&self, path: &'p str, index: usize) -> Option<&'p str> {
        if index >= self.len as usize {
            return None;
        }
        let r = &self.ranges[index];
        path.get(r.start as usize..r.end as usize)
    }

    fn push(&mut self, range: Range<usize>) {
        self.ranges[self.len as usize] = range.start as u16..range.end as u16;
        self.len += 1;
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Literal(String),
    Capture,
}

/// A compiled path pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathPattern {
    Exact(String),
    /// Plain string prefix, as Envoy and nginx `location` do: `/api` also
    /// matches `/apis`. Write `/api/` to match only below it.
    Prefix(String),
    Template {
        segments: Vec<Segment>,
        names: Vec<String>,
    },
}

impl PathPattern {
    pub fn exact(p: &str, path: &str) -> Result<Self, ConfigError> {
        check_absolute(p, path)?;
        Ok(Self::Exact(p.to_string()))
    }

    pub fn prefix(p: &str, path: &str) -> Result<Self, ConfigError> {
        check_absolute(p, path)?;
        Ok(Self::Prefix(p.to_string()))
    }

    /// Compiles `/a/{x}/b`. Captures must fill a whole segment.
    pub fn template(p: &str, path: &str) -> Result<Self, ConfigError> {
        check_absolute(p, path)?;
        let mut segments = Vec::new();
        let mut names: Vec<String> = Vec::new();
        for seg in p[1..].split('/') {
            if let Some(name) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                if !breakwater_plugins::keys::is_valid_name(name) {
                    return Err(ConfigError::new(
                        path,
                        format!("bad capture \"{seg}\" in template \"{p}\": names use letters, digits, '_' or '-'"),
                    ));
                }
                if names.iter().any(|n| n == name) {
                    return Err(ConfigError::new(
                        path,
                        format!("capture \"{name}\" appears twice in template \"{p}\""),
                    ));
                }
                names.push(name.to_string());
                segments.push(Segment::Capture);
            } else if seg.contains('{') || seg.contains('}') {
                return Err(ConfigError::new(
                    path,
                    format!("segment \"{seg}\" in template \"{p}\": a capture must be a whole segment like {{id}}"),
                ));
            } else {
                segments.push(Segment::Literal(seg.to_string()));
            }
        }
        if names.len() > MAX_CAPTURES {
            return Err(ConfigError::new(
                path,
                format!("template \"{p}\" has more than {MAX_CAPTURES} captures"),
            ));
        }
        Ok(Self::Template { segments, names })
    }

    /// Capture names, in order (empty unless a template).
    pub fn capture_names(&self) -> &[String] {
        match self {
            Self::Template { names, .. } => names,
            _ => &[],
        }
    }

    /// Matches a request path (without the query string).
    pub fn matches(&self, req_path: &str) -> Option<Captures> {
        match self {
            Self::Exact(p) => (req_path == p).then(Captures::default),
            Self::Prefix(p) => req_path.starts_with(p.as_str()).then(Captures::default),
            Self::Template { segments, .. } => {
                // Ranges are u16: longer paths cannot match a template.
                if req_path.len() > u16::MAX as usize || !req_path.starts_with('/') {
                    return None;
                }
                let mut captures = Captures::default();
                let mut offset = 1;
                let mut parts = req_path[1..].split('/');
                for seg in segments {
                    let part = parts.next()?;
                    match seg {
                        Segment::Literal(lit) => {
                            if part != lit {
                                return None;
                            }
                        }
                        Segment::Capture => {
                            if part.is_empty() {
                                return None;
                            }
                            captures.push(offset..offset + part.len());
                        }
                    }
                    offset += part.len() + 1;
                }
                parts.next().is_none().then_some(captures)
            }
        }
    }
}

fn check_absolute(p: &str, path: &str) -> Result<(), ConfigError> {
    if p.starts_with('/') {
        Ok(())
    } else {
        Err(ConfigError::new(
            path,
            format!("path \"{p}\" must start with '/'"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_and_prefix() {
        let e = PathPattern::exact("/healthz", "p").unwrap();
        assert!(e.matches("/healthz").is_some());
        assert!(e.matches("/healthz/x").is_none());
        let p = PathPattern::prefix("/api/", "p").unwrap();
        assert!(p.matches("/api/v1").is_some());
        assert!(p.matches("/apix").is_none());
    }

    #[test]
    fn template_captures_segments() {
        let t = PathPattern::template("/goods/{id}/reviews/{rid}", "p").unwrap();
        assert_eq!(t.capture_names(), ["id", "rid"]);
        let path = "/goods/123/reviews/9";
        let c = t.matches(path).unwrap();
        assert_eq!(c.get(path, 0), Some("123"));
        assert_eq!(c.get(path, 1), Some("9"));
        assert_eq!(c.get(path, 2), None);
        assert!(t.matches("/goods/123/reviews").is_none());
        assert!(t.matches("/goods/123/reviews/9/x").is_none());
        assert!(t.matches("/goods//reviews/9").is_none());
        assert!(t.matches("/shoes/1/reviews/2").is_none());
    }

    #[test]
    fn template_errors_name_the_problem() {
        assert!(PathPattern::template("goods/{id}", "p").is_err());
        let e = PathPattern::template("/goods/x{id}", "routes[0].match.path").unwrap_err();
        assert_eq!(e.path, "routes[0].match.path");
        assert!(e.message.contains("whole segment"));
        assert!(PathPattern::template("/a/{id}/{id}", "p").is_err());
        assert!(PathPattern::template("/a/{}", "p").is_err());
    }
}
