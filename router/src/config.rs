//! The router's TOML config: plain data, defaults in one place, validated as a whole.
//!
//! [`load`] reports every problem it finds at once, one per line, each with the file, the line
//! and the field path (`cluster.toml:12: shards[2].replicas[0].url: ...`):
//!
//! - every TOML syntax error (the parser recovers after each);
//! - when the syntax is sound, every unknown key and value of the wrong type, section by
//!   section (each section and each `[[shards]]` entry is read on its own, and a bad key is set
//!   aside so the keys after it are checked too);
//! - every invalid value in the sections that could be read (addresses, URLs, duplicate names,
//!   limits), and the checks across shards.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use shardd::telemetry::{traces_url, LogFormat, OtlpProtocol, Settings};
use toml::de::{DeTable, DeValue, ValueDeserializer};
use toml::Spanned;

/// A config that could not be read, parsed or validated.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    /// The file.
    pub file: PathBuf,
    /// Every problem found.
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = self.file.display();
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            match p.line {
                Some(line) => write!(f, "{file}:{line}: {p}")?,
                None => write!(f, "{file}: {p}")?,
            }
        }
        Ok(())
    }
}

/// One problem of a config: where it is and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The field path (`shards[2].replicas[0].url`), empty for a syntax error.
    pub field: String,
    /// The 1-based line, when the problem is at a place in the file.
    pub line: Option<usize>,
    /// What is wrong and, where it helps, what to write instead.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

/// The whole config file.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Listeners, region and data directory.
    #[serde(default)]
    pub server: ServerConfig,
    /// Replica choice, write consistency and deadlines.
    #[serde(default)]
    pub routing: RoutingConfig,
    /// The shards; each owns a part of every collection.
    #[serde(default)]
    pub shards: Vec<ShardConfig>,
    /// The result cache; absent = no cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheConfig>,
    /// Several routers over the same shards, coordinated through etcd; absent = one router.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterConfig>,
    /// Traces and logs.
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    /// The embedder of collections that name none of their own; absent = none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding: Option<EmbeddingConfig>,
    /// Per-collection settings.
    #[serde(default)]
    pub collections: BTreeMap<String, CollectionConfig>,
}

/// `[telemetry]`: spans sent to an OpenTelemetry collector, the log format and the access log.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// The collector (`http://host:4318`, or a full URL ending in `/v1/traces`), spoken to in
    /// OTLP over HTTP; absent = no spans exported.
    pub otlp_endpoint: Option<String>,
    /// `http/protobuf` or `http/json`.
    pub otlp_protocol: OtlpProtocol,
    /// The share of traces started here (no caller's sampled `traceparent`) that are recorded.
    pub sample_ratio: f64,
    /// Deadline of one span export call, in milliseconds.
    pub export_timeout_ms: u64,
    /// `text`, or `json` lines carrying the trace id of the request they are about.
    pub log_format: LogFormat,
    /// One log line per answered request (method, route, status, time, cache, shards).
    pub access_log: bool,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            otlp_endpoint: None,
            otlp_protocol: OtlpProtocol::default(),
            sample_ratio: 1.0,
            export_timeout_ms: 5000,
            log_format: LogFormat::default(),
            access_log: false,
        }
    }
}

impl TelemetryConfig {
    /// The logging and export pipeline these settings install at start.
    pub fn settings(&self) -> Settings {
        Settings {
            otlp_endpoint: self.otlp_endpoint.clone(),
            protocol: self.otlp_protocol,
            sample_ratio: self.sample_ratio,
            export_timeout: std::time::Duration::from_millis(self.export_timeout_ms),
            log_format: self.log_format,
            ..Settings::logs_only("vecgate")
        }
    }

    /// Whether `other` installs the same pipeline (only `access_log` changes while running).
    pub fn same_pipeline(&self, other: &TelemetryConfig) -> bool {
        TelemetryConfig {
            access_log: other.access_log,
            ..self.clone()
        } == *other
    }
}

/// `[cluster]`: routers sharing shards keep where points are placed, the running move's phase
/// and the lease of the router that runs it in etcd.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// `http://host:port` of etcd members (their v3 JSON API), tried in order.
    pub etcd_endpoints: Vec<String>,
    /// The key prefix; routers over the same shards use the same one.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// Seconds the lease of the router running a move outlives its last keep-alive: how soon
    /// another router takes over a move whose router died.
    #[serde(default = "default_lease_ttl")]
    pub lease_ttl_s: u64,
}

fn default_prefix() -> String {
    "/vecgate".into()
}

fn default_lease_ttl() -> u64 {
    5
}

/// `[cache]`: the result cache, in process (L1) and optionally in Redis (L2).
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Bytes of answers the in-process cache holds at most.
    pub l1_max_bytes: u64,
    /// Seconds an answer is kept (both tiers, unless `redis_ttl_s` says otherwise).
    pub ttl_s: u64,
    /// Seconds an answer nobody asked for is kept in process; 0 = only `ttl_s`.
    pub tti_s: u64,
    /// `redis://`, `rediss://`, `redis-sentinel://` or `redis-cluster://` URL; absent = L1 only.
    pub redis_url: Option<String>,
    /// Seconds an answer is kept in Redis; 0 = `ttl_s`.
    pub redis_ttl_s: u64,
    /// Deadline of one Redis command, in milliseconds.
    pub redis_timeout_ms: u64,
    /// Redis connections in the pool.
    pub redis_pool: usize,
    /// Answers larger than this many bytes are not cached.
    pub max_entry_bytes: usize,
    /// How fresh a hit must be across routers sharing Redis.
    pub strict: Strict,
    /// How many of the most asked requests are replayed on start and after a reload; 0 = no
    /// counting and no warm-up.
    pub warm_top_n: usize,
    /// Requests per second a warm-up replays at most.
    pub warm_rate: u32,
    /// Bytes the semantic cache (searches kept with their points' vectors) holds at most.
    pub semantic_max_bytes: u64,
}

/// How fresh a cache hit is across routers sharing Redis.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Strict {
    /// No answer older than a write this router acknowledged; other routers' writes arrive
    /// by pub/sub, milliseconds later.
    #[default]
    Router,
    /// Every cached read first reads its collection's generation from Redis (one round trip),
    /// so no router serves an answer older than any acknowledged write.
    Global,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            l1_max_bytes: 256 << 20,
            ttl_s: 300,
            tti_s: 0,
            redis_url: None,
            redis_ttl_s: 0,
            redis_timeout_ms: 50,
            redis_pool: 4,
            max_entry_bytes: 1 << 20,
            strict: Strict::Router,
            warm_top_n: 1000,
            warm_rate: 200,
            semantic_max_bytes: 64 << 20,
        }
    }
}

/// `[collections.NAME]`.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CollectionConfig {
    /// `[collections.NAME.cache]`.
    pub cache: CollectionCache,
    /// `[collections.NAME.embedding]`: this collection's embedder, instead of `[embedding]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embedding: Option<EmbeddingConfig>,
}

/// `[embedding]` and `[collections.NAME.embedding]`: how text in queries and points becomes
/// dense vectors.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingConfig {
    /// Who computes the vectors.
    pub provider: EmbeddingProvider,
    /// `openai`: the API's base URL with its version (`http://127.0.0.1:8080/v1`), as OpenAI's
    /// own clients take it; vecgate posts to its `/embeddings`.
    #[serde(default)]
    pub url: String,
    /// The model: sent to the provider, and the name a `Document` may give (`builtin`:
    /// `sentence-transformers/all-MiniLM-L6-v2`, the default).
    #[serde(default)]
    pub model: String,
    /// `builtin`: the model's directory in the Hugging Face layout.
    #[serde(default = "default_model_dir")]
    pub model_dir: PathBuf,
    /// `openai`: the environment variable holding the API key (sent as a bearer token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_env: Option<String>,
    /// Deadline of one call to the provider, in milliseconds.
    #[serde(default = "default_embed_timeout")]
    pub timeout_ms: u64,
    /// Calls retried after a 429, a 5xx or a transport failure (waiting as `retry-after` says,
    /// else 100 ms doubling), within the request's deadline.
    #[serde(default = "default_embed_retries")]
    pub retries: u32,
    /// Texts sent in one call at most.
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
    /// How long the first text of a batch waits for others to join it, in milliseconds.
    #[serde(default = "default_max_wait")]
    pub max_wait_ms: u64,
    /// Bytes of vectors the embedding cache keeps (0 = none), keyed by model and text.
    #[serde(default = "default_embed_cache")]
    pub cache_max_bytes: u64,
    /// Seconds a vector is kept in Redis, shared by the routers (with `cache.redis_url`).
    #[serde(default = "default_embed_redis_ttl")]
    pub redis_ttl_s: u64,
}

fn default_embed_redis_ttl() -> u64 {
    7 * 24 * 3600
}

fn default_model_dir() -> PathBuf {
    PathBuf::from("./models/all-MiniLM-L6-v2")
}

fn default_embed_timeout() -> u64 {
    10_000
}

fn default_embed_retries() -> u32 {
    3
}

fn default_max_batch() -> usize {
    32
}

fn default_max_wait() -> u64 {
    2
}

fn default_embed_cache() -> u64 {
    64 << 20
}

/// Who computes an embedder's vectors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EmbeddingProvider {
    /// all-MiniLM-L6-v2 run in process (`model_dir`).
    Builtin,
    /// An OpenAI-compatible `/v1/embeddings` (OpenAI's API behind a local proxy, TEI, vLLM,
    /// Ollama).
    Openai,
}

impl EmbeddingConfig {
    /// The model's name.
    pub fn model(&self) -> &str {
        match (self.provider, self.model.as_str()) {
            (EmbeddingProvider::Builtin, "") => crate::embed::minilm::MODEL,
            (_, model) => model,
        }
    }

    /// Every problem of this section, each with its field under `at`.
    fn problems(&self, at: &str) -> Vec<(String, String)> {
        if self.provider == EmbeddingProvider::Builtin {
            return self.builtin_problems(at);
        }
        let mut out = Vec::new();
        match self.url.strip_prefix("http://") {
            Some(rest) if !rest.is_empty() && !rest.starts_with('/') => {}
            _ if self.url.starts_with("https://") => out.push((
                format!("{at}.url"),
                format!(
                    "`{}`: https is not spoken yet; reach the API through a local http proxy or gateway",
                    self.url
                ),
            )),
            _ => out.push((
                format!("{at}.url"),
                format!("`{}` must be http://host:port/path", self.url),
            )),
        }
        if self.model.trim().is_empty() {
            out.push((format!("{at}.model"), "must name the model".into()));
        }
        if let Some(var) = &self.api_key_env {
            if std::env::var_os(var).is_none() {
                out.push((
                    format!("{at}.api_key_env"),
                    format!("the environment variable `{var}` is not set"),
                ));
            }
        }
        out.extend(self.batching_problems(at));
        out
    }

    fn builtin_problems(&self, at: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let model = crate::embed::minilm::MODEL;
        if !self.model().eq_ignore_ascii_case(model) {
            out.push((
                format!("{at}.model"),
                format!("the built-in embedder runs `{model}`, not `{}`", self.model),
            ));
        }
        if !self.url.is_empty() {
            out.push((format!("{at}.url"), "is for provider `openai`".into()));
        }
        let missing: Vec<&str> = crate::embed::minilm::FILES
            .into_iter()
            .filter(|f| !self.model_dir.join(f).is_file())
            .collect();
        if !missing.is_empty() {
            out.push((
                format!("{at}.model_dir"),
                format!(
                    "{} lacks {} (scripts/fetch-model.sh {0} fetches the model)",
                    self.model_dir.display(),
                    missing.join(", ")
                ),
            ));
        }
        out.extend(self.batching_problems(at));
        out
    }

    fn batching_problems(&self, at: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let ranges: [(&str, u64, u64, u64); 4] = [
            ("timeout_ms", self.timeout_ms, 100, 120_000),
            ("retries", self.retries.into(), 0, 10),
            ("max_batch", self.max_batch as u64, 1, 2048),
            ("max_wait_ms", self.max_wait_ms, 0, 1000),
        ];
        for (field, value, low, high) in ranges {
            if !(low..=high).contains(&value) {
                out.push((
                    format!("{at}.{field}"),
                    format!("must be between {low} and {high}, got {value}"),
                ));
            }
        }
        out
    }
}

/// `[collections.NAME.cache]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CollectionCache {
    /// How cached answers of this collection follow its writes.
    pub mode: CacheMode,
    /// Whether a search may be answered from a cached search for a nearby query vector.
    pub semantic: SemanticMode,
    /// `threshold` mode: the cosine similarity between two query vectors above which the
    /// cached answer of one serves the other.
    pub semantic_threshold: f32,
    /// Points a cached search keeps beyond the `limit` asked (`m` in `k + m`): the margin that
    /// lets a nearby query with the same or a smaller limit be answered.
    pub semantic_extra: usize,
    /// Share of semantic hits searched anyway and compared with what the hit would have served
    /// (`vecgate_cache_semantic_checks_total`): the observed false-hit rate.
    pub semantic_verify_ratio: f64,
}

impl Default for CollectionCache {
    fn default() -> Self {
        CollectionCache {
            mode: CacheMode::default(),
            semantic: SemanticMode::Off,
            semantic_threshold: 0.95,
            semantic_extra: 5,
            semantic_verify_ratio: 0.01,
        }
    }
}

/// How a search may be answered from a cached search for another query vector.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SemanticMode {
    /// Only the same request is answered from the cache.
    #[default]
    Off,
    /// Only when the cached answer provably holds the same top `limit` points: its gap between
    /// the `limit`-th and the next score exceeds twice the distance between the two queries.
    Exact,
    /// When the two query vectors' cosine similarity is at least `semantic_threshold`
    /// (GPTCache's rule: some answers served differ from a search's).
    Threshold,
}

/// How a collection's cached answers follow its writes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CacheMode {
    /// Every write drops every cached answer of the collection, on every router sharing Redis.
    #[default]
    Generation,
    /// A write drops only the answers it could change (a written or deleted id among their
    /// points, or a written point that would enter them); answers stay in L1 only.
    Precise,
    /// Writes drop nothing; answers live until `ttl_s` (for collections that accept staleness).
    TtlOnly,
    /// The collection's answers are not cached.
    Off,
}

/// `[server]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Client API address.
    pub listen: String,
    /// `/metrics` and `/admin/*` address.
    pub admin: String,
    /// This router's region, for the geo policy.
    pub region: String,
    /// Where built-in shards keep their data.
    pub data_dir: PathBuf,
    /// Seconds between snapshots of built-in shards' changed collections; 0: only at shutdown.
    pub snapshot_interval_s: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:6333".into(),
            admin: "127.0.0.1:9901".into(),
            region: "local".into(),
            data_dir: PathBuf::from("./data"),
            snapshot_interval_s: 60,
        }
    }
}

/// How a read picks one replica of a shard.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadPolicy {
    /// Fewest requests in flight (power of two choices).
    #[default]
    LeastConn,
    /// Weighted round robin.
    RoundRobin,
    /// Replicas in the caller's region first, others when none there is healthy.
    Geo,
}

/// How many replicas must acknowledge a write.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WriteConsistency {
    /// One replica.
    One,
    /// A majority of the shard's replicas.
    #[default]
    Quorum,
    /// Every replica.
    All,
}

impl WriteConsistency {
    /// Acknowledgements needed out of `replicas`.
    pub fn required(self, replicas: usize) -> usize {
        match self {
            WriteConsistency::One => 1.min(replicas),
            WriteConsistency::Quorum => replicas / 2 + 1,
            WriteConsistency::All => replicas,
        }
    }
}

/// `[routing]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoutingConfig {
    /// Default replica choice for reads.
    pub read_policy: ReadPolicy,
    /// Acknowledgements a write needs.
    pub write_consistency: WriteConsistency,
    /// Deadline for one request end to end, in milliseconds.
    pub timeout_ms: u64,
    /// Answer with the shards that did respond (marked `partial`) instead of failing.
    pub allow_partial: bool,
    /// Seconds between anti-entropy rounds, which compare each shard's replicas and repair
    /// where they differ; 0: only on `POST /admin/repair`.
    pub repair_interval_s: u64,
    /// Per-collection overrides of the read policy.
    pub collections: BTreeMap<String, CollectionRouting>,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        RoutingConfig {
            read_policy: ReadPolicy::default(),
            write_consistency: WriteConsistency::default(),
            timeout_ms: 2000,
            allow_partial: false,
            repair_interval_s: 60,
            collections: BTreeMap::new(),
        }
    }
}

/// `[routing.collections.NAME]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CollectionRouting {
    /// Replica choice for this collection's reads.
    pub read_policy: ReadPolicy,
}

/// `[[shards]]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ShardConfig {
    /// A stable id: point placement depends on it.
    pub name: String,
    /// An in-process shard (the shardd library) instead of remote replicas.
    #[serde(default)]
    pub builtin: bool,
    /// The shard's replicas.
    #[serde(default)]
    pub replicas: Vec<ReplicaConfig>,
}

/// One replica of a shard.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicaConfig {
    /// `http://host:port` of a shardd.
    pub url: String,
    /// The replica's region, for the geo policy.
    #[serde(default)]
    pub region: Option<String>,
    /// Share of round-robin traffic.
    #[serde(default = "one")]
    pub weight: u32,
}

fn one() -> u32 {
    1
}

impl Config {
    /// The config used without `--config`: one built-in shard and the default server settings.
    pub fn embedded() -> Config {
        Config {
            shards: vec![ShardConfig {
                name: "local".into(),
                builtin: true,
                replicas: Vec::new(),
            }],
            ..Config::default()
        }
    }

    /// The embedder of `collection`: its own, else `[embedding]`.
    pub fn embedding_for(&self, collection: &str) -> Option<&EmbeddingConfig> {
        self.collections
            .get(collection)
            .and_then(|c| c.embedding.as_ref())
            .or(self.embedding.as_ref())
    }

    /// The config as `/admin/config` shows it: credentials in URLs replaced by `***`.
    pub fn redacted(&self) -> Config {
        let mut c = self.clone();
        for shard in &mut c.shards {
            for r in &mut shard.replicas {
                r.url = redact_url(&r.url);
            }
        }
        if let Some(cache) = &mut c.cache {
            cache.redis_url = cache.redis_url.as_deref().map(redact_url);
        }
        c
    }

    /// Every invalid value, as (field path, message).
    fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (field, addr) in [
            ("server.listen", &self.server.listen),
            ("server.admin", &self.server.admin),
        ] {
            if addr.parse::<SocketAddr>().is_err() {
                out.push((
                    field.to_string(),
                    format!("`{addr}` is not an IP:port address"),
                ));
            }
        }
        if self.server.listen == self.server.admin && !self.server.listen.ends_with(":0") {
            out.push((
                "server.admin".into(),
                "must differ from server.listen".into(),
            ));
        }
        if !(1..=600_000).contains(&self.routing.timeout_ms) {
            out.push((
                "routing.timeout_ms".into(),
                format!(
                    "must be between 1 and 600000, got {}",
                    self.routing.timeout_ms
                ),
            ));
        }
        if let Some(cache) = &self.cache {
            if cache.l1_max_bytes == 0 {
                out.push(("cache.l1_max_bytes".into(), "must be at least 1".into()));
            }
            if cache.ttl_s == 0 {
                out.push(("cache.ttl_s".into(), "must be at least 1".into()));
            }
            if !(1..=60_000).contains(&cache.redis_timeout_ms) {
                out.push((
                    "cache.redis_timeout_ms".into(),
                    format!(
                        "must be between 1 and 60000, got {}",
                        cache.redis_timeout_ms
                    ),
                ));
            }
            if !(1..=100_000).contains(&cache.warm_rate) {
                out.push((
                    "cache.warm_rate".into(),
                    format!("must be between 1 and 100000, got {}", cache.warm_rate),
                ));
            }
            if cache.warm_top_n > 1_000_000 {
                out.push((
                    "cache.warm_top_n".into(),
                    format!("must be at most 1000000, got {}", cache.warm_top_n),
                ));
            }
            if !(1..=256).contains(&cache.redis_pool) {
                out.push((
                    "cache.redis_pool".into(),
                    format!("must be between 1 and 256, got {}", cache.redis_pool),
                ));
            }
            if let Some(url) = &cache.redis_url {
                if let Err(e) = fred::types::config::Config::from_url(url) {
                    out.push((
                        "cache.redis_url".into(),
                        format!("`{}` is not a Redis URL: {e}", redact_url(url)),
                    ));
                }
            }
        }
        let global = self
            .cache
            .as_ref()
            .is_some_and(|c| c.strict == Strict::Global);
        if let Some(e) = &self.embedding {
            out.extend(e.problems("embedding"));
        }
        for (name, c) in &self.collections {
            if let Some(e) = &c.embedding {
                out.extend(e.problems(&format!("collections.{name}.embedding")));
            }
            let at = |key: &str| format!("collections.{name}.cache.{key}");
            let t = c.cache.semantic_threshold;
            if !(t > 0.0 && t <= 1.0) {
                out.push((
                    at("semantic_threshold"),
                    format!("must be in (0, 1], got {t}"),
                ));
            }
            if !(1..=1000).contains(&c.cache.semantic_extra) {
                out.push((
                    at("semantic_extra"),
                    format!("must be between 1 and 1000, got {}", c.cache.semantic_extra),
                ));
            }
            let r = c.cache.semantic_verify_ratio;
            if !(0.0..=1.0).contains(&r) {
                out.push((
                    at("semantic_verify_ratio"),
                    format!("must be in [0, 1], got {r}"),
                ));
            }
            if c.cache.mode == CacheMode::Precise && global {
                out.push((
                    format!("collections.{name}.cache.mode"),
                    "`precise` needs cache.strict = \"router\" (its writes reach other routers by message)".into(),
                ));
            }
        }
        if let Some(cluster) = &self.cluster {
            if cluster.etcd_endpoints.is_empty() {
                out.push((
                    "cluster.etcd_endpoints".into(),
                    "needs at least one etcd endpoint".into(),
                ));
            }
            for (i, url) in cluster.etcd_endpoints.iter().enumerate() {
                if let Err(why) = check_url(url) {
                    out.push((
                        format!("cluster.etcd_endpoints[{i}]"),
                        format!("`{url}` {why}"),
                    ));
                }
            }
            if !cluster.prefix.starts_with('/') || cluster.prefix.len() < 2 {
                out.push((
                    "cluster.prefix".into(),
                    format!("`{}` must start with / and name something", cluster.prefix),
                ));
            }
            if !(2..=60).contains(&cluster.lease_ttl_s) {
                out.push((
                    "cluster.lease_ttl_s".into(),
                    format!("must be between 2 and 60, got {}", cluster.lease_ttl_s),
                ));
            }
        }
        let t = &self.telemetry;
        if let Some(Err(why)) = t.otlp_endpoint.as_deref().map(traces_url) {
            out.push(("telemetry.otlp_endpoint".into(), why));
        }
        if !(0.0..=1.0).contains(&t.sample_ratio) {
            out.push((
                "telemetry.sample_ratio".into(),
                format!("must be between 0 and 1, got {}", t.sample_ratio),
            ));
        }
        if !(100..=60_000).contains(&t.export_timeout_ms) {
            out.push((
                "telemetry.export_timeout_ms".into(),
                format!("must be between 100 and 60000, got {}", t.export_timeout_ms),
            ));
        }
        let mut names = HashSet::new();
        let mut urls = HashSet::new();
        for (i, shard) in self.shards.iter().enumerate() {
            let at = format!("shards[{i}]");
            let name = &shard.name;
            if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
                out.push((
                    format!("{at}.name"),
                    format!("`{name}` must be non-empty without spaces"),
                ));
            } else if !names.insert(name.clone()) {
                out.push((
                    format!("{at}.name"),
                    format!("`{name}` is used by another shard"),
                ));
            }
            match (shard.builtin, shard.replicas.is_empty()) {
                (true, false) => out.push((
                    format!("{at}.replicas"),
                    "a builtin shard has no replicas".into(),
                )),
                (false, true) => out.push((
                    format!("{at}.replicas"),
                    "a remote shard needs at least one replica (or `builtin = true`)".into(),
                )),
                _ => {}
            }
            for (j, r) in shard.replicas.iter().enumerate() {
                let at = format!("{at}.replicas[{j}]");
                let url = &r.url;
                if let Err(why) = check_url(url) {
                    out.push((format!("{at}.url"), format!("`{url}` {why}")));
                } else if !urls.insert(url.trim_end_matches('/').to_string()) {
                    out.push((format!("{at}.url"), format!("`{url}` is listed twice")));
                }
                if r.weight == 0 {
                    out.push((format!("{at}.weight"), "must be at least 1".into()));
                }
            }
        }
        out
    }
}

/// Accepts `http://host:port` (an optional trailing `/`); shardd speaks plain HTTP.
fn check_url(url: &str) -> Result<(), &'static str> {
    let rest = url
        .strip_prefix("http://")
        .ok_or("must start with http://")?;
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.contains('/') || authority.contains('@') {
        return Err("must be http://host:port without a path or credentials");
    }
    let (host, port) = authority
        .rsplit_once(':')
        .ok_or("needs an explicit :port")?;
    if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
        return Err("needs a host and a port between 1 and 65535");
    }
    Ok(())
}

/// Replaces the password (or lone user) in `scheme://user:password@host` with `***`.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s + 3 => {
            let userinfo = &url[s + 3..at];
            let user = userinfo.split_once(':').map_or("", |(u, _)| u);
            format!(
                "{}{user}{}***{}",
                &url[..s + 3],
                if user.is_empty() { "" } else { ":" },
                &url[at..]
            )
        }
        _ => url.to_string(),
    }
}

/// Parses and validates a config file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let fail = |problems: Vec<Problem>| ConfigError {
        file: path.to_path_buf(),
        problems,
    };
    let source = std::fs::read_to_string(path).map_err(|e| {
        fail(vec![Problem {
            field: String::new(),
            line: None,
            message: format!("cannot read: {e}"),
        }])
    })?;
    parse(&source).map_err(fail)
}

/// The sections of the file, for the "unknown section" message.
const SECTIONS: &[&str] = &[
    "server",
    "routing",
    "shards",
    "cache",
    "cluster",
    "telemetry",
    "embedding",
    "collections",
];

/// Parses and validates config text.
pub fn parse(source: &str) -> Result<Config, Vec<Problem>> {
    let (doc, syntax) = DeTable::parse_recoverable(source);
    let lines = Lines(source);
    if !syntax.is_empty() {
        return Err(syntax
            .iter()
            .map(|e| Problem {
                field: String::new(),
                line: e.span().map(|s| lines.of(s.start)),
                message: e.message().trim().to_string(),
            })
            .collect());
    }
    let doc = doc.into_inner();
    let mut problems = Vec::new();
    let mut config = Config::default();
    let mut complete = true;
    for (key, value) in doc.iter() {
        match key.get_ref().as_ref() {
            "server" => match read(value, "server", &lines, &mut problems) {
                Some(s) => config.server = s,
                None => complete = false,
            },
            "routing" => match read(value, "routing", &lines, &mut problems) {
                Some(r) => config.routing = r,
                None => complete = false,
            },
            "cache" => match read(value, "cache", &lines, &mut problems) {
                Some(c) => config.cache = Some(c),
                None => complete = false,
            },
            "cluster" => match read(value, "cluster", &lines, &mut problems) {
                Some(c) => config.cluster = Some(c),
                None => complete = false,
            },
            "embedding" => match read(value, "embedding", &lines, &mut problems) {
                Some(e) => config.embedding = Some(e),
                None => complete = false,
            },
            "telemetry" => match read(value, "telemetry", &lines, &mut problems) {
                Some(t) => config.telemetry = t,
                None => complete = false,
            },
            "collections" => match read(value, "collections", &lines, &mut problems) {
                Some(c) => config.collections = c,
                None => complete = false,
            },
            "shards" => match value.get_ref() {
                DeValue::Array(items) => {
                    for (i, item) in items.iter().enumerate() {
                        match read(item, &format!("shards[{i}]"), &lines, &mut problems) {
                            Some(s) => config.shards.push(s),
                            None => complete = false,
                        }
                    }
                }
                _ => {
                    complete = false;
                    problems.push(Problem {
                        field: "shards".into(),
                        line: Some(lines.of(value.span().start)),
                        message: "expected [[shards]] entries".into(),
                    });
                }
            },
            other => problems.push(Problem {
                field: other.to_string(),
                line: Some(lines.of(key.span().start)),
                message: format!("unknown section; expected one of {}", SECTIONS.join(", ")),
            }),
        }
    }
    if config.shards.is_empty() && complete && problems.is_empty() {
        problems.push(Problem {
            field: "shards".into(),
            line: None,
            message: "at least one [[shards]] entry is needed".into(),
        });
    }
    let unread: Vec<String> = problems.iter().map(|p| p.field.clone()).collect();
    let within = |field: &str, of: &str| {
        field
            .strip_prefix(of)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
    };
    for (field, message) in config.problems() {
        if unread
            .iter()
            .any(|u| within(&field, u) || within(u, &field))
        {
            continue;
        }
        let line = line_of_field(&doc, &field).map(|s| lines.of(s.start));
        problems.push(Problem {
            field,
            line,
            message,
        });
    }
    problems.sort_by_key(|p| p.line.unwrap_or(usize::MAX));
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(problems)
    }
}

/// Line numbers of byte offsets.
struct Lines<'a>(&'a str);

impl Lines<'_> {
    fn of(&self, offset: usize) -> usize {
        self.0[..offset.min(self.0.len())].matches('\n').count() + 1
    }
}

/// The span of the deepest existing value along `field` (`shards[1].replicas[0].url`).
fn line_of_field(doc: &DeTable<'_>, field: &str) -> Option<Range<usize>> {
    let mut span = None;
    let mut table = Some(doc);
    for part in field.split('.') {
        let (key, index) = match part.split_once('[') {
            Some((k, i)) => (k, i.trim_end_matches(']').parse::<usize>().ok()),
            None => (part, None),
        };
        let Some(mut v) = table.and_then(|t| t.get(key)) else {
            break;
        };
        if let (Some(i), DeValue::Array(items)) = (index, v.get_ref()) {
            match items.get(i) {
                Some(item) => v = item,
                None => {
                    span = Some(v.span());
                    break;
                }
            }
        }
        span = Some(v.span());
        table = v.get_ref().as_table();
    }
    span
}

/// The path of the deepest value in `value` whose span holds `offset`, relative to `value`.
fn path_at(value: &DeValue<'_>, offset: usize) -> Option<String> {
    let inside = |s: Range<usize>| s.start <= offset && offset < s.end.max(s.start + 1);
    match value {
        DeValue::Table(t) => t.iter().find_map(|(k, v)| {
            let key = k.get_ref().to_string();
            if inside(k.span()) {
                return Some(key);
            }
            inside(v.span()).then(|| match path_at(v.get_ref(), offset) {
                Some(rest) if rest.starts_with('[') => format!("{key}{rest}"),
                Some(rest) => format!("{key}.{rest}"),
                None => key,
            })
        }),
        DeValue::Array(items) => items.iter().enumerate().find_map(|(i, v)| {
            inside(v.span()).then(|| match path_at(v.get_ref(), offset) {
                Some(rest) => format!("[{i}].{rest}"),
                None => format!("[{i}]"),
            })
        }),
        _ => None,
    }
}

/// Reads one section (or `[[shards]]` entry) into its type. On failure every bad key is
/// reported: the key at fault is set aside and the rest read again, until nothing else fails;
/// what remains is returned, so its values are validated too.
fn read<T: DeserializeOwned>(
    value: &Spanned<DeValue<'_>>,
    at: &str,
    lines: &Lines<'_>,
    problems: &mut Vec<Problem>,
) -> Option<T> {
    let mut value = value.clone();
    let mut set_aside: Vec<String> = Vec::new();
    loop {
        let err = match T::deserialize(ValueDeserializer::from(value.clone())) {
            Ok(t) => return Some(t),
            Err(e) => e,
        };
        let message = err.message().trim().to_string();
        if set_aside
            .iter()
            .any(|k| message == format!("missing field `{k}`"))
        {
            return None;
        }
        let offset = err.span().map(|s| s.start);
        let inner = offset.and_then(|o| path_at(value.get_ref(), o));
        problems.push(Problem {
            field: match &inner {
                Some(p) => format!("{at}.{p}"),
                None => at.to_string(),
            },
            line: offset.map(|o| lines.of(o)),
            message,
        });
        let top = inner.map(|p| p.split(['.', '[']).next().unwrap_or_default().to_string());
        let (Some(top), DeValue::Table(table)) = (top, value.get_mut()) else {
            return None;
        };
        table.remove(top.as_str())?;
        set_aside.push(top);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLUSTER: &str = r#"
[server]
listen = "127.0.0.1:6333"
admin = "127.0.0.1:9901"
region = "eu-west"

[routing]
read_policy = "geo"
write_consistency = "quorum"
timeout_ms = 1500

[routing.collections.docs]
read_policy = "round_robin"

[[shards]]
name = "s0"
replicas = [
  { url = "http://user:hunter2@127.0.0.1:7001", region = "eu-west", weight = 2 },
  { url = "http://127.0.0.1:7002", region = "us-east" },
]

[[shards]]
name = "local"
builtin = true
"#;

    fn problems(text: &str) -> Vec<String> {
        parse(text)
            .unwrap_err()
            .iter()
            .map(|p| format!("{}: {p}", p.line.unwrap_or(0)))
            .collect()
    }

    #[test]
    fn a_full_config_parses_with_defaults_filled() {
        let c = parse(&CLUSTER.replace("user:hunter2@", "")).unwrap();
        assert_eq!(c.routing.read_policy, ReadPolicy::Geo);
        assert_eq!(
            c.routing.collections["docs"].read_policy,
            ReadPolicy::RoundRobin
        );
        assert_eq!(c.shards[0].replicas[1].weight, 1);
        assert!(c.shards[1].builtin);
        assert_eq!(c.server.data_dir, PathBuf::from("./data"));
    }

    #[test]
    fn every_invalid_value_is_reported_on_its_own_line() {
        let bad = r#"
[server]
listen = "localhost"

[routing]
timeout_ms = 0

[[shards]]
name = "s0"
replicas = [{ url = "https://x:1" }, { url = "http://a:7001", weight = 0 }]

[[shards]]
name = "s0"
builtin = true
replicas = [{ url = "http://a:7001" }]
"#;
        assert_eq!(
            problems(bad),
            vec![
                "3: server.listen: `localhost` is not an IP:port address",
                "6: routing.timeout_ms: must be between 1 and 600000, got 0",
                "10: shards[0].replicas[0].url: `https://x:1` must start with http://",
                "10: shards[0].replicas[1].weight: must be at least 1",
                "13: shards[1].name: `s0` is used by another shard",
                "15: shards[1].replicas: a builtin shard has no replicas",
                "15: shards[1].replicas[0].url: `http://a:7001` is listed twice",
            ]
        );
    }

    #[test]
    fn a_cluster_section_is_checked_whole() {
        let bad = "[[shards]]\nname = \"a\"\nbuiltin = true\n\n[cluster]\netcd_endpoints = [\"http://127.0.0.1:2379\", \"etcd:2379\"]\nprefix = \"vecgate\"\nlease_ttl_s = 1\n";
        let all = problems(bad);
        assert_eq!(
            all,
            vec![
                "6: cluster.etcd_endpoints[1]: `etcd:2379` must start with http://",
                "7: cluster.prefix: `vecgate` must start with / and name something",
                "8: cluster.lease_ttl_s: must be between 2 and 60, got 1",
            ]
        );
        let good = parse("[[shards]]\nname = \"a\"\nbuiltin = true\n\n[cluster]\netcd_endpoints = [\"http://127.0.0.1:2379\"]\n").unwrap();
        let cluster = good.cluster.unwrap();
        assert_eq!(
            (cluster.prefix.as_str(), cluster.lease_ttl_s),
            ("/vecgate", 5)
        );
    }

    #[test]
    fn a_telemetry_section_is_checked_whole() {
        let bad = "[[shards]]\nname = \"a\"\nbuiltin = true\n\n[telemetry]\notlp_endpoint = \"https://collector:4318\"\nsample_ratio = 1.5\nexport_timeout_ms = 10\n";
        assert_eq!(
            problems(bad),
            vec![
                "6: telemetry.otlp_endpoint: `https://collector:4318` must be http://host:port (OTLP over HTTP; a collector next to vecgate forwards over TLS)",
                "7: telemetry.sample_ratio: must be between 0 and 1, got 1.5",
                "8: telemetry.export_timeout_ms: must be between 100 and 60000, got 10",
            ]
        );
        let wrong = "[[shards]]\nname = \"a\"\nbuiltin = true\n\n[telemetry]\notlp_protocol = \"grpc\"\nlog_format = \"xml\"\n";
        assert_eq!(problems(wrong).len(), 2, "{:?}", problems(wrong));
        let good = parse("[[shards]]\nname = \"a\"\nbuiltin = true\n\n[telemetry]\notlp_endpoint = \"http://127.0.0.1:4318\"\notlp_protocol = \"http/json\"\nlog_format = \"json\"\naccess_log = true\n").unwrap();
        let t = &good.telemetry;
        assert_eq!(
            (t.otlp_protocol, t.log_format, t.access_log, t.sample_ratio),
            (OtlpProtocol::HttpJson, LogFormat::Json, true, 1.0)
        );
        let changed = TelemetryConfig {
            access_log: false,
            ..t.clone()
        };
        assert!(
            t.same_pipeline(&changed),
            "access_log changes while running"
        );
        let moved = TelemetryConfig {
            otlp_endpoint: None,
            ..t.clone()
        };
        assert!(!t.same_pipeline(&moved));
    }

    #[test]
    fn every_unknown_key_and_wrong_type_is_reported_with_its_line() {
        let bad = "[server]\nlisen = \"x\"\nregoin = \"y\"\nlisten = \"here\"\n\n[routing]\ntimeout_ms = \"soon\"\n\n[[shards]]\nname = \"a\"\nreplicas = [{ url = 5 }]\n\n[cache]\nttl = 1\n";
        let all = problems(bad);
        let expected = [
            "2: server.lisen: unknown field `lisen`",
            "3: server.regoin: unknown field `regoin`",
            "4: server.listen: `here` is not an IP:port address",
            "7: routing.timeout_ms: invalid type",
            "11: shards[0].replicas[0].url: invalid type",
            "14: cache.ttl: unknown field `ttl`",
        ];
        assert_eq!(all.len(), expected.len(), "{all:#?}");
        for (got, want) in all.iter().zip(expected) {
            assert!(got.starts_with(want), "{got:?} should start with {want:?}");
        }
    }

    #[test]
    fn every_syntax_error_is_reported_on_one_line() {
        let all = problems("[[shards]\nname = 1\n[server]\nlisten = \n");
        assert!(all.len() >= 2, "{all:#?}");
        assert!(all[0].starts_with("1: "), "{all:#?}");
        assert!(all.iter().all(|p| !p.contains('\n')), "{all:#?}");
        assert!(all.iter().any(|p| p.starts_with("4: ")), "{all:#?}");
    }

    #[test]
    fn the_errors_display_as_file_line_field_message() {
        let err = ConfigError {
            file: "c.toml".into(),
            problems: parse("[server]\nlisen = 1\n").unwrap_err(),
        };
        assert!(
            err.to_string()
                .starts_with("c.toml:2: server.lisen: unknown field `lisen`"),
            "{err}"
        );
    }

    #[test]
    fn the_embedded_default_is_valid_and_secrets_are_redacted() {
        assert!(Config::embedded().problems().is_empty());
        let mut c = Config::embedded();
        c.shards = vec![ShardConfig {
            name: "s".into(),
            builtin: false,
            replicas: vec![ReplicaConfig {
                url: "http://user:pw@h:1".into(),
                region: None,
                weight: 1,
            }],
        }];
        assert_eq!(
            c.redacted().shards[0].replicas[0].url,
            "http://user:***@h:1"
        );
        assert_eq!(redact_url("redis://:pw@h:1"), "redis://***@h:1");
        assert_eq!(redact_url("http://h:1"), "http://h:1");
    }

    #[test]
    fn the_example_configs_are_valid_and_embedded_toml_is_the_default() {
        for (name, text) in [
            ("embedded", include_str!("../../config/embedded.toml")),
            ("local-3x2", include_str!("../../config/local-3x2.toml")),
            ("two-region", include_str!("../../config/two-region.toml")),
        ] {
            assert!(
                parse(text).is_ok(),
                "config/{name}.toml: {:?}",
                parse(text).err()
            );
        }
        let written =
            serde_json::to_value(parse(include_str!("../../config/embedded.toml")).unwrap())
                .unwrap();
        assert_eq!(written, serde_json::to_value(Config::embedded()).unwrap());
    }

    #[test]
    fn quorum_is_a_majority() {
        assert_eq!(WriteConsistency::Quorum.required(2), 2);
        assert_eq!(WriteConsistency::Quorum.required(3), 2);
        assert_eq!(WriteConsistency::One.required(3), 1);
        assert_eq!(WriteConsistency::All.required(3), 3);
    }
}
