//! Who may use the admin: the compiled `admin` tokens and what a bearer
//! token grants.
//!
//! Two tokens, as Prometheus and Grafana split scrape and admin credentials:
//! the write token may do everything; the read token may read (every `GET`)
//! and never mutate. Without any token every request is granted (the
//! listener is then loopback unless `insecure_no_token` says otherwise, and
//! `control::admin::origin` keeps browsers out). Once a token is set, every request
//! but `GET /healthz` needs one.

/// The `admin` section, compiled (`config::admin`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminAccess {
    /// May read and mutate. `None`: no token is configured.
    pub write_token: Option<String>,
    /// May read only. Never set without `write_token` (refused by the config).
    pub read_token: Option<String>,
    /// Extra `Host` names, lowercased, without port or trailing dot.
    pub allowed_hosts: Vec<String>,
    /// Most concurrent `GET /hotkeys/stream` subscribers.
    pub max_stream_subscribers: usize,
}

impl Default for AdminAccess {
    fn default() -> Self {
        Self {
            write_token: None,
            read_token: None,
            allowed_hosts: Vec::new(),
            max_stream_subscribers: 16,
        }
    }
}

/// What a request's credentials allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Grant {
    /// No token, or a wrong one.
    Nothing,
    /// The read token.
    Read,
    /// The write token, or any request when no token is configured.
    Write,
}

impl AdminAccess {
    /// Whether requests need a token at all.
    pub fn tokens_required(&self) -> bool {
        self.write_token.is_some()
    }

    /// What `authorization` (the raw header value, if any) grants.
    pub fn grant(&self, authorization: Option<&str>) -> Grant {
        let Some(write) = self.write_token.as_deref() else {
            return Grant::Write;
        };
        let Some(given) = authorization.and_then(bearer) else {
            return Grant::Nothing;
        };
        // Both comparisons always run, so timing does not tell which token
        // a guess came close to.
        let is_write = constant_time_eq(given.as_bytes(), write.as_bytes());
        let is_read = self
            .read_token
            .as_deref()
            .is_some_and(|read| constant_time_eq(given.as_bytes(), read.as_bytes()));
        if is_write {
            Grant::Write
        } else if is_read {
            Grant::Read
        } else {
            Grant::Nothing
        }
    }
}

/// The credentials of `Authorization: Bearer <token>` (the scheme is
/// case-insensitive, RFC 9110 section 11.1).
fn bearer(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Compares in time independent of where the inputs first differ (the
/// length still shows).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(write: Option<&str>, read: Option<&str>) -> AdminAccess {
        AdminAccess {
            write_token: write.map(str::to_string),
            read_token: read.map(str::to_string),
            ..AdminAccess::default()
        }
    }

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
    }

    #[test]
    fn without_tokens_everything_is_granted() {
        assert_eq!(access(None, None).grant(None), Grant::Write);
        assert_eq!(access(None, None).grant(Some("Bearer x")), Grant::Write);
    }

    #[test]
    fn each_token_grants_its_own_level_only() {
        let a = access(Some("w-token"), Some("r-token"));
        assert_eq!(a.grant(Some("Bearer w-token")), Grant::Write);
        assert_eq!(a.grant(Some("bearer r-token")), Grant::Read);
        assert_eq!(a.grant(Some("Bearer r-token2")), Grant::Nothing);
        assert_eq!(a.grant(Some("Basic dzp0b2tlbg==")), Grant::Nothing);
        assert_eq!(a.grant(Some("Bearer ")), Grant::Nothing);
        assert_eq!(a.grant(None), Grant::Nothing);
        let write_only = access(Some("w-token"), None);
        assert_eq!(write_only.grant(Some("Bearer r-token")), Grant::Nothing);
    }
}
