//! Log setup: `tracing` with text or JSON output. Pingora's own `log` records
//! are bridged into the same subscriber.

use tracing_subscriber::EnvFilter;

use crate::config::file::{LogFormat, LoggingFile};

/// Installs the global subscriber. `RUST_LOG`, when set, overrides `level`.
pub fn init(cfg: &LoggingFile) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&cfg.level));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(true)
        .with_ansi(ansi);
    let result = match cfg.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
    if let Err(e) = result {
        eprintln!("breakwater: logging already initialised: {e}");
    }
}
