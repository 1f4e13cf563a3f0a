//! The dense vector index: an HNSW graph (usearch) keyed by point slot, behind [`VectorIndex`].
//!
//! The index knows vectors and slots only; payloads and filters live elsewhere and reach it as
//! an `allow` predicate over slots.

use std::sync::{Condvar, Mutex, MutexGuard};

use usearch::{Index, IndexOptions, MetricKind, ScalarKind};

use crate::distance::l1;
use crate::error::{Error, Result};
use crate::params::{Distance, HnswConfig};

/// An approximate nearest-neighbour index over dense vectors identified by slot.
pub trait VectorIndex: Send + Sync {
    /// Inserts vectors (already prepared for the distance); slots must not be present.
    fn add(&mut self, items: &[(u32, &[f32])]) -> Result<()>;
    /// Removes a slot; absent slots are ignored.
    fn remove(&mut self, slot: u32) -> Result<()>;
    /// Up to `k` candidate slots nearest to `query`, best first, exploring `ef` candidates,
    /// restricted to slots for which `allow` holds.
    fn search(
        &self,
        query: &[f32],
        k: usize,
        ef: usize,
        allow: Option<&dyn Fn(u32) -> bool>,
    ) -> Result<Vec<u32>>;
    /// Number of indexed vectors.
    fn len(&self) -> usize;
    /// Whether the index holds no vectors.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The index as bytes, for snapshots.
    fn save(&self) -> Result<Vec<u8>>;
}

/// The usearch HNSW graph.
pub struct HnswIndex {
    index: Index,
    gate: EfGate,
    threads: usize,
}

fn engine_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Storage(format!("hnsw {what}: {e}"))
}

/// How many usearch thread contexts an index reserves; also the cap on concurrent searches.
fn thread_budget() -> usize {
    std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .max(2)
        * 2
}

impl HnswIndex {
    /// An empty index for `dim`-dimensional vectors.
    pub fn new(dim: usize, distance: Distance, hnsw: HnswConfig) -> Result<Self> {
        let options = IndexOptions {
            dimensions: dim,
            metric: match distance {
                Distance::Cosine | Distance::Dot => MetricKind::IP,
                Distance::Euclid | Distance::Manhattan => MetricKind::L2sq,
            },
            quantization: ScalarKind::F32,
            connectivity: hnsw.m,
            expansion_add: hnsw.ef_construct,
            expansion_search: hnsw.ef_construct,
            multi: false,
        };
        let mut index = Index::new(&options).map_err(|e| engine_err("create", e))?;
        set_metric(&mut index, dim, distance);
        let threads = thread_budget();
        index
            .reserve_capacity_and_threads(0, threads)
            .map_err(|e| engine_err("reserve", e))?;
        Ok(HnswIndex {
            index,
            gate: EfGate::new(threads, hnsw.ef_construct),
            threads,
        })
    }

    /// Restores an index saved by [`VectorIndex::save`] with the same parameters.
    pub fn load(bytes: &[u8], dim: usize, distance: Distance, hnsw: HnswConfig) -> Result<Self> {
        let mut me = Self::new(dim, distance, hnsw)?;
        me.index
            .load_from_buffer(bytes)
            .map_err(|e| engine_err("load", e))?;
        if me.index.dimensions() != dim {
            return Err(engine_err(
                "load",
                format!(
                    "saved index has {} dimensions, expected {dim}",
                    me.index.dimensions()
                ),
            ));
        }
        set_metric(&mut me.index, dim, distance);
        me.index.change_expansion_add(hnsw.ef_construct);
        me.index.change_expansion_search(hnsw.ef_construct);
        let capacity = me.index.capacity().max(me.index.size());
        me.index
            .reserve_capacity_and_threads(capacity, me.threads)
            .map_err(|e| engine_err("reserve", e))?;
        Ok(me)
    }
}

/// usearch has no L1 kernel: Manhattan gets a Rust one. Loading a saved index resets the
/// metric to the header's kind, so this runs after every load too.
fn set_metric(index: &mut Index, dim: usize, distance: Distance) {
    if distance == Distance::Manhattan {
        index.change_metric::<f32>(Box::new(move |a, b| {
            // SAFETY: usearch hands the metric two vectors of the index's `dim` floats.
            let (a, b) = unsafe {
                (
                    std::slice::from_raw_parts(a, dim),
                    std::slice::from_raw_parts(b, dim),
                )
            };
            l1(a, b)
        }));
    }
}

impl VectorIndex for HnswIndex {
    fn add(&mut self, items: &[(u32, &[f32])]) -> Result<()> {
        let needed = self.index.size() + items.len();
        if needed > self.index.capacity() {
            let capacity = needed.max(self.index.capacity() * 2).max(1024);
            self.index
                .reserve_capacity_and_threads(capacity, self.threads)
                .map_err(|e| engine_err("reserve", e))?;
        }
        let workers = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(items.len() / 256 + 1);
        let index = &self.index;
        let chunk = items.len().div_ceil(workers.max(1)).max(1);
        std::thread::scope(|s| {
            let handles: Vec<_> = items
                .chunks(chunk)
                .map(|part| {
                    s.spawn(move || {
                        part.iter().try_for_each(|(slot, v)| {
                            index
                                .add(u64::from(*slot), v)
                                .map_err(|e| engine_err("add", e))
                        })
                    })
                })
                .collect();
            handles.into_iter().try_for_each(|h| {
                h.join()
                    .map_err(|_| Error::Storage("hnsw add worker panicked".into()))?
            })
        })
    }

    fn remove(&mut self, slot: u32) -> Result<()> {
        self.index
            .remove(u64::from(slot))
            .map_err(|e| engine_err("remove", e))?;
        Ok(())
    }

    fn search(
        &self,
        query: &[f32],
        k: usize,
        ef: usize,
        allow: Option<&dyn Fn(u32) -> bool>,
    ) -> Result<Vec<u32>> {
        let _in = self.gate.enter(ef, &self.index);
        let matches = match allow {
            None => self.index.search(query, k),
            Some(allow) => self
                .index
                .filtered_search(query, k, |key| allow(key as u32)),
        }
        .map_err(|e| engine_err("search", e))?;
        Ok(matches.keys.iter().map(|&k| k as u32).collect())
    }

    fn len(&self) -> usize {
        self.index.size()
    }

    fn save(&self) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; self.index.serialized_length()];
        self.index
            .save_to_buffer(&mut buf)
            .map_err(|e| engine_err("save", e))?;
        Ok(buf)
    }
}

/// Lets searches with the same `ef` run together, and switches usearch's index-wide
/// `expansion_search` only when no search is in flight.
///
/// usearch reads `ef` from the index configuration at the start of every search, so a query's
/// own `ef` is honoured by grouping: concurrent searches share one value, a search with another
/// value waits for the current group to drain (and newcomers queue behind it, so no group
/// starves). The gate also caps concurrent searches at the reserved thread contexts.
struct EfGate {
    state: Mutex<GateState>,
    changed: Condvar,
    max_active: usize,
}

struct GateState {
    ef: usize,
    active: usize,
    waiting_other: usize,
}

struct GateGuard<'a>(&'a EfGate);

impl EfGate {
    fn new(max_active: usize, ef: usize) -> Self {
        EfGate {
            state: Mutex::new(GateState {
                ef,
                active: 0,
                waiting_other: 0,
            }),
            changed: Condvar::new(),
            max_active,
        }
    }

    fn lock(&self) -> MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn enter(&self, ef: usize, index: &Index) -> GateGuard<'_> {
        let mut s = self.lock();
        let mut queued = false;
        loop {
            if s.active == 0 {
                if s.ef != ef {
                    index.change_expansion_search(ef);
                    s.ef = ef;
                }
                break;
            }
            if s.ef == ef && s.active < self.max_active && (s.waiting_other == 0 || queued) {
                break;
            }
            if s.ef != ef && !queued {
                s.waiting_other += 1;
                queued = true;
            }
            s = self.changed.wait(s).unwrap_or_else(|p| p.into_inner());
        }
        if queued {
            s.waiting_other -= 1;
        }
        s.active += 1;
        GateGuard(self)
    }
}

impl Drop for GateGuard<'_> {
    fn drop(&mut self) {
        let mut s = self.0.lock();
        s.active -= 1;
        drop(s);
        self.0.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn random(n: usize, dim: usize, seed: u64) -> Vec<Vec<f32>> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        (0..n)
            .map(|_| (0..dim).map(|_| rng.random::<f32>()).collect())
            .collect()
    }

    fn brute(data: &[Vec<f32>], q: &[f32], k: usize, d: Distance) -> Vec<u32> {
        let mut all: Vec<(f32, u32)> = data
            .iter()
            .enumerate()
            .map(|(i, v)| (d.score(q, v), i as u32))
            .collect();
        all.sort_by(|a, b| d.cmp_scores(a.0, b.0).then(a.1.cmp(&b.1)));
        all.into_iter().take(k).map(|p| p.1).collect()
    }

    #[test]
    fn recall_is_high_for_every_distance_and_survives_save_load() {
        let data = random(2000, 16, 1);
        let queries = random(20, 16, 2);
        for d in [Distance::Dot, Distance::Euclid, Distance::Manhattan] {
            let cfg = HnswConfig {
                m: 16,
                ef_construct: 64,
                full_scan_threshold: 0,
            };
            let mut idx = HnswIndex::new(16, d, cfg).unwrap();
            let items: Vec<(u32, &[f32])> = data
                .iter()
                .enumerate()
                .map(|(i, v)| (i as u32, v.as_slice()))
                .collect();
            idx.add(&items).unwrap();
            let idx = HnswIndex::load(&idx.save().unwrap(), 16, d, cfg).unwrap();
            let mut hits = 0;
            for q in &queries {
                let got = idx.search(q, 10, 128, None).unwrap();
                let want = brute(&data, q, 10, d);
                hits += got.iter().filter(|s| want.contains(s)).count();
            }
            assert!(hits >= 190, "{d:?}: recall {hits}/200");
        }
    }

    #[test]
    fn removed_and_disallowed_slots_never_come_back() {
        let data = random(500, 8, 3);
        let mut idx = HnswIndex::new(8, Distance::Euclid, HnswConfig::default()).unwrap();
        let items: Vec<(u32, &[f32])> = data
            .iter()
            .enumerate()
            .map(|(i, v)| (i as u32, v.as_slice()))
            .collect();
        idx.add(&items).unwrap();
        for s in 0..250 {
            idx.remove(s).unwrap();
        }
        assert_eq!(idx.len(), 250);
        let got = idx
            .search(&data[0], 50, 100, Some(&|s| s % 2 == 0))
            .unwrap();
        assert!(!got.is_empty());
        assert!(got.iter().all(|&s| s >= 250 && s % 2 == 0));
    }
}
