//! The Qdrant-compatible HTTP API over a [`Shard`], independent of the HTTP server that carries it.
//!
//! [`handle`] takes a method, path, query string and body, parses them once into a [`Route`],
//! runs it on the shard (queries through the one plan runner, [`crate::query`]) and returns a
//! status and a JSON body in Qdrant's envelope: `{"result", "status": "ok", "time"}`, or
//! `{"status": {"error"}, "time"}`.

pub mod endpoint;
pub mod filter;
pub mod replication;
pub mod request;
pub mod response;
pub mod route;
pub mod seed;

use std::collections::BTreeMap;
use std::time::Instant;

use futures_util::FutureExt;
use http::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};

pub use endpoint::{Endpoint, PathParams, Unrouted};
pub use route::{Body, Route, RouteError};

use replication::Replication;

use crate::engine::params::{HnswConfig, VectorParams};
use crate::engine::payload::WithPayload;
use crate::engine::point::PointWrite;
use crate::engine::point::{WithVector, DEFAULT_VECTOR};
use crate::error::{Error, Result};
use crate::query::local::Local;
use crate::query::{run, run_groups};
use crate::shard::{Shard, Update};
use response::{envelope, error_body, Answer};

/// The Qdrant API version Vecgate answers `GET /` with, so clients' version checks pass.
pub const QDRANT_API_VERSION: &str = "1.16.0";

/// One API request.
pub struct Request<'a> {
    /// HTTP method.
    pub method: &'a Method,
    /// URL path, percent-encoded.
    pub path: &'a str,
    /// URL query string, if any.
    pub query: Option<&'a str>,
    /// Request body.
    pub body: &'a [u8],
}

/// One API response.
pub struct Response {
    /// HTTP status.
    pub status: StatusCode,
    /// JSON body.
    pub body: Vec<u8>,
    /// The route template, for metrics (`/collections/{c}/points/search`).
    pub route: &'static str,
    /// The methods the path takes, for a 405's `Allow` header.
    pub allow: Option<String>,
}

impl Response {
    /// The answer to a request that could not be routed or parsed.
    pub fn unrouted(e: RouteError, method: &Method, path: &str, started: Instant) -> Response {
        match e {
            RouteError::Unrouted(u) => Response {
                status: StatusCode::from_u16(u.status()).unwrap_or(StatusCode::NOT_FOUND),
                body: error_body(&u.message(method, path), started),
                route: "unmatched",
                allow: u.allow(),
            },
            RouteError::Bad(e) => Response::error(&e, "unmatched", started),
        }
    }

    /// The answer for an error.
    pub fn error(e: &Error, route: &'static str, started: Instant) -> Response {
        Response {
            status: StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            body: error_body(&e.to_string(), started),
            route,
            allow: None,
        }
    }
}

/// Decodes `%XX` escapes of a path segment.
pub fn percent_decode(s: &str) -> String {
    if !s.contains('%') {
        return s.to_string();
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The value of `key` in a query string.
pub fn query_param<'a>(query: Option<&'a str>, key: &str) -> Option<&'a str> {
    query?.split('&').find_map(|kv| match kv.split_once('=') {
        Some((k, v)) if k == key => Some(v),
        None if kv == key => Some(""),
        _ => None,
    })
}

/// Parses a JSON request body, as a 400 naming the problem (and where it is) when malformed.
pub fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(Error::bad(
            "Format error in JSON body: the request body is empty; this endpoint takes a JSON object",
        ));
    }
    serde_json::from_slice(body).map_err(|e| {
        let mut de = serde_json::Deserializer::from_slice(body);
        match serde_path_to_error::deserialize::<_, T>(&mut de) {
            Err(e) if e.path().iter().next().is_some() => Error::bad(format!(
                "Format error in JSON body: {}",
                located(&e.path().to_string(), &e.inner().to_string())
            )),
            _ => Error::bad(format!("Format error in JSON body: {e}")),
        }
    })
}

/// Joins the path where serde failed with the message it gave, which may itself start with a
/// path inside the value: `vectors` + `distance: unknown variant` reads
/// `vectors.distance: unknown variant`, and `filter` + `filter.must[0]: ...` reads
/// `filter.must[0]: ...`.
fn located(path: &str, inner: &str) -> String {
    let last = path
        .rsplit('.')
        .next()
        .map_or(path, |seg| seg.split('[').next().unwrap_or(seg));
    if let Some(rest) = inner.strip_prefix(last) {
        if rest.starts_with(['.', '[', ':']) {
            return format!("{path}{rest}");
        }
    }
    let is_path = |head: &str| {
        !head.is_empty()
            && head
                .chars()
                .all(|c| c.is_alphanumeric() || "_[]\".$-".contains(c))
    };
    match inner.split_once(": ") {
        Some((head, _)) if is_path(head) => format!("{path}.{inner}"),
        _ => format!("{path}: {inner}"),
    }
}

/// Answers one request.
pub fn handle(shard: &Shard, req: &Request) -> Response {
    let started = Instant::now();
    let route = match Route::parse(req.method, req.path, req.query, req.body) {
        Ok(route) => route,
        Err(e) => return Response::unrouted(e, req.method, req.path, started),
    };
    let template = route.endpoint.template();
    match execute(shard, route, started) {
        Ok(body) => Response {
            status: StatusCode::OK,
            body,
            route: template,
            allow: None,
        },
        Err(e) => Response::error(&e, template, started),
    }
}

/// The answer of a write as Qdrant gives it.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct UpdateResult {
    /// The sequence number of the write.
    pub operation_id: u64,
    /// `completed`, or `acknowledged` when the client did not wait.
    pub status: &'static str,
}

/// The answer of write `seq`.
pub fn update_result(seq: u64, wait: bool) -> UpdateResult {
    UpdateResult {
        operation_id: seq,
        status: if wait { "completed" } else { "acknowledged" },
    }
}

/// `{"count": n}`.
#[derive(Serialize)]
pub struct CountResult {
    /// Matching points.
    pub count: u64,
}

/// Runs a parsed request on the shard and returns the answer's bytes.
pub fn execute(shard: &Shard, route: Route, started: Instant) -> Result<Vec<u8>> {
    let c = route.collection.as_str();
    let single = || shard.config(c).map(|cfg| cfg.single_unnamed());
    let local = Local {
        shard,
        collection: c,
    };
    let updated = |seq: u64| Ok(envelope(&update_result(seq, route.wait), started));
    let version = route.version;
    match route.body {
        Body::Empty => match route.endpoint {
            Endpoint::Version => Ok(serde_json::to_vec(
                &json!({"title": "vecgate", "version": QDRANT_API_VERSION}),
            )
            .unwrap_or_default()),
            Endpoint::ListCollections => {
                let names: Vec<Value> = shard
                    .collection_names()
                    .into_iter()
                    .map(|n| json!({"name": n}))
                    .collect();
                Ok(envelope(&json!({"collections": names}), started))
            }
            Endpoint::CollectionInfo => Ok(envelope(&collection_info(shard, c)?, started)),
            Endpoint::DropCollection => Ok(envelope(&shard.drop_collection(c)?, started)),
            Endpoint::CollectionExists => Ok(envelope(
                &json!({"exists": shard.config(c).is_ok()}),
                started,
            )),
            other => Err(Error::bad(format!("{} takes a body", other.template()))),
        },
        Body::CreateCollection(config) => {
            shard.create_collection(c, config)?;
            Ok(envelope(&true, started))
        }
        Body::CreateIndex { field, kind } => {
            updated(shard.update(c, Update::CreateIndex { field, kind })?)
        }
        Body::DropIndex { field } => updated(shard.update(c, Update::DropIndex { field })?),
        Body::Upsert(points) => updated(
            shard.update_at(
                c,
                Update::Upsert(
                    points
                        .into_iter()
                        .map(|p| PointWrite {
                            id: p.id,
                            vectors: p.vectors,
                            payload: p.payload.unwrap_or_default(),
                        })
                        .collect(),
                ),
                version,
            )?,
        ),
        Body::Delete(selector) => updated(shard.update_at(c, Update::Delete(selector), version)?),
        Body::SetPayload {
            selector,
            payload,
            key,
            overwrite,
        } => updated(shard.update_at(
            c,
            Update::SetPayload {
                selector,
                payload,
                key,
                overwrite,
            },
            version,
        )?),
        Body::GetPoints(req) => {
            let points = shard.get(
                c,
                &req.ids,
                &req.with_payload.unwrap_or(WithPayload::All(true)),
                &req.with_vector.unwrap_or(WithVector::All(false)),
            )?;
            Ok(Answer::Records(points).to_bytes(single()?, started))
        }
        Body::GetPoint(id) => {
            let mut points =
                shard.get(c, &[id], &WithPayload::All(true), &WithVector::All(true))?;
            match points.pop() {
                Some(p) => Ok(Answer::Record(p).to_bytes(single()?, started)),
                None => Err(Error::NotFound(format!("No point with id {id} found"))),
            }
        }
        Body::Query(plan) => {
            let points = now(run(&local, plan))?;
            Ok(Answer::for_query(route.endpoint, points, false).to_bytes(single()?, started))
        }
        Body::Batch(plans) => {
            let lists = plans
                .into_iter()
                .map(|p| now(run(&local, p)))
                .collect::<Result<Vec<_>>>()?;
            Ok(Answer::for_batch(route.endpoint, lists).to_bytes(single()?, started))
        }
        Body::Groups(plan) => {
            let groups = now(run_groups(&local, &plan))?;
            Ok(Answer::Groups(groups).to_bytes(single()?, started))
        }
        Body::Scroll(req) => {
            let (points, next) = shard.scroll(
                c,
                req.offset,
                req.page()?,
                req.filter.as_ref(),
                &req.with_payload.unwrap_or(WithPayload::All(true)),
                &req.with_vector.unwrap_or(WithVector::All(false)),
            )?;
            Ok(Answer::Scroll(points, next).to_bytes(single()?, started))
        }
        Body::Count(filter) => Ok(envelope(
            &CountResult {
                count: shard.count(c, filter.as_ref())? as u64,
            },
            started,
        )),
        Body::SparseStats(req) => Ok(envelope(
            &shard.sparse_stats(c, &req.using, &req.indices)?,
            started,
        )),
        Body::Replication(r) => replicate(shard, c, r, started),
    }
}

/// Runs a replication request on the shard.
fn replicate(shard: &Shard, c: &str, r: Replication, started: Instant) -> Result<Vec<u8>> {
    match r {
        Replication::Spec => {
            let (config, payload_indexes) = shard.spec(c)?;
            Ok(envelope(
                &replication::Spec {
                    config,
                    payload_indexes,
                },
                started,
            ))
        }
        Replication::Adopt(spec) => {
            shard.adopt(c, spec.config, spec.payload_indexes)?;
            Ok(envelope(&true, started))
        }
        Replication::Digest(req) => {
            let digests = shard.versions(c, |held| replication::digests(held, req.buckets))?;
            Ok(envelope(&digests, started))
        }
        Replication::Versions(req) => {
            let wanted: std::collections::HashSet<u32> = req.of.into_iter().collect();
            let held = shard.versions(c, |held| {
                held.filter(|v| wanted.contains(&replication::bucket(&v.id, req.buckets)))
                    .collect::<Vec<_>>()
            })?;
            Ok(envelope(&held, started))
        }
        Replication::Export(req) => Ok(envelope(&shard.export(c, &req.ids)?, started)),
        Replication::Import(copied) => {
            let seq = shard.import(c, copied)?;
            Ok(envelope(&update_result(seq, true), started))
        }
        Replication::Evict(req) => {
            let seq = shard.evict(c, req.points)?;
            Ok(envelope(&update_result(seq, true), started))
        }
    }
}

/// Polls a plan on a local shard, whose searches are always ready at once.
fn now<T>(plan: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    plan.now_or_never().unwrap_or_else(|| {
        Err(Error::Storage(
            "a local query waited, which a shard's searches never do".into(),
        ))
    })
}

fn hnsw_json(h: &HnswConfig) -> Value {
    json!({"m": h.m, "ef_construct": h.ef_construct, "full_scan_threshold": h.full_scan_threshold, "max_indexing_threads": 0, "on_disk": false})
}

/// Dense vector configs as Qdrant shows them: the unnamed one alone as a plain object.
fn vectors_shape(vectors: &BTreeMap<String, VectorParams>) -> Value {
    match vectors.get(DEFAULT_VECTOR) {
        Some(p) if vectors.len() == 1 => json!(p),
        _ => json!(vectors),
    }
}

/// `GET /collections/{c}` in Qdrant's `CollectionInfo` shape.
fn collection_info(shard: &Shard, name: &str) -> Result<Value> {
    let info = shard.info(name)?;
    let cfg = &info.config;
    let payload_schema: serde_json::Map<String, Value> = info
        .payload_schema
        .into_iter()
        .map(|(field, kind, n)| {
            (
                field,
                json!({"data_type": kind, "params": null, "points": n}),
            )
        })
        .collect();
    let mut params = json!({
        "vectors": vectors_shape(&cfg.vectors),
        "shard_number": 1,
        "replication_factor": 1,
        "write_consistency_factor": 1,
        "on_disk_payload": false,
    });
    if !cfg.sparse_vectors.is_empty() {
        params["sparse_vectors"] = json!(cfg.sparse_vectors);
    }
    Ok(json!({
        "status": "green",
        "optimizer_status": "ok",
        "indexed_vectors_count": info.indexed_vectors,
        "points_count": info.points,
        "segments_count": 1,
        "config": {
            "params": params,
            "hnsw_config": hnsw_json(&cfg.hnsw),
            "optimizer_config": {
                "deleted_threshold": 0.2, "vacuum_min_vector_number": 1000, "default_segment_number": 1,
                "max_segment_size": null, "memmap_threshold": null, "indexing_threshold": 0,
                "flush_interval_sec": 5, "max_optimization_threads": null
            },
            "wal_config": {"wal_capacity_mb": 64, "wal_segments_ahead": 0},
            "quantization_config": null
        },
        "payload_schema": payload_schema
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::request::CreateCollection;
    use crate::metrics::Metrics;
    use crate::shard::ShardOptions;
    use crate::storage::wal::FsyncPolicy;
    use proptest::prelude::*;
    use serde_json::{json, Value};
    use std::sync::Arc;

    fn shard(dir: &std::path::Path) -> Shard {
        let metrics = Arc::new(Metrics::new(&prometheus::Registry::new(), "t").unwrap());
        let shard = Shard::open(
            dir,
            ShardOptions {
                fsync: FsyncPolicy::Never,
                ..Default::default()
            },
            metrics,
        )
        .unwrap();
        let req: CreateCollection = serde_json::from_value(
            json!({"vectors": {"v": {"size": 2, "distance": "Dot"}}, "sparse_vectors": {"s": {}}}),
        )
        .unwrap();
        shard
            .create_collection("c", req.into_config().unwrap())
            .unwrap();
        shard
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            (-1e6f64..1e6).prop_map(|n| json!(n)),
            prop::sample::select(vec!["v", "s", "key", "must", "1", "2024-01-01", ""])
                .prop_map(|s| json!(s)),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            let keys = prop::sample::select(vec![
                "points",
                "batch",
                "ids",
                "vector",
                "vectors",
                "payload",
                "id",
                "filter",
                "must",
                "should",
                "must_not",
                "key",
                "match",
                "range",
                "value",
                "any",
                "query",
                "using",
                "limit",
                "offset",
                "nearest",
                "indices",
                "values",
                "with_payload",
                "with_vector",
                "params",
                "hnsw_ef",
                "searches",
                "has_id",
                "nested",
            ]);
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(keys, inner, 0..5).prop_map(|m| Value::Object(
                    m.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
                )),
            ]
        })
    }

    #[test]
    fn errors_name_the_path_the_client_wrote() {
        assert_eq!(
            located("vectors", "distance: unknown variant `x`"),
            "vectors.distance: unknown variant `x`"
        );
        assert_eq!(
            located("prefetch[0].filter", "filter.must[0]: bad"),
            "prefetch[0].filter.must[0]: bad"
        );
        assert_eq!(
            located("points[1].id", "point id -2 is negative"),
            "points[1].id: point id -2 is negative"
        );
        let err =
            parse_body::<CreateCollection>(br#"{"vectors": {"size": 4, "distance": "cosine"}}"#)
                .unwrap_err()
                .to_string();
        assert!(
            err.contains("vectors.distance: unknown variant `cosine`, expected one of"),
            "{err}"
        );
        let err = parse_body::<CreateCollection>(b"  ")
            .unwrap_err()
            .to_string();
        assert!(err.contains("the request body is empty"), "{err}");
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

        /// Whatever the body, every route answers with a status and never panics.
        #[test]
        fn arbitrary_bodies_get_answers_not_panics(body in json_value(), route in 0usize..12, raw in prop::collection::vec(any::<u8>(), 0..64)) {
            let dir = tempfile::tempdir().unwrap();
            let shard = shard(dir.path());
            let routes = [
                (Method::PUT, "/collections/c/points"), (Method::POST, "/collections/c/points"),
                (Method::POST, "/collections/c/points/delete"), (Method::POST, "/collections/c/points/payload"),
                (Method::PUT, "/collections/c/points/payload"), (Method::POST, "/collections/c/points/query"),
                (Method::POST, "/collections/c/points/query/batch"), (Method::POST, "/collections/c/points/search"),
                (Method::POST, "/collections/c/points/search/batch"), (Method::POST, "/collections/c/points/scroll"),
                (Method::POST, "/collections/c/points/count"), (Method::PUT, "/collections/d"),
            ];
            let (method, path) = &routes[route];
            for bytes in [serde_json::to_vec(&body).unwrap(), raw.clone()] {
                let resp = handle(&shard, &Request { method, path, query: None, body: &bytes });
                prop_assert!(resp.status.is_success() || resp.status.is_client_error(), "{} {path}: {}", resp.status, String::from_utf8_lossy(&resp.body));
            }
        }
    }
}
