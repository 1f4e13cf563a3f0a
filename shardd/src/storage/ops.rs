//! The durable write model: one WAL record per operation, replayed in order on recovery.
//!
//! Operations are fully resolved before they are logged (filters turned into ids, vectors
//! validated and prepared), so replaying one can neither fail validation nor depend on
//! anything but the state it is applied to.

use serde::{Deserialize, Serialize};

use crate::engine::collection::Points;
use crate::engine::params::CollectionConfig;
use crate::engine::payload_index::FieldType;
use crate::engine::point::PointWrite;
use crate::engine::point::{Payload, PointId};
use crate::error::Result;

/// One logged write.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// A collection was created.
    CreateCollection {
        name: String,
        config: CollectionConfig,
    },
    /// A collection was dropped.
    DropCollection { name: String },
    /// Points were inserted or replaced.
    Upsert {
        collection: String,
        points: Vec<PointWrite>,
        /// The write's version (0 in records logged before versions).
        #[serde(default)]
        version: u64,
    },
    /// Points were deleted.
    Delete {
        collection: String,
        ids: Vec<PointId>,
        #[serde(default)]
        version: u64,
    },
    /// Points (and tombstones) a shard no longer owns, forgotten up to the versions given.
    Evict {
        collection: String,
        points: Vec<(PointId, u64)>,
    },
    /// Points and deletes copied from another replica, each with its own version.
    Import {
        collection: String,
        points: Vec<(u64, PointWrite)>,
        deleted: Vec<(PointId, u64)>,
    },
    /// Payloads were merged (at `key` when given) or, with `overwrite`, replaced.
    SetPayload {
        collection: String,
        ids: Vec<PointId>,
        payload: Payload,
        key: Option<String>,
        overwrite: bool,
        #[serde(default)]
        version: u64,
    },
    /// A payload index was created (or replaced) on a field.
    CreateFieldIndex {
        collection: String,
        field: String,
        kind: FieldType,
    },
    /// A payload index was dropped.
    DropFieldIndex { collection: String, field: String },
}

impl Op {
    /// The collection the operation touches.
    pub fn collection(&self) -> &str {
        match self {
            Op::CreateCollection { name, .. } | Op::DropCollection { name } => name,
            Op::Upsert { collection, .. }
            | Op::Delete { collection, .. }
            | Op::Import { collection, .. }
            | Op::Evict { collection, .. }
            | Op::SetPayload { collection, .. }
            | Op::CreateFieldIndex { collection, .. }
            | Op::DropFieldIndex { collection, .. } => collection,
        }
    }

    /// Applies a point operation to a collection's points as write `seq`.
    ///
    /// Collection operations are the shard's to apply; here they change nothing.
    pub fn apply(self, points: &mut Points, seq: u64) -> Result<()> {
        match self {
            Op::Upsert {
                points: writes,
                version,
                ..
            } => points.upsert(seq, version, writes),
            Op::Delete { ids, version, .. } => points.delete(seq, version, &ids),
            Op::Import {
                points: writes,
                deleted,
                ..
            } => points.import(seq, writes, &deleted),
            Op::Evict {
                points: evicted, ..
            } => points.evict(seq, &evicted),
            Op::SetPayload {
                ids,
                payload,
                key,
                overwrite,
                version,
                ..
            } => points.set_payload(seq, version, &ids, &payload, key.as_deref(), overwrite),
            Op::CreateFieldIndex { field, kind, .. } => {
                points.create_index(seq, &field, kind);
                Ok(())
            }
            Op::DropFieldIndex { field, .. } => {
                points.drop_index(seq, &field);
                Ok(())
            }
            Op::CreateCollection { .. } | Op::DropCollection { .. } => Ok(()),
        }
    }
}
