//! A listener's TLS settings, loaded from its certificate and key files.
//!
//! Used twice: when the config compiles (a missing or unreadable file is a
//! config error, before anything binds) and when the server binds the
//! listener.

use pingora::listeners::tls::TlsSettings;

use super::file::ListenerTlsFile;

/// TLS settings for a listener: its certificate and key (rustls), with ALPN
/// offering HTTP/2 and HTTP/1.1. The error says which file could not be used.
pub fn tls_settings(tls: &ListenerTlsFile) -> Result<TlsSettings, String> {
    for (what, path) in [("certificate", &tls.cert), ("key", &tls.key)] {
        std::fs::metadata(path).map_err(|e| format!("cannot read the {what} {path}: {e}"))?;
    }
    let mut settings = TlsSettings::intermediate(&tls.cert, &tls.key)
        .map_err(|e| format!("cannot load {} and {}: {e}", tls.cert, tls.key))?;
    settings.enable_h2();
    Ok(settings)
}
