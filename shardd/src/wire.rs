//! Qdrant's request bodies as clients send them, and their conversion into engine requests.
//!
//! Fields Vecgate does not use (`shard_key`, `consistency`, quantization knobs) are accepted and
//! ignored, as Qdrant clients send them; malformed values are rejected with the field named.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use crate::collection::PointWrite;
use crate::error::{Error, Result};
use crate::filter::Filter;
use crate::fusion::{Fusion, DEFAULT_RRF_K};
use crate::mmr::MmrParams;
use crate::output::WithVector;
use crate::payload::WithPayload;
use crate::payload_index::FieldSchema;
use crate::point::{Payload, PointId, SparseVector, Vector, VectorInput, DEFAULT_VECTOR};
use crate::search::{QueryVector, SearchParams, SearchRequest};
use crate::sparse::IdfStats;

/// The most results one search, scroll page or listing may ask for (limit + offset).
pub const MAX_RESULTS: usize = 100_000;

/// A point as sent in `{"points": [...]}`.
#[derive(Debug, Deserialize)]
pub struct PointInput {
    /// The point's id.
    pub id: PointId,
    /// Its vectors; a point may have none.
    #[serde(default)]
    pub vector: VectorInput,
    /// Its payload.
    #[serde(default)]
    pub payload: Option<Payload>,
}

/// The column form `{"batch": {"ids", "vectors", "payloads"}}`.
#[derive(Debug, Deserialize)]
pub struct BatchInput {
    /// Point ids.
    pub ids: Vec<PointId>,
    /// One vector per id, bare or by name.
    #[serde(default)]
    pub vectors: Option<BatchVectors>,
    /// One payload per id.
    #[serde(default)]
    pub payloads: Option<Vec<Option<Payload>>>,
}

/// The vectors of a batch: a list of unnamed dense vectors or lists by name.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum BatchVectors {
    /// Unnamed dense vectors.
    Dense(Vec<Vec<f32>>),
    /// Vectors by name, one per id.
    Named(BTreeMap<String, Vec<Vector>>),
}

/// `PUT /collections/{c}/points`.
#[derive(Debug, Deserialize)]
pub struct UpsertRequest {
    /// Record form.
    pub points: Option<Vec<PointInput>>,
    /// Column form.
    pub batch: Option<BatchInput>,
}

impl UpsertRequest {
    /// The points to write, from either form.
    pub fn into_points(self) -> Result<Vec<PointWrite>> {
        match (self.points, self.batch) {
            (Some(points), None) => Ok(points
                .into_iter()
                .map(|p| PointWrite {
                    id: p.id,
                    vectors: p.vector.into_named(),
                    payload: p.payload.unwrap_or_default(),
                })
                .collect()),
            (None, Some(batch)) => batch_points(batch),
            _ => Err(Error::bad(
                "upsert body needs exactly one of `points` or `batch`",
            )),
        }
    }
}

fn batch_points(batch: BatchInput) -> Result<Vec<PointWrite>> {
    let n = batch.ids.len();
    let mut columns: Vec<(String, Vec<Vector>)> = match batch.vectors {
        None => Vec::new(),
        Some(BatchVectors::Dense(vs)) => vec![(
            DEFAULT_VECTOR.to_string(),
            vs.into_iter().map(Vector::Dense).collect(),
        )],
        Some(BatchVectors::Named(m)) => m.into_iter().collect(),
    };
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
    let mut iters: Vec<(String, std::vec::IntoIter<Vector>)> =
        columns.drain(..).map(|(k, c)| (k, c.into_iter())).collect();
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
            payload: payload.unwrap_or_default(),
        })
        .collect())
}

/// `POST /collections/{c}/points`.
#[derive(Debug, Deserialize)]
pub struct GetPointsRequest {
    /// Ids to fetch.
    pub ids: Vec<PointId>,
    /// Payload to return (default: all).
    pub with_payload: Option<WithPayload>,
    /// Vectors to return (default: none).
    pub with_vector: Option<WithVector>,
}

/// `POST /collections/{c}/points/delete`.
#[derive(Debug, Deserialize)]
pub struct DeleteRequest {
    /// Ids to delete.
    pub points: Option<Vec<PointId>>,
    /// Or every point matching this.
    pub filter: Option<Filter>,
}

/// `POST|PUT /collections/{c}/points/payload`.
#[derive(Debug, Deserialize)]
pub struct SetPayloadRequest {
    /// The payload to merge or write.
    pub payload: Payload,
    /// Ids to change.
    pub points: Option<Vec<PointId>>,
    /// Or every point matching this.
    pub filter: Option<Filter>,
    /// Merge under this nested key instead of the top level.
    pub key: Option<String>,
}

/// `POST /collections/{c}/points/scroll`.
#[derive(Debug, Deserialize)]
pub struct ScrollRequest {
    /// Start at this id (inclusive).
    pub offset: Option<PointId>,
    /// Page size (default 10).
    pub limit: Option<usize>,
    /// Only matching points.
    pub filter: Option<Filter>,
    /// Payload to return (default: all).
    pub with_payload: Option<WithPayload>,
    /// Vectors to return (default: none).
    pub with_vector: Option<WithVector>,
    /// Not supported: ordering by a payload field.
    pub order_by: Option<Value>,
}

/// `POST /collections/{c}/points/count`.
#[derive(Debug, Deserialize)]
pub struct CountRequest {
    /// Only matching points.
    pub filter: Option<Filter>,
    /// Accepted; counts are always exact.
    pub exact: Option<bool>,
}

/// A named vector in a legacy search: `{"name", "vector"}`.
#[derive(Debug, Deserialize)]
pub struct NamedQuery {
    /// The vector name.
    pub name: String,
    /// The query vector, dense or sparse.
    pub vector: Vector,
}

/// The `vector` of a legacy search: bare (the unnamed vector) or named.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum LegacyVector {
    /// A bare dense vector.
    Bare(Vec<f32>),
    /// A named dense or sparse vector.
    Named(NamedQuery),
}

/// `POST /collections/{c}/points/search` (legacy).
#[derive(Debug, Deserialize)]
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
    /// Collection-wide idf statistics, sent by the router (not a Qdrant field).
    pub vecgate_idf: Option<IdfStats>,
}

/// `POST /collections/{c}/points/query`.
#[derive(Debug, Deserialize)]
pub struct QueryRequest {
    /// The query: a vector, `{"nearest": ...}`, or absent to list points by id.
    pub query: Option<Value>,
    /// The vector name to search (default: the unnamed one).
    pub using: Option<String>,
    /// Only matching points.
    pub filter: Option<Filter>,
    /// Search knobs.
    pub params: Option<SearchParams>,
    /// Drop points scoring worse than this.
    pub score_threshold: Option<f32>,
    /// How many points to return (default 10).
    pub limit: Option<usize>,
    /// How many of the best points to skip.
    pub offset: Option<usize>,
    /// Payload to return (default: none).
    pub with_payload: Option<WithPayload>,
    /// Vectors to return (default: none).
    pub with_vector: Option<WithVector>,
    /// Sub-queries (see [`query_plan`]).
    pub prefetch: Option<Value>,
    /// Not supported: vectors from another collection.
    pub lookup_from: Option<Value>,
    /// Collection-wide idf statistics, sent by the router (not a Qdrant field).
    pub vecgate_idf: Option<IdfStats>,
}

/// `PUT /collections/{c}/index`.
#[derive(Debug, Deserialize)]
pub struct CreateIndexRequest {
    /// The payload key to index (dotted paths allowed).
    pub field_name: String,
    /// Its type: a name or `{"type": ..., "is_tenant": ...}`.
    pub field_schema: Option<FieldSchema>,
}

/// Vecgate's internal `POST /collections/{c}/sparse/stats`.
#[derive(Debug, Deserialize)]
pub struct SparseStatsRequest {
    /// The sparse vector name.
    pub using: String,
    /// The dimensions whose document frequencies are wanted.
    pub indices: Vec<u32>,
}

/// `{"searches": [...]}` of the batch endpoints.
#[derive(Debug, Deserialize)]
pub struct Batch<T> {
    /// The requests, answered in order.
    pub searches: Vec<T>,
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

impl LegacySearchRequest {
    /// The engine request.
    pub fn into_search(self) -> Result<SearchRequest> {
        let offset = self.offset.unwrap_or(0);
        check_limit(self.limit, offset)?;
        let (using, vector) = match self.vector {
            LegacyVector::Bare(v) => (DEFAULT_VECTOR.to_string(), QueryVector::Dense(v)),
            LegacyVector::Named(NamedQuery {
                name,
                vector: Vector::Dense(v),
            }) => (name, QueryVector::Dense(v)),
            LegacyVector::Named(NamedQuery {
                name,
                vector: Vector::Sparse(s),
            }) => (name, QueryVector::Sparse(s)),
        };
        Ok(SearchRequest {
            using,
            vector,
            filter: self.filter,
            limit: self.limit,
            offset,
            score_threshold: self.score_threshold,
            params: self.params.unwrap_or_default(),
            with_payload: self.with_payload.unwrap_or(WithPayload::All(false)),
            with_vector: self.with_vector.unwrap_or(WithVector::All(false)),
            idf: self.vecgate_idf,
        })
    }
}

/// One stage of a universal query: a nearest search, or a fusion or rescoring of its prefetches.
#[derive(Clone, Debug)]
pub struct Stage {
    /// Sub-queries whose results this stage combines.
    pub prefetch: Vec<Stage>,
    /// What this stage does.
    pub query: StageQuery,
    /// The vector name searched.
    pub using: String,
    /// The stage's filter.
    pub filter: Option<Filter>,
    /// The filter as sent, to forward it.
    pub filter_json: Option<Value>,
    /// Search knobs.
    pub params: SearchParams,
    /// Drop points scoring worse than this.
    pub score_threshold: Option<f32>,
    /// How many points the stage yields.
    pub limit: usize,
    /// Re-rank a nearest stage's candidates by maximal marginal relevance.
    pub mmr: Option<MmrParams>,
    /// Collection-wide idf statistics, sent by the router (not a Qdrant field).
    pub idf: Option<IdfStats>,
}

/// The operation of a stage.
#[derive(Clone, Debug)]
pub enum StageQuery {
    /// Nearest neighbours of a vector (over the prefetched points when there are prefetches).
    Nearest(QueryVector),
    /// Fusion of the prefetches' results.
    Fusion(Fusion),
}

/// JSON of a query vector, as shards accept it.
pub fn vector_json(v: &QueryVector) -> Value {
    match v {
        QueryVector::Dense(d) => serde_json::json!(d),
        QueryVector::Sparse(s) => serde_json::json!({"indices": s.indices, "values": s.values}),
    }
}

fn mmr_params(m: &Value) -> Result<MmrParams> {
    let diversity = match m.get("diversity") {
        None | Some(Value::Null) => 0.5,
        Some(d) => d
            .as_f64()
            .filter(|d| (0.0..=1.0).contains(d))
            .ok_or_else(|| Error::bad("query.mmr.diversity: expected a number from 0 to 1"))?
            as f32,
    };
    let candidates_limit = match m.get("candidates_limit") {
        None | Some(Value::Null) => None,
        Some(c) => Some(
            c.as_u64()
                .filter(|c| *c >= 1 && *c as usize <= MAX_RESULTS)
                .ok_or_else(|| {
                    Error::bad(format!(
                        "query.mmr.candidates_limit: expected 1 to {MAX_RESULTS}"
                    ))
                })? as usize,
        ),
    };
    Ok(MmrParams {
        diversity,
        candidates_limit,
    })
}

fn stage_query(v: &Value) -> Result<(StageQuery, Option<MmrParams>)> {
    if let Some(obj) = v.as_object() {
        if let Some(f) = obj.get("fusion") {
            return match f.as_str() {
                Some("rrf") => Ok((
                    StageQuery::Fusion(Fusion::Rrf {
                        k: DEFAULT_RRF_K,
                        weights: None,
                    }),
                    None,
                )),
                Some("dbsf") => Ok((StageQuery::Fusion(Fusion::Dbsf), None)),
                _ => Err(Error::bad(format!(
                    "query.fusion: expected \"rrf\" or \"dbsf\", got {f}"
                ))),
            };
        }
        if let Some(r) = obj.get("rrf") {
            let k =
                match r.get("k") {
                    None | Some(Value::Null) => DEFAULT_RRF_K,
                    Some(k) => k.as_u64().filter(|k| *k >= 1).ok_or_else(|| {
                        Error::bad("query.rrf.k: expected an integer of at least 1")
                    })? as usize,
                };
            let weights = match r.get("weights") {
                None | Some(Value::Null) => None,
                Some(w) => Some(
                    serde_json::from_value::<Vec<f32>>(w.clone())
                        .map_err(|e| Error::bad(format!("query.rrf.weights: {e}")))?,
                ),
            };
            return Ok((StageQuery::Fusion(Fusion::Rrf { k, weights }), None));
        }
        if let Some(m) = obj.get("mmr").filter(|m| !m.is_null()) {
            let nearest = obj
                .get("nearest")
                .ok_or_else(|| Error::bad("query.mmr goes with query.nearest"))?;
            return Ok((
                StageQuery::Nearest(query_vector(nearest.clone())?),
                Some(mmr_params(m)?),
            ));
        }
    }
    query_vector(v.clone()).map(|q| (StageQuery::Nearest(q), None))
}

/// Parses a prefetch stage (or a whole query with prefetches) from its JSON.
pub fn parse_stage(v: &Value) -> Result<Stage> {
    let obj = v
        .as_object()
        .ok_or_else(|| Error::bad("prefetch: expected an object"))?;
    if obj.get("lookup_from").is_some_and(|l| !l.is_null()) {
        return Err(Error::bad("lookup_from is not supported"));
    }
    let prefetch = match obj.get("prefetch") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items.iter().map(parse_stage).collect::<Result<_>>()?,
        Some(single) => vec![parse_stage(single)?],
    };
    let (query, mmr) = match obj.get("query") {
        Some(q) if !q.is_null() => stage_query(q)?,
        _ if prefetch.is_empty() => return Err(Error::bad("prefetch: a stage needs a `query`")),
        _ => {
            return Err(Error::bad(
                "query: a query with prefetches needs a `query` (a fusion or a vector)",
            ))
        }
    };
    if prefetch.is_empty() && matches!(query, StageQuery::Fusion(_)) {
        return Err(Error::bad("query: fusion needs prefetches to fuse"));
    }
    let filter_json = obj.get("filter").filter(|f| !f.is_null()).cloned();
    let filter = filter_json
        .clone()
        .map(serde_json::from_value::<Filter>)
        .transpose()
        .map_err(|e| Error::bad(format!("Format error in JSON body: {e}")))?;
    let field = |k: &str| obj.get(k).filter(|x| !x.is_null()).cloned();
    let limit = field("limit")
        .map(|l| {
            l.as_u64()
                .ok_or_else(|| Error::bad("limit: expected an unsigned integer"))
        })
        .transpose()?
        .unwrap_or(10) as usize;
    check_limit(limit, 0)?;
    Ok(Stage {
        prefetch,
        query,
        using: field("using")
            .and_then(|u| u.as_str().map(str::to_string))
            .unwrap_or_default(),
        filter,
        filter_json,
        params: field("params")
            .map(serde_json::from_value)
            .transpose()
            .map_err(|e| Error::bad(format!("params: {e}")))?
            .unwrap_or_default(),
        score_threshold: field("score_threshold")
            .and_then(|t| t.as_f64())
            .map(|t| t as f32),
        limit,
        mmr,
        idf: field("vecgate_idf")
            .map(serde_json::from_value)
            .transpose()
            .map_err(|e| Error::bad(format!("vecgate_idf: {e}")))?,
    })
}

/// What a universal query asks for, once parsed.
pub enum QueryPlan {
    /// A nearest-neighbour search.
    Search(SearchRequest),
    /// Prefetches combined by fusion or rescored; the top stage yields `offset + limit`.
    Staged {
        /// The top stage.
        stage: Stage,
        /// Points to skip.
        offset: usize,
        /// Payload to return.
        with_payload: WithPayload,
        /// Vectors to return.
        with_vector: WithVector,
    },
    /// No query: matching points by id, scored 0.
    List {
        /// Only matching points.
        filter: Option<Filter>,
        /// Page size.
        limit: usize,
        /// Points to skip.
        offset: usize,
        /// Payload to return.
        with_payload: WithPayload,
        /// Vectors to return.
        with_vector: WithVector,
    },
}

fn query_vector(v: Value) -> Result<QueryVector> {
    match v {
        Value::Array(_) => match serde_json::from_value::<Vec<f32>>(v) {
            Ok(dense) => Ok(QueryVector::Dense(dense)),
            Err(_) => Err(Error::bad(
                "query: multi-vector (list of lists) queries are not supported",
            )),
        },
        Value::Object(mut m) => {
            if let Some(inner) = m.remove("nearest") {
                return query_vector(inner);
            }
            if m.contains_key("indices") {
                let sparse: SparseVector = serde_json::from_value(Value::Object(m))
                    .map_err(|e| Error::bad(format!("query: {e}")))?;
                return Ok(QueryVector::Sparse(sparse));
            }
            let kind = m.keys().next().cloned().unwrap_or_default();
            Err(Error::bad(format!("query: `{kind}` queries are not supported; send a vector or {{\"nearest\": vector}}")))
        }
        Value::Number(_) | Value::String(_) => Err(Error::bad(
            "query: querying by point id is not supported; send the vector",
        )),
        other => Err(Error::bad(format!("query: expected a vector, got {other}"))),
    }
}

/// Parses a universal query (`/points/query` body) into a plan.
pub fn query_plan(raw: &Value) -> Result<QueryPlan> {
    let req: QueryRequest = serde_json::from_value(raw.clone())
        .map_err(|e| Error::bad(format!("Format error in JSON body: {e}")))?;
    let wants_mmr = raw
        .get("query")
        .and_then(|q| q.get("mmr"))
        .is_some_and(|m| !m.is_null());
    if req.prefetch.as_ref().is_none_or(Value::is_null) && !wants_mmr {
        return req.into_plan();
    }
    let offset = req.offset.unwrap_or(0);
    let limit = req.limit.unwrap_or(10);
    check_limit(limit, offset)?;
    let mut stage = parse_stage(raw)?;
    stage.limit = limit + offset;
    Ok(QueryPlan::Staged {
        stage,
        offset,
        with_payload: req.with_payload.unwrap_or(WithPayload::All(false)),
        with_vector: req.with_vector.unwrap_or(WithVector::All(false)),
    })
}

impl QueryRequest {
    /// The engine request for a query without prefetches.
    pub fn into_plan(self) -> Result<QueryPlan> {
        if self.prefetch.as_ref().is_some_and(|p| !p.is_null()) {
            return Err(Error::bad("prefetch: use wire::query_plan"));
        }
        if self.lookup_from.as_ref().is_some_and(|p| !p.is_null()) {
            return Err(Error::bad("lookup_from is not supported"));
        }
        let limit = self.limit.unwrap_or(10);
        let offset = self.offset.unwrap_or(0);
        check_limit(limit, offset)?;
        let with_payload = self.with_payload.unwrap_or(WithPayload::All(false));
        let with_vector = self.with_vector.unwrap_or(WithVector::All(false));
        let Some(query) = self.query.filter(|q| !q.is_null()) else {
            return Ok(QueryPlan::List {
                filter: self.filter,
                limit,
                offset,
                with_payload,
                with_vector,
            });
        };
        Ok(QueryPlan::Search(SearchRequest {
            using: self.using.unwrap_or_default(),
            vector: query_vector(query)?,
            filter: self.filter,
            limit,
            offset,
            score_threshold: self.score_threshold,
            params: self.params.unwrap_or_default(),
            with_payload,
            with_vector,
            idf: self.vecgate_idf,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
        assert!(points[1].payload.is_empty());
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
        let plan = |v: Value| {
            serde_json::from_value::<QueryRequest>(v)
                .unwrap()
                .into_plan()
        };
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
            Ok(QueryPlan::List { limit: 10, .. })
        ));
        assert!(plan(json!({"query": {"fusion": "rrf"}})).is_err());
        let staged = query_plan(&json!({"prefetch": [{"query": [1.0], "limit": 5}, {"query": {"indices": [1], "values": [1.0]}, "using": "s"}], "query": {"rrf": {"k": 60}}, "limit": 3, "offset": 1})).unwrap();
        assert!(
            matches!(staged, QueryPlan::Staged { ref stage, offset: 1, .. } if stage.limit == 4 && stage.prefetch.len() == 2 && stage.prefetch[0].limit == 5)
        );
        assert!(
            query_plan(&json!({"prefetch": {"query": [1.0]}})).is_err(),
            "prefetch needs a query"
        );
        let mmr = query_plan(&json!({"query": {"nearest": [1.0], "mmr": {"diversity": 0.3, "candidates_limit": 50}}})).unwrap();
        assert!(
            matches!(mmr, QueryPlan::Staged { ref stage, .. } if stage.mmr == Some(MmrParams { diversity: 0.3, candidates_limit: Some(50) }))
        );
        assert!(
            query_plan(&json!({"query": {"nearest": [1.0], "mmr": {"diversity": 2.0}}})).is_err()
        );
        assert!(plan(json!({"query": [[1.0], [2.0]]})).is_err());
    }
}
