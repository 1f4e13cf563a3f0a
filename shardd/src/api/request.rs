//! Qdrant's request bodies as clients send them, read straight into typed values (no JSON
//! tree), and turned into engine requests and query plans.
//!
//! Fields Vecgate does not use (`shard_key`, `consistency`, quantization knobs) are accepted and
//! ignored, as Qdrant clients send them; malformed values are rejected with the field named.
//! The shapes the router re-sends to shards also serialize back to the same JSON.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};

use crate::engine::filter::Filter;
use crate::engine::params::{CollectionConfig, HnswConfigDiff, SparseVectorParams, VectorParams};
use crate::engine::payload::WithPayload;
use crate::engine::payload_index::FieldType;
use crate::engine::point::PointWrite;
use crate::engine::point::{Payload, PointId, SparseVector, Vector, WithVector, DEFAULT_VECTOR};
use crate::engine::search::{QueryVector, SearchParams, SearchRequest};
use crate::engine::sparse::IdfStats;
use crate::error::{Error, Result};
use crate::query::fusion::{Fusion, DEFAULT_RRF_K};
use crate::query::mmr::MmrParams;
use crate::query::plan::{GroupsPlan, ListRequest, QueryPlan, Stage, StageQuery, MAX_RESULTS};

/// A dense vector as sent: a list of numbers (a list of lists is a multi-vector, refused).
struct Dense(Vec<f32>);

impl<'de> Deserialize<'de> for Dense {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_seq(DenseVisitor)
    }
}

struct DenseVisitor;

impl<'de> Visitor<'de> for DenseVisitor {
    type Value = Dense;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of numbers")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<Dense, A::Error> {
        let mut out = Vec::with_capacity(s.size_hint().unwrap_or(128));
        while let Some(x) = s.next_element::<DenseItem>()? {
            out.push(x.0);
        }
        Ok(Dense(out))
    }
}

struct DenseItem(f32);

impl<'de> Deserialize<'de> for DenseItem {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = DenseItem;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number")
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<DenseItem, E> {
                Ok(DenseItem(v as f32))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<DenseItem, E> {
                Ok(DenseItem(v as f32))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<DenseItem, E> {
                Ok(DenseItem(v as f32))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<DenseItem, A::Error> {
                Err(de::Error::custom(
                    "multi-vectors (lists of lists) are not supported; send one vector",
                ))
            }
        }
        d.deserialize_any(V)
    }
}

/// One vector: dense (a list) or sparse (`{"indices", "values"}`).
struct VectorWire(Vector);

impl<'de> Deserialize<'de> for VectorWire {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = VectorWire;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a vector: a list of numbers or {\"indices\", \"values\"}")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, s: A) -> Result<VectorWire, A::Error> {
                DenseVisitor
                    .visit_seq(s)
                    .map(|d| VectorWire(Vector::Dense(d.0)))
            }
            fn visit_map<A: MapAccess<'de>>(self, m: A) -> Result<VectorWire, A::Error> {
                SparseVector::deserialize(de::value::MapAccessDeserializer::new(m))
                    .map(|s| VectorWire(Vector::Sparse(s)))
            }
        }
        d.deserialize_any(V)
    }
}

/// A point's vectors as sent: a bare dense vector (the unnamed one) or a map by name.
#[derive(Default)]
pub struct VectorInput(pub BTreeMap<String, Vector>);

impl<'de> Deserialize<'de> for VectorInput {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = VectorInput;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a vector (a list of numbers) or vectors by name")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, s: A) -> Result<VectorInput, A::Error> {
                let d = DenseVisitor.visit_seq(s)?;
                Ok(VectorInput(BTreeMap::from([(
                    DEFAULT_VECTOR.to_string(),
                    Vector::Dense(d.0),
                )])))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<VectorInput, A::Error> {
                let mut out = BTreeMap::new();
                while let Some(name) = m.next_key::<String>()? {
                    out.insert(name, m.next_value::<VectorWire>()?.0);
                }
                Ok(VectorInput(out))
            }
            fn visit_unit<E: de::Error>(self) -> Result<VectorInput, E> {
                Ok(VectorInput::default())
            }
        }
        d.deserialize_any(V)
    }
}

/// A point as sent in `{"points": [...]}`; `P` is how its payload is kept.
#[derive(Deserialize)]
pub struct PointInput<P = Payload> {
    /// The point's id.
    pub id: PointId,
    /// Its vectors; a point may have none.
    #[serde(default)]
    pub vector: VectorInput,
    /// Its payload.
    pub payload: Option<P>,
}

/// The column form `{"batch": {"ids", "vectors", "payloads"}}`.
#[derive(Deserialize)]
pub struct BatchInput<P = Payload> {
    /// Point ids.
    pub ids: Vec<PointId>,
    /// One vector per id, bare or by name.
    #[serde(default)]
    pub vectors: Option<BatchVectors>,
    /// One payload per id.
    pub payloads: Option<Vec<Option<P>>>,
}

/// The vectors of a batch: a list of unnamed dense vectors, or lists by name.
pub struct BatchVectors(BTreeMap<String, Vec<Vector>>);

impl<'de> Deserialize<'de> for BatchVectors {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = BatchVectors;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of vectors, or lists of vectors by name")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<BatchVectors, A::Error> {
                let mut col = Vec::new();
                while let Some(d) = s.next_element::<Dense>()? {
                    col.push(Vector::Dense(d.0));
                }
                Ok(BatchVectors(BTreeMap::from([(
                    DEFAULT_VECTOR.to_string(),
                    col,
                )])))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<BatchVectors, A::Error> {
                let mut out = BTreeMap::new();
                while let Some(name) = m.next_key::<String>()? {
                    let col: Vec<VectorWire> = m.next_value()?;
                    out.insert(name, col.into_iter().map(|v| v.0).collect());
                }
                Ok(BatchVectors(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// `PUT /collections/{c}/points`.
#[derive(Deserialize)]
#[serde(bound = "P: Deserialize<'de>")]
pub struct UpsertRequest<P = Payload> {
    /// Record form.
    pub points: Option<Vec<PointInput<P>>>,
    /// Column form.
    pub batch: Option<BatchInput<P>>,
}

impl<P: Clone> UpsertRequest<P> {
    /// The points to write, from either form; a point without payload has `None`.
    pub fn into_points(self) -> Result<Vec<PointWrite<Option<P>>>> {
        match (self.points, self.batch) {
            (Some(points), None) => Ok(points
                .into_iter()
                .map(|p| PointWrite {
                    id: p.id,
                    vectors: p.vector.0,
                    payload: p.payload,
                })
                .collect()),
            (None, Some(batch)) => batch_points(batch),
            _ => Err(Error::bad(
                "upsert body needs exactly one of `points` or `batch`",
            )),
        }
    }
}

fn batch_points<P: Clone>(batch: BatchInput<P>) -> Result<Vec<PointWrite<Option<P>>>> {
    let n = batch.ids.len();
    let columns: Vec<(String, Vec<Vector>)> = batch
        .vectors
        .map(|v| v.0.into_iter().collect())
        .unwrap_or_default();
    if let Some((name, col)) = columns.iter().find(|(_, c)| c.len() != n) {
        return Err(Error::bad(format!(
            "batch has {n} ids but {} vectors for {name:?}",
            col.len()
        )));
    }
    let mut payloads = batch.payloads.unwrap_or_default();
    if !payloads.is_empty() && payloads.len() != n {
        return Err(Error::bad(format!(
            "batch has {n} ids but {} payloads",
            payloads.len()
        )));
    }
    payloads.resize(n, None);
    let mut iters: Vec<(String, std::vec::IntoIter<Vector>)> = columns
        .into_iter()
        .map(|(k, c)| (k, c.into_iter()))
        .collect();
    Ok(batch
        .ids
        .into_iter()
        .zip(payloads)
        .map(|(id, payload)| PointWrite {
            id,
            vectors: iters
                .iter_mut()
                .filter_map(|(k, it)| Some((k.clone(), it.next()?)))
                .collect(),
            payload,
        })
        .collect())
}

/// Points the router sends to one shard, in the record form of an upsert.
pub struct UpsertOut<'a, P>(pub &'a [PointWrite<Option<P>>]);

impl<P: Serialize> Serialize for UpsertOut<'_, P> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        struct Points<'a, P>(&'a [PointWrite<Option<P>>]);
        impl<P: Serialize> Serialize for Points<'_, P> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_seq(self.0.iter().map(PointOut))
            }
        }
        let mut m = s.serialize_map(Some(1))?;
        m.serialize_entry("points", &Points(self.0))?;
        m.end()
    }
}

/// One point in the record form: `{"id", "vector", "payload"}`.
struct PointOut<'a, P>(&'a PointWrite<Option<P>>);

impl<P: Serialize> Serialize for PointOut<'_, P> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let p = self.0;
        let mut m = s.serialize_map(Some(3))?;
        m.serialize_entry("id", &p.id)?;
        m.serialize_entry("vector", &VectorsOut(&p.vectors))?;
        if let Some(payload) = &p.payload {
            m.serialize_entry("payload", payload)?;
        }
        m.end()
    }
}

/// Vectors by name as the write form takes them.
pub struct VectorsOut<'a>(pub &'a BTreeMap<String, Vector>);

impl Serialize for VectorsOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (name, v) in self.0 {
            m.serialize_entry(name, &VectorOut(v))?;
        }
        m.end()
    }
}

/// One vector: a list, or `{"indices", "values"}`.
pub struct VectorOut<'a>(pub &'a Vector);

impl Serialize for VectorOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Vector::Dense(v) => v.serialize(s),
            Vector::Sparse(sv) => sv.serialize(s),
        }
    }
}

/// `POST /collections/{c}/points`.
#[derive(Debug, Deserialize, Serialize)]
pub struct GetPointsRequest {
    /// Ids to fetch.
    pub ids: Vec<PointId>,
    /// Payload to return (default: all).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub with_payload: Option<WithPayload>,
    /// Vectors to return (default: none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub with_vector: Option<WithVector>,
}

/// `POST /collections/{c}/points/delete`.
#[derive(Deserialize, Serialize)]
pub struct DeleteRequest {
    /// Ids to delete.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub points: Option<Vec<PointId>>,
    /// Or every point matching this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filter: Option<Filter>,
}

/// `POST|PUT /collections/{c}/points/payload`.
#[derive(Deserialize, Serialize)]
pub struct SetPayloadRequest<P = Payload> {
    /// The payload to merge or write.
    pub payload: P,
    /// Ids to change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub points: Option<Vec<PointId>>,
    /// Or every point matching this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filter: Option<Filter>,
    /// Merge under this nested key instead of the top level.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// `POST /collections/{c}/points/scroll`.
#[derive(Deserialize, Serialize)]
pub struct ScrollRequest {
    /// Start at this id (inclusive).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<PointId>,
    /// Page size (default 10).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    /// Only matching points.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filter: Option<Filter>,
    /// Payload to return (default: all).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub with_payload: Option<WithPayload>,
    /// Vectors to return (default: none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub with_vector: Option<WithVector>,
    /// Not supported: ordering by a payload field.
    #[serde(default, skip_serializing)]
    pub order_by: Option<IgnoredAny>,
}

impl ScrollRequest {
    /// The page size, checked.
    pub fn page(&self) -> Result<usize> {
        if self.order_by.is_some() {
            return Err(Error::bad(
                "order_by is not supported; scroll pages are ordered by id",
            ));
        }
        let limit = self.limit.unwrap_or(10);
        check_limit(limit, 0)?;
        Ok(limit)
    }
}

/// `POST /collections/{c}/points/count`.
#[derive(Deserialize)]
pub struct CountRequest {
    /// Only matching points.
    pub filter: Option<Filter>,
    /// Accepted; counts are always exact.
    pub exact: Option<bool>,
}

/// `field_schema` as clients send it: a type name, or `{"type": ..., "is_tenant": ...}` with
/// tuning fields Vecgate accepts and ignores.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum FieldSchema {
    /// `"keyword"`.
    Name(FieldType),
    /// `{"type": "keyword", "is_tenant": true}`.
    Params {
        /// The index type.
        #[serde(rename = "type")]
        kind: FieldType,
    },
}

/// `PUT /collections/{c}/index`.
#[derive(Deserialize)]
pub struct CreateIndexRequest {
    /// The payload key to index (dotted paths allowed).
    pub field_name: String,
    /// Its type.
    pub field_schema: Option<FieldSchema>,
}

impl CreateIndexRequest {
    /// The field and the index type, checked.
    pub fn checked(self) -> Result<(String, FieldType)> {
        if self.field_name.is_empty() {
            return Err(Error::bad("field_name must not be empty"));
        }
        let kind = match self.field_schema.ok_or_else(|| {
            Error::bad(
                "field_schema is required: one of keyword, integer, float, bool, datetime, uuid, text",
            )
        })? {
            FieldSchema::Name(k) | FieldSchema::Params { kind: k } => k,
        };
        Ok((self.field_name, kind))
    }
}

/// Vecgate's internal `POST /collections/{c}/sparse/stats`.
#[derive(Deserialize, Serialize)]
pub struct SparseStatsRequest {
    /// The sparse vector name.
    pub using: String,
    /// The dimensions whose document frequencies are wanted.
    pub indices: Vec<u32>,
}

/// `{"searches": [...]}` of the batch endpoints.
#[derive(Deserialize)]
pub struct Batch<T> {
    /// The requests, answered in order.
    pub searches: Vec<T>,
}

/// The `vectors` field of a create request: one unnamed config or a map of named ones.
#[derive(Debug)]
pub struct VectorsConfig(BTreeMap<String, VectorParams>);

/// Parses one vector's params, naming the bad field (`distance: unknown variant ...`).
fn vector_params<E: de::Error>(value: serde_json::Value, at: &str) -> Result<VectorParams, E> {
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
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let map = serde_json::Map::<String, serde_json::Value>::deserialize(d)?;
        if map.contains_key("size") || map.contains_key("distance") {
            let one = vector_params(serde_json::Value::Object(map), "")?;
            return Ok(VectorsConfig(BTreeMap::from([(
                DEFAULT_VECTOR.to_string(),
                one,
            )])));
        }
        map.into_iter()
            .map(|(name, v)| {
                let params = vector_params(v, &format!("{name:?}."))?;
                Ok((name, params))
            })
            .collect::<Result<_, D::Error>>()
            .map(VectorsConfig)
    }
}

/// `PUT /collections/{c}` as clients send it; fields Vecgate does not use are accepted and ignored.
#[derive(Debug, Deserialize)]
pub struct CreateCollection {
    /// Dense vector spaces; absent or `{}` for a sparse-only collection.
    pub vectors: Option<VectorsConfig>,
    /// Sparse vector spaces by name.
    pub sparse_vectors: Option<BTreeMap<String, SparseVectorParams>>,
    /// Collection-wide HNSW settings.
    pub hnsw_config: Option<HnswConfigDiff>,
}

impl CreateCollection {
    /// The validated configuration.
    pub fn into_config(self) -> Result<CollectionConfig> {
        CollectionConfig::new(
            self.vectors.map(|v| v.0).unwrap_or_default(),
            self.sparse_vectors.unwrap_or_default(),
            self.hnsw_config,
        )
    }
}

/// Checks `limit` and `offset` against [`MAX_RESULTS`].
pub fn check_limit(limit: usize, offset: usize) -> Result<()> {
    if limit == 0 {
        return Err(Error::bad("limit must be at least 1"));
    }
    if limit.saturating_add(offset) > MAX_RESULTS {
        return Err(Error::bad(format!(
            "limit + offset must be at most {MAX_RESULTS}, got {}",
            limit.saturating_add(offset)
        )));
    }
    Ok(())
}

/// The `vector` of a legacy search: bare (the unnamed vector) or `{"name", "vector"}`.
pub struct LegacyVector {
    /// The vector name.
    pub using: String,
    /// The query.
    pub vector: QueryVector,
}

#[derive(Deserialize)]
struct NamedQuery {
    name: String,
    vector: VectorWire,
}

impl<'de> Deserialize<'de> for LegacyVector {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = LegacyVector;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a vector or {\"name\", \"vector\"}")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, s: A) -> Result<LegacyVector, A::Error> {
                let d = DenseVisitor.visit_seq(s)?;
                Ok(LegacyVector {
                    using: DEFAULT_VECTOR.to_string(),
                    vector: QueryVector::Dense(d.0),
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, m: A) -> Result<LegacyVector, A::Error> {
                let named = NamedQuery::deserialize(de::value::MapAccessDeserializer::new(m))?;
                Ok(LegacyVector {
                    using: named.name,
                    vector: query_vector(named.vector.0),
                })
            }
        }
        d.deserialize_any(V)
    }
}

fn query_vector(v: Vector) -> QueryVector {
    match v {
        Vector::Dense(d) => QueryVector::Dense(d),
        Vector::Sparse(s) => QueryVector::Sparse(s),
    }
}

/// `POST /collections/{c}/points/search` (legacy).
#[derive(Deserialize)]
pub struct LegacySearchRequest {
    /// The query vector.
    pub vector: LegacyVector,
    /// Only matching points.
    pub filter: Option<Filter>,
    /// Search knobs.
    pub params: Option<SearchParams>,
    /// How many points to return.
    pub limit: usize,
    /// How many of the best points to skip.
    pub offset: Option<usize>,
    /// Payload to return (default: none).
    pub with_payload: Option<WithPayload>,
    /// Vectors to return (default: none).
    pub with_vector: Option<WithVector>,
    /// Drop points scoring worse than this.
    pub score_threshold: Option<f32>,
}

impl LegacySearchRequest {
    /// The plan: one search.
    pub fn into_plan(self) -> Result<QueryPlan> {
        let offset = self.offset.unwrap_or(0);
        check_limit(self.limit, offset)?;
        Ok(QueryPlan::Search(SearchRequest {
            using: self.vector.using,
            vector: self.vector.vector,
            filter: self.filter,
            limit: self.limit,
            offset,
            score_threshold: self.score_threshold,
            params: self.params.unwrap_or_default(),
            with_payload: self.with_payload.unwrap_or(WithPayload::All(false)),
            with_vector: self.with_vector.unwrap_or(WithVector::All(false)),
            idf: None,
        }))
    }
}

/// The `query` of a universal query.
pub enum QueryInput {
    /// A vector, or `{"nearest": vector}`.
    Nearest(QueryVector),
    /// `{"nearest": vector, "mmr": {...}}`.
    Mmr(QueryVector, MmrParams),
    /// `{"fusion": "rrf" | "dbsf"}` or `{"rrf": {"k", "weights"}}`.
    Fusion(Fusion),
}

#[derive(Deserialize)]
struct MmrWire {
    diversity: Option<f32>,
    candidates_limit: Option<usize>,
}

#[derive(Deserialize)]
struct RrfWire {
    k: Option<usize>,
    weights: Option<Vec<f32>>,
}

/// What `{"nearest": ...}` holds: a dense or sparse vector.
struct NearestWire(QueryVector);

impl<'de> Deserialize<'de> for NearestWire {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        QueryInput::deserialize(d).and_then(|q| match q {
            QueryInput::Nearest(v) => Ok(NearestWire(v)),
            _ => Err(de::Error::custom("nearest takes a vector")),
        })
    }
}

impl<'de> Deserialize<'de> for QueryInput {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = QueryInput;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a vector, {\"nearest\": vector}, a fusion or an mmr query")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, s: A) -> Result<QueryInput, A::Error> {
                DenseVisitor
                    .visit_seq(s)
                    .map(|d| QueryInput::Nearest(QueryVector::Dense(d.0)))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<QueryInput, E> {
                Err(E::custom(
                    "querying by point id is not supported; send the vector",
                ))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<QueryInput, E> {
                Err(E::custom(
                    "querying by point id is not supported; send the vector",
                ))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<QueryInput, A::Error> {
                let mut nearest: Option<QueryVector> = None;
                let mut mmr: Option<MmrWire> = None;
                let mut fusion: Option<Fusion> = None;
                let mut indices: Option<Vec<u32>> = None;
                let mut values: Option<Vec<f32>> = None;
                while let Some(key) = m.next_key::<String>()? {
                    match key.as_str() {
                        "nearest" => nearest = Some(m.next_value::<NearestWire>()?.0),
                        "mmr" => mmr = m.next_value()?,
                        "indices" => indices = Some(m.next_value()?),
                        "values" => values = Some(m.next_value()?),
                        "fusion" => {
                            let name: String = m.next_value()?;
                            fusion = Some(match name.as_str() {
                                "rrf" => Fusion::Rrf {
                                    k: DEFAULT_RRF_K,
                                    weights: None,
                                },
                                "dbsf" => Fusion::Dbsf,
                                other => {
                                    return Err(de::Error::custom(format!(
                                        "fusion: expected \"rrf\" or \"dbsf\", got \"{other}\""
                                    )))
                                }
                            });
                        }
                        "rrf" => {
                            let r: RrfWire = m.next_value()?;
                            let k = r.k.unwrap_or(DEFAULT_RRF_K);
                            if k == 0 {
                                return Err(de::Error::custom(
                                    "rrf.k: expected an integer of at least 1",
                                ));
                            }
                            fusion = Some(Fusion::Rrf {
                                k,
                                weights: r.weights,
                            });
                        }
                        other => {
                            if m.next_value::<Option<IgnoredAny>>()?.is_some() {
                                return Err(de::Error::custom(format!(
                                    "`{other}` queries are not supported; send a vector, {{\"nearest\": vector}}, a fusion or an mmr query"
                                )));
                            }
                        }
                    }
                }
                if let Some(f) = fusion {
                    return Ok(QueryInput::Fusion(f));
                }
                if let (Some(indices), Some(values)) = (indices, values) {
                    return Ok(QueryInput::Nearest(QueryVector::Sparse(SparseVector {
                        indices,
                        values,
                    })));
                }
                let Some(v) = nearest else {
                    return Err(de::Error::custom(match mmr {
                        Some(_) => "mmr goes with nearest",
                        None => {
                            "expected a vector, {\"nearest\": vector}, a fusion or an mmr query"
                        }
                    }));
                };
                match mmr {
                    None => Ok(QueryInput::Nearest(v)),
                    Some(w) => {
                        let diversity = w.diversity.unwrap_or(0.5);
                        if !(0.0..=1.0).contains(&diversity) {
                            return Err(de::Error::custom(
                                "mmr.diversity: expected a number from 0 to 1",
                            ));
                        }
                        if w.candidates_limit
                            .is_some_and(|c| c == 0 || c > MAX_RESULTS)
                        {
                            return Err(de::Error::custom(format!(
                                "mmr.candidates_limit: expected 1 to {MAX_RESULTS}"
                            )));
                        }
                        Ok(QueryInput::Mmr(
                            v,
                            MmrParams {
                                diversity,
                                candidates_limit: w.candidates_limit,
                            },
                        ))
                    }
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// The body of a universal query, of each of its prefetches, and of a grouped query: one
/// shape, so that the stage fields are declared once. Fields that do not apply where the
/// shape appears (`offset` in a prefetch) are ignored, as unknown fields are.
#[derive(Deserialize)]
pub struct QueryRequest {
    /// Sub-queries whose results this one combines.
    pub prefetch: Option<OneOrMany<QueryRequest>>,
    /// What it does: a vector, a fusion or an mmr query; absent to list points by id.
    pub query: Option<QueryInput>,
    /// The vector name searched (default: the unnamed one).
    pub using: Option<String>,
    /// Only matching points.
    pub filter: Option<Filter>,
    /// Search knobs.
    pub params: Option<SearchParams>,
    /// Drop points scoring worse than this.
    pub score_threshold: Option<f32>,
    /// How many points (or, grouped, how many groups) to return (default 10).
    pub limit: Option<usize>,
    /// How many of the best points to skip.
    pub offset: Option<usize>,
    /// Payload to return (default: none).
    pub with_payload: Option<WithPayload>,
    /// Vectors to return (default: none).
    pub with_vector: Option<WithVector>,
    /// Not supported: vectors from another collection.
    pub lookup_from: Option<IgnoredAny>,
    /// Collection-wide idf statistics, sent by the router (not a Qdrant field).
    pub vecgate_idf: Option<IdfStats>,
    /// Grouped: the payload key whose values name the groups (keyword or integer).
    pub group_by: Option<String>,
    /// Grouped: points per group (default 3).
    pub group_size: Option<usize>,
    /// Grouped, not supported: payloads of another collection.
    pub with_lookup: Option<IgnoredAny>,
}

/// One value or a list of them.
pub struct OneOrMany<T>(pub Vec<T>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for OneOrMany<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = OneOrMany<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("one object or a list")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<OneOrMany<T>, A::Error> {
                let mut out = Vec::new();
                while let Some(x) = s.next_element()? {
                    out.push(x);
                }
                Ok(OneOrMany(out))
            }
            fn visit_map<A: MapAccess<'de>>(self, m: A) -> Result<OneOrMany<T>, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(m)).map(|x| OneOrMany(vec![x]))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

impl QueryRequest {
    /// The stage a prefetch (or a query with prefetches) describes, checked.
    fn into_stage(self) -> Result<Stage> {
        if self.lookup_from.is_some() {
            return Err(Error::bad("lookup_from is not supported"));
        }
        let prefetch = self.prefetch.map_or_else(
            || Ok(Vec::new()),
            |p| p.0.into_iter().map(Self::into_stage).collect(),
        )?;
        let query = match self.query {
            Some(QueryInput::Nearest(v)) => StageQuery::Nearest(v),
            Some(QueryInput::Mmr(v, m)) => StageQuery::Mmr(v, m),
            Some(QueryInput::Fusion(f)) if !prefetch.is_empty() => StageQuery::Fusion(f),
            Some(QueryInput::Fusion(_)) => {
                return Err(Error::bad("query: fusion needs prefetches to fuse"))
            }
            None if prefetch.is_empty() => {
                return Err(Error::bad("prefetch: a stage needs a `query`"))
            }
            None => {
                return Err(Error::bad(
                    "query: a query with prefetches needs a `query` (a fusion or a vector)",
                ))
            }
        };
        let limit = self.limit.unwrap_or(10);
        check_limit(limit, 0)?;
        Ok(Stage {
            prefetch,
            query,
            using: self.using.unwrap_or_default(),
            filter: self.filter,
            params: self.params.unwrap_or_default(),
            score_threshold: self.score_threshold,
            limit,
        })
    }

    /// The plan of `/points/query`: a search, a listing, or stages.
    pub fn into_plan(mut self) -> Result<QueryPlan> {
        let offset = self.offset.unwrap_or(0);
        let limit = self.limit.unwrap_or(10);
        check_limit(limit, offset)?;
        let with_payload = self.with_payload.take().unwrap_or(WithPayload::All(false));
        let with_vector = self.with_vector.take().unwrap_or(WithVector::All(false));
        if self.prefetch.is_some() {
            let mut stage = self.into_stage()?;
            stage.limit = limit + offset;
            return Ok(QueryPlan::Staged {
                stage,
                offset,
                with_payload,
                with_vector,
            });
        }
        if self.lookup_from.is_some() {
            return Err(Error::bad("lookup_from is not supported"));
        }
        match self.query {
            None => Ok(QueryPlan::List(ListRequest {
                filter: self.filter,
                offset,
                limit,
                with_payload,
                with_vector,
            })),
            Some(QueryInput::Fusion(_)) => {
                Err(Error::bad("query: fusion needs prefetches to fuse"))
            }
            Some(QueryInput::Mmr(v, m)) => Ok(QueryPlan::Staged {
                stage: Stage {
                    prefetch: Vec::new(),
                    query: StageQuery::Mmr(v, m),
                    using: self.using.unwrap_or_default(),
                    filter: self.filter,
                    params: self.params.unwrap_or_default(),
                    score_threshold: self.score_threshold,
                    limit: limit + offset,
                },
                offset,
                with_payload,
                with_vector,
            }),
            Some(QueryInput::Nearest(vector)) => Ok(QueryPlan::Search(SearchRequest {
                using: self.using.unwrap_or_default(),
                vector,
                filter: self.filter,
                limit,
                offset,
                score_threshold: self.score_threshold,
                params: self.params.unwrap_or_default(),
                with_payload,
                with_vector,
                idf: self.vecgate_idf,
            })),
        }
    }

    /// The plan of `/points/query/groups`: the ranked query and how to group it.
    pub fn into_groups(mut self) -> Result<GroupsPlan> {
        if self.with_lookup.is_some() {
            return Err(Error::bad("with_lookup is not supported"));
        }
        let (size, limit) = (self.group_size.unwrap_or(3), self.limit.unwrap_or(10));
        if size == 0 || limit == 0 || size.saturating_mul(limit) > MAX_RESULTS {
            return Err(Error::bad(format!(
                "group_size and limit must be at least 1, with at most {MAX_RESULTS} points in all"
            )));
        }
        let group_by = self.group_by.take().unwrap_or_default();
        if group_by.is_empty() {
            return Err(Error::bad("group_by must name a payload key"));
        }
        let with_payload = self.with_payload.replace(WithPayload::All(true));
        self.limit = None;
        self.offset = None;
        Ok(GroupsPlan {
            query: self.into_plan()?,
            group_by,
            group_size: size,
            limit,
            with_payload: with_payload.unwrap_or(WithPayload::All(false)),
        })
    }
}

/// A search as the router sends it to a shard: one nearest stage in `/points/query` form.
pub struct SearchOut<'a>(pub &'a SearchRequest);

impl Serialize for SearchOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let r = self.0;
        let mut m = s.serialize_map(None)?;
        match &r.vector {
            QueryVector::Dense(v) => m.serialize_entry("query", v)?,
            QueryVector::Sparse(sv) => m.serialize_entry("query", sv)?,
        }
        m.serialize_entry("using", &r.using)?;
        if let Some(f) = &r.filter {
            m.serialize_entry("filter", f)?;
        }
        m.serialize_entry("params", &r.params)?;
        if let Some(t) = r.score_threshold {
            m.serialize_entry("score_threshold", &t)?;
        }
        m.serialize_entry("limit", &r.limit)?;
        if r.offset > 0 {
            m.serialize_entry("offset", &r.offset)?;
        }
        m.serialize_entry("with_payload", &r.with_payload)?;
        m.serialize_entry("with_vector", &r.with_vector)?;
        if let Some(idf) = &r.idf {
            m.serialize_entry("vecgate_idf", idf)?;
        }
        m.end()
    }
}

/// A listing as the router sends it to a shard: a `/points/query` without a query.
pub struct ListOut<'a>(pub &'a ListRequest);

impl Serialize for ListOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let r = self.0;
        let mut m = s.serialize_map(None)?;
        if let Some(f) = &r.filter {
            m.serialize_entry("filter", f)?;
        }
        m.serialize_entry("limit", &r.limit)?;
        if r.offset > 0 {
            m.serialize_entry("offset", &r.offset)?;
        }
        m.serialize_entry("with_payload", &r.with_payload)?;
        m.serialize_entry("with_vector", &r.with_vector)?;
        m.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn plan(v: serde_json::Value) -> Result<QueryPlan> {
        serde_json::from_value::<QueryRequest>(v)
            .map_err(|e| Error::bad(e.to_string()))?
            .into_plan()
    }

    #[test]
    fn batch_form_becomes_points() {
        let req: UpsertRequest = serde_json::from_value(json!({"batch": {
            "ids": [1, 2], "vectors": {"d": [[1.0], [2.0]], "s": [{"indices": [1], "values": [0.5]}, {"indices": [], "values": []}]},
            "payloads": [{"a": 1}, null]
        }}))
        .unwrap();
        let points = req.into_points().unwrap();
        assert_eq!(points.len(), 2);
        assert_eq!(points[1].vectors["d"], Vector::Dense(vec![2.0]));
        assert!(points[1].payload.is_none());
    }

    #[test]
    fn mismatched_batches_and_limits_are_rejected() {
        let req: UpsertRequest =
            serde_json::from_value(json!({"batch": {"ids": [1, 2], "vectors": [[1.0]]}})).unwrap();
        assert!(req.into_points().is_err());
        assert!(check_limit(0, 0).is_err());
        assert!(check_limit(MAX_RESULTS, 1).is_err());
    }

    #[test]
    fn query_shapes() {
        assert!(matches!(
            plan(json!({"query": [1.0, 2.0]})),
            Ok(QueryPlan::Search(_))
        ));
        assert!(matches!(
            plan(json!({"query": {"nearest": {"indices": [1], "values": [1.0]}}, "using": "s"})),
            Ok(QueryPlan::Search(SearchRequest {
                vector: QueryVector::Sparse(_),
                ..
            }))
        ));
        assert!(matches!(
            plan(json!({"filter": {"must": []}})),
            Ok(QueryPlan::List(ListRequest { limit: 10, .. }))
        ));
        assert!(plan(json!({"query": {"fusion": "rrf"}})).is_err());
        let staged = plan(json!({"prefetch": [{"query": [1.0], "limit": 5}, {"query": {"indices": [1], "values": [1.0]}, "using": "s"}], "query": {"rrf": {"k": 60}}, "limit": 3, "offset": 1})).unwrap();
        assert!(
            matches!(staged, QueryPlan::Staged { ref stage, offset: 1, .. } if stage.limit == 4 && stage.prefetch.len() == 2 && stage.prefetch[0].limit == 5)
        );
        assert!(
            plan(json!({"prefetch": {"query": [1.0]}})).is_err(),
            "prefetch needs a query"
        );
        let mmr = plan(
            json!({"query": {"nearest": [1.0], "mmr": {"diversity": 0.3, "candidates_limit": 50}}}),
        )
        .unwrap();
        assert!(
            matches!(mmr, QueryPlan::Staged { ref stage, .. } if stage.query == StageQuery::Mmr(QueryVector::Dense(vec![1.0]), MmrParams { diversity: 0.3, candidates_limit: Some(50) }))
        );
        assert!(plan(json!({"query": {"nearest": [1.0], "mmr": {"diversity": 2.0}}})).is_err());
        let multi = plan(json!({"query": [[1.0], [2.0]]}))
            .err()
            .unwrap()
            .to_string();
        assert!(multi.contains("multi-vectors"), "{multi}");
        let by_id = plan(json!({"query": 7})).err().unwrap().to_string();
        assert!(by_id.contains("point id"), "{by_id}");
        let recommend = plan(json!({"query": {"recommend": {"positive": [1]}}}))
            .err()
            .unwrap()
            .to_string();
        assert!(
            recommend.contains("`recommend` queries are not supported"),
            "{recommend}"
        );
    }

    #[test]
    fn a_search_written_for_a_shard_reads_back_as_the_same_search() {
        let QueryPlan::Search(s) = plan(json!({
            "query": {"indices": [3, 1], "values": [0.5, 2.0]}, "using": "text", "limit": 7,
            "filter": {"must": [{"key": "a", "match": {"value": "x"}}]},
            "params": {"hnsw_ef": 64}, "score_threshold": 0.25, "with_payload": ["a"],
            "with_vector": true, "vecgate_idf": {"total": 10, "df": {"1": 3}}
        }))
        .unwrap() else {
            panic!("a search")
        };
        let written = serde_json::to_value(SearchOut(&s)).unwrap();
        assert_eq!(plan(written).unwrap(), QueryPlan::Search(s));
    }
}
