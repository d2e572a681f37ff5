//! Reload triggers that run in the background: file changes and SIGHUP.
//!
//! The file's *directory* is watched as well as the file, because editors
//! save by writing a new file and renaming it over the old one, and
//! Kubernetes ConfigMaps swap a `..data` symlink: neither touches the
//! original inode. Events are debounced, and a reload of unchanged text is a
//! cheap no-op (hash compare), so noisy events cost little.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

use crate::state::GatewayState;

/// Quiet time after the last file event before reloading.
const DEBOUNCE: Duration = Duration::from_millis(150);

pub struct ReloadTriggers {
    pub state: Arc<GatewayState>,
}

fn relevant(event_path: &Path, file_name: Option<&std::ffi::OsStr>) -> bool {
    let name = event_path.file_name();
    name == file_name
        || name
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(".."))
}

fn start_watcher(path: &Path, tx: mpsc::Sender<()>) -> notify::Result<RecommendedWatcher> {
    let file_name = path.file_name().map(|n| n.to_os_string());
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(event) = res {
            if event.kind.is_access() {
                return;
            }
            if event
                .paths
                .iter()
                .any(|p| relevant(p, file_name.as_deref()))
            {
                // A full channel already holds a pending reload.
                let _ = tx.try_send(());
            }
        }
    })?;
    let dir: PathBuf = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    // Also the file itself (following a symlink to its target).
    if let Err(e) = watcher.watch(path, RecursiveMode::NonRecursive) {
        tracing::debug!(error = %e, "cannot watch the config file itself; the directory watch remains");
    }
    Ok(watcher)
}

impl ReloadTriggers {
    async fn reload(&self, trigger: &'static str) {
        let state = self.state.clone();
        if let Err(e) =
            tokio::task::spawn_blocking(move || state.reloader.reload(&state, trigger)).await
        {
            tracing::error!(error = %e, "reload task failed");
        }
    }
}

#[async_trait]
impl BackgroundService for ReloadTriggers {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let (tx, mut rx) = mpsc::channel(1);
        let watch = self.state.snapshot().source.server.watch_config;
        let _watcher = match watch.then(|| start_watcher(&self.state.config_path, tx)) {
            None => None,
            Some(Ok(w)) => Some(w),
            Some(Err(e)) => {
                tracing::error!(error = %e, path = %self.state.config_path.display(),
                    "cannot watch the config file; reload with SIGHUP or POST /reload");
                None
            }
        };
        let mut hangup = match signal(SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::error!(error = %e, "cannot install the SIGHUP handler");
                None
            }
        };
        self.state.ready.store(true, Ordering::Release);
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                Some(()) = rx.recv() => {
                    // Debounce: wait until events stop for a moment.
                    while let Ok(Some(())) = tokio::time::timeout(DEBOUNCE, rx.recv()).await {}
                    self.reload("file").await;
                }
                Some(()) = async { match hangup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => {
                    self.reload("sighup").await;
                }
            }
        }
    }
}
