//! The result cache: answers to reads kept in process (L1, moka, bounded by bytes, TTL and
//! time-to-idle) and, when configured, in Redis (L2), keyed by xxh3-128 of the canonical
//! request and the collection's generation.
//!
//! A write bumps its collection's generation before it is acknowledged, so no answer cached
//! before the write is reachable afterwards on this router; with Redis, the generation is a
//! Redis counter and its bumps are published, so other routers sharing that Redis follow
//! within the time the message takes (`l2` module). Concurrent misses on one key run one
//! backend search (single-flight); only complete answers (200, no missing shard) are cached.

mod l2;
pub mod precise;
pub mod semantic;
pub mod warm;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use moka::notification::RemovalCause;
use parking_lot::Mutex;
use prometheus::{IntCounter, IntCounterVec, IntGauge, Registry};
use shardd::metrics::Registrar;
use tokio::sync::watch;
use tracing::Instrument;
use xxhash_rust::xxh3::Xxh3;

use crate::config::{CacheConfig, CacheMode, Strict};
use crate::gateway::{Call, Reply};

use l2::Redis;
use precise::{Asked, Check, Logs, Written};
use semantic::Semantic;
use warm::{Hot, Recorded};

/// What the cache did for one request (the `x-vecgate-cache` header).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Answered from this process.
    L1,
    /// Answered from Redis.
    L2,
    /// Searched, and the answer stored.
    Miss,
    /// Waited for the same request's search already running.
    Coalesced,
    /// Answered from a cached search for a nearby query vector.
    Semantic,
}

impl Outcome {
    /// The header value.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::L1 => "l1",
            Outcome::L2 => "l2",
            Outcome::Miss => "miss",
            Outcome::Coalesced => "coalesced",
            Outcome::Semantic => "semantic",
        }
    }
}

/// The cache's metrics.
pub struct CacheMetrics {
    /// Lookups by tier (`l1`, `l2`) and result (`hit`, `miss`).
    pub lookups: IntCounterVec,
    /// Requests that waited for an identical one's search.
    pub coalesced: IntCounter,
    /// Answers leaving L1 by cause (`size`, `expired`, `replaced`, `explicit`).
    pub evictions: IntCounterVec,
    /// Bytes held in L1.
    pub l1_bytes: IntGauge,
    /// Answers held in L1.
    pub l1_entries: IntGauge,
    /// Invalidations by cause (`generation`: a write; `purge`; `topology`: a reload changed
    /// the shard set).
    pub invalidations: IntCounterVec,
    /// Redis calls that failed, by operation (`get`, `set`, `incr`, `publish`, `subscribe`).
    pub l2_errors: IntCounterVec,
    /// 1 while Redis is skipped after failures.
    pub l2_breaker_open: IntGauge,
    /// Generation bumps heard from other routers.
    pub remote_invalidations: IntCounter,
    /// Warm-ups run, by trigger (`start`, `reload`).
    pub warmups: IntCounterVec,
    /// Requests replayed by warm-ups.
    pub warmed: IntCounter,
    /// Semantic hits searched anyway, by mode and whether the hit's answer was the search's.
    pub semantic_checks: IntCounterVec,
    /// Searches held by the semantic cache.
    pub semantic_entries: IntGauge,
}

impl CacheMetrics {
    /// Registers the cache's metrics in `registry`.
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let r = Registrar::new(registry, "vecgate_cache");
        Ok(CacheMetrics {
            lookups: r.counters(
                "lookups_total",
                "Cache lookups by tier (l1, l2) and result (hit, miss)",
                &["tier", "result"],
            )?,
            coalesced: r.counter(
                "coalesced_total",
                "Requests that waited for an identical request's search instead of searching",
            )?,
            evictions: r.counters(
                "evictions_total",
                "Answers leaving L1 by cause (size, expired, replaced, explicit)",
                &["cause"],
            )?,
            l1_bytes: r.gauge("l1_bytes", "Bytes of answers held in L1")?,
            l1_entries: r.gauge("l1_entries", "Answers held in L1")?,
            invalidations: r.counters(
                "invalidations_total",
                "Cache invalidations by cause (generation, purge, topology)",
                &["cause"],
            )?,
            l2_errors: r.counters(
                "l2_errors_total",
                "Redis calls that failed or timed out, by operation",
                &["op"],
            )?,
            l2_breaker_open: r.gauge(
                "l2_breaker_open",
                "1 while Redis is skipped after failed calls",
            )?,
            remote_invalidations: r.counter(
                "remote_invalidations_total",
                "Generation bumps heard from other routers through Redis",
            )?,
            warmups: r.counters(
                "warmups_total",
                "Warm-ups of hot queries run, by trigger (start, reload, join)",
                &["trigger"],
            )?,
            warmed: r.counter("warmed_total", "Requests replayed by warm-ups")?,
            semantic_checks: r.counters(
                "semantic_checks_total",
                "Semantic hits searched anyway, by mode (exact, threshold) and result (same, differs: a false hit)",
                &["mode", "result"],
            )?,
            semantic_entries: r.gauge(
                "semantic_entries",
                "Searches held by the semantic cache",
            )?,
        })
    }
}

/// A collection's generation: the Redis counter (`shared`, 0 without Redis) and the bumps
/// made while Redis could not be told (`local`). Every write changes one of them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Generation {
    pub(crate) shared: u64,
    pub(crate) local: u64,
    /// `shared` was read from Redis (or set by a bump it answered) since the last (re)connect.
    known: bool,
}

/// Per-collection generations.
#[derive(Default)]
pub(crate) struct Generations(Mutex<HashMap<String, Generation>>);

impl Generations {
    fn get(&self, collection: &str) -> Generation {
        self.0.lock().get(collection).copied().unwrap_or_default()
    }

    pub(crate) fn update(&self, collection: &str, f: impl FnOnce(&mut Generation)) {
        f(self.0.lock().entry(collection.to_string()).or_default())
    }

    /// A value heard from Redis: larger ones win, and a new one makes the bumps made while
    /// Redis was away moot (the pair it forms was never used).
    pub(crate) fn heard(&self, collection: &str, shared: u64) {
        self.update(collection, |g| {
            if shared > g.shared {
                g.shared = shared;
                g.local = 0;
            }
            g.known = true;
        })
    }

    /// After a reconnect to Redis, every counter is read again before it is trusted.
    pub(crate) fn forget_shared(&self) {
        for g in self.0.lock().values_mut() {
            g.known = false;
        }
    }

    /// The collections written while Redis could not be told, with the value last heard.
    pub(crate) fn written_alone(&self) -> Vec<(String, u64)> {
        self.0
            .lock()
            .iter()
            .filter(|(_, g)| g.local > 0)
            .map(|(c, g)| (c.clone(), g.shared))
            .collect()
    }

    fn collections(&self) -> Vec<String> {
        self.0.lock().keys().cloned().collect()
    }
}

/// An answer shared with the requests that waited for it, and the write log's sequence number
/// when its search began (a request arriving after a later write must not wait for it).
type Flight = (watch::Receiver<Option<Reply>>, u64);

/// A cached answer; answers of precise collections carry what checks them against writes.
struct Entry {
    body: Bytes,
    check: Option<Check>,
}

/// How a precise collection's answer is cached: its collection, and what its search asked
/// (when a validator can check it).
pub struct PreciseRead<'a> {
    /// The collection.
    pub collection: &'a str,
    /// What the search asked; with its answer, the answer's validator.
    pub asked: Option<Asked>,
}

/// The result cache.
pub struct Cache {
    config: CacheConfig,
    l1: moka::future::Cache<u128, Arc<Entry>>,
    /// The canonical key of requests by their exact bytes, so that a repeated request is found
    /// without being parsed.
    aliases: moka::future::Cache<u128, u128>,
    l2: Option<Redis>,
    generations: Arc<Generations>,
    flights: Mutex<HashMap<u128, Flight>>,
    metrics: Arc<CacheMetrics>,
    /// Hot-query counts, when warm-up is on.
    hot: Option<Hot>,
    /// Where the counts are kept without Redis.
    hot_file: PathBuf,
    /// Precise collections' writes.
    logs: Arc<Logs>,
    /// Searches kept for semantic hits.
    semantic: Semantic,
}

/// Bytes an L1 entry costs beyond its body (key, moka's bookkeeping).
const ENTRY_OVERHEAD: usize = 96;
/// One alias (a request's bytes to its canonical key) is kept per this many bytes of L1.
const ALIAS_PER_BYTES: u64 = 1024;

/// The span of one cache lookup in `tier`; [`Cache::looked_up`] records what it found.
fn lookup_span(tier: &'static str) -> tracing::Span {
    tracing::info_span!(
        "cache",
        vecgate.cache.tier = tier,
        vecgate.cache.result = tracing::field::Empty
    )
}

impl Cache {
    /// A cache as `config` describes it; connects to Redis in the background when it names
    /// one (vecgate starts and serves while Redis is down). Without Redis, hot-query counts
    /// are kept under `data_dir`. Call within a tokio runtime.
    pub fn new(
        config: CacheConfig,
        metrics: Arc<CacheMetrics>,
        data_dir: &Path,
    ) -> anyhow::Result<Cache> {
        let evicted = metrics.clone();
        let mut l1 = moka::future::Cache::builder()
            .max_capacity(config.l1_max_bytes)
            .weigher(|_, entry: &Arc<Entry>| {
                u32::try_from(entry.body.len() + ENTRY_OVERHEAD).unwrap_or(u32::MAX)
            })
            .time_to_live(Duration::from_secs(config.ttl_s))
            .eviction_listener(move |_, _, cause| {
                let cause = match cause {
                    RemovalCause::Size => "size",
                    RemovalCause::Expired => "expired",
                    RemovalCause::Replaced => "replaced",
                    RemovalCause::Explicit => "explicit",
                };
                evicted.evictions.with_label_values(&[cause]).inc();
            });
        if config.tti_s > 0 {
            l1 = l1.time_to_idle(Duration::from_secs(config.tti_s));
        }
        let generations = Arc::new(Generations::default());
        let logs = Arc::new(Logs::default());
        let l2 = match &config.redis_url {
            Some(url) => Some(Redis::connect(
                url,
                &config,
                generations.clone(),
                logs.clone(),
                metrics.clone(),
            )?),
            None => None,
        };
        for mode in ["exact", "threshold"] {
            for result in ["same", "differs"] {
                metrics.semantic_checks.with_label_values(&[mode, result]);
            }
        }
        let hot_file = warm::file_in(data_dir);
        let hot = (config.warm_top_n > 0).then(|| {
            let hot = Hot::new(config.warm_top_n.saturating_mul(4));
            if l2.is_none() {
                hot.merge(warm::read_file(&hot_file));
            }
            hot
        });
        let aliases = moka::future::Cache::builder()
            .max_capacity((config.l1_max_bytes / ALIAS_PER_BYTES).max(1024))
            .time_to_live(Duration::from_secs(config.ttl_s))
            .build();
        Ok(Cache {
            l1: l1.build(),
            aliases,
            l2,
            generations,
            flights: Mutex::default(),
            metrics,
            hot,
            hot_file,
            logs,
            semantic: Semantic::new(config.semantic_max_bytes, Duration::from_secs(config.ttl_s)),
            config,
        })
    }

    /// Counts one answered cacheable request towards the hot ones.
    pub fn record(&self, call: &Call) {
        let Some(hot) = &self.hot else { return };
        let Ok(text) = std::str::from_utf8(&call.body) else {
            return;
        };
        let (method, query) = (call.method.as_str(), call.query.as_deref());
        hot.record(
            warm::identify(method, &call.path, query, &call.body),
            || Recorded {
                method: method.to_string(),
                path: call.path.clone(),
                query: query.map(str::to_string),
                body: text.to_string(),
            },
        );
    }

    /// The key of a request's exact bytes at its collection's `generation` (from
    /// [`Cache::generation`]), under the shard set named by `placement`: a second, cheaper name for an answer already keyed
    /// by its canonical form (see [`Cache::alias`]).
    pub fn bytes_key(&self, generation: Generation, placement: u64, call: &Call) -> u128 {
        let mut h = Xxh3::new();
        h.update(b"vecgate-bytes\0");
        h.update(&placement.to_le_bytes());
        h.update(&generation.shared.to_le_bytes());
        h.update(&generation.local.to_le_bytes());
        h.update(
            &warm::identify(
                call.method.as_str(),
                &call.path,
                call.query.as_deref(),
                &call.body,
            )
            .to_le_bytes(),
        );
        h.digest128()
    }

    /// Remembers that the request whose bytes give `bytes_key` has the canonical `key`.
    pub async fn alias(&self, bytes_key: u128, key: u128) {
        self.aliases.insert(bytes_key, key).await;
    }

    /// The L1 answer for a request known by its bytes, when there is one still valid.
    pub async fn by_bytes(
        &self,
        bytes_key: u128,
        collection: &str,
        precise: bool,
    ) -> Option<Reply> {
        let span = lookup_span("l1");
        let found = async {
            let key = self.aliases.get(&bytes_key).await?;
            let entry = self.l1.get(&key).await?;
            if precise {
                let check = entry.check.as_ref()?;
                if !self.logs.still_valid(collection, check) {
                    return None;
                }
            }
            Some(entry)
        }
        .instrument(span.clone())
        .await;
        match found {
            Some(entry) => {
                self.looked_up(&span, "l1", "hit");
                Some(Reply::cached(entry.body.clone()))
            }
            // Not counted: the lookup by the request's meaning counts the miss.
            None => {
                span.record("vecgate.cache.result", "miss");
                None
            }
        }
    }

    /// Keeps the hot-query counts: added to Redis, or written to the file.
    pub async fn flush_hot(&self) {
        let Some(hot) = &self.hot else { return };
        match &self.l2 {
            Some(redis) => {
                redis
                    .add_hot(
                        hot.take_unflushed(),
                        self.config.warm_top_n.saturating_mul(4),
                    )
                    .await
            }
            None => {
                let (path, counts) = (self.hot_file.clone(), hot.all());
                let written =
                    tokio::task::spawn_blocking(move || warm::write_file(&path, &counts)).await;
                let failed = match written {
                    Ok(Ok(())) => return,
                    Ok(Err(e)) => e.to_string(),
                    Err(e) => e.to_string(),
                };
                tracing::warn!(file = %self.hot_file.display(), error = failed, "cannot keep hot-query counts");
            }
        }
    }

    /// The `warm_top_n` most asked requests: from Redis when there is one (every router's
    /// demand), else this router's own counts.
    pub async fn hottest(&self) -> Vec<Recorded> {
        let n = self.config.warm_top_n;
        if self.hot.is_none() || n == 0 {
            return Vec::new();
        }
        match &self.l2 {
            Some(redis) => redis.top_hot(n).await.into_iter().map(|(_, r)| r).collect(),
            None => self.hot.as_ref().map_or_else(Vec::new, |h| h.top(n)),
        }
    }

    /// The cache's metrics.
    pub fn metrics(&self) -> &CacheMetrics {
        &self.metrics
    }

    /// The config the cache was built from.
    pub fn config(&self) -> &CacheConfig {
        &self.config
    }

    /// The key of a request: its canonical text (`Route::cache_key`) on `collection` at its
    /// `generation` (from [`Cache::generation`]), under the shard set named by `placement`.
    pub fn key(
        &self,
        collection: &str,
        generation: Generation,
        placement: u64,
        endpoint: &str,
        canonical: &(dyn std::fmt::Debug + Sync),
    ) -> u128 {
        let mut h = Hashing(Xxh3::new());
        h.0.update(concat!("vecgate-cache/", env!("CARGO_PKG_VERSION"), "\0").as_bytes());
        h.0.update(&placement.to_le_bytes());
        h.0.update(&generation.shared.to_le_bytes());
        h.0.update(&generation.local.to_le_bytes());
        h.0.update(collection.as_bytes());
        h.0.update(b"\0");
        h.0.update(endpoint.as_bytes());
        h.0.update(b"\0");
        // Writing into a hasher cannot fail.
        let _ = write!(h, "{canonical:?}");
        h.0.digest128()
    }

    /// `collection`'s generation, read from Redis when it is not known since the last connect
    /// (or on every read, with `strict = "global"`); read it once per request.
    pub async fn generation(&self, collection: &str) -> Generation {
        let g = self.generations.get(collection);
        match &self.l2 {
            Some(redis) if !g.known || self.config.strict == Strict::Global => {
                if let Some(shared) = redis.generation(collection).await {
                    self.generations.heard(collection, shared);
                }
                self.generations.get(collection)
            }
            _ => g,
        }
    }

    /// `collection`'s generation read from Redis now, whatever `strict` says; `None` without
    /// Redis (or when it does not answer), when no other router's writes can be known.
    pub async fn generation_now(&self, collection: &str) -> Option<Generation> {
        let shared = self.l2.as_ref()?.generation(collection).await?;
        self.generations.heard(collection, shared);
        Some(self.generations.get(collection))
    }

    /// The answer for `key`: from L1, from Redis, from the same request already running, or
    /// from `search`, whose complete answers are stored in both tiers. Answers of a precise
    /// collection (`precise`) stay in L1 only and are checked against the writes since their
    /// search on every hit.
    pub async fn serve<F>(
        &self,
        key: u128,
        precise: Option<PreciseRead<'_>>,
        search: F,
    ) -> (Reply, Outcome)
    where
        F: std::future::Future<Output = Reply>,
    {
        let seen = self.logs.seen();
        let l1 = lookup_span("l1");
        if let Some(entry) = self.l1.get(&key).instrument(l1.clone()).await {
            let valid = match (&entry.check, &precise) {
                (Some(check), Some(p)) => self.logs.still_valid(p.collection, check),
                // Cached before a reload made the collection precise: nothing checks it.
                (None, Some(_)) => false,
                (_, None) => true,
            };
            if valid {
                self.looked_up(&l1, "l1", "hit");
                return (Reply::cached(entry.body.clone()), Outcome::L1);
            }
            self.l1.invalidate(&key).await;
            self.metrics
                .invalidations
                .with_label_values(&["precise"])
                .inc();
        }
        self.looked_up(&l1, "l1", "miss");
        let (done, waiting) = {
            let mut flights = self.flights.lock();
            match flights.get(&key) {
                Some((flight, began)) if precise.is_none() || *began == seen => {
                    (None, Some(flight.clone()))
                }
                _ => {
                    let (done, flight) = watch::channel(None);
                    flights.insert(key, (flight, seen));
                    (Some(done), None)
                }
            }
        };
        if let Some(mut flight) = waiting {
            self.metrics.coalesced.inc();
            if let Ok(reply) = flight.wait_for(Option::is_some).await {
                if let Some(reply) = reply.clone() {
                    return (reply, Outcome::Coalesced);
                }
            }
            // The request searching went away (its client disconnected): search here.
            return (search.await, Outcome::Miss);
        }
        let done = done.expect("one of the two is set");
        let _landed = Landed { cache: self, key };
        let l2 = self.l2.as_ref().filter(|_| precise.is_none());
        if let Some(redis) = l2 {
            let span = lookup_span("l2");
            match redis.get(key).instrument(span.clone()).await {
                Some(body) => {
                    self.looked_up(&span, "l2", "hit");
                    let entry = Entry {
                        body: body.clone(),
                        check: None,
                    };
                    self.l1.insert(key, Arc::new(entry)).await;
                    let reply = Reply::cached(body);
                    let _ = done.send(Some(reply.clone()));
                    return (reply, Outcome::L2);
                }
                None => self.looked_up(&span, "l2", "miss"),
            }
        }
        let reply = search.await;
        if reply.cache == Some(Outcome::Semantic) {
            // Another query's answer: not stored under this request's key.
            let _ = done.send(Some(reply.clone()));
            return (reply, Outcome::Semantic);
        }
        if reply.is_cacheable(self.config.max_entry_bytes) {
            let check =
                precise.map(|p| Check::new(p.asked.and_then(|a| a.validator(&reply.body)), seen));
            let entry = Entry {
                body: reply.body.clone(),
                check,
            };
            self.l1.insert(key, Arc::new(entry)).await;
            if let Some(redis) = l2 {
                redis.set(key, reply.body.clone());
            }
        }
        let _ = done.send(Some(reply.clone()));
        (reply, Outcome::Miss)
    }

    /// A vector stored in Redis by any router under `key`, when Redis is configured.
    pub(crate) async fn stored_vector(&self, key: u128) -> Option<Vec<f32>> {
        let bytes = self.l2.as_ref()?.get_vector(key).await?;
        (bytes.len() % 4 == 0 && !bytes.is_empty()).then(|| {
            bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        })
    }

    /// Stores a vector in Redis for `ttl_s` seconds (nothing without Redis).
    pub(crate) fn store_vector(&self, key: u128, vector: &[f32], ttl_s: u64) {
        if let Some(redis) = &self.l2 {
            let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
            redis.set_vector(key, bytes.into(), i64::try_from(ttl_s).unwrap_or(i64::MAX));
        }
    }

    /// The semantic cache.
    pub fn semantic(&self) -> &Semantic {
        &self.semantic
    }

    /// The write log's sequence number now (a search records it as it begins).
    pub fn seen(&self) -> u64 {
        self.logs.seen()
    }

    /// Whether a write to `collection` was logged after sequence number `seen`.
    pub fn written_since(&self, collection: &str, seen: u64) -> bool {
        self.logs.last(collection) > seen
    }

    /// Counts a semantic hit's check against a search.
    pub fn semantic_checked(&self, mode: &str, same: bool) {
        self.metrics
            .semantic_checks
            .with_label_values(&[mode, if same { "same" } else { "differs" }])
            .inc();
    }

    /// Counts a semantic lookup.
    pub fn semantic_looked_up(&self, hit: bool) {
        self.metrics
            .lookups
            .with_label_values(&["semantic", if hit { "hit" } else { "miss" }])
            .inc();
    }

    /// Brings L1's size gauges up to date (before metrics are gathered).
    pub async fn measure(&self) {
        self.l1.run_pending_tasks().await;
        self.metrics
            .l1_bytes
            .set(i64::try_from(self.l1.weighted_size()).unwrap_or(i64::MAX));
        self.metrics
            .l1_entries
            .set(i64::try_from(self.l1.entry_count()).unwrap_or(i64::MAX));
        self.metrics
            .semantic_entries
            .set(i64::try_from(self.semantic.entries().await).unwrap_or(i64::MAX));
    }

    /// Counts a lookup in `tier` and records its result on the lookup's span.
    fn looked_up(&self, span: &tracing::Span, tier: &str, result: &'static str) {
        self.metrics
            .lookups
            .with_label_values(&[tier, result])
            .inc();
        span.record("vecgate.cache.result", result);
    }

    /// A write to `collection` was answered (or failed part way): no answer cached before it
    /// may be served after it. Returns once this router's keys for the collection changed,
    /// and Redis was told (or could not be, within its deadline).
    /// In a precise collection, `write` says what the write did: logged (and sent to the
    /// routers sharing Redis), it drops only the answers it could change.
    pub async fn written(&self, collection: &str, mode: CacheMode, write: Option<Written>) {
        match (mode, write) {
            (CacheMode::TtlOnly | CacheMode::Off, _) => {}
            (CacheMode::Precise, Some(w)) if !matches!(w, Written::Unknown) => {
                let told = match &self.l2 {
                    Some(redis) => redis.tell_written(collection, &w).await,
                    None => true,
                };
                self.logs.log(collection, w);
                if !told {
                    // The other routers cannot check their answers: drop them all.
                    self.bump(collection).await;
                }
            }
            _ => {
                self.bump(collection).await;
                self.metrics
                    .invalidations
                    .with_label_values(&["generation"])
                    .inc();
            }
        }
    }

    async fn bump(&self, collection: &str) {
        let shared = match &self.l2 {
            Some(redis) => {
                let floor = l2::floor_above(self.generations.get(collection).shared);
                redis.bump(collection, floor).await
            }
            None => None,
        };
        match shared {
            Some(s) => self.generations.heard(collection, s),
            None => self.generations.update(collection, |g| g.local += 1),
        }
    }

    /// `POST /admin/cache/purge`: drops every answer of `collection` (all collections when
    /// `None`), here and, through Redis, on the routers sharing it.
    pub async fn purge(&self, collection: Option<&str>) {
        match collection {
            Some(c) => self.bump(c).await,
            None => {
                for c in self.generations.collections() {
                    self.bump(&c).await;
                }
                self.l1.invalidate_all();
                self.semantic.clear();
            }
        }
        self.metrics
            .invalidations
            .with_label_values(&["purge"])
            .inc();
    }

    /// A reload changed the shard set: answers computed over the old one are dropped.
    pub fn placement_changed(&self) {
        self.l1.invalidate_all();
        self.semantic.clear();
        self.metrics
            .invalidations
            .with_label_values(&["topology"])
            .inc();
    }

    /// Keeps the hot-query counts and stops the Redis connections.
    pub async fn close(&self) {
        self.flush_hot().await;
        if let Some(redis) = &self.l2 {
            redis.close().await;
        }
    }
}

/// Clears a key's single-flight slot however its search ends (a dropped request included).
struct Landed<'a> {
    cache: &'a Cache,
    key: u128,
}

impl Drop for Landed<'_> {
    fn drop(&mut self) {
        self.cache.flights.lock().remove(&self.key);
    }
}

/// Streams formatted text into the hasher.
struct Hashing(Xxh3);

impl std::fmt::Write for Hashing {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.update(s.as_bytes());
        Ok(())
    }
}
