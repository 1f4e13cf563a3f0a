//! Collection parameters: vector spaces, distances, sparse modifiers and HNSW settings.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::engine::point::PointWrite;
use crate::engine::point::{check_finite, PointId, Vector, DEFAULT_VECTOR};
use crate::error::{Error, Result};

/// The largest dense vector the engine accepts (Qdrant's limit).
pub const MAX_DIMENSIONS: usize = 65_536;

/// How two dense vectors are compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Distance {
    /// Cosine similarity: vectors are normalised on write, higher is closer.
    Cosine,
    /// Dot product, higher is closer.
    Dot,
    /// Euclidean distance, lower is closer.
    Euclid,
    /// Manhattan (L1) distance, lower is closer.
    Manhattan,
}

/// HNSW graph settings of a collection (Qdrant's `hnsw_config`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HnswConfig {
    /// Links per node on upper levels (twice as many on level 0), as hnswlib's `M`.
    pub m: usize,
    /// Candidate list size while building; also the default search `ef`.
    pub ef_construct: usize,
    /// Below this many KiB of candidate vectors a search scans exactly instead of walking the graph.
    pub full_scan_threshold: usize,
}

impl Default for HnswConfig {
    fn default() -> Self {
        HnswConfig {
            m: 16,
            ef_construct: 100,
            full_scan_threshold: 10_000,
        }
    }
}

/// A partial [`HnswConfig`] as clients send it; unset fields keep the defaults.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HnswConfigDiff {
    /// See [`HnswConfig::m`].
    pub m: Option<usize>,
    /// See [`HnswConfig::ef_construct`].
    pub ef_construct: Option<usize>,
    /// See [`HnswConfig::full_scan_threshold`].
    pub full_scan_threshold: Option<usize>,
}

impl HnswConfigDiff {
    /// `base` with the fields set here replaced.
    pub fn apply(&self, base: HnswConfig) -> HnswConfig {
        HnswConfig {
            m: self.m.unwrap_or(base.m),
            ef_construct: self.ef_construct.unwrap_or(base.ef_construct),
            full_scan_threshold: self.full_scan_threshold.unwrap_or(base.full_scan_threshold),
        }
    }
}

/// One dense vector space of a collection.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VectorParams {
    /// Number of dimensions.
    pub size: usize,
    /// How vectors are compared.
    pub distance: Distance,
    /// Per-vector HNSW overrides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hnsw_config: Option<HnswConfigDiff>,
}

/// How sparse values are weighted at query time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Modifier {
    /// Plain dot product.
    #[default]
    None,
    /// Query values are scaled by the inverse document frequency of their index.
    Idf,
}

/// One sparse vector space of a collection.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SparseVectorParams {
    /// Query-time weighting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modifier: Option<Modifier>,
}

/// A collection's validated configuration, as persisted in the WAL and snapshots.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CollectionConfig {
    /// Dense vector spaces by name (`""` is the unnamed one).
    pub vectors: BTreeMap<String, VectorParams>,
    /// Sparse vector spaces by name.
    pub sparse_vectors: BTreeMap<String, SparseVectorParams>,
    /// Collection-wide HNSW settings.
    pub hnsw: HnswConfig,
}

impl CollectionConfig {
    /// A validated configuration: dense vectors by name, sparse vectors by name, and HNSW
    /// settings that override the defaults.
    pub fn new(
        vectors: BTreeMap<String, VectorParams>,
        sparse_vectors: BTreeMap<String, SparseVectorParams>,
        hnsw: Option<HnswConfigDiff>,
    ) -> Result<Self> {
        let config = CollectionConfig {
            vectors,
            sparse_vectors,
            hnsw: hnsw.unwrap_or_default().apply(HnswConfig::default()),
        };
        config.validate()?;
        Ok(config)
    }

    /// The distance of dense vector `using` (sparse and unknown names score by dot product).
    pub fn distance(&self, using: &str) -> Distance {
        self.vectors
            .get(using)
            .map_or(Distance::Dot, |p| p.distance)
    }

    /// Whether responses show the unnamed vector as a bare list (Qdrant's single-vector shape).
    pub fn single_unnamed(&self) -> bool {
        self.vectors.len() == 1
            && self.vectors.contains_key(DEFAULT_VECTOR)
            && self.sparse_vectors.is_empty()
    }

    fn validate(&self) -> Result<()> {
        for (name, p) in &self.vectors {
            if p.size == 0 || p.size > MAX_DIMENSIONS {
                return Err(Error::bad(format!(
                    "vectors.{name:?}.size must be between 1 and {MAX_DIMENSIONS}, got {}",
                    p.size
                )));
            }
            check_hnsw(&self.hnsw_for(name), name)?;
            if self.sparse_vectors.contains_key(name) {
                return Err(Error::bad(format!(
                    "vector name {name:?} is used for both a dense and a sparse vector"
                )));
            }
        }
        check_hnsw(&self.hnsw, "hnsw_config")
    }

    /// The effective HNSW settings of one dense vector.
    pub fn hnsw_for(&self, name: &str) -> HnswConfig {
        match self.vectors.get(name).and_then(|p| p.hnsw_config) {
            Some(diff) => diff.apply(self.hnsw),
            None => self.hnsw,
        }
    }
}

impl CollectionConfig {
    /// Checks points' vectors against the configuration of collection `name` and prepares them
    /// for storage (cosine normalisation, sorted sparse indices); a later write of the same id
    /// in one batch wins.
    pub fn prepare<P>(&self, name: &str, points: Vec<PointWrite<P>>) -> Result<Vec<PointWrite<P>>> {
        self.checked(name, points, true)
    }

    /// Checks points as [`CollectionConfig::prepare`] does but leaves dense values as sent, for
    /// a router that forwards them to the shard that prepares them (normalising twice would
    /// change the stored floats).
    pub fn check<P>(&self, name: &str, points: Vec<PointWrite<P>>) -> Result<Vec<PointWrite<P>>> {
        self.checked(name, points, false)
    }

    fn checked<P>(
        &self,
        name: &str,
        points: Vec<PointWrite<P>>,
        normalise: bool,
    ) -> Result<Vec<PointWrite<P>>> {
        let mut last: HashMap<PointId, usize> = HashMap::with_capacity(points.len());
        for (i, p) in points.iter().enumerate() {
            last.insert(p.id, i);
        }
        let mut out = Vec::with_capacity(last.len());
        for (i, mut p) in points.into_iter().enumerate() {
            if last[&p.id] != i {
                continue;
            }
            for (vector, v) in p.vectors.iter_mut() {
                self.prepare_vector(name, vector, v, normalise)
                    .map_err(|e| match e {
                        Error::BadRequest(m) => Error::bad(format!("point {}: {m}", p.id)),
                        other => other,
                    })?;
            }
            out.push(p);
        }
        Ok(out)
    }

    fn prepare_vector(
        &self,
        collection: &str,
        name: &str,
        v: &mut Vector,
        normalise: bool,
    ) -> Result<()> {
        match v {
            Vector::Dense(d) => {
                let params = self
                    .vectors
                    .get(name)
                    .ok_or_else(|| self.unknown_vector(collection, name, "dense"))?;
                if d.len() != params.size {
                    return Err(Error::bad(format!(
                        "{} has dimension {}, expected {} (collection `{collection}`)",
                        vector_label(name),
                        d.len(),
                        params.size,
                    )));
                }
                check_finite(name, d)?;
                if normalise {
                    params.distance.prepare(d);
                }
            }
            Vector::Sparse(s) => {
                if !self.sparse_vectors.contains_key(name) {
                    return Err(self.unknown_vector(collection, name, "sparse"));
                }
                s.validate(name)?;
            }
        }
        Ok(())
    }

    /// The error for a vector name collection `collection` does not have.
    pub fn unknown_vector(&self, collection: &str, name: &str, kind: &str) -> Error {
        let quoted = |n: &String| match n.as_str() {
            DEFAULT_VECTOR => "the unnamed one".to_string(),
            named => format!("{named:?}"),
        };
        let known: Vec<String> = if kind == "dense" {
            self.vectors.keys().map(quoted).collect()
        } else {
            self.sparse_vectors.keys().map(quoted).collect()
        };
        let has = match known.as_slice() {
            [] => format!("it has no {kind} vectors"),
            names => format!("it has {}", names.join(", ")),
        };
        let wanted = match name {
            DEFAULT_VECTOR => "the unnamed vector".to_string(),
            named => format!("{named:?}"),
        };
        Error::bad(format!(
            "collection `{collection}` has no {kind} vector named {wanted} ({has})"
        ))
    }
}

/// A vector as the client names it: `vector` for the unnamed one, `vector "dense"` otherwise.
pub fn vector_label(name: &str) -> String {
    match name {
        DEFAULT_VECTOR => "vector".to_string(),
        named => format!("vector {named:?}"),
    }
}

fn check_hnsw(h: &HnswConfig, at: &str) -> Result<()> {
    if !(2..=256).contains(&h.m) {
        return Err(Error::bad(format!(
            "{at}: m must be between 2 and 256, got {}",
            h.m
        )));
    }
    if !(4..=4096).contains(&h.ef_construct) {
        return Err(Error::bad(format!(
            "{at}: ef_construct must be between 4 and 4096, got {}",
            h.ef_construct
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_size_and_bad_hnsw_are_rejected() {
        let v = |size| {
            BTreeMap::from([(
                String::new(),
                VectorParams {
                    size,
                    distance: Distance::Dot,
                    hnsw_config: None,
                },
            )])
        };
        assert!(CollectionConfig::new(v(0), BTreeMap::new(), None).is_err());
        let bad_m = HnswConfigDiff {
            m: Some(0),
            ..Default::default()
        };
        assert!(CollectionConfig::new(v(2), BTreeMap::new(), Some(bad_m)).is_err());
        assert!(CollectionConfig::new(v(2), BTreeMap::new(), None).is_ok());
    }
}
