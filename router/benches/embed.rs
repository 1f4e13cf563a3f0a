//! Embedding benchmark: vecgate's built-in all-MiniLM-L6-v2 (`vecgate::embed::minilm`, `bert`)
//! against sentence-transformers (PyTorch) on the same machine, texts and batch sizes, in one
//! run, printing texts per second and the ratio. Run: `bench/embed.sh`; see BENCHMARKS.md.
//!
//! Knobs (environment): BENCH_MODEL_DIR (the model directory), BENCH_ST_MODEL_DIR (the whole
//! model.zip for sentence-transformers), BENCH_ST_PYTHON (a Python with sentence-transformers),
//! BENCH_TEXTS (256), BENCH_ROUNDS (3), BENCH_BATCHES ("1 8 32 128").

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use vecgate::embed::minilm::MiniLm;

/// The allocator vecgate itself runs with (its `main.rs`), so the model's many large tensors
/// are allocated here as they are there.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn env_or(key: &str, default: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| default.to_string())
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn main() {
    let target = concat!(env!("CARGO_MANIFEST_DIR"), "/../target");
    let dir = env_or(
        "BENCH_MODEL_DIR",
        &format!("{target}/models/all-MiniLM-L6-v2"),
    );
    let st_dir = env_or(
        "BENCH_ST_MODEL_DIR",
        &format!("{target}/models/all-MiniLM-L6-v2-st"),
    );
    let python = env_or("BENCH_ST_PYTHON", &format!("{target}/st-venv/bin/python"));
    let n: usize = env_or("BENCH_TEXTS", "256").parse().expect("BENCH_TEXTS");
    let rounds: usize = env_or("BENCH_ROUNDS", "3").parse().expect("BENCH_ROUNDS");
    let batches: Vec<usize> = env_or("BENCH_BATCHES", "1 8 32 128")
        .split_whitespace()
        .map(|b| b.parse().expect("BENCH_BATCHES"))
        .collect();
    let texts: Vec<String> = (0..n)
        .map(|i| format!("passage {i}: vector search routes queries across shards, caches answers and merges the top results for retrieval-augmented generation"))
        .collect();
    let model = MiniLm::load(Path::new(&dir)).expect("loading the model (scripts/fetch-model.sh)");
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    model.embed(&refs[..8]).expect("warm-up");
    let mut ours = Vec::new();
    for &b in &batches {
        let rates: Vec<f64> = (0..rounds)
            .map(|_| {
                let started = Instant::now();
                for chunk in refs.chunks(b) {
                    model.embed(chunk).expect("embedding");
                }
                n as f64 / started.elapsed().as_secs_f64()
            })
            .collect();
        ours.push(median(rates));
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/python/minilm_bench.py");
    let mut args = vec![
        script.display().to_string(),
        st_dir,
        n.to_string(),
        rounds.to_string(),
    ];
    args.extend(batches.iter().map(usize::to_string));
    let out = Command::new(&python)
        .args(&args)
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .expect("running sentence-transformers (bench/embed.sh makes its venv)");
    assert!(
        out.status.success(),
        "sentence-transformers: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let theirs: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("sentence-transformers' figures");
    println!(
        "\nall-MiniLM-L6-v2, {n} texts of ~30 words, CPU ({} cores), median of {rounds} runs",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!("| batch | vecgate built-in texts/s | sentence-transformers texts/s | ratio |");
    println!("|---:|---:|---:|---:|");
    for (b, ours) in batches.iter().zip(&ours) {
        let theirs = theirs[b.to_string()].as_f64().unwrap_or(f64::NAN);
        println!("| {b} | {ours:.1} | {theirs:.1} | {:.2}x |", ours / theirs);
    }
}
