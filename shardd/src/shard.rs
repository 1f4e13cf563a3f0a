//! A shard: the collections of one data directory, with their WAL, recovery and snapshot rounds.
//!
//! Every write is validated, resolved into an [`Op`], appended to the WAL and applied under the
//! collection's write lock (so log order is apply order), then acknowledged once the WAL is
//! durable. On open, collection snapshots are loaded and the WAL replayed over them: a record
//! is applied only when it is newer than what its collection already holds.

use std::collections::HashMap;
use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockWriteGuard};
use std::time::Instant;

use crate::engine::collection::{Collection, Copied, PointVersion, Points};
use crate::engine::filter::Filter;
use crate::engine::params::CollectionConfig;
use crate::engine::payload::WithPayload;
use crate::engine::payload_index::FieldType;
use crate::engine::point::PointWrite;
use crate::engine::point::{Payload, PointId, ScoredPoint, WithVector};
use crate::engine::search::SearchRequest;
use crate::engine::sparse::IdfStats;
use crate::error::{Error, Result};
use crate::lock::DirLock;
use crate::metrics::Metrics;
use crate::query::plan::ListRequest;
use crate::storage::ops::Op;
use crate::storage::snapshot;
use crate::storage::wal::{FsyncPolicy, Wal};
use crate::version::Clock;

/// How a shard stores its data.
#[derive(Clone, Copy, Debug)]
pub struct ShardOptions {
    /// When WAL records reach stable storage.
    pub fsync: FsyncPolicy,
    /// A WAL segment is closed once it reaches this size.
    pub wal_segment_bytes: u64,
}

impl Default for ShardOptions {
    fn default() -> Self {
        ShardOptions {
            fsync: FsyncPolicy::Always,
            wal_segment_bytes: 64 << 20,
        }
    }
}

/// What `GET /collections/{c}` reports of a collection.
pub struct CollectionInfo {
    /// Its configuration.
    pub config: CollectionConfig,
    /// Number of points.
    pub points: usize,
    /// Vectors in HNSW indexes, over all dense names.
    pub indexed_vectors: usize,
    /// Indexed payload fields: name, type, points with a value there.
    pub payload_schema: Vec<(String, FieldType, usize)>,
}

/// Which points a write applies to.
#[derive(Clone, Debug)]
pub enum Selector {
    /// These ids.
    Ids(Vec<PointId>),
    /// Every point matching the filter when the write is applied.
    Filter(Filter),
}

/// A write on a collection's points.
#[derive(Clone, Debug)]
pub enum Update {
    /// Insert or replace whole points.
    Upsert(Vec<PointWrite>),
    /// Delete points.
    Delete(Selector),
    /// Create (or replace) the payload index of a field.
    CreateIndex { field: String, kind: FieldType },
    /// Drop the payload index of a field.
    DropIndex { field: String },
    /// Merge into (or with `overwrite`, replace) the payload of points.
    SetPayload {
        selector: Selector,
        payload: Payload,
        key: Option<String>,
        overwrite: bool,
    },
}

/// The collections of one data directory.
pub struct Shard {
    _lock: DirLock,
    snapshot_dir: PathBuf,
    collections: RwLock<HashMap<String, Arc<Collection>>>,
    wal: Wal,
    snapshot_round: Mutex<()>,
    metrics: Arc<Metrics>,
    /// Versions writes that come without one (sent to the shard directly, not by a router).
    clock: Clock,
    identity: String,
}

/// The name of the file holding a data directory's identity.
pub const IDENTITY_FILE: &str = "IDENTITY";

/// The identity of the data in `dir`, made (and stored durably) when the directory is new: a
/// router that sees it change knows the replica lost its data and refills it.
fn identity(dir: &Path, clock: &Clock) -> Result<String> {
    let path = dir.join(IDENTITY_FILE);
    match fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => return Ok(id.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(e.into()),
    }
    let id = format!(
        "{:016x}",
        xxhash_rust::xxh3::xxh3_64(&clock.now().to_le_bytes())
    );
    snapshot::write_atomically(&path, id.as_bytes())?;
    Ok(id)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Checks a collection name: 1 to 255 bytes, no slashes or control characters.
pub fn validate_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > 255
        || name
            .chars()
            .any(|c| c == '/' || c == '\\' || c.is_control())
        || name == "."
        || name == ".."
    {
        return Err(Error::bad(format!(
            "collection name {name:?} must be 1 to 255 bytes without slashes or control characters"
        )));
    }
    Ok(())
}

fn remove_if_present(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != ErrorKind::NotFound => Err(e.into()),
        _ => Ok(()),
    }
}

fn replay(
    collections: &mut HashMap<String, Arc<Collection>>,
    snapshot_dir: &Path,
    seq: u64,
    op: Op,
) -> Result<()> {
    let newer = |c: &Arc<Collection>| c.read().last_seq >= seq;
    match op {
        Op::CreateCollection { name, config } => {
            if collections.get(&name).is_some_and(newer) {
                return Ok(());
            }
            let c = Collection::new(name.clone(), config)?;
            c.write().last_seq = seq;
            c.set_snapshot_seq(seq - 1);
            collections.insert(name, Arc::new(c));
        }
        Op::DropCollection { name } => {
            if collections.get(&name).is_some_and(newer) {
                return Ok(());
            }
            if collections.remove(&name).is_some() {
                remove_if_present(&snapshot::path_for(snapshot_dir, &name))?;
            }
        }
        op => {
            let Some(c) = collections.get(op.collection()) else {
                return Ok(());
            };
            let mut points = c.write();
            if points.last_seq < seq {
                op.apply(&mut points, seq)?;
            }
        }
    }
    Ok(())
}

impl Shard {
    /// Opens (or creates) the shard in `dir`: locks the directory, loads snapshots and replays
    /// the WAL over them. Fails at once if another process holds the directory.
    pub fn open(dir: &Path, options: ShardOptions, metrics: Arc<Metrics>) -> Result<Self> {
        Self::open_locked(DirLock::acquire(dir)?, options, metrics)
    }

    /// Opens the shard in a directory this process has already locked.
    pub fn open_locked(
        lock: DirLock,
        options: ShardOptions,
        metrics: Arc<Metrics>,
    ) -> Result<Self> {
        let dir = lock.dir().to_path_buf();
        let snapshot_dir = dir.join("snapshots");
        fs::create_dir_all(&snapshot_dir)?;
        let mut collections = HashMap::new();
        let mut floor = 0;
        for entry in fs::read_dir(&snapshot_dir)? {
            let path = entry?.path();
            match path.extension().and_then(|e| e.to_str()) {
                Some("tmp") => remove_if_present(&path)?,
                Some("snap") => {
                    let c = snapshot::decode(&fs::read(&path)?)
                        .map_err(|e| Error::Storage(format!("{}: {e}", path.display())))?;
                    floor = floor.max(c.snapshot_seq());
                    collections.insert(c.name.clone(), Arc::new(c));
                }
                _ => {}
            }
        }
        let wal = Wal::open(
            &dir.join("wal"),
            options.fsync,
            options.wal_segment_bytes,
            floor,
            metrics.clone(),
            |seq, body| {
                let op: Op = serde_json::from_slice(body)
                    .map_err(|e| Error::Storage(format!("WAL record {seq}: {e}")))?;
                replay(&mut collections, &snapshot_dir, seq, op)
            },
        )?;
        for c in collections.values() {
            let points = c.read();
            metrics
                .points
                .with_label_values(&[&c.name])
                .set(points.len() as i64);
            metrics
                .bytes
                .with_label_values(&[&c.name])
                .set(points.bytes() as i64);
        }
        let clock = Clock::for_this_process();
        let identity = identity(&dir, &clock)?;
        Ok(Shard {
            _lock: lock,
            snapshot_dir,
            collections: RwLock::new(collections),
            wal,
            snapshot_round: Mutex::new(()),
            metrics,
            clock,
            identity,
        })
    }

    /// The identity of this shard's data directory (`/readyz` reports it).
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// The engine's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    fn collection(&self, name: &str) -> Result<Arc<Collection>> {
        self.collections
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("Collection `{name}` doesn't exist!")))
    }

    /// Names of all collections, sorted.
    pub fn collection_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .collections
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect();
        names.sort();
        names
    }

    /// Creates a collection; fails if one of that name exists.
    pub fn create_collection(&self, name: &str, config: CollectionConfig) -> Result<()> {
        validate_name(name)?;
        let mut map = self.collections.write().unwrap_or_else(|p| p.into_inner());
        if map.contains_key(name) {
            return Err(Error::Conflict(format!(
                "Collection `{name}` already exists!"
            )));
        }
        let collection = Collection::new(name.to_string(), config.clone())?;
        let op = Op::CreateCollection {
            name: name.to_string(),
            config,
        };
        let seq = self.wal.append(&encode(&op)?)?;
        collection.write().last_seq = seq;
        collection.set_snapshot_seq(seq - 1);
        map.insert(name.to_string(), Arc::new(collection));
        drop(map);
        self.metrics.points.with_label_values(&[name]).set(0);
        self.metrics.bytes.with_label_values(&[name]).set(0);
        self.wal.sync(seq)
    }

    /// Drops a collection; `false` when there was none.
    pub fn drop_collection(&self, name: &str) -> Result<bool> {
        let _no_snapshot_meanwhile = lock(&self.snapshot_round);
        let mut map = self.collections.write().unwrap_or_else(|p| p.into_inner());
        let Some(collection) = map.get(name).cloned() else {
            return Ok(false);
        };
        let mut points = collection.write();
        let seq = self.wal.append(&encode(&Op::DropCollection {
            name: name.to_string(),
        })?)?;
        points.dropped = true;
        points.last_seq = seq;
        map.remove(name);
        drop(points);
        drop(map);
        self.wal.sync(seq)?;
        let _ = self.metrics.points.remove_label_values(&[name]);
        let _ = self.metrics.bytes.remove_label_values(&[name]);
        remove_if_present(&snapshot::path_for(&self.snapshot_dir, name))?;
        Ok(true)
    }

    /// Applies a write, versioned by the shard's own clock, and returns its sequence number
    /// once it is durable.
    pub fn update(&self, name: &str, update: Update) -> Result<u64> {
        self.update_at(name, update, None)
    }

    /// Applies a write of `version` (a router's; the shard's clock when `None`): points that
    /// already hold a newer version keep it. Returns the sequence number once it is durable.
    pub fn update_at(&self, name: &str, update: Update, version: Option<u64>) -> Result<u64> {
        let version = match version {
            Some(v) => {
                self.clock.observe(v);
                v
            }
            None => self.clock.now(),
        };
        let collection = self.collection(name)?;
        let update = match update {
            Update::Upsert(points) => Update::Upsert(collection.validate(points)?),
            other => other,
        };
        let points = collection.write();
        if points.dropped {
            return Err(Error::NotFound(format!(
                "Collection `{name}` doesn't exist!"
            )));
        }
        let resolve = |selector: Selector, must_exist: bool| -> Result<Vec<PointId>> {
            match selector {
                Selector::Filter(f) => Ok(points.matching_ids(&f)),
                Selector::Ids(ids) => {
                    if let Some(missing) = ids.iter().find(|id| must_exist && !points.contains(id))
                    {
                        return Err(Error::NotFound(format!("No point with id {missing} found")));
                    }
                    Ok(ids)
                }
            }
        };
        let collection_name = name.to_string();
        let op = match update {
            Update::Upsert(writes) => Op::Upsert {
                collection: collection_name,
                points: writes,
                version,
            },
            Update::Delete(selector) => Op::Delete {
                collection: collection_name,
                ids: resolve(selector, false)?,
                version,
            },
            Update::SetPayload {
                selector,
                payload,
                key,
                overwrite,
            } => Op::SetPayload {
                collection: collection_name,
                ids: resolve(selector, true)?,
                payload,
                key,
                overwrite,
                version,
            },
            Update::CreateIndex { field, kind } => Op::CreateFieldIndex {
                collection: collection_name,
                field,
                kind,
            },
            Update::DropIndex { field } => Op::DropFieldIndex {
                collection: collection_name,
                field,
            },
        };
        self.log_and_apply(name, op, points)
    }

    /// Logs `op`, applies it under the collection's write lock (so log order is apply order)
    /// and returns its sequence number once the log is durable.
    fn log_and_apply(
        &self,
        name: &str,
        op: Op,
        mut points: RwLockWriteGuard<'_, Points>,
    ) -> Result<u64> {
        let seq = self.wal.append(&encode(&op)?)?;
        op.apply(&mut points, seq)?;
        let (count, bytes) = (points.len(), points.bytes());
        let built = std::mem::take(&mut points.index_build);
        drop(points);
        self.metrics
            .points
            .with_label_values(&[name])
            .set(count as i64);
        self.metrics
            .bytes
            .with_label_values(&[name])
            .set(bytes as i64);
        if !built.is_zero() {
            self.metrics
                .index_build_seconds
                .observe(built.as_secs_f64());
        }
        self.wal.sync(seq)?;
        Ok(seq)
    }

    /// Takes points and deletes copied from another replica, each with its version; what is
    /// held here stays where it is newer.
    pub fn import(&self, name: &str, copied: Copied) -> Result<u64> {
        let Copied { points, deleted } = copied;
        let collection = self.collection(name)?;
        let points = {
            let (versions, writes): (Vec<u64>, Vec<PointWrite>) = points.into_iter().unzip();
            versions
                .into_iter()
                .zip(collection.validate(writes)?)
                .collect()
        };
        if let Some(max) = deleted.iter().map(|d| d.1).max() {
            self.clock.observe(max);
        }
        let held = collection.write();
        if held.dropped {
            return Err(Error::NotFound(format!(
                "Collection `{name}` doesn't exist!"
            )));
        }
        let op = Op::Import {
            collection: name.to_string(),
            points,
            deleted,
        };
        self.log_and_apply(name, op, held)
    }

    /// Forgets points (and tombstones) this shard no longer owns, each only if it holds no
    /// newer version than the one given.
    pub fn evict(&self, name: &str, points: Vec<(PointId, u64)>) -> Result<u64> {
        let collection = self.collection(name)?;
        let held = collection.write();
        if held.dropped {
            return Err(Error::NotFound(format!(
                "Collection `{name}` doesn't exist!"
            )));
        }
        let op = Op::Evict {
            collection: name.to_string(),
            points,
        };
        self.log_and_apply(name, op, held)
    }

    /// Runs `f` over every point and tombstone of a collection with its version and content
    /// hash (under the read lock), for comparing replicas.
    pub fn versions<T>(
        &self,
        name: &str,
        f: impl FnOnce(&mut dyn Iterator<Item = PointVersion>) -> T,
    ) -> Result<T> {
        let c = self.collection(name)?;
        let points = c.read();
        let answer = f(&mut points.versions());
        Ok(answer)
    }

    /// The points among `ids` as written, each with its version, and the tombstones among
    /// them: what a replica copies to another.
    pub fn export(&self, name: &str, ids: &[PointId]) -> Result<Copied> {
        Ok(self.collection(name)?.read().export(ids))
    }

    /// A collection's configuration and payload indexes, for creating it on another replica.
    pub fn spec(&self, name: &str) -> Result<(CollectionConfig, Vec<(String, FieldType)>)> {
        let c = self.collection(name)?;
        let indexes = c
            .read()
            .payload_schema()
            .into_iter()
            .map(|(field, kind, _)| (field, kind))
            .collect();
        Ok((c.config.clone(), indexes))
    }

    /// Makes a collection match another replica's spec: created if missing (a collection of
    /// that name with another configuration is a conflict), with every payload index it lacks.
    pub fn adopt(
        &self,
        name: &str,
        config: CollectionConfig,
        indexes: Vec<(String, FieldType)>,
    ) -> Result<()> {
        match self.config(name) {
            Ok(held) if held != config => {
                return Err(Error::Conflict(format!(
                    "Collection `{name}` exists here with another configuration"
                )))
            }
            Ok(_) => {}
            Err(Error::NotFound(_)) => match self.create_collection(name, config) {
                Ok(()) | Err(Error::Conflict(_)) => {}
                Err(e) => return Err(e),
            },
            Err(e) => return Err(e),
        }
        let (_, held) = self.spec(name)?;
        for (field, kind) in indexes {
            if !held.iter().any(|(f, k)| *f == field && *k == kind) {
                self.update(name, Update::CreateIndex { field, kind })?;
            }
        }
        Ok(())
    }

    /// The configuration of a collection.
    pub fn config(&self, name: &str) -> Result<CollectionConfig> {
        Ok(self.collection(name)?.config.clone())
    }

    /// What `GET /collections/{c}` reports of a collection.
    pub fn info(&self, name: &str) -> Result<CollectionInfo> {
        let c = self.collection(name)?;
        let points = c.read();
        Ok(CollectionInfo {
            config: c.config.clone(),
            points: points.len(),
            indexed_vectors: points.indexed_vectors(),
            payload_schema: points.payload_schema(),
        })
    }

    /// Runs a search and counts its plan.
    pub fn search(&self, name: &str, req: &SearchRequest) -> Result<Vec<ScoredPoint>> {
        let (points, plan, filter) = self.collection(name)?.search(req)?;
        self.metrics
            .searches
            .with_label_values(&[plan.as_str()])
            .inc();
        if let Some(filter) = filter {
            self.metrics
                .filters
                .with_label_values(&[filter.as_str()])
                .inc();
        }
        Ok(points)
    }

    /// Points matching a filter in id order (a query without a vector).
    pub fn list(&self, name: &str, req: &ListRequest) -> Result<Vec<ScoredPoint>> {
        Ok(self.collection(name)?.read().list(
            req.filter.as_ref(),
            req.offset,
            req.limit,
            &req.with_payload,
            &req.with_vector,
        ))
    }

    /// Points by id, in the order asked, skipping missing ones.
    pub fn get(
        &self,
        name: &str,
        ids: &[PointId],
        with_payload: &WithPayload,
        with_vector: &WithVector,
    ) -> Result<Vec<ScoredPoint>> {
        Ok(self
            .collection(name)?
            .read()
            .get(ids, with_payload, with_vector))
    }

    /// A page of points in id order from `offset` on, and the id the next page starts at.
    pub fn scroll(
        &self,
        name: &str,
        offset: Option<PointId>,
        limit: usize,
        filter: Option<&Filter>,
        with_payload: &WithPayload,
        with_vector: &WithVector,
    ) -> Result<(Vec<ScoredPoint>, Option<PointId>)> {
        Ok(self
            .collection(name)?
            .read()
            .scroll(offset, limit, filter, with_payload, with_vector))
    }

    /// Number of points matching `filter` (all without one).
    pub fn count(&self, name: &str, filter: Option<&Filter>) -> Result<usize> {
        Ok(self.collection(name)?.read().count(filter))
    }

    /// Document frequencies of sparse vector `using` for `dims`, which the router sums for
    /// collection-wide idf.
    pub fn sparse_stats(&self, name: &str, using: &str, dims: &[u32]) -> Result<IdfStats> {
        let c = self.collection(name)?;
        let points = c.read();
        points
            .sparse_stats(using, dims)
            .ok_or_else(|| c.unknown_vector(using, "sparse"))
    }

    /// Snapshots every collection changed since its last snapshot, then deletes the WAL
    /// segments that every collection's snapshot covers. Returns how many were written.
    pub fn snapshot(&self) -> Result<usize> {
        let _round = lock(&self.snapshot_round);
        self.wal.rotate()?;
        let collections: Vec<Arc<Collection>> = self
            .collections
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        let mut written = 0;
        for c in collections {
            let started = Instant::now();
            let encoded = {
                let points = c.read();
                (points.last_seq > c.snapshot_seq())
                    .then(|| (snapshot::encode(&c, &points), points.last_seq))
            };
            let Some((bytes, seq)) = encoded else {
                continue;
            };
            if let Err(e) = bytes.and_then(|b| {
                snapshot::write_atomically(&snapshot::path_for(&self.snapshot_dir, &c.name), &b)
            }) {
                self.metrics.snapshot_failures.inc();
                return Err(e);
            }
            c.set_snapshot_seq(seq);
            self.metrics
                .snapshot_seconds
                .observe(started.elapsed().as_secs_f64());
            written += 1;
        }
        let cap = self.wal.last_seq();
        let safe = self
            .collections
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|c| c.read().last_seq > c.snapshot_seq())
            .map(|c| c.snapshot_seq())
            .min()
            .unwrap_or(cap)
            .min(cap);
        self.wal.truncate_through(safe)?;
        Ok(written)
    }

    /// Makes everything durable and snapshots it, for a clean shutdown.
    pub fn close(&self) -> Result<()> {
        self.wal.sync(self.wal.last_seq())?;
        self.snapshot().map(|_| ())
    }
}

fn encode(op: &Op) -> Result<Vec<u8>> {
    serde_json::to_vec(op).map_err(|e| Error::Storage(format!("encoding WAL record: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::point::Vector;
    use serde_json::json;

    fn open(dir: &Path) -> Shard {
        let metrics = Arc::new(Metrics::new(&prometheus::Registry::new(), "t").unwrap());
        Shard::open(dir, ShardOptions::default(), metrics).unwrap()
    }

    fn config() -> CollectionConfig {
        serde_json::from_value::<crate::api::request::CreateCollection>(
            json!({"vectors": {"size": 2, "distance": "Dot"}}),
        )
        .unwrap()
        .into_config()
        .unwrap()
    }

    fn point(id: u64) -> PointWrite {
        PointWrite {
            id: PointId::Num(id),
            vectors: [(String::new(), Vector::Dense(vec![id as f32, 1.0]))].into(),
            payload: json!({"id": id}).as_object().unwrap().clone(),
        }
    }

    #[test]
    fn writes_survive_reopen_with_and_without_snapshots() {
        let dir = tempfile::tempdir().unwrap();
        let shard = open(dir.path());
        shard.create_collection("a", config()).unwrap();
        shard
            .update("a", Update::Upsert((0..10).map(point).collect()))
            .unwrap();
        shard.snapshot().unwrap();
        shard
            .update("a", Update::Delete(Selector::Ids(vec![PointId::Num(3)])))
            .unwrap();
        shard.update("a", Update::Upsert(vec![point(20)])).unwrap();
        shard.create_collection("b", config()).unwrap();
        drop(shard);
        let shard = open(dir.path());
        assert_eq!(shard.collection_names(), vec!["a", "b"]);
        let a = shard.collection("a").unwrap();
        assert_eq!(a.read().len(), 10);
        assert!(!a.read().contains(&PointId::Num(3)));
        assert!(a.read().contains(&PointId::Num(20)));
    }

    fn payload_of(shard: &Shard, id: u64) -> Option<serde_json::Value> {
        let found = shard
            .get(
                "a",
                &[PointId::Num(id)],
                &WithPayload::All(true),
                &WithVector::All(false),
            )
            .unwrap();
        found.first().map(|p| json!(p.payload))
    }

    fn tagged(id: u64, tag: &str) -> PointWrite {
        let mut p = point(id);
        p.payload.insert("tag".into(), json!(tag));
        p
    }

    #[test]
    fn an_older_write_never_replaces_a_newer_one_even_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let shard = open(dir.path());
        shard.create_collection("a", config()).unwrap();
        let new = |tag| Update::Upsert(vec![tagged(1, tag)]);
        shard.update_at("a", new("v20"), Some(20)).unwrap();
        shard.update_at("a", new("v10"), Some(10)).unwrap();
        assert_eq!(payload_of(&shard, 1).unwrap()["tag"], "v20");
        let delete = || Update::Delete(Selector::Ids(vec![PointId::Num(1)]));
        shard.update_at("a", delete(), Some(15)).unwrap();
        assert!(payload_of(&shard, 1).is_some(), "an older delete keeps it");
        shard.update_at("a", delete(), Some(30)).unwrap();
        shard.update_at("a", new("v25"), Some(25)).unwrap();
        assert!(
            payload_of(&shard, 1).is_none(),
            "an older upsert does not revive it"
        );
        shard.snapshot().unwrap();
        drop(shard);
        let shard = open(dir.path());
        shard.update_at("a", new("v29"), Some(29)).unwrap();
        assert!(
            payload_of(&shard, 1).is_none(),
            "the tombstone survives a snapshot"
        );
        shard.update_at("a", new("v31"), Some(31)).unwrap();
        assert_eq!(payload_of(&shard, 1).unwrap()["tag"], "v31");
    }

    #[test]
    fn imports_converge_on_the_same_winner_from_either_side() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (open(&dir.path().join("a")), open(&dir.path().join("b")));
        for s in [&a, &b] {
            s.create_collection("a", config()).unwrap();
        }
        a.update_at("a", Update::Upsert(vec![tagged(1, "a")]), Some(5))
            .unwrap();
        b.update_at("a", Update::Upsert(vec![tagged(1, "b")]), Some(5))
            .unwrap();
        b.update_at("a", Update::Upsert(vec![tagged(2, "b")]), Some(5))
            .unwrap();
        a.update_at(
            "a",
            Update::Delete(Selector::Ids(vec![PointId::Num(2)])),
            Some(6),
        )
        .unwrap();
        let everything = [PointId::Num(1), PointId::Num(2)];
        let from_a = a.export("a", &everything).unwrap();
        let from_b = b.export("a", &everything).unwrap();
        a.import("a", from_b).unwrap();
        b.import("a", from_a).unwrap();
        let held = |s: &Shard| {
            let mut v = s.versions("a", |h| h.collect::<Vec<_>>()).unwrap();
            v.sort_by_key(|p| p.id);
            v
        };
        assert_eq!(held(&a), held(&b), "equal versions settle on the same hash");
        assert_eq!(payload_of(&a, 1), payload_of(&b, 1));
        assert!(payload_of(&b, 2).is_none(), "the newer delete won on b");
    }

    #[test]
    fn a_dropped_and_recreated_collection_starts_empty_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let shard = open(dir.path());
        shard.create_collection("a", config()).unwrap();
        shard.update("a", Update::Upsert(vec![point(1)])).unwrap();
        shard.snapshot().unwrap();
        assert!(shard.drop_collection("a").unwrap());
        assert!(!shard.drop_collection("a").unwrap());
        shard.create_collection("a", config()).unwrap();
        shard.update("a", Update::Upsert(vec![point(2)])).unwrap();
        drop(shard);
        let shard = open(dir.path());
        let ids = shard
            .collection("a")
            .unwrap()
            .read()
            .matching_ids(&Filter::default());
        assert_eq!(ids, vec![PointId::Num(2)]);
    }

    #[test]
    fn snapshots_let_the_wal_shrink() {
        let dir = tempfile::tempdir().unwrap();
        let shard = open(dir.path());
        shard.create_collection("a", config()).unwrap();
        for i in 0..5 {
            shard.update("a", Update::Upsert(vec![point(i)])).unwrap();
            shard.snapshot().unwrap();
        }
        let segments = fs::read_dir(dir.path().join("wal")).unwrap().count();
        assert!(segments <= 2, "{segments} WAL segments left");
        drop(shard);
        assert_eq!(open(dir.path()).collection("a").unwrap().read().len(), 5);
    }

    #[test]
    fn set_payload_on_a_missing_point_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let shard = open(dir.path());
        shard.create_collection("a", config()).unwrap();
        shard.update("a", Update::Upsert(vec![point(1)])).unwrap();
        let err = shard
            .update(
                "a",
                Update::SetPayload {
                    selector: Selector::Ids(vec![PointId::Num(1), PointId::Num(9)]),
                    payload: Payload::new(),
                    key: None,
                    overwrite: true,
                },
            )
            .unwrap_err();
        assert_eq!(err.status(), 404);
        assert_eq!(shard.collection("a").unwrap().read().count(None), 1);
    }
}
