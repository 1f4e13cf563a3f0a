//! The dense vector index: an HNSW graph keyed by point slot, behind [`VectorIndex`].
//!
//! The index knows vectors and slots only; payloads and filters live elsewhere and reach it as
//! an `allow` predicate over slots.
//!
//! Layout follows hnswlib: each node's level-0 links and its vector sit in one block of a flat
//! array, so a hop touches one region of memory, and the next neighbour's block is prefetched
//! while the current one is scored. The graph keeps its vectors in bfloat16: half the memory
//! traffic per hop at f32's range. Its distances are therefore approximate; callers rescore the
//! candidates with the exact f32 vectors they keep, so reported scores and order are exact. Upper levels (about 1 node in `m`) keep small link lists
//! of their own. The search `ef` is a per-call argument, so concurrent queries with different
//! `ef` never wait on each other.
//!
//! Removal marks a node dead: it still routes searches but is never returned. When dead nodes
//! outnumber live ones the graph is rebuilt from the live vectors, which bounds the waste at 2x.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::collections::HashMap;
use std::sync::Mutex;

use crate::engine::distance::{dot_bf16, from_bf16, l1_bf16, l2sq_bf16, to_bf16};
use crate::engine::params::{Distance, HnswConfig};
use crate::error::{Error, Result};

/// Which slots a search may return; `None` allows all.
pub type Allow<'a> = Option<&'a dyn Fn(u32) -> bool>;

/// An approximate nearest-neighbour index over dense vectors identified by slot.
pub trait VectorIndex: Send + Sync {
    /// Inserts vectors (already prepared for the distance); slots must not be present.
    fn add(&mut self, items: &[(u32, &[f32])]) -> Result<()>;
    /// Removes a slot; absent slots are ignored.
    fn remove(&mut self, slot: u32) -> Result<()>;
    /// Up to `k` candidate slots nearest to `query`, best first, exploring `ef` candidates,
    /// restricted to slots for which `allow` holds.
    fn search(&self, query: &[f32], k: usize, ef: usize, allow: Allow) -> Result<Vec<u32>>;
    /// Number of indexed (live) vectors.
    fn len(&self) -> usize;
    /// Whether the index holds no vectors.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The index as bytes, for snapshots.
    fn save(&self) -> Result<Vec<u8>>;
}

/// A distance where smaller is closer, as the graph needs it.
#[derive(Clone, Copy, PartialEq)]
struct Dist(f32);

impl Eq for Dist {}

impl PartialOrd for Dist {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Dist {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

const NONE: u32 = u32::MAX;
const MAGIC: &[u8; 8] = b"VGHNSW1\n";

/// The HNSW graph.
pub struct HnswIndex {
    dim: usize,
    metric: Distance,
    m: usize,
    m0: usize,
    ef_construct: usize,
    /// Per node: `[count, m0 links, dim bfloat16s packed two to a word]`.
    level0: Vec<u32>,
    /// Per node: for levels 1..=level, `[count, m links]` each; empty for level-0 nodes.
    upper: Vec<Vec<u32>>,
    levels: Vec<u8>,
    slot_of: Vec<u32>,
    dead: Vec<bool>,
    node_of: HashMap<u32, u32>,
    dead_count: usize,
    entry: u32,
    max_level: usize,
    rng: u64,
    visited: Mutex<Vec<Visited>>,
}

/// Marks visited nodes with an epoch so clearing is O(1) per search.
struct Visited {
    marks: Vec<u32>,
    epoch: u32,
}

impl Visited {
    fn reset(&mut self, n: usize) {
        if self.marks.len() < n {
            self.marks.resize(n, 0);
        }
        self.epoch = self.epoch.wrapping_add(1);
        if self.epoch == 0 {
            self.marks.fill(0);
            self.epoch = 1;
        }
    }

    /// Marks `node`, returning whether it was already marked.
    #[inline]
    fn check_and_mark(&mut self, node: u32) -> bool {
        let m = &mut self.marks[node as usize];
        let seen = *m == self.epoch;
        *m = self.epoch;
        seen
    }
}

#[inline]
fn prefetch(p: *const u32) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetching is a hint and never faults, whatever the address.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p as *const i8)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

impl HnswIndex {
    /// An empty index for `dim`-dimensional vectors.
    pub fn new(dim: usize, distance: Distance, hnsw: HnswConfig) -> Result<Self> {
        if dim == 0 {
            return Err(Error::bad("vectors need at least one dimension"));
        }
        Ok(HnswIndex {
            dim,
            metric: distance,
            m: hnsw.m,
            m0: hnsw.m * 2,
            ef_construct: hnsw.ef_construct,
            level0: Vec::new(),
            upper: Vec::new(),
            levels: Vec::new(),
            slot_of: Vec::new(),
            dead: Vec::new(),
            node_of: HashMap::new(),
            dead_count: 0,
            entry: NONE,
            max_level: 0,
            rng: 0x9E37_79B9_7F4A_7C15,
            visited: Mutex::new(Vec::new()),
        })
    }

    #[inline]
    fn stride(&self) -> usize {
        1 + self.m0 + self.dim.div_ceil(2)
    }

    fn nodes(&self) -> usize {
        self.slot_of.len()
    }

    #[inline]
    fn vector(&self, node: u32) -> &[u16] {
        let start = node as usize * self.stride() + 1 + self.m0;
        let words = &self.level0[start..start + self.dim.div_ceil(2)];
        // SAFETY: the words hold at least `dim` u16s, and u32 alignment satisfies u16's.
        unsafe { std::slice::from_raw_parts(words.as_ptr() as *const u16, self.dim) }
    }

    /// A stored vector widened to f32, to measure from it.
    fn decode(&self, node: u32) -> Vec<f32> {
        self.vector(node).iter().map(|&x| from_bf16(x)).collect()
    }

    #[inline]
    fn links(&self, node: u32, level: usize) -> &[u32] {
        if level == 0 {
            let base = node as usize * self.stride();
            let n = self.level0[base] as usize;
            &self.level0[base + 1..base + 1 + n]
        } else {
            let base = (level - 1) * (self.m + 1);
            let list = &self.upper[node as usize];
            let n = list[base] as usize;
            &list[base + 1..base + 1 + n]
        }
    }

    fn set_links(&mut self, node: u32, level: usize, links: &[u32]) {
        if level == 0 {
            let base = node as usize * self.stride();
            self.level0[base] = links.len() as u32;
            self.level0[base + 1..base + 1 + links.len()].copy_from_slice(links);
        } else {
            let base = (level - 1) * (self.m + 1);
            let list = &mut self.upper[node as usize];
            list[base] = links.len() as u32;
            list[base + 1..base + 1 + links.len()].copy_from_slice(links);
        }
    }

    /// The graph's distance from an f32 query to a stored vector: smaller is closer.
    #[inline]
    fn dist(&self, q: &[f32], v: &[u16]) -> Dist {
        Dist(match self.metric {
            Distance::Cosine | Distance::Dot => -dot_bf16(q, v),
            Distance::Euclid => l2sq_bf16(q, v),
            Distance::Manhattan => l1_bf16(q, v),
        })
    }

    fn random_level(&mut self) -> usize {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let u = ((self.rng >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        ((-u.ln() / (self.m as f64).ln()) as usize).min(32)
    }

    fn greedy(&self, q: &[f32], mut cur: u32, mut d: Dist, level: usize) -> (u32, Dist) {
        loop {
            let mut moved = false;
            for &n in self.links(cur, level) {
                let dn = self.dist(q, self.vector(n));
                if dn < d {
                    d = dn;
                    cur = n;
                    moved = true;
                }
            }
            if !moved {
                return (cur, d);
            }
        }
    }

    /// Best-first search of one level. Every node routes; only those `keep` accepts are
    /// returned (ascending by distance, at most `ef`).
    fn search_level(
        &self,
        q: &[f32],
        entry: u32,
        ef: usize,
        level: usize,
        keep: &dyn Fn(u32) -> bool,
    ) -> Vec<(Dist, u32)> {
        let mut visited = self
            .visited
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop()
            .unwrap_or(Visited {
                marks: Vec::new(),
                epoch: 0,
            });
        visited.reset(self.nodes());
        let mut candidates: BinaryHeap<Reverse<(Dist, u32)>> = BinaryHeap::with_capacity(ef * 2);
        let mut results: BinaryHeap<(Dist, u32)> = BinaryHeap::with_capacity(ef + 1);
        let d = self.dist(q, self.vector(entry));
        visited.check_and_mark(entry);
        candidates.push(Reverse((d, entry)));
        if keep(entry) {
            results.push((d, entry));
        }
        let mut bound = if results.is_empty() {
            Dist(f32::INFINITY)
        } else {
            d
        };
        let stride = self.stride();
        while let Some(Reverse((d, c))) = candidates.pop() {
            if d > bound && results.len() >= ef {
                break;
            }
            let links = self.links(c, level);
            if level == 0 {
                if let Some(&first) = links.first() {
                    prefetch(self.level0[first as usize * stride..].as_ptr());
                }
            }
            for (i, &n) in links.iter().enumerate() {
                if level == 0 {
                    if let Some(&next) = links.get(i + 1) {
                        prefetch(self.level0[next as usize * stride + 1 + self.m0..].as_ptr());
                    }
                }
                if visited.check_and_mark(n) {
                    continue;
                }
                let dn = self.dist(q, self.vector(n));
                if results.len() < ef || dn < bound {
                    candidates.push(Reverse((dn, n)));
                    if keep(n) {
                        results.push((dn, n));
                        if results.len() > ef {
                            results.pop();
                        }
                    }
                    if let Some(&(worst, _)) = results.peek() {
                        bound = worst;
                    }
                }
            }
        }
        self.visited
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(visited);
        results.into_sorted_vec()
    }

    /// hnswlib's neighbour heuristic: keep a candidate only if it is closer to the base than to
    /// every neighbour already kept, which spreads links in different directions.
    fn select_neighbors(&self, sorted: &[(Dist, u32)], max: usize) -> Vec<u32> {
        let mut kept: Vec<u32> = Vec::with_capacity(max);
        for &(d, c) in sorted {
            if kept.len() >= max {
                break;
            }
            let v = self.decode(c);
            if kept.iter().all(|&k| self.dist(&v, self.vector(k)) >= d) {
                kept.push(c);
            }
        }
        kept
    }

    fn insert(&mut self, slot: u32, v: &[f32]) {
        let node = self.nodes() as u32;
        let level = self.random_level();
        let stride = self.stride();
        self.level0.resize(self.level0.len() + stride, 0);
        let start = node as usize * stride + 1 + self.m0;
        for (i, pair) in v.chunks(2).enumerate() {
            let lo = u32::from(to_bf16(pair[0]));
            let hi = pair.get(1).map_or(0, |&x| u32::from(to_bf16(x)));
            self.level0[start + i] = if cfg!(target_endian = "little") {
                lo | hi << 16
            } else {
                hi | lo << 16
            };
        }
        self.upper.push(vec![0; level * (self.m + 1)]);
        self.levels.push(level as u8);
        self.slot_of.push(slot);
        self.dead.push(false);
        self.node_of.insert(slot, node);
        if self.entry == NONE {
            self.entry = node;
            self.max_level = level;
            return;
        }
        let v = self.decode(node);
        let (mut cur, mut d) = (self.entry, self.dist(&v, self.vector(self.entry)));
        for l in (level + 1..=self.max_level).rev() {
            (cur, d) = self.greedy(&v, cur, d, l);
        }
        for l in (0..=level.min(self.max_level)).rev() {
            let found = self.search_level(&v, cur, self.ef_construct, l, &|n| n != node);
            let neighbors = self.select_neighbors(&found, self.m);
            self.set_links(node, l, &neighbors);
            let cap = if l == 0 { self.m0 } else { self.m };
            for &n in &neighbors {
                let mut theirs = self.links(n, l).to_vec();
                if theirs.len() < cap {
                    theirs.push(node);
                } else {
                    let base = self.decode(n);
                    let mut scored: Vec<(Dist, u32)> = theirs
                        .iter()
                        .chain(std::iter::once(&node))
                        .map(|&x| (self.dist(&base, self.vector(x)), x))
                        .collect();
                    scored.sort_unstable();
                    theirs = self.select_neighbors(&scored, cap);
                }
                self.set_links(n, l, &theirs);
            }
            if let Some(&(_, best)) = found.first() {
                cur = best;
            }
        }
        if level > self.max_level {
            self.entry = node;
            self.max_level = level;
        }
    }

    /// Rebuilds the graph from the live vectors, dropping dead nodes.
    fn rebuild(&mut self) {
        let live: Vec<(u32, Vec<f32>)> = (0..self.nodes() as u32)
            .filter(|&n| !self.dead[n as usize])
            .map(|n| (self.slot_of[n as usize], self.decode(n)))
            .collect();
        let mut fresh = HnswIndex::new(
            self.dim,
            self.metric,
            HnswConfig {
                m: self.m,
                ef_construct: self.ef_construct,
                full_scan_threshold: 0,
            },
        )
        .expect("same parameters");
        for (slot, v) in &live {
            fresh.insert(*slot, v);
        }
        *self = fresh;
    }

    /// Restores an index saved by [`VectorIndex::save`] with the same parameters.
    pub fn load(bytes: &[u8], dim: usize, distance: Distance, hnsw: HnswConfig) -> Result<Self> {
        let bad = |what: &str| Error::Storage(format!("saved HNSW index: {what}"));
        let mut me = Self::new(dim, distance, hnsw)?;
        let mut words = bytes
            .strip_prefix(MAGIC.as_slice())
            .ok_or_else(|| bad("wrong format"))?
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes")));
        let mut next = || words.next().ok_or_else(|| bad("ends early"));
        if (next()? as usize, next()? as usize) != (dim, me.m) {
            return Err(bad("saved with other dimensions or m"));
        }
        let nodes = next()? as usize;
        me.entry = next()?;
        me.max_level = next()? as usize;
        me.rng = u64::from(next()?) << 32 | u64::from(next()?);
        for _ in 0..nodes {
            let (slot, level, dead) = (next()?, next()? as usize, next()? == 1);
            me.slot_of.push(slot);
            me.levels.push(level as u8);
            me.dead.push(dead);
            if dead {
                me.dead_count += 1;
            } else {
                me.node_of.insert(slot, me.slot_of.len() as u32 - 1);
            }
        }
        me.level0 = (0..nodes * me.stride())
            .map(|_| next())
            .collect::<Result<_>>()?;
        for n in 0..nodes {
            let len = me.levels[n] as usize * (me.m + 1);
            me.upper
                .push((0..len).map(|_| next()).collect::<Result<_>>()?);
        }
        Ok(me)
    }
}

impl VectorIndex for HnswIndex {
    fn add(&mut self, items: &[(u32, &[f32])]) -> Result<()> {
        if let Some((slot, v)) = items.iter().find(|(_, v)| v.len() != self.dim) {
            return Err(Error::bad(format!(
                "slot {slot}: vector has {} dimensions, index has {}",
                v.len(),
                self.dim
            )));
        }
        self.level0.reserve(items.len() * self.stride());
        for (slot, v) in items {
            if self.node_of.contains_key(slot) {
                return Err(Error::Storage(format!("slot {slot} is already indexed")));
            }
            self.insert(*slot, v);
        }
        Ok(())
    }

    fn remove(&mut self, slot: u32) -> Result<()> {
        if let Some(node) = self.node_of.remove(&slot) {
            self.dead[node as usize] = true;
            self.dead_count += 1;
            if self.dead_count > self.node_of.len().max(1024) {
                self.rebuild();
            }
        }
        Ok(())
    }

    fn search(&self, query: &[f32], k: usize, ef: usize, allow: Allow) -> Result<Vec<u32>> {
        if self.entry == NONE || k == 0 {
            return Ok(Vec::new());
        }
        if query.len() != self.dim {
            return Err(Error::bad(format!(
                "query has {} dimensions, index has {}",
                query.len(),
                self.dim
            )));
        }
        let (mut cur, mut d) = (self.entry, self.dist(query, self.vector(self.entry)));
        for l in (1..=self.max_level).rev() {
            (cur, d) = self.greedy(query, cur, d, l);
        }
        let keep =
            |n: u32| !self.dead[n as usize] && allow.is_none_or(|ok| ok(self.slot_of[n as usize]));
        let found = self.search_level(query, cur, ef.max(k), 0, &keep);
        Ok(found
            .into_iter()
            .take(k)
            .map(|(_, n)| self.slot_of[n as usize])
            .collect())
    }

    fn len(&self) -> usize {
        self.node_of.len()
    }

    fn save(&self) -> Result<Vec<u8>> {
        let mut words: Vec<u32> = vec![
            self.dim as u32,
            self.m as u32,
            self.nodes() as u32,
            self.entry,
            self.max_level as u32,
            (self.rng >> 32) as u32,
            self.rng as u32,
        ];
        for n in 0..self.nodes() {
            words.extend([
                self.slot_of[n],
                u32::from(self.levels[n]),
                u32::from(self.dead[n]),
            ]);
        }
        words.extend_from_slice(&self.level0);
        for list in &self.upper {
            words.extend_from_slice(list);
        }
        let mut out = MAGIC.to_vec();
        out.extend(words.iter().flat_map(|w| w.to_le_bytes()));
        Ok(out)
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

    fn build(data: &[Vec<f32>], d: Distance, cfg: HnswConfig) -> HnswIndex {
        let mut idx = HnswIndex::new(data[0].len(), d, cfg).unwrap();
        let items: Vec<(u32, &[f32])> = data
            .iter()
            .enumerate()
            .map(|(i, v)| (i as u32, v.as_slice()))
            .collect();
        idx.add(&items).unwrap();
        idx
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
            let idx = build(&data, d, cfg);
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
        let mut idx = build(&data, Distance::Euclid, HnswConfig::default());
        for s in 0..250 {
            idx.remove(s).unwrap();
        }
        assert_eq!(idx.len(), 250);
        let got = idx
            .search(&data[0], 50, 100, Some(&|s| s % 2 == 0))
            .unwrap();
        assert_eq!(got.len(), 50);
        assert!(got.iter().all(|&s| s >= 250 && s % 2 == 0));
    }

    #[test]
    fn many_removals_trigger_a_rebuild_that_keeps_the_live_points() {
        let data = random(3000, 8, 4);
        let mut idx = build(&data, Distance::Euclid, HnswConfig::default());
        for s in 0..2000 {
            idx.remove(s).unwrap();
        }
        assert!(idx.nodes() < 3000, "dead nodes were not dropped");
        assert_eq!(idx.len(), 1000);
        let reused: Vec<(u32, &[f32])> = (0..10).map(|s| (s as u32, data[s].as_slice())).collect();
        idx.add(&reused).unwrap();
        let got = idx.search(&data[5], 1, 64, None).unwrap();
        assert_eq!(got, vec![5]);
    }
}
