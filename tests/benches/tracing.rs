//! Tracing-overhead benchmark: the same searches from wrk, in one run, through three vecgates in
//! front of the same 3 shardd: span export off (the baseline), on with every trace recorded,
//! and on with 10% recorded; routers and shards export to an OTLP receiver on this machine that
//! throws the batches away. Prints medians and ratios to the first row.
//! Run: `bench/tracing.sh`; see BENCHMARKS.md.
//!
//! Knobs (environment): BENCH_N (20000 points), BENCH_DIM (64), BENCH_SECONDS (8 per wrk run),
//! BENCH_ROUNDS (5, interleaved), BENCH_CONNECTIONS (16), BENCH_LIMIT (10).

use e2e::bench::*;
use e2e::otlp::OtlpReceiver;
use e2e::{shardd, Process};
use rand::SeedableRng;
use serde_json::json;

fn main() {
    let k = Knobs {
        n: env_or("BENCH_N", 20_000),
        dim: env_or("BENCH_DIM", 64),
        seconds: env_or("BENCH_SECONDS", 8),
        rounds: env_or("BENCH_ROUNDS", 5),
        connections: env_or("BENCH_CONNECTIONS", 16),
        limit: env_or("BENCH_LIMIT", 10),
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let sink = OtlpReceiver::sink();
    eprintln!("loading {} x {}-d points into 3 shards", k.n, k.dim);
    // One set of shards serves every row (separately built HNSW graphs would differ in search
    // cost by more than what is measured). They export spans, recording only what a router's
    // sampled `traceparent` asks for: with the router's export off they make no span at all.
    let shards: Vec<Process> = (0..3)
        .map(|i| {
            shardd(
                &dir.path().join(format!("shard-{i}")),
                &[
                    "--snapshot-interval-s",
                    "0",
                    "--otlp-endpoint",
                    &sink.url,
                    "--trace-sample-ratio",
                    "0",
                ],
            )
        })
        .collect();
    let entries: String = shards
        .iter()
        .enumerate()
        .map(|(i, p)| remote_shard(&format!("s{i}"), &[p.url()]))
        .collect();
    let off = router("vecgate", dir.path(), "off", &entries);
    let telemetry = |ratio: f64| {
        format!(
            "{entries}[telemetry]\notlp_endpoint = \"{}\"\nsample_ratio = {ratio}\n",
            sink.url
        )
    };
    let on = router("vecgate", dir.path(), "on", &telemetry(1.0));
    let tenth = router("vecgate", dir.path(), "tenth", &telemetry(0.1));
    load(&off.url(), &k);

    let mut rng = rand::rngs::StdRng::seed_from_u64(99);
    let queries: Vec<String> = (0..64)
        .map(|_| {
            json!({"query": vector(&mut rng, k.dim), "limit": k.limit, "with_payload": true})
                .to_string()
        })
        .collect();
    let query = wrk_script(
        dir.path(),
        "query",
        "POST",
        "/collections/bench/points/query",
        &queries,
    );
    let with_shards = |name: &str, router: &Process| {
        let mut pids = vec![router.pid().expect("running")];
        pids.extend(shards.iter().map(|s| s.pid().expect("running")));
        Target::new(name, router.url(), pids)
    };
    let targets = [
        with_shards("tracing off", &off),
        with_shards("tracing on, every trace", &on),
        with_shards("tracing on, 10% of traces", &tenth),
    ];
    compare(
        &format!(
            "/points/query through vecgate -> 3 shardd, {} x {}-d, limit {} (CPU here: router and its shards)",
            k.n, k.dim, k.limit
        ),
        &targets,
        &query,
        &k,
    );
    println!(
        "\nspans exported: {:.1} MB of OTLP batches",
        sink.bytes() as f64 / 1e6
    );
}
