//! The one query algorithm: a plan (search, listing, or stages of prefetch, fusion, rescoring
//! and MMR; grouping on top) run over a [`Backend`] that can search a whole collection.
//!
//! A shard runs it over its local collection; the router runs it with scatter-and-merge as the
//! backend, so a prefetch is gathered from every shard before it is fused, and a sharded answer
//! equals that of one shard holding every point. Only "search this stage" differs.

pub mod fusion;
pub mod groups;
pub mod local;
pub mod mmr;
pub mod plan;

use std::future::Future;
use std::pin::Pin;

use futures_util::future::join_all;

use crate::engine::filter::{Condition, Filter};
use crate::engine::params::Distance;
use crate::engine::payload::WithPayload;
use crate::engine::point::{PointId, WithVector};
use crate::engine::search::{QueryVector, SearchRequest};
use crate::error::Error;
use groups::{Group, GroupKey};
use plan::{needs_more, GroupsPlan, ListRequest, QueryPlan, Stage, StageQuery, MAX_RESULTS};

/// A ranked point as the algorithm handles it: its id and score, and on demand the vector MMR
/// compares and the payload values grouping keys on.
pub trait Hit: Clone + Send + Sync {
    /// The point's id.
    fn id(&self) -> PointId;
    /// The version of the write that last changed it: of two copies (while points move between
    /// shards), the higher is current.
    fn version(&self) -> u64;
    /// Its score.
    fn score(&self) -> f32;
    /// Replaces its score (fusion).
    fn set_score(&mut self, score: f32);
    /// Its vector `using`, when it carries one.
    fn vector(&self, using: &str) -> Option<QueryVector>;
    /// Drops the vectors it carries.
    fn clear_vectors(&mut self);
    /// The keyword and integer values at payload key `key`.
    fn group_keys(&self, key: &str) -> Vec<GroupKey>;
    /// Keeps only the part of its payload `with` selects.
    fn select_payload(&mut self, with: &WithPayload);
}

/// Where a plan runs: something that can search the whole collection.
pub trait Backend: Sync {
    /// The points it answers with.
    type Hit: Hit;
    /// Its errors; the algorithm's own are [`Error`]s.
    type Error: From<Error> + Send;
    /// One nearest search over the whole collection: the best `offset + limit`, first
    /// `offset` skipped, best first (ties by id).
    fn search(
        &self,
        req: SearchRequest,
    ) -> impl Future<Output = Result<Vec<Self::Hit>, Self::Error>> + Send;
    /// Matching points in id order, `offset` skipped, then `limit` of them.
    fn list(
        &self,
        req: ListRequest,
    ) -> impl Future<Output = Result<Vec<Self::Hit>, Self::Error>> + Send;
    /// The distance of dense vector `using`.
    fn distance(&self, using: &str) -> impl Future<Output = Result<Distance, Self::Error>> + Send;
}

type Boxed<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Runs a query plan.
pub async fn run<B: Backend>(b: &B, plan: QueryPlan) -> Result<Vec<B::Hit>, B::Error> {
    match plan {
        QueryPlan::Search(s) => b.search(s).await,
        QueryPlan::List(l) => b.list(l).await,
        QueryPlan::Staged {
            stage,
            offset,
            with_payload,
            with_vector,
        } => {
            let mut points = run_stage(b, &stage, &with_payload, &with_vector).await?;
            points.drain(..offset.min(points.len()));
            Ok(points)
        }
    }
}

/// Runs a groups plan: ranks, groups, and widens the ranking while groups are short and more
/// points may exist.
pub async fn run_groups<B: Backend>(
    b: &B,
    plan: &GroupsPlan,
) -> Result<Vec<Group<B::Hit>>, B::Error> {
    let mut asked = plan.first_fetch();
    loop {
        let points = run(b, plan.query.ranked(asked)).await?;
        let grouped = groups::group(&points, plan);
        if !needs_more(grouped.len(), plan.limit, points.len(), asked) {
            return Ok(grouped);
        }
        asked = (asked * 4).min(MAX_RESULTS);
    }
}

/// Runs one stage: its prefetches first (concurrently), then a fusion of them, or a search
/// (among the prefetched points when there are any), re-ranked by MMR when asked.
fn run_stage<'a, B: Backend>(
    b: &'a B,
    stage: &'a Stage,
    with_payload: &'a WithPayload,
    with_vector: &'a WithVector,
) -> Boxed<'a, Result<Vec<B::Hit>, B::Error>> {
    Box::pin(async move {
        let lists = join_all(
            stage
                .prefetch
                .iter()
                .map(|p| run_stage(b, p, with_payload, with_vector)),
        )
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
        let (vector, mmr) = match &stage.query {
            StageQuery::Fusion(f) => {
                if lists.is_empty() {
                    return Err(Error::bad("query: fusion needs prefetches to fuse").into());
                }
                let mut fused = fusion::fuse(lists, f)?;
                if let Some(t) = stage.score_threshold {
                    fused.retain(|p| p.score() >= t);
                }
                fused.truncate(stage.limit);
                return Ok(fused);
            }
            StageQuery::Nearest(v) => (v, None),
            StageQuery::Mmr(v, m) => (v, Some(*m)),
        };
        let filter = if stage.prefetch.is_empty() {
            stage.filter.clone()
        } else {
            Some(among(&lists, stage.filter.as_ref()))
        };
        let (limit, fetch) = match mmr {
            Some(m) => (
                m.candidates_limit.unwrap_or(stage.limit).max(stage.limit),
                mmr::fetch_vectors(with_vector, &stage.using),
            ),
            None => (stage.limit, with_vector.clone()),
        };
        let found = b
            .search(SearchRequest {
                using: stage.using.clone(),
                vector: vector.clone(),
                filter,
                limit,
                offset: 0,
                score_threshold: stage.score_threshold,
                params: stage.params,
                with_payload: with_payload.clone(),
                with_vector: fetch,
                idf: None,
            })
            .await?;
        Ok(match mmr {
            Some(params) => mmr::rerank(
                found,
                vector,
                &stage.using,
                b.distance(&stage.using).await?,
                params,
                stage.limit,
                with_vector,
            ),
            None => found,
        })
    })
}

/// The filter of a rescoring stage: the prefetched points that also pass the stage's filter.
fn among<H: Hit>(lists: &[Vec<H>], filter: Option<&Filter>) -> Filter {
    let ids = lists.iter().flatten().map(Hit::id).collect();
    let mut must = vec![Condition::HasId(ids)];
    must.extend(filter.cloned().map(Condition::Filter));
    Filter {
        must,
        ..Filter::default()
    }
}
