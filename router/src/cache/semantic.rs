//! The semantic cache: searches kept with their points' vectors, so that a search for a nearby
//! query vector is answered without the shards, its points re-scored against the new query.
//!
//! `exact` mode serves an entry only when it provably holds the same top `k`: for queries `q`
//! and `q'` at distance `d` (L2 between unit vectors for Cosine, L2 for Euclid, L1 for
//! Manhattan), the triangle inequality moves every point's score by at most `d`, so when the
//! entry's gap between its `k`-th and `(k+1)`-th score exceeds `2d`, no point outside its top
//! `k` can pass one inside. (The shards' search is HNSW: an exact answer here equals the
//! shards' answer as far as the graph finds the true neighbours.) `threshold` mode serves the
//! entry whose query is most similar, when the cosine similarity is at least the threshold.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use shardd::engine::distance::dot;
use shardd::engine::params::Distance;
use shardd::engine::search::QueryVector;
use shardd::query::Hit;

use crate::config::SemanticMode;
use crate::scatter::RawHit;

/// Entries kept for one shape of search (collection, generation, vector, filter, params and
/// what the answer returns), the newest first.
const ENTRIES_PER_SHAPE: usize = 256;
/// Slack on the gap test for the rounding of f32 scores.
const EPSILON: f32 = 1e-5;

/// One cached search.
pub struct Entry {
    /// The query, prepared as the shards prepare it (unit length for Cosine).
    query: Vec<f32>,
    /// The points, best first, scored against `query`.
    hits: Vec<RawHit>,
    /// Each point's vector of the searched name.
    vectors: Vec<Vec<f32>>,
    /// The search found fewer points than it asked for: every matching point is here.
    complete: bool,
    /// The write log's sequence number when the search began (precise collections).
    pub seen: u64,
}

impl Entry {
    /// An entry for `hits`, the answer to a search for `query` on `using` that asked for
    /// `asked` points; `None` when a point lacks the searched vector.
    pub fn new(
        query: Vec<f32>,
        hits: Vec<RawHit>,
        using: &str,
        asked: usize,
        seen: u64,
    ) -> Option<Entry> {
        let vectors = hits
            .iter()
            .map(|h| match h.vector(using)? {
                QueryVector::Dense(v) if v.len() == query.len() => Some(v),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Entry {
            complete: hits.len() < asked,
            query,
            hits,
            vectors,
            seen,
        })
    }

    fn bytes(&self) -> usize {
        let vectors: usize = self.vectors.iter().map(|v| v.len() * 4 + 24).sum();
        let raw: usize = self
            .hits
            .iter()
            .map(|h| {
                64 + h.payload.as_ref().map_or(0, |p| p.get().len())
                    + h.vector.as_ref().map_or(0, |v| v.get().len())
            })
            .sum();
        self.query.len() * 4 + vectors + raw + 128
    }
}

/// A lookup: the shape, the prepared query, the limit and how the collection scores.
pub struct Probe<'a> {
    /// The shape of the search (everything but its vector and limit).
    pub shape: u128,
    /// The query, prepared.
    pub query: &'a [f32],
    /// Points asked for.
    pub limit: usize,
    /// The searched vector's distance (not `Dot`: its scores have no bound).
    pub distance: Distance,
    /// `exact` or `threshold`.
    pub mode: SemanticMode,
    /// `threshold` mode's least cosine similarity.
    pub threshold: f32,
}

/// Searches kept for their semantic hits, bounded in bytes and by the cache's TTL.
pub struct Semantic {
    entries: moka::future::Cache<u64, Arc<Entry>>,
    shapes: Mutex<HashMap<u128, VecDeque<u64>>>,
    next: AtomicU64,
}

impl Semantic {
    /// A semantic cache of at most `max_bytes`, entries living `ttl`.
    pub fn new(max_bytes: u64, ttl: Duration) -> Semantic {
        Semantic {
            entries: moka::future::Cache::builder()
                .max_capacity(max_bytes)
                .weigher(|_, e: &Arc<Entry>| u32::try_from(e.bytes()).unwrap_or(u32::MAX))
                .time_to_live(ttl)
                .build(),
            shapes: Mutex::default(),
            next: AtomicU64::new(0),
        }
    }

    /// Keeps `entry` for searches of `shape`.
    pub async fn insert(&self, shape: u128, entry: Entry) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.entries.insert(id, Arc::new(entry)).await;
        let dropped = {
            let mut shapes = self.shapes.lock();
            let ids = shapes.entry(shape).or_default();
            ids.push_front(id);
            (ids.len() > ENTRIES_PER_SHAPE)
                .then(|| ids.pop_back())
                .flatten()
        };
        if let Some(old) = dropped {
            self.entries.invalidate(&old).await;
        }
    }

    /// The answer an entry gives `probe`: its top `limit` points re-scored against the probe's
    /// query, best first; `valid` says whether an entry still stands (the writes since).
    pub async fn find(
        &self,
        probe: &Probe<'_>,
        valid: impl Fn(&Entry) -> bool,
    ) -> Option<Vec<RawHit>> {
        let ids: Vec<u64> = self
            .shapes
            .lock()
            .get(&probe.shape)
            .map(|ids| ids.iter().copied().collect())?;
        let mut best: Option<(f32, Arc<Entry>)> = None;
        let mut gone = Vec::new();
        for id in ids {
            let Some(entry) = self.entries.get(&id).await else {
                gone.push(id);
                continue;
            };
            if entry.query.len() != probe.query.len() || !valid(&entry) {
                continue;
            }
            let rank = match probe.mode {
                SemanticMode::Exact => exact_rank(&entry, probe),
                SemanticMode::Threshold => threshold_rank(&entry, probe),
                SemanticMode::Off => None,
            };
            if let Some(r) = rank {
                if best.as_ref().is_none_or(|(b, _)| r < *b) {
                    best = Some((r, entry));
                }
            }
        }
        if !gone.is_empty() {
            self.forget(probe.shape, &gone);
        }
        let (_, entry) = best?;
        Some(rescored(&entry, probe))
    }

    fn forget(&self, shape: u128, gone: &[u64]) {
        let mut shapes = self.shapes.lock();
        if let Some(ids) = shapes.get_mut(&shape) {
            ids.retain(|id| !gone.contains(id));
            if ids.is_empty() {
                shapes.remove(&shape);
            }
        }
    }

    /// Drops every entry (a purge or a changed shard set).
    pub fn clear(&self) {
        self.shapes.lock().clear();
        self.entries.invalidate_all();
    }

    /// Entries held.
    pub async fn entries(&self) -> u64 {
        self.entries.run_pending_tasks().await;
        self.entries.entry_count()
    }
}

/// How far two queries are apart, in the metric that bounds the distance's score changes: L1
/// for Manhattan, else L2 (the shards' own kernels compute both).
fn query_distance(distance: Distance, a: &[f32], b: &[f32]) -> f32 {
    match distance {
        Distance::Manhattan => Distance::Manhattan.score(a, b),
        _ => Distance::Euclid.score(a, b),
    }
}

/// `exact` mode: the queries' distance when the entry provably holds the probe's top `limit`.
fn exact_rank(entry: &Entry, probe: &Probe) -> Option<f32> {
    let d = query_distance(probe.distance, &entry.query, probe.query);
    let k = probe.limit;
    if entry.hits.len() <= k {
        // Every matching point is in the entry (or it cannot tell).
        return entry.complete.then_some(d);
    }
    let gap = (entry.hits[k - 1].score - entry.hits[k].score).abs();
    (gap > 2.0 * d + EPSILON).then_some(d)
}

/// `threshold` mode: how dissimilar the queries are, when similar enough and the entry holds
/// enough points.
fn threshold_rank(entry: &Entry, probe: &Probe) -> Option<f32> {
    if entry.hits.len() < probe.limit && !entry.complete {
        return None;
    }
    let norms = (dot(&entry.query, &entry.query) * dot(probe.query, probe.query)).sqrt();
    if norms == 0.0 {
        return None;
    }
    let similarity = dot(&entry.query, probe.query) / norms;
    (similarity >= probe.threshold).then_some(1.0 - similarity)
}

/// The entry's points scored against the probe's query, best first, the first `limit`.
fn rescored(entry: &Entry, probe: &Probe) -> Vec<RawHit> {
    let mut scored: Vec<(f32, usize)> = entry
        .vectors
        .iter()
        .enumerate()
        .map(|(i, v)| (probe.distance.score(probe.query, v), i))
        .collect();
    scored.sort_by(|a, b| {
        probe
            .distance
            .cmp_scores(a.0, b.0)
            .then_with(|| entry.hits[a.1].id.cmp(&entry.hits[b.1].id))
    });
    scored
        .into_iter()
        .take(probe.limit)
        .map(|(score, i)| {
            let mut hit = entry.hits[i].clone();
            hit.set_score(score);
            hit
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::value::RawValue;
    use shardd::engine::point::PointId;

    fn unit(v: &[f32]) -> Vec<f32> {
        let mut v = v.to_vec();
        Distance::Cosine.prepare(&mut v);
        v
    }

    /// Points on a circle; the query's answer, scored and ranked as a shard would.
    fn answer(points: &[Vec<f32>], query: &[f32], limit: usize) -> Vec<RawHit> {
        let mut hits: Vec<RawHit> = points
            .iter()
            .enumerate()
            .map(|(i, p)| RawHit {
                id: PointId::Num(i as u64),
                version: 1,
                score: Distance::Cosine.score(query, p),
                payload: None,
                vector: Some(RawValue::from_string(serde_json::to_string(p).unwrap()).unwrap()),
            })
            .collect();
        hits.sort_by(|a, b| Distance::Cosine.cmp_scores(a.score, b.score));
        hits.truncate(limit);
        hits
    }

    fn circle(n: usize) -> Vec<Vec<f32>> {
        (0..n)
            .map(|i| {
                let a = i as f32 * 0.7 + (i * i) as f32 * 0.013;
                unit(&[a.cos(), a.sin(), 0.3])
            })
            .collect()
    }

    fn ids(hits: &[RawHit]) -> Vec<PointId> {
        hits.iter().map(|h| h.id).collect()
    }

    #[tokio::test]
    async fn an_exact_hit_is_served_only_when_the_top_k_provably_stays() {
        let points = circle(50);
        let cache = Semantic::new(1 << 20, Duration::from_secs(60));
        let q = unit(&[1.0, 0.1, 0.2]);
        let (k, m) = (3, 5);
        let entry = Entry::new(q.clone(), answer(&points, &q, k + m), "", k + m, 0).unwrap();
        let gap = entry.hits[k - 1].score - entry.hits[k].score;
        cache.insert(7, entry).await;
        let mut served = 0;
        // Queries ever farther from q: every one served equals the true answer.
        for step in 0..200 {
            let near = unit(&[1.0, 0.1 + step as f32 * 0.002, 0.2]);
            let probe = Probe {
                shape: 7,
                query: &near,
                limit: k,
                distance: Distance::Cosine,
                mode: SemanticMode::Exact,
                threshold: 0.0,
            };
            let d = query_distance(Distance::Cosine, &q, &near);
            match cache.find(&probe, |_| true).await {
                Some(hits) => {
                    assert!(gap > 2.0 * d);
                    let truth = answer(&points, &near, k);
                    assert_eq!(ids(&hits), ids(&truth));
                    for (h, t) in hits.iter().zip(&truth) {
                        assert!((h.score - t.score).abs() < 1e-6);
                    }
                    served += 1;
                }
                None => assert!(gap <= 2.0 * d + EPSILON, "step {step}: not served at d {d}"),
            }
        }
        assert!(served > 0 && served < 200, "{served}");
        // Another shape, or an entry no longer valid, is never served.
        let probe = Probe {
            shape: 8,
            query: &q,
            limit: k,
            distance: Distance::Cosine,
            mode: SemanticMode::Exact,
            threshold: 0.0,
        };
        assert!(cache.find(&probe, |_| true).await.is_none());
        let probe = Probe { shape: 7, ..probe };
        assert!(cache.find(&probe, |_| false).await.is_none());
        assert!(cache.find(&probe, |_| true).await.is_some());
    }

    #[tokio::test]
    async fn a_complete_entry_serves_any_query_with_at_least_its_points() {
        let points = circle(4);
        let cache = Semantic::new(1 << 20, Duration::from_secs(60));
        let q = unit(&[1.0, 0.0, 0.0]);
        cache
            .insert(
                1,
                Entry::new(q.clone(), answer(&points, &q, 10), "", 10, 0).unwrap(),
            )
            .await;
        let far = unit(&[-1.0, 0.5, 0.0]);
        let probe = Probe {
            shape: 1,
            query: &far,
            limit: 5,
            distance: Distance::Cosine,
            mode: SemanticMode::Exact,
            threshold: 0.0,
        };
        let hits = cache.find(&probe, |_| true).await.unwrap();
        assert_eq!(ids(&hits), ids(&answer(&points, &far, 5)));
    }

    #[tokio::test]
    async fn threshold_mode_serves_the_most_similar_query_above_the_threshold() {
        let points = circle(50);
        let cache = Semantic::new(1 << 20, Duration::from_secs(60));
        let a = unit(&[1.0, 0.0, 0.0]);
        let b = unit(&[0.0, 1.0, 0.0]);
        for q in [&a, &b] {
            cache
                .insert(
                    2,
                    Entry::new(q.clone(), answer(&points, q, 8), "", 8, 0).unwrap(),
                )
                .await;
        }
        let near_b = unit(&[0.1, 1.0, 0.0]);
        let probe = Probe {
            shape: 2,
            query: &near_b,
            limit: 3,
            distance: Distance::Cosine,
            mode: SemanticMode::Threshold,
            threshold: 0.95,
        };
        let hits = cache.find(&probe, |_| true).await.unwrap();
        let from_b: Vec<PointId> = ids(&answer(&points, &b, 8));
        assert!(ids(&hits).iter().all(|id| from_b.contains(id)));
        let far = unit(&[1.0, 1.0, 0.0]);
        let probe = Probe {
            query: &far,
            ..probe
        };
        assert!(cache.find(&probe, |_| true).await.is_none());
    }
}
