//! Proxy-overhead benchmark: the same requests from wrk, in one run, to one shardd directly (the
//! baseline), to vecgate in front of it, to nginx `proxy_pass` in front of it, and to vecgate's
//! embedded default holding the same points in process; then vecgate in front of 3 shards, and
//! upserts through each. Every figure is printed with its ratio to the direct shard.
//! Run: `bench/proxy.sh` (installs nginx and wrk when missing); see BENCHMARKS.md.
//!
//!
//! With `BENCH_ALLOCATORS="label=DIR ..."` (set by `bench/allocators.sh`) it instead runs the
//! query workload against each build of `DIR/shardd` and `DIR/vecgate` (the latter in front of
//! one and three shards of the default build, and embedded), all in the same rounds.
//!
//! Knobs (environment): BENCH_N (30000 points), BENCH_DIM (128), BENCH_SECONDS (8 per wrk run),
//! BENCH_ROUNDS (3, interleaved), BENCH_CONNECTIONS (16), BENCH_LIMIT (10).

use std::path::Path;

use e2e::bench::*;
use e2e::{shardd, shardd_binary, Process};
use rand::SeedableRng;
use serde_json::{json, Value};

/// The deployments measured behind one vecgate build: in front of one shard, embedded, and in
/// front of three shards.
struct Routers {
    proxy: Process,
    embedded: Process,
    proxy3: Process,
}

impl Routers {
    fn start(
        binary: &str,
        label: &str,
        dir: &Path,
        shard: &Process,
        three: &[Process],
        k: &Knobs,
    ) -> Routers {
        let proxy = router(
            binary,
            dir,
            &format!("proxy-{label}"),
            &remote_shard("s0", &[shard.url()]),
        );
        let embedded = router(
            binary,
            dir,
            &format!("embedded-{label}"),
            "[[shards]]\nname = \"local\"\nbuiltin = true\n",
        );
        load(&embedded.url(), k);
        let shards3: String = three
            .iter()
            .enumerate()
            .map(|(i, p)| remote_shard(&format!("s{i}"), &[p.url()]))
            .collect();
        let proxy3 = router(binary, dir, &format!("proxy3-{label}"), &shards3);
        Routers {
            proxy,
            embedded,
            proxy3,
        }
    }
}

/// A build of both binaries.
struct Build {
    label: String,
    vecgate: String,
    shardd: String,
}

/// The builds named by `BENCH_ALLOCATORS="label=DIR ..."`.
fn allocator_builds() -> Vec<Build> {
    std::env::var("BENCH_ALLOCATORS")
        .unwrap_or_default()
        .split_whitespace()
        .map(|pair| {
            let (label, dir) = pair.split_once('=').expect("BENCH_ALLOCATORS: label=DIR");
            Build {
                label: label.to_string(),
                vecgate: format!("{dir}/vecgate"),
                shardd: format!("{dir}/shardd"),
            }
        })
        .collect()
}

fn main() {
    let k = Knobs {
        n: env_or("BENCH_N", 30_000),
        dim: env_or("BENCH_DIM", 128),
        seconds: env_or("BENCH_SECONDS", 8),
        rounds: env_or("BENCH_ROUNDS", 3),
        connections: env_or("BENCH_CONNECTIONS", 16),
        limit: env_or("BENCH_LIMIT", 10),
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let mut builds = allocator_builds();
    let compare_allocators = !builds.is_empty();
    if !compare_allocators {
        builds.push(Build {
            label: "workspace".to_string(),
            vecgate: "vecgate".to_string(),
            shardd: "shardd".to_string(),
        });
    }
    eprintln!(
        "loading {} x {}-d points into one shardd, 3 shards and the embedded router of {} build(s)",
        k.n,
        k.dim,
        builds.len()
    );
    let shard = shardd(&dir.path().join("shard"), &["--snapshot-interval-s", "0"]);
    load(&shard.url(), &k);
    let three: Vec<Process> = (0..3)
        .map(|i| {
            shardd(
                &dir.path().join(format!("three-{i}")),
                &["--snapshot-interval-s", "0"],
            )
        })
        .collect();
    let routers: Vec<Routers> = builds
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let r = Routers::start(&b.vecgate, &b.label, dir.path(), &shard, &three, &k);
            if i == 0 {
                load(&r.proxy3.url(), &k);
            }
            r
        })
        .collect();
    let nginx = Nginx::start(&shard.addr.to_string());

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
    let direct = || Target::of("shardd direct", &shard);
    let title = format!(
        "/points/query, {} x {}-d, limit {}, with payload",
        k.n, k.dim, k.limit
    );
    if compare_allocators {
        let mut targets = vec![direct()];
        let own_shards: Vec<Process> = builds
            .iter()
            .map(|b| {
                let p = shardd_binary(
                    &b.shardd,
                    &dir.path().join(format!("shard-{}", b.label)),
                    &["--snapshot-interval-s", "0"],
                );
                load(&p.url(), &k);
                p
            })
            .collect();
        for ((b, r), own) in builds.iter().zip(&routers).zip(&own_shards) {
            let label = &b.label;
            targets.push(Target::of(&format!("shardd ({label}) direct"), own));
            targets.push(Target::of(
                &format!("vecgate ({label}) -> shardd"),
                &r.proxy,
            ));
            targets.push(Target::of(
                &format!("vecgate ({label}) embedded"),
                &r.embedded,
            ));
            targets.push(Target::of(
                &format!("vecgate ({label}) -> 3 shardd"),
                &r.proxy3,
            ));
        }
        compare(&format!("{title}, by allocator"), &targets, &query, &k);
        return;
    }
    let r = &routers[0];
    let targets = [
        direct(),
        Target::of("vecgate -> shardd", &r.proxy),
        Target::new("nginx -> shardd", nginx.url.clone(), nginx.pids()),
        Target::of("vecgate embedded", &r.embedded),
        Target::of("vecgate -> 3 shardd", &r.proxy3),
    ];
    compare(&title, &targets, &query, &k);

    let upserts: Vec<String> = (0..64)
        .map(|_| {
            let points: Vec<Value> = (0..10)
                .map(|_| {
                    let mut p = point(0, vector(&mut rng, k.dim));
                    p["id"] = json!("__ID__");
                    p
                })
                .collect();
            json!({ "points": points })
                .to_string()
                .replace("\"__ID__\"", "__ID__")
        })
        .collect();
    let upsert = wrk_script(
        dir.path(),
        "upsert",
        "PUT",
        "/collections/bench/points?wait=true",
        &upserts,
    );
    compare(
        "upserts of 10 new points (wait=true, fsync per write)",
        &targets,
        &upsert,
        &k,
    );
}
