//! A request parsed once: the endpoint its method and path name, the collection, the query
//! string's options, and the body as typed values and query plans. shardd's API and the router
//! both start from a [`Route`]; later steps (cache keys, auth, audit, metrics) read it too.

use std::time::Duration;

use http::Method;
use serde::de::DeserializeOwned;

use crate::api::endpoint::{Endpoint, PathParams, Unrouted};
use crate::api::parse_body;
use crate::api::query_param;
use crate::api::replication::{check_buckets, Replication};
use crate::api::request::{
    Batch, CountRequest, CreateCollection, CreateIndexRequest, DeleteRequest, GetPointsRequest,
    LegacySearchRequest, QueryRequest, ScrollRequest, SetPayloadRequest, SparseStatsRequest,
    UpsertRequest,
};
use crate::api::seed::SeedSearch;
use crate::engine::filter::Filter;
use crate::engine::params::CollectionConfig;
use crate::engine::payload_index::FieldType;
use crate::engine::point::PointWrite;
use crate::engine::point::{Payload, PointId};
use crate::error::{Error, Result};
use crate::query::plan::{GroupsPlan, QueryPlan};
use crate::shard::Selector;

/// A parsed request; `P` is how payloads in writes are kept (parsed on a shard, raw JSON in
/// the router, which only forwards them).
pub struct Route<P = Payload> {
    /// What is asked.
    pub endpoint: Endpoint,
    /// The collection (from the path, or the body of `/v1/search`); empty when there is none.
    pub collection: String,
    /// `?wait=false` asks not to wait for the write (the answer then says `acknowledged`).
    pub wait: bool,
    /// `?timeout=SECONDS`: the client's own deadline, which can only shorten the router's.
    pub timeout: Option<Duration>,
    /// `?version=N`: the version a router gave this write (the shard's clock versions it
    /// otherwise).
    pub version: Option<u64>,
    /// The body.
    pub body: Body<P>,
}

/// The typed body of each endpoint.
pub enum Body<P = Payload> {
    /// Endpoints without a body.
    Empty,
    /// `PUT /collections/{c}`.
    CreateCollection(CollectionConfig),
    /// `PUT /collections/{c}/index`.
    CreateIndex {
        /// The payload key.
        field: String,
        /// The index type.
        kind: FieldType,
    },
    /// `DELETE /collections/{c}/index/{field}`.
    DropIndex {
        /// The payload key.
        field: String,
    },
    /// `PUT /collections/{c}/points`.
    Upsert(Vec<PointWrite<Option<P>>>),
    /// `POST /collections/{c}/points`.
    GetPoints(GetPointsRequest),
    /// `GET /collections/{c}/points/{id}`.
    GetPoint(PointId),
    /// `POST /collections/{c}/points/delete`.
    Delete(Selector),
    /// `POST|PUT /collections/{c}/points/payload`.
    SetPayload {
        /// The points.
        selector: Selector,
        /// The payload to merge or write.
        payload: P,
        /// Merge under this nested key.
        key: Option<String>,
        /// Replace instead of merging (`PUT`).
        overwrite: bool,
    },
    /// `/points/query`, `/points/search` and `/v1/search`: one plan.
    Query(QueryPlan),
    /// `/points/query/batch` and `/points/search/batch`.
    Batch(Vec<QueryPlan>),
    /// `/points/query/groups`.
    Groups(GroupsPlan),
    /// `POST /collections/{c}/points/scroll`.
    Scroll(ScrollRequest),
    /// `POST /collections/{c}/points/count`.
    Count(Option<Filter>),
    /// `POST /collections/{c}/sparse/stats`.
    SparseStats(SparseStatsRequest),
    /// `/collections/{c}/replication/...`.
    Replication(Replication),
}

/// Why a request names nothing that can be run.
#[derive(Debug)]
pub enum RouteError {
    /// No endpoint has this path, or not under this method.
    Unrouted(Unrouted),
    /// The body or path is malformed.
    Bad(Error),
}

impl From<Error> for RouteError {
    fn from(e: Error) -> Self {
        RouteError::Bad(e)
    }
}

fn selector(points: Option<Vec<PointId>>, filter: Option<Filter>) -> Result<Selector> {
    match (points, filter) {
        (Some(ids), None) => Ok(Selector::Ids(ids)),
        (None, Some(f)) => Ok(Selector::Filter(f)),
        _ => Err(Error::bad("give exactly one of `points` (ids) or `filter`")),
    }
}

impl<P> Route<P> {
    /// What a result cache keys this request on, when its answer may be cached (searches,
    /// queries, batches, groups, `/v1/search`, get-by-id, count): the typed body, whose
    /// `Debug` text is canonical (key order, whitespace, float spelling and defaults are gone
    /// once parsed). `None` for writes and everything else.
    pub fn cache_key(&self) -> Option<&(dyn std::fmt::Debug + Sync)> {
        match &self.body {
            Body::Query(plan) => Some(plan),
            Body::Batch(plans) => Some(plans),
            Body::Groups(plan) => Some(plan),
            Body::GetPoints(req) => Some(req),
            Body::GetPoint(id) => Some(id),
            Body::Count(filter) => Some(filter),
            _ => None,
        }
    }

    /// The same route with its write payloads converted by `f` (raw JSON parsed, say).
    pub fn map_payload<Q, E>(
        self,
        mut f: impl FnMut(P) -> std::result::Result<Q, E>,
    ) -> std::result::Result<Route<Q>, E> {
        let body = match self.body {
            Body::Upsert(points) => Body::Upsert(
                points
                    .into_iter()
                    .map(|p| {
                        Ok(PointWrite {
                            id: p.id,
                            vectors: p.vectors,
                            payload: p.payload.map(&mut f).transpose()?,
                        })
                    })
                    .collect::<std::result::Result<_, E>>()?,
            ),
            Body::SetPayload {
                selector,
                payload,
                key,
                overwrite,
            } => Body::SetPayload {
                selector,
                payload: f(payload)?,
                key,
                overwrite,
            },
            Body::Empty => Body::Empty,
            Body::CreateCollection(c) => Body::CreateCollection(c),
            Body::CreateIndex { field, kind } => Body::CreateIndex { field, kind },
            Body::DropIndex { field } => Body::DropIndex { field },
            Body::GetPoints(r) => Body::GetPoints(r),
            Body::GetPoint(id) => Body::GetPoint(id),
            Body::Delete(s) => Body::Delete(s),
            Body::Query(p) => Body::Query(p),
            Body::Batch(p) => Body::Batch(p),
            Body::Groups(p) => Body::Groups(p),
            Body::Scroll(r) => Body::Scroll(r),
            Body::Count(f) => Body::Count(f),
            Body::SparseStats(r) => Body::SparseStats(r),
            Body::Replication(r) => Body::Replication(r),
        };
        Ok(Route {
            endpoint: self.endpoint,
            collection: self.collection,
            wait: self.wait,
            timeout: self.timeout,
            version: self.version,
            body,
        })
    }
}

impl<P: DeserializeOwned + Clone> Route<P> {
    /// Parses a request from its method, percent-encoded path, query string and body.
    pub fn parse(
        method: &Method,
        path: &str,
        query: Option<&str>,
        body: &[u8],
    ) -> std::result::Result<Route<P>, RouteError> {
        let (endpoint, params) = Endpoint::find(method, path).map_err(RouteError::Unrouted)?;
        Ok(Self::parse_found(endpoint, params, query, body)?)
    }

    /// Parses the body of a request whose endpoint is already known.
    pub fn parse_found(
        endpoint: Endpoint,
        params: PathParams,
        query: Option<&str>,
        body: &[u8],
    ) -> Result<Route<P>> {
        let mut collection = params.collection;
        let body = match endpoint {
            Endpoint::Version
            | Endpoint::ListCollections
            | Endpoint::CollectionInfo
            | Endpoint::DropCollection
            | Endpoint::CollectionExists => Body::Empty,
            Endpoint::CreateCollection => {
                Body::CreateCollection(parse_body::<CreateCollection>(body)?.into_config()?)
            }
            Endpoint::CreateIndex => {
                let (field, kind) = parse_body::<CreateIndexRequest>(body)?.checked()?;
                Body::CreateIndex { field, kind }
            }
            Endpoint::DropIndex => Body::DropIndex {
                field: params.field,
            },
            Endpoint::Upsert => Body::Upsert(parse_body::<UpsertRequest<P>>(body)?.into_points()?),
            Endpoint::GetPoints => Body::GetPoints(parse_body(body)?),
            Endpoint::GetPoint => Body::GetPoint(PointId::parse(&params.id)?),
            Endpoint::DeletePoints => {
                let req: DeleteRequest = parse_body(body)?;
                Body::Delete(selector(req.points, req.filter)?)
            }
            Endpoint::SetPayload | Endpoint::OverwritePayload => {
                let req: SetPayloadRequest<P> = parse_body(body)?;
                let overwrite = endpoint == Endpoint::OverwritePayload;
                if overwrite && req.key.is_some() {
                    return Err(Error::bad(
                        "`key` applies to set payload (POST), not overwrite (PUT)",
                    ));
                }
                Body::SetPayload {
                    selector: selector(req.points, req.filter)?,
                    payload: req.payload,
                    key: req.key,
                    overwrite,
                }
            }
            Endpoint::Query => Body::Query(parse_body::<QueryRequest>(body)?.into_plan()?),
            Endpoint::QueryBatch => Body::Batch(batch(body, QueryRequest::into_plan)?),
            Endpoint::QueryGroups => Body::Groups(parse_body::<QueryRequest>(body)?.into_groups()?),
            Endpoint::Search => Body::Query(parse_body::<LegacySearchRequest>(body)?.into_plan()?),
            Endpoint::SearchBatch => Body::Batch(batch(body, LegacySearchRequest::into_plan)?),
            Endpoint::Scroll => {
                let req: ScrollRequest = parse_body(body)?;
                req.page()?;
                Body::Scroll(req)
            }
            Endpoint::Count => Body::Count(parse_body::<CountRequest>(body)?.filter),
            Endpoint::SparseStats => Body::SparseStats(parse_body(body)?),
            Endpoint::SeedSearch => {
                let req: SeedSearch = parse_body(body)?;
                collection = req.collection.clone();
                Body::Query(req.into_plan()?)
            }
            Endpoint::ReplicationSpec => Body::Replication(Replication::Spec),
            Endpoint::ReplicationAdopt => Body::Replication(Replication::Adopt(parse_body(body)?)),
            Endpoint::ReplicationDigest => {
                let req: crate::api::replication::DigestRequest = parse_body(body)?;
                check_buckets(req.buckets)?;
                Body::Replication(Replication::Digest(req))
            }
            Endpoint::ReplicationVersions => {
                let req: crate::api::replication::VersionsRequest = parse_body(body)?;
                check_buckets(req.buckets)?;
                Body::Replication(Replication::Versions(req))
            }
            Endpoint::ReplicationExport => {
                Body::Replication(Replication::Export(parse_body(body)?))
            }
            Endpoint::ReplicationImport => {
                Body::Replication(Replication::Import(parse_body(body)?))
            }
            Endpoint::ReplicationEvict => Body::Replication(Replication::Evict(parse_body(body)?)),
        };
        Ok(Route {
            endpoint,
            collection,
            wait: query_param(query, "wait").is_none_or(|v| v != "false"),
            timeout: client_timeout(query),
            version: query_param(query, "version")
                .map(|v| {
                    v.parse()
                        .map_err(|_| Error::bad(format!("`version` must be a number, not {v:?}")))
                })
                .transpose()?,
            body,
        })
    }
}

/// The plans of a batch body, `{"searches": [...]}`.
fn batch<R: DeserializeOwned>(
    body: &[u8],
    plan: fn(R) -> Result<QueryPlan>,
) -> Result<Vec<QueryPlan>> {
    parse_body::<Batch<R>>(body)?
        .searches
        .into_iter()
        .map(plan)
        .collect()
}

/// `?timeout=SECONDS`: the client's own deadline.
pub fn client_timeout(query: Option<&str>) -> Option<Duration> {
    query_param(query, "timeout")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs)
}
