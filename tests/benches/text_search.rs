//! Text-query benchmark: `/v1/search` with a text query, 32 wrk connections, through two embedded
//! vecgates with the built-in all-MiniLM-L6-v2 embedder: micro-batching on (`max_batch = 32`,
//! `max_wait_ms = 2`) and off (`max_batch = 1`), the embedding cache off in both so every query
//! is embedded, interleaved round by round. Prints p50/p99 and the ratio to "off".
//! Run: `bench/text_search.sh`; see BENCHMARKS.md.
//!
//! Knobs (environment): BENCH_N (500 points), BENCH_SECONDS (8), BENCH_ROUNDS (3),
//! BENCH_CONNECTIONS (32).

use e2e::bench::*;
use e2e::{minilm_dir, ok, Process};
use serde_json::{json, Value};

fn router_with(dir: &std::path::Path, name: &str, batching: &str) -> Process {
    router(
        "vecgate",
        dir,
        name,
        &format!(
            "[[shards]]\nname = \"local\"\nbuiltin = true\n\n[embedding]\nprovider = \"builtin\"\nmodel_dir = \"{}\"\ncache_max_bytes = 0\n{batching}\n",
            minilm_dir().display()
        ),
    )
}

fn main() {
    let k = Knobs {
        n: env_or("BENCH_N", 500),
        dim: 384,
        seconds: env_or("BENCH_SECONDS", 8),
        rounds: env_or("BENCH_ROUNDS", 3),
        connections: env_or("BENCH_CONNECTIONS", 32),
        limit: 5,
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let on = router_with(dir.path(), "batching", "max_batch = 32\nmax_wait_ms = 2");
    let off = router_with(dir.path(), "single", "max_batch = 1\nmax_wait_ms = 0");
    eprintln!("embedding {} passages into each router", k.n);
    for r in [&on, &off] {
        ok(
            "PUT",
            &format!("{}/collections/docs", r.url()),
            Some(&json!({"vectors": {"size": 384, "distance": "Cosine"}})),
        );
        for start in (0..k.n).step_by(100) {
            let points: Vec<Value> = (start..(start + 100).min(k.n))
                .map(|i| json!({"id": i, "vector": {"text": format!("passage {i} about topic {} in a document on vector search", i % 17), "model": "sentence-transformers/all-MiniLM-L6-v2"}, "payload": {"n": i}}))
                .collect();
            ok(
                "PUT",
                &format!("{}/collections/docs/points?wait=true", r.url()),
                Some(&json!({ "points": points })),
            );
        }
    }
    let queries: Vec<String> = (0..512)
        .map(|i| {
            json!({"collection": "docs", "query": format!("which passage talks about topic {} and question {i}?", i % 17), "top_k": k.limit})
                .to_string()
        })
        .collect();
    let script = wrk_script(dir.path(), "text", "POST", "/v1/search", &queries);
    compare(
        &format!(
            "/v1/search with a text query (built-in MiniLM, embedding cache off), {} points",
            k.n
        ),
        &[
            Target::of("micro-batching off (max_batch 1)", &off),
            Target::of("micro-batching on (max_batch 32, 2 ms)", &on),
        ],
        &script,
        &k,
    );
}
