//! Result-cache benchmark, in one run over one shardd and a real redis-server: L1-hit
//! throughput against nginx answering a fixed body of the same size (`return 200`); L1-hit,
//! L2-hit and miss latency against no cache; a Zipf-distributed mix (s = 1.1 over 10,000
//! distinct queries) with and without the cache; and the same mix with one write per 100
//! queries, invalidating by generation, write-aware (`precise`), and not at all (`ttl_only`,
//! the bound no invalidation can beat).
//! Run: `bench/cache.sh` (installs nginx, wrk and redis-server when missing); see BENCHMARKS.md.
//!
//! Last, how long another router sharing the Redis serves an answer from before a write.
//!
//! Knobs (environment): BENCH_N (20000 points), BENCH_DIM (64), BENCH_SECONDS (8 per wrk run),
//! BENCH_ROUNDS (3, interleaved), BENCH_CONNECTIONS (16), BENCH_LIMIT (10), BENCH_DISTINCT
//! (10000 queries in the mix), BENCH_WINDOW_WRITES (200).

use std::io::Write;
use std::path::{Path, PathBuf};

use e2e::bench::*;
use e2e::{call_cached, metric, shardd, Process, RedisServer};
use rand::SeedableRng;
use serde_json::json;

fn query_body(rng: &mut rand::rngs::StdRng, k: &Knobs) -> String {
    json!({"query": vector(rng, k.dim), "limit": k.limit, "with_payload": true}).to_string()
}

/// A wrk script drawing its queries from `bodies` by a Zipf law (s = 1.1, rank 1 the most
/// asked), with an upsert of a fresh random point every `write_every` requests (0: none).
fn zipf_script(
    dir: &Path,
    name: &str,
    bodies: &[String],
    dim: usize,
    write_every: usize,
) -> PathBuf {
    let mut lua = String::from("local bodies = {}\n");
    for b in bodies {
        lua.push_str(&format!("table.insert(bodies, [==[{b}]==])\n"));
    }
    lua.push_str(&format!(
        r#"wrk.headers["Content-Type"] = "application/json"
math.randomseed(42)
local n, cdf, sum = #bodies, {{}}, 0
for k = 1, n do sum = sum + 1 / (k ^ 1.1); cdf[k] = sum end
for k = 1, n do cdf[k] = cdf[k] / sum end
local function pick()
  local u, lo, hi = math.random(), 1, n
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if cdf[mid] < u then lo = mid + 1 else hi = mid end
  end
  return lo
end
local i, next_id = 0, 2000000000 + (os.time() % 10000) * 100000
request = function()
  i = i + 1
  if {write_every} > 0 and i % {write_every} == 0 then
    next_id = next_id + 1
    local v = {{}}
    for d = 1, {dim} do v[d] = string.format("%.4f", math.random() * 2 - 1) end
    return wrk.format("PUT", "/collections/bench/points?wait=true", nil,
      '{{"points": [{{"id": ' .. next_id .. ', "vector": [' .. table.concat(v, ",") .. ']}}]}}')
  end
  return wrk.format("POST", "/collections/bench/points/query", nil, bodies[pick()])
end
"#
    ));
    let file = dir.join(format!("{name}.lua"));
    std::fs::write(&file, lua).expect("writing the wrk script");
    file
}

/// A wrk script whose every query is a new random vector: every lookup misses.
fn unique_script(dir: &Path, k: &Knobs) -> PathBuf {
    let lua = format!(
        r#"wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
math.randomseed(7)
request = function()
  local v = {{}}
  for d = 1, {dim} do v[d] = string.format("%.6f", math.random() * 2 - 1) end
  return wrk.format(nil, "/collections/bench/points/query", nil,
    '{{"query": [' .. table.concat(v, ",") .. '], "limit": {limit}, "with_payload": true}}')
end
"#,
        dim = k.dim,
        limit = k.limit
    );
    let file = dir.join("unique.lua");
    std::fs::write(&file, lua).expect("writing the wrk script");
    file
}

/// Lookups a router answered from cache (either tier, or by waiting for an identical search),
/// and all its lookups, so far.
fn lookups(router: &Process) -> (f64, f64) {
    let admin = format!("http://{}", router.addrs[1]);
    let m = |labels: &[&str]| metric(&admin, "vecgate_cache_lookups_total", labels);
    let hits = m(&["tier=\"l1\"", "result=\"hit\""])
        + m(&["tier=\"l2\"", "result=\"hit\""])
        + metric(&admin, "vecgate_cache_coalesced_total", &[]);
    (hits, m(&["tier=\"l1\""]))
}

/// One wrk run of `script` on `router`: the run and its cache hit ratio.
fn mix_run(router: &Process, script: &Path, k: &Knobs) -> (Run, f64) {
    let (h0, t0) = lookups(router);
    let run = wrk(&router.url(), &[router.pid().expect("running")], script, k);
    let (h1, t1) = lookups(router);
    (run, if t1 > t0 { (h1 - h0) / (t1 - t0) } else { 0.0 })
}

fn purge(router: &Process) {
    let (status, body, _) = call_cached(
        "POST",
        &format!("http://{}/admin/cache/purge", router.addrs[1]),
        b"",
    );
    assert_eq!(status, 200, "{body}");
}

fn main() {
    let k = Knobs {
        n: env_or("BENCH_N", 20_000),
        dim: env_or("BENCH_DIM", 64),
        seconds: env_or("BENCH_SECONDS", 8),
        rounds: env_or("BENCH_ROUNDS", 3),
        connections: env_or("BENCH_CONNECTIONS", 16),
        limit: env_or("BENCH_LIMIT", 10),
    };
    let distinct = env_or("BENCH_DISTINCT", 10_000);
    let dir = tempfile::tempdir().expect("temp dir");
    let redis = RedisServer::start();
    eprintln!("loading {} x {}-d points into one shardd", k.n, k.dim);
    let shard = shardd(&dir.path().join("shard"), &["--snapshot-interval-s", "0"]);
    load(&shard.url(), &k);
    let backend = remote_shard("s0", &[shard.url()]);
    let cache = |extra: &str| {
        format!(
            "[cache]\nttl_s = 600\nwarm_top_n = 0\nredis_url = \"{}\"\n{extra}\n{backend}",
            redis.url()
        )
    };
    let cached = router("vecgate", dir.path(), "cached", &cache(""));
    let l2_only = router("vecgate", dir.path(), "l2", &cache("l1_max_bytes = 1"));
    let precise = router(
        "vecgate",
        dir.path(),
        "precise",
        &cache("\n[collections.bench.cache]\nmode = \"precise\""),
    );
    let stale = router(
        "vecgate",
        dir.path(),
        "ttl",
        &cache("\n[collections.bench.cache]\nmode = \"ttl_only\""),
    );
    let uncached = router("vecgate", dir.path(), "uncached", &backend);

    // L1 hits against nginx returning the same bytes.
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let fixed = query_body(&mut rng, &k);
    let path = "/collections/bench/points/query";
    let (_, answer, _) = call_cached("POST", &format!("{}{path}", cached.url()), fixed.as_bytes());
    let answer = answer.to_string();
    let nginx = Nginx::fixed(&answer);
    let one = wrk_script(dir.path(), "fixed", "POST", path, &[fixed]);
    compare(
        &format!("L1 hits: one query, answer of {} bytes", answer.len()),
        &[
            Target::new(
                "nginx return 200 (same bytes)",
                nginx.url.clone(),
                nginx.pids(),
            ),
            Target::of("vecgate L1 hit", &cached),
        ],
        &one,
        &k,
    );

    // Latency by tier: 64 queries, asked over and over, so all hit after the first round.
    let repeated: Vec<String> = (0..64).map(|_| query_body(&mut rng, &k)).collect();
    let repeated = wrk_script(dir.path(), "repeated", "POST", path, &repeated);
    let unique = unique_script(dir.path(), &k);
    println!(
        "\nlatency by tier (median of {} runs of {} s, {} connections)",
        k.rounds, k.seconds, k.connections
    );
    println!("| path | req/s | p50 ms | p99 ms | vecgate CPU us/req |");
    println!("|---|---:|---:|---:|---:|");
    for (name, router, script) in [
        ("L1 hit", &cached, &repeated),
        ("L2 hit (L1 holds nothing)", &l2_only, &repeated),
        ("miss (every query new)", &cached, &unique),
        ("no cache (every query new)", &uncached, &unique),
    ] {
        let runs: Vec<Run> = (0..k.rounds)
            .map(|_| wrk(&router.url(), &[router.pid().expect("running")], script, &k))
            .collect();
        let med = |f: fn(&Run) -> f64| median(runs.iter().map(f).collect());
        println!(
            "| {name} | {:.0} | {:.2} | {:.2} | {:.1} |",
            med(|r| r.rps),
            med(|r| r.p50_ms),
            med(|r| r.p99_ms),
            med(|r| r.cpu_us)
        );
    }

    // A Zipf mix, end to end, from a cold cache.
    let bodies: Vec<String> = (0..distinct).map(|_| query_body(&mut rng, &k)).collect();
    let reads = zipf_script(dir.path(), "zipf", &bodies, k.dim, 0);
    let writes = zipf_script(dir.path(), "zipf-writes", &bodies, k.dim, 100);
    println!(
        "\nZipf mix (s = 1.1 over {distinct} distinct queries), {} s from a cold cache, {} connections",
        k.seconds, k.connections
    );
    println!("| router | writes | req/s | p50 ms | p99 ms | hit ratio |");
    println!("|---|---|---:|---:|---:|---:|");
    for (name, router, script, writes) in [
        ("no cache", &uncached, &reads, "none"),
        ("cache", &cached, &reads, "none"),
        ("no cache", &uncached, &writes, "1 per 100"),
        (
            "cache, generation bump per write",
            &cached,
            &writes,
            "1 per 100",
        ),
        (
            "cache, precise (write-aware)",
            &precise,
            &writes,
            "1 per 100",
        ),
        (
            "cache, ttl_only (no invalidation)",
            &stale,
            &writes,
            "1 per 100",
        ),
    ] {
        for r in [&cached, &precise, &stale] {
            purge(r);
        }
        let (run, ratio) = if std::ptr::eq(router, &uncached) {
            let run = wrk(&router.url(), &[router.pid().expect("running")], script, &k);
            (run, "-".to_string())
        } else {
            let (run, ratio) = mix_run(router, script, &k);
            (run, format!("{ratio:.3}"))
        };
        println!(
            "| {name} | {writes} | {:.0} | {:.2} | {:.2} | {ratio} |",
            run.rps, run.p50_ms, run.p99_ms
        );
    }
    cross_router_window(
        &cached,
        &router("vecgate", dir.path(), "cached2", &cache("")),
        &k,
    );
    let _ = std::io::stdout().flush();
}

/// How long after a write's acknowledgement on `a` the other router `b` still answers from
/// before it: each write upserts a point that becomes a cached query's best, then `b` is asked
/// the query until its answer leads with that point.
fn cross_router_window(a: &Process, b: &Process, k: &Knobs) {
    let writes = env_or("BENCH_WINDOW_WRITES", 200);
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let path = "/collections/bench/points/query";
    let mut windows = Vec::with_capacity(writes);
    for i in 0..writes {
        let q = vector(&mut rng, k.dim);
        let body = json!({"query": q, "limit": k.limit}).to_string();
        call_cached("POST", &format!("{}{path}", b.url()), body.as_bytes());
        let id = 3_000_000_000u64 + i as u64;
        let (status, answer, _) = call_cached(
            "PUT",
            &format!("{}/collections/bench/points?wait=true", a.url()),
            json!({"points": [{"id": id, "vector": q}]})
                .to_string()
                .as_bytes(),
        );
        assert_eq!(status, 200, "{answer}");
        let acked = std::time::Instant::now();
        loop {
            let (_, v, _) = call_cached("POST", &format!("{}{path}", b.url()), body.as_bytes());
            if v["result"]["points"][0]["id"] == json!(id) {
                windows.push(acked.elapsed().as_secs_f64() * 1000.0);
                break;
            }
            assert!(
                acked.elapsed().as_secs() < 5,
                "write {i} never reached the other router"
            );
        }
    }
    windows.sort_by(f64::total_cmp);
    let at = |q: f64| windows[((windows.len() - 1) as f64 * q) as usize];
    println!(
        "\ncross-router staleness ({writes} writes on one router, the other asked until fresh; includes that read): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        at(0.5),
        at(0.99),
        at(1.0)
    );
}
