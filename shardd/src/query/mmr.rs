//! Maximal marginal relevance: re-ranks candidates to balance relevance to the query against
//! similarity to what was already picked, as Qdrant does. A pure function over any [`Hit`]
//! that carries its vector, so a shard and the router re-rank alike.

use crate::engine::distance::{dot, l1, l2sq};
use crate::engine::params::Distance;
use crate::engine::point::SparseVector;
use crate::engine::point::WithVector;
use crate::engine::search::QueryVector;
use crate::query::Hit;

/// Raw similarity, larger is closer: negated distances for Euclid and Manhattan.
fn similarity(distance: Distance, a: &QueryVector, b: &QueryVector) -> f32 {
    match (a, b) {
        (QueryVector::Dense(x), QueryVector::Dense(y)) => match distance {
            Distance::Cosine | Distance::Dot => dot(x, y),
            Distance::Euclid => -l2sq(x, y),
            Distance::Manhattan => -l1(x, y),
        },
        (QueryVector::Sparse(x), QueryVector::Sparse(y)) => SparseVector::dot(x, y),
        _ => 0.0,
    }
}

/// Picks up to `limit` of `candidates` (which carry the `using` vector) by maximal marginal
/// relevance with `lambda = 1 - diversity`; points keep their original scores. A prepared
/// query (normalised for cosine) is expected.
pub fn mmr<H: Hit>(
    candidates: Vec<H>,
    query: &QueryVector,
    using: &str,
    distance: Distance,
    diversity: f32,
    limit: usize,
) -> Vec<H> {
    let (vectors, candidates): (Vec<QueryVector>, Vec<H>) = candidates
        .into_iter()
        .filter_map(|p| Some((p.vector(using)?, p)))
        .unzip();
    if candidates.len() < 2 || limit == 0 {
        return candidates.into_iter().take(limit).collect();
    }
    let lambda = 1.0 - diversity;
    let relevance: Vec<f32> = vectors
        .iter()
        .map(|v| similarity(distance, query, v))
        .collect();
    let mut best_overlap = vec![f32::NEG_INFINITY; candidates.len()];
    let mut picked: Vec<usize> = Vec::with_capacity(limit);
    let mut left: Vec<usize> = (0..candidates.len()).collect();
    while picked.len() < limit && !left.is_empty() {
        let score = |i: usize| {
            if picked.is_empty() {
                relevance[i]
            } else {
                lambda * relevance[i] - (1.0 - lambda) * best_overlap[i]
            }
        };
        let (at, &choice) = left
            .iter()
            .enumerate()
            .max_by(|(_, &a), (_, &b)| {
                score(a)
                    .total_cmp(&score(b))
                    .then_with(|| candidates[b].id().cmp(&candidates[a].id()))
            })
            .expect("left is not empty");
        left.swap_remove(at);
        picked.push(choice);
        for &i in &left {
            best_overlap[i] =
                best_overlap[i].max(similarity(distance, &vectors[i], &vectors[choice]));
        }
    }
    let mut slots: Vec<Option<H>> = candidates.into_iter().map(Some).collect();
    picked.into_iter().filter_map(|i| slots[i].take()).collect()
}

/// `mmr` of a query stage: how diverse, and how many nearest points to pick from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MmrParams {
    /// 0 favours relevance, 1 diversity.
    pub diversity: f32,
    /// Nearest points to choose from (default: the stage's limit).
    pub candidates_limit: Option<usize>,
}

/// The `with_vector` to fetch candidates with, so each carries the searched vector.
pub fn fetch_vectors(requested: &WithVector, using: &str) -> WithVector {
    match requested {
        WithVector::All(true) => WithVector::All(true),
        WithVector::All(false) => WithVector::Names(vec![using.to_string()]),
        WithVector::Names(names) => WithVector::Names(
            names
                .iter()
                .cloned()
                .chain(std::iter::once(using.to_string()))
                .collect(),
        ),
    }
}

/// Re-ranks fetched candidates by MMR and drops the vectors the caller did not ask for.
pub fn rerank<H: Hit>(
    candidates: Vec<H>,
    query: &QueryVector,
    using: &str,
    distance: Distance,
    params: MmrParams,
    limit: usize,
    requested: &WithVector,
) -> Vec<H> {
    let mut query = query.clone();
    if let QueryVector::Dense(v) = &mut query {
        distance.prepare(v);
    }
    let mut picked = mmr(candidates, &query, using, distance, params.diversity, limit);
    if matches!(requested, WithVector::All(false)) {
        picked.iter_mut().for_each(Hit::clear_vectors);
    }
    picked
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::point::{PointId, ScoredPoint, Vector};

    fn p(id: u64, v: Vec<f32>, score: f32) -> ScoredPoint {
        ScoredPoint {
            id: PointId::Num(id),
            version: 0,
            score,
            payload: None,
            vectors: Some([(String::new(), Vector::Dense(v))].into()),
        }
    }

    #[test]
    fn diversity_skips_near_duplicates_and_keeps_scores() {
        let q = QueryVector::Dense(vec![1.0, 0.0]);
        let cands = vec![
            p(1, vec![1.0, 0.0], 1.0),
            p(2, vec![0.99, 0.14], 0.99),
            p(3, vec![0.6, 0.8], 0.6),
        ];
        let relevant = mmr(cands.clone(), &q, "", Distance::Dot, 0.0, 2);
        assert_eq!(
            relevant.iter().map(|x| x.id).collect::<Vec<_>>(),
            vec![PointId::Num(1), PointId::Num(2)]
        );
        let diverse = mmr(cands, &q, "", Distance::Dot, 0.8, 2);
        assert_eq!(
            diverse.iter().map(|x| x.id).collect::<Vec<_>>(),
            vec![PointId::Num(1), PointId::Num(3)]
        );
        assert_eq!(diverse[1].score, 0.6, "points keep their original scores");
    }

    #[test]
    fn candidates_without_the_vector_are_dropped() {
        let q = QueryVector::Dense(vec![1.0]);
        let mut no_vector = p(9, vec![1.0], 1.0);
        no_vector.vectors = None;
        let out = mmr(
            vec![no_vector, p(1, vec![0.5], 0.5)],
            &q,
            "",
            Distance::Dot,
            0.5,
            5,
        );
        assert_eq!(out.len(), 1);
    }
}
