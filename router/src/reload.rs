//! Config reload: the reload itself (load, validate, build beside the running topology, swap)
//! and its triggers, SIGHUP and the config file's content changing.
//!
//! The file is re-read by path every second and compared by hash, so an editor's in-place save
//! and an atomic rename over the file are both seen, whatever the filesystem's notify support.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;
use xxhash_rust::xxh3::xxh3_64;

use crate::config;
use crate::gateway::Gateway;
use crate::metrics::RouterMetrics;

/// Loads, validates and swaps in a config file; the running config stays on any problem.
pub async fn reload(
    gateway: &Arc<Gateway>,
    metrics: &RouterMetrics,
    path: &Path,
) -> Result<(), String> {
    let loaded = config::load(path).map_err(|e| e.to_string());
    let result = match loaded {
        Ok(config) => {
            let gw = gateway.clone();
            match tokio::task::spawn_blocking(move || gw.build(config)).await {
                Ok(Ok(topology)) => {
                    gateway.swap(topology);
                    Ok(())
                }
                Ok(Err(e)) => Err(format!("{}: {e}", path.display())),
                Err(e) => Err(format!("reload task failed: {e}")),
            }
        }
        Err(e) => Err(e),
    };
    match &result {
        Ok(()) => {
            metrics.reloads.with_label_values(&["ok"]).inc();
            tracing::info!(file = %path.display(), "config reloaded");
        }
        Err(e) => {
            metrics.reloads.with_label_values(&["invalid"]).inc();
            tracing::error!(error = %e, "config rejected; the running config stays");
        }
    }
    result
}

fn content_hash(path: &Path) -> Option<u64> {
    std::fs::read(path).ok().map(|b| xxh3_64(&b))
}

/// Reloads the config on SIGHUP or when the file at `path` changes, until `shutdown`.
pub async fn watch(
    gateway: Arc<Gateway>,
    metrics: Arc<RouterMetrics>,
    path: PathBuf,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGHUP; reload by file change or /admin/reload");
            return;
        }
    };
    let mut seen = content_hash(&path);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading config");
                seen = content_hash(&path);
                let _ = reload(&gateway, &metrics, &path).await;
            }
            _ = tick.tick() => {
                let now = content_hash(&path);
                if now.is_some() && now != seen {
                    seen = now;
                    let _ = reload(&gateway, &metrics, &path).await;
                }
            }
            _ = shutdown.changed() => return,
        }
    }
}
