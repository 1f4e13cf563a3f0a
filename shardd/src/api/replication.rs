//! The replication endpoints, Vecgate's own, between a router and its shards: a collection's
//! spec (to create it on a new replica), digests of its points by id bucket (to find where two
//! replicas differ), the versions in some buckets, and points copied with their versions.
//!
//! Ids fall into buckets by a hash of the id, so two replicas bucket the same points the same
//! way whatever they hold. A bucket's digest sums a hash of each (id, version, content hash,
//! deleted) it holds: equal digests mean equal points, with overwhelming probability.

use serde::{Deserialize, Serialize};

pub use crate::engine::collection::{Copied, PointVersion};
use crate::engine::params::CollectionConfig;
use crate::engine::payload_index::FieldType;
use crate::engine::point::PointId;
use crate::error::{Error, Result};

/// Most buckets a digest may ask for.
pub const MAX_BUCKETS: u32 = 1 << 16;

/// The bucket of `id` among `buckets`.
pub fn bucket(id: &PointId, buckets: u32) -> u32 {
    let h = match id {
        PointId::Num(n) => xxhash_rust::xxh3::xxh3_64(&n.to_le_bytes()),
        PointId::Uuid(u) => xxhash_rust::xxh3::xxh3_64(u.as_bytes()),
    };
    (h % u64::from(buckets.max(1))) as u32
}

/// A collection's configuration and payload indexes: what a new replica is created from.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Spec {
    /// The collection's configuration.
    pub config: CollectionConfig,
    /// Its payload indexes, by field.
    pub payload_indexes: Vec<(String, FieldType)>,
}

/// `POST .../replication/digest`: one digest per bucket.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DigestRequest {
    /// How many buckets ids fall into (1 to [`MAX_BUCKETS`]).
    pub buckets: u32,
}

/// What a replica holds in one bucket.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketDigest {
    /// Points and tombstones.
    pub count: u64,
    /// The sum of their hashes.
    pub hash: u64,
}

/// `POST .../replication/versions`: every point and tombstone in some buckets.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VersionsRequest {
    /// How many buckets ids fall into.
    pub buckets: u32,
    /// The buckets wanted.
    pub of: Vec<u32>,
}

/// `POST .../replication/export`: points by id, as written.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ExportRequest {
    /// The ids.
    pub ids: Vec<PointId>,
}

/// `PUT .../replication/evict`: points a shard no longer owns, with the versions copied.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EvictRequest {
    /// (id, version) pairs.
    pub points: Vec<(PointId, u64)>,
}

/// The typed body of a replication endpoint.
#[derive(Debug)]
pub enum Replication {
    /// `GET .../replication/spec`.
    Spec,
    /// `PUT .../replication/spec`: create the collection (and its indexes) if missing.
    Adopt(Spec),
    /// `POST .../replication/digest`.
    Digest(DigestRequest),
    /// `POST .../replication/versions`.
    Versions(VersionsRequest),
    /// `POST .../replication/export`.
    Export(ExportRequest),
    /// `PUT .../replication/import`.
    Import(Copied),
    /// `PUT .../replication/evict`.
    Evict(EvictRequest),
}

/// Checks a bucket count.
pub fn check_buckets(buckets: u32) -> Result<()> {
    if buckets == 0 || buckets > MAX_BUCKETS {
        return Err(Error::bad(format!(
            "`buckets` must be 1 to {MAX_BUCKETS}, not {buckets}"
        )));
    }
    Ok(())
}

/// One digest per bucket over `held`.
pub fn digests(held: &mut dyn Iterator<Item = PointVersion>, buckets: u32) -> Vec<BucketDigest> {
    let mut out = vec![BucketDigest::default(); buckets as usize];
    for v in held {
        let d = &mut out[bucket(&v.id, buckets) as usize];
        d.count += 1;
        d.hash = d.hash.wrapping_add(entry_hash(&v));
    }
    out
}

fn entry_hash(v: &PointVersion) -> u64 {
    let mut bytes = [0u8; 41];
    match v.id {
        PointId::Num(n) => bytes[..8].copy_from_slice(&n.to_le_bytes()),
        PointId::Uuid(u) => bytes[..16].copy_from_slice(u.as_bytes()),
    }
    bytes[16..24].copy_from_slice(&v.version.to_le_bytes());
    bytes[24..32].copy_from_slice(&v.hash.to_le_bytes());
    bytes[32] = u8::from(v.deleted)
        + if matches!(v.id, PointId::Uuid(_)) {
            2
        } else {
            0
        };
    xxhash_rust::xxh3::xxh3_64(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(id: u64, version: u64) -> PointVersion {
        PointVersion {
            id: PointId::Num(id),
            version,
            hash: 9,
            deleted: false,
        }
    }

    #[test]
    fn digests_are_order_free_and_see_a_changed_version() {
        let a = [held(1, 1), held(2, 1), held(3, 1)];
        let b = [held(3, 1), held(1, 1), held(2, 1)];
        assert_eq!(
            digests(&mut a.into_iter(), 4),
            digests(&mut b.into_iter(), 4)
        );
        let c = [held(3, 1), held(1, 2), held(2, 1)];
        let (da, dc) = (
            digests(&mut a.into_iter(), 4),
            digests(&mut c.into_iter(), 4),
        );
        let differ: Vec<usize> = (0..4).filter(|&i| da[i] != dc[i]).collect();
        assert_eq!(differ, vec![bucket(&PointId::Num(1), 4) as usize]);
    }

    #[test]
    fn buckets_are_checked() {
        assert!(check_buckets(0).is_err() && check_buckets(MAX_BUCKETS + 1).is_err());
        assert!(check_buckets(256).is_ok());
    }
}
