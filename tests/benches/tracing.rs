//! Tracing-overhead benchmark: the same searches from wrk, in one run, through vecgate in front
//! of 3 shardd with span export off (the baseline), on with every trace recorded, and on with
//! 10% recorded; router and shards export to an OTLP receiver on this machine that throws the
//! batches away. Prints medians and ratios to the first row.
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
    let shards = |name: &str, extra: &[&str]| -> Vec<Process> {
        let mut args = vec!["--snapshot-interval-s", "0"];
        args.extend_from_slice(extra);
        (0..3)
            .map(|i| shardd(&dir.path().join(format!("{name}-{i}")), &args))
            .collect()
    };
    let entries = |shards: &[Process]| -> String {
        shards
            .iter()
            .enumerate()
            .map(|(i, p)| remote_shard(&format!("s{i}"), &[p.url()]))
            .collect()
    };
    eprintln!(
        "loading {} x {}-d points into two sets of 3 shards",
        k.n, k.dim
    );
    let plain = shards("plain", &[]);
    // Traced shards record what a router's sampled `traceparent` asks for, nothing of their own.
    let traced = shards(
        "traced",
        &["--otlp-endpoint", &sink.url, "--trace-sample-ratio", "0"],
    );
    let off = router("vecgate", dir.path(), "off", &entries(&plain));
    let telemetry = |ratio: f64| {
        format!(
            "{}[telemetry]\notlp_endpoint = \"{}\"\nsample_ratio = {ratio}\n",
            entries(&traced),
            sink.url
        )
    };
    let on = router("vecgate", dir.path(), "on", &telemetry(1.0));
    let tenth = router("vecgate", dir.path(), "tenth", &telemetry(0.1));
    load(&off.url(), &k);
    load(&on.url(), &k);

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
    let with_shards = |name: &str, router: &Process, shards: &[Process]| {
        let mut pids = vec![router.pid().expect("running")];
        pids.extend(shards.iter().map(|s| s.pid().expect("running")));
        Target::new(name, router.url(), pids)
    };
    let targets = [
        with_shards("tracing off", &off, &plain),
        with_shards("tracing on, every trace", &on, &traced),
        with_shards("tracing on, 10% of traces", &tenth, &traced),
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
