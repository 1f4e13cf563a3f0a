//! Text to vectors: the embedders the config names (all-MiniLM-L6-v2 in process, or an
//! OpenAI-compatible `/v1/embeddings`),
//! each behind a micro-batcher that sends concurrent texts in one call and an embedding cache
//! keyed by model and text.

pub mod bm25;
pub mod infer;
pub mod minilm;
mod openai;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::time::Instant;

use crate::cache::Cache;
use crate::config::{EmbeddingConfig, EmbeddingProvider};

/// Why text could not be embedded.
#[derive(Clone, Debug, thiserror::Error)]
pub enum EmbedError {
    /// The deadline passed first.
    #[error("the embedder did not answer in time")]
    Timeout,
    /// The embedder could not be reached, or kept failing (429, 5xx) until retries ran out.
    #[error("the embedder is unavailable: {0}")]
    Unavailable(String),
    /// The embedder refused the texts with this 4xx status.
    #[error("the embedder refused the text ({status}): {message}")]
    Refused {
        /// Its status.
        status: u16,
        /// What it said.
        message: String,
    },
    /// Its answer could not be read, or did not have one vector per text.
    #[error("the embedder's answer is unusable: {0}")]
    Invalid(String),
}

impl EmbedError {
    /// The HTTP status a client gets for it.
    pub fn status(&self) -> u16 {
        match self {
            EmbedError::Timeout => 504,
            EmbedError::Unavailable(_) => 503,
            EmbedError::Refused { status: 400, .. } => 400,
            EmbedError::Refused { .. } | EmbedError::Invalid(_) => 502,
        }
    }
}

/// The embedders' metrics.
pub struct EmbedMetrics {
    calls: IntCounterVec,
    latency: HistogramVec,
    batch: HistogramVec,
    retries: IntCounterVec,
    cache: IntCounterVec,
}

impl EmbedMetrics {
    /// Registers them in `registry`.
    pub fn new(registry: &Registry) -> prometheus::Result<EmbedMetrics> {
        let calls = IntCounterVec::new(
            Opts::new(
                "vecgate_embed_calls_total",
                "Calls to an embedder by model and outcome (ok, timeout, unavailable, refused, invalid)",
            ),
            &["model", "outcome"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "vecgate_embed_latency_seconds",
                "Time of one call to an embedder (retries included) by model",
            )
            .buckets(shardd::metrics::LATENCY_BUCKETS.to_vec()),
            &["model"],
        )?;
        let batch = HistogramVec::new(
            HistogramOpts::new(
                "vecgate_embed_batch_texts",
                "Texts sent in one call to an embedder, by model",
            )
            .buckets(vec![
                1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0,
            ]),
            &["model"],
        )?;
        let retries = IntCounterVec::new(
            Opts::new(
                "vecgate_embed_retries_total",
                "Calls to an embedder retried, by model and reason (429, 5xx, timeout, transport)",
            ),
            &["model", "reason"],
        )?;
        let cache = IntCounterVec::new(
            Opts::new(
                "vecgate_embed_cache_lookups_total",
                "Embedding cache lookups by model, tier (l1 in process, l2 Redis) and result (hit, miss)",
            ),
            &["model", "tier", "result"],
        )?;
        registry.register(Box::new(calls.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        registry.register(Box::new(batch.clone()))?;
        registry.register(Box::new(retries.clone()))?;
        registry.register(Box::new(cache.clone()))?;
        Ok(EmbedMetrics {
            calls,
            latency,
            batch,
            retries,
            cache,
        })
    }
}

/// The embedders in use, one per distinct config, made on first use and kept across reloads
/// that leave their config as it was (their batchers and caches with them).
pub struct Embedders {
    made: Mutex<HashMap<String, Arc<Embedder>>>,
    metrics: Arc<EmbedMetrics>,
    runtime: tokio::runtime::Handle,
}

impl Embedders {
    /// Embedders whose batchers run on the current runtime.
    pub fn new(metrics: Arc<EmbedMetrics>) -> Embedders {
        Embedders {
            made: Mutex::default(),
            metrics,
            runtime: tokio::runtime::Handle::current(),
        }
    }

    /// The embedder for `config`.
    pub fn get(&self, config: &EmbeddingConfig) -> Arc<Embedder> {
        let key = serde_json::to_string(config).unwrap_or_default();
        self.made
            .lock()
            .entry(key)
            .or_insert_with(|| Arc::new(Embedder::start(config, &self.metrics, &self.runtime)))
            .clone()
    }
}

/// One text waiting for its vector.
struct Job {
    text: String,
    deadline: Instant,
    reply: oneshot::Sender<Result<Arc<[f32]>, EmbedError>>,
}

/// Calls to a remote embedder a batcher keeps in flight at most (the built-in one runs one
/// batch at a time: a batch uses every core).
const CONCURRENT_CALLS: usize = 4;

/// What computes a batcher's vectors.
enum Backend {
    /// The built-in model, loaded on the first batch.
    Builtin(tokio::sync::OnceCell<Result<Arc<minilm::MiniLm>, String>>),
    /// An OpenAI-compatible API.
    Openai,
}

/// An embedder: its config, its batcher's queue and its cache.
pub struct Embedder {
    config: EmbeddingConfig,
    jobs: mpsc::Sender<Job>,
    cache: Option<moka::future::Cache<String, Arc<[f32]>>>,
    metrics: Arc<EmbedMetrics>,
}

impl Embedder {
    fn start(
        config: &EmbeddingConfig,
        metrics: &Arc<EmbedMetrics>,
        runtime: &tokio::runtime::Handle,
    ) -> Embedder {
        let (jobs, queue) = mpsc::channel(config.max_batch * 64);
        runtime.spawn(batch_loop(config.clone(), queue, metrics.clone()));
        let cache = (config.cache_max_bytes > 0).then(|| {
            moka::future::Cache::builder()
                .max_capacity(config.cache_max_bytes)
                .weigher(|text: &String, v: &Arc<[f32]>| {
                    u32::try_from(text.len() + v.len() * 4 + 64).unwrap_or(u32::MAX)
                })
                .build()
        });
        for outcome in ["ok", "timeout", "unavailable", "refused", "invalid"] {
            metrics.calls.with_label_values(&[config.model(), outcome]);
        }
        for tier in ["l1", "l2"] {
            for result in ["hit", "miss"] {
                metrics
                    .cache
                    .with_label_values(&[config.model(), tier, result]);
            }
        }
        Embedder {
            config: config.clone(),
            jobs,
            cache,
            metrics: metrics.clone(),
        }
    }

    /// The model's name.
    pub fn model(&self) -> &str {
        self.config.model()
    }

    /// The vectors of `texts`, in order, by `deadline`: from the embedding cache (in process,
    /// then `shared`'s Redis, where every router keeps them), else through the batcher (texts
    /// asked at the same moment by other requests go in the same call).
    pub async fn embed(
        &self,
        texts: &[String],
        deadline: Instant,
        shared: Option<&Cache>,
    ) -> Result<Vec<Arc<[f32]>>, EmbedError> {
        let mut out: Vec<Option<Arc<[f32]>>> = vec![None; texts.len()];
        let mut waiting = Vec::new();
        for (i, text) in texts.iter().enumerate() {
            if let Some(cache) = &self.cache {
                if let Some(v) = cache.get(text).await {
                    self.count_lookup("l1", "hit");
                    out[i] = Some(v);
                    continue;
                }
                self.count_lookup("l1", "miss");
            }
            if let Some(shared) = shared.filter(|c| c.config().redis_url.is_some()) {
                if let Some(v) = shared.stored_vector(self.key(text)).await {
                    self.count_lookup("l2", "hit");
                    let v: Arc<[f32]> = Arc::from(v);
                    if let Some(cache) = &self.cache {
                        cache.insert(text.clone(), v.clone()).await;
                    }
                    out[i] = Some(v);
                    continue;
                }
                self.count_lookup("l2", "miss");
            }
            let (reply, answer) = oneshot::channel();
            let job = Job {
                text: text.clone(),
                deadline,
                reply,
            };
            // A full queue holds the request back, but not past its deadline.
            match tokio::time::timeout_at(deadline, self.jobs.send(job)).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(EmbedError::Unavailable("the batcher stopped".into())),
                Err(_) => return Err(EmbedError::Timeout),
            }
            waiting.push((i, answer));
        }
        for (i, answer) in waiting {
            let v = match tokio::time::timeout_at(deadline, answer).await {
                Ok(Ok(result)) => result?,
                Ok(Err(_)) => return Err(EmbedError::Unavailable("the batcher stopped".into())),
                Err(_) => return Err(EmbedError::Timeout),
            };
            if let Some(cache) = &self.cache {
                cache.insert(texts[i].clone(), v.clone()).await;
            }
            if let Some(shared) = shared {
                shared.store_vector(self.key(&texts[i]), &v, self.config.redis_ttl_s);
            }
            out[i] = Some(v);
        }
        Ok(out.into_iter().map(|v| v.expect("filled")).collect())
    }

    /// The shared cache's key of `text`'s vector: model and text.
    fn key(&self, text: &str) -> u128 {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        h.update(self.config.model().as_bytes());
        h.update(&[0]);
        h.update(text.as_bytes());
        h.digest128()
    }

    fn count_lookup(&self, tier: &str, result: &str) {
        self.metrics
            .cache
            .with_label_values(&[self.config.model(), tier, result])
            .inc();
    }
}

/// Takes texts off the queue in batches (up to `max_batch`, the first waiting `max_wait_ms`
/// for others) and sends each batch in one call, a few calls at a time.
async fn batch_loop(config: EmbeddingConfig, mut queue: mpsc::Receiver<Job>, m: Arc<EmbedMetrics>) {
    let config = Arc::new(config);
    let (backend, calls) = match config.provider {
        EmbeddingProvider::Builtin => (Backend::Builtin(tokio::sync::OnceCell::new()), 1),
        EmbeddingProvider::Openai => (Backend::Openai, CONCURRENT_CALLS),
    };
    let backend = Arc::new(backend);
    let slots = Arc::new(Semaphore::new(calls));
    let wait = Duration::from_millis(config.max_wait_ms);
    while let Some(first) = queue.recv().await {
        let mut batch = vec![first];
        let until = Instant::now() + wait;
        while batch.len() < config.max_batch {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) if wait.is_zero() => break,
                Err(_) => match tokio::time::timeout_at(until, queue.recv()).await {
                    Ok(Some(job)) => batch.push(job),
                    _ => break,
                },
            }
        }
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let (config, m, backend) = (config.clone(), m.clone(), backend.clone());
        tokio::spawn(async move {
            let _permit = permit;
            run_batch(&config, &backend, batch, &m).await;
        });
    }
}

/// Runs the built-in model over `texts` on the blocking pool (loading it on first use).
async fn builtin(
    config: &EmbeddingConfig,
    model: &tokio::sync::OnceCell<Result<Arc<minilm::MiniLm>, String>>,
    texts: &[&str],
    deadline: Instant,
) -> Result<Vec<Vec<f32>>, EmbedError> {
    let dir = config.model_dir.clone();
    let loaded = model
        .get_or_init(|| async move {
            tokio::task::spawn_blocking(move || minilm::MiniLm::load(&dir).map(Arc::new))
                .await
                .unwrap_or_else(|e| Err(format!("loading the model failed: {e}")))
        })
        .await
        .clone()
        .map_err(EmbedError::Unavailable)?;
    let owned: Vec<String> = texts.iter().map(|t| t.to_string()).collect();
    let run = tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = owned.iter().map(String::as_str).collect();
        loaded.embed(&refs)
    });
    match tokio::time::timeout_at(deadline, run).await {
        Ok(Ok(Ok(vectors))) => Ok(vectors),
        Ok(Ok(Err(e))) => Err(EmbedError::Invalid(e)),
        Ok(Err(e)) => Err(EmbedError::Unavailable(format!(
            "the model's task failed: {e}"
        ))),
        Err(_) => Err(EmbedError::Timeout),
    }
}

/// Embeds one batch (each distinct text once) and answers its jobs.
async fn run_batch(config: &EmbeddingConfig, backend: &Backend, batch: Vec<Job>, m: &EmbedMetrics) {
    let mut texts: Vec<&str> = batch.iter().map(|j| j.text.as_str()).collect();
    texts.sort_unstable();
    texts.dedup();
    let deadline = batch
        .iter()
        .map(|j| j.deadline)
        .max()
        .unwrap_or_else(Instant::now);
    m.batch
        .with_label_values(&[config.model()])
        .observe(texts.len() as f64);
    let started = Instant::now();
    let answered = match backend {
        Backend::Openai => openai::embed(config, &texts, deadline, m).await,
        Backend::Builtin(model) => builtin(config, model, &texts, deadline).await,
    };
    m.latency
        .with_label_values(&[config.model()])
        .observe(started.elapsed().as_secs_f64());
    let outcome = match &answered {
        Ok(_) => "ok",
        Err(EmbedError::Timeout) => "timeout",
        Err(EmbedError::Unavailable(_)) => "unavailable",
        Err(EmbedError::Refused { .. }) => "refused",
        Err(EmbedError::Invalid(_)) => "invalid",
    };
    m.calls.with_label_values(&[config.model(), outcome]).inc();
    match answered {
        Ok(vectors) => {
            let by_text: HashMap<String, Arc<[f32]>> = texts
                .iter()
                .map(|t| t.to_string())
                .zip(vectors.into_iter().map(Arc::from))
                .collect();
            for job in batch {
                let v = by_text
                    .get(job.text.as_str())
                    .cloned()
                    .ok_or_else(|| EmbedError::Invalid("a text of the batch got no vector".into()));
                let _ = job.reply.send(v);
            }
        }
        Err(e) => {
            for job in batch {
                let _ = job.reply.send(Err(e.clone()));
            }
        }
    }
}
