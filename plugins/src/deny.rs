//! `deny`: a static list of IPs, CIDRs and users that are refused outright.
//!
//! The simplest real policy, and the proof of the plugin seam. Exact IPs are a
//! hash-set probe; CIDRs are scanned linearly, which is fine for the tens of
//! ranges an operator writes by hand (a large feed of ranges belongs in a
//! prefix trie, which this is not).

use std::collections::HashSet;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::{ConfigError, Decision, Exchange, Policy, Rejection, RejectionKind, RequestView};

/// `deny:` in a route's `policies`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DenyConfig {
    /// Optional unique name; defaults to `<route>.deny[<index>]`.
    #[serde(default)]
    pub name: Option<String>,
    /// IP addresses or CIDR ranges (`203.0.113.7`, `10.0.0.0/8`, `2001:db8::/32`).
    #[serde(default)]
    pub ips: Vec<String>,
    /// User ids (the `user` key).
    #[serde(default)]
    pub users: Vec<String>,
    /// Status to answer with. Default 403.
    #[serde(default)]
    pub status: Option<u16>,
}

/// The compiled `deny` policy.
#[derive(Debug)]
pub struct Deny {
    name: String,
    exact_ips: HashSet<IpAddr>,
    ranges: Vec<IpNet>,
    users: HashSet<Box<str>>,
    status: u16,
}

impl DenyConfig {
    /// Validates the config; `path` is where it sits in the file, for errors.
    pub fn compile(&self, name: String, path: &str) -> Result<Deny, ConfigError> {
        let mut exact_ips = HashSet::new();
        let mut ranges = Vec::new();
        for (i, raw) in self.ips.iter().enumerate() {
            if let Ok(ip) = raw.parse::<IpAddr>() {
                exact_ips.insert(ip);
            } else if let Ok(net) = raw.parse::<IpNet>() {
                ranges.push(net.trunc());
            } else {
                return Err(ConfigError::new(
                    format!("{path}.ips[{i}]"),
                    format!("\"{raw}\" is not an IP address or CIDR range"),
                ));
            }
        }
        if self.ips.is_empty() && self.users.is_empty() {
            return Err(ConfigError::new(
                path,
                "deny needs at least one entry in `ips` or `users`",
            ));
        }
        let status = self.status.unwrap_or(403);
        if !(400..=599).contains(&status) {
            return Err(ConfigError::new(
                format!("{path}.status"),
                format!("must be an HTTP error status (400-599), got {status}"),
            ));
        }
        Ok(Deny {
            name,
            exact_ips,
            ranges,
            users: self.users.iter().map(|u| u.as_str().into()).collect(),
            status,
        })
    }
}

impl Deny {
    fn denies_ip(&self, ip: IpAddr) -> bool {
        let ip = crate::keys::canonical_ip(ip);
        self.exact_ips.contains(&ip) || self.ranges.iter().any(|r| r.contains(&ip))
    }
}

impl Policy for Deny {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "deny"
    }

    fn on_request(&self, req: &RequestView<'_>, _exchange: &mut Exchange) -> Decision {
        let reason = if self.denies_ip(req.keys.client) {
            "client address is denied"
        } else if req
            .keys
            .user
            .as_deref()
            .is_some_and(|u| self.users.contains(u))
        {
            "user is denied"
        } else {
            return Decision::Continue;
        };
        Decision::Reject(Rejection::new(
            RejectionKind::Denied,
            self.status,
            &self.name,
            reason,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{keys, Env};

    fn decide(policy: &Deny, ip: &str, user: Option<&str>) -> Decision {
        Env::new().decide(policy, &keys(ip, user)).0
    }

    fn policy() -> Deny {
        DenyConfig {
            ips: vec![
                "203.0.113.7".into(),
                "10.1.0.0/16".into(),
                "2001:db8::/32".into(),
            ],
            users: vec!["mallory".into()],
            ..Default::default()
        }
        .compile("r.deny[0]".into(), "routes[0].policies[0].deny")
        .unwrap()
    }

    #[test]
    fn denies_exact_ip_cidr_mapped_v6_and_user() {
        let p = policy();
        for (ip, user) in [
            ("203.0.113.7", None),
            ("10.1.200.3", None),
            ("::ffff:10.1.0.9", None),
            ("2001:db8::1", None),
            ("198.51.100.1", Some("mallory")),
        ] {
            match decide(&p, ip, user) {
                Decision::Reject(r) => {
                    assert_eq!(r.status, 403);
                    assert_eq!(r.policy, "r.deny[0]");
                    assert_eq!(r.kind, "denied");
                }
                other => panic!("{ip} {user:?} was not denied: {other:?}"),
            }
        }
    }

    #[test]
    fn admits_everyone_else() {
        let p = policy();
        assert!(matches!(
            decide(&p, "10.2.0.1", Some("alice")),
            Decision::Continue
        ));
        assert!(matches!(
            decide(&p, "203.0.113.8", None),
            Decision::Continue
        ));
    }

    #[test]
    fn bad_entries_name_their_path() {
        let cfg = DenyConfig {
            ips: vec!["10.0.0.0/8".into(), "10.0.0.300".into()],
            ..Default::default()
        };
        let err = cfg
            .compile("n".into(), "routes[2].policies[0].deny")
            .unwrap_err();
        assert_eq!(err.path, "routes[2].policies[0].deny.ips[1]");
        assert!(err.message.contains("10.0.0.300"));

        let err = DenyConfig::default().compile("n".into(), "p").unwrap_err();
        assert!(err.message.contains("at least one"));

        let cfg = DenyConfig {
            users: vec!["x".into()],
            status: Some(200),
            ..Default::default()
        };
        assert_eq!(cfg.compile("n".into(), "p").unwrap_err().path, "p.status");
    }
}
