//! Filtered-search benchmark: p50 latency and single-thread queries/s of a 1%-selective keyword
//! filter on 100,000 points, scanning payloads (the baseline) against a keyword payload index,
//! in the same run. Run: `cargo bench -p shardd --bench filter`; see BENCHMARKS.md.
//!
//! Knobs (environment): BENCH_N (100000), BENCH_DIM (128), BENCH_QUERIES (500), BENCH_RUNS (3).

use std::time::Instant;

use rand::{Rng, SeedableRng};
use serde_json::json;
use shardd::api::request::CreateCollection;
use shardd::engine::payload::WithPayload;
use shardd::engine::payload_index::FieldType;
use shardd::engine::point::PointWrite;
use shardd::engine::point::{PointId, Vector};
use shardd::engine::search::{QueryVector, SearchRequest};
use shardd::shard::Update;
use shardd::{FsyncPolicy, Shard, ShardOptions};

fn env_or(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// Runs every query `runs` times; returns (p50 latency in ms, median queries/s).
fn measure(collection: &Shard, queries: &[SearchRequest], runs: usize) -> (f64, f64) {
    let mut latencies = Vec::new();
    let mut qps = Vec::new();
    for _ in 0..runs {
        let started = Instant::now();
        for q in queries {
            let t = Instant::now();
            let hits = collection.search("bench", q).expect("search");
            assert_eq!(hits.len(), q.limit);
            latencies.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        qps.push(queries.len() as f64 / started.elapsed().as_secs_f64());
    }
    (median(latencies), median(qps))
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
    let (n, dim, nq, runs) = (
        env_or("BENCH_N", 100_000),
        env_or("BENCH_DIM", 128),
        env_or("BENCH_QUERIES", 500),
        env_or("BENCH_RUNS", 3),
    );
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let req = json!({"vectors": {"size": dim, "distance": "Dot"}, "hnsw_config": {"m": 16, "ef_construct": 64}});
    let data = tempfile::tempdir().expect("temp dir");
    let collection = bench_shard(data.path());
    let config: CreateCollection = serde_json::from_value(req).expect("config");
    collection
        .create_collection("bench", config.into_config().expect("valid config"))
        .expect("collection");
    for batch in 0..n.div_ceil(10_000) {
        let writes = (batch * 10_000..((batch + 1) * 10_000).min(n))
            .map(|i| PointWrite {
                id: PointId::Num(i as u64),
                vectors: [(String::new(), Vector::Dense((0..dim).map(|_| rng.random::<f32>()).collect()))].into(),
                payload: json!({"tenant": format!("t{}", i % 100), "n": i, "title": format!("document {i}")}).as_object().expect("object").clone(),
            })
            .collect();
        collection
            .update("bench", Update::Upsert(writes))
            .expect("upsert");
    }
    let queries: Vec<SearchRequest> = (0..nq)
        .map(|i| SearchRequest {
            filter: Some(serde_json::from_value(json!({"must": [{"key": "tenant", "match": {"value": format!("t{}", i % 100)}}]})).expect("filter")),
            with_payload: WithPayload::All(true),
            ..SearchRequest::nearest(
                String::new(),
                QueryVector::Dense((0..dim).map(|_| rng.random::<f32>()).collect()),
                10,
            )
        })
        .collect();
    let (scan_p50, scan_qps) = measure(&collection, &queries, runs);
    collection
        .update(
            "bench",
            Update::CreateIndex {
                field: "tenant".into(),
                kind: FieldType::Keyword,
            },
        )
        .expect("index");
    let (index_p50, index_qps) = measure(&collection, &queries, runs);
    println!("{n} points x {dim}-d, filter `tenant = tX` matching 1% ({} points), limit 10, {nq} queries x {runs} runs, one thread", n / 100);
    println!();
    println!("| filter plan | p50 latency (ms) | QPS | QPS ratio (index / scan) |");
    println!("|---|---:|---:|---:|");
    println!("| payload scan (no index) | {scan_p50:.3} | {scan_qps:.0} | 1.00x |");
    println!(
        "| keyword payload index | {index_p50:.3} | {index_qps:.0} | {:.2}x |",
        index_qps / scan_qps
    );
}
