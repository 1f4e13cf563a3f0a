//! Replica convergence: filling a joining replica from a serving peer, and anti-entropy between
//! the replicas of each shard.
//!
//! Both run the same comparison, as Cassandra's repair does with Merkle trees, flattened to one
//! level: each replica digests its points (and tombstones) in [`BUCKETS`] buckets of ids; the
//! buckets whose digests differ are listed id by id with versions, and each id's newest state
//! (highest version, ties broken by content hash) is copied to the replicas that lack it. A
//! copy never replaces a newer write (shardd keeps the highest version), so a repair can run
//! while writes stream. A join first creates every collection with its payload indexes on the
//! new replica, then runs this comparison against one serving peer: for an empty replica,
//! every bucket differs and everything is copied, bucket by bucket (Qdrant's
//! `stream_records` transfer). Writes made meanwhile reach the joining replica directly, or
//! through its hint log when it could not take them, which is replayed before it serves.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::join_all;
use http::Method;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::value::RawValue;
use shardd::api::replication::{
    BucketDigest, DigestRequest, ExportRequest, PointVersion, VersionsRequest,
};
use shardd::engine::point::PointId;
use tokio::time::Instant;

use crate::gateway::{encode_segment, Envelope, Gateway, Listed};
use crate::replica::ReplicaState;
use crate::topology::ShardKind;
use crate::upstream::{client, Answer, CallError};

/// Id buckets a collection is compared in.
pub const BUCKETS: u32 = 256;
/// Buckets listed per call.
const BUCKETS_PER_CALL: usize = 8;
/// Points exported and imported per call.
const POINTS_PER_COPY: usize = 256;
/// Deadline of one replication call.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a join waits for its replica to take the writes it missed meanwhile.
const HINTS_DRAIN_TIMEOUT: Duration = Duration::from_secs(60);

/// What one comparison of a collection found and did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Converged {
    /// Buckets whose digests differed.
    pub buckets_differing: usize,
    /// Points and tombstones copied.
    pub copied: usize,
}

/// A shard's part of a repair round, as `POST /admin/repair` reports it.
#[derive(Debug, Default, Serialize)]
pub struct ShardRepair {
    /// The shard.
    pub shard: String,
    /// Replicas compared.
    pub replicas: Vec<String>,
    /// Per collection, what was found and copied.
    pub collections: BTreeMap<String, Converged>,
    /// Replicas found without a collection their peers hold: they now join.
    pub joining: Vec<String>,
    /// Why the shard could not be (fully) compared.
    pub errors: Vec<String>,
}

/// A call's answer when it is a 200, else the error naming `who` was asked what.
pub(crate) fn accepted(
    result: Result<Answer, CallError>,
    who: &str,
    method: &Method,
    path: &str,
) -> Result<Answer, String> {
    match result {
        Ok(a) if a.status == 200 => Ok(a),
        Ok(a) => Err(format!(
            "{who}: {method} {path} answered {}: {}",
            a.status,
            String::from_utf8_lossy(&a.body[..a.body.len().min(300)])
        )),
        Err(e) => Err(format!("{who}: {method} {path}: {e}")),
    }
}

/// The `result` of a shard's answer.
pub(crate) fn result<T: DeserializeOwned>(a: &Answer) -> Result<T, String> {
    serde_json::from_slice::<Envelope<T>>(&a.body)
        .map(|e| e.result)
        .map_err(|e| format!("unreadable answer: {e}"))
}

/// Calls a replica's replication endpoint and reads its result.
async fn call<T: DeserializeOwned>(
    url: &str,
    method: Method,
    path: &str,
    body: Vec<u8>,
) -> Result<T, String> {
    let deadline = Instant::now() + CALL_TIMEOUT;
    let answered = client()
        .call(url, &method, path, Bytes::from(body), deadline)
        .await;
    result(&accepted(answered, url, &method, path)?).map_err(|e| format!("{url}: {path}: {e}"))
}

fn json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

async fn collections_of(url: &str) -> Result<BTreeSet<String>, String> {
    let listed: Listed = call(url, Method::GET, "/collections", Vec::new()).await?;
    Ok(listed.names().collect())
}

fn replication_path(collection: &str, what: &str) -> String {
    format!(
        "/collections/{}/replication/{what}",
        encode_segment(collection)
    )
}

/// Compares collection `c` on `urls` and copies each differing id's newest state to the
/// replicas that lack it; `progress` counts the buckets done.
pub async fn converge(
    urls: &[&str],
    c: &str,
    progress: Option<&ReplicaState>,
) -> Result<Converged, String> {
    let digest_path = replication_path(c, "digest");
    let asked = json(&DigestRequest { buckets: BUCKETS });
    let digests: Vec<Vec<BucketDigest>> = join_all(
        urls.iter()
            .map(|u| call(u, Method::POST, &digest_path, asked.clone())),
    )
    .await
    .into_iter()
    .collect::<Result<_, _>>()?;
    let differing: Vec<u32> = (0..BUCKETS)
        .filter(|&b| {
            let first = digests[0].get(b as usize);
            digests.iter().any(|d| d.get(b as usize) != first)
        })
        .collect();
    if let Some(p) = progress {
        p.join_advanced(u64::from(BUCKETS) - differing.len() as u64);
    }
    let mut done = Converged {
        buckets_differing: differing.len(),
        copied: 0,
    };
    let versions_path = replication_path(c, "versions");
    for chunk in differing.chunks(BUCKETS_PER_CALL) {
        let asked = json(&VersionsRequest {
            buckets: BUCKETS,
            of: chunk.to_vec(),
        });
        let held: Vec<Vec<PointVersion>> = join_all(
            urls.iter()
                .map(|u| call(u, Method::POST, &versions_path, asked.clone())),
        )
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
        for ((from, to), ids) in moves(&held) {
            for batch in ids.chunks(POINTS_PER_COPY) {
                done.copied += copy(urls[from], urls[to], c, batch).await?;
            }
        }
        if let Some(p) = progress {
            p.join_advanced(chunk.len() as u64);
        }
    }
    Ok(done)
}

/// For each id held anywhere, its newest state's holder, and the replicas that lack it:
/// the copies to make, by (from, to) replica index.
fn moves(held: &[Vec<PointVersion>]) -> BTreeMap<(usize, usize), Vec<PointId>> {
    let by_id: Vec<HashMap<PointId, PointVersion>> = held
        .iter()
        .map(|h| h.iter().map(|v| (v.id, *v)).collect())
        .collect();
    let ids: BTreeSet<PointId> = held.iter().flatten().map(|v| v.id).collect();
    let mut moves: BTreeMap<(usize, usize), Vec<PointId>> = BTreeMap::new();
    for id in ids {
        let mut winner: Option<(usize, PointVersion)> = None;
        for (r, replica) in by_id.iter().enumerate() {
            if let Some(v) = replica.get(&id) {
                if winner.is_none_or(|(_, w)| v.beats(&w)) {
                    winner = Some((r, *v));
                }
            }
        }
        let Some((from, best)) = winner else { continue };
        for (to, replica) in by_id.iter().enumerate() {
            if replica.get(&id) != Some(&best) {
                moves.entry((from, to)).or_default().push(id);
            }
        }
    }
    moves
}

/// Copies points (and tombstones) `ids` of `c` from one replica to another, as written there;
/// returns how many were sent.
async fn copy(from: &str, to: &str, c: &str, ids: &[PointId]) -> Result<usize, String> {
    let exported: Box<RawValue> = call(
        from,
        Method::POST,
        &replication_path(c, "export"),
        json(&ExportRequest { ids: ids.to_vec() }),
    )
    .await?;
    let _: serde_json::Value = call(
        to,
        Method::PUT,
        &replication_path(c, "import"),
        exported.get().as_bytes().to_vec(),
    )
    .await?;
    Ok(ids.len())
}

/// Fills joining replica `target` from serving peer `source`: every collection the source
/// holds is created on the target with its payload indexes, then copied.
pub async fn join(
    gateway: &Gateway,
    shard: &str,
    source: &str,
    target: &ReplicaState,
) -> Result<usize, String> {
    let names = collections_of(source).await?;
    target.set_join_total(names.len() as u64 * u64::from(BUCKETS));
    for c in &names {
        let spec: Box<RawValue> = call(
            source,
            Method::GET,
            &replication_path(c, "spec"),
            Vec::new(),
        )
        .await?;
        let _: bool = call(
            &target.url,
            Method::PUT,
            &replication_path(c, "spec"),
            spec.get().as_bytes().to_vec(),
        )
        .await?;
    }
    let mut copied = 0;
    for c in &names {
        let done = converge(&[source, &target.url], c, Some(target)).await?;
        copied += done.copied;
    }
    gateway
        .metrics
        .repair_copied
        .with_label_values(&[shard])
        .inc_by(copied as u64);
    // The writes it could not take while it had no collections are replayed before it counts
    // for writes or serves reads; new writes queue behind them meanwhile.
    let deadline = std::time::Instant::now() + HINTS_DRAIN_TIMEOUT;
    while !crate::maintenance::replay(gateway, target).await {
        if std::time::Instant::now() > deadline {
            return Err(format!(
                "{} did not take its missed writes within {HINTS_DRAIN_TIMEOUT:?}",
                target.url
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(copied)
}

/// Starts a join task for every joining replica of the running topology that has none, each
/// filled from a serving peer of its shard; `joined` runs after each one that finishes.
pub fn start_joins(gateway: &Arc<Gateway>, joined: impl Fn() + Clone + Send + 'static) {
    let topo = gateway.topology();
    for shard in &topo.shards {
        let ShardKind::Remote(replicas) = &shard.kind else {
            continue;
        };
        for r in replicas.iter().filter(|r| r.state.joining()) {
            gateway
                .metrics
                .joining
                .with_label_values(&[&r.state.url])
                .set(1);
            let Some(source) = replicas.iter().find(|p| p.state.available()) else {
                continue;
            };
            if !r.state.healthy() || !r.state.claim_join() {
                continue;
            }
            let (gateway, target, source) =
                (gateway.clone(), r.state.clone(), source.state.url.clone());
            let (shard, joined) = (shard.name.clone(), joined.clone());
            tokio::spawn(async move {
                let started = std::time::Instant::now();
                tracing::info!(%shard, url = %target.url, %source, "replica joining: copying its data from a peer");
                match join(&gateway, &shard, &source, &target).await {
                    Ok(copied) => {
                        target.end_join(true);
                        gateway
                            .metrics
                            .joining
                            .with_label_values(&[&target.url])
                            .set(0);
                        gateway
                            .metrics
                            .joins
                            .with_label_values(&[&target.url, "done"])
                            .inc();
                        tracing::info!(%shard, url = %target.url, copied, seconds = started.elapsed().as_secs_f64(), "replica joined; it serves reads");
                        joined();
                    }
                    Err(e) => {
                        target.end_join(false);
                        gateway
                            .metrics
                            .joins
                            .with_label_values(&[&target.url, "failed"])
                            .inc();
                        tracing::warn!(%shard, url = %target.url, error = %e, "replica join failed; retrying after a backoff");
                    }
                }
            });
        }
    }
}

/// Checks the replicas suspected of lost data (a 404 for a collection): a replica that lacks a
/// collection one of its serving peers holds starts joining.
pub async fn check_suspects(gateway: &Gateway) {
    let topo = gateway.topology();
    for shard in &topo.shards {
        let ShardKind::Remote(replicas) = &shard.kind else {
            continue;
        };
        for r in replicas.iter().filter(|r| r.state.take_suspicion()) {
            if r.state.joining() {
                continue;
            }
            let Ok(held) = collections_of(&r.state.url).await else {
                continue;
            };
            for peer in replicas
                .iter()
                .filter(|p| p.state.available() && p.state.url != r.state.url)
            {
                let Ok(theirs) = collections_of(&peer.state.url).await else {
                    continue;
                };
                if let Some(missing) = theirs.difference(&held).next() {
                    tracing::warn!(shard = %shard.name, url = %r.state.url, collection = %missing, "replica lacks a collection its peer holds; it joins again");
                    r.state.start_joining();
                    break;
                }
            }
        }
    }
}

/// One anti-entropy round over every remote shard with two or more replicas up: a replica
/// missing a collection is set joining; the others are compared collection by collection and
/// repaired where they differ.
pub async fn repair(gateway: &Gateway, trigger: &str) -> Vec<ShardRepair> {
    let _one_at_a_time = gateway.repairing.lock().await;
    let topo = gateway.topology();
    let mut report = Vec::new();
    for shard in &topo.shards {
        let ShardKind::Remote(replicas) = &shard.kind else {
            continue;
        };
        let mut part = ShardRepair {
            shard: shard.name.clone(),
            ..ShardRepair::default()
        };
        let up: Vec<&ReplicaState> = replicas
            .iter()
            .map(|r| r.state.as_ref())
            .filter(|s| s.healthy() && !s.ejected() && !s.joining())
            .collect();
        if replicas.len() < 2 {
            continue;
        }
        let held = join_all(up.iter().map(|s| collections_of(&s.url))).await;
        let mut compared: Vec<(&ReplicaState, BTreeSet<String>)> = Vec::new();
        for (s, h) in up.iter().zip(held) {
            match h {
                Ok(h) => compared.push((s, h)),
                Err(e) => part.errors.push(e),
            }
        }
        let all: BTreeSet<String> = compared.iter().flat_map(|(_, h)| h.clone()).collect();
        compared.retain(|(s, h)| {
            if h.len() < all.len() && compared_has_serving_peer(replicas, s) {
                tracing::warn!(shard = %shard.name, url = %s.url, "replica lacks collections its peers hold; it joins");
                s.start_joining();
                part.joining.push(s.url.clone());
                return false;
            }
            true
        });
        part.replicas = compared.iter().map(|(s, _)| s.url.clone()).collect();
        if compared.len() < 2 {
            if part.joining.is_empty() {
                part.errors
                    .push("fewer than two replicas up: nothing to compare".into());
            }
            report.push(part);
            continue;
        }
        let urls: Vec<&str> = compared.iter().map(|(s, _)| s.url.as_str()).collect();
        for c in &all {
            match converge(&urls, c, None).await {
                Ok(done) => {
                    let m = &gateway.metrics;
                    m.repair_buckets
                        .with_label_values(&[&shard.name])
                        .inc_by(done.buckets_differing as u64);
                    m.repair_copied
                        .with_label_values(&[&shard.name])
                        .inc_by(done.copied as u64);
                    part.collections.insert(c.clone(), done);
                }
                Err(e) => part.errors.push(format!("collection {c}: {e}")),
            }
        }
        report.push(part);
    }
    let failed = report.iter().any(|p| !p.errors.is_empty());
    gateway
        .metrics
        .repairs
        .with_label_values(&[trigger, if failed { "failed" } else { "ok" }])
        .inc();
    for p in report.iter().filter(|p| !p.errors.is_empty()) {
        tracing::warn!(shard = %p.shard, errors = ?p.errors, "repair round incomplete");
    }
    report
}

/// Whether a replica other than `s` serves, so that `s` can join from it.
fn compared_has_serving_peer(replicas: &[crate::balance::Replica], s: &ReplicaState) -> bool {
    replicas
        .iter()
        .any(|p| p.state.url != s.url && p.state.available())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(id: u64, version: u64, hash: u64) -> PointVersion {
        PointVersion {
            id: PointId::Num(id),
            version,
            hash,
            deleted: false,
        }
    }

    #[test]
    fn each_id_goes_from_its_newest_holder_to_those_without_it() {
        let a = vec![v(1, 5, 1), v(2, 3, 1)];
        let b = vec![v(1, 4, 1), v(3, 1, 1)];
        let c = vec![v(1, 5, 1), v(2, 3, 1), v(3, 1, 1)];
        let m = moves(&[a, b, c]);
        assert_eq!(
            m.get(&(0, 1)),
            Some(&vec![PointId::Num(1), PointId::Num(2)])
        );
        assert_eq!(m.get(&(1, 0)), Some(&vec![PointId::Num(3)]));
        assert_eq!(m.len(), 2, "c holds everything newest: {m:?}");
    }

    #[test]
    fn equal_versions_with_other_contents_settle_on_one() {
        let m = moves(&[vec![v(1, 5, 7)], vec![v(1, 5, 9)]]);
        assert_eq!(m.keys().collect::<Vec<_>>(), vec![&(1, 0)]);
    }
}
