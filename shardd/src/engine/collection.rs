//! One collection's points: ids, payloads and vectors by slot, with their indexes, and the writes on them.
//!
//! A point lives in a slot (a dense `u32`); its dense vectors sit in one flat array per vector
//! name and in that name's HNSW index under the same slot, so exact scans and graph search see
//! the same data. Slots of deleted points are reused.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::engine::filter::{Filter, PointView};
use crate::engine::hnsw::{HnswIndex, VectorIndex};
use crate::engine::params::{CollectionConfig, Distance, HnswConfig, Modifier};
use crate::engine::payload::{merge, WithPayload};
use crate::engine::payload_index::{FieldType, PayloadIndexes};
use crate::engine::point::{
    NamedVectors, Payload, PointId, PointWrite, ScoredPoint, SparseVector, Vector, WithVector,
};
use crate::engine::sparse::{IdfStats, SparseIndex};
use crate::error::{Error, Result};

/// A collection: its configuration and its points behind one lock.
pub struct Collection {
    /// The collection's name.
    pub name: String,
    /// Its validated configuration.
    pub config: CollectionConfig,
    points: RwLock<Points>,
    /// WAL sequence number the collection's snapshot file covers.
    snapshot_seq: AtomicU64,
}

impl Collection {
    /// An empty collection.
    pub fn new(name: String, config: CollectionConfig) -> Result<Self> {
        let points = Points::new(&config)?;
        Ok(Collection {
            name,
            config,
            points: RwLock::new(points),
            snapshot_seq: AtomicU64::new(0),
        })
    }

    pub(crate) fn from_points(name: String, config: CollectionConfig, points: Points) -> Self {
        let seq = points.last_seq;
        Collection {
            name,
            config,
            points: RwLock::new(points),
            snapshot_seq: AtomicU64::new(seq),
        }
    }

    /// WAL sequence number the collection's snapshot covers.
    pub fn snapshot_seq(&self) -> u64 {
        self.snapshot_seq.load(Ordering::SeqCst)
    }

    pub(crate) fn set_snapshot_seq(&self, seq: u64) {
        self.snapshot_seq.store(seq, Ordering::SeqCst);
    }

    /// Shared access for reads; writers wait.
    pub fn read(&self) -> RwLockReadGuard<'_, Points> {
        self.points.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Exclusive access for writes.
    pub fn write(&self) -> RwLockWriteGuard<'_, Points> {
        self.points.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Checks and prepares points for this collection (see [`CollectionConfig::prepare`]).
    pub fn validate(&self, points: Vec<PointWrite>) -> Result<Vec<PointWrite>> {
        self.config.prepare(&self.name, points)
    }

    /// The error for a vector name this collection does not have.
    pub fn unknown_vector(&self, name: &str, kind: &str) -> Error {
        self.config.unknown_vector(&self.name, name, kind)
    }
}

struct Slot {
    id: PointId,
    /// Version of the write that last changed the point.
    version: u64,
    /// Hash of the vectors, kept so that a payload write can rehash without reading them.
    vectors_hash: u64,
    /// Hash of the whole point (vectors and payload): replicas compare it.
    hash: u64,
    /// Bytes of the payload as JSON.
    payload_bytes: u32,
    payload: Payload,
}

fn hash_vectors(vectors: &NamedVectors) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for (name, v) in vectors {
        h.update(name.as_bytes());
        match v {
            Vector::Dense(d) => {
                h.update(&[0]);
                d.iter().for_each(|x| h.update(&x.to_le_bytes()));
            }
            Vector::Sparse(s) => {
                h.update(&[1]);
                s.indices.iter().for_each(|i| h.update(&i.to_le_bytes()));
                s.values.iter().for_each(|x| h.update(&x.to_le_bytes()));
            }
        }
    }
    h.digest()
}

/// The hash of a point with vectors hashing to `vectors_hash`, and its payload's JSON size.
fn hash_point(vectors_hash: u64, payload: &Payload) -> (u64, u32) {
    let json = serde_json::to_vec(payload).unwrap_or_default();
    (
        xxhash_rust::xxh3::xxh3_64_with_seed(&json, vectors_hash),
        json.len() as u32,
    )
}

/// One point's entry in a replica comparison: its version and content hash, or a tombstone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PointVersion {
    /// The point.
    pub id: PointId,
    /// Version of its last write (the delete's, for a tombstone).
    pub version: u64,
    /// Hash of its vectors and payload; 0 for a tombstone.
    pub hash: u64,
    /// Whether the point was deleted.
    pub deleted: bool,
}

/// Points with their versions and tombstones, as one replica copies them to another (an
/// export's answer, an import's body).
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Copied {
    /// Whole points, each with the version of its last write.
    pub points: Vec<(u64, PointWrite)>,
    /// Deleted ids, each with the version of its delete.
    pub deleted: Vec<(PointId, u64)>,
}

impl PointVersion {
    /// Whether this state replaces `other` between replicas: the higher version, and on equal
    /// versions the higher hash, so every replica picks the same one.
    pub fn beats(&self, other: &PointVersion) -> bool {
        (self.version, self.hash) > (other.version, other.hash)
    }
}

/// Dense vectors of one name: a flat array by slot and the HNSW index over them.
pub(crate) struct DenseStore {
    pub(crate) dim: usize,
    pub(crate) distance: Distance,
    pub(crate) hnsw: HnswConfig,
    values: Vec<f32>,
    present: Vec<bool>,
    count: usize,
    pub(crate) index: Box<dyn VectorIndex>,
}

impl DenseStore {
    fn new(dim: usize, distance: Distance, hnsw: HnswConfig, index: Box<dyn VectorIndex>) -> Self {
        DenseStore {
            dim,
            distance,
            hnsw,
            values: Vec::new(),
            present: Vec::new(),
            count: 0,
            index,
        }
    }

    /// The vector in `slot`, if that point has one.
    pub(crate) fn get(&self, slot: u32) -> Option<&[f32]> {
        let s = slot as usize;
        self.present
            .get(s)
            .copied()
            .unwrap_or(false)
            .then(|| &self.values[s * self.dim..(s + 1) * self.dim])
    }

    /// Slots that hold a vector.
    pub(crate) fn slots(&self) -> impl Iterator<Item = u32> + '_ {
        self.present
            .iter()
            .enumerate()
            .filter(|(_, p)| **p)
            .map(|(s, _)| s as u32)
    }

    pub(crate) fn len(&self) -> usize {
        self.count
    }

    fn set(&mut self, slot: u32, v: &[f32]) {
        let s = slot as usize;
        if self.present.len() <= s {
            self.present.resize(s + 1, false);
            self.values.resize((s + 1) * self.dim, 0.0);
        }
        self.values[s * self.dim..(s + 1) * self.dim].copy_from_slice(v);
        if !self.present[s] {
            self.present[s] = true;
            self.count += 1;
        }
    }

    fn clear(&mut self, slot: u32) -> Result<()> {
        let s = slot as usize;
        if self.present.get(s).copied().unwrap_or(false) {
            self.present[s] = false;
            self.count -= 1;
            self.index.remove(slot)?;
        }
        Ok(())
    }
}

/// Sparse vectors of one name and their inverted index.
#[derive(Default)]
pub(crate) struct SparseStore {
    pub(crate) modifier: Modifier,
    vectors: Vec<Option<SparseVector>>,
    pub(crate) index: SparseIndex,
}

impl SparseStore {
    /// Bytes of the stored vectors (an index and a value per entry).
    fn bytes(&self) -> u64 {
        self.vectors
            .iter()
            .flatten()
            .map(|v| (v.indices.len() * 8) as u64)
            .sum()
    }

    pub(crate) fn get(&self, slot: u32) -> Option<&SparseVector> {
        self.vectors.get(slot as usize).and_then(Option::as_ref)
    }

    fn set(&mut self, slot: u32, v: SparseVector) {
        self.clear(slot);
        let s = slot as usize;
        if self.vectors.len() <= s {
            self.vectors.resize(s + 1, None);
        }
        self.index.insert(slot, &v);
        self.vectors[s] = Some(v);
    }

    fn clear(&mut self, slot: u32) {
        if let Some(old) = self.vectors.get_mut(slot as usize).and_then(Option::take) {
            self.index.remove(slot, &old);
        }
    }
}

/// How a filter found its points.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FilterPlan {
    /// Payload indexes named the candidates.
    Index,
    /// Every payload was read.
    Scan,
}

impl FilterPlan {
    /// The plan's metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            FilterPlan::Index => "index",
            FilterPlan::Scan => "scan",
        }
    }
}

/// The points of a collection, by slot.
pub struct Points {
    ids: BTreeMap<PointId, u32>,
    slots: Vec<Option<Slot>>,
    free: Vec<u32>,
    pub(crate) dense: BTreeMap<String, DenseStore>,
    pub(crate) sparse: BTreeMap<String, SparseStore>,
    /// Indexes over payload fields, kept in step with every write.
    pub(crate) payload_indexes: PayloadIndexes,
    /// Deleted points by the version of their delete, so that an older write arriving later
    /// (a replay, a copy, another router's) does not bring them back.
    pub(crate) tombstones: BTreeMap<PointId, u64>,
    /// Bytes of all payloads as JSON.
    payload_bytes: u64,
    /// Time spent inserting into HNSW graphs since the shard last took it.
    pub(crate) index_build: std::time::Duration,
    /// Sequence number of the last write applied.
    pub last_seq: u64,
    /// Set when the collection was dropped, so writers holding it fail instead of writing to nothing.
    pub dropped: bool,
}

/// A point seen through its slot, for filters.
pub(crate) struct SlotView<'a> {
    points: &'a Points,
    slot: u32,
    record: &'a Slot,
}

impl PointView for SlotView<'_> {
    fn id(&self) -> PointId {
        self.record.id
    }
    fn payload(&self) -> &Payload {
        &self.record.payload
    }
    fn has_vector(&self, name: &str) -> bool {
        self.points
            .dense
            .get(name)
            .is_some_and(|d| d.get(self.slot).is_some())
            || self
                .points
                .sparse
                .get(name)
                .is_some_and(|s| s.get(self.slot).is_some())
    }
}

impl Points {
    fn new(config: &CollectionConfig) -> Result<Self> {
        let mut dense = BTreeMap::new();
        for (name, p) in &config.vectors {
            let hnsw = config.hnsw_for(name);
            let index = HnswIndex::new(p.size, p.distance, hnsw)?;
            dense.insert(
                name.clone(),
                DenseStore::new(p.size, p.distance, hnsw, Box::new(index)),
            );
        }
        let sparse = config
            .sparse_vectors
            .iter()
            .map(|(name, p)| {
                (
                    name.clone(),
                    SparseStore {
                        modifier: p.modifier.unwrap_or_default(),
                        ..Default::default()
                    },
                )
            })
            .collect();
        Ok(Points {
            ids: BTreeMap::new(),
            slots: Vec::new(),
            free: Vec::new(),
            dense,
            sparse,
            payload_indexes: PayloadIndexes::default(),
            tombstones: BTreeMap::new(),
            payload_bytes: 0,
            index_build: std::time::Duration::ZERO,
            last_seq: 0,
            dropped: false,
        })
    }

    /// Bytes of the points' vectors and payloads (JSON), as stored.
    pub fn bytes(&self) -> u64 {
        let dense: u64 = self
            .dense
            .values()
            .map(|d| (d.len() * d.dim * 4) as u64)
            .sum();
        let sparse: u64 = self.sparse.values().map(|s| s.bytes()).sum();
        dense + sparse + self.payload_bytes
    }

    /// Number of points.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Number of vectors in HNSW indexes, over all dense names.
    pub fn indexed_vectors(&self) -> usize {
        self.dense.values().map(|d| d.index.len()).sum()
    }

    /// Whether a point exists.
    pub fn contains(&self, id: &PointId) -> bool {
        self.ids.contains_key(id)
    }

    pub(crate) fn view(&self, slot: u32) -> Option<SlotView<'_>> {
        let record = self.slots.get(slot as usize)?.as_ref()?;
        Some(SlotView {
            points: self,
            slot,
            record,
        })
    }

    pub(crate) fn id_of(&self, slot: u32) -> Option<PointId> {
        self.slots.get(slot as usize)?.as_ref().map(|r| r.id)
    }

    /// Slots of the points matching `filter`, in slot order, and how they were found: payload
    /// indexes narrow the candidates when the filter's `must` names indexed fields.
    pub(crate) fn filter_slots(&self, filter: &Filter) -> (Vec<u32>, FilterPlan) {
        let filter = self.payload_indexes.resolve(filter);
        let keep = |s: &u32| self.view(*s).is_some_and(|v| filter.matches(&v));
        match self.payload_indexes.candidates(&filter) {
            Some(candidates) => (
                candidates.into_iter().filter(keep).collect(),
                FilterPlan::Index,
            ),
            None => (
                (0..self.slots.len() as u32).filter(keep).collect(),
                FilterPlan::Scan,
            ),
        }
    }

    /// Matching points as (id, slot), in id order.
    fn matching_by_id(&self, filter: &Filter) -> Vec<(PointId, u32)> {
        let mut found: Vec<(PointId, u32)> = self
            .filter_slots(filter)
            .0
            .into_iter()
            .filter_map(|s| Some((self.id_of(s)?, s)))
            .collect();
        found.sort_unstable();
        found
    }

    /// Ids of the points matching `filter`, in id order.
    pub fn matching_ids(&self, filter: &Filter) -> Vec<PointId> {
        self.matching_by_id(filter)
            .into_iter()
            .map(|(id, _)| id)
            .collect()
    }

    /// Creates (or replaces) the payload index of `field` as write `seq`.
    pub fn create_index(&mut self, seq: u64, field: &str, kind: FieldType) {
        let payloads = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(s, r)| Some((s as u32, &r.as_ref()?.payload)));
        self.payload_indexes.create(field, kind, payloads);
        self.last_seq = seq;
    }

    /// Drops the payload index of `field` as write `seq`.
    pub fn drop_index(&mut self, seq: u64, field: &str) {
        self.payload_indexes.drop_field(field);
        self.last_seq = seq;
    }

    /// Document frequencies of sparse vector `name` for `dims`, when it exists.
    pub fn sparse_stats(&self, name: &str, dims: &[u32]) -> Option<IdfStats> {
        self.sparse.get(name).map(|s| s.index.stats(dims))
    }

    /// Indexed fields with their type and how many points have a value there.
    pub fn payload_schema(&self) -> Vec<(String, FieldType, usize)> {
        self.payload_indexes
            .schema()
            .into_iter()
            .map(|(f, k)| {
                let n = self.payload_indexes.points(&f);
                (f, k, n)
            })
            .collect()
    }

    /// What a replica holds of `id`: its point's version and hash, or its tombstone.
    pub fn version_of(&self, id: &PointId) -> Option<PointVersion> {
        match self.ids.get(id) {
            Some(&slot) => self.slots[slot as usize].as_ref().map(|r| PointVersion {
                id: *id,
                version: r.version,
                hash: r.hash,
                deleted: false,
            }),
            None => self.tombstones.get(id).map(|&version| PointVersion {
                id: *id,
                version,
                hash: 0,
                deleted: true,
            }),
        }
    }

    /// Whether a write of `version` to `id` is newer than what is held (version 0: a write
    /// logged before versions existed, always applied).
    fn newer(&self, id: &PointId, version: u64) -> bool {
        version == 0
            || self
                .version_of(id)
                .is_none_or(|held| version > held.version)
    }

    /// Inserts or replaces points (whole points: vectors and payload) as write `seq` of
    /// `version`; a point already holding a newer version keeps it.
    pub fn upsert(&mut self, seq: u64, version: u64, points: Vec<PointWrite>) -> Result<()> {
        let points = points
            .into_iter()
            .filter(|p| self.newer(&p.id, version))
            .map(|p| (version, p))
            .collect();
        self.put(seq, points)
    }

    /// Writes whole points, each with its own version, replacing whatever is held.
    fn put(&mut self, seq: u64, points: Vec<(u64, PointWrite)>) -> Result<()> {
        let mut added: BTreeMap<String, Vec<u32>> = BTreeMap::new();
        for (version, p) in points {
            self.tombstones.remove(&p.id);
            let vectors_hash = hash_vectors(&p.vectors);
            let (hash, payload_bytes) = hash_point(vectors_hash, &p.payload);
            let slot = match self.ids.get(&p.id) {
                Some(&slot) => {
                    self.clear_vectors(slot)?;
                    if let Some(old) = self.slots[slot as usize].as_ref() {
                        self.payload_indexes.remove(slot, &old.payload);
                        self.payload_bytes -= u64::from(old.payload_bytes);
                    }
                    slot
                }
                None => self.allocate(p.id),
            };
            self.place_vectors(slot, p.vectors, &mut added);
            self.payload_indexes.insert(slot, &p.payload);
            self.slots[slot as usize] = Some(Slot {
                id: p.id,
                version: if version == 0 { seq } else { version },
                vectors_hash,
                hash,
                payload_bytes,
                payload: p.payload,
            });
            self.payload_bytes += u64::from(payload_bytes);
        }
        for (name, slots) in added {
            let store = self
                .dense
                .get_mut(&name)
                .expect("added names come from the dense map");
            let DenseStore {
                index, values, dim, ..
            } = store;
            let items: Vec<(u32, &[f32])> = slots
                .iter()
                .map(|&s| (s, &values[s as usize * *dim..(s as usize + 1) * *dim]))
                .collect();
            let started = std::time::Instant::now();
            index.add(&items)?;
            self.index_build += started.elapsed();
        }
        self.last_seq = seq;
        Ok(())
    }

    /// Stores a point's vectors in `slot` (sparse ones indexed at once) and notes, by name,
    /// which dense slots still need adding to their HNSW index.
    fn place_vectors(
        &mut self,
        slot: u32,
        vectors: NamedVectors,
        dense_added: &mut BTreeMap<String, Vec<u32>>,
    ) {
        for (name, v) in vectors {
            match v {
                Vector::Dense(d) => {
                    if let Some(store) = self.dense.get_mut(&name) {
                        store.set(slot, &d);
                        dense_added.entry(name).or_default().push(slot);
                    }
                }
                Vector::Sparse(s) => {
                    if let Some(store) = self.sparse.get_mut(&name) {
                        store.set(slot, s);
                    }
                }
            }
        }
    }

    fn allocate(&mut self, id: PointId) -> u32 {
        let slot = self.free.pop().unwrap_or_else(|| {
            self.slots.push(None);
            (self.slots.len() - 1) as u32
        });
        self.ids.insert(id, slot);
        slot
    }

    fn clear_vectors(&mut self, slot: u32) -> Result<()> {
        for store in self.dense.values_mut() {
            store.clear(slot)?;
        }
        for store in self.sparse.values_mut() {
            store.clear(slot);
        }
        Ok(())
    }

    /// Deletes points by id as write `seq` of `version`, leaving tombstones; missing ids are
    /// ignored and points holding a newer version kept.
    pub fn delete(&mut self, seq: u64, version: u64, ids: &[PointId]) -> Result<()> {
        for id in ids {
            if self.newer(id, version) {
                self.remove(id, version)?;
            }
        }
        self.last_seq = seq;
        Ok(())
    }

    fn remove(&mut self, id: &PointId, version: u64) -> Result<()> {
        if let Some(slot) = self.ids.remove(id) {
            self.clear_vectors(slot)?;
            if let Some(old) = self.slots[slot as usize].take() {
                self.payload_indexes.remove(slot, &old.payload);
                self.payload_bytes -= u64::from(old.payload_bytes);
            }
            self.free.push(slot);
        }
        if version != 0 {
            self.tombstones.insert(*id, version);
        }
        Ok(())
    }

    /// Takes another replica's points and deletes, each as that replica holds it; what is
    /// held here stays where it wins ([`PointVersion::beats`]).
    pub fn import(
        &mut self,
        seq: u64,
        points: Vec<(u64, PointWrite)>,
        deleted: &[(PointId, u64)],
    ) -> Result<()> {
        let wins = |points: &Self, theirs: PointVersion| {
            points
                .version_of(&theirs.id)
                .is_none_or(|held| theirs.beats(&held))
        };
        let points = points
            .into_iter()
            .filter(|(version, p)| {
                let (hash, _) = hash_point(hash_vectors(&p.vectors), &p.payload);
                let theirs = PointVersion {
                    id: p.id,
                    version: *version,
                    hash,
                    deleted: false,
                };
                wins(self, theirs)
            })
            .collect();
        self.put(seq, points)?;
        for &(id, version) in deleted {
            let theirs = PointVersion {
                id,
                version,
                hash: 0,
                deleted: true,
            };
            if wins(self, theirs) {
                self.remove(&id, version)?;
            }
        }
        self.last_seq = seq;
        Ok(())
    }

    /// Forgets points (and tombstones) this replica no longer owns, each only if what it holds
    /// is no newer than the version given (the one copied to the owner); no tombstone is left.
    pub fn evict(&mut self, seq: u64, points: &[(PointId, u64)]) -> Result<()> {
        for (id, version) in points {
            if self
                .version_of(id)
                .is_some_and(|held| held.version <= *version)
            {
                self.remove(id, 0)?;
                self.tombstones.remove(id);
            }
        }
        self.last_seq = seq;
        Ok(())
    }

    /// Every point and tombstone with its version and hash, in no particular order.
    pub fn versions(&self) -> impl Iterator<Item = PointVersion> + '_ {
        let live = self.ids.keys().filter_map(|id| self.version_of(id));
        let dead = self.tombstones.iter().map(|(&id, &version)| PointVersion {
            id,
            version,
            hash: 0,
            deleted: true,
        });
        live.chain(dead)
    }

    /// The points among `ids` as written, with their versions, and the tombstones among them.
    pub fn export(&self, ids: &[PointId]) -> Copied {
        let mut points = Vec::new();
        let mut deleted = Vec::new();
        for id in ids {
            if let Some(&slot) = self.ids.get(id) {
                let r = self.slots[slot as usize]
                    .as_ref()
                    .expect("indexed ids hold points");
                points.push((
                    r.version,
                    PointWrite {
                        id: *id,
                        vectors: self.vectors_of(slot, &WithVector::All(true)),
                        payload: r.payload.clone(),
                    },
                ));
            } else if let Some(&version) = self.tombstones.get(id) {
                deleted.push((*id, version));
            }
        }
        Copied { points, deleted }
    }

    /// Merges `payload` into each point's payload (under `key` when given), or replaces it
    /// when `overwrite`, as write `seq` of `version`; points holding a newer version keep it.
    pub fn set_payload(
        &mut self,
        seq: u64,
        version: u64,
        ids: &[PointId],
        payload: &Payload,
        key: Option<&str>,
        overwrite: bool,
    ) -> Result<()> {
        for id in ids {
            let Some(&slot) = self.ids.get(id) else {
                continue;
            };
            if !self.newer(id, version) {
                continue;
            }
            let Some(record) = self.slots[slot as usize].as_mut() else {
                continue;
            };
            self.payload_indexes.remove(slot, &record.payload);
            if overwrite {
                record.payload = payload.clone();
            } else {
                merge(&mut record.payload, payload, key)?;
            }
            self.payload_indexes.insert(slot, &record.payload);
            record.version = if version == 0 { seq } else { version };
            let (hash, bytes) = hash_point(record.vectors_hash, &record.payload);
            self.payload_bytes =
                self.payload_bytes - u64::from(record.payload_bytes) + u64::from(bytes);
            (record.hash, record.payload_bytes) = (hash, bytes);
        }
        self.last_seq = seq;
        Ok(())
    }

    /// The stored vectors of a slot by name, as selected.
    pub(crate) fn vectors_of(&self, slot: u32, with: &WithVector) -> BTreeMap<String, Vector> {
        let mut out = BTreeMap::new();
        for (name, store) in &self.dense {
            if let (true, Some(v)) = (with.wants(name), store.get(slot)) {
                out.insert(name.clone(), Vector::Dense(v.to_vec()));
            }
        }
        for (name, store) in &self.sparse {
            if let (true, Some(v)) = (with.wants(name), store.get(slot)) {
                out.insert(name.clone(), Vector::Sparse(v.clone()));
            }
        }
        out
    }

    /// A slot as a read returns it, with the payload and vectors asked for.
    pub(crate) fn found(
        &self,
        slot: u32,
        score: f32,
        with_payload: &WithPayload,
        with_vector: &WithVector,
    ) -> ScoredPoint {
        let record = self.slots[slot as usize]
            .as_ref()
            .expect("selected slots hold points");
        ScoredPoint {
            id: record.id,
            version: record.version,
            score,
            payload: with_payload.select(&record.payload),
            vectors: with_vector
                .any()
                .then(|| self.vectors_of(slot, with_vector)),
        }
    }

    /// Points by id, in the order asked, skipping missing ones.
    pub fn get(
        &self,
        ids: &[PointId],
        with_payload: &WithPayload,
        with_vector: &WithVector,
    ) -> Vec<ScoredPoint> {
        ids.iter()
            .filter_map(|id| {
                let slot = *self.ids.get(id)?;
                Some(self.found(slot, 0.0, with_payload, with_vector))
            })
            .collect()
    }

    /// Up to `limit` points from `offset` on in id order, matching `filter`, and the id where
    /// the next page starts.
    pub fn scroll(
        &self,
        offset: Option<PointId>,
        limit: usize,
        filter: Option<&Filter>,
        with_payload: &WithPayload,
        with_vector: &WithVector,
    ) -> (Vec<ScoredPoint>, Option<PointId>) {
        let resolved = filter.map(|f| self.payload_indexes.resolve(f));
        let indexed = resolved
            .as_ref()
            .is_some_and(|f| self.payload_indexes.candidates(f).is_some());
        let ordered: Box<dyn Iterator<Item = (PointId, u32)> + '_> = match (&resolved, indexed) {
            (Some(f), true) => Box::new(
                self.matching_by_id(f)
                    .into_iter()
                    .filter(move |(id, _)| offset.is_none_or(|o| *id >= o)),
            ),
            _ => {
                let range = match offset {
                    Some(o) => self.ids.range(o..),
                    None => self.ids.range(..),
                };
                Box::new(range.map(|(&id, &slot)| (id, slot)).filter(|&(_, slot)| {
                    resolved
                        .as_ref()
                        .is_none_or(|f| self.view(slot).is_some_and(|v| f.matches(&v)))
                }))
            }
        };
        let mut page = Vec::with_capacity(limit.min(1024));
        for (id, slot) in ordered {
            if page.len() == limit {
                return (page, Some(id));
            }
            page.push(self.found(slot, 0.0, with_payload, with_vector));
        }
        (page, None)
    }

    /// Points matching `filter` in id order, after skipping `offset`, scored 0 (a query without
    /// a vector).
    pub fn list(
        &self,
        filter: Option<&Filter>,
        offset: usize,
        limit: usize,
        with_payload: &WithPayload,
        with_vector: &WithVector,
    ) -> Vec<ScoredPoint> {
        let matching: Vec<(PointId, u32)> = match filter {
            Some(f) => self.matching_by_id(f),
            None => self.ids.iter().map(|(&id, &slot)| (id, slot)).collect(),
        };
        matching
            .into_iter()
            .skip(offset)
            .take(limit)
            .map(|(_, slot)| self.found(slot, 0.0, with_payload, with_vector))
            .collect()
    }

    /// Number of points matching `filter` (all points without one).
    pub fn count(&self, filter: Option<&Filter>) -> usize {
        match filter {
            None => self.len(),
            Some(f) => self.filter_slots(f).0.len(),
        }
    }

    /// Every point as written, for snapshots: (slot, id, version, payload, vectors).
    pub(crate) fn dump(
        &self,
    ) -> impl Iterator<Item = (u32, PointId, u64, &Payload, BTreeMap<String, Vector>)> + '_ {
        self.ids.values().map(move |&slot| {
            let r = self.slots[slot as usize]
                .as_ref()
                .expect("indexed ids hold points");
            (
                slot,
                r.id,
                r.version,
                &r.payload,
                self.vectors_of(slot, &WithVector::All(true)),
            )
        })
    }

    /// Rebuilds points from a snapshot, in their original slots, with indexes supplied or rebuilt.
    pub(crate) fn restore(
        config: &CollectionConfig,
        last_seq: u64,
        records: Vec<(u32, PointId, u64, Payload, NamedVectors)>,
        tombstones: BTreeMap<PointId, u64>,
        mut indexes: BTreeMap<String, Box<dyn VectorIndex>>,
        payload_indexes: &BTreeMap<String, FieldType>,
    ) -> Result<Self> {
        let mut points = Points::new(config)?;
        let mut rebuild: BTreeMap<String, Vec<u32>> = BTreeMap::new();
        for (slot, id, version, payload, vectors) in records {
            let s = slot as usize;
            if points.slots.len() <= s {
                points.slots.resize_with(s + 1, || None);
            }
            points.ids.insert(id, slot);
            let vectors_hash = hash_vectors(&vectors);
            let (hash, payload_bytes) = hash_point(vectors_hash, &payload);
            points.payload_bytes += u64::from(payload_bytes);
            points.slots[s] = Some(Slot {
                id,
                version,
                vectors_hash,
                hash,
                payload_bytes,
                payload,
            });
            points.place_vectors(slot, vectors, &mut rebuild);
        }
        for (field, kind) in payload_indexes {
            let payloads = points
                .slots
                .iter()
                .enumerate()
                .filter_map(|(s, r)| Some((s as u32, &r.as_ref()?.payload)));
            points.payload_indexes.create(field, *kind, payloads);
        }
        points.free = (0..points.slots.len() as u32)
            .filter(|&s| points.slots[s as usize].is_none())
            .collect();
        points.free.reverse();
        for (name, store) in points.dense.iter_mut() {
            match indexes.remove(name) {
                Some(index) if index.len() == store.len() => store.index = index,
                _ => {
                    let slots = rebuild.remove(name).unwrap_or_default();
                    let items: Vec<(u32, &[f32])> = slots
                        .iter()
                        .map(|&s| (s, store.get(s).expect("restored slot")))
                        .collect();
                    let mut fresh = HnswIndex::new(store.dim, store.distance, store.hnsw)?;
                    fresh.add(&items)?;
                    store.index = Box::new(fresh);
                }
            }
        }
        points.tombstones = tombstones;
        points.last_seq = last_seq;
        Ok(points)
    }
}
