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

/// What a reload did.
#[derive(Debug)]
pub enum ReloadOutcome {
    /// The file's config is in effect.
    Applied,
    /// The file is invalid (every problem is listed); the running config stays.
    Rejected(config::ConfigError),
    /// The config is valid but could not be put in place (a built-in shard would not open, a
    /// hint directory is held by another process); the running config stays.
    Failed(String),
}

impl ReloadOutcome {
    /// The label of `vecgate_config_reloads_total{result}`.
    pub fn label(&self) -> &'static str {
        match self {
            ReloadOutcome::Applied => "ok",
            ReloadOutcome::Rejected(_) => "invalid",
            ReloadOutcome::Failed(_) => "failed",
        }
    }
}

/// Loads, validates and swaps in a config file; the running config stays on any problem.
pub async fn reload(gateway: &Arc<Gateway>, metrics: &RouterMetrics, path: &Path) -> ReloadOutcome {
    let outcome = match config::load(path) {
        Err(e) => ReloadOutcome::Rejected(e),
        Ok(config) => {
            let gw = gateway.clone();
            match tokio::task::spawn_blocking(move || gw.build(config)).await {
                Ok(Ok(topology)) => {
                    gateway.swap(topology);
                    ReloadOutcome::Applied
                }
                Ok(Err(e)) => ReloadOutcome::Failed(format!("{}: {e}", path.display())),
                Err(e) => ReloadOutcome::Failed(format!("reload task failed: {e}")),
            }
        }
    };
    metrics.reloads.with_label_values(&[outcome.label()]).inc();
    match &outcome {
        ReloadOutcome::Applied => {
            tracing::info!(file = %path.display(), "config reloaded");
            tokio::spawn(crate::cache::warm::warm(gateway.clone(), "reload"));
        }
        ReloadOutcome::Rejected(e) => {
            tracing::error!(error = %e, "config rejected; the running config stays")
        }
        ReloadOutcome::Failed(e) => {
            tracing::error!(error = %e, "config could not be applied; the running config stays")
        }
    }
    outcome
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
