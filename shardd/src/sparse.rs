//! The sparse vector index: an inverted index from dimension to the slots that use it.

use std::collections::{BTreeMap, HashMap};

use crate::point::SparseVector;

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

    /// Inverse document frequency of a dimension (the BM25 form Qdrant uses).
    pub fn idf(&self, dim: u32) -> f32 {
        let n = self.postings.get(&dim).map_or(0, BTreeMap::len) as f32;
        let total = self.vectors as f32;
        (((total - n + 0.5) / (n + 0.5)) + 1.0).ln()
    }

    /// Dot-product scores of every allowed slot sharing a dimension with `query`.
    pub fn score(
        &self,
        query: &SparseVector,
        idf: bool,
        allow: Option<&dyn Fn(u32) -> bool>,
    ) -> HashMap<u32, f32> {
        let mut scores: HashMap<u32, f32> = HashMap::new();
        for (&dim, &q) in query.indices.iter().zip(&query.values) {
            let Some(postings) = self.postings.get(&dim) else {
                continue;
            };
            let weight = if idf { q * self.idf(dim) } else { q };
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
        let s = idx.score(&q, false, None);
        assert_eq!(s[&0], a.dot(&q));
        assert_eq!(s[&1], b.dot(&q));
        idx.remove(1, &b);
        assert_eq!(idx.score(&q, false, None).len(), 1);
        assert!(idx.score(&q, false, Some(&|s| s != 0)).is_empty());
    }

    #[test]
    fn rare_dimensions_weigh_more_with_idf() {
        let mut idx = SparseIndex::default();
        for slot in 0..10 {
            idx.insert(slot, &sv(&[(1, 1.0)]));
        }
        idx.insert(10, &sv(&[(1, 1.0), (2, 1.0)]));
        assert!(idx.idf(2) > idx.idf(1));
    }
}
