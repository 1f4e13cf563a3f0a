//! The router's request path: parse, place by the ring, scatter to shards with deadlines and
//! retries, gather (merge, sum or union), and answer in Qdrant's shapes.
//!
//! Writes are validated against the collection's schema before any shard sees them, so bad
//! input changes nothing anywhere; then each shard's part goes to all of its replicas and
//! succeeds when `write_consistency` of them acknowledge. Reads go to one replica per shard,
//! chosen by the read policy; a replica that fails or times out is retried on another.

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
    error_body, ok_body, parse_body, parse_value, path_segments, query_param, QDRANT_API_VERSION,
    VERSION_ROUTE,
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

/// The route of the seed-style search API.
const SEED_ROUTE: &str = "/v1/search";

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

/// Points of a stage, and the shards missing from them.
type Gathered = Result<(Vec<ScoredPoint>, Vec<String>), Error>;

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
        let segments = path_segments(&call.path);
        let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
        let ctx = Ctx {
            gw: self,
            topo: &topo,
            deadline,
            region: call
                .region
                .clone()
                .unwrap_or_else(|| topo.config.server.region.clone()),
        };
        let (route, outcome) = ctx.route(&call, &segs).await;
        match outcome {
            Ok((value, partial)) => {
                // The version and the seed-style API answer bare JSON; the rest, Qdrant's envelope.
                let body = if route == SEED_ROUTE || route == VERSION_ROUTE {
                    serde_json::to_vec(&value).unwrap_or_default()
                } else {
                    ok_body(value, started)
                };
                Reply {
                    status: 200,
                    body,
                    partial,
                    route,
                }
            }
            Err(e) => Reply {
                status: e.status(),
                body: error_body(&e.to_string(), started),
                partial: Vec::new(),
                route,
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

/// Acknowledgements of one shard's part of a write.
struct ShardWrite {
    acks: usize,
    needed: usize,
    replicas: usize,
    answers: Vec<Answer>,
    failures: Vec<String>,
}

impl Ctx<'_> {
    async fn route(&self, call: &Call, segs: &[&str]) -> (&'static str, Outcome) {
        let m = &call.method;
        let body = &call.body;
        let full = |v: Result<Value, Error>| v.map(|v| (v, Vec::new()));
        match segs {
            [] if m == Method::GET => (
                VERSION_ROUTE,
                full(Ok(
                    json!({"title": "vecgate", "version": QDRANT_API_VERSION}),
                )),
            ),
            ["collections"] if m == Method::GET => ("/collections", self.list_collections().await),
            ["collections", c] if m == Method::PUT => (
                "/collections/{c}",
                full(self.create_collection(c, body).await),
            ),
            ["collections", c] if m == Method::GET => {
                ("/collections/{c}", self.collection_info(c).await)
            }
            ["collections", c] if m == Method::DELETE => {
                ("/collections/{c}", full(self.drop_collection(c).await))
            }
            ["collections", c, "exists"] if m == Method::GET => {
                ("/collections/{c}/exists", self.exists(c).await)
            }
            ["collections", c, "index"] if m == Method::PUT => (
                "/collections/{c}/index",
                full(self.index_op(c, m, "index", body).await),
            ),
            ["collections", c, "index", field] if m == Method::DELETE => (
                "/collections/{c}/index/{field}",
                full(
                    self.index_op(c, m, &format!("index/{}", encode_segment(field)), body)
                        .await,
                ),
            ),
            ["collections", c, "points"] if m == Method::PUT => {
                ("/collections/{c}/points", full(self.upsert(c, body).await))
            }
            ["collections", c, "points"] if m == Method::POST => {
                ("/collections/{c}/points", self.get_points(c, body).await)
            }
            ["collections", c, "points", "delete"] if m == Method::POST => (
                "/collections/{c}/points/delete",
                full(self.delete(c, body).await),
            ),
            ["collections", c, "points", "payload"] if m == Method::POST || m == Method::PUT => (
                "/collections/{c}/points/payload",
                full(self.set_payload(c, m, body).await),
            ),
            ["collections", c, "points", "query"] if m == Method::POST => (
                "/collections/{c}/points/query",
                self.query(c, parse_body(body))
                    .await
                    .map(|(v, p)| (json!({"points": v}), p)),
            ),
            ["collections", c, "points", "query", "groups"] if m == Method::POST => (
                "/collections/{c}/points/query/groups",
                self.query_groups(c, body).await,
            ),
            ["collections", c, "points", "query", "batch"] if m == Method::POST => (
                "/collections/{c}/points/query/batch",
                self.query_batch(c, body).await,
            ),
            ["collections", c, "points", "search"] if m == Method::POST => (
                "/collections/{c}/points/search",
                self.search(c, parse_body(body)).await,
            ),
            ["collections", c, "points", "search", "batch"] if m == Method::POST => (
                "/collections/{c}/points/search/batch",
                self.search_batch(c, body).await,
            ),
            ["collections", c, "points", "scroll"] if m == Method::POST => {
                ("/collections/{c}/points/scroll", self.scroll(c, body).await)
            }
            ["collections", c, "points", "count"] if m == Method::POST => {
                ("/collections/{c}/points/count", self.count(c, body).await)
            }
            ["collections", c, "points", id] if m == Method::GET => {
                ("/collections/{c}/points/{id}", self.get_point(c, id).await)
            }
            ["v1", "search"] if m == Method::POST => (SEED_ROUTE, self.seed_search(body).await),
            _ => (
                "unmatched",
                Err(Error::NotFound(format!("no route for {} {}", m, call.path))),
            ),
        }
    }

    fn policy(&self, collection: &str) -> ReadPolicy {
        let routing = &self.topo.config.routing;
        routing
            .collections
            .get(collection)
            .map_or(routing.read_policy, |c| c.read_policy)
    }

    /// Reads from one replica of `shard`, retrying other replicas on failure until the deadline.
    async fn read_one(
        &self,
        shard: &ShardRoute,
        policy: ReadPolicy,
        method: &Method,
        path: &str,
        body: Bytes,
    ) -> Result<Answer, Error> {
        match &shard.kind {
            ShardKind::Builtin(s) => call_builtin(
                s.clone(),
                method.clone(),
                path.to_string(),
                body,
                self.deadline,
            )
            .await
            .map_err(|e| match e {
                CallError::Timeout => Error::Timeout(format!("shard {}: timed out", shard.name)),
                e => Error::Unavailable(format!("shard {}: {e}", shard.name)),
            }),
            ShardKind::Remote(replicas) => {
                let mut tried = Vec::new();
                let mut last = String::from("no replica is available");
                let mut timed_out = false;
                while let Some(i) = pick(policy, replicas, &self.region, &shard.turn, &tried) {
                    tried.push(i);
                    let r = &replicas[i];
                    // While another replica could still answer, one attempt may use half of
                    // what is left, so a hung replica costs a retry rather than the request.
                    let now = Instant::now();
                    let others_left = replicas.len() > tried.len();
                    let left = self.deadline.saturating_duration_since(now);
                    let attempt_deadline = if others_left {
                        now + left / 2
                    } else {
                        self.deadline
                    };
                    let _in_flight = r.state.start();
                    let result = self
                        .gw
                        .client
                        .call(&r.state.url, method, path, body.clone(), attempt_deadline)
                        .await;
                    self.gw.observe(&shard.name, r, &result);
                    timed_out = matches!(result, Err(CallError::Timeout));
                    match result {
                        Ok(a) if a.status < 500 => return Ok(a),
                        Ok(a) => last = format!("{} answered {}", r.state.url, a.status),
                        Err(CallError::Timeout) => last = format!("{} timed out", r.state.url),
                        Err(e) => last = format!("{}: {e}", r.state.url),
                    }
                }
                let message = format!("shard {}: {last}", shard.name);
                Err(if timed_out {
                    Error::Timeout(message)
                } else {
                    Error::Unavailable(message)
                })
            }
        }
    }

    /// Reads from every shard; failed shards are named, and tolerated only with `allow_partial`.
    async fn scatter(
        &self,
        collection: &str,
        method: &Method,
        path: &str,
        bodies: Vec<Bytes>,
    ) -> Result<(Vec<Value>, Vec<String>), Error> {
        let policy = self.policy(collection);
        let calls = self
            .topo
            .shards
            .iter()
            .zip(bodies)
            .map(|(shard, body)| self.read_one(shard, policy, method, path, body));
        let answers = join_all(calls).await;
        let mut results = Vec::new();
        let mut missing = Vec::new();
        let mut failures = Vec::new();
        for (shard, answer) in self.topo.shards.iter().zip(answers) {
            match answer {
                Ok(a) => results.push(envelope_result(&a)?),
                Err(why) => {
                    missing.push(shard.name.clone());
                    failures.push(why);
                }
            }
        }
        if !missing.is_empty() && (!self.topo.config.routing.allow_partial || results.is_empty()) {
            let message = failures
                .iter()
                .map(Error::detail)
                .collect::<Vec<_>>()
                .join("; ");
            let all_timed_out = failures.iter().all(|e| matches!(e, Error::Timeout(_)));
            return Err(if all_timed_out {
                Error::Timeout(message)
            } else {
                Error::Unavailable(message)
            });
        }
        Ok((results, missing))
    }

    fn same_body(&self, body: &Bytes) -> Vec<Bytes> {
        vec![body.clone(); self.topo.shards.len()]
    }

    /// Sends a write to every replica of `shard` and counts acknowledgements.
    async fn write_shard(
        &self,
        shard: &ShardRoute,
        method: &Method,
        path: &str,
        body: Bytes,
    ) -> ShardWrite {
        let needed_of = |n| self.topo.config.routing.write_consistency.required(n);
        match &shard.kind {
            ShardKind::Builtin(s) => {
                let result = call_builtin(
                    s.clone(),
                    method.clone(),
                    path.to_string(),
                    body,
                    self.deadline,
                )
                .await;
                let mut w = ShardWrite {
                    acks: 0,
                    needed: 1,
                    replicas: 1,
                    answers: Vec::new(),
                    failures: Vec::new(),
                };
                match result {
                    Ok(a) => {
                        w.acks += usize::from(a.status == 200);
                        w.answers.push(a);
                    }
                    Err(e) => w.failures.push(format!("built-in: {e}")),
                }
                w
            }
            ShardKind::Remote(replicas) => {
                let calls = replicas.iter().map(|r| {
                    let body = body.clone();
                    async move {
                        let hint = Hint {
                            method: method.to_string(),
                            path: path.to_string(),
                            body: String::from_utf8_lossy(&body).into_owned(),
                        };
                        if let Some(log) = r.state.hints() {
                            match log.queue_if_lagging(&hint) {
                                Ok(false) => {}
                                Ok(true) => {
                                    return (
                                        r,
                                        Err(CallError::Transport(
                                            "queued behind writes it missed".into(),
                                        )),
                                    )
                                }
                                Err(e) => {
                                    self.gw.hint_disk_failure(&r.state.url, &e);
                                    return (
                                        r,
                                        Err(CallError::Transport(
                                            "queued behind writes it missed".into(),
                                        )),
                                    );
                                }
                            }
                        }
                        let _in_flight = r.state.start();
                        let result = self
                            .gw
                            .client
                            .call(&r.state.url, method, path, body, self.deadline)
                            .await;
                        self.gw.observe(&shard.name, r, &result);
                        if !matches!(&result, Ok(a) if a.status < 500) {
                            if let Some(log) = r.state.hints() {
                                if let Err(e) = log.push(&hint) {
                                    self.gw.hint_disk_failure(&r.state.url, &e);
                                }
                                self.gw
                                    .metrics
                                    .hints_pending
                                    .with_label_values(&[&r.state.url])
                                    .set(log.pending() as i64);
                            }
                        }
                        (r, result)
                    }
                });
                let mut w = ShardWrite {
                    acks: 0,
                    needed: needed_of(replicas.len()),
                    replicas: replicas.len(),
                    answers: Vec::new(),
                    failures: Vec::new(),
                };
                for (r, result) in join_all(calls).await {
                    match result {
                        Ok(a) => {
                            if a.status == 200 {
                                w.acks += 1;
                            } else if a.status >= 500 {
                                w.failures
                                    .push(format!("{} answered {}", r.state.url, a.status));
                            }
                            w.answers.push(a);
                        }
                        Err(e) => w.failures.push(format!("{}: {e}", r.state.url)),
                    }
                }
                w
            }
        }
    }

    /// Writes to the given shards, each with its own body, and checks every one reached its
    /// consistency level. A client error from any replica is returned as is.
    async fn write(
        &self,
        method: &Method,
        path: &str,
        parts: Vec<(usize, Bytes)>,
    ) -> Result<Vec<Value>, Error> {
        let calls = parts.into_iter().map(|(i, body)| {
            let shard = &self.topo.shards[i];
            async move { (shard, self.write_shard(shard, method, path, body).await) }
        });
        let mut results = Vec::new();
        let mut short = Vec::new();
        for (shard, w) in join_all(calls).await {
            if let Some(client_error) = w.answers.iter().find(|a| (400..500).contains(&a.status)) {
                return Err(envelope_result(client_error).expect_err("4xx answers are errors"));
            }
            if w.acks < w.needed {
                short.push(format!(
                    "shard {}: {} of {} replicas acknowledged, {} needed ({})",
                    shard.name,
                    w.acks,
                    w.replicas,
                    w.needed,
                    w.failures.join(", ")
                ));
            }
            if let Some(a) = w.answers.iter().find(|a| a.status == 200) {
                results.push(envelope_result(a)?);
            }
        }
        if !short.is_empty() {
            return Err(Error::Unavailable(format!(
                "write not acknowledged: {}",
                short.join("; ")
            )));
        }
        Ok(results)
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

    async fn list_collections(&self) -> Outcome {
        let (results, missing) = self
            .scatter(
                "",
                &Method::GET,
                "/collections",
                self.same_body(&Bytes::new()),
            )
            .await?;
        let mut names: Vec<String> = results
            .iter()
            .flat_map(|r| r["collections"].as_array().cloned().unwrap_or_default())
            .filter_map(|c| c["name"].as_str().map(str::to_string))
            .collect();
        names.sort();
        names.dedup();
        Ok((
            json!({"collections": names.iter().map(|n| json!({"name": n})).collect::<Vec<_>>()}),
            missing,
        ))
    }

    async fn create_collection(&self, c: &str, body: &Bytes) -> Result<Value, Error> {
        let req: CreateCollection = parse_body(body)?;
        CollectionConfig::from_request(req)?;
        shardd::shard::validate_name(c)?;
        self.forget_schema(c);
        let path = format!("/collections/{}", encode_segment(c));
        self.write(&Method::PUT, &path, self.all_shards(body))
            .await?;
        Ok(Value::Bool(true))
    }

    async fn drop_collection(&self, c: &str) -> Result<Value, Error> {
        self.forget_schema(c);
        let path = format!("/collections/{}", encode_segment(c));
        let results = self
            .write(&Method::DELETE, &path, self.all_shards(&Bytes::new()))
            .await?;
        Ok(Value::Bool(
            results.iter().any(|r| r.as_bool() == Some(true)),
        ))
    }

    /// Creates or drops a payload index on every replica of every shard.
    async fn index_op(
        &self,
        c: &str,
        method: &Method,
        suffix: &str,
        body: &Bytes,
    ) -> Result<Value, Error> {
        let path = format!("/collections/{}/{suffix}?wait=true", encode_segment(c));
        let results = self.write(method, &path, self.all_shards(body)).await?;
        Ok(Self::update_result(&results, true))
    }

    async fn collection_info(&self, c: &str) -> Outcome {
        let path = format!("/collections/{}", encode_segment(c));
        let (results, missing) = self
            .scatter(c, &Method::GET, &path, self.same_body(&Bytes::new()))
            .await?;
        let mut info = results.first().cloned().unwrap_or(Value::Null);
        for key in ["points_count", "indexed_vectors_count"] {
            info[key] = json!(results.iter().filter_map(|r| r[key].as_u64()).sum::<u64>());
        }
        info["config"]["params"]["shard_number"] = json!(self.topo.shards.len());
        if let Some(fields) = info["payload_schema"].as_object().cloned() {
            for field in fields.keys() {
                let points: u64 = results
                    .iter()
                    .filter_map(|r| r["payload_schema"][field]["points"].as_u64())
                    .sum();
                info["payload_schema"][field]["points"] = json!(points);
            }
        }
        Ok((info, missing))
    }

    async fn exists(&self, c: &str) -> Outcome {
        let path = format!("/collections/{}/exists", encode_segment(c));
        let (results, missing) = self
            .scatter(c, &Method::GET, &path, self.same_body(&Bytes::new()))
            .await?;
        Ok((
            json!({"exists": results.iter().any(|r| r["exists"] == json!(true))}),
            missing,
        ))
    }

    async fn upsert(&self, c: &str, body: &Bytes) -> Result<Value, Error> {
        let points = parse_body::<UpsertRequest>(body)?.into_points()?;
        let schema = self.schema(c).await?;
        schema.collection.validate(points.clone())?;
        let path = format!("/collections/{}/points?wait=true", encode_segment(c));
        let parts = self
            .by_owner(points, |p| p.id)
            .into_iter()
            .map(|(i, pts)| {
                (
                    i,
                    to_body(&json!({"points": pts.iter().map(point_json).collect::<Vec<_>>()})),
                )
            })
            .collect();
        let results = self.write(&Method::PUT, &path, parts).await?;
        Ok(Self::update_result(&results, true))
    }

    async fn delete(&self, c: &str, body: &Bytes) -> Result<Value, Error> {
        let req: DeleteRequest = parse_body(body)?;
        let path = format!("/collections/{}/points/delete?wait=true", encode_segment(c));
        let parts = match (req.points, req.filter) {
            (Some(ids), None) => self
                .by_owner(ids, |id| *id)
                .into_iter()
                .map(|(i, ids)| (i, to_body(&json!({"points": ids}))))
                .collect(),
            (None, Some(_)) => self.all_shards(body),
            _ => return Err(Error::bad("give exactly one of `points` (ids) or `filter`")),
        };
        let results = self.write(&Method::POST, &path, parts).await?;
        Ok(Self::update_result(&results, true))
    }

    async fn set_payload(&self, c: &str, method: &Method, body: &Bytes) -> Result<Value, Error> {
        let req: SetPayloadRequest = parse_body(body)?;
        let path = format!(
            "/collections/{}/points/payload?wait=true",
            encode_segment(c)
        );
        let parts = match (&req.points, &req.filter) {
            (Some(ids), None) => self
                .by_owner(ids.clone(), |id| *id)
                .into_iter()
                .map(|(i, ids)| {
                    (
                        i,
                        to_body(&json!({"payload": req.payload, "points": ids, "key": req.key})),
                    )
                })
                .collect(),
            (None, Some(_)) => self.all_shards(body),
            _ => return Err(Error::bad("give exactly one of `points` (ids) or `filter`")),
        };
        let results = self.write(method, &path, parts).await?;
        Ok(Self::update_result(&results, true))
    }

    async fn get_points(&self, c: &str, body: &Bytes) -> Outcome {
        let req: GetPointsRequest = parse_body(body)?;
        let path = format!("/collections/{}/points", encode_segment(c));
        let policy = self.policy(c);
        let parts = self.by_owner(req.ids.clone(), |id| *id);
        let calls = parts.iter().map(|(&i, ids)| {
            let body = to_body(&json!({"ids": ids, "with_payload": req.with_payload, "with_vector": req.with_vector}));
            self.read_one(&self.topo.shards[i], policy, &Method::POST, &path, body)
        });
        let mut found: HashMap<PointId, Value> = HashMap::new();
        for answer in join_all(calls).await {
            let records: Vec<Record> = from_value(envelope_result(&answer?)?)?;
            for r in records {
                found.insert(r.id, serde_json::to_value(&r).unwrap_or(Value::Null));
            }
        }
        let ordered: Vec<Value> = req.ids.iter().filter_map(|id| found.remove(id)).collect();
        Ok((Value::Array(ordered), Vec::new()))
    }

    async fn get_point(&self, c: &str, id: &str) -> Outcome {
        let parsed = PointId::parse(id)?;
        let shard = &self.topo.shards[self.owner(&parsed)];
        let path = format!(
            "/collections/{}/points/{}",
            encode_segment(c),
            encode_segment(id)
        );
        let answer = self
            .read_one(shard, self.policy(c), &Method::GET, &path, Bytes::new())
            .await?;
        Ok((envelope_result(&answer)?, Vec::new()))
    }

    /// Sends a ranked search (`/points/{endpoint}`) to every shard with `limit` widened to
    /// `widened` and `offset` 0, plus collection-wide idf when `search` needs it, and returns
    /// each shard's ranked points.
    async fn scatter_ranked(
        &self,
        c: &str,
        endpoint: &str,
        mut body: Value,
        widened: usize,
        search: Option<&SearchRequest>,
    ) -> Result<(Vec<Vec<ScoredPoint>>, Vec<String>), Error> {
        body["limit"] = json!(widened);
        body["offset"] = json!(0);
        if let Some(s) = search {
            if let Some(stats) = self.global_idf(c, &s.using, &s.vector).await? {
                body["vecgate_idf"] = json!(stats);
            }
        }
        let path = format!("/collections/{}/points/{endpoint}", encode_segment(c));
        let (results, missing) = self
            .scatter(c, &Method::POST, &path, self.same_body(&to_body(&body)))
            .await?;
        let lists = results
            .into_iter()
            .map(|r| from_value(if r.is_array() { r } else { r["points"].clone() }))
            .collect::<Result<_, _>>()?;
        Ok((lists, missing))
    }

    /// For a sparse query on an idf-weighted vector, the document frequencies of the whole
    /// collection (every shard's, summed), so each shard weights terms as one shard holding
    /// every point would. `None` for anything else.
    async fn global_idf(
        &self,
        c: &str,
        using: &str,
        vector: &QueryVector,
    ) -> Result<Option<IdfStats>, Error> {
        let QueryVector::Sparse(query) = vector else {
            return Ok(None);
        };
        let schema = self.schema(c).await?;
        if schema
            .collection
            .config
            .sparse_vectors
            .get(using)
            .and_then(|p| p.modifier)
            != Some(Modifier::Idf)
        {
            return Ok(None);
        }
        let path = format!("/collections/{}/sparse/stats", encode_segment(c));
        let body = to_body(&json!({"using": using, "indices": query.indices}));
        let (results, _) = self
            .scatter(c, &Method::POST, &path, self.same_body(&body))
            .await?;
        let mut total = IdfStats::default();
        for r in results {
            total.add(&from_value(r)?);
        }
        Ok(Some(total))
    }

    /// Runs one query over every shard and merges; answers the points as a JSON list. Shards get
    /// the client's own request with `limit` widened to `offset + limit` and `offset` 0.
    async fn query(&self, c: &str, raw: Result<Value, Error>) -> Outcome {
        let raw = raw?;
        let plan = wire::query_plan(&raw)?;
        let (limit, offset, distance) = match &plan {
            QueryPlan::Search(s) => (s.limit, s.offset, self.schema(c).await?.distance(&s.using)),
            QueryPlan::List { limit, offset, .. } => (*limit, *offset, Distance::Dot),
            QueryPlan::Staged {
                stage,
                offset,
                with_payload,
                with_vector,
            } => {
                let (mut points, missing) = self.stage(c, stage, with_payload, with_vector).await?;
                points.drain(..(*offset).min(points.len()));
                return Ok((serde_json::to_value(points).unwrap_or(Value::Null), missing));
            }
        };
        let search = match &plan {
            QueryPlan::Search(s) => Some(s),
            _ => None,
        };
        let (lists, missing) = self
            .scatter_ranked(c, "query", raw, limit + offset, search)
            .await?;
        let merged = match plan {
            QueryPlan::List { .. } => {
                let mut all: Vec<ScoredPoint> = lists.into_iter().flatten().collect();
                all.sort_by_key(|p| p.id);
                all.into_iter().skip(offset).take(limit).collect()
            }
            _ => merge_top_k(&lists, distance, offset, limit),
        };
        Ok((serde_json::to_value(merged).unwrap_or(Value::Null), missing))
    }

    /// Runs one stage of a universal query over every shard. Searches scatter and merge; a
    /// fusion or rescoring runs here over the merged results of each prefetch, so the answer
    /// equals that of one shard holding every point.
    fn stage<'s>(
        &'s self,
        c: &'s str,
        stage: &'s Stage,
        with_payload: &'s WithPayload,
        with_vector: &'s WithVector,
    ) -> BoxFuture<'s, Gathered> {
        Box::pin(async move {
            let runs = join_all(
                stage
                    .prefetch
                    .iter()
                    .map(|p| self.stage(c, p, with_payload, with_vector)),
            )
            .await;
            let (mut lists, mut missing) = (Vec::new(), Vec::new());
            for run in runs {
                let (list, m) = run?;
                lists.push(list);
                missing.extend(m);
            }
            let vector = match &stage.query {
                StageQuery::Fusion(f) if !lists.is_empty() => {
                    return Ok((fused_top(fuse(lists, f)?, stage), missing))
                }
                StageQuery::Fusion(_) => {
                    return Err(Error::bad("query: fusion needs prefetches to fuse"))
                }
                StageQuery::Nearest(v) => v,
            };
            let filter = if stage.prefetch.is_empty() {
                stage.filter_json.clone()
            } else {
                let ids: BTreeSet<PointId> = lists.iter().flatten().map(|p| p.id).collect();
                let mut must = vec![json!({"has_id": ids})];
                must.extend(stage.filter_json.clone());
                Some(json!({"must": must}))
            };
            let (limit, fetch) = candidates_for(stage, with_vector);
            let (found, m) = self
                .stage_search(c, stage, filter, limit, with_payload, &fetch)
                .await?;
            missing.extend(m);
            let points = match stage.mmr {
                Some(params) => mmr::rerank(
                    found,
                    vector,
                    &stage.using,
                    self.schema(c).await?.distance(&stage.using),
                    params,
                    stage.limit,
                    with_vector,
                ),
                None => found,
            };
            Ok((points, missing))
        })
    }

    /// One nearest search of a stage on every shard, merged to `limit`.
    async fn stage_search(
        &self,
        c: &str,
        stage: &Stage,
        filter: Option<Value>,
        limit: usize,
        with_payload: &WithPayload,
        with_vector: &WithVector,
    ) -> Gathered {
        let StageQuery::Nearest(vector) = &stage.query else {
            return Err(Error::bad("query: only a nearest stage searches"));
        };
        let body = json!({
            "query": vector_json(vector),
            "using": stage.using,
            "filter": filter,
            "params": stage.params,
            "score_threshold": stage.score_threshold,
            "limit": limit,
            "with_payload": with_payload,
            "with_vector": with_vector,
            "vecgate_idf": self.global_idf(c, &stage.using, vector).await?,
        });
        let distance = self.schema(c).await?.distance(&stage.using);
        let path = format!("/collections/{}/points/query", encode_segment(c));
        let (results, missing) = self
            .scatter(c, &Method::POST, &path, self.same_body(&to_body(&body)))
            .await?;
        let lists: Vec<Vec<ScoredPoint>> = results
            .into_iter()
            .map(|r| from_value(r["points"].clone()))
            .collect::<Result<_, _>>()?;
        Ok((merge_top_k(&lists, distance, 0, limit), missing))
    }

    /// `/points/query/groups`: the query ranked over every shard, grouped here.
    async fn query_groups(&self, c: &str, body: &Bytes) -> Outcome {
        let raw: Value = parse_body(body)?;
        let req: GroupsRequest = parse_value(raw.clone())?;
        let (_, limit) = req.sizes()?;
        let mut asked = req.first_fetch()?;
        loop {
            let (found, missing) = self.query(c, Ok(groups::ranked_query(&raw, asked))).await?;
            let points: Vec<ScoredPoint> = from_value(found)?;
            let grouped = groups::group(&points, &req)?;
            if !groups::needs_more(grouped.len(), limit, points.len(), asked) {
                return Ok((json!({"groups": grouped}), missing));
            }
            asked = (asked * 4).min(wire::MAX_RESULTS);
        }
    }

    async fn query_batch(&self, c: &str, body: &Bytes) -> Outcome {
        let batch: Batch<Value> = parse_body(body)?;
        let answers = join_all(batch.searches.into_iter().map(|q| self.query(c, Ok(q)))).await;
        gather_batch(answers, |points| json!({"points": points}))
    }

    async fn search(&self, c: &str, raw: Result<Value, Error>) -> Outcome {
        let body = raw?;
        let req: LegacySearchRequest = parse_value(body.clone())?;
        let search = req.into_search()?;
        let distance = self.schema(c).await?.distance(&search.using);
        let (lists, missing) = self
            .scatter_ranked(
                c,
                "search",
                body,
                search.limit + search.offset,
                Some(&search),
            )
            .await?;
        Ok((
            serde_json::to_value(merge_top_k(&lists, distance, search.offset, search.limit))
                .unwrap_or(Value::Null),
            missing,
        ))
    }

    async fn search_batch(&self, c: &str, body: &Bytes) -> Outcome {
        let batch: Batch<Value> = parse_body(body)?;
        let answers = join_all(batch.searches.into_iter().map(|q| self.search(c, Ok(q)))).await;
        gather_batch(answers, |points| points)
    }

    async fn scroll(&self, c: &str, body: &Bytes) -> Outcome {
        let req: ScrollRequest = parse_body(body)?;
        let limit = req.limit.unwrap_or(10);
        wire::check_limit(limit, 0)?;
        let mut shard_body: Value = parse_body(body)?;
        shard_body["limit"] = json!(limit + 1);
        let path = format!("/collections/{}/points/scroll", encode_segment(c));
        let (results, missing) = self
            .scatter(
                c,
                &Method::POST,
                &path,
                self.same_body(&to_body(&shard_body)),
            )
            .await?;
        let mut all: Vec<Record> = Vec::new();
        for r in results {
            all.extend(from_value::<Vec<Record>>(r["points"].clone())?);
        }
        all.sort_by_key(|p| p.id);
        let next = all.get(limit).map(|r| r.id);
        all.truncate(limit);
        Ok((json!({"points": all, "next_page_offset": next}), missing))
    }

    /// `POST /v1/search`: a vector search with a Mongo-style filter, answered as
    /// `{"results": [{"id", "score", "payload"}], "partial"}`.
    async fn seed_search(&self, body: &Bytes) -> Outcome {
        let req: SeedSearch = parse_body(body)?;
        let vector = match (req.vector, req.query) {
            (Some(v), None) => v,
            (None, Some(_)) => {
                return Err(Error::bad(
                    "text queries need an embedder, and none is configured; send `vector`",
                ))
            }
            _ => return Err(Error::bad("give exactly one of `query` (text) or `vector`")),
        };
        let filter = req.filter.as_ref().map(translate).transpose()?;
        let query = json!({
            "query": vector,
            "using": req.using,
            "limit": req.top_k.unwrap_or(10),
            "filter": filter,
            "with_payload": true,
        });
        let (points, missing) = self.query(&req.collection, Ok(query)).await?;
        let results: Vec<Value> = points
            .as_array()
            .map(|ps| {
                ps.iter()
                    .map(|p| json!({"id": p["id"], "score": p["score"], "payload": p["payload"]}))
                    .collect()
            })
            .unwrap_or_default();
        let partial = !missing.is_empty();
        Ok((json!({"results": results, "partial": partial}), missing))
    }

    async fn count(&self, c: &str, body: &Bytes) -> Outcome {
        let path = format!("/collections/{}/points/count", encode_segment(c));
        let (results, missing) = self
            .scatter(c, &Method::POST, &path, self.same_body(body))
            .await?;
        Ok((
            json!({"count": results.iter().filter_map(|r| r["count"].as_u64()).sum::<u64>()}),
            missing,
        ))
    }
}

/// Answers a batch in request order; the first failed entry fails the batch, as in Qdrant.
fn gather_batch(answers: Vec<Outcome>, shape: impl Fn(Value) -> Value) -> Outcome {
    let mut out = Vec::with_capacity(answers.len());
    let mut missing = Vec::new();
    for answer in answers {
        let (points, m) = answer?;
        out.push(shape(points));
        missing.extend(m);
    }
    missing.sort();
    missing.dedup();
    Ok((Value::Array(out), missing))
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
