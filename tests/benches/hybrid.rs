//! Hybrid-query benchmark: dense + sparse prefetches fused with RRF, through vecgate in front of
//! 1 shard (the baseline) and 3 shards, on the same points, in the same run. Real processes on
//! 127.0.0.1, one client thread. Run: `cargo bench -p e2e --bench hybrid`; see BENCHMARKS.md.
//!
//! Knobs (environment): BENCH_N (20000), BENCH_QUERIES (300), BENCH_RUNS (3).

use std::time::Instant;

use e2e::bench::{env_or, median};
use e2e::{client, ok, Cluster};
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

const DIM: usize = 64;

fn load(url: &str, n: usize) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    ok(
        "PUT",
        &format!("{url}/collections/hy"),
        Some(
            &json!({"vectors": {"dense": {"size": DIM, "distance": "Cosine"}}, "sparse_vectors": {"text": {}}}),
        ),
    );
    for start in (0..n).step_by(1000) {
        let points: Vec<Value> = (start..(start + 1000).min(n))
            .map(|i| {
                let dense: Vec<f32> = (0..DIM).map(|_| rng.random_range(-1.0f32..1.0)).collect();
                let words: std::collections::BTreeSet<u32> = (0..8).map(|_| rng.random_range(0..5000)).collect();
                let values: Vec<f32> = words.iter().map(|_| rng.random_range(0.1f32..2.0)).collect();
                json!({"id": i, "vector": {"dense": dense, "text": {"indices": words, "values": values}}, "payload": {"n": i}})
            })
            .collect();
        ok(
            "PUT",
            &format!("{url}/collections/hy/points?wait=true"),
            Some(&json!({"points": points})),
        );
    }
}

/// (p50 latency in ms, median queries/s) over `runs` passes of `queries`.
fn measure(url: &str, queries: &[Value], runs: usize) -> (f64, f64) {
    let agent = client();
    let path = format!("{url}/collections/hy/points/query");
    let (mut latencies, mut qps) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let started = Instant::now();
        for q in queries {
            let t = Instant::now();
            let resp = agent.post(&path).send_json(q).expect("query");
            assert_eq!(resp.status().as_u16(), 200);
            latencies.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        qps.push(queries.len() as f64 / started.elapsed().as_secs_f64());
    }
    (median(latencies), median(qps))
}

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    let (n, nq, runs) = (
        env_or("BENCH_N", 20_000),
        env_or("BENCH_QUERIES", 300),
        env_or("BENCH_RUNS", 3),
    );
    let mut rng = rand::rngs::StdRng::seed_from_u64(2);
    let queries: Vec<Value> = (0..nq)
        .map(|_| {
            let dense: Vec<f32> = (0..DIM).map(|_| rng.random_range(-1.0f32..1.0)).collect();
            let words: std::collections::BTreeSet<u32> =
                (0..4).map(|_| rng.random_range(0..5000)).collect();
            let values = vec![1.0; words.len()];
            json!({
                "prefetch": [
                    {"query": dense, "using": "dense", "limit": 20},
                    {"query": {"indices": words, "values": values}, "using": "text", "limit": 20},
                ],
                "query": {"fusion": "rrf"}, "limit": 10, "with_payload": true,
            })
        })
        .collect();
    let one = Cluster::start(1, &["eu"], "");
    load(&one.url(), n);
    let three = Cluster::start(3, &["eu"], "");
    load(&three.url(), n);
    let (p50_1, qps_1) = measure(&one.url(), &queries, runs);
    let (p50_3, qps_3) = measure(&three.url(), &queries, runs);
    println!("{n} points (64-d dense + 8-term sparse), hybrid RRF query (2 prefetches of 20, limit 10), {nq} queries x {runs} runs, one client thread, release builds");
    println!();
    println!("| topology | p50 latency (ms) | QPS | QPS ratio (vs 1 shard) |");
    println!("|---|---:|---:|---:|");
    println!("| vecgate + 1 shard | {p50_1:.3} | {qps_1:.0} | 1.00x |");
    println!(
        "| vecgate + 3 shards | {p50_3:.3} | {qps_3:.0} | {:.2}x |",
        qps_3 / qps_1
    );
}
