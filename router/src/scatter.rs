//! The router's backend for the query algorithm: a search or listing sent to one replica of
//! every shard, the answers merged. Points travel as the shards wrote them: the router reads
//! ids and scores, and keeps payloads and vectors as raw JSON that it writes out unchanged.

use std::collections::BTreeSet;
use std::sync::Mutex;

use http::Method;
use serde::ser::SerializeMap;
use serde::Deserialize;
use serde_json::value::RawValue;
use shardd::api::request::{ListOut, SearchOut};
use shardd::api::response::{PointOut, Shape};
use shardd::engine::params::{Distance, Modifier};
use shardd::engine::payload::{scalars_at, WithPayload};
use shardd::engine::point::{Payload, PointId, Vector};
use shardd::engine::search::{QueryVector, SearchRequest};
use shardd::engine::sparse::IdfStats;
use shardd::query::groups::GroupKey;
use shardd::query::plan::ListRequest;
use shardd::query::{Backend, Hit};

use crate::error::GatewayError;
use crate::gateway::{encode_segment, Ctx, PointsResult};
use crate::merge::{merge_by_id, merge_top_k};

/// A point as a shard answered it: id, score and version read, payload and vectors kept raw.
#[derive(Clone, Debug, Deserialize)]
pub struct RawHit {
    /// The point's id.
    pub id: PointId,
    /// The version of the write that last changed it (absent in records).
    #[serde(default)]
    pub version: u64,
    /// Its score (absent in records).
    #[serde(default)]
    pub score: f32,
    /// Its payload as the shard wrote it.
    pub payload: Option<Box<RawValue>>,
    /// Its vectors as the shard wrote them (shaped for the collection already).
    pub vector: Option<Box<RawValue>>,
}

/// A point's vectors in a shard's answer: a bare list, or vectors by name.
#[derive(Deserialize)]
#[serde(untagged)]
enum VectorsIn {
    Single(Vec<f32>),
    Named(std::collections::BTreeMap<String, Vector>),
}

impl RawHit {
    fn payload_map(&self) -> Option<Payload> {
        serde_json::from_str(self.payload.as_ref()?.get()).ok()
    }
}

impl Hit for RawHit {
    fn id(&self) -> PointId {
        self.id
    }

    fn version(&self) -> u64 {
        self.version
    }

    fn score(&self) -> f32 {
        self.score
    }

    fn set_score(&mut self, score: f32) {
        self.score = score;
    }

    fn vector(&self, using: &str) -> Option<QueryVector> {
        match serde_json::from_str(self.vector.as_ref()?.get()).ok()? {
            VectorsIn::Single(v) if using.is_empty() => Some(QueryVector::Dense(v)),
            VectorsIn::Single(_) => None,
            VectorsIn::Named(mut m) => match m.remove(using)? {
                Vector::Dense(v) => Some(QueryVector::Dense(v)),
                Vector::Sparse(s) => Some(QueryVector::Sparse(s)),
            },
        }
    }

    fn clear_vectors(&mut self) {
        self.vector = None;
    }

    fn group_keys(&self, key: &str) -> Vec<GroupKey> {
        self.payload_map().map_or_else(Vec::new, |p| {
            scalars_at(&p, key)
                .into_iter()
                .filter_map(GroupKey::of)
                .collect()
        })
    }

    fn select_payload(&mut self, with: &WithPayload) {
        self.payload = self
            .payload_map()
            .and_then(|p| with.select(&p))
            .and_then(|p| serde_json::value::to_raw_value(&p).ok());
    }
}

impl PointOut for RawHit {
    fn write_fields<M: SerializeMap>(
        &self,
        m: &mut M,
        shape: Shape,
        _single_unnamed: bool,
    ) -> Result<(), M::Error> {
        m.serialize_entry("id", &self.id)?;
        if shape == Shape::Scored {
            m.serialize_entry("version", &self.version)?;
        }
        if shape != Shape::Record {
            m.serialize_entry("score", &f64::from(self.score))?;
        }
        m.serialize_entry("payload", &self.payload)?;
        if shape != Shape::Seed {
            m.serialize_entry("vector", &self.vector)?;
        }
        Ok(())
    }
}

/// One collection across every shard of the topology a request started on.
pub struct Scatter<'a> {
    ctx: &'a Ctx<'a>,
    collection: &'a str,
    missing: Mutex<BTreeSet<String>>,
}

impl<'a> Scatter<'a> {
    /// The collection `collection`, searched through `ctx`.
    pub(crate) fn new(ctx: &'a Ctx<'a>, collection: &'a str) -> Self {
        Scatter {
            ctx,
            collection,
            missing: Mutex::default(),
        }
    }

    /// The shards some answer left out (with `allow_partial`), sorted.
    pub fn missing(&self) -> Vec<String> {
        self.missing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// Sends one `/points/query` body to every shard and reads each answer's points.
    async fn query_all(&self, body: Vec<u8>) -> Result<Vec<Vec<RawHit>>, GatewayError> {
        let path = format!(
            "/collections/{}/points/query",
            encode_segment(self.collection)
        );
        let (lists, missing) = self
            .ctx
            .scatter::<PointsResult<RawHit>>(self.collection, &Method::POST, &path, body.into())
            .await?;
        self.missing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(missing);
        Ok(lists.into_iter().map(|r| r.points).collect())
    }

    /// For a sparse query on an idf-weighted vector, the document frequencies of the whole
    /// collection (every shard's, summed), so each shard weights terms as one shard holding
    /// every point would. `None` for anything else.
    async fn global_idf(&self, req: &SearchRequest) -> Result<Option<IdfStats>, GatewayError> {
        let QueryVector::Sparse(query) = &req.vector else {
            return Ok(None);
        };
        let schema = self.ctx.schema(self.collection).await?;
        let idf = schema
            .sparse_vectors
            .get(&req.using)
            .and_then(|p| p.modifier)
            == Some(Modifier::Idf);
        if !idf {
            return Ok(None);
        }
        let path = format!(
            "/collections/{}/sparse/stats",
            encode_segment(self.collection)
        );
        let body = serde_json::to_vec(&shardd::api::request::SparseStatsRequest {
            using: req.using.clone(),
            indices: query.indices.clone(),
        })
        .unwrap_or_default();
        let (all, _) = self
            .ctx
            .scatter::<IdfStats>(self.collection, &Method::POST, &path, body.into())
            .await?;
        let mut total = IdfStats::default();
        for stats in &all {
            total.add(stats);
        }
        Ok(Some(total))
    }
}

impl Backend for Scatter<'_> {
    type Hit = RawHit;
    type Error = GatewayError;

    async fn search(&self, mut req: SearchRequest) -> Result<Vec<RawHit>, GatewayError> {
        let distance = self.distance(&req.using).await?;
        if req.idf.is_none() {
            req.idf = self.global_idf(&req).await?;
        }
        let (offset, limit) = (req.offset, req.limit);
        req.limit = offset + limit;
        req.offset = 0;
        let body = serde_json::to_vec(&SearchOut(&req)).unwrap_or_default();
        let lists = self.query_all(body).await?;
        let span = tracing::info_span!("merge", vecgate.lists = lists.len(), vecgate.limit = limit);
        Ok(span.in_scope(|| merge_top_k(lists, distance, offset, limit)))
    }

    async fn list(&self, mut req: ListRequest) -> Result<Vec<RawHit>, GatewayError> {
        let (offset, limit) = (req.offset, req.limit);
        req.limit = offset + limit;
        req.offset = 0;
        let body = serde_json::to_vec(&ListOut(&req)).unwrap_or_default();
        let lists = self.query_all(body).await?;
        let span = tracing::info_span!("merge", vecgate.lists = lists.len(), vecgate.limit = limit);
        Ok(span.in_scope(|| {
            merge_by_id(lists)
                .into_iter()
                .skip(offset)
                .take(limit)
                .collect()
        }))
    }

    async fn distance(&self, using: &str) -> Result<Distance, GatewayError> {
        Ok(self.ctx.schema(self.collection).await?.distance(using))
    }
}
