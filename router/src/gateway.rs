//! The router's request path: a request is parsed once into a [`Route`], given its deadline,
//! then answered from the shards: handed whole to the shard when one shard holds everything
//! (a built-in shard runs it in process; a remote one gets the client's bytes), else
//! scattered, with the query algorithm running over [`Scatter`] and writes placed by the ring.
//!
//! Writes are validated against the collection's schema before any shard sees them, so bad
//! input changes nothing anywhere; then each shard's part goes to all of its replicas and
//! succeeds when `write_consistency` of them acknowledge. Reads go to one replica per shard,
//! chosen by the read policy; a replica that fails or times out is retried on another.

mod reads;
mod semantic;
mod writes;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant as StdInstant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use futures_util::future::join_all;
use http::Method;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;
use shardd::api::request::CreateCollection;
use shardd::api::response::{envelope, error_body, Answer as Written};
use shardd::api::route::client_timeout;
use shardd::api::{self, Body, Endpoint, Route, QDRANT_API_VERSION};
use shardd::engine::params::CollectionConfig;
use shardd::engine::point::{Payload, PointId};
use shardd::query::{run, run_groups};
use tokio::time::Instant;
use tracing::Instrument;

use crate::balance::Replica;
use crate::cache::precise::{self, Asked};
use crate::cache::{Cache, Outcome, PreciseRead};
use crate::config::{CacheMode, Config, ReadPolicy};
use crate::embed::infer::{self, InferError};
use crate::embed::Embedders;
use crate::error::{Attempt, CallKind, GatewayError, ShardFailure};
use crate::metrics::RouterMetrics;
use crate::scatter::Scatter;
use crate::topology::{Live, ShardKind, Topology};
use crate::upstream::{Answer, CallError};

/// Payloads in writes, as the router keeps them: the client's JSON, never parsed.
pub type RawPayload = Box<RawValue>;

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
    /// `x-vecgate-version`, if sent: the version of a write this read must see.
    pub token: Option<u64>,
    /// A cache warm-up's replay: not counted as demand.
    pub warming: bool,
}

/// The router's answer.
#[derive(Clone)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// JSON body.
    pub body: Bytes,
    /// Shards missing from a partial answer.
    pub partial: Vec<String>,
    /// Route template, for metrics.
    pub route: &'static str,
    /// The methods the path takes, for a 405's `Allow` header.
    pub allow: Option<String>,
    /// What the result cache did, when it was asked.
    pub cache: Option<Outcome>,
    /// The version of the write this answers (`x-vecgate-version`), for reads that must see it.
    pub version: Option<u64>,
    /// Shards that answered, of the serving ones (`x-vecgate-shards`).
    pub shards: Option<(usize, usize)>,
    /// Where the time went (`server-timing`).
    pub timing: Timing,
    /// Whether it answers a search (for `vecgate_search_latency_seconds`).
    pub search: bool,
}

/// Where a request's time went, as `server-timing` reports it.
#[derive(Clone, Copy, Debug, Default)]
pub struct Timing {
    /// In the result cache: lookups, and waiting for an identical request's search.
    pub cache: Duration,
    /// Waiting for shards (every fan-out's wall time).
    pub scatter: Duration,
    /// The rest of the search: parsing, planning, merging, encoding.
    pub merge: Duration,
    /// Turning the request's text into vectors.
    pub embed: Duration,
}

/// What one request's handling measures and records on the way.
#[derive(Default)]
pub(crate) struct RequestStats {
    /// The version of the write it made.
    written: AtomicU64,
    /// Shards asked at all.
    asked: std::sync::atomic::AtomicBool,
    /// Shards that could not answer.
    failed_shards: std::sync::atomic::AtomicUsize,
    /// Microseconds waiting for shards.
    scatter_us: AtomicU64,
    /// Microseconds answering from the shards (scatter included).
    search_us: AtomicU64,
    /// Microseconds turning the request's text into vectors.
    embed_us: AtomicU64,
}

impl RequestStats {
    /// Runs a fan-out to shards, counting its wall time.
    pub(crate) async fn shards<T>(&self, f: impl std::future::Future<Output = T>) -> T {
        self.asked.store(true, Ordering::SeqCst);
        let started = StdInstant::now();
        let out = f.await;
        self.scatter_us
            .fetch_add(started.elapsed().as_micros() as u64, Ordering::SeqCst);
        out
    }

    /// Runs the part of a request answered from the shards, counting its wall time.
    pub(crate) async fn searched<T>(&self, f: impl std::future::Future<Output = T>) -> T {
        let started = StdInstant::now();
        let out = f.await;
        self.search_us
            .fetch_add(started.elapsed().as_micros() as u64, Ordering::SeqCst);
        out
    }

    /// Records the version of the write the request made.
    pub(crate) fn wrote(&self, version: u64) {
        self.written.store(version, Ordering::SeqCst);
    }
}

impl Reply {
    /// An answer with `status` and `body` to `route`, nothing else said yet.
    fn new(status: u16, body: Bytes, route: &'static str) -> Reply {
        Reply {
            status,
            body,
            partial: Vec::new(),
            route,
            allow: None,
            cache: None,
            version: None,
            shards: None,
            timing: Timing::default(),
            search: false,
        }
    }

    /// A cached answer (only complete 200 answers are cached).
    pub(crate) fn cached(body: Bytes) -> Reply {
        Reply::new(200, body, "")
    }

    /// Whether this answer may be cached: complete, successful and at most `max_bytes`.
    pub(crate) fn is_cacheable(&self, max_bytes: usize) -> bool {
        self.status == 200 && self.partial.is_empty() && self.body.len() <= max_bytes
    }
}

/// An answered request: status (a shard's own when its answer is passed on), body, and the
/// shards a partial answer lacks.
pub(crate) struct Done {
    status: u16,
    body: Bytes,
    partial: Vec<String>,
}

/// A shard's answer, passed on as it came.
impl From<Answer> for Done {
    fn from(a: Answer) -> Done {
        Done {
            status: a.status,
            body: a.body,
            partial: Vec::new(),
        }
    }
}

impl Done {
    fn ok(body: impl Into<Bytes>) -> Done {
        Done {
            status: 200,
            body: body.into(),
            partial: Vec::new(),
        }
    }
}

/// The router.
pub struct Gateway {
    topology: ArcSwap<Topology>,
    /// State carried across reloads.
    pub live: Live,
    /// Collection configs, read from a shard on first use and dropped on reload or recreate.
    schemas: Mutex<HashMap<String, Arc<CollectionConfig>>>,
    pub(crate) metrics: Arc<RouterMetrics>,
    /// The result cache, when `[cache]` is configured.
    pub cache: Option<Cache>,
    /// Versions this router's writes.
    pub(crate) clock: shardd::version::Clock,
    /// One anti-entropy round at a time.
    pub(crate) repairing: tokio::sync::Mutex<()>,
    /// etcd, when routers share shards (`[cluster]`).
    pub etcd: Option<Arc<crate::coordination::Etcd>>,
    /// This router's name in etcd: a hash of its data directory, the same across restarts
    /// (its hint logs live there).
    pub(crate) router_id: String,
    /// The embedders collections use for text.
    embedders: Embedders,
}

/// The collection a `/v1/search` body names.
#[derive(Deserialize)]
struct CollectionOnly {
    #[serde(default)]
    collection: String,
}

/// `{"result": T}` of a shard's answer.
#[derive(Deserialize)]
pub(crate) struct Envelope<T> {
    pub(crate) result: T,
}

/// `{"collections": [{"name"}]}`, the result of `GET /collections`.
#[derive(Deserialize)]
pub(crate) struct Listed {
    collections: Vec<Named>,
}

#[derive(Deserialize)]
struct Named {
    name: String,
}

impl Listed {
    /// The collections' names.
    pub(crate) fn names(self) -> impl Iterator<Item = String> {
        self.collections.into_iter().map(|c| c.name)
    }
}

/// `{"status": {"error"}}` of a shard's error answer.
#[derive(Deserialize)]
struct ErrorEnvelope {
    status: ErrorStatus,
}

#[derive(Deserialize)]
struct ErrorStatus {
    error: String,
}

/// `{"points": [...]}`, the result of a query.
#[derive(Deserialize)]
pub(crate) struct PointsResult<H> {
    pub(crate) points: Vec<H>,
}

/// What a shard's answer holds: its result, or its 4xx refusal passed on as is.
pub(crate) fn read_result<T: DeserializeOwned>(
    shard: &str,
    answer: &Answer,
) -> Result<T, GatewayError> {
    if answer.status == 200 {
        return serde_json::from_slice::<Envelope<T>>(&answer.body)
            .map(|e| e.result)
            .map_err(|e| {
                GatewayError::Unreachable(vec![ShardFailure {
                    shard: shard.to_string(),
                    attempts: vec![Attempt {
                        replica: "its replica".into(),
                        kind: CallKind::Invalid(e.to_string()),
                    }],
                }])
            });
    }
    let message = serde_json::from_slice::<ErrorEnvelope>(&answer.body)
        .map(|e| e.status.error)
        .unwrap_or_else(|_| String::from_utf8_lossy(&answer.body).into_owned());
    Err(GatewayError::Rejected {
        shard: shard.to_string(),
        status: answer.status,
        message,
    })
}

impl Gateway {
    /// A gateway running `topology`, with the result cache when one is given.
    pub fn new(
        topology: Topology,
        live: Live,
        metrics: Arc<RouterMetrics>,
        cache: Option<Cache>,
        etcd: Option<Arc<crate::coordination::Etcd>>,
        embedders: Embedders,
    ) -> Self {
        let dir = &topology.config.server.data_dir;
        let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.clone());
        let router_id = format!(
            "{:016x}",
            xxhash_rust::xxh3::xxh3_64(dir.to_string_lossy().as_bytes())
        );
        metrics
            .config_info
            .with_label_values(&[&topology.config_hash()])
            .set(1);
        Gateway {
            topology: ArcSwap::from_pointee(topology),
            live,
            schemas: Mutex::default(),
            metrics,
            cache,
            clock: shardd::version::Clock::for_this_process(),
            repairing: tokio::sync::Mutex::new(()),
            etcd,
            router_id,
            embedders,
        }
    }

    /// The running topology.
    pub fn topology(&self) -> Arc<Topology> {
        self.topology.load_full()
    }

    /// Sets the scrape-time gauges: each replica's requests in flight, whether it is up, and
    /// its state.
    pub fn measure(&self) {
        let topo = self.topology();
        let m = &self.metrics;
        m.replica_state.reset();
        for shard in &topo.shards {
            let ShardKind::Remote(replicas) = &shard.kind else {
                continue;
            };
            m.repair_buckets.with_label_values(&[&shard.name]);
            m.repair_copied.with_label_values(&[&shard.name]);
            for r in replicas {
                let labels = [shard.name.as_str(), r.state.url.as_str()];
                m.ejections.with_label_values(&labels);
                m.joining
                    .with_label_values(&[&r.state.url])
                    .set(i64::from(r.state.joining()));
                m.hints_pending
                    .with_label_values(&[&r.state.url])
                    .set(r.state.hints().map_or(0, |h| h.pending()) as i64);
                m.replica_in_flight
                    .with_label_values(&labels)
                    .set(r.state.in_flight() as i64);
                m.replica_up
                    .with_label_values(&labels)
                    .set(i64::from(r.state.available()));
                m.replica_state
                    .with_label_values(&[labels[0], labels[1], r.state.role().as_str()])
                    .set(1);
            }
        }
    }

    /// Swaps in a new topology; requests in flight finish on the one they started with.
    pub fn swap(&self, topology: Topology) {
        self.metrics.config_info.reset();
        self.metrics
            .config_info
            .with_label_values(&[&topology.config_hash()])
            .set(1);
        let placement = topology.placement();
        let old = self.topology.swap(Arc::new(topology));
        if let Some(cache) = &self.cache {
            if old.placement() != placement {
                cache.placement_changed();
            }
        }
        self.schemas
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// Builds a topology for `config` (blocking) with this gateway's live state. A changed
    /// `[cache]`, `[cluster]` or `[telemetry]` pipeline cannot be applied by a reload.
    pub fn build(&self, config: Config) -> Result<Topology, String> {
        if config.cache.as_ref() != self.cache.as_ref().map(Cache::config) {
            return Err(
                "the [cache] section changed; restart vecgate to apply it (the running config stays)"
                    .into(),
            );
        }
        if config.cluster != self.topology().config.cluster {
            return Err(
                "the [cluster] section changed; restart vecgate to apply it (the running config stays)"
                    .into(),
            );
        }
        if !config
            .telemetry
            .same_pipeline(&self.topology().config.telemetry)
        {
            return Err(
                "the [telemetry] section changed; restart vecgate to apply it (only access_log changes while running; the running config stays)"
                    .into(),
            );
        }
        self.live.build(config)
    }

    /// How the cache treats `collection`'s answers; `None` when they are not cached.
    fn cache_mode(&self, topo: &Topology, collection: &str) -> Option<CacheMode> {
        self.cache.as_ref()?;
        let mode = topo
            .config
            .collections
            .get(collection)
            .map(|c| c.cache.mode)
            .unwrap_or_default();
        (mode != CacheMode::Off).then_some(mode)
    }

    /// Answers one client request; a write of points is answered with its version.
    pub async fn handle(&self, call: Call) -> Reply {
        let stats = RequestStats::default();
        if let Some(v) = call.token {
            self.clock.observe(v);
        }
        let topo = self.topology();
        let total = topo.serving().len();
        let started = StdInstant::now();
        let mut reply = match Endpoint::find(&call.method, &call.path) {
            Ok((endpoint, params)) => {
                let mut reply = self
                    .answer_call(call, endpoint, params, &topo, &stats)
                    .await;
                reply.search = endpoint.is_search();
                reply
            }
            Err(u) => {
                let mut reply = self.invalid(
                    u.status(),
                    &u.message(&call.method, &call.path),
                    "unmatched",
                    started,
                );
                reply.allow = u.allow();
                reply
            }
        };
        let all = started.elapsed();
        let v = stats.written.load(Ordering::SeqCst);
        if v != 0 && reply.status == 200 {
            reply.version = Some(v);
        }
        let answered = if reply.status == 200 && reply.cache.is_some_and(|o| o != Outcome::Miss) {
            total
        } else if stats.asked.load(Ordering::SeqCst) {
            total.saturating_sub(reply.partial.len() + stats.failed_shards.load(Ordering::SeqCst))
        } else {
            0
        };
        reply.shards = Some((answered, total));
        let micros = |a: &AtomicU64| Duration::from_micros(a.load(Ordering::SeqCst));
        let (scatter, search) = (micros(&stats.scatter_us), micros(&stats.search_us));
        let embed = micros(&stats.embed_us);
        reply.timing = Timing {
            cache: if reply.cache.is_some() {
                all.saturating_sub(search + embed)
            } else {
                Duration::ZERO
            },
            scatter,
            merge: search.saturating_sub(scatter),
            embed,
        };
        reply
    }

    /// The answer to a request that is wrong in itself (no such route, a body that does not
    /// parse), counted as an error of kind `invalid`.
    fn invalid(
        &self,
        status: u16,
        message: &str,
        route: &'static str,
        started: StdInstant,
    ) -> Reply {
        self.metrics
            .request_errors
            .with_label_values(&[route, "invalid"])
            .inc();
        Reply::new(status, error_body(message, started).into(), route)
    }

    async fn answer_call(
        &self,
        call: Call,
        endpoint: Endpoint,
        params: api::PathParams,
        topo: &Arc<Topology>,
        stats: &RequestStats,
    ) -> Reply {
        let started = StdInstant::now();
        let limit = Duration::from_millis(topo.config.routing.timeout_ms);
        let asked = client_timeout(call.query.as_deref());
        let ctx = Ctx {
            gw: self,
            stats,
            token: call.token,
            missing: tokio::sync::Mutex::new(None),
            topo,
            deadline: Instant::now() + asked.map_or(limit, |t| t.min(limit)),
            region: call
                .region
                .clone()
                .unwrap_or_else(|| topo.config.server.region.clone()),
        };
        let template = endpoint.template();
        let call = match self
            .replace_text(call, endpoint, &params, topo, ctx.deadline, stats)
            .await
        {
            Ok(call) => call,
            Err(e) => {
                self.metrics
                    .request_errors
                    .with_label_values(&[
                        template,
                        if e.status == 400 {
                            "invalid"
                        } else {
                            "embedding"
                        },
                    ])
                    .inc();
                return Reply::new(e.status, error_body(&e.message, started).into(), template);
            }
        };
        // One remote shard holds everything: its answer to the client's own request is the
        // answer, so the body needs no reading here (unless the cache needs its key).
        let forward_to = match topo.shards.as_slice() {
            [only] if endpoint.is_read() && matches!(only.kind, ShardKind::Remote(_)) => Some(only),
            _ => None,
        };
        let mut mode = self.cache_mode(topo, &params.collection);
        // A read that must see a write (`x-vecgate-version`) uses a cached answer only when the
        // collection's generation, read from Redis now, says no write came after it (the
        // writing router bumped it before answering); otherwise it searches.
        let (mut bytes_key, mut generation) = (None, None);
        if let (Some(cache), true) = (&self.cache, call.token.is_some() && endpoint.is_read()) {
            generation = match mode {
                Some(CacheMode::Generation) => cache.generation_now(&params.collection).await,
                _ => None,
            };
            if generation.is_none() {
                mode = None;
            }
        }
        if let (Some(only), None) = (forward_to, mode) {
            let answered = stats
                .searched(ctx.forward(only, &params.collection, &call))
                .await;
            return self.finish(answered, template, started, stats);
        }
        // A read whose exact bytes were answered before is found without parsing it.
        if let (Some(cache), Some(mode)) = (&self.cache, mode) {
            if endpoint.is_read() && !params.collection.is_empty() {
                let g = match generation {
                    Some(g) => g,
                    None => cache.generation(&params.collection).await,
                };
                generation = Some(g);
                let raw = cache.bytes_key(g, topo.placement(), &call);
                let precise = mode == CacheMode::Precise;
                if let Some(mut reply) = cache.by_bytes(raw, &params.collection, precise).await {
                    if !call.warming {
                        cache.record(&call);
                    }
                    reply.route = template;
                    reply.cache = Some(Outcome::L1);
                    return reply;
                }
                bytes_key = Some(raw);
            }
        }
        let route = match Route::<RawPayload>::parse_found(
            endpoint,
            params,
            call.query.as_deref(),
            &call.body,
        ) {
            Ok(route) => route,
            Err(e) => return self.invalid(e.status(), &e.to_string(), template, started),
        };
        let (Some(cache), Some(mode)) = (&self.cache, mode) else {
            let answered = stats.searched(ctx.answer(route, &call, started)).await;
            return self.finish(answered, template, started, stats);
        };
        let key = match route.cache_key() {
            Some(canonical) => {
                if !call.warming {
                    cache.record(&call);
                }
                let g = match generation {
                    Some(g) => g,
                    None => cache.generation(&route.collection).await,
                };
                generation = Some(g);
                let key = cache.key(&route.collection, g, topo.placement(), template, canonical);
                if let Some(raw) = bytes_key {
                    cache.alias(raw, key).await;
                }
                Some(key)
            }
            None => None,
        };
        let collection = route.collection.clone();
        let precise = mode == CacheMode::Precise;
        let written = if precise {
            precise::Written::of(&route)
        } else {
            None
        };
        let asked = match (precise, key) {
            (true, Some(_)) => match ctx.schema(&collection).await {
                Ok(schema) => {
                    Asked::of(&route, |name| schema.vectors.get(name).map(|v| v.distance))
                }
                Err(_) => None,
            },
            _ => None,
        };
        let semantic = match (key, &generation, call.token) {
            (Some(_), Some(g), None) => self.semantic_ask(&ctx, &route, *g, precise).await,
            _ => None,
        };
        let search = async {
            let (answered, from_semantic) = stats
                .searched(async {
                    // Each path boxed: inline, the request's future holds every path's state
                    // at once, past an API thread's stack in debug builds.
                    match (semantic, forward_to) {
                        (Some(ask), _) => {
                            match Box::pin(ctx.semantic(&collection, ask, cache, started)).await {
                                Ok((done, hit)) => (Ok(done), hit),
                                Err(e) => (Err(e), false),
                            }
                        }
                        (None, Some(only)) => (ctx.forward(only, &collection, &call).await, false),
                        (None, None) => (Box::pin(ctx.answer(route, &call, started)).await, false),
                    }
                })
                .await;
            let mut reply = self.finish(answered, template, started, stats);
            if from_semantic {
                reply.cache = Some(Outcome::Semantic);
            }
            reply
        };
        match key {
            Some(key) => {
                let precise = precise.then_some(PreciseRead {
                    collection: &collection,
                    asked,
                });
                let (mut reply, outcome) = cache.serve(key, precise, search).await;
                reply.route = template;
                reply.cache = Some(outcome);
                reply
            }
            None => {
                let reply = search.await;
                if !endpoint.is_read() {
                    cache.written(&collection, mode, written).await;
                }
                reply
            }
        }
    }

    /// What the semantic cache may do for `route`, when its collection's `semantic` is on.
    async fn semantic_ask(
        &self,
        ctx: &Ctx<'_>,
        route: &Route<RawPayload>,
        generation: crate::cache::Generation,
        precise: bool,
    ) -> Option<semantic::Ask> {
        let settings = &ctx.topo.config.collections.get(&route.collection)?.cache;
        if settings.semantic == crate::config::SemanticMode::Off {
            return None;
        }
        let schema = ctx.schema(&route.collection).await.ok()?;
        semantic::Ask::of(
            route,
            settings,
            |name| schema.vectors.get(name).map(|v| v.distance),
            generation,
            ctx.topo.placement(),
            precise,
        )
    }

    /// `call` with the text it carries (a `/v1/search` query, `Document`s) replaced by the
    /// vectors of its collection's embedder.
    async fn replace_text(
        &self,
        mut call: Call,
        endpoint: Endpoint,
        params: &api::PathParams,
        topo: &Topology,
        deadline: Instant,
        stats: &RequestStats,
    ) -> Result<Call, InferError> {
        if !infer::may_carry_text(endpoint, &call.body) {
            return Ok(call);
        }
        let started = StdInstant::now();
        let collection = if endpoint == Endpoint::SeedSearch {
            serde_json::from_slice::<CollectionOnly>(&call.body)
                .map(|c| c.collection)
                .unwrap_or_default()
        } else {
            params.collection.clone()
        };
        let embedder = topo
            .config
            .embedding_for(&collection)
            .map(|c| self.embedders.get(c));
        let span = tracing::info_span!(
            "embed",
            vecgate.collection = collection.as_str(),
            vecgate.model = embedder.as_ref().map_or("", |e| e.model()),
        );
        let replaced = infer::replace_text(
            endpoint,
            &collection,
            &call.body,
            embedder.as_deref(),
            self.cache.as_ref(),
            deadline,
        )
        .instrument(span)
        .await;
        stats
            .embed_us
            .fetch_add(started.elapsed().as_micros() as u64, Ordering::SeqCst);
        if let Some(body) = replaced? {
            call.body = body;
        }
        Ok(call)
    }

    /// The reply to an answered request, its error counted by kind.
    fn finish(
        &self,
        answered: Result<Done, GatewayError>,
        template: &'static str,
        started: StdInstant,
        stats: &RequestStats,
    ) -> Reply {
        if let Err(GatewayError::Unreachable(failures)) = &answered {
            stats.failed_shards.store(failures.len(), Ordering::SeqCst);
        }
        match answered {
            Ok(done) => {
                let mut reply = Reply::new(done.status, done.body, template);
                reply.partial = done.partial;
                reply
            }
            Err(e) => {
                self.metrics
                    .request_errors
                    .with_label_values(&[template, e.kind()])
                    .inc();
                Reply::new(
                    e.status(),
                    error_body(&e.message(), started).into(),
                    template,
                )
            }
        }
    }

    /// Records the outcome of one call to a replica of `shard`, ejecting it after repeated failures.
    pub(crate) fn observe(
        &self,
        shard: &str,
        replica: &Replica,
        result: &Result<Answer, CallError>,
        took: Duration,
    ) {
        let (ok, outcome) = match result {
            Ok(a) if a.status < 400 => (true, "ok"),
            Ok(a) if a.status < 500 => (true, "4xx"),
            Ok(_) => (false, "5xx"),
            Err(CallError::Transport(_)) => (false, "error"),
            Err(CallError::Timeout) => (false, "timeout"),
        };
        self.metrics
            .replica_calls
            .with_label_values(&[shard, &replica.state.url, outcome])
            .inc();
        self.metrics
            .replica_latency
            .with_label_values(&[shard, &replica.state.url])
            .observe(took.as_secs_f64());
        if replica.state.record(ok) {
            self.metrics
                .ejections
                .with_label_values(&[shard, &replica.state.url])
                .inc();
            tracing::warn!(shard, url = %replica.state.url, "replica ejected after consecutive failures");
        }
    }

    /// Counts and logs a hint that could not be persisted.
    pub(crate) fn hint_disk_failure(&self, url: &str, e: &std::io::Error) {
        self.metrics
            .hint_failures
            .with_label_values(&[url, "disk"])
            .inc();
        tracing::error!(url, error = %e, "could not persist a hint; it is kept in memory until replayed");
    }

    /// The cached schema of `collection`, if known.
    fn cached_schema(&self, collection: &str) -> Option<Arc<CollectionConfig>> {
        self.schemas
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(collection)
            .cloned()
    }

    fn forget_schema(&self, collection: &str) {
        self.schemas
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(collection);
    }
}

/// One request's view: the topology it started on, its deadline and the caller's region.
pub(crate) struct Ctx<'a> {
    pub(crate) gw: &'a Gateway,
    pub(crate) topo: &'a Topology,
    pub(crate) deadline: Instant,
    pub(crate) region: String,
    /// What this request measures and records.
    pub(crate) stats: &'a RequestStats,
    /// `x-vecgate-version`: the version of a write this read must see.
    pub(crate) token: Option<u64>,
    /// With a token and `[cluster]`: the writes other routers know replicas missed (by URL
    /// hash, the first missed version), read from etcd once per request.
    pub(crate) missing: tokio::sync::Mutex<Option<HashMap<u64, u64>>>,
}

impl Ctx<'_> {
    async fn answer(
        &self,
        route: Route<RawPayload>,
        call: &Call,
        started: StdInstant,
    ) -> Result<Done, GatewayError> {
        if let [only] = self.topo.shards.as_slice() {
            if let ShardKind::Builtin(shard) = &only.kind {
                let span = tracing::info_span!(
                    "shard call",
                    vecgate.shard = only.name.as_str(),
                    vecgate.replica = "built-in",
                    vecgate.attempt = 1,
                    http.response.status_code = tracing::field::Empty,
                );
                let answered = self
                    .stats
                    .shards(self.in_process(shard, route, started))
                    .instrument(span.clone())
                    .await;
                let status = match &answered {
                    Ok(done) => done.status,
                    Err(e) => e.status(),
                };
                span.record("http.response.status_code", status);
                return answered;
            }
        }
        let c = route.collection.as_str();
        let endpoint = route.endpoint;
        fn written<T: serde::Serialize>(v: T, started: StdInstant) -> Result<Done, GatewayError> {
            Ok(Done::ok(envelope(&v, started)))
        }
        match route.body {
            Body::Empty => match endpoint {
                Endpoint::Version => Ok(Done::ok(
                    serde_json::to_vec(&json!({"title": "vecgate", "version": QDRANT_API_VERSION}))
                        .unwrap_or_default(),
                )),
                Endpoint::ListCollections => self.list_collections(started).await,
                Endpoint::CollectionInfo => self.collection_info(c, started).await,
                Endpoint::CollectionExists => self.exists(c, started).await,
                Endpoint::DropCollection => written(self.drop_collection(c).await?, started),
                other => {
                    Err(shardd::Error::bad(format!("{} takes a body", other.template())).into())
                }
            },
            Body::CreateCollection(_) => {
                written(self.create_collection(c, &call.body).await?, started)
            }
            Body::CreateIndex { .. } => written(
                self.index_op(c, &Method::PUT, "index", &call.body).await?,
                started,
            ),
            Body::DropIndex { field } => written(
                self.index_op(
                    c,
                    &Method::DELETE,
                    &format!("index/{}", encode_segment(&field)),
                    &call.body,
                )
                .await?,
                started,
            ),
            Body::Upsert(points) => written(self.upsert(c, points, &call.body).await?, started),
            Body::Delete(selector) => written(self.delete(c, selector, &call.body).await?, started),
            Body::SetPayload {
                selector,
                payload,
                key,
                overwrite,
            } => written(
                self.set_payload(c, selector, payload, key, overwrite, &call.body)
                    .await?,
                started,
            ),
            Body::GetPoints(req) => self.get_points(c, req, started).await,
            Body::GetPoint(id) => self.get_point(c, id, &call.path).await,
            Body::Scroll(req) => self.scroll(c, req, started).await,
            Body::Count(_) => self.count(c, &call.body, started).await,
            Body::SparseStats(_) => Err(shardd::Error::NotFound(
                "/sparse/stats is a shard's internal endpoint; the router computes idf itself"
                    .into(),
            )
            .into()),
            Body::Replication(_) => Err(shardd::Error::NotFound(
                "/replication/... is between a router and its shards; ask a shard directly".into(),
            )
            .into()),
            Body::Query(plan) => {
                let scatter = Scatter::new(self, c);
                let points = run(&scatter, plan).await?;
                let partial = scatter.missing();
                let written = Written::for_query(endpoint, points, !partial.is_empty());
                Ok(Done {
                    status: 200,
                    body: written.to_bytes(false, started).into(),
                    partial,
                })
            }
            Body::Batch(plans) => {
                let scatter = Scatter::new(self, c);
                let lists = join_all(plans.into_iter().map(|p| run(&scatter, p)))
                    .await
                    .into_iter()
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Done {
                    status: 200,
                    body: Written::for_batch(endpoint, lists)
                        .to_bytes(false, started)
                        .into(),
                    partial: scatter.missing(),
                })
            }
            Body::Groups(plan) => {
                let scatter = Scatter::new(self, c);
                let groups = run_groups(&scatter, &plan).await?;
                Ok(Done {
                    status: 200,
                    body: Written::Groups(groups).to_bytes(false, started).into(),
                    partial: scatter.missing(),
                })
            }
        }
    }

    /// Runs the request on the only shard, built in: reads in place on this API thread (a
    /// search is short CPU work, and handing it to another thread costs more than the search),
    /// writes on the blocking pool, since they wait for an fsync.
    async fn in_process(
        &self,
        shard: &Arc<shardd::Shard>,
        route: Route<RawPayload>,
        started: StdInstant,
    ) -> Result<Done, GatewayError> {
        let route: Route<Payload> = route
            .map_payload(|raw| serde_json::from_str::<Payload>(raw.get()))
            .map_err(|e| shardd::Error::bad(format!("Format error in JSON body: payload: {e}")))?;
        if route.endpoint.is_read() {
            return Ok(Done::ok(api::execute(shard, route, started)?));
        }
        let shard = shard.clone();
        let work = tokio::task::spawn_blocking(move || api::execute(&shard, route, started));
        match tokio::time::timeout_at(self.deadline, work).await {
            Ok(Ok(answered)) => Ok(Done::ok(answered?)),
            Ok(Err(e)) => {
                Err(shardd::Error::Storage(format!("built-in shard task failed: {e}")).into())
            }
            Err(_) => Err(GatewayError::Unreachable(vec![ShardFailure {
                shard: self.topo.shards[0].name.clone(),
                attempts: vec![Attempt {
                    replica: "built-in".into(),
                    kind: CallKind::Timeout,
                }],
            }])),
        }
    }

    /// Sends the client's own request to one replica of the only shard and passes its answer on.
    async fn forward(
        &self,
        shard: &crate::topology::ShardRoute,
        collection: &str,
        call: &Call,
    ) -> Result<Done, GatewayError> {
        let path = match &call.query {
            Some(q) => format!("{}?{q}", call.path),
            None => call.path.clone(),
        };
        let answer = self
            .stats
            .shards(self.read_one(
                shard,
                self.policy(collection),
                &call.method,
                &path,
                call.body.clone(),
            ))
            .await?;
        Ok(answer.into())
    }

    fn policy(&self, collection: &str) -> ReadPolicy {
        let routing = &self.topo.config.routing;
        routing
            .collections
            .get(collection)
            .map_or(routing.read_policy, |c| c.read_policy)
    }

    /// Items grouped by the shards `targets` sends each to (one, or two while points move).
    fn by_targets<T: Clone>(
        &self,
        items: Vec<T>,
        id: impl Fn(&T) -> PointId,
        targets: impl Fn(&PointId) -> (usize, Option<usize>),
    ) -> BTreeMap<usize, Vec<T>> {
        let mut parts: BTreeMap<usize, Vec<T>> = BTreeMap::new();
        for item in items {
            let (first, second) = targets(&id(&item));
            if let Some(second) = second {
                parts.entry(second).or_default().push(item.clone());
            }
            parts.entry(first).or_default().push(item);
        }
        parts
    }

    /// The configuration of `collection`, as its first shard reports it (cached).
    pub(crate) async fn schema(
        &self,
        collection: &str,
    ) -> Result<Arc<CollectionConfig>, GatewayError> {
        if let Some(s) = self.gw.cached_schema(collection) {
            return Ok(s);
        }
        #[derive(Deserialize)]
        struct Info {
            config: InfoConfig,
        }
        #[derive(Deserialize)]
        struct InfoConfig {
            params: serde_json::Value,
            hnsw_config: serde_json::Value,
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
        let info: Info = read_result(&shard.name, &answer)?;
        let params = &info.config.params;
        let req: CreateCollection = serde_json::from_value(json!({
            "vectors": params["vectors"],
            "sparse_vectors": params.get("sparse_vectors").cloned().unwrap_or(serde_json::Value::Null),
            "hnsw_config": info.config.hnsw_config,
        }))
        .map_err(|e| shardd::Error::Storage(format!("shard {} described collection `{collection}` in an unexpected shape: {e}", shard.name)))?;
        let schema = Arc::new(req.into_config()?);
        self.gw
            .schemas
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(collection.to_string(), schema.clone());
        Ok(schema)
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
