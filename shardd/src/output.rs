//! What reads return: records and scored points in Qdrant's JSON shape, and the `with_vector` selector.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::point::{Payload, PointId, Vector, DEFAULT_VECTOR};

/// Which vectors a response carries (`with_vector`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum WithVector {
    /// All of them or none.
    All(bool),
    /// Only these names.
    Names(Vec<String>),
}

impl WithVector {
    /// Whether the vector `name` is wanted.
    pub fn wants(&self, name: &str) -> bool {
        match self {
            WithVector::All(all) => *all,
            WithVector::Names(names) => names.iter().any(|n| n == name),
        }
    }

    /// Whether any vector is wanted.
    pub fn any(&self) -> bool {
        !matches!(self, WithVector::All(false))
    }
}

/// A point's vectors in a response: a bare list when the collection has only the unnamed vector.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum VectorOutput {
    /// The unnamed dense vector of a single-vector collection.
    Single(Vec<f32>),
    /// Vectors by name.
    Named(BTreeMap<String, Vector>),
}

impl VectorOutput {
    /// Shapes `vectors` as Qdrant does for a collection whose only dense vector is unnamed or not.
    pub fn shape(mut vectors: BTreeMap<String, Vector>, single_unnamed: bool) -> Self {
        if single_unnamed {
            if let Some(Vector::Dense(v)) = vectors.remove(DEFAULT_VECTOR) {
                return VectorOutput::Single(v);
            }
        }
        VectorOutput::Named(vectors)
    }
}

/// A point as returned by get and scroll.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// The point's id.
    pub id: PointId,
    /// The selected payload, `null` when not requested.
    pub payload: Option<Payload>,
    /// The selected vectors, `null` when not requested.
    pub vector: Option<VectorOutput>,
}

/// A point as returned by search and query.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScoredPoint {
    /// The point's id.
    pub id: PointId,
    /// Sequence number of the write that last changed the point.
    pub version: u64,
    /// Similarity or distance to the query, per the collection's distance.
    pub score: f32,
    /// The selected payload, `null` when not requested.
    pub payload: Option<Payload>,
    /// The selected vectors, `null` when not requested.
    pub vector: Option<VectorOutput>,
}
