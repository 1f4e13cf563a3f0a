//! Collection snapshots: one checksummed file per collection, replaced atomically.
//!
//! A snapshot holds the collection's configuration, every point in its slot (id, version,
//! payload, vectors) and the saved HNSW graphs, as of WAL sequence `seq`. It is written to a
//! temporary file, fsynced, renamed over the old one and the directory fsynced, so a crash
//! leaves either the old or the new snapshot, never a mix. A snapshot whose checksum fails is
//! refused at start rather than half-loaded.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::engine::collection::{Collection, Points};
use crate::engine::hnsw::{HnswIndex, VectorIndex};
use crate::engine::params::CollectionConfig;
use crate::engine::payload_index::FieldType;
use crate::engine::point::{NamedVectors, Payload, PointId, SparseVector, Vector};
use crate::error::{Error, Result};

const MAGIC: &[u8; 8] = b"VGSNAP1\n";

#[derive(Serialize, Deserialize)]
struct Header {
    name: String,
    config: CollectionConfig,
    #[serde(default)]
    payload_indexes: BTreeMap<String, FieldType>,
    /// Deleted ids by the version of their delete.
    #[serde(default)]
    tombstones: Vec<(PointId, u64)>,
}

/// The snapshot file of a collection (named by a hash, since names may hold any character).
pub fn path_for(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!(
        "{:032x}.snap",
        xxhash_rust::xxh3::xxh3_128(name.as_bytes())
    ))
}

struct Enc(Vec<u8>);

impl Enc {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn bytes(&mut self, b: &[u8]) {
        self.u64(b.len() as u64);
        self.0.extend_from_slice(b);
    }
    fn f32s(&mut self, v: &[f32]) {
        self.u32(v.len() as u32);
        v.iter()
            .for_each(|x| self.0.extend_from_slice(&x.to_le_bytes()));
    }
}

struct Dec<'a>(&'a [u8]);

impl<'a> Dec<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.0.len() < n {
            return Err(Error::Storage("snapshot ends early".into()));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn bytes(&mut self) -> Result<&'a [u8]> {
        let n = self.u64()? as usize;
        self.take(n)
    }
    /// A u32 count, then that many 4-byte little-endian words decoded by `word`.
    fn words<T>(&mut self, word: fn([u8; 4]) -> T) -> Result<Vec<T>> {
        let n = self.u32()? as usize;
        Ok(self
            .take(n * 4)?
            .chunks_exact(4)
            .map(|c| word(c.try_into().expect("4 bytes")))
            .collect())
    }
    fn f32s(&mut self) -> Result<Vec<f32>> {
        self.words(f32::from_le_bytes)
    }
    fn u32s(&mut self) -> Result<Vec<u32>> {
        self.words(u32::from_le_bytes)
    }
}

fn json_err(e: serde_json::Error) -> Error {
    Error::Storage(format!("snapshot: {e}"))
}

/// Serialises a collection as of its last applied write; the caller holds its read lock.
pub fn encode(collection: &Collection, points: &Points) -> Result<Vec<u8>> {
    let mut e = Enc(Vec::with_capacity(1 << 20));
    e.0.extend_from_slice(MAGIC);
    e.u64(points.last_seq);
    let header = Header {
        name: collection.name.clone(),
        config: collection.config.clone(),
        payload_indexes: points.payload_indexes.schema(),
        tombstones: points.tombstones.iter().map(|(&id, &v)| (id, v)).collect(),
    };
    e.bytes(&serde_json::to_vec(&header).map_err(json_err)?);
    e.u64(points.len() as u64);
    for (slot, id, version, payload, vectors) in points.dump() {
        e.u32(slot);
        match id {
            PointId::Num(n) => {
                e.u8(0);
                e.u64(n);
            }
            PointId::Uuid(u) => {
                e.u8(1);
                e.0.extend_from_slice(u.as_bytes());
            }
        }
        e.u64(version);
        e.bytes(&serde_json::to_vec(payload).map_err(json_err)?);
        e.u32(vectors.len() as u32);
        for (name, v) in vectors {
            e.bytes(name.as_bytes());
            match v {
                Vector::Dense(d) => {
                    e.u8(0);
                    e.f32s(&d);
                }
                Vector::Sparse(s) => {
                    e.u8(1);
                    e.u32(s.indices.len() as u32);
                    s.indices
                        .iter()
                        .for_each(|i| e.0.extend_from_slice(&i.to_le_bytes()));
                    e.f32s(&s.values);
                }
            }
        }
    }
    e.u32(points.dense.len() as u32);
    for (name, store) in &points.dense {
        e.bytes(name.as_bytes());
        e.bytes(&store.index.save()?);
    }
    let crc = crc32fast::hash(&e.0);
    e.u32(crc);
    Ok(e.0)
}

/// Restores a collection from a snapshot's bytes.
pub fn decode(bytes: &[u8]) -> Result<Collection> {
    if bytes.len() < MAGIC.len() + 4 || &bytes[..MAGIC.len()] != MAGIC {
        return Err(Error::Storage("not a vecgate snapshot".into()));
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32fast::hash(body) != u32::from_le_bytes(crc.try_into().expect("4 bytes")) {
        return Err(Error::Storage("snapshot checksum mismatch".into()));
    }
    let mut d = Dec(&body[MAGIC.len()..]);
    let seq = d.u64()?;
    let header: Header = serde_json::from_slice(d.bytes()?).map_err(json_err)?;
    let n = d.u64()? as usize;
    let mut records: Vec<(u32, PointId, u64, Payload, NamedVectors)> = Vec::with_capacity(n);
    for _ in 0..n {
        let slot = d.u32()?;
        let id = match d.u8()? {
            0 => PointId::Num(d.u64()?),
            _ => PointId::Uuid(
                Uuid::from_slice(d.take(16)?).map_err(|e| Error::Storage(e.to_string()))?,
            ),
        };
        let version = d.u64()?;
        let payload: Payload = serde_json::from_slice(d.bytes()?).map_err(json_err)?;
        let mut vectors = NamedVectors::new();
        for _ in 0..d.u32()? {
            let name = String::from_utf8_lossy(d.bytes()?).into_owned();
            let v = match d.u8()? {
                0 => Vector::Dense(d.f32s()?),
                _ => Vector::Sparse(SparseVector {
                    indices: d.u32s()?,
                    values: d.f32s()?,
                }),
            };
            vectors.insert(name, v);
        }
        records.push((slot, id, version, payload, vectors));
    }
    let mut indexes: BTreeMap<String, Box<dyn VectorIndex>> = BTreeMap::new();
    for _ in 0..d.u32()? {
        let name = String::from_utf8_lossy(d.bytes()?).into_owned();
        let saved = d.bytes()?;
        if let Some(p) = header.config.vectors.get(&name) {
            match HnswIndex::load(saved, p.size, p.distance, header.config.hnsw_for(&name)) {
                Ok(index) => {
                    indexes.insert(name, Box::new(index));
                }
                Err(e) => {
                    tracing::warn!(collection = %header.name, vector = %name, error = %e, "rebuilding HNSW index")
                }
            }
        }
    }
    let points = Points::restore(
        &header.config,
        seq,
        records,
        header.tombstones.into_iter().collect(),
        indexes,
        &header.payload_indexes,
    )?;
    Ok(Collection::from_points(header.name, header.config, points))
}

/// Writes `bytes` to `path` atomically and durably.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("snap.tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}
