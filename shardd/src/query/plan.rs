//! A query once parsed: one nearest search, a listing by id, or a tree of stages (prefetches
//! fused, rescored or re-ranked by MMR), and grouping on top. What the plan runner executes.

use crate::engine::filter::Filter;
use crate::engine::payload::WithPayload;
use crate::engine::point::WithVector;
use crate::engine::search::{QueryVector, SearchParams, SearchRequest};
use crate::query::fusion::Fusion;
use crate::query::mmr::MmrParams;

/// The most results one search, scroll page or listing may ask for (limit + offset).
pub const MAX_RESULTS: usize = 100_000;

/// One stage of a universal query.
#[derive(Clone, Debug, PartialEq)]
pub struct Stage {
    /// Sub-queries whose results this stage combines.
    pub prefetch: Vec<Stage>,
    /// What this stage does.
    pub query: StageQuery,
    /// The vector name searched.
    pub using: String,
    /// The stage's filter.
    pub filter: Option<Filter>,
    /// Search knobs.
    pub params: SearchParams,
    /// Drop points scoring worse than this.
    pub score_threshold: Option<f32>,
    /// How many points the stage yields.
    pub limit: usize,
}

/// The operation of a stage.
#[derive(Clone, Debug, PartialEq)]
pub enum StageQuery {
    /// Nearest neighbours of a vector (among the prefetched points when there are prefetches).
    Nearest(QueryVector),
    /// Nearest candidates re-ranked by maximal marginal relevance.
    Mmr(QueryVector, MmrParams),
    /// Fusion of the prefetches' results.
    Fusion(Fusion),
}

/// A query without a vector: matching points in id order, scored 0.
#[derive(Clone, Debug, PartialEq)]
pub struct ListRequest {
    /// Only matching points.
    pub filter: Option<Filter>,
    /// Points to skip.
    pub offset: usize,
    /// Page size.
    pub limit: usize,
    /// Payload to return.
    pub with_payload: WithPayload,
    /// Vectors to return.
    pub with_vector: WithVector,
}

/// What a universal query asks for.
#[derive(Clone, Debug, PartialEq)]
pub enum QueryPlan {
    /// A nearest-neighbour search.
    Search(SearchRequest),
    /// Stages; the top stage yields `offset + limit` points and the first `offset` are skipped.
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
    /// No query: matching points by id.
    List(ListRequest),
}

impl QueryPlan {
    /// The plan asking for `limit` points from the first on, with the whole payload (what
    /// grouping ranks and keys on).
    pub fn ranked(&self, limit: usize) -> QueryPlan {
        let mut plan = self.clone();
        match &mut plan {
            QueryPlan::Search(s) => {
                s.limit = limit;
                s.offset = 0;
                s.with_payload = WithPayload::All(true);
            }
            QueryPlan::Staged {
                stage,
                offset,
                with_payload,
                ..
            } => {
                stage.limit = limit;
                *offset = 0;
                *with_payload = WithPayload::All(true);
            }
            QueryPlan::List(l) => {
                l.limit = limit;
                l.offset = 0;
                l.with_payload = WithPayload::All(true);
            }
        }
        plan
    }
}

/// `/points/query/groups`: the best points of a query, grouped by a payload value.
#[derive(Clone, Debug, PartialEq)]
pub struct GroupsPlan {
    /// The ranked query.
    pub query: QueryPlan,
    /// The payload key whose values name the groups (keyword or integer).
    pub group_by: String,
    /// Points per group.
    pub group_size: usize,
    /// Groups to return.
    pub limit: usize,
    /// Payload to return with each point.
    pub with_payload: WithPayload,
}

impl GroupsPlan {
    /// How many ranked points to fetch first: enough for full groups if values spread evenly.
    pub fn first_fetch(&self) -> usize {
        (self.group_size * self.limit * 2).clamp(self.limit, MAX_RESULTS)
    }
}

/// Whether a fetch of `fetched` points, which produced `groups` groups, should be widened.
pub fn needs_more(groups: usize, limit: usize, fetched: usize, asked: usize) -> bool {
    groups < limit && fetched == asked && asked < MAX_RESULTS
}
