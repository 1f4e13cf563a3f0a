//! Score fusion of several ranked lists (the results of prefetches), as Qdrant computes it:
//! reciprocal rank fusion and distribution-based score fusion. Pure functions over any
//! [`Hit`], so a fused answer is the same on a shard and in the router.

use std::collections::HashMap;

use crate::engine::point::PointId;
use crate::error::{Error, Result};
use crate::query::Hit;

/// Qdrant's default RRF `k`.
pub const DEFAULT_RRF_K: usize = 2;

/// How prefetch results are combined.
#[derive(Clone, Debug, PartialEq)]
pub enum Fusion {
    /// Reciprocal rank fusion: `1 / ((position + 1) / weight + k - 1)` summed over lists.
    Rrf {
        /// Damping constant (default 2).
        k: usize,
        /// One weight per list (default all 1).
        weights: Option<Vec<f32>>,
    },
    /// Distribution-based score fusion: each list's scores mapped to [0, 1] by mean ± 3σ, summed.
    Dbsf,
}

/// Sums per-point contributions, keeping each point's first occurrence, best first (ties by id).
fn combine<H: Hit>(lists: Vec<Vec<H>>, score: impl Fn(usize, usize, &H, &[H]) -> f32) -> Vec<H> {
    let mut by_id: HashMap<PointId, H> = HashMap::new();
    for (li, list) in lists.iter().enumerate() {
        for (pos, p) in list.iter().enumerate() {
            let s = score(li, pos, p, list);
            by_id
                .entry(p.id())
                .and_modify(|e| e.set_score(e.score() + s))
                .or_insert_with(|| {
                    let mut first = p.clone();
                    first.set_score(s);
                    first
                });
        }
    }
    let mut out: Vec<H> = by_id.into_values().collect();
    out.sort_by(|a, b| {
        b.score()
            .total_cmp(&a.score())
            .then_with(|| a.id().cmp(&b.id()))
    });
    out
}

/// Mean and sample variance (Welford).
fn mean_variance<H: Hit>(points: &[H]) -> (f32, f32) {
    let (mut mean, mut aggregate) = (0.0f32, 0.0f32);
    for (p, k) in points.iter().zip(1usize..) {
        let old = p.score() - mean;
        mean += old / k as f32;
        aggregate += old * (p.score() - mean);
    }
    (mean, aggregate / (points.len() as f32 - 1.0))
}

fn dbsf_score<H: Hit>(p: &H, list: &[H]) -> f32 {
    if list.len() < 2 {
        return 0.5;
    }
    let (mean, variance) = mean_variance(list);
    let sd = variance.sqrt();
    let (min, max) = (mean - 3.0 * sd, mean + 3.0 * sd);
    if min == max {
        0.5
    } else {
        (p.score() - min) / (max - min)
    }
}

/// Fuses ranked lists (each best first) into one, best first.
pub fn fuse<H: Hit>(lists: Vec<Vec<H>>, fusion: &Fusion) -> Result<Vec<H>> {
    match fusion {
        Fusion::Rrf { k, weights } => {
            if let Some(w) = weights {
                if w.len() != lists.len() {
                    return Err(Error::bad(format!(
                        "rrf has {} weights for {} prefetches",
                        w.len(),
                        lists.len()
                    )));
                }
            }
            let k = *k as f32;
            Ok(combine(lists, |li, pos, _, _| {
                let w = weights.as_ref().map_or(1.0, |w| w[li]);
                if w <= 0.0 {
                    0.0
                } else {
                    1.0 / ((pos + 1) as f32 / w + k - 1.0)
                }
            }))
        }
        Fusion::Dbsf => Ok(combine(lists, |_, _, p, list| dbsf_score(p, list))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::point::ScoredPoint;

    fn p(id: u64, score: f32) -> ScoredPoint {
        ScoredPoint {
            id: PointId::Num(id),
            version: 0,
            score,
            payload: None,
            vectors: None,
        }
    }

    fn ids(points: &[ScoredPoint]) -> Vec<u64> {
        points
            .iter()
            .map(|p| match p.id {
                PointId::Num(n) => n,
                PointId::Uuid(_) => 0,
            })
            .collect()
    }

    #[test]
    fn rrf_matches_qdrants_reference_values() {
        let lists = vec![
            vec![p(2, 0.9), p(1, 0.8)],
            vec![p(1, 0.7), p(2, 0.6), p(3, 0.5)],
            vec![p(5, 0.9), p(3, 0.5), p(1, 0.4)],
        ];
        let fused = fuse(
            lists,
            &Fusion::Rrf {
                k: DEFAULT_RRF_K,
                weights: None,
            },
        )
        .unwrap();
        assert_eq!(ids(&fused), vec![1, 2, 3, 5]);
        let scores: Vec<f32> = fused.iter().map(|p| p.score).collect();
        assert_eq!(scores, vec![1.0833334, 0.8333334, 0.5833334, 0.5]);
    }

    #[test]
    fn rrf_weights_favour_a_list_and_must_match_the_lists() {
        let lists = vec![vec![p(1, 0.9), p(2, 0.8)], vec![p(2, 0.9), p(1, 0.8)]];
        let fused = fuse(
            lists.clone(),
            &Fusion::Rrf {
                k: 2,
                weights: Some(vec![3.0, 1.0]),
            },
        )
        .unwrap();
        assert_eq!(ids(&fused)[0], 2);
        assert!(fuse(
            lists,
            &Fusion::Rrf {
                k: 2,
                weights: Some(vec![1.0])
            }
        )
        .is_err());
    }

    #[test]
    fn dbsf_normalises_each_list_then_sums() {
        let fused = fuse(
            vec![vec![p(1, 10.0), p(2, 0.0)], vec![p(2, 0.3)]],
            &Fusion::Dbsf,
        )
        .unwrap();
        let sd = (50.0f32).sqrt();
        let one = (10.0 - (5.0 - 3.0 * sd)) / (6.0 * sd);
        let two = (0.0 - (5.0 - 3.0 * sd)) / (6.0 * sd) + 0.5;
        assert_eq!(ids(&fused), if one > two { vec![1, 2] } else { vec![2, 1] });
        let got: HashMap<u64, f32> = fused
            .iter()
            .map(|q| (ids(std::slice::from_ref(q))[0], q.score))
            .collect();
        assert!((got[&1] - one).abs() < 1e-5 && (got[&2] - two).abs() < 1e-5);
    }
}
