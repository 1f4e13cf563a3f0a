//! Search planning and execution: exact scan or HNSW walk per query, filters, thresholds, paging.
//!
//! Whatever the plan, final scores are computed by the same exact distance function over the
//! stored vectors, and ties are broken by point id, so every plan (and every shard) ranks the
//! same points identically.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

use crate::engine::collection::{Collection, DenseStore, FilterPlan, Points};
use crate::engine::filter::Filter;
use crate::engine::params::vector_label;
use crate::engine::params::{Distance, Modifier};
use crate::engine::payload::WithPayload;
use crate::engine::point::{check_finite, PointId, ScoredPoint, SparseVector, WithVector};
use crate::engine::sparse::IdfStats;
use crate::error::{Error, Result};

/// A query vector: dense or sparse.
#[derive(Clone, Debug, PartialEq)]
pub enum QueryVector {
    /// A dense query, searched over a dense vector name.
    Dense(Vec<f32>),
    /// A sparse query, searched over a sparse vector name.
    Sparse(SparseVector),
}

/// Per-query search knobs (Qdrant's `params`); unknown ones are accepted and ignored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SearchParams {
    /// Candidates to explore in the graph; defaults to the collection's `ef_construct`.
    pub hnsw_ef: Option<usize>,
    /// Scan every candidate exactly instead of walking the graph.
    #[serde(default)]
    pub exact: bool,
}

/// One nearest-neighbour search on one collection.
#[derive(Clone, Debug, PartialEq)]
pub struct SearchRequest {
    /// The vector name to search (`""` for the unnamed one).
    pub using: String,
    /// The query.
    pub vector: QueryVector,
    /// Only points matching this are returned.
    pub filter: Option<Filter>,
    /// How many points to return.
    pub limit: usize,
    /// How many of the best points to skip first.
    pub offset: usize,
    /// Points scoring worse than this are dropped.
    pub score_threshold: Option<f32>,
    /// Search knobs.
    pub params: SearchParams,
    /// Payload to return.
    pub with_payload: WithPayload,
    /// Vectors to return.
    pub with_vector: WithVector,
    /// Collection-wide document frequencies for an idf-weighted sparse search (from the
    /// router); without them the shard uses its own.
    pub idf: Option<IdfStats>,
}

impl SearchRequest {
    /// A search for the `limit` points nearest `vector` in `using`, with a query body's
    /// defaults: no filter, no offset, neither payloads nor vectors.
    pub fn nearest(using: String, vector: QueryVector, limit: usize) -> SearchRequest {
        SearchRequest {
            using,
            vector,
            filter: None,
            limit,
            offset: 0,
            score_threshold: None,
            params: SearchParams::default(),
            with_payload: WithPayload::All(false),
            with_vector: WithVector::All(false),
            idf: None,
        }
    }
}

/// How a search was carried out, for metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Every candidate scored exactly (small, selective, or asked for).
    Exact,
    /// HNSW graph walk.
    Hnsw,
    /// HNSW graph walk restricted by a filter.
    HnswFiltered,
    /// The graph walk found fewer than asked, so the candidates were scanned exactly.
    ExactFallback,
    /// Sparse inverted-index scoring (always exact).
    Sparse,
}

impl Plan {
    /// The plan's metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Plan::Exact => "exact",
            Plan::Hnsw => "hnsw",
            Plan::HnswFiltered => "hnsw_filtered",
            Plan::ExactFallback => "exact_fallback",
            Plan::Sparse => "sparse",
        }
    }
}

/// A scored candidate: (score, id, slot).
type Hit = (f32, PointId, u32);

impl Collection {
    /// Runs one search and reports how it was planned (vectors, and the filter if any).
    pub fn search(
        &self,
        req: &SearchRequest,
    ) -> Result<(Vec<ScoredPoint>, Plan, Option<FilterPlan>)> {
        let points = self.read();
        let k = req.offset + req.limit;
        let filtered = req.filter.as_ref().map(|f| points.filter_slots(f));
        let filter_plan = filtered.as_ref().map(|f| f.1);
        let allowed = filtered.map(|f| f.0);
        let (mut hits, plan, distance) = match &req.vector {
            QueryVector::Dense(q) => {
                let store = points
                    .dense
                    .get(&req.using)
                    .ok_or_else(|| self.unknown_vector(&req.using, "dense"))?;
                if q.len() != store.dim {
                    return Err(Error::bad(format!(
                        "query vector has dimension {}, expected {} (collection `{}`, {})",
                        q.len(),
                        store.dim,
                        self.name,
                        vector_label(&req.using)
                    )));
                }
                check_finite("query", q)?;
                let mut q = q.clone();
                store.distance.prepare(&mut q);
                let (hits, plan) =
                    dense_search(&points, store, &q, allowed.as_deref(), k, req.params)?;
                (hits, plan, store.distance)
            }
            QueryVector::Sparse(q) => {
                let store = points
                    .sparse
                    .get(&req.using)
                    .ok_or_else(|| self.unknown_vector(&req.using, "sparse"))?;
                let mut q = q.clone();
                q.validate("query")?;
                let bits = allowed.as_deref().map(|a| bitset(a, &points));
                let allow = bits
                    .as_ref()
                    .map(|b| move |s: u32| b.get(s as usize).copied().unwrap_or(false));
                let stats = (store.modifier == Modifier::Idf).then(|| {
                    req.idf
                        .clone()
                        .unwrap_or_else(|| store.index.stats(&q.indices))
                });
                let scores = store.index.score(
                    &q,
                    stats.as_ref(),
                    allow.as_ref().map(|f| f as &dyn Fn(u32) -> bool),
                );
                let hits = scores
                    .into_iter()
                    .filter_map(|(slot, score)| Some((score, points.id_of(slot)?, slot)))
                    .collect();
                (hits, Plan::Sparse, Distance::Dot)
            }
        };
        top_k(&mut hits, k, distance);
        let out = hits
            .into_iter()
            .filter(|h| distance.passes(h.0, req.score_threshold))
            .skip(req.offset)
            .take(req.limit)
            .map(|(score, _, slot)| points.found(slot, score, &req.with_payload, &req.with_vector))
            .collect();
        Ok((out, plan, filter_plan))
    }
}

fn bitset(slots: &[u32], points: &Points) -> Vec<bool> {
    let len = slots.last().map_or(0, |&s| s as usize + 1);
    let mut bits = vec![false; len];
    for &s in slots {
        bits[s as usize] = true;
    }
    debug_assert!(slots.iter().all(|&s| points.id_of(s).is_some()));
    bits
}

fn dense_search(
    points: &Points,
    store: &DenseStore,
    q: &[f32],
    allowed: Option<&[u32]>,
    k: usize,
    params: SearchParams,
) -> Result<(Vec<Hit>, Plan)> {
    let score = |slot: u32| -> Option<Hit> {
        Some((
            store.distance.score(q, store.get(slot)?),
            points.id_of(slot)?,
            slot,
        ))
    };
    let candidates = allowed.map_or(store.len(), <[u32]>::len);
    let small = candidates * store.dim * 4 / 1024 < store.hnsw.full_scan_threshold;
    if !(params.exact || small || store.index.is_empty()) {
        let ef = params.hnsw_ef.unwrap_or(store.hnsw.ef_construct).max(k);
        // The graph measures rounded (bfloat16) vectors: take up to 2k candidates, free while
        // ef covers them, and let exact rescoring pick the k best.
        let wanted = k.max(ef.min(2 * k));
        let found = match allowed {
            None => store.index.search(q, wanted, ef, None)?,
            Some(slots) => {
                let bits = bitset(slots, points);
                store.index.search(
                    q,
                    wanted,
                    ef,
                    Some(&|s| bits.get(s as usize).copied().unwrap_or(false)),
                )?
            }
        };
        if found.len() >= k.min(candidates) {
            let plan = if allowed.is_some() {
                Plan::HnswFiltered
            } else {
                Plan::Hnsw
            };
            return Ok((found.into_iter().filter_map(score).collect(), plan));
        }
        let hits = match allowed {
            Some(slots) => slots.iter().filter_map(|&s| score(s)).collect(),
            None => store.slots().filter_map(score).collect(),
        };
        return Ok((hits, Plan::ExactFallback));
    }
    let hits = match allowed {
        Some(slots) => slots.iter().filter_map(|&s| score(s)).collect(),
        None => store.slots().filter_map(score).collect(),
    };
    Ok((hits, Plan::Exact))
}

/// Keeps the best `k` hits, sorted best first, ties by ascending id.
fn top_k(hits: &mut Vec<Hit>, k: usize, distance: Distance) {
    let cmp = |a: &Hit, b: &Hit| -> Ordering { distance.cmp_scores(a.0, b.0).then(a.1.cmp(&b.1)) };
    if k == 0 {
        hits.clear();
        return;
    }
    if hits.len() > k {
        hits.select_nth_unstable_by(k - 1, cmp);
        hits.truncate(k);
    }
    hits.sort_unstable_by(cmp);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::request::CreateCollection;
    use crate::engine::point::PointWrite;
    use crate::engine::point::Vector;
    use rand::{Rng, SeedableRng};
    use serde_json::json;

    fn collection(distance: &str, full_scan_kb: usize) -> Collection {
        let req: CreateCollection = serde_json::from_value(json!({
            "vectors": {"size": 8, "distance": distance},
            "hnsw_config": {"full_scan_threshold": full_scan_kb, "ef_construct": 64}
        }))
        .unwrap();
        Collection::new("c".into(), req.into_config().unwrap()).unwrap()
    }

    fn fill(c: &Collection, n: u64) -> Vec<Vec<f32>> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let data: Vec<Vec<f32>> = (0..n)
            .map(|_| (0..8).map(|_| rng.random_range(-1.0..1.0)).collect())
            .collect();
        let writes = data
            .iter()
            .enumerate()
            .map(|(i, v)| PointWrite {
                id: PointId::Num(i as u64),
                vectors: [(String::new(), Vector::Dense(v.clone()))].into(),
                payload: json!({"even": i % 2 == 0, "rare": i % 97 == 0})
                    .as_object()
                    .unwrap()
                    .clone(),
            })
            .collect();
        let writes = c.validate(writes).unwrap();
        c.write().upsert(1, 0, writes).unwrap();
        data
    }

    fn request(q: Vec<f32>, filter: Option<serde_json::Value>, limit: usize) -> SearchRequest {
        SearchRequest {
            filter: filter.map(|f| serde_json::from_value(f).unwrap()),
            ..SearchRequest::nearest(String::new(), QueryVector::Dense(q), limit)
        }
    }

    #[test]
    fn small_collections_are_scanned_exactly() {
        let c = collection("Euclid", 10_000);
        let data = fill(&c, 300);
        let (hits, plan, _) = c.search(&request(data[5].clone(), None, 3)).unwrap();
        assert_eq!(plan, Plan::Exact);
        assert_eq!(hits[0].id, PointId::Num(5));
        assert_eq!(hits[0].score, 0.0);
    }

    #[test]
    fn selective_filters_never_return_fewer_than_k() {
        let c = collection("Dot", 0);
        let data = fill(&c, 3000);
        let rare = json!({"must": [{"key": "rare", "match": {"value": true}}]});
        let (hits, plan, _) = c.search(&request(data[0].clone(), Some(rare), 10)).unwrap();
        assert_eq!(hits.len(), 10);
        assert!(matches!(plan, Plan::HnswFiltered | Plan::ExactFallback));
        assert!(hits
            .iter()
            .all(|h| matches!(h.id, PointId::Num(i) if i % 97 == 0)));
        let (hits, plan, _) = c.search(&request(data[0].clone(), None, 10)).unwrap();
        assert_eq!((hits.len(), plan), (10, Plan::Hnsw));
    }

    #[test]
    fn offset_threshold_and_ties_are_deterministic() {
        let c = collection("Dot", 10_000);
        let writes = (0..5)
            .map(|i| PointWrite {
                id: PointId::Num(10 - i),
                vectors: [(String::new(), Vector::Dense(vec![1.0; 8]))].into(),
                payload: Default::default(),
            })
            .collect();
        c.write().upsert(1, 0, c.validate(writes).unwrap()).unwrap();
        let mut req = request(vec![1.0; 8], None, 2);
        req.offset = 1;
        let (hits, _, _) = c.search(&req).unwrap();
        assert_eq!(
            hits.iter().map(|h| h.id).collect::<Vec<_>>(),
            vec![PointId::Num(7), PointId::Num(8)]
        );
        req.score_threshold = Some(8.5);
        assert!(c.search(&req).unwrap().0.is_empty());
    }
}
