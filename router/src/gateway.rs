//! The router's request path: parse, place by the ring, scatter to shards with deadlines and
//! retries, gather (merge, sum or union), and answer in Qdrant's shapes.
//!
//! Writes are validated against the collection's schema before any shard sees them, so bad
//! input changes nothing anywhere; then each shard's part goes to all of its replicas and
//! succeeds when `write_consistency` of them acknowledge. Reads go to one replica per shard,
//! chosen by the read policy; a replica that fails or times out is retried on another.
//!
//! This module holds the request's context and the route table; `reads`, `writes` and
//! `queries` hold the three kinds of work it routes to.

mod queries;
mod reads;
mod writes;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant as StdInstant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use futures_util::future::{join_all, BoxFuture};
use http::Method;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use shardd::api::{
    error_body, ok_body, parse_body, parse_value, query_param, Endpoint, PathParams,
    QDRANT_API_VERSION,
};
use shardd::collection::{Collection, PointWrite};
use shardd::error::Error;
use shardd::fusion::fuse;
use shardd::groups::{self, GroupsRequest};
use shardd::mmr;
use shardd::output::WithVector;
use shardd::output::{Record, ScoredPoint};
use shardd::params::Modifier;
use shardd::params::{CollectionConfig, CreateCollection, Distance};
use shardd::payload::WithPayload;
use shardd::point::PointId;
use shardd::search::{QueryVector, SearchRequest};
use shardd::shard::{candidates_for, fused_top};
use shardd::sparse::IdfStats;
use shardd::wire::{
    self, vector_json, Batch, DeleteRequest, GetPointsRequest, LegacySearchRequest, QueryPlan,
    ScrollRequest, SetPayloadRequest, Stage, StageQuery, UpsertRequest,
};
use tokio::time::Instant;

use crate::backend::{call_builtin, Answer, CallError, HttpClient};
use crate::balance::{pick, Replica};
use crate::config::{Config, ReadPolicy};
use crate::hints::Hint;
use crate::merge::merge_top_k;
use crate::metrics::RouterMetrics;
use crate::seed::{translate, SeedSearch};
use crate::topology::{Live, ShardKind, ShardRoute, Topology};

/// One client request.
pub struct Call {
    /// HTTP method.
    pub method: Method,
    /// Path, percent-encoded.
    pub path: String,
    /// Query string.
    pub query: Option<String>,
    /// Body.
    pub body: Bytes,
    /// `x-vecgate-region`, if sent.
    pub region: Option<String>,
}

/// The router's answer.
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// JSON body.
    pub body: Vec<u8>,
    /// Shards missing from a partial answer.
    pub partial: Vec<String>,
    /// Route template, for metrics.
    pub route: &'static str,
    /// The methods the path takes, for a 405's `Allow` header.
    pub allow: Option<String>,
}

/// What a collection's writes are validated against, and how its scores order.
struct Schema {
    collection: Collection,
}

impl Schema {
    fn distance(&self, using: &str) -> Distance {
        self.collection
            .config
            .vectors
            .get(using)
            .map_or(Distance::Dot, |p| p.distance)
    }
}

type Outcome = Result<(Value, Vec<String>), Error>;

/// The router.
pub struct Gateway {
    topology: ArcSwap<Topology>,
    client: HttpClient,
    /// State carried across reloads.
    pub live: Live,
    schemas: Mutex<HashMap<String, Arc<Schema>>>,
    metrics: Arc<RouterMetrics>,
}

fn envelope_result(answer: &Answer) -> Result<Value, Error> {
    let v: Value = serde_json::from_slice(&answer.body)
        .map_err(|e| Error::Unavailable(format!("shard answered unreadable JSON: {e}")))?;
    if answer.status == 200 {
        return Ok(v["result"].clone());
    }
    let msg = v["status"]["error"]
        .as_str()
        .unwrap_or("shard error")
        .to_string();
    Err(match answer.status {
        400 => Error::BadRequest(strip(&msg, "Wrong input: ")),
        404 => Error::NotFound(strip(&msg, "Not found: ")),
        409 => Error::Conflict(strip(&msg, "Conflict: ")),
        413 => Error::TooLarge(strip(&msg, "Payload too large: ")),
        504 => Error::Timeout(strip(&msg, "Timeout: ")),
        _ => Error::Unavailable(msg),
    })
}

fn strip(msg: &str, prefix: &str) -> String {
    msg.strip_prefix(prefix).unwrap_or(msg).to_string()
}

fn from_value<T: DeserializeOwned>(v: Value) -> Result<T, Error> {
    serde_json::from_value(v)
        .map_err(|e| Error::Unavailable(format!("shard answered an unexpected shape: {e}")))
}

fn to_body(v: &Value) -> Bytes {
    Bytes::from(serde_json::to_vec(v).unwrap_or_default())
}

/// A point in the wire shape shards accept.
fn point_json(p: &PointWrite) -> Value {
    json!({"id": p.id, "vector": p.vectors, "payload": p.payload})
}

impl Gateway {
    /// A gateway running `topology`.
    pub fn new(topology: Topology, live: Live, metrics: Arc<RouterMetrics>) -> Self {
        Gateway {
            topology: ArcSwap::from_pointee(topology),
            client: HttpClient::default(),
            live,
            schemas: Mutex::default(),
            metrics,
        }
    }

    /// Records the outcome of one call to a replica of `shard`, ejecting it after repeated failures.
    fn observe(&self, shard: &str, replica: &Replica, result: &Result<Answer, CallError>) {
        let (ok, outcome) = match result {
            Ok(a) if a.status < 500 => (true, "ok"),
            Ok(_) | Err(CallError::Transport(_)) => (false, "error"),
            Err(CallError::Timeout) => (false, "timeout"),
        };
        self.metrics
            .replica_calls
            .with_label_values(&[shard, &replica.state.url, outcome])
            .inc();
        if replica.state.record(ok) {
            self.metrics
                .ejections
                .with_label_values(&[shard, &replica.state.url])
                .inc();
            tracing::warn!(shard, url = %replica.state.url, "replica ejected after consecutive failures");
        }
    }

    /// The running topology.
    pub fn topology(&self) -> Arc<Topology> {
        self.topology.load_full()
    }

    /// Swaps in a new topology; requests in flight finish on the one they started with.
    pub fn swap(&self, topology: Topology) {
        self.topology.store(Arc::new(topology));
        self.schemas
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// Builds a topology for `config` (blocking) with this gateway's live state.
    pub fn build(&self, config: Config) -> Result<Topology, String> {
        self.live.build(config)
    }

    fn hint_disk_failure(&self, url: &str, e: &std::io::Error) {
        self.metrics
            .hint_failures
            .with_label_values(&[url, "disk"])
            .inc();
        tracing::error!(url, error = %e, "could not persist a hint; it is kept in memory until replayed");
    }

    /// Replays the writes each healthy lagging replica missed, oldest first, until one fails
    /// (it is retried on the next round) or the replica has caught up.
    pub async fn replay_hints(&self) {
        for r in self.live.replica_states() {
            let Some(log) = r.hints() else { continue };
            if !r.healthy() || !log.lagging() {
                continue;
            }
            while let Some(hint) = log.head() {
                let deadline = Instant::now() + Duration::from_secs(5);
                let method = Method::from_bytes(hint.method.as_bytes()).unwrap_or(Method::PUT);
                let result = self
                    .client
                    .call(
                        &r.url,
                        &method,
                        &hint.path,
                        Bytes::from(hint.body),
                        deadline,
                    )
                    .await;
                match result {
                    Ok(a) if a.status < 500 => {
                        if a.status != 200 {
                            self.metrics
                                .hint_failures
                                .with_label_values(&[&r.url, "rejected"])
                                .inc();
                            tracing::warn!(url = %r.url, status = a.status, path = %hint.path, "replica rejected a replayed write");
                        }
                        if let Err(e) = log.pop() {
                            self.hint_disk_failure(&r.url, &e);
                            break;
                        }
                        self.metrics
                            .hints_replayed
                            .with_label_values(&[&r.url])
                            .inc();
                    }
                    _ => break,
                }
            }
            self.metrics
                .hints_pending
                .with_label_values(&[&r.url])
                .set(log.pending() as i64);
            if !log.lagging() {
                tracing::info!(url = %r.url, "replica caught up; it serves reads again");
            }
        }
    }

    /// Asks every known replica's `/readyz` (half a second each, concurrently) and records
    /// whether it answered 200.
    pub async fn probe_replicas(&self) {
        let deadline = Instant::now() + Duration::from_millis(500);
        let states = self.live.replica_states();
        let probes = states.iter().map(|r| {
            self.client
                .call(&r.url, &Method::GET, "/readyz", Bytes::new(), deadline)
        });
        for (r, result) in states.iter().zip(join_all(probes).await) {
            r.record_probe(matches!(result, Ok(a) if a.status == 200));
        }
    }

    /// Answers one client request.
    pub async fn handle(&self, call: Call) -> Reply {
        let started = StdInstant::now();
        let topo = self.topology();
        let timeout = Duration::from_millis(topo.config.routing.timeout_ms);
        let asked = query_param(call.query.as_deref(), "timeout")
            .and_then(|t| t.parse::<u64>().ok())
            .map(Duration::from_secs);
        let deadline = Instant::now() + asked.map_or(timeout, |a| a.min(timeout));
        let (endpoint, params) = match Endpoint::find(&call.method, &call.path) {
            Ok(found) => found,
            Err(unrouted) => {
                return Reply {
                    status: unrouted.status(),
                    body: error_body(&unrouted.message(&call.method, &call.path), started),
                    partial: Vec::new(),
                    route: "unmatched",
                    allow: unrouted.allow(),
                }
            }
        };
        let ctx = Ctx {
            gw: self,
            topo: &topo,
            deadline,
            region: call
                .region
                .clone()
                .unwrap_or_else(|| topo.config.server.region.clone()),
        };
        let route = endpoint.template();
        match ctx.route(endpoint, &params, &call.body).await {
            Ok((value, partial)) => {
                // The version and the seed-style API answer bare JSON; the rest, Qdrant's envelope.
                let body = if matches!(endpoint, Endpoint::SeedSearch | Endpoint::Version) {
                    serde_json::to_vec(&value).unwrap_or_default()
                } else {
                    ok_body(value, started)
                };
                Reply {
                    status: 200,
                    body,
                    partial,
                    route,
                    allow: None,
                }
            }
            Err(e) => Reply {
                status: e.status(),
                body: error_body(&e.to_string(), started),
                partial: Vec::new(),
                route,
                allow: None,
            },
        }
    }
}

/// One request's view: the topology it started on, its deadline and the caller's region.
struct Ctx<'a> {
    gw: &'a Gateway,
    topo: &'a Topology,
    deadline: Instant,
    region: String,
}

impl Ctx<'_> {
    async fn route(&self, endpoint: Endpoint, params: &PathParams, body: &Bytes) -> Outcome {
        let c = params.collection.as_str();
        let full = |v: Result<Value, Error>| v.map(|v| (v, Vec::new()));
        match endpoint {
            Endpoint::Version => full(Ok(
                json!({"title": "vecgate", "version": QDRANT_API_VERSION}),
            )),
            Endpoint::ListCollections => self.list_collections().await,
            Endpoint::CreateCollection => full(self.create_collection(c, body).await),
            Endpoint::CollectionInfo => self.collection_info(c).await,
            Endpoint::DropCollection => full(self.drop_collection(c).await),
            Endpoint::CollectionExists => self.exists(c).await,
            Endpoint::CreateIndex => full(self.index_op(c, &Method::PUT, "index", body).await),
            Endpoint::DropIndex => full(
                self.index_op(
                    c,
                    &Method::DELETE,
                    &format!("index/{}", encode_segment(&params.field)),
                    body,
                )
                .await,
            ),
            Endpoint::Upsert => full(self.upsert(c, body).await),
            Endpoint::GetPoints => self.get_points(c, body).await,
            Endpoint::GetPoint => self.get_point(c, &params.id).await,
            Endpoint::DeletePoints => full(self.delete(c, body).await),
            Endpoint::SetPayload => full(self.set_payload(c, &Method::POST, body).await),
            Endpoint::OverwritePayload => full(self.set_payload(c, &Method::PUT, body).await),
            Endpoint::Query => self
                .query(c, parse_body(body))
                .await
                .map(|(v, p)| (json!({"points": v}), p)),
            Endpoint::QueryGroups => self.query_groups(c, body).await,
            Endpoint::QueryBatch => self.query_batch(c, body).await,
            Endpoint::Search => self.search(c, parse_body(body)).await,
            Endpoint::SearchBatch => self.search_batch(c, body).await,
            Endpoint::Scroll => self.scroll(c, body).await,
            Endpoint::Count => self.count(c, body).await,
            Endpoint::SparseStats => Err(Error::NotFound(
                "/sparse/stats is a shard's internal endpoint; the router computes idf itself"
                    .into(),
            )),
            Endpoint::SeedSearch => self.seed_search(body).await,
        }
    }

    fn policy(&self, collection: &str) -> ReadPolicy {
        let routing = &self.topo.config.routing;
        routing
            .collections
            .get(collection)
            .map_or(routing.read_policy, |c| c.read_policy)
    }

    fn same_body(&self, body: &Bytes) -> Vec<Bytes> {
        vec![body.clone(); self.topo.shards.len()]
    }

    fn all_shards(&self, body: &Bytes) -> Vec<(usize, Bytes)> {
        (0..self.topo.shards.len())
            .map(|i| (i, body.clone()))
            .collect()
    }

    fn owner(&self, id: &PointId) -> usize {
        self.topo
            .ring
            .owner(id)
            .expect("a validated config has at least one shard")
    }

    fn by_owner<T>(&self, items: Vec<T>, id: impl Fn(&T) -> PointId) -> BTreeMap<usize, Vec<T>> {
        let mut parts: BTreeMap<usize, Vec<T>> = BTreeMap::new();
        for item in items {
            parts.entry(self.owner(&id(&item))).or_default().push(item);
        }
        parts
    }

    fn update_result(results: &[Value], wait: bool) -> Value {
        let op = results
            .iter()
            .filter_map(|r| r["operation_id"].as_u64())
            .max()
            .unwrap_or(0);
        json!({"operation_id": op, "status": if wait { "completed" } else { "acknowledged" }})
    }

    async fn schema(&self, collection: &str) -> Result<Arc<Schema>, Error> {
        if let Some(s) = self
            .gw
            .schemas
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(collection)
        {
            return Ok(s.clone());
        }
        let path = format!("/collections/{}", encode_segment(collection));
        let shard = &self.topo.shards[0];
        let answer = self
            .read_one(
                shard,
                self.policy(collection),
                &Method::GET,
                &path,
                Bytes::new(),
            )
            .await?;
        let info = envelope_result(&answer)?;
        let params = &info["config"]["params"];
        let req: CreateCollection = from_value(json!({
            "vectors": params["vectors"],
            "sparse_vectors": params.get("sparse_vectors").cloned().unwrap_or(Value::Null),
            "hnsw_config": info["config"]["hnsw_config"],
        }))?;
        let config = CollectionConfig::from_request(req)?;
        let schema = Arc::new(Schema {
            collection: Collection::new(collection.to_string(), config)?,
        });
        self.gw
            .schemas
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(collection.to_string(), schema.clone());
        Ok(schema)
    }

    fn forget_schema(&self, collection: &str) {
        self.gw
            .schemas
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(collection);
    }
}

/// Percent-encodes a path segment (collection names may hold any character but `/`).
pub fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
