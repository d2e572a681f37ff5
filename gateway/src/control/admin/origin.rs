//! The admin's `Origin` and `Host` rule: what keeps web pages out.
//!
//! Any web page can make a browser send a "simple" cross-site `POST` (a form,
//! or `fetch` with `mode: "no-cors"`) to `127.0.0.1:9901`; the page cannot
//! read the answer, but the reload or block has happened. Browsers send
//! `Origin` on every cross-site request that is not a `GET` or `HEAD` (Fetch
//! standard, "append a request `Origin` header"), so a mutation whose
//! `Origin` is not the admin's own is refused.
//!
//! DNS rebinding gets past that check: a page at `evil.example` re-points its
//! own name to `127.0.0.1`, and its requests are then same-origin to the
//! browser, with `Origin` and `Host` both `evil.example`. So `Host` must name
//! the admin itself: the local address the connection arrived on, a loopback
//! address, `localhost`, or a name in `admin.allowed_hosts`. An attacker
//! controls neither, since a browser puts the name it resolved in `Host`.
//!
//! Limits: a request without `Origin` is taken as not coming from a page
//! (curl, scripts, Prometheus); a request without `Host` passes the Host
//! check for the same reason (every browser sends it). Ports are not
//! compared against the listener's: a name that passes is ours on any port.

use std::net::IpAddr;

/// Checks `Host` (the raw header value, if any). `local` is the address the
/// connection arrived on; `allowed` are extra names, lowercased, without port.
pub fn check_host(
    host: Option<&str>,
    local: Option<IpAddr>,
    allowed: &[String],
) -> Result<(), String> {
    let Some(raw) = host else {
        return Ok(());
    };
    let refused = || {
        format!(
            "Host {raw:?} is not this admin's address, a loopback name or address, or one of \
             admin.allowed_hosts (a guard against DNS rebinding)"
        )
    };
    let (name, _port) = split_host_port(raw).ok_or_else(refused)?;
    let ok = match name.parse::<IpAddr>() {
        Ok(ip) => {
            let ip = ip.to_canonical();
            ip.is_loopback() || local.is_some_and(|l| l.to_canonical() == ip)
        }
        Err(_) => name == "localhost",
    };
    if ok || allowed.contains(&name) {
        Ok(())
    } else {
        Err(refused())
    }
}

/// Checks `Origin` against the admin's own origin, `http://` + `Host`
/// (`Host` must have passed [`check_host`]). No `Origin` passes.
pub fn check_origin(origin: Option<&str>, host: Option<&str>) -> Result<(), String> {
    let Some(origin) = origin else {
        return Ok(());
    };
    let own = host.and_then(split_host_port);
    let given = origin
        .trim()
        .strip_prefix("http://")
        .filter(|rest| !rest.contains('/'))
        .and_then(split_host_port);
    let same = match (given, own) {
        (Some((gn, gp)), Some((on, op))) => gn == on && gp.unwrap_or(80) == op.unwrap_or(80),
        _ => false,
    };
    if same {
        Ok(())
    } else {
        Err(format!(
            "cross-origin request refused: Origin {origin:?} is not this admin's origin ({})",
            host.map_or_else(|| "unknown: no Host".to_string(), |h| format!("http://{h}"))
        ))
    }
}

/// Splits `name[:port]` or `[v6][:port]` into the lowercased name (brackets
/// and a trailing dot removed) and the port. `None` if it is malformed.
fn split_host_port(raw: &str) -> Option<(String, Option<u16>)> {
    let raw = raw.trim();
    let (name, port) = if let Some(rest) = raw.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?),
        };
        (v6, port)
    } else {
        match raw.split_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (raw, None),
        }
    };
    let port = port.map(|p| p.parse::<u16>()).transpose().ok()?;
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    if name.is_empty() {
        return None;
    }
    Some((name, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCAL: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 5)));

    fn host_ok(host: &str) -> bool {
        check_host(Some(host), LOCAL, &["gw-1.internal".to_string()]).is_ok()
    }

    #[test]
    fn host_must_name_the_admin_loopback_or_an_allowed_name() {
        for ok in [
            "127.0.0.1:9901",
            "127.0.0.1",
            "127.3.4.5:9901",
            "[::1]:9901",
            "[::ffff:127.0.0.1]:9901",
            "localhost:9901",
            "LOCALHOST.",
            "10.0.0.5:9901",
            "gw-1.internal:9901",
            "GW-1.Internal",
        ] {
            assert!(host_ok(ok), "{ok} should pass");
        }
        for refused in [
            "evil.example",
            "evil.example:9901",
            "localhost.evil.example:9901",
            "10.0.0.6:9901",
            "gw-1.internal.evil.example",
            "[::1",
            "127.0.0.1:notaport",
            "",
        ] {
            let err = check_host(Some(refused), LOCAL, &["gw-1.internal".into()]).unwrap_err();
            assert!(err.contains("admin.allowed_hosts"), "{err}");
        }
    }

    #[test]
    fn no_host_passes_the_host_check() {
        assert!(check_host(None, None, &[]).is_ok());
    }

    #[test]
    fn origin_must_be_the_admins_own() {
        let host = Some("127.0.0.1:9901");
        assert!(check_origin(None, host).is_ok(), "curl sends no Origin");
        assert!(check_origin(Some("http://127.0.0.1:9901"), host).is_ok());
        assert!(check_origin(Some("http://localhost:80"), Some("LOCALHOST")).is_ok());
        for refused in [
            "http://evil.example",
            "http://evil.example:9901",
            "https://127.0.0.1:9901",
            "http://127.0.0.1:9902",
            "http://127.0.0.1",
            "http://127.0.0.1:9901/path",
            "null",
            "",
        ] {
            let err = check_origin(Some(refused), host).unwrap_err();
            assert!(err.starts_with("cross-origin request refused"), "{err}");
            assert!(err.contains("http://127.0.0.1:9901"), "{err}");
        }
        assert!(check_origin(Some("http://127.0.0.1:9901"), None).is_err());
    }
}
