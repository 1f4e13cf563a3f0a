//! HNSW benchmark: recall@10 and single-thread queries/s of shardd's engine against hnswlib, on
//! the same seeded random vectors, in the same run. Run it with `bench/hnsw.sh`; see BENCHMARKS.md.
//!
//! Knobs (environment): BENCH_N (100000), BENCH_DIM (128), BENCH_QUERIES (1000), BENCH_RUNS (3),
//! BENCH_EF ("32,64,128,256,512,1024,2048"), BENCH_PYTHON (bench/.venv/bin/python).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use shardd::api::request::CreateCollection;
use shardd::engine::distance::l2sq;
use shardd::engine::point::PointWrite;
use shardd::engine::point::{PointId, Vector};
use shardd::engine::search::{QueryVector, SearchParams, SearchRequest};
use shardd::shard::Update;
use shardd::{FsyncPolicy, Shard, ShardOptions};

const M: usize = 16;
const EF_CONSTRUCT: usize = 200;
const K: usize = 10;

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn write_f32(path: &Path, rows: &[Vec<f32>]) {
    let bytes: Vec<u8> = rows
        .iter()
        .flatten()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    fs::write(path, bytes).expect("writing vectors");
}

fn ground_truth(base: &[Vec<f32>], queries: &[Vec<f32>]) -> Vec<Vec<u32>> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = queries.len().div_ceil(threads);
    std::thread::scope(|s| {
        let parts: Vec<_> = queries
            .chunks(chunk)
            .map(|qs| {
                s.spawn(move || {
                    qs.iter()
                        .map(|q| {
                            let mut d: Vec<(f32, u32)> = base
                                .iter()
                                .enumerate()
                                .map(|(i, v)| (l2sq(q, v), i as u32))
                                .collect();
                            d.select_nth_unstable_by(K - 1, |a, b| a.0.total_cmp(&b.0));
                            d.truncate(K);
                            d.into_iter().map(|x| x.1).collect()
                        })
                        .collect::<Vec<Vec<u32>>>()
                })
            })
            .collect();
        parts
            .into_iter()
            .flat_map(|h| h.join().expect("ground truth worker"))
            .collect()
    })
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// A shard in `dir` that leaves flushing to the OS, as a benchmark's scratch space.
fn bench_shard(dir: &std::path::Path) -> Shard {
    let metrics = std::sync::Arc::new(
        shardd::metrics::Metrics::new(&prometheus::Registry::new(), "bench").expect("metrics"),
    );
    let options = ShardOptions {
        fsync: FsyncPolicy::Never,
        ..ShardOptions::default()
    };
    Shard::open(dir, options, metrics).expect("shard")
}

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    let n: usize = env_or("BENCH_N", 100_000);
    let dim: usize = env_or("BENCH_DIM", 128);
    let nq: usize = env_or("BENCH_QUERIES", 1000);
    let runs: usize = env_or("BENCH_RUNS", 3);
    let efs: Vec<usize> = env_or("BENCH_EF", "32,64,128,256,512,1024,2048".to_string())
        .split(',')
        .filter_map(|s| s.parse().ok())
        .collect();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let python = env_or(
        "BENCH_PYTHON",
        root.join("bench/.venv/bin/python").display().to_string(),
    );
    let dir = root.join("target/bench-hnsw");
    fs::create_dir_all(&dir).expect("bench dir");

    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let mut gen = |count: usize| -> Vec<Vec<f32>> {
        (0..count)
            .map(|_| (0..dim).map(|_| rng.random::<f32>()).collect())
            .collect()
    };
    let base = gen(n);
    let queries = gen(nq);
    write_f32(&dir.join("base.f32"), &base);
    write_f32(&dir.join("queries.f32"), &queries);
    let truth = ground_truth(&base, &queries);
    let gt: Vec<u8> = truth
        .iter()
        .flatten()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    fs::write(dir.join("gt.u32"), gt).expect("writing ground truth");
    eprintln!("{n} x {dim}-d uniform random vectors, {nq} queries, M={M}, ef_construct={EF_CONSTRUCT}, {runs} timed runs per ef");

    let request = json!({"vectors": {"size": dim, "distance": "Euclid"}, "hnsw_config": {"m": M, "ef_construct": EF_CONSTRUCT, "full_scan_threshold": 0}});
    let data = tempfile::tempdir().expect("temp dir");
    let collection = bench_shard(data.path());
    let config: CreateCollection = serde_json::from_value(request).expect("config");
    collection
        .create_collection("bench", config.into_config().expect("valid config"))
        .expect("collection");
    let started = Instant::now();
    for (b, chunk) in base.chunks(10_000).enumerate() {
        let writes = chunk
            .iter()
            .enumerate()
            .map(|(j, v)| PointWrite {
                id: PointId::Num((b * 10_000 + j) as u64),
                vectors: [(String::new(), Vector::Dense(v.clone()))].into(),
                payload: Default::default(),
            })
            .collect();
        collection
            .update("bench", Update::Upsert(writes))
            .expect("upsert");
    }
    let shardd_build = started.elapsed().as_secs_f64();

    let mut shardd_rows = Vec::new();
    for &ef in &efs {
        let req = |q: &Vec<f32>| SearchRequest {
            params: SearchParams {
                hnsw_ef: Some(ef),
                exact: false,
            },
            ..SearchRequest::nearest(String::new(), QueryVector::Dense(q.clone()), K)
        };
        let mut found = 0;
        let mut qps = Vec::new();
        for run in 0..runs {
            let t = Instant::now();
            for (q, want) in queries.iter().zip(&truth) {
                let hits = collection.search("bench", &req(q)).expect("search");
                if run == 0 {
                    found += hits
                        .iter()
                        .filter(|h| matches!(h.id, PointId::Num(i) if want.contains(&(i as u32))))
                        .count();
                }
            }
            qps.push(nq as f64 / t.elapsed().as_secs_f64());
        }
        shardd_rows.push((ef, found as f64 / (nq * K) as f64, median(qps)));
    }

    let out = Command::new(&python)
        .arg(root.join("bench/hnswlib_bench.py"))
        .args([
            "--dir",
            &dir.display().to_string(),
            "--n",
            &n.to_string(),
            "--dim",
            &dim.to_string(),
            "--queries",
            &nq.to_string(),
        ])
        .args([
            "--m",
            &M.to_string(),
            "--ef-construct",
            &EF_CONSTRUCT.to_string(),
            "--runs",
            &runs.to_string(),
        ])
        .args([
            "--ef",
            &efs.iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(","),
        ])
        .output()
        .unwrap_or_else(|e| panic!("running {python} (create it with bench/hnsw.sh): {e}"));
    assert!(
        out.status.success(),
        "hnswlib bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let hnswlib: Value = serde_json::from_slice(&out.stdout).expect("hnswlib bench prints JSON");

    println!(
        "build: shardd {shardd_build:.1} s (sequential inserts), hnswlib {:.1} s (2 threads)",
        hnswlib["build_seconds"].as_f64().unwrap_or(f64::NAN)
    );
    println!();
    println!("| ef | shardd recall@10 | shardd QPS | hnswlib recall@10 | hnswlib QPS | QPS ratio (shardd / hnswlib) |");
    println!("|---:|---:|---:|---:|---:|---:|");
    for ((ef, recall, qps), theirs) in shardd_rows
        .iter()
        .zip(hnswlib["rows"].as_array().expect("rows"))
    {
        let (r, q) = (
            theirs["recall"].as_f64().unwrap_or(f64::NAN),
            theirs["qps"].as_f64().unwrap_or(f64::NAN),
        );
        println!(
            "| {ef} | {recall:.3} | {qps:.0} | {r:.3} | {q:.0} | {:.2}x |",
            qps / q
        );
    }
}
