//! Collection parameters: vector spaces, distances, sparse modifiers and HNSW settings.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::point::DEFAULT_VECTOR;

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

/// The `vectors` field of a create request: one unnamed config or a map of named ones.
#[derive(Clone, Debug, Serialize)]
#[serde(untagged)]
pub enum VectorsConfig {
    /// The unnamed vector.
    Single(VectorParams),
    /// Vectors by name (`""` is the unnamed one).
    Named(BTreeMap<String, VectorParams>),
}

/// Parses one vector's params, naming the bad field (`distance: unknown variant ...`).
fn vector_params<E: serde::de::Error>(
    value: serde_json::Value,
    at: &str,
) -> Result<VectorParams, E> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let field = e.path().to_string();
        let inner = e.into_inner();
        match field.as_str() {
            "." => E::custom(format!("{at}{inner}")),
            field => E::custom(format!("{at}{field}: {inner}")),
        }
    })
}

/// One config when the object has `size` or `distance`, else a map by name; errors name the
/// field inside (an untagged enum would only say that no variant matched).
impl<'de> Deserialize<'de> for VectorsConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let map = serde_json::Map::<String, serde_json::Value>::deserialize(d)?;
        if map.contains_key("size") || map.contains_key("distance") {
            return vector_params(serde_json::Value::Object(map), "").map(VectorsConfig::Single);
        }
        map.into_iter()
            .map(|(name, v)| {
                let params = vector_params(v, &format!("{name:?}."))?;
                Ok((name, params))
            })
            .collect::<Result<_, D::Error>>()
            .map(VectorsConfig::Named)
    }
}

/// `PUT /collections/{c}` as clients send it; fields Vecgate does not use are accepted and ignored.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct CreateCollection {
    /// Dense vector spaces; absent or `{}` for a sparse-only collection.
    pub vectors: Option<VectorsConfig>,
    /// Sparse vector spaces by name.
    pub sparse_vectors: Option<BTreeMap<String, SparseVectorParams>>,
    /// Collection-wide HNSW settings.
    pub hnsw_config: Option<HnswConfigDiff>,
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
    /// Validates a create request into a configuration.
    pub fn from_request(req: CreateCollection) -> Result<Self> {
        let vectors = match req.vectors {
            None => BTreeMap::new(),
            Some(VectorsConfig::Single(p)) => BTreeMap::from([(DEFAULT_VECTOR.to_string(), p)]),
            Some(VectorsConfig::Named(m)) => m,
        };
        let sparse_vectors = req.sparse_vectors.unwrap_or_default();
        let hnsw = req
            .hnsw_config
            .unwrap_or_default()
            .apply(HnswConfig::default());
        let config = CollectionConfig {
            vectors,
            sparse_vectors,
            hnsw,
        };
        config.validate()?;
        Ok(config)
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

    fn parse(json: &str) -> Result<CollectionConfig> {
        CollectionConfig::from_request(serde_json::from_str(json).unwrap())
    }

    #[test]
    fn single_vector_becomes_the_unnamed_one() {
        let c = parse(r#"{"vectors": {"size": 4, "distance": "Cosine"}}"#).unwrap();
        assert_eq!(c.vectors[""].size, 4);
    }

    #[test]
    fn named_and_sparse_vectors_parse() {
        let c = parse(
            r#"{"vectors": {"dense": {"size": 3, "distance": "Dot"}},
                "sparse_vectors": {"text": {"modifier": "idf"}},
                "hnsw_config": {"m": 8}, "shard_number": 1}"#,
        )
        .unwrap();
        assert_eq!(c.hnsw.m, 8);
        assert_eq!(c.sparse_vectors["text"].modifier, Some(Modifier::Idf));
    }

    #[test]
    fn a_bad_distance_names_the_field_and_the_accepted_values() {
        let err = serde_json::from_str::<CreateCollection>(
            r#"{"vectors": {"size": 4, "distance": "cosine"}}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("distance: unknown variant `cosine`, expected one of `Cosine`, `Dot`, `Euclid`, `Manhattan`"),
            "{err}"
        );
        let err = serde_json::from_str::<CreateCollection>(
            r#"{"vectors": {"dense": {"size": "big", "distance": "Dot"}}}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains(r#""dense".size: invalid type"#), "{err}");
    }

    #[test]
    fn zero_size_and_bad_hnsw_are_rejected() {
        assert!(parse(r#"{"vectors": {"size": 0, "distance": "Dot"}}"#).is_err());
        assert!(
            parse(r#"{"vectors": {"size": 2, "distance": "Dot"}, "hnsw_config": {"m": 0}}"#)
                .is_err()
        );
    }
}
