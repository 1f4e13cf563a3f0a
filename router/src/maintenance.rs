//! The router's background work: active health checks and hint replay every second, and a
//! checkpoint (snapshot) of built-in shards every minute. The final snapshot at shutdown is
//! `main`'s, once the listeners have drained.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::gateway::Gateway;

/// Seconds between checkpoints of built-in shards.
const CHECKPOINT_EVERY_S: u64 = 60;

/// Runs the background work until `shutdown` turns true.
pub async fn run(gateway: Arc<Gateway>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut seconds = 0u64;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        gateway.probe_replicas().await;
        gateway.replay_hints().await;
        seconds += 1;
        if seconds.is_multiple_of(CHECKPOINT_EVERY_S) {
            checkpoint(&gateway).await;
        }
    }
}

/// Snapshots every built-in shard's changed collections, so that recovery replays little.
async fn checkpoint(gateway: &Gateway) {
    for shard in gateway.live.builtin_shards() {
        match tokio::task::spawn_blocking(move || shard.snapshot()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "checkpoint of a built-in shard failed"),
            Err(e) => tracing::error!(error = %e, "checkpoint task failed"),
        }
    }
}
