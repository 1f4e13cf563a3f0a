//! Gathering: merging per-shard top-k lists into the answer one shard holding every point gives.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap, HashSet};

use shardd::engine::params::Distance;
use shardd::query::Hit;

/// The order every shard ranks by: score per the distance's direction, then ascending id.
pub fn rank<H: Hit>(distance: Distance, a: &H, b: &H) -> Ordering {
    distance
        .cmp_scores(a.score(), b.score())
        .then_with(|| a.id().cmp(&b.id()))
}

/// One list's next candidate in the k-way merge; the heap pops the best first.
struct Head<'a, H> {
    point: &'a H,
    list: usize,
    at: usize,
    distance: Distance,
}

impl<H: Hit> PartialEq for Head<'_, H> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl<H: Hit> Eq for Head<'_, H> {}

impl<H: Hit> PartialOrd for Head<'_, H> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<H: Hit> Ord for Head<'_, H> {
    fn cmp(&self, other: &Self) -> Ordering {
        rank(self.distance, other.point, self.point)
    }
}

/// Merges per-shard lists, each sorted best first and holding that shard's best
/// `offset + limit`, into the global `offset..offset + limit` window. A point listed by two
/// shards (possible only while data moves between them) is kept once: its copy with the
/// highest version, which is the current one. The winners are moved out of the lists, not
/// copied.
pub fn merge_top_k<H: Hit>(
    lists: Vec<Vec<H>>,
    distance: Distance,
    offset: usize,
    limit: usize,
) -> Vec<H> {
    let newest = newest_versions(&lists);
    let winners: Vec<(usize, usize)> = {
        let mut heap: BinaryHeap<Head<'_, H>> = lists
            .iter()
            .enumerate()
            .filter_map(|(list, points)| {
                points.first().map(|point| Head {
                    point,
                    list,
                    at: 0,
                    distance,
                })
            })
            .collect();
        let mut seen = HashSet::new();
        let mut winners = Vec::with_capacity(limit.min(1024));
        let mut skipped = 0;
        while let Some(Head {
            point, list, at, ..
        }) = heap.pop()
        {
            if let Some(next) = lists[list].get(at + 1) {
                heap.push(Head {
                    point: next,
                    list,
                    at: at + 1,
                    distance,
                });
            }
            if newest
                .get(&point.id())
                .is_some_and(|&v| point.version() < v)
                || !seen.insert(point.id())
            {
                continue;
            }
            if skipped < offset {
                skipped += 1;
                continue;
            }
            winners.push((list, at));
            if winners.len() == limit {
                break;
            }
        }
        winners
    };
    let mut slots: Vec<Vec<Option<H>>> = lists
        .into_iter()
        .map(|l| l.into_iter().map(Some).collect())
        .collect();
    winners
        .into_iter()
        .filter_map(|(list, at)| slots[list][at].take())
        .collect()
}

/// The highest version of each point listed more than once (empty when none is, as when no
/// data is moving).
fn newest_versions<H: Hit>(lists: &[Vec<H>]) -> HashMap<shardd::engine::point::PointId, u64> {
    let mut seen = HashMap::new();
    let mut newest = HashMap::new();
    for p in lists.iter().flatten() {
        if let Some(v) = seen.insert(p.id(), p.version()) {
            let top = newest.entry(p.id()).or_insert(v);
            *top = (*top).max(p.version());
        }
    }
    newest
}

/// Merges per-shard lists in id order (listings and scroll pages), each point once: its copy
/// with the highest version.
pub fn merge_by_id<H: Hit>(lists: Vec<Vec<H>>) -> Vec<H> {
    let mut all: Vec<H> = lists.into_iter().flatten().collect();
    all.sort_by(|a, b| a.id().cmp(&b.id()).then(b.version().cmp(&a.version())));
    all.dedup_by_key(|p| p.id());
    all
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use shardd::engine::point::{PointId, ScoredPoint};

    fn point(id: u64, score: f32) -> ScoredPoint {
        ScoredPoint {
            id: PointId::Num(id),
            version: 0,
            score,
            payload: None,
            vectors: None,
        }
    }

    proptest! {
        /// Merging each shard's best `offset + limit` equals ranking the union of all points.
        #[test]
        fn merge_equals_search_over_the_union(
            scores in prop::collection::vec((0u8..3, -50i32..50), 0..120),
            offset in 0usize..10,
            limit in 1usize..20,
            higher in any::<bool>(),
        ) {
            let distance = if higher { Distance::Dot } else { Distance::Euclid };
            let all: Vec<(u8, ScoredPoint)> = scores.iter().enumerate().map(|(i, (s, x))| (*s, point(i as u64, *x as f32 / 4.0))).collect();
            let mut union: Vec<ScoredPoint> = all.iter().map(|p| p.1.clone()).collect();
            union.sort_by(|a, b| rank(distance, a, b));
            let want: Vec<ScoredPoint> = union.into_iter().skip(offset).take(limit).collect();
            let lists: Vec<Vec<ScoredPoint>> = (0..3u8)
                .map(|shard| {
                    let mut mine: Vec<ScoredPoint> = all.iter().filter(|p| p.0 == shard).map(|p| p.1.clone()).collect();
                    mine.sort_by(|a, b| rank(distance, a, b));
                    mine.truncate(offset + limit);
                    mine
                })
                .collect();
            prop_assert_eq!(merge_top_k(lists, distance, offset, limit), want);
        }
    }

    #[test]
    fn of_two_copies_the_newer_is_kept_whatever_its_rank() {
        let stale = point(1, 0.9);
        let fresh = ScoredPoint {
            version: 2,
            ..point(1, 0.1)
        };
        let lists = vec![vec![stale, point(2, 0.5)], vec![point(3, 0.4), fresh]];
        let got: Vec<(PointId, u64)> = merge_top_k(lists.clone(), Distance::Cosine, 0, 10)
            .iter()
            .map(|p| (p.id, p.version))
            .collect();
        assert_eq!(
            got,
            vec![
                (PointId::Num(2), 0),
                (PointId::Num(3), 0),
                (PointId::Num(1), 2)
            ]
        );
        let by_id: Vec<u64> = merge_by_id(lists).iter().map(|p| p.version).collect();
        assert_eq!(by_id, vec![2, 0, 0]);
    }

    #[test]
    fn duplicates_across_shards_are_kept_once() {
        let lists = vec![
            vec![point(1, 0.9), point(2, 0.5)],
            vec![point(1, 0.9), point(3, 0.4)],
        ];
        let ids: Vec<PointId> = merge_top_k(lists.clone(), Distance::Cosine, 0, 10)
            .iter()
            .map(|p| p.id)
            .collect();
        assert_eq!(ids, vec![PointId::Num(1), PointId::Num(2), PointId::Num(3)]);
        let by_id: Vec<PointId> = merge_by_id(lists).iter().map(|p| p.id).collect();
        assert_eq!(
            by_id,
            vec![PointId::Num(1), PointId::Num(2), PointId::Num(3)]
        );
    }
}
