//! The sparse vector index: an inverted index from dimension to the slots that use it.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::engine::hnsw::Allow;
use crate::engine::point::SparseVector;

/// The document frequencies idf is computed from: how many points have the sparse vector, and
/// how many of them use each dimension. Shards sum theirs so that idf is collection-wide.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct IdfStats {
    /// Points with this sparse vector.
    pub total: usize,
    /// Points using each dimension.
    pub df: BTreeMap<u32, usize>,
}

impl IdfStats {
    /// Adds another shard's statistics.
    pub fn add(&mut self, other: &IdfStats) {
        self.total += other.total;
        for (dim, n) in &other.df {
            *self.df.entry(*dim).or_default() += n;
        }
    }

    /// Inverse document frequency of a dimension (the BM25 form Qdrant uses).
    pub fn idf(&self, dim: u32) -> f32 {
        let n = self.df.get(&dim).copied().unwrap_or(0) as f32;
        let total = self.total as f32;
        (((total - n + 0.5) / (n + 0.5)) + 1.0).ln()
    }
}

/// Postings by dimension; scoring touches only the postings of the query's dimensions.
#[derive(Default)]
pub struct SparseIndex {
    postings: HashMap<u32, BTreeMap<u32, f32>>,
    vectors: usize,
}

impl SparseIndex {
    /// Indexes `v` under `slot`.
    pub fn insert(&mut self, slot: u32, v: &SparseVector) {
        for (&i, &x) in v.indices.iter().zip(&v.values) {
            self.postings.entry(i).or_default().insert(slot, x);
        }
        self.vectors += 1;
    }

    /// Removes `v`, previously inserted under `slot`.
    pub fn remove(&mut self, slot: u32, v: &SparseVector) {
        for i in &v.indices {
            if let Some(p) = self.postings.get_mut(i) {
                p.remove(&slot);
                if p.is_empty() {
                    self.postings.remove(i);
                }
            }
        }
        self.vectors -= 1;
    }

    /// This index's document frequencies for `dims`.
    pub fn stats(&self, dims: &[u32]) -> IdfStats {
        IdfStats {
            total: self.vectors,
            df: dims
                .iter()
                .map(|d| (*d, self.postings.get(d).map_or(0, BTreeMap::len)))
                .collect(),
        }
    }

    /// Dot-product scores of every allowed slot sharing a dimension with `query`; with `idf`,
    /// query values are weighted by the inverse document frequency those statistics give.
    pub fn score(
        &self,
        query: &SparseVector,
        idf: Option<&IdfStats>,
        allow: Allow,
    ) -> HashMap<u32, f32> {
        let mut scores: HashMap<u32, f32> = HashMap::new();
        for (&dim, &q) in query.indices.iter().zip(&query.values) {
            let Some(postings) = self.postings.get(&dim) else {
                continue;
            };
            let weight = idf.map_or(q, |stats| q * stats.idf(dim));
            for (&slot, &x) in postings {
                if allow.is_none_or(|ok| ok(slot)) {
                    *scores.entry(slot).or_default() += weight * x;
                }
            }
        }
        scores
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sv(pairs: &[(u32, f32)]) -> SparseVector {
        SparseVector {
            indices: pairs.iter().map(|p| p.0).collect(),
            values: pairs.iter().map(|p| p.1).collect(),
        }
    }

    #[test]
    fn scores_equal_dot_products_and_removal_forgets() {
        let mut idx = SparseIndex::default();
        let a = sv(&[(1, 1.0), (3, 2.0)]);
        let b = sv(&[(3, 1.0), (7, 5.0)]);
        idx.insert(0, &a);
        idx.insert(1, &b);
        let q = sv(&[(3, 0.5), (7, 1.0)]);
        let s = idx.score(&q, None, None);
        assert_eq!(s[&0], a.dot(&q));
        assert_eq!(s[&1], b.dot(&q));
        idx.remove(1, &b);
        assert_eq!(idx.score(&q, None, None).len(), 1);
        assert!(idx.score(&q, None, Some(&|s| s != 0)).is_empty());
    }

    #[test]
    fn rare_dimensions_weigh_more_with_idf() {
        let mut idx = SparseIndex::default();
        for slot in 0..10 {
            idx.insert(slot, &sv(&[(1, 1.0)]));
        }
        idx.insert(10, &sv(&[(1, 1.0), (2, 1.0)]));
        let stats = idx.stats(&[1, 2]);
        assert!(stats.idf(2) > stats.idf(1));
        let (mut a, mut b) = (SparseIndex::default(), SparseIndex::default());
        for slot in 0..11 {
            let v = if slot == 10 {
                sv(&[(1, 1.0), (2, 1.0)])
            } else {
                sv(&[(1, 1.0)])
            };
            if slot % 2 == 0 {
                a.insert(slot, &v)
            } else {
                b.insert(slot, &v)
            }
        }
        let mut summed = a.stats(&[1, 2]);
        summed.add(&b.stats(&[1, 2]));
        assert_eq!(
            summed, stats,
            "shards' statistics add up to the whole collection's"
        );
    }
}
