//! The point model: ids, dense and sparse vectors by name, and JSON payloads.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use uuid::Uuid;

use crate::error::{Error, Result};

/// A point's JSON payload: always an object at the top.
pub type Payload = serde_json::Map<String, serde_json::Value>;

/// The name of the unnamed (default) vector.
pub const DEFAULT_VECTOR: &str = "";

/// A point id: an unsigned integer or a UUID, ordered integers first (as Qdrant orders them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PointId {
    /// An unsigned integer id.
    Num(u64),
    /// A UUID id, answered in canonical hyphenated form.
    Uuid(Uuid),
}

impl fmt::Display for PointId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PointId::Num(n) => write!(f, "{n}"),
            PointId::Uuid(u) => write!(f, "{}", u.hyphenated()),
        }
    }
}

impl PointId {
    /// Parses an id as it appears in a URL path: digits or a UUID (with or without dashes).
    pub fn parse(s: &str) -> Result<Self> {
        if let Ok(n) = s.parse::<u64>() {
            return Ok(PointId::Num(n));
        }
        Uuid::parse_str(s).map(PointId::Uuid).map_err(|_| {
            Error::bad(format!(
                "point id `{s}` is neither an unsigned integer nor a UUID"
            ))
        })
    }
}

impl Serialize for PointId {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            PointId::Num(n) => s.serialize_u64(*n),
            PointId::Uuid(u) => s.collect_str(&u.hyphenated()),
        }
    }
}

impl<'de> Deserialize<'de> for PointId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct IdVisitor;
        impl Visitor<'_> for IdVisitor {
            type Value = PointId;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a point id: an unsigned integer or a UUID string")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> std::result::Result<PointId, E> {
                Ok(PointId::Num(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> std::result::Result<PointId, E> {
                u64::try_from(v)
                    .map(PointId::Num)
                    .map_err(|_| E::custom(format!("point id {v} is negative")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<PointId, E> {
                Uuid::parse_str(v)
                    .map(PointId::Uuid)
                    .map_err(|_| E::custom(format!("point id `{v}` is not a valid UUID")))
            }
        }
        d.deserialize_any(IdVisitor)
    }
}

/// A sparse vector: parallel lists of dimension indices and values.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SparseVector {
    /// Dimension indices, unique; kept sorted once validated.
    pub indices: Vec<u32>,
    /// The value at each index.
    pub values: Vec<f32>,
}

impl SparseVector {
    /// Checks lengths, finiteness and uniqueness, and sorts by index.
    pub fn validate(&mut self, name: &str) -> Result<()> {
        if self.indices.len() != self.values.len() {
            return Err(Error::bad(format!(
                "sparse vector `{name}` has {} indices but {} values",
                self.indices.len(),
                self.values.len()
            )));
        }
        check_finite(name, &self.values)?;
        let mut pairs: Vec<(u32, f32)> = self
            .indices
            .iter()
            .copied()
            .zip(self.values.iter().copied())
            .collect();
        pairs.sort_unstable_by_key(|p| p.0);
        if pairs.windows(2).any(|w| w[0].0 == w[1].0) {
            return Err(Error::bad(format!(
                "sparse vector `{name}` repeats an index"
            )));
        }
        self.indices = pairs.iter().map(|p| p.0).collect();
        self.values = pairs.iter().map(|p| p.1).collect();
        Ok(())
    }

    /// Dot product with another sorted sparse vector.
    pub fn dot(&self, other: &SparseVector) -> f32 {
        let (mut i, mut j, mut sum) = (0, 0, 0.0f32);
        while i < self.indices.len() && j < other.indices.len() {
            match self.indices[i].cmp(&other.indices[j]) {
                std::cmp::Ordering::Less => i += 1,
                std::cmp::Ordering::Greater => j += 1,
                std::cmp::Ordering::Equal => {
                    sum += self.values[i] * other.values[j];
                    i += 1;
                    j += 1;
                }
            }
        }
        sum
    }
}

/// One vector of a point: dense or sparse.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Vector {
    /// A dense vector.
    Dense(Vec<f32>),
    /// A sparse vector.
    Sparse(SparseVector),
}

/// A point's vectors by name; the unnamed vector is the name `""`.
pub type NamedVectors = BTreeMap<String, Vector>;

/// The wire form of a point's vectors: a bare dense vector (the unnamed one) or a map by name.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(untagged)]
pub enum VectorInput {
    /// A bare dense vector, stored as the unnamed vector.
    Single(Vec<f32>),
    /// Vectors by name, each dense or sparse.
    Named(NamedVectors),
}

impl Default for VectorInput {
    fn default() -> Self {
        VectorInput::Named(NamedVectors::new())
    }
}

impl VectorInput {
    /// The vectors by name.
    pub fn into_named(self) -> NamedVectors {
        match self {
            VectorInput::Single(v) => {
                NamedVectors::from([(DEFAULT_VECTOR.to_string(), Vector::Dense(v))])
            }
            VectorInput::Named(m) => m,
        }
    }
}

/// A point to write, as validated: vectors prepared for their distance. The router carries
/// payloads as raw JSON (`P`); the engine stores them parsed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PointWrite<P = Payload> {
    /// The point's id.
    pub id: PointId,
    /// Its vectors by name; names the collection lacks are rejected before this.
    #[serde(default)]
    pub vectors: NamedVectors,
    /// Its payload.
    pub payload: P,
}

/// Which vectors a result carries (`with_vector`).
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

/// A point a read found: search hits carry their score, other reads score 0.
#[derive(Clone, Debug, PartialEq)]
pub struct ScoredPoint {
    /// The point's id.
    pub id: PointId,
    /// Sequence number of the write that last changed the point.
    pub version: u64,
    /// Similarity or distance to the query, per the collection's distance.
    pub score: f32,
    /// The selected payload, `None` when not requested.
    pub payload: Option<Payload>,
    /// The selected vectors by name, `None` when not requested.
    pub vectors: Option<NamedVectors>,
}

/// Rejects NaN and infinite components, which would poison every distance.
pub fn check_finite(name: &str, values: &[f32]) -> Result<()> {
    match values.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(i) => Err(Error::bad(format!(
            "vector `{name}` has a non-finite value at position {i}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_without_dashes_is_answered_canonical() {
        let id: PointId = serde_json::from_str("\"5c56c793a4b54b0c9f1a0b2e1b5a8d2f\"").unwrap();
        assert_eq!(
            serde_json::to_string(&id).unwrap(),
            "\"5c56c793-a4b5-4b0c-9f1a-0b2e1b5a8d2f\""
        );
    }

    #[test]
    fn negative_and_garbage_ids_are_rejected() {
        assert!(serde_json::from_str::<PointId>("-1").is_err());
        assert!(serde_json::from_str::<PointId>("\"nope\"").is_err());
        assert!(serde_json::from_str::<PointId>("1.5").is_err());
    }

    #[test]
    fn integer_ids_sort_before_uuids() {
        let u = PointId::Uuid(Uuid::nil());
        assert!(PointId::Num(u64::MAX) < u);
    }

    #[test]
    fn sparse_validation_sorts_and_rejects_repeats() {
        let mut v = SparseVector {
            indices: vec![5, 1],
            values: vec![0.5, 1.0],
        };
        v.validate("s").unwrap();
        assert_eq!(v.indices, vec![1, 5]);
        assert_eq!(v.values, vec![1.0, 0.5]);
        let mut dup = SparseVector {
            indices: vec![1, 1],
            values: vec![0.5, 1.0],
        };
        assert!(dup.validate("s").is_err());
    }
}
