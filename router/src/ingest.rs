//! `vecgate ingest`: files in, chunks out. Reads txt, md, html and jsonl documents, cuts them
//! into chunks by the collection's embedder's own tokenizer, embeds the chunks (batched, a few
//! batches at once) and upserts them through a running router, with retries. A chunk's point id
//! derives from its document and index, so a rerun writes the same points; finished documents
//! are recorded in a state file, so a rerun after Ctrl-C or a crash goes on where it stopped.

pub mod chunk;
pub mod read;

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant as StdInstant};

use bytes::Bytes;
use http::Method;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::config::{Config, EmbeddingConfig, EmbeddingProvider};
use crate::embed::{bm25, EmbedMetrics, Embedder, Embedders};
use crate::gateway::encode_segment;
use crate::upstream;
use chunk::Tokens;
use read::Doc;

/// The flags of `vecgate ingest`.
#[derive(clap::Args, Debug, Clone)]
pub struct IngestArgs {
    /// Files or directories (walked recursively) of .txt, .md, .html and .jsonl documents; a
    /// jsonl line is one document: `text`, and optionally `id`, `title`, `tags`, `timestamp`
    /// and other fields kept as metadata.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// The collection to write; made (one unnamed vector of the embedder's size, Cosine) when
    /// it does not exist.
    #[arg(long)]
    pub collection: String,
    /// The router's client API (`http://host:port`); default: the config's `server.listen`.
    #[arg(long)]
    pub url: Option<String>,
    /// Tokens a chunk holds at most (capped at what the model reads: 254 for the built-in one).
    #[arg(long, default_value_t = 500)]
    pub max_tokens: usize,
    /// Tokens of whole sentences a chunk repeats from the one before it.
    #[arg(long, default_value_t = 50)]
    pub overlap: usize,
    /// Chunks embedded and upserted together.
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Batches in flight at once.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Tags put in every chunk's payload (comma-separated, or the flag repeated).
    #[arg(long, value_delimiter = ',')]
    pub tags: Vec<String>,
    /// The state file recording finished documents; default
    /// `.vecgate-ingest/<collection>.jsonl` in the current directory.
    #[arg(long)]
    pub state: Option<PathBuf>,
    /// Attempts of one upsert (after a transport error, a timeout, a 429 or a 5xx).
    #[arg(long, default_value_t = 5)]
    pub attempts: u32,
    /// Deadline of one batch's embedding and of each upsert attempt, in milliseconds.
    #[arg(long, default_value_t = 120_000)]
    pub timeout_ms: u64,
}

/// What a run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Files read.
    pub files: usize,
    /// Documents written in full.
    pub documents: usize,
    /// Documents skipped: finished by an earlier run, and unchanged.
    pub unchanged: usize,
    /// Chunks upserted.
    pub chunks: u64,
    /// Their tokens.
    pub tokens: u64,
    /// Chunks that could not be written (their documents are not recorded as finished).
    pub failed: u64,
    /// Stopped by Ctrl-C before the end.
    pub interrupted: bool,
}

/// A document finished by a run, as the state file records it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct Finished {
    source_id: String,
    /// xxh3 of what the document's points hold (text, title, tags, timestamp, metadata).
    hash: String,
    chunks: usize,
}

/// The model's input limit, less its two special tokens.
const BUILTIN_MAX_TOKENS: usize = 254;

/// Runs `vecgate ingest` with `config`: prints progress on stderr and the summary on stdout.
pub async fn run(config: &Config, args: &IngestArgs) -> anyhow::Result<Summary> {
    let embedding = config.embedding_for(&args.collection).ok_or_else(|| {
        anyhow::anyhow!(
            "collection {} has no embedder: set [embedding] (or [collections.{}.embedding]) in the config given with --config",
            args.collection,
            args.collection
        )
    })?;
    let url = match &args.url {
        Some(u) => u.trim_end_matches('/').to_string(),
        None => format!(
            "http://{}",
            config.server.listen.replace("0.0.0.0", "127.0.0.1")
        ),
    };
    let tokens = tokens_of(embedding)?;
    let max_tokens = match embedding.provider {
        EmbeddingProvider::Builtin => args.max_tokens.min(BUILTIN_MAX_TOKENS),
        EmbeddingProvider::Openai => args.max_tokens,
    };
    let state_path = args
        .state
        .clone()
        .unwrap_or_else(|| Path::new(".vecgate-ingest").join(format!("{}.jsonl", args.collection)));
    let finished = read_state(&state_path)?;
    let files = read::files(&args.paths).map_err(anyhow::Error::msg)?;

    let mut summary = Summary {
        files: files.len(),
        ..Summary::default()
    };
    let mut docs: Vec<Pending> = Vec::new();
    for file in &files {
        for doc in read::read(file, &args.tags).map_err(anyhow::Error::msg)? {
            let hash = content_hash(&doc);
            let before = finished.get(&doc.source_id);
            if before.is_some_and(|f| f.hash == hash) {
                summary.unchanged += 1;
                continue;
            }
            let chunks = chunk::chunk(&doc.text, &tokens, max_tokens, args.overlap)
                .map_err(anyhow::Error::msg)?;
            docs.push(Pending {
                stale: before.map_or(0, |f| f.chunks),
                doc,
                hash,
                chunks,
            });
        }
    }
    let total: u64 = docs.iter().map(|d| d.chunks.len() as u64).sum();

    let embedders = Embedders::new(Arc::new(EmbedMetrics::new(&prometheus::Registry::new())?));
    let embedder = embedders.get(embedding);
    let timeout = Duration::from_millis(args.timeout_ms);
    let layout = match docs.iter().find_map(|d| d.chunks.first()) {
        Some(first) => Some(layout(&url, &args.collection, &embedder, &first.text, timeout).await?),
        None => None,
    };
    let progress = indicatif::ProgressBar::new(total).with_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} {elapsed_precise} [{wide_bar}] {pos}/{len} chunks  {per_sec}  ETA {eta}  {msg}",
        )
        .expect("a valid template")
        .progress_chars("=> "),
    );
    let shared = Arc::new(Shared {
        url,
        collection: args.collection.clone(),
        embedder,
        layout: layout.unwrap_or_default(),
        attempts: args.attempts.max(1),
        timeout,
        state: Mutex::new(State::open(&state_path)?),
        remaining: docs
            .iter()
            .map(|d| AtomicUsize::new(d.chunks.len()))
            .collect(),
        failed_docs: docs.iter().map(|_| AtomicUsize::new(0)).collect(),
        done_chunks: AtomicU64::new(0),
        done_tokens: AtomicU64::new(0),
        progress: progress.clone(),
    });
    let docs = Arc::new(docs);
    // Documents without a chunk (no text) are finished as they are.
    for (d, doc) in docs.iter().enumerate() {
        if doc.chunks.is_empty() {
            shared.finish(&docs[d]).await?;
            summary.documents += 1;
        }
    }

    let started = StdInstant::now();
    let mut batches = batches(&docs, args.batch.max(1)).into_iter();
    let mut running = JoinSet::new();
    let mut interrupted = std::pin::pin!(tokio::signal::ctrl_c());
    let mut failed = 0;
    loop {
        while running.len() < args.concurrency.max(1) && !summary.interrupted {
            let Some(batch) = batches.next() else { break };
            let (shared, docs) = (shared.clone(), docs.clone());
            running.spawn(async move { shared.write(&docs, batch).await });
        }
        if running.is_empty() {
            break;
        }
        tokio::select! {
            ended = running.join_next() => match ended {
                Some(Ok(Ok(written))) => summary.documents += written,
                Some(Ok(Err(f))) => {
                    failed += f.chunks;
                    progress.suspend(|| eprintln!("vecgate ingest: {}", f.error));
                }
                Some(Err(e)) => anyhow::bail!("a batch's task failed: {e}"),
                None => break,
            },
            _ = &mut interrupted, if !summary.interrupted => {
                summary.interrupted = true;
                progress.set_message("interrupted: finishing the batches in flight");
            }
        }
    }
    progress.finish_and_clear();
    summary.chunks = shared.done_chunks.load(Ordering::SeqCst);
    summary.tokens = shared.done_tokens.load(Ordering::SeqCst);
    summary.failed = failed;
    print_summary(&summary, &args.collection, &state_path, started.elapsed());
    Ok(summary)
}

/// A document to write: its chunks, its content hash, and how many chunks an earlier version
/// of it had (those past the new count are deleted once it is written).
struct Pending {
    doc: Doc,
    hash: String,
    chunks: Vec<chunk::Chunk>,
    stale: usize,
}

/// Which of the collection's vectors a chunk fills: dense ones with the embedder's vector
/// (`""` is the unnamed one), sparse ones with an `idf` modifier with BM25.
#[derive(Debug, Default, Clone)]
struct Layout {
    dense: Vec<String>,
    sparse: Vec<String>,
}

/// What the batches share.
struct Shared {
    url: String,
    collection: String,
    embedder: Arc<Embedder>,
    layout: Layout,
    attempts: u32,
    timeout: Duration,
    state: Mutex<State>,
    /// Chunks of each document not yet written.
    remaining: Vec<AtomicUsize>,
    /// Chunks of each document that failed.
    failed_docs: Vec<AtomicUsize>,
    done_chunks: AtomicU64,
    done_tokens: AtomicU64,
    progress: indicatif::ProgressBar,
}

type Mutex<T> = tokio::sync::Mutex<T>;

/// A batch that could not be written.
struct Failed {
    chunks: u64,
    error: String,
}

impl Shared {
    /// Embeds and upserts one batch (document index, chunk index); returns the documents it
    /// finished.
    async fn write(&self, docs: &[Pending], batch: Vec<(usize, usize)>) -> Result<usize, Failed> {
        let written = self.upsert(docs, &batch).await;
        if let Err(error) = written {
            for &(d, _) in &batch {
                self.failed_docs[d].fetch_add(1, Ordering::SeqCst);
            }
            return Err(Failed {
                chunks: batch.len() as u64,
                error,
            });
        }
        let mut finished = 0;
        for &(d, c) in &batch {
            self.done_tokens
                .fetch_add(docs[d].chunks[c].tokens as u64, Ordering::SeqCst);
            let left = self.remaining[d].fetch_sub(1, Ordering::SeqCst) - 1;
            if left == 0 && self.failed_docs[d].load(Ordering::SeqCst) == 0 {
                self.finish(&docs[d]).await.map_err(|e| Failed {
                    chunks: 0,
                    error: e.to_string(),
                })?;
                finished += 1;
            }
        }
        self.done_chunks
            .fetch_add(batch.len() as u64, Ordering::SeqCst);
        self.progress.inc(batch.len() as u64);
        Ok(finished)
    }

    async fn upsert(&self, docs: &[Pending], batch: &[(usize, usize)]) -> Result<(), String> {
        let texts: Vec<String> = batch
            .iter()
            .map(|&(d, c)| docs[d].chunks[c].text.clone())
            .collect();
        let vectors = self
            .embedder
            .embed(&texts, Instant::now() + self.timeout, None)
            .await
            .map_err(|e| format!("embedding: {e}"))?;
        let points: Vec<Value> = batch
            .iter()
            .zip(vectors)
            .map(|(&(d, c), v)| self.point(&docs[d].doc, c, &docs[d].chunks[c].text, &v))
            .collect();
        let body = serde_json::to_vec(&json!({ "points": points })).map_err(|e| e.to_string())?;
        let path = format!(
            "/collections/{}/points?wait=true",
            encode_segment(&self.collection)
        );
        self.send(Method::PUT, &path, body.into()).await
    }

    /// The point of chunk `index` of `doc`.
    fn point(&self, doc: &Doc, index: usize, text: &str, dense: &[f32]) -> Value {
        let mut payload = doc.metadata.clone();
        payload.insert("source_id".into(), json!(doc.source_id));
        payload.insert("chunk_index".into(), json!(index));
        payload.insert("text".into(), json!(text));
        payload.insert("tags".into(), json!(doc.tags));
        if let Some(t) = &doc.title {
            payload.insert("title".into(), json!(t));
        }
        if let Some(t) = &doc.timestamp {
            payload.insert("timestamp".into(), json!(t));
        }
        let vector = match (self.layout.dense.as_slice(), self.layout.sparse.is_empty()) {
            ([only], true) if only.is_empty() => json!(dense),
            _ => {
                let mut named = Map::new();
                for name in &self.layout.dense {
                    named.insert(name.clone(), json!(dense));
                }
                if !self.layout.sparse.is_empty() {
                    let sparse = bm25::document(text);
                    for name in &self.layout.sparse {
                        named.insert(
                            name.clone(),
                            json!({"indices": sparse.indices, "values": sparse.values}),
                        );
                    }
                }
                Value::Object(named)
            }
        };
        json!({ "id": point_id(&doc.source_id, index), "vector": vector, "payload": payload })
    }

    /// Sends one request to the router, retried after a transport error, a timeout, a 429 or a
    /// 5xx (waiting as `retry-after` says, else 200 ms doubling up to 5 s).
    async fn send(&self, method: Method, path: &str, body: Bytes) -> Result<(), String> {
        let mut pause = Duration::from_millis(200);
        let mut last = String::new();
        for attempt in 1..=self.attempts {
            let answer = upstream::client()
                .call(
                    &self.url,
                    &method,
                    path,
                    body.clone(),
                    Instant::now() + self.timeout,
                )
                .await;
            let wait = match answer {
                Ok(a) if a.status < 300 => return Ok(()),
                Ok(a) if a.status == 429 || a.status >= 500 => {
                    last = format!("{} {path}: {} {}", method, a.status, error_text(&a.body));
                    a.retry_after
                }
                Ok(a) => {
                    return Err(format!(
                        "{method} {path}: {} {}",
                        a.status,
                        error_text(&a.body)
                    ))
                }
                Err(e) => {
                    last = format!("{method} {path}: {e}");
                    None
                }
            };
            if attempt < self.attempts {
                tokio::time::sleep(wait.unwrap_or(pause)).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
        }
        Err(format!("{last} (after {} attempts)", self.attempts))
    }

    /// Records `doc` as finished, after deleting the chunks an earlier version had beyond its
    /// new count.
    async fn finish(&self, p: &Pending) -> anyhow::Result<()> {
        if p.stale > p.chunks.len() {
            let ids: Vec<String> = (p.chunks.len()..p.stale)
                .map(|i| point_id(&p.doc.source_id, i))
                .collect();
            let path = format!(
                "/collections/{}/points/delete?wait=true",
                encode_segment(&self.collection)
            );
            let body = serde_json::to_vec(&json!({ "points": ids }))?;
            self.send(Method::POST, &path, body.into())
                .await
                .map_err(anyhow::Error::msg)?;
        }
        self.state.lock().await.record(&Finished {
            source_id: p.doc.source_id.clone(),
            hash: p.hash.clone(),
            chunks: p.chunks.len(),
        })
    }
}

/// The `status.error` of a Qdrant-style error body, or the body.
fn error_text(body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v["status"]["error"].as_str().map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(body).chars().take(200).collect())
}

/// The chunks in batches of `size`, in document order.
fn batches(docs: &[Pending], size: usize) -> Vec<Vec<(usize, usize)>> {
    let all: Vec<(usize, usize)> = docs
        .iter()
        .enumerate()
        .flat_map(|(d, p)| (0..p.chunks.len()).map(move |c| (d, c)))
        .collect();
    all.chunks(size).map(<[_]>::to_vec).collect()
}

/// How chunks are measured for `embedding`: the built-in model's tokenizer; for a remote model,
/// a `tokenizer.json` in `model_dir` when there is one, else four characters a token.
fn tokens_of(embedding: &EmbeddingConfig) -> anyhow::Result<Tokens> {
    match embedding.provider {
        EmbeddingProvider::Builtin => {
            Tokens::load(&embedding.model_dir).map_err(anyhow::Error::msg)
        }
        EmbeddingProvider::Openai if embedding.model_dir.join("tokenizer.json").is_file() => {
            Tokens::load(&embedding.model_dir).map_err(anyhow::Error::msg)
        }
        EmbeddingProvider::Openai => Ok(Tokens::Approximate),
    }
}

/// The collection's vectors a chunk fills, making the collection when there is none (its one
/// vector as long as the embedder's vector of `probe`).
async fn layout(
    url: &str,
    collection: &str,
    embedder: &Embedder,
    probe: &str,
    timeout: Duration,
) -> anyhow::Result<Layout> {
    let dim = embedder
        .embed(&[probe.to_string()], Instant::now() + timeout, None)
        .await
        .map_err(|e| anyhow::anyhow!("embedding: {e}"))?[0]
        .len();
    let path = format!("/collections/{}", encode_segment(collection));
    let client = upstream::client();
    let info = client
        .call(
            url,
            &Method::GET,
            &path,
            Bytes::new(),
            Instant::now() + timeout,
        )
        .await
        .map_err(|e| anyhow::anyhow!("{url}: {e}"))?;
    if info.status == 404 {
        let body = serde_json::to_vec(&json!({"vectors": {"size": dim, "distance": "Cosine"}}))?;
        let made = client
            .call(
                url,
                &Method::PUT,
                &path,
                body.into(),
                Instant::now() + timeout,
            )
            .await
            .map_err(|e| anyhow::anyhow!("{url}: {e}"))?;
        anyhow::ensure!(
            made.status == 200,
            "creating collection {collection}: {} {}",
            made.status,
            error_text(&made.body)
        );
        return Ok(Layout {
            dense: vec![String::new()],
            sparse: Vec::new(),
        });
    }
    anyhow::ensure!(
        info.status == 200,
        "GET {path}: {} {}",
        info.status,
        error_text(&info.body)
    );
    let v: Value = serde_json::from_slice(&info.body)?;
    let params = &v["result"]["config"]["params"];
    let mut layout = Layout::default();
    let mut sizes = Vec::new();
    match &params["vectors"] {
        Value::Object(one) if one.contains_key("size") => {
            sizes.push((String::new(), one["size"].as_u64()));
        }
        Value::Object(named) => {
            for (name, p) in named {
                sizes.push((name.clone(), p["size"].as_u64()));
            }
        }
        _ => {}
    }
    for (name, size) in &sizes {
        if *size == Some(dim as u64) {
            layout.dense.push(name.clone());
        }
    }
    if let Value::Object(sparse) = &params["sparse_vectors"] {
        for (name, p) in sparse {
            if p["modifier"] == "idf" {
                layout.sparse.push(name.clone());
            }
        }
    }
    anyhow::ensure!(
        !layout.dense.is_empty(),
        "collection {collection} has no dense vector of {dim} dimensions, the size of model {}'s vectors (it has {})",
        embedder.model(),
        sizes
            .iter()
            .map(|(n, s)| format!("{:?}: {}", n, s.unwrap_or(0)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(layout)
}

/// A point id (a UUID) that depends only on the document and the chunk's index.
pub fn point_id(source_id: &str, index: usize) -> String {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(source_id.as_bytes());
    h.update(&[0]);
    h.update(&(index as u64).to_le_bytes());
    let hex = format!("{:032x}", h.digest128());
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// A hash of everything a document's points hold, so a changed document is written again.
fn content_hash(doc: &Doc) -> String {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for part in [
        doc.text.as_str(),
        doc.title.as_deref().unwrap_or_default(),
        doc.timestamp.as_deref().unwrap_or_default(),
    ] {
        h.update(part.as_bytes());
        h.update(&[0]);
    }
    for tag in &doc.tags {
        h.update(tag.as_bytes());
        h.update(&[0]);
    }
    h.update(Value::Object(doc.metadata.clone()).to_string().as_bytes());
    format!("{:032x}", h.digest128())
}

/// The documents an earlier run finished (the last record of each wins).
fn read_state(path: &Path) -> anyhow::Result<HashMap<String, Finished>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HashMap::new()),
        Err(e) => anyhow::bail!("{}: {e}", path.display()),
    };
    let mut out = HashMap::new();
    for line in text.lines() {
        // A line cut short by a crash is the last one, and its document is simply redone.
        if let Ok(f) = serde_json::from_str::<Finished>(line) {
            out.insert(f.source_id.clone(), f);
        }
    }
    Ok(out)
}

/// The state file, appended to (and synced) once a document is written in full.
struct State {
    file: std::fs::File,
    path: PathBuf,
}

impl State {
    fn open(path: &Path) -> anyhow::Result<State> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let mut state = State {
            file,
            path: path.to_path_buf(),
        };
        // A line a crash cut short is ended, so the next record starts a line of its own.
        let torn = std::fs::read(path).is_ok_and(|b| b.last().is_some_and(|&c| c != b'\n'));
        if torn {
            state.file.write_all(b"\n")?;
        }
        Ok(state)
    }

    fn record(&mut self, f: &Finished) -> anyhow::Result<()> {
        let mut line = serde_json::to_vec(f)?;
        line.push(b'\n');
        self.file
            .write_all(&line)
            .and_then(|()| self.file.sync_data())
            .map_err(|e| anyhow::anyhow!("{}: {e}", self.path.display()))
    }
}

fn print_summary(s: &Summary, collection: &str, state: &Path, took: Duration) {
    let secs = took.as_secs_f64();
    let rate = if secs > 0.0 {
        s.chunks as f64 / secs
    } else {
        0.0
    };
    println!(
        "ingested {} documents ({} chunks, {} tokens) from {} files into {collection} in {secs:.1} s: {rate:.1} chunks/s",
        s.documents, s.chunks, s.tokens, s.files
    );
    println!(
        "skipped {} unchanged documents; {} chunks failed",
        s.unchanged, s.failed
    );
    if s.interrupted || s.failed > 0 {
        println!(
            "{}: run the same command again to go on (state in {})",
            if s.interrupted {
                "interrupted"
            } else {
                "incomplete"
            },
            state.display()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn point_ids_are_uuids_that_depend_on_source_and_index() {
        let a = point_id("/docs/a.md", 0);
        assert_eq!(a.len(), 36);
        assert_eq!(a.matches('-').count(), 4);
        assert_eq!(a, point_id("/docs/a.md", 0));
        assert_ne!(a, point_id("/docs/a.md", 1));
        assert_ne!(a, point_id("/docs/b.md", 0));
    }

    #[test]
    fn the_state_keeps_the_last_record_of_each_document_and_survives_a_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s/c.jsonl");
        let mut state = State::open(&path).unwrap();
        for (id, hash) in [("a", "1"), ("b", "2"), ("a", "3")] {
            state
                .record(&Finished {
                    source_id: id.into(),
                    hash: hash.into(),
                    chunks: 1,
                })
                .unwrap();
        }
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"source_id\": \"c\", \"ha")
            .unwrap();
        let read = read_state(&path).unwrap();
        assert_eq!(read.len(), 2);
        State::open(&path)
            .unwrap()
            .record(&Finished {
                source_id: "d".into(),
                hash: "4".into(),
                chunks: 2,
            })
            .unwrap();
        let read = read_state(&path).unwrap();
        assert_eq!(read["d"].chunks, 2);
        assert_eq!(read["a"].hash, "3");
        assert_eq!(read["b"].hash, "2");
    }
}
