//! The router's background work: every second, active health checks (which also notice a
//! replica that came back with another data directory), hint replay, and joins for joining
//! replicas; an anti-entropy round every `routing.repair_interval_s`; a checkpoint (snapshot)
//! of built-in shards every `server.snapshot_interval_s`. The final snapshot at shutdown is
//! `main`'s, once the listeners have drained.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::join_all;
use http::Method;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::gateway::Gateway;
use crate::replica::ReplicaState;
use crate::upstream::client;

/// Runs the background work until `shutdown` turns true.
pub async fn run(gateway: Arc<Gateway>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let (mut since_checkpoint, mut since_repair) = (0u64, 0u64);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        probe_replicas(&gateway).await;
        crate::coordination::follow(&gateway).await;
        crate::repair::check_suspects(&gateway).await;
        let warm_after = gateway.clone();
        crate::repair::start_joins(&gateway, move || {
            tokio::spawn(crate::cache::warm::warm(warm_after.clone(), "join"));
        });
        replay_hints(&gateway).await;
        crate::reshard::start(&gateway);
        since_repair += 1;
        let every = gateway.topology().config.routing.repair_interval_s;
        if every > 0 && since_repair >= every {
            let gateway = gateway.clone();
            tokio::spawn(async move { crate::repair::repair(&gateway, "schedule").await });
            since_repair = 0;
        }
        since_checkpoint += 1;
        let every = gateway.topology().config.server.snapshot_interval_s;
        if every > 0 && since_checkpoint >= every {
            checkpoint(&gateway).await;
            since_checkpoint = 0;
        }
    }
}

/// `/readyz`'s answer: the identity of the replica's data directory.
#[derive(serde::Deserialize)]
struct Ready {
    identity: String,
}

/// Asks every known replica's `/readyz` (half a second each, concurrently) and records
/// whether it answered 200; a replica whose data directory changed identity lost its data,
/// and joins again.
async fn probe_replicas(gateway: &Gateway) {
    let deadline = Instant::now() + Duration::from_millis(500);
    let states = gateway.live.replica_states();
    let http = client();
    let probes = states
        .iter()
        .map(|r| http.call(&r.url, &Method::GET, "/readyz", Bytes::new(), deadline));
    for (r, result) in states.iter().zip(join_all(probes).await) {
        let ready = matches!(&result, Ok(a) if a.status == 200);
        r.record_probe(ready);
        let Ok(answer) = result else { continue };
        let Ok(Ready { identity }) = serde_json::from_slice::<Ready>(&answer.body) else {
            continue;
        };
        if ready && r.record_identity(&identity) && r.start_joining() {
            tracing::warn!(url = %r.url, %identity, "replica came back with a new data directory; it is filled from a peer before it serves reads");
        }
    }
}

/// Replays the writes each healthy lagging replica missed (see [`replay`]); a joining
/// replica's are its join's to replay.
async fn replay_hints(gateway: &Gateway) {
    for r in gateway.live.replica_states() {
        if r.healthy() && r.lagging() && !r.joining() {
            replay(gateway, &r).await;
        }
    }
}

/// Replays the writes `r` missed, oldest first, until one fails (it is retried on the next
/// round) or the replica has caught up; returns whether it has.
pub(crate) async fn replay(gateway: &Gateway, r: &ReplicaState) -> bool {
    let Some(log) = r.hints() else { return true };
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
    let caught_up = !log.lagging();
    if caught_up && !r.joining() {
        tracing::info!(url = %r.url, "replica caught up; it serves reads again");
    }
    caught_up
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
