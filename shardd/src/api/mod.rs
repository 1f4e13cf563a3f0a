//! The Qdrant-compatible HTTP API over a [`Shard`], independent of the HTTP server that carries it.
//!
//! [`handle`] takes a method, path, query string and body and returns a status and a JSON body
//! in Qdrant's envelope: `{"result", "status": "ok", "time"}`, or `{"status": {"error"}, "time"}`.

mod endpoint;

pub use endpoint::{Endpoint, PathParams, Unrouted};

use std::collections::BTreeMap;
use std::time::Instant;

use http::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::groups::{self, GroupsRequest};
use crate::output::{ScoredPoint, WithVector};
use crate::params::{CollectionConfig, CreateCollection, HnswConfig, VectorParams};
use crate::payload::WithPayload;
use crate::point::{PointId, DEFAULT_VECTOR};
use crate::shard::{Selector, Shard, Update};
use crate::wire::{
    self, Batch, CountRequest, CreateIndexRequest, DeleteRequest, GetPointsRequest,
    LegacySearchRequest, QueryPlan, ScrollRequest, SetPayloadRequest, SparseStatsRequest,
    UpsertRequest,
};

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

/// Decodes `%XX` escapes of a path segment.
pub fn percent_decode(s: &str) -> String {
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

/// Qdrant's success envelope.
pub fn ok_body(result: impl Serialize, started: Instant) -> Vec<u8> {
    serde_json::to_vec(
        &json!({"result": result, "status": "ok", "time": started.elapsed().as_secs_f64()}),
    )
    .unwrap_or_else(|_| b"{\"status\":\"ok\"}".to_vec())
}

/// Qdrant's error envelope.
pub fn error_body(message: &str, started: Instant) -> Vec<u8> {
    serde_json::to_vec(
        &json!({"status": {"error": message}, "time": started.elapsed().as_secs_f64()}),
    )
    .unwrap_or_else(|_| b"{\"status\":{\"error\":\"internal error\"}}".to_vec())
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

/// Parses an already decoded JSON request, as [`parse_body`] does.
pub fn parse_value<T: DeserializeOwned>(value: Value) -> Result<T> {
    serde_json::from_value(value).map_err(|e| Error::bad(format!("Format error in JSON body: {e}")))
}

/// Answers one request.
pub fn handle(shard: &Shard, req: &Request) -> Response {
    let started = Instant::now();
    let (endpoint, params) = match Endpoint::find(req.method, req.path) {
        Ok(found) => found,
        Err(unrouted) => {
            return Response {
                status: StatusCode::from_u16(unrouted.status()).unwrap_or(StatusCode::NOT_FOUND),
                body: error_body(&unrouted.message(req.method, req.path), started),
                route: "unmatched",
                allow: unrouted.allow(),
            }
        }
    };
    let route = endpoint.template();
    let wait = query_param(req.query, "wait").is_none_or(|v| v != "false");
    match answer(shard, endpoint, &params, req.body, wait) {
        Ok(value) if endpoint == Endpoint::Version => Response {
            status: StatusCode::OK,
            body: serde_json::to_vec(&value).unwrap_or_default(),
            route,
            allow: None,
        },
        Ok(value) => Response {
            status: StatusCode::OK,
            body: ok_body(value, started),
            route,
            allow: None,
        },
        Err(e) => Response {
            status: StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            body: error_body(&e.to_string(), started),
            route,
            allow: None,
        },
    }
}

fn answer(
    shard: &Shard,
    endpoint: Endpoint,
    params: &PathParams,
    body: &[u8],
    wait: bool,
) -> Result<Value> {
    let c = params.collection.as_str();
    match endpoint {
        Endpoint::Version => Ok(json!({"title": "vecgate", "version": QDRANT_API_VERSION})),
        Endpoint::ListCollections => list_collections(shard),
        Endpoint::CreateCollection => create_collection(shard, c, body),
        Endpoint::CollectionInfo => collection_info(shard, c),
        Endpoint::DropCollection => shard.drop_collection(c).map(Value::Bool),
        Endpoint::CollectionExists => Ok(json!({"exists": shard.collection(c).is_ok()})),
        Endpoint::CreateIndex => create_index(shard, c, body, wait),
        Endpoint::DropIndex => shard
            .update(
                c,
                Update::DropIndex {
                    field: params.field.clone(),
                },
            )
            .map(|seq| update_result(seq, wait)),
        Endpoint::Upsert => upsert(shard, c, body, wait),
        Endpoint::GetPoints => get_points(shard, c, body),
        Endpoint::GetPoint => get_point(shard, c, &params.id),
        Endpoint::DeletePoints => delete(shard, c, body, wait),
        Endpoint::SetPayload => set_payload(shard, c, body, false, wait),
        Endpoint::OverwritePayload => set_payload(shard, c, body, true, wait),
        Endpoint::Query => query(shard, c, parse_body(body)),
        Endpoint::QueryBatch => query_batch(shard, c, body),
        Endpoint::QueryGroups => query_groups(shard, c, body),
        Endpoint::Search => search(shard, c, parse_body(body)),
        Endpoint::SearchBatch => search_batch(shard, c, body),
        Endpoint::Scroll => scroll(shard, c, body),
        Endpoint::Count => count(shard, c, body),
        Endpoint::SparseStats => sparse_stats(shard, c, body),
        Endpoint::SeedSearch => Err(Error::NotFound(
            "/v1/search is served by vecgate, not by a shard".into(),
        )),
    }
}

fn to_value(v: impl Serialize) -> Result<Value> {
    serde_json::to_value(v).map_err(|e| Error::Storage(format!("encoding response: {e}")))
}

fn list_collections(shard: &Shard) -> Result<Value> {
    let names: Vec<Value> = shard
        .collection_names()
        .into_iter()
        .map(|n| json!({"name": n}))
        .collect();
    Ok(json!({"collections": names}))
}

fn create_collection(shard: &Shard, name: &str, body: &[u8]) -> Result<Value> {
    let req: CreateCollection = parse_body(body)?;
    shard.create_collection(name, CollectionConfig::from_request(req)?)?;
    Ok(Value::Bool(true))
}

fn hnsw_json(h: &HnswConfig) -> Value {
    json!({"m": h.m, "ef_construct": h.ef_construct, "full_scan_threshold": h.full_scan_threshold, "max_indexing_threads": 0, "on_disk": false})
}

/// `GET /collections/{c}` in Qdrant's `CollectionInfo` shape.
fn collection_info(shard: &Shard, name: &str) -> Result<Value> {
    let c = shard.collection(name)?;
    let points = c.read();
    let cfg = &c.config;
    let payload_schema: serde_json::Map<String, Value> = points
        .payload_schema()
        .into_iter()
        .map(|(field, kind, n)| {
            (
                field,
                json!({"data_type": kind, "params": null, "points": n}),
            )
        })
        .collect();
    let mut params = json!({
        "vectors": vectors_shape(&cfg.vectors)?,
        "shard_number": 1,
        "replication_factor": 1,
        "write_consistency_factor": 1,
        "on_disk_payload": false,
    });
    if !cfg.sparse_vectors.is_empty() {
        params["sparse_vectors"] = to_value(&cfg.sparse_vectors)?;
    }
    Ok(json!({
        "status": "green",
        "optimizer_status": "ok",
        "indexed_vectors_count": points.indexed_vectors(),
        "points_count": points.len(),
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

fn create_index(shard: &Shard, c: &str, body: &[u8], wait: bool) -> Result<Value> {
    let req: CreateIndexRequest = parse_body(body)?;
    if req.field_name.is_empty() {
        return Err(Error::bad("field_name must not be empty"));
    }
    let kind = req
        .field_schema
        .ok_or_else(|| Error::bad("field_schema is required: one of keyword, integer, float, bool, datetime, uuid, text"))?
        .kind();
    Ok(update_result(
        shard.update(
            c,
            Update::CreateIndex {
                field: req.field_name,
                kind,
            },
        )?,
        wait,
    ))
}

fn update_result(seq: u64, wait: bool) -> Value {
    json!({"operation_id": seq, "status": if wait { "completed" } else { "acknowledged" }})
}

fn upsert(shard: &Shard, c: &str, body: &[u8], wait: bool) -> Result<Value> {
    let points = parse_body::<UpsertRequest>(body)?.into_points()?;
    Ok(update_result(
        shard.update(c, Update::Upsert(points))?,
        wait,
    ))
}

fn selector(
    points: Option<Vec<PointId>>,
    filter: Option<crate::filter::Filter>,
) -> Result<Selector> {
    match (points, filter) {
        (Some(ids), None) => Ok(Selector::Ids(ids)),
        (None, Some(f)) => Ok(Selector::Filter(f)),
        _ => Err(Error::bad("give exactly one of `points` (ids) or `filter`")),
    }
}

fn delete(shard: &Shard, c: &str, body: &[u8], wait: bool) -> Result<Value> {
    let req: DeleteRequest = parse_body(body)?;
    let seq = shard.update(c, Update::Delete(selector(req.points, req.filter)?))?;
    Ok(update_result(seq, wait))
}

fn set_payload(shard: &Shard, c: &str, body: &[u8], overwrite: bool, wait: bool) -> Result<Value> {
    let req: SetPayloadRequest = parse_body(body)?;
    if overwrite && req.key.is_some() {
        return Err(Error::bad(
            "`key` applies to set payload (POST), not overwrite (PUT)",
        ));
    }
    let update = Update::SetPayload {
        selector: selector(req.points, req.filter)?,
        payload: req.payload,
        key: req.key,
        overwrite,
    };
    Ok(update_result(shard.update(c, update)?, wait))
}

fn get_points(shard: &Shard, c: &str, body: &[u8]) -> Result<Value> {
    let req: GetPointsRequest = parse_body(body)?;
    let coll = shard.collection(c)?;
    let records = coll.read().get(
        &req.ids,
        &req.with_payload.unwrap_or(WithPayload::All(true)),
        &req.with_vector.unwrap_or(WithVector::All(false)),
        coll.single_unnamed(),
    );
    to_value(records)
}

fn get_point(shard: &Shard, c: &str, id: &str) -> Result<Value> {
    let id = PointId::parse(id)?;
    let coll = shard.collection(c)?;
    let mut records = coll.read().get(
        &[id],
        &WithPayload::All(true),
        &WithVector::All(true),
        coll.single_unnamed(),
    );
    match records.pop() {
        Some(r) => to_value(r),
        None => Err(Error::NotFound(format!("No point with id {id} found"))),
    }
}

fn query(shard: &Shard, c: &str, raw: Result<Value>) -> Result<Value> {
    let points = match wire::query_plan(&raw?)? {
        QueryPlan::Search(s) => shard.search(c, &s)?,
        QueryPlan::Staged {
            stage,
            offset,
            with_payload,
            with_vector,
        } => {
            let mut points = shard.query_stage(c, &stage, &with_payload, &with_vector)?;
            points.drain(..offset.min(points.len()));
            points
        }
        QueryPlan::List {
            filter,
            limit,
            offset,
            with_payload,
            with_vector,
        } => {
            let coll = shard.collection(c)?;
            let points = coll.read();
            points.list(
                filter.as_ref(),
                offset,
                limit,
                &with_payload,
                &with_vector,
                coll.single_unnamed(),
            )
        }
    };
    Ok(json!({"points": to_value(points)?}))
}

/// Vecgate's internal `POST /collections/{c}/sparse/stats` (`{"using", "indices"}`): this
/// shard's document frequencies, which the router sums for collection-wide idf.
fn sparse_stats(shard: &Shard, c: &str, body: &[u8]) -> Result<Value> {
    let req: SparseStatsRequest = parse_body(body)?;
    let coll = shard.collection(c)?;
    let points = coll.read();
    let stats = points
        .sparse_stats(&req.using, &req.indices)
        .ok_or_else(|| coll.unknown_vector(&req.using, "sparse"))?;
    to_value(stats)
}

fn query_groups(shard: &Shard, c: &str, body: &[u8]) -> Result<Value> {
    let raw: Value = parse_body(body)?;
    let req: GroupsRequest = parse_value(raw.clone())?;
    let (_, limit) = req.sizes()?;
    let mut asked = req.first_fetch()?;
    loop {
        let found = query(shard, c, Ok(groups::ranked_query(&raw, asked)))?;
        let points: Vec<ScoredPoint> = serde_json::from_value(found["points"].clone())
            .map_err(|e| Error::Storage(e.to_string()))?;
        let grouped = groups::group(&points, &req)?;
        if !groups::needs_more(grouped.len(), limit, points.len(), asked) {
            return Ok(json!({"groups": grouped}));
        }
        asked = (asked * 4).min(wire::MAX_RESULTS);
    }
}

fn query_batch(shard: &Shard, c: &str, body: &[u8]) -> Result<Value> {
    let batch: Batch<Value> = parse_body(body)?;
    batch
        .searches
        .into_iter()
        .map(|q| query(shard, c, Ok(q)))
        .collect::<Result<Vec<_>>>()
        .map(Value::Array)
}

fn search(shard: &Shard, c: &str, req: Result<LegacySearchRequest>) -> Result<Value> {
    to_value(shard.search(c, &req?.into_search()?)?)
}

fn search_batch(shard: &Shard, c: &str, body: &[u8]) -> Result<Value> {
    let batch: Batch<LegacySearchRequest> = parse_body(body)?;
    batch
        .searches
        .into_iter()
        .map(|q| search(shard, c, Ok(q)))
        .collect::<Result<Vec<_>>>()
        .map(Value::Array)
}

fn scroll(shard: &Shard, c: &str, body: &[u8]) -> Result<Value> {
    let req: ScrollRequest = parse_body(body)?;
    if req.order_by.as_ref().is_some_and(|o| !o.is_null()) {
        return Err(Error::bad(
            "order_by is not supported; scroll pages are ordered by id",
        ));
    }
    let limit = req.limit.unwrap_or(10);
    wire::check_limit(limit, 0)?;
    let coll = shard.collection(c)?;
    let (points, next) = coll.read().scroll(
        req.offset,
        limit,
        req.filter.as_ref(),
        &req.with_payload.unwrap_or(WithPayload::All(true)),
        &req.with_vector.unwrap_or(WithVector::All(false)),
        coll.single_unnamed(),
    );
    Ok(json!({"points": to_value(points)?, "next_page_offset": next}))
}

fn count(shard: &Shard, c: &str, body: &[u8]) -> Result<Value> {
    let req: CountRequest = parse_body(body)?;
    let coll = shard.collection(c)?;
    let n = coll.read().count(req.filter.as_ref());
    Ok(json!({"count": n}))
}

/// Dense vector configs as Qdrant shows them: the unnamed one alone as a plain object.
fn vectors_shape(vectors: &BTreeMap<String, VectorParams>) -> Result<Value> {
    match vectors.get(DEFAULT_VECTOR) {
        Some(p) if vectors.len() == 1 => to_value(p),
        _ => to_value(vectors),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use crate::shard::ShardOptions;
    use crate::wal::FsyncPolicy;
    use proptest::prelude::*;
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
        let req = serde_json::from_value(
            json!({"vectors": {"v": {"size": 2, "distance": "Dot"}}, "sparse_vectors": {"s": {}}}),
        )
        .unwrap();
        shard
            .create_collection("c", CollectionConfig::from_request(req).unwrap())
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
