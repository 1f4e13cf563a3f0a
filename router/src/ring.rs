//! The consistent-hash ring: which shard owns a point id (xxh3 over virtual nodes).
//!
//! Placement depends only on shard names, never on their order in the config, so reordering
//! `[[shards]]` moves no point, and adding a shard moves only the ids the new shard takes over.
//! The hash is part of the on-disk contract (it decides where data lives), so it is spelled out
//! here rather than left to a dependency that could change it.

use shardd::engine::point::PointId;
use xxhash_rust::xxh3::xxh3_64;

/// Virtual nodes per shard: enough to keep shares within a few percent of even.
pub const VIRTUAL_NODES: u32 = 256;

/// Maps point ids to shards.
#[derive(Clone, Debug)]
pub struct Ring {
    /// (hash, shard index), sorted.
    nodes: Vec<(u64, usize)>,
}

/// The ring position of a point id.
pub fn id_hash(id: &PointId) -> u64 {
    let mut key = [0u8; 17];
    let len = match id {
        PointId::Num(n) => {
            key[1..9].copy_from_slice(&n.to_le_bytes());
            9
        }
        PointId::Uuid(u) => {
            key[0] = 1;
            key[1..17].copy_from_slice(u.as_bytes());
            17
        }
    };
    xxh3_64(&key[..len])
}

impl Ring {
    /// A ring over shards named `names`; [`Ring::owner`] answers indexes into `names`.
    pub fn new(names: &[&str]) -> Ring {
        let mut nodes: Vec<(u64, usize)> = names
            .iter()
            .enumerate()
            .flat_map(|(i, name)| {
                (0..VIRTUAL_NODES).map(move |v| (xxh3_64(format!("{name}#{v}").as_bytes()), i))
            })
            .collect();
        nodes.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| names[a.1].cmp(names[b.1])));
        Ring { nodes }
    }

    /// The index of the shard that owns `id`, or `None` for a ring without shards.
    pub fn owner(&self, id: &PointId) -> Option<usize> {
        let h = id_hash(id);
        let at = self.nodes.partition_point(|n| n.0 < h);
        self.nodes
            .get(at)
            .or_else(|| self.nodes.first())
            .map(|n| n.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: u64) -> impl Iterator<Item = PointId> {
        (0..n).map(PointId::Num)
    }

    #[test]
    fn config_order_does_not_move_points() {
        let a = Ring::new(&["s0", "s1", "s2"]);
        let b = Ring::new(&["s2", "s0", "s1"]);
        let names_a = ["s0", "s1", "s2"];
        let names_b = ["s2", "s0", "s1"];
        for id in ids(5000) {
            assert_eq!(
                names_a[a.owner(&id).unwrap()],
                names_b[b.owner(&id).unwrap()]
            );
        }
    }

    #[test]
    fn shares_are_close_to_even() {
        let ring = Ring::new(&["s0", "s1", "s2"]);
        let mut counts = [0usize; 3];
        for id in ids(30_000) {
            counts[ring.owner(&id).unwrap()] += 1;
        }
        assert!(
            counts.iter().all(|&c| (8_000..12_000).contains(&c)),
            "{counts:?}"
        );
    }

    #[test]
    fn adding_a_shard_moves_only_what_it_takes_over() {
        let before = Ring::new(&["s0", "s1", "s2"]);
        let after = Ring::new(&["s0", "s1", "s2", "s3"]);
        let mut moved = 0;
        for id in ids(20_000) {
            let (b, a) = (before.owner(&id).unwrap(), after.owner(&id).unwrap());
            if a != b {
                assert_eq!(a, 3, "a point moved between old shards");
                moved += 1;
            }
        }
        assert!((3_500..6_500).contains(&moved), "{moved} of 20000 moved");
    }

    #[test]
    fn uuid_and_integer_ids_hash_differently_and_empty_rings_own_nothing() {
        assert_ne!(
            id_hash(&PointId::Num(0)),
            id_hash(&PointId::Uuid(uuid::Uuid::nil()))
        );
        assert_eq!(Ring::new(&[]).owner(&PointId::Num(1)), None);
    }
}
