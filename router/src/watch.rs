//! Config reload triggers: SIGHUP, and the config file's content changing.
//!
//! The file is re-read by path every second and compared by hash, so an editor's in-place save
//! and an atomic rename over the file are both seen, whatever the filesystem's notify support.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::signal::unix::{signal, SignalKind};
use xxhash_rust::xxh3::xxh3_64;

use crate::gateway::Gateway;
use crate::metrics::RouterMetrics;
use crate::server::reload;

/// Reloads the config on SIGHUP or when the file changes.
pub struct ConfigWatch {
    /// The router.
    pub gateway: Arc<Gateway>,
    /// Metrics.
    pub metrics: Arc<RouterMetrics>,
    /// The config file.
    pub path: PathBuf,
}

fn content_hash(path: &std::path::Path) -> Option<u64> {
    std::fs::read(path).ok().map(|b| xxh3_64(&b))
}

#[async_trait]
impl BackgroundService for ConfigWatch {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGHUP; reload by file change or /admin/reload");
                return;
            }
        };
        let mut seen = content_hash(&self.path);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = hup.recv() => {
                    tracing::info!("SIGHUP: reloading config");
                    seen = content_hash(&self.path);
                    let _ = reload(&self.gateway, &self.metrics, &self.path).await;
                }
                _ = tick.tick() => {
                    let now = content_hash(&self.path);
                    if now.is_some() && now != seen {
                        seen = now;
                        let _ = reload(&self.gateway, &self.metrics, &self.path).await;
                    }
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}
