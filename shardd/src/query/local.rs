//! The plan runner's backend on one shard: its local collection, searched in place.

use std::future::{ready, Future};

use crate::engine::params::Distance;
use crate::engine::payload::{scalars_at, WithPayload};
use crate::engine::point::{PointId, ScoredPoint, Vector};
use crate::engine::search::{QueryVector, SearchRequest};
use crate::error::{Error, Result};
use crate::query::groups::GroupKey;
use crate::query::plan::ListRequest;
use crate::query::{Backend, Hit};
use crate::shard::Shard;

impl Hit for ScoredPoint {
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
        match self.vectors.as_ref()?.get(using)? {
            Vector::Dense(v) => Some(QueryVector::Dense(v.clone())),
            Vector::Sparse(s) => Some(QueryVector::Sparse(s.clone())),
        }
    }

    fn clear_vectors(&mut self) {
        self.vectors = None;
    }

    fn group_keys(&self, key: &str) -> Vec<GroupKey> {
        self.payload.as_ref().map_or_else(Vec::new, |p| {
            scalars_at(p, key)
                .into_iter()
                .filter_map(GroupKey::of)
                .collect()
        })
    }

    fn select_payload(&mut self, with: &WithPayload) {
        self.payload = self.payload.take().and_then(|p| with.select(&p));
    }
}

/// One collection of one shard.
pub struct Local<'a> {
    /// The shard.
    pub shard: &'a Shard,
    /// The collection.
    pub collection: &'a str,
}

impl Backend for Local<'_> {
    type Hit = ScoredPoint;
    type Error = Error;

    fn search(&self, req: SearchRequest) -> impl Future<Output = Result<Vec<ScoredPoint>>> + Send {
        ready(self.shard.search(self.collection, &req))
    }

    fn list(&self, req: ListRequest) -> impl Future<Output = Result<Vec<ScoredPoint>>> + Send {
        ready(self.shard.list(self.collection, &req))
    }

    fn distance(&self, using: &str) -> impl Future<Output = Result<Distance>> + Send {
        ready(
            self.shard
                .config(self.collection)
                .map(|c| c.distance(using)),
        )
    }
}
