//! Compiling the `admin` section into [`AdminAccess`], with the rules that
//! keep an admin from being served open to a network by accident.
//!
//! - A non-loopback `address` needs a write token, unless
//!   `insecure_no_token: true` says the open admin is meant (then
//!   [`insecure_warning`] is logged).
//! - A read token needs a write token (or mutations would stay open while
//!   reads are closed) and must differ from it (or it could mutate).

use std::net::SocketAddr;

use breakwater_plugins::bounds::in_range;
use breakwater_plugins::config_error::ConfigPath;
use breakwater_plugins::ConfigError;

use super::file::AdminFile;
use crate::config::admin_access::AdminAccess;

/// Most `max_stream_subscribers`: each is a task on the admin's one thread.
const MAX_STREAM_SUBSCRIBERS: usize = 1024;

/// `admin.<field>`.
fn at(field: &str) -> ConfigPath {
    ConfigPath::root().field("admin").field(field)
}

/// Validates `admin` into the live access rules. `env` looks up
/// environment variables.
pub fn compile_admin(
    admin: &AdminFile,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<AdminAccess, ConfigError> {
    let address = parse_address(&admin.address)?;
    let write_token = secret(&admin.token, &admin.token_env, "token", env)?;
    let read_token = secret(&admin.read_token, &admin.read_token_env, "read_token", env)?;
    let read_field = at(if admin.read_token.is_some() {
        "read_token"
    } else {
        "read_token_env"
    });
    match (&write_token, &read_token) {
        (None, Some(_)) => {
            return Err(read_field.error(
                "needs a write token (admin.token or admin.token_env): without one, \
                 mutations would stay open while reads need a token",
            ))
        }
        (Some(w), Some(r)) if w == r => {
            return Err(read_field.error(
                "must differ from the write token (the read token must not be able to mutate)",
            ))
        }
        _ => {}
    }
    if write_token.is_some() && admin.insecure_no_token {
        return Err(at("insecure_no_token").error("a token is set: remove one of the two"));
    }
    guarded_on(address, write_token.is_some(), admin.insecure_no_token)
        .map_err(|why| at("address").error(format!("{} {why}", admin.address)))?;
    in_range(
        admin.max_stream_subscribers,
        1..=MAX_STREAM_SUBSCRIBERS,
        at("max_stream_subscribers"),
    )?;
    let allowed_hosts = admin
        .allowed_hosts
        .iter()
        .enumerate()
        .map(|(i, h)| host_name(h, &at("allowed_hosts").index(i)))
        .collect::<Result<_, _>>()?;
    Ok(AdminAccess {
        write_token,
        read_token,
        allowed_hosts,
        max_stream_subscribers: admin.max_stream_subscribers,
    })
}

/// Whether an admin listening on `address` is guarded: by loopback, by a
/// write token, or left open on purpose (`insecure_no_token`).
fn guarded_on(address: SocketAddr, has_token: bool, insecure: bool) -> Result<(), &'static str> {
    if has_token || insecure || address.ip().to_canonical().is_loopback() {
        return Ok(());
    }
    Err(
        "is reachable from other hosts but no admin.token (or admin.token_env) is set: \
         set one, bind a loopback address, or set admin.insecure_no_token: true to serve \
         it open on purpose",
    )
}

/// A reload's check of the same rule against the address the admin really
/// listens on (`bound`): `admin.address` changes only with a restart, so a
/// reload that moves the address to loopback and drops the token would
/// otherwise leave the live, network-facing admin open.
pub fn check_live_address(
    bound: SocketAddr,
    admin: &AdminFile,
    access: &AdminAccess,
) -> Result<(), ConfigError> {
    guarded_on(bound, access.write_token.is_some(), admin.insecure_no_token).map_err(|why| {
        at("token").error(format!(
            "the admin still listens on {bound} (a new admin.address needs a restart), \
             which {why}"
        ))
    })
}

/// The warning to log when the admin is served open to a network on
/// purpose (`insecure_no_token`), if it is.
pub fn insecure_warning(admin: &AdminFile) -> Option<String> {
    let address: SocketAddr = admin.address.parse().ok()?;
    (admin.insecure_no_token && !address.ip().to_canonical().is_loopback()).then(|| {
        format!(
            "the admin on {} has no token (admin.insecure_no_token): anyone who reaches it \
             can reload the config, block keys and force breakers",
            admin.address
        )
    })
}

fn parse_address(raw: &str) -> Result<SocketAddr, ConfigError> {
    raw.parse().map_err(|_| {
        at("address").error(format!(
            "\"{raw}\" is not an address like 127.0.0.1:9901 or [::1]:9901"
        ))
    })
}

/// A token given inline (`field`) or by environment variable (`field_env`).
fn secret(
    inline: &Option<String>,
    var: &Option<String>,
    field: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<String>, ConfigError> {
    match (inline, var) {
        (Some(_), Some(_)) => Err(ConfigPath::root()
            .field("admin")
            .error(format!("set either `{field}` or `{field}_env`, not both"))),
        (Some(t), None) if t.trim().is_empty() => Err(at(field).error("must not be empty")),
        (Some(t), None) => Ok(Some(t.trim().to_string())),
        (None, Some(var)) => match env(var) {
            Some(t) if !t.trim().is_empty() => Ok(Some(t.trim().to_string())),
            _ => Err(at(&format!("{field}_env"))
                .error(format!("environment variable {var} is not set or empty"))),
        },
        (None, None) => Ok(None),
    }
}

/// An `allowed_hosts` entry: a DNS name or an IP address, without scheme or
/// port, lowercased and without a trailing dot.
fn host_name(raw: &str, path: &ConfigPath) -> Result<String, ConfigError> {
    let name = raw.trim().trim_end_matches('.').to_ascii_lowercase();
    let name = name
        .strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .map(str::to_string)
        .unwrap_or(name);
    let is_ip = name.parse::<std::net::IpAddr>().is_ok();
    let is_dns = !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    if is_ip || is_dns {
        Ok(name)
    } else {
        Err(path.error(format!(
            "\"{raw}\" is not a host name: write it without scheme or port, like gw-1.internal"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admin(yaml: &str) -> AdminFile {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn compile(yaml: &str) -> Result<AdminAccess, ConfigError> {
        let env = |name: &str| (name == "BW_W").then(|| "from-env".to_string());
        compile_admin(&admin(yaml), &env)
    }

    #[test]
    fn loopback_without_a_token_is_open() {
        for address in ["127.0.0.1:9901", "[::1]:9901", "127.0.0.2:1"] {
            let a = compile(&format!("address: \"{address}\"")).unwrap();
            assert!(!a.tokens_required());
            assert_eq!(a.max_stream_subscribers, 16);
        }
    }

    #[test]
    fn a_reachable_admin_needs_a_token_or_the_opt_out() {
        for address in ["0.0.0.0:9901", "10.0.0.5:9901", "[::]:9901"] {
            let err = compile(&format!("address: \"{address}\"")).unwrap_err();
            assert_eq!(err.path, "admin.address");
            assert!(err.message.contains("admin.token"), "{err}");
            assert!(err.message.contains("admin.insecure_no_token"), "{err}");
            let tokened = compile(&format!("address: \"{address}\"\ntoken: t")).unwrap();
            assert!(tokened.tokens_required());
            let open = format!("address: \"{address}\"\ninsecure_no_token: true");
            assert!(compile(&open).is_ok());
            assert!(insecure_warning(&admin(&open)).is_some());
        }
        assert!(insecure_warning(&admin("insecure_no_token: true")).is_none());
        let both = compile("address: 0.0.0.0:1\ntoken: t\ninsecure_no_token: true").unwrap_err();
        assert_eq!(both.path, "admin.insecure_no_token");
    }

    #[test]
    fn the_read_token_needs_a_different_write_token() {
        let err = compile("read_token: r").unwrap_err();
        assert_eq!(err.path, "admin.read_token");
        let err = compile("token: same\nread_token: same").unwrap_err();
        assert_eq!(err.path, "admin.read_token");
        let err = compile("token_env: BW_W\nread_token: from-env").unwrap_err();
        assert_eq!(err.path, "admin.read_token");
        let a = compile("token_env: BW_W\nread_token: r").unwrap();
        assert_eq!(a.write_token.as_deref(), Some("from-env"));
        assert_eq!(a.read_token.as_deref(), Some("r"));
        let err = compile("token: w\nread_token_env: BW_NONE").unwrap_err();
        assert_eq!(err.path, "admin.read_token_env");
        let err = compile("token: w\nread_token: r\nread_token_env: BW_W").unwrap_err();
        assert_eq!(err.path, "admin");
        assert_eq!(compile("token: \" \"").unwrap_err().path, "admin.token");
    }

    #[test]
    fn stream_cap_and_allowed_hosts_are_checked() {
        let err = compile("max_stream_subscribers: 0").unwrap_err();
        assert_eq!(err.path, "admin.max_stream_subscribers");
        assert!(compile("max_stream_subscribers: 1025").is_err());
        let a = compile("allowed_hosts: [GW-1.Internal., \"[::1]\", 10.0.0.5]").unwrap();
        assert_eq!(a.allowed_hosts, ["gw-1.internal", "::1", "10.0.0.5"]);
        for bad in ["http://gw", "gw:9901", "*.internal", ""] {
            let err = compile(&format!("allowed_hosts: [\"ok\", \"{bad}\"]")).unwrap_err();
            assert_eq!(err.path, "admin.allowed_hosts[1]", "{bad}");
        }
    }
}
