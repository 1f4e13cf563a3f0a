//! Resharding: after the shard set changes, the points whose owner changed move to it, online.
//!
//! The workflow is Vitess's (copy, then switch writes, then clean up), staged in the phases of
//! [`Phase`]: while *preparing*, every serving shard gets every collection (configuration and
//! payload indexes) and writes still go where the previous set placed each point; while
//! *copying*, writes go to both of a point's shards and each shard's misplaced points are
//! copied to their owner (with their versions, so a copy never replaces a newer write) and
//! then forgotten where they were (only up to the version copied); while *settling*, only
//! deletes still reach the previous owner, and after the longest request could still be in
//! flight one more pass clears the copies writes left behind. Then `placement.json` records
//! the new set and the topology drops the drained shards.
//!
//! Throughout, searches and scrolls read every shard, serving and draining, and keep one copy
//! of each point (the highest version); get-by-id asks both of a point's shards; counts are of
//! distinct ids. A point is always somewhere: it is forgotten only after its owner has it. A
//! router killed in the middle resumes from `placement.json` when it starts again; every step
//! can be repeated.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::join_all;
use http::Method;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use shardd::api::replication::{
    Copied, EvictRequest, ExportRequest, PointVersion, VersionsRequest,
};
use shardd::engine::point::PointId;
use tokio::time::Instant;

use crate::coordination::{Etcd, SharedMove};
use crate::gateway::{encode_segment, Gateway, Listed};
use crate::repair::{accepted, result, BUCKETS};
use crate::topology::{write_placement, MoveProgress, Phase, ShardKind, ShardRoute, Topology};
use crate::upstream::{call_builtin, client, Answer, CallError};

/// Buckets listed per call.
const BUCKETS_PER_CALL: usize = 8;
/// Points copied per call: the owner takes each batch under its collection's write lock, so
/// a smaller batch keeps searches there from waiting long (p99 during a move, BENCHMARKS.md).
const POINTS_PER_COPY: usize = 64;
/// Bucket chunks worked on at once.
const CHUNKS_IN_FLIGHT: usize = 2;
/// Deadline of one call.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long other routers may take to see a phase recorded in etcd (they look every second).
const FOLLOW_DELAY: Duration = Duration::from_secs(2);

async fn call_one(
    shard: &ShardRoute,
    url: Option<&str>,
    method: &Method,
    path: &str,
    body: Bytes,
) -> Result<Answer, String> {
    let deadline = Instant::now() + CALL_TIMEOUT;
    let result = match (&shard.kind, url) {
        (ShardKind::Builtin(s), _) => {
            call_builtin(s.clone(), method.clone(), path.to_string(), body, deadline).await
        }
        (ShardKind::Remote(_), Some(url)) => client().call(url, method, path, body, deadline).await,
        (ShardKind::Remote(_), None) => Err(CallError::Transport("no replica is up".into())),
    };
    accepted(
        result,
        &format!("shard {} ({})", shard.name, url.unwrap_or("built-in")),
        method,
        path,
    )
}

/// Reads from replica `url` of `shard` (`None`: the built-in one in process).
async fn read<T: DeserializeOwned>(
    shard: &ShardRoute,
    url: Option<&str>,
    method: Method,
    path: &str,
    body: Vec<u8>,
) -> Result<T, String> {
    result(&call_one(shard, url, &method, path, body.into()).await?)
}

/// Reads from one serving replica of `shard` (the built-in one in process).
async fn read_any<T: DeserializeOwned>(
    shard: &ShardRoute,
    method: Method,
    path: &str,
    body: Vec<u8>,
) -> Result<T, String> {
    let url = match &shard.kind {
        ShardKind::Builtin(_) => None,
        ShardKind::Remote(rs) => rs
            .iter()
            .find(|r| r.state.available())
            .map(|r| r.state.url.as_str()),
    };
    read(shard, url, method, path, body).await
}

/// The replicas of `shard` a move reads from: every serving one (a move cut short may have
/// evicted a point from one replica and not yet from the other), or the built-in shard.
fn sources(shard: &ShardRoute) -> Vec<Option<&str>> {
    match &shard.kind {
        ShardKind::Builtin(_) => vec![None],
        ShardKind::Remote(rs) => rs
            .iter()
            .filter(|r| r.state.available() && !r.state.joining())
            .map(|r| Some(r.state.url.as_str()))
            .collect(),
    }
}

/// Writes to every replica of `shard` that is not joining (a joining one gets the shard's
/// data from its peer); all of them must take it.
async fn write_all(
    shard: &ShardRoute,
    method: Method,
    path: &str,
    body: Vec<u8>,
) -> Result<(), String> {
    let body = Bytes::from(body);
    match &shard.kind {
        ShardKind::Builtin(_) => call_one(shard, None, &method, path, body).await.map(drop),
        ShardKind::Remote(rs) => {
            let calls = rs
                .iter()
                .filter(|r| !r.state.joining())
                .map(|r| call_one(shard, Some(&r.state.url), &method, path, body.clone()));
            join_all(calls)
                .await
                .into_iter()
                .collect::<Result<Vec<_>, _>>()
                .map(drop)
        }
    }
}

fn replication_path(c: &str, what: &str) -> String {
    format!("/collections/{}/replication/{what}", encode_segment(c))
}

async fn collections_of(shard: &ShardRoute) -> Result<BTreeSet<String>, String> {
    let listed: Listed = read_any(shard, Method::GET, "/collections", Vec::new()).await?;
    Ok(listed.names().collect())
}

/// Whether the running topology still runs the move `progress` tracks.
fn current(gateway: &Gateway, progress: &Arc<MoveProgress>) -> Option<Arc<Topology>> {
    let topo = gateway.topology();
    let same = topo
        .moving
        .as_ref()
        .is_some_and(|m| Arc::ptr_eq(&m.progress, progress));
    same.then_some(topo)
}

/// Starts the move of the running topology, when there is one and nothing here runs it;
/// with `[cluster]`, only the router holding the move's lease in etcd runs it.
pub fn start(gateway: &Arc<Gateway>) {
    let topo = gateway.topology();
    let Some(m) = &topo.moving else { return };
    let progress = m.progress.clone();
    if progress.running.swap(true, Ordering::SeqCst) {
        return;
    }
    let gateway = gateway.clone();
    tokio::spawn(async move {
        let lease = match &gateway.etcd {
            None => None,
            Some(etcd) => {
                let holder = format!("{}-{:x}", std::process::id(), gateway.clock.now());
                match etcd.acquire(&holder).await {
                    Ok(Some(lease)) => Some((etcd.clone(), lease)),
                    Ok(None) => {
                        progress.running.store(false, Ordering::SeqCst);
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot take the move's lease in etcd; retrying");
                        progress.running.store(false, Ordering::SeqCst);
                        return;
                    }
                }
            }
        };
        gateway.metrics.move_running.set(1);
        let started = std::time::Instant::now();
        let outcome = match &lease {
            Some((etcd, id)) => tokio::select! {
                r = run(&gateway, &progress) => r,
                () = hold(etcd, *id) => Err("lost the move's lease in etcd".into()),
            },
            None => run(&gateway, &progress).await,
        };
        if let Some((etcd, id)) = &lease {
            etcd.release(*id).await;
        }
        gateway.metrics.move_running.set(0);
        match outcome {
            Ok(true) => {
                gateway.metrics.moves.with_label_values(&["done"]).inc();
                tracing::info!(
                    to = ?progress.to,
                    moved = progress.moved.load(Ordering::SeqCst),
                    seconds = started.elapsed().as_secs_f64(),
                    "move done: every point is on its owner"
                );
            }
            Ok(false) => tracing::info!("move replaced by a newer one"),
            Err(e) => {
                gateway.metrics.moves.with_label_values(&["failed"]).inc();
                tracing::warn!(error = %e, phase = progress.phase().as_str(), "move step failed; retrying");
            }
        }
        progress.running.store(false, Ordering::SeqCst);
    });
}

/// Keeps the move's lease alive; returns when it cannot.
async fn hold(etcd: &Etcd, lease: i64) {
    loop {
        tokio::time::sleep(etcd.keep_alive_every()).await;
        if !matches!(etcd.keep_alive(lease).await, Ok(true)) {
            return;
        }
    }
}

/// Records the move's phase in etcd for the other routers (nothing without `[cluster]`).
async fn publish(gateway: &Gateway, progress: &MoveProgress) -> Result<(), String> {
    let Some(etcd) = &gateway.etcd else {
        return Ok(());
    };
    etcd.record_move(&SharedMove {
        from: progress.from.clone(),
        to: progress.to.clone(),
        phase: progress.phase().as_str().into(),
    })
    .await
}

/// Runs the move from its current phase to the end; `false` when a reload replaced it.
async fn run(gateway: &Arc<Gateway>, progress: &Arc<MoveProgress>) -> Result<bool, String> {
    tracing::info!(from = ?progress.from, to = ?progress.to, phase = progress.phase().as_str(), "moving points to a new shard set");
    publish(gateway, progress).await?;
    if progress.phase() == Phase::Preparing {
        let Some(topo) = current(gateway, progress) else {
            return Ok(false);
        };
        prepare(&topo).await?;
        progress.enter(Phase::Copying);
        publish(gateway, progress).await?;
        // Other routers learn the phase within a second; until then they write as before.
        if gateway.etcd.is_some() {
            tokio::time::sleep(FOLLOW_DELAY).await;
        }
    }
    if progress.phase() == Phase::Copying {
        if !pass(gateway, progress).await? {
            return Ok(false);
        }
        progress.enter(Phase::Settling);
        publish(gateway, progress).await?;
    }
    let Some(topo) = current(gateway, progress) else {
        return Ok(false);
    };
    // Writes sent to both shards before settling began may still be in flight (and other
    // routers learn of settling within a second).
    let others = if gateway.etcd.is_some() {
        FOLLOW_DELAY
    } else {
        Duration::ZERO
    };
    tokio::time::sleep(
        Duration::from_millis(topo.config.routing.timeout_ms) + Duration::from_secs(1) + others,
    )
    .await;
    if !pass(gateway, progress).await? {
        return Ok(false);
    }
    let Some(topo) = current(gateway, progress) else {
        return Ok(false);
    };
    match &gateway.etcd {
        Some(etcd) => {
            etcd.placed(&topo.config.shards).await?;
            gateway
                .live
                .set_shared_placement(topo.config.shards.clone());
        }
        None => write_placement(&topo.config.server.data_dir, &topo.config.shards)?,
    }
    let (gw, config) = (gateway.clone(), topo.config.clone());
    let settled = tokio::task::spawn_blocking(move || gw.build(config))
        .await
        .map_err(|e| e.to_string())??;
    gateway.swap(settled);
    Ok(true)
}

/// Gives every serving shard every collection some shard holds (configuration and payload
/// indexes), before any write or point is sent there.
async fn prepare(topo: &Topology) -> Result<(), String> {
    let held = join_all(topo.shards.iter().map(collections_of)).await;
    let held: Vec<BTreeSet<String>> = held.into_iter().collect::<Result<_, _>>()?;
    for (i, shard) in topo.serving().iter().enumerate() {
        for c in held.iter().flatten().collect::<BTreeSet<_>>() {
            if held[i].contains(c) {
                continue;
            }
            let from = held
                .iter()
                .position(|h| h.contains(c))
                .expect("held somewhere");
            let spec: Box<RawValue> = read_any(
                &topo.shards[from],
                Method::GET,
                &replication_path(c, "spec"),
                Vec::new(),
            )
            .await?;
            write_all(
                shard,
                Method::PUT,
                &replication_path(c, "spec"),
                spec.get().as_bytes().to_vec(),
            )
            .await?;
        }
    }
    Ok(())
}

/// One pass over every shard: each point (and tombstone) not on its owner is copied there and
/// then forgotten where it was. Returns `false` when a reload replaced the move.
async fn pass(gateway: &Gateway, progress: &Arc<MoveProgress>) -> Result<bool, String> {
    let Some(topo) = current(gateway, progress) else {
        return Ok(false);
    };
    // One shard after the other: the owner takes copies one batch at a time under its write
    // lock, so emptying shards side by side moved no faster and doubled the search p99
    // (BENCHMARKS.md, "Resharding").
    for i in 0..topo.shards.len() {
        if !drain_misplaced(gateway, progress, &topo, i).await? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Moves every misplaced point of shard `i`; `false` when a reload replaced the move.
async fn drain_misplaced(
    gateway: &Gateway,
    progress: &Arc<MoveProgress>,
    topo: &Topology,
    i: usize,
) -> Result<bool, String> {
    for c in collections_of(&topo.shards[i]).await? {
        let buckets: Vec<u32> = (0..BUCKETS).collect();
        for group in buckets.chunks(BUCKETS_PER_CALL * CHUNKS_IN_FLIGHT) {
            if current(gateway, progress).is_none() {
                return Ok(false);
            }
            let steps = group
                .chunks(BUCKETS_PER_CALL)
                .map(|chunk| move_chunk(gateway, progress, topo, i, &c, chunk));
            join_all(steps)
                .await
                .into_iter()
                .collect::<Result<Vec<()>, _>>()?;
        }
    }
    Ok(true)
}

/// Moves the misplaced points of buckets `chunk` of collection `c` on shard `i`.
async fn move_chunk(
    gateway: &Gateway,
    progress: &MoveProgress,
    topo: &Topology,
    i: usize,
    c: &str,
    chunk: &[u32],
) -> Result<(), String> {
    let shard = &topo.shards[i];
    let asked = serde_json::to_vec(&VersionsRequest {
        buckets: BUCKETS,
        of: chunk.to_vec(),
    })
    .unwrap_or_default();
    // Each replica in turn: after the first, the others hold only what an earlier, cut-short
    // move evicted from the first and not from them.
    for source in sources(shard) {
        let held: Vec<PointVersion> = read(
            shard,
            source,
            Method::POST,
            &replication_path(c, "versions"),
            asked.clone(),
        )
        .await?;
        let mut misplaced: BTreeMap<usize, Vec<PointId>> = BTreeMap::new();
        for v in held {
            let owner = topo.owner(&v.id);
            if owner != i {
                misplaced.entry(owner).or_default().push(v.id);
            }
        }
        for (owner, ids) in misplaced {
            for batch in ids.chunks(POINTS_PER_COPY) {
                let moved = copy(shard, source, &topo.shards[owner], c, batch).await?;
                progress.moved.fetch_add(moved as u64, Ordering::SeqCst);
                gateway.metrics.moved.inc_by(moved as u64);
            }
        }
    }
    Ok(())
}

/// Copies `ids` of `c` from replica `source` of `from` to `to` (every replica), then forgets
/// them on every replica of `from` up to the versions copied; returns how many moved.
async fn copy(
    from: &ShardRoute,
    source: Option<&str>,
    to: &ShardRoute,
    c: &str,
    ids: &[PointId],
) -> Result<usize, String> {
    let asked = serde_json::to_vec(&ExportRequest { ids: ids.to_vec() }).unwrap_or_default();
    let exported: Copied = read(
        from,
        source,
        Method::POST,
        &replication_path(c, "export"),
        asked,
    )
    .await?;
    let copied: Vec<(PointId, u64)> = exported
        .points
        .iter()
        .map(|(version, p)| (p.id, *version))
        .chain(exported.deleted.iter().copied())
        .collect();
    write_all(
        to,
        Method::PUT,
        &replication_path(c, "import"),
        serde_json::to_vec(&exported).unwrap_or_default(),
    )
    .await?;
    let evict = serde_json::to_vec(&EvictRequest {
        points: copied.clone(),
    })
    .unwrap_or_default();
    write_all(from, Method::PUT, &replication_path(c, "evict"), evict).await?;
    Ok(copied.len())
}
