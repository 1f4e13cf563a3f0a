//! The router's background work: active health checks and hint replay every second, and a
//! checkpoint (snapshot) of built-in shards every `server.snapshot_interval_s`. The final
//! snapshot at shutdown is `main`'s, once the listeners have drained.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::join_all;
use http::Method;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::gateway::Gateway;
use crate::upstream::client;

/// Runs the background work until `shutdown` turns true.
pub async fn run(gateway: Arc<Gateway>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut since_checkpoint = 0u64;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        probe_replicas(&gateway).await;
        replay_hints(&gateway).await;
        since_checkpoint += 1;
        let every = gateway.topology().config.server.snapshot_interval_s;
        if every > 0 && since_checkpoint >= every {
            checkpoint(&gateway).await;
            since_checkpoint = 0;
        }
    }
}

/// Asks every known replica's `/readyz` (half a second each, concurrently) and records
/// whether it answered 200.
async fn probe_replicas(gateway: &Gateway) {
    let deadline = Instant::now() + Duration::from_millis(500);
    let states = gateway.live.replica_states();
    let http = client();
    let probes = states
        .iter()
        .map(|r| http.call(&r.url, &Method::GET, "/readyz", Bytes::new(), deadline));
    for (r, result) in states.iter().zip(join_all(probes).await) {
        r.record_probe(matches!(result, Ok(a) if a.status == 200));
    }
}

/// Replays the writes each healthy lagging replica missed, oldest first, until one fails
/// (it is retried on the next round) or the replica has caught up.
async fn replay_hints(gateway: &Gateway) {
    for r in gateway.live.replica_states() {
        let Some(log) = r.hints() else { continue };
        if !r.healthy() || !log.lagging() {
            continue;
        }
        while let Some(hint) = log.head() {
            let deadline = Instant::now() + Duration::from_secs(5);
            let method = Method::from_bytes(hint.method.as_bytes()).unwrap_or(Method::PUT);
            let result = client()
                .call(
                    &r.url,
                    &method,
                    &hint.path,
                    Bytes::from(hint.body),
                    deadline,
                )
                .await;
            match result {
                Ok(a) if a.status < 500 => {
                    if a.status != 200 {
                        gateway
                            .metrics
                            .hint_failures
                            .with_label_values(&[&r.url, "rejected"])
                            .inc();
                        tracing::warn!(url = %r.url, status = a.status, path = %hint.path, "replica rejected a replayed write");
                    }
                    if let Err(e) = log.pop() {
                        gateway.hint_disk_failure(&r.url, &e);
                        break;
                    }
                    gateway
                        .metrics
                        .hints_replayed
                        .with_label_values(&[&r.url])
                        .inc();
                }
                _ => break,
            }
        }
        gateway
            .metrics
            .hints_pending
            .with_label_values(&[&r.url])
            .set(log.pending() as i64);
        if !log.lagging() {
            tracing::info!(url = %r.url, "replica caught up; it serves reads again");
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
