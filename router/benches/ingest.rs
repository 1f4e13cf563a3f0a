//! Ingest benchmark: `vecgate ingest` of a document set (the Python tutorial by default) through
//! a 3-shard cluster with the built-in embedder, against the same chunks embedded alone (the
//! model in this process, batches of 32: the floor an ingest cannot beat), interleaved round by
//! round. Prints chunks per second of both and the ratio. Run: `bench/ingest.sh`.
//!
//! Knobs (environment): BENCH_DOCS (a directory), BENCH_ROUNDS (3).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use e2e::{minilm_dir, run_captured, Cluster};
use vecgate::embed::minilm::MiniLm;
use vecgate::ingest::{chunk, read};

/// The allocator vecgate itself runs with (its `main.rs`), so the model's many large tensors
/// are allocated here as they are there.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn main() {
    let docs = std::env::var("BENCH_DOCS")
        .unwrap_or_else(|_| "/usr/share/doc/python3-doc/html/tutorial".into());
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    let model_dir = minilm_dir();
    let tokens = chunk::Tokens::load(&model_dir).expect("the model's tokenizer");
    let mut texts = Vec::new();
    for file in read::files(&[PathBuf::from(&docs)]).expect("the documents") {
        for doc in read::read(&file, &[]).expect("a document") {
            let chunks = chunk::chunk(&doc.text, &tokens, 254, 50).expect("chunking");
            texts.extend(chunks.into_iter().map(|c| c.text));
        }
    }
    let model = MiniLm::load(&model_dir).expect("the model");
    let cluster = Cluster::start_with(
        3,
        &["local"],
        "timeout_ms = 60000",
        &format!(
            "[embedding]\nprovider = \"builtin\"\nmodel_dir = \"{}\"\ntimeout_ms = 60000\n",
            model_dir.display()
        ),
    );
    let state = tempfile::tempdir().expect("temp dir");
    let (config, url) = (cluster.config.display().to_string(), cluster.url());
    let (mut alone, mut ingested) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let started = Instant::now();
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        for batch in refs.chunks(32) {
            model.embed(batch).expect("embedding");
        }
        alone.push(texts.len() as f64 / started.elapsed().as_secs_f64());

        let state_file = state.path().join(format!("round-{round}.jsonl"));
        let collection = format!("docs{round}");
        let started = Instant::now();
        let (status, out, err) = run_captured(
            "vecgate",
            &[
                "ingest",
                &docs,
                "--collection",
                &collection,
                "--config",
                &config,
                "--url",
                &url,
                "--state",
                state_file.to_str().expect("a UTF-8 path"),
            ],
            Duration::from_secs(1800),
        );
        assert!(status.success(), "vecgate ingest: {out}{err}");
        assert!(
            out.contains(&format!("({} chunks,", texts.len())),
            "ingest made other chunks than the bench: {out}"
        );
        ingested.push(texts.len() as f64 / started.elapsed().as_secs_f64());
        eprintln!("round {round}: {out}");
    }
    let (a, i) = (median(alone), median(ingested));
    println!(
        "\n{} chunks (at most 254 tokens, overlap 50) from {}, 3 shards, built-in embedder, median of {rounds} rounds",
        texts.len(),
        Path::new(&docs).display()
    );
    println!("| | chunks/s | ratio |");
    println!("|---|---:|---:|");
    println!("| embedding alone (batches of 32, in process) | {a:.1} | 1.00x |");
    println!(
        "| `vecgate ingest` through the router | {i:.1} | {:.2}x |",
        i / a
    );
}
