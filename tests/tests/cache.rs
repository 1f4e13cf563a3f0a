//! The result cache on real processes: hits and misses per tier through the Qdrant API and
//! `/v1/search`, invalidation by writes (one router, then two sharing a real redis-server),
//! the per-collection modes, purge, and Redis dying and coming back under load.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use e2e::fixture::{random_vectors, setup, Stream, DIM};
use e2e::{call_cached, metric, ok, shardd, vecgate, Process, RedisServer};
use serde_json::{json, Value};

/// Writes a router config: `shards` (remote URLs) or one built-in shard, and `extra` TOML.
fn config(dir: &Path, name: &str, shards: &[String], extra: &str) -> PathBuf {
    let mut text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n\n",
        dir.join(format!("{name}-data")).display()
    );
    if shards.is_empty() {
        text.push_str("[[shards]]\nname = \"local\"\nbuiltin = true\n\n");
    }
    for (i, url) in shards.iter().enumerate() {
        text.push_str(&format!(
            "[[shards]]\nname = \"s{i}\"\nreplicas = [{{ url = \"{url}\" }}]\n\n"
        ));
    }
    text.push_str(extra);
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

fn admin(router: &Process) -> String {
    format!("http://{}", router.addrs[1])
}

/// `POST path` with `body`, answering 200: (result, x-vecgate-cache).
fn post(url: &str, path: &str, body: &[u8]) -> (Value, Option<String>) {
    let (status, v, cache) = call_cached("POST", &format!("{url}{path}"), body);
    assert_eq!(status, 200, "{path}: {v}");
    (v["result"].clone(), cache)
}

fn query(url: &str, collection: &str, q: &[f32]) -> (Value, Option<String>) {
    let body = json!({"query": q, "limit": 5, "with_payload": true});
    post(
        url,
        &format!("/collections/{collection}/points/query"),
        &serde_json::to_vec(&body).unwrap(),
    )
}

/// (id, score) of each point, the part of an answer a write can change.
fn ranking(result: &Value) -> Vec<(Value, f64)> {
    result["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].clone(), p["score"].as_f64().unwrap()))
        .collect()
}

fn upsert(url: &str, collection: &str, id: u64, vector: &[f32]) {
    ok(
        "PUT",
        &format!("{url}/collections/{collection}/points?wait=true"),
        Some(&json!({"points": [{"id": id, "vector": vector, "payload": {"n": id}}]})),
    );
}

#[test]
fn reads_hit_l1_until_a_write_and_modes_and_purge_apply_per_collection() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        "router",
        &[],
        "[cache]\nl1_max_bytes = 1048576\nttl_s = 60\n\n[collections.stale.cache]\nmode = \"ttl_only\"\n\n[collections.uncached.cache]\nmode = \"off\"\n",
    );
    let router = vecgate(&cfg);
    let url = router.url();
    let data = random_vectors(200, DIM, 7);
    setup(&url, &data);
    let q = &data[3];

    let (first, c1) = query(&url, "docs", q);
    let (second, c2) = query(&url, "docs", q);
    assert_eq!((c1.as_deref(), c2.as_deref()), (Some("miss"), Some("l1")));
    assert_eq!(first, second);

    // The same request spelled differently: key order, whitespace, float spelling, a default
    // spelled out (`offset: 0`).
    let floats: Vec<String> = q.iter().map(|x| format!("{x:e}")).collect();
    let respelled = format!(
        "{{ \"with_payload\" : true,\n \"offset\": 0, \"limit\":5, \"query\": [{}] }}",
        floats.join(" , ")
    );
    let (third, c3) = post(&url, "/collections/docs/points/query", respelled.as_bytes());
    assert_eq!(c3.as_deref(), Some("l1"));
    assert_eq!(ranking(&third), ranking(&first));

    let seed = serde_json::to_vec(&json!({"collection": "docs", "vector": q, "top_k": 5})).unwrap();
    let (status, seed1, s1) = call_cached("POST", &format!("{url}/v1/search"), &seed);
    let (_, seed2, s2) = call_cached("POST", &format!("{url}/v1/search"), &seed);
    assert_eq!(status, 200, "{seed1}");
    assert_eq!((s1.as_deref(), s2.as_deref()), (Some("miss"), Some("l1")));
    assert_eq!(seed1["results"], seed2["results"]);

    let count = br#"{"exact": true}"#;
    let (n1, k1) = post(&url, "/collections/docs/points/count", count);
    let (n2, k2) = post(&url, "/collections/docs/points/count", count);
    assert_eq!((k1.as_deref(), k2.as_deref()), (Some("miss"), Some("l1")));
    assert_eq!(
        (n1["count"].clone(), n2["count"].clone()),
        (json!(200), json!(200))
    );
    let get = |id: u64| call_cached("GET", &format!("{url}/collections/docs/points/{id}"), b"");
    let (g1, g2) = (get(3), get(3));
    assert_eq!(
        (g1.2.as_deref(), g2.2.as_deref()),
        (Some("miss"), Some("l1"))
    );

    // Errors are never cached.
    let bad = br#"{"query": [1.0, 2.0], "limit": 5}"#;
    for _ in 0..2 {
        let (status, _, c) =
            call_cached("POST", &format!("{url}/collections/docs/points/query"), bad);
        assert_eq!((status, c.as_deref()), (400, Some("miss")));
    }

    // An acknowledged write: the next answers are searched again and show it.
    let nearest: Vec<f32> = q.iter().map(|x| x * 10.0).collect();
    upsert(&url, "docs", 9999, &nearest);
    let (after, c4) = query(&url, "docs", q);
    assert_eq!(c4.as_deref(), Some("miss"));
    assert_eq!(after["points"][0]["id"], json!(9999), "{after}");
    let (_, seed3, s3) = call_cached("POST", &format!("{url}/v1/search"), &seed);
    assert_eq!(s3.as_deref(), Some("miss"));
    assert_eq!(seed3["results"][0]["id"], json!(9999));
    let (n3, k3) = post(&url, "/collections/docs/points/count", count);
    assert_eq!(
        (k3.as_deref(), n3["count"].clone()),
        (Some("miss"), json!(201))
    );

    // ttl_only: writes drop nothing; the answer stays until its TTL, as configured.
    ok(
        "PUT",
        &format!("{url}/collections/stale"),
        Some(&json!({"vectors": {"size": DIM, "distance": "Dot"}})),
    );
    upsert(&url, "stale", 1, &data[0]);
    let (s_first, _) = query(&url, "stale", q);
    upsert(&url, "stale", 2, &nearest);
    let (s_again, sc) = query(&url, "stale", q);
    assert_eq!(sc.as_deref(), Some("l1"));
    assert_eq!(s_again, s_first);

    // off: not cached at all.
    ok(
        "PUT",
        &format!("{url}/collections/uncached"),
        Some(&json!({"vectors": {"size": DIM, "distance": "Dot"}})),
    );
    upsert(&url, "uncached", 1, &data[0]);
    assert_eq!(query(&url, "uncached", q).1, None);
    assert_eq!(query(&url, "uncached", q).1, None);

    // Purge one collection, then everything.
    assert_eq!(query(&url, "docs", q).1.as_deref(), Some("l1"));
    let (status, purged, _) = call_cached(
        "POST",
        &format!("{}/admin/cache/purge", admin(&router)),
        br#"{"collection": "docs"}"#,
    );
    assert_eq!((status, purged["purged"].clone()), (200, json!("docs")));
    assert_eq!(query(&url, "docs", q).1.as_deref(), Some("miss"));
    assert_eq!(query(&url, "stale", q).1.as_deref(), Some("l1"));
    let (status, _, _) = call_cached(
        "POST",
        &format!("{}/admin/cache/purge", admin(&router)),
        b"",
    );
    assert_eq!(status, 200);
    assert_eq!(query(&url, "stale", q).1.as_deref(), Some("miss"));
    let (status, _, _) = call_cached(
        "POST",
        &format!("{}/admin/cache/purge", admin(&router)),
        br#"{"colection": 1}"#,
    );
    assert_eq!(status, 400);

    let m = |labels: &[&str]| metric(&admin(&router), "vecgate_cache_lookups_total", labels);
    assert!(m(&["tier=\"l1\"", "result=\"hit\""]) >= 7.0);
    assert!(m(&["tier=\"l1\"", "result=\"miss\""]) >= 7.0);
    let inv = |cause: &str| {
        metric(
            &admin(&router),
            "vecgate_cache_invalidations_total",
            &[&format!("cause=\"{cause}\"")],
        )
    };
    assert!(inv("generation") >= 1.0);
    assert_eq!(inv("purge"), 2.0);
    assert!(metric(&admin(&router), "vecgate_cache_l1_entries", &[]) >= 1.0);
}

#[test]
fn concurrent_identical_misses_run_one_search() {
    let dir = tempfile::tempdir().unwrap();
    let shard = shardd(&dir.path().join("s0"), &[]);
    let cfg = config(dir.path(), "router", &[shard.url()], "[cache]\n");
    let router = vecgate(&cfg);
    let data = random_vectors(300, DIM, 11);
    setup(&router.url(), &data);
    let searched = || {
        metric(
            &shard.url(),
            "shardd_http_requests_total",
            &["route=\"/collections/{c}/points/query\""],
        )
    };
    let before = searched();
    let url = router.url();
    let q = data[5].clone();
    let outcomes: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| s.spawn(|| query(&url, "docs", &q).1.unwrap_or_default()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let searches = searched() - before;
    assert_eq!(searches, 1.0, "{outcomes:?}");
    assert_eq!(
        outcomes.iter().filter(|o| *o == "miss").count(),
        1,
        "{outcomes:?}"
    );
    assert!(outcomes
        .iter()
        .all(|o| ["miss", "coalesced", "l1"].contains(&o.as_str())));
}

/// Two routers over one shardd, sharing a Redis.
struct Pair {
    shard: Process,
    a: Process,
    b: Process,
    redis: RedisServer,
    _dir: tempfile::TempDir,
}

/// Two routers over one shardd sharing a Redis, with `extra` in their `[cache]`.
fn pair(extra: &str) -> Pair {
    let redis = RedisServer::start();
    let url = redis.url();
    pair_over(redis, &url, extra)
}

/// Two routers over one shardd sharing the Redis at `url` (kept running by `redis`).
fn pair_over(redis: RedisServer, url: &str, extra: &str) -> Pair {
    let dir = tempfile::tempdir().unwrap();
    let shard = shardd(&dir.path().join("s0"), &[]);
    let cache = format!("[cache]\nttl_s = 60\nredis_url = \"{url}\"\n{extra}");
    let a = vecgate(&config(dir.path(), "a", &[shard.url()], &cache));
    let b = vecgate(&config(dir.path(), "b", &[shard.url()], &cache));
    Pair {
        shard,
        a,
        b,
        redis,
        _dir: dir,
    }
}

#[test]
fn no_answer_is_stale_after_an_acknowledged_write_on_either_of_two_routers() {
    let p = pair("");
    let data = random_vectors(300, DIM, 5);
    setup(&p.a.url(), &data);
    let queries: Vec<Vec<f32>> = data[..6].to_vec();
    let (a, b, direct) = (p.a.url(), p.b.url(), p.shard.url());

    // An answer cached by one router is an L2 hit on the other.
    assert_eq!(query(&a, "docs", &queries[0]).1.as_deref(), Some("miss"));
    let mut l2 = None;
    for _ in 0..50 {
        // The L2 store runs in the background; give it a moment.
        l2 = query(&b, "docs", &queries[0]).1;
        if l2.as_deref() == Some("l2") {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(matches!(l2.as_deref(), Some("l2") | Some("l1")), "{l2:?}");

    // Readers keep both routers' caches full and busy while writes go through both.
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = [a.clone(), b.clone()]
        .into_iter()
        .map(|url| {
            let (stop, queries) = (stop.clone(), queries.clone());
            std::thread::spawn(move || {
                let mut i = 0;
                while !stop.load(Ordering::SeqCst) && i < 20_000 {
                    query(&url, "docs", &queries[i % queries.len()]);
                    i += 1;
                }
            })
        })
        .collect();
    let mut windows = Vec::new();
    for i in 0..30u64 {
        let (writer, other) = if i % 2 == 0 { (&a, &b) } else { (&b, &a) };
        let q = &queries[i as usize % queries.len()];
        let nearest: Vec<f32> = q.iter().map(|x| x * (20.0 + i as f32)).collect();
        upsert(writer, "docs", 10_000 + i, &nearest);
        let acked = Instant::now();
        let truth = ranking(&query(&direct, "docs", q).0);
        assert_eq!(truth[0].0, json!(10_000 + i));
        // On the router that took the write: never stale, not even once.
        assert_eq!(
            ranking(&query(writer, "docs", q).0),
            truth,
            "write {i} on its own router"
        );
        // On the other: fresh once the bump's message arrived.
        loop {
            if ranking(&query(other, "docs", q).0) == truth {
                windows.push(acked.elapsed());
                break;
            }
            assert!(
                acked.elapsed() < Duration::from_secs(5),
                "write {i} never reached the other router"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    stop.store(true, Ordering::SeqCst);
    readers.into_iter().for_each(|r| r.join().unwrap());
    windows.sort();
    eprintln!(
        "cross-router staleness window over {} writes: p50 {:?}, p99 {:?}, max {:?}",
        windows.len(),
        windows[windows.len() / 2],
        windows[windows.len() * 99 / 100],
        windows[windows.len() - 1]
    );
    assert!(
        metric(
            &admin(&p.b),
            "vecgate_cache_remote_invalidations_total",
            &[]
        ) >= 1.0
    );
}

#[test]
fn redis_killed_mid_stream_fails_no_request_and_is_used_again_when_back() {
    let mut p = pair("");
    let data = random_vectors(300, DIM, 9);
    setup(&p.a.url(), &data);
    let stream = Stream::start(p.a.url(), 2);
    stream.wait_for_ok(200);
    p.redis.kill9();
    let killed = Instant::now();
    // Searches keep coming while Redis is gone (the breaker opens after a few failures).
    while killed.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(metric(&admin(&p.a), "vecgate_cache_l2_errors_total", &[]) >= 1.0);
    assert_eq!(
        metric(&admin(&p.a), "vecgate_cache_l2_breaker_open", &[]),
        1.0
    );
    p.redis.restart();
    let (served, failed, first) = stream.finish();
    assert_eq!(failed, 0, "{first:?}");
    assert!(served > 200);

    // Back: an answer one router stores is found in Redis by the other.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut i = 0;
    loop {
        let q: Vec<f32> = data[i % data.len()].iter().map(|x| x + 0.5).collect();
        i += 1;
        query(&p.a.url(), "docs", &q);
        std::thread::sleep(Duration::from_millis(50));
        if query(&p.b.url(), "docs", &q).1.as_deref() == Some("l2") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Redis not used again after it came back"
        );
    }
    assert_eq!(
        metric(&admin(&p.a), "vecgate_cache_l2_breaker_open", &[]),
        0.0
    );
}

#[test]
fn a_reload_that_changes_the_shard_set_drops_cached_answers_and_cache_changes_need_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let s0 = shardd(&dir.path().join("s0"), &[]);
    let s1 = shardd(&dir.path().join("s1"), &[]);
    let cfg = config(
        dir.path(),
        "router",
        &[s0.url()],
        "[cache]\nwarm_top_n = 0\n",
    );
    let router = vecgate(&cfg);
    let data = random_vectors(100, DIM, 3);
    setup(&router.url(), &data);
    ok(
        "PUT",
        &format!("{}/collections/docs", s1.url()),
        Some(&json!({"vectors": {"size": DIM, "distance": "Dot"}})),
    );
    let q = &data[1];
    query(&router.url(), "docs", q);
    assert_eq!(query(&router.url(), "docs", q).1.as_deref(), Some("l1"));
    let reload = || call_cached("POST", &format!("{}/admin/reload", admin(&router)), b"");

    // A reload that keeps the shard set keeps the answers.
    config(
        dir.path(),
        "router",
        &[s0.url()],
        "[cache]\nwarm_top_n = 0\n\n[routing]\ntimeout_ms = 3000\n",
    );
    assert_eq!(reload().0, 200);
    assert_eq!(query(&router.url(), "docs", q).1.as_deref(), Some("l1"));

    config(
        dir.path(),
        "router",
        &[s0.url(), s1.url()],
        "[cache]\nwarm_top_n = 0\n",
    );
    assert_eq!(reload().0, 200);
    assert_eq!(query(&router.url(), "docs", q).1.as_deref(), Some("miss"));
    assert_eq!(
        metric(
            &admin(&router),
            "vecgate_cache_invalidations_total",
            &["cause=\"topology\""]
        ),
        1.0
    );

    config(
        dir.path(),
        "router",
        &[s0.url(), s1.url()],
        "[cache]\nwarm_top_n = 0\nttl_s = 5\n",
    );
    let (status, body, _) = reload();
    assert_eq!(status, 409, "{body}");
    assert!(
        body["status"]["error"]
            .as_str()
            .unwrap()
            .contains("restart vecgate"),
        "{body}"
    );
}

#[test]
fn strict_global_serves_no_router_an_answer_older_than_any_acknowledged_write() {
    let p = pair("strict = \"global\"\n");
    let data = random_vectors(200, DIM, 13);
    setup(&p.a.url(), &data);
    let (a, b, direct) = (p.a.url(), p.b.url(), p.shard.url());
    let q = &data[2];
    query(&b, "docs", q);
    assert_eq!(query(&b, "docs", q).1.as_deref(), Some("l1"));
    for i in 0..10u64 {
        let (writer, other) = if i % 2 == 0 { (&a, &b) } else { (&b, &a) };
        query(other, "docs", q);
        let nearest: Vec<f32> = q.iter().map(|x| x * (20.0 + i as f32)).collect();
        upsert(writer, "docs", 20_000 + i, &nearest);
        let truth = ranking(&query(&direct, "docs", q).0);
        // The other router's very next read, with no wait for any message.
        assert_eq!(ranking(&query(other, "docs", q).0), truth, "write {i}");
    }
}

fn wait_for_ready(router: &Process) {
    e2e::wait_for(
        &format!("{}/healthz", router.url()),
        Duration::from_secs(30),
    );
}

/// Of `queries`, the share `url` answers from its cache (`l1` or `l2`).
fn hit_ratio(url: &str, queries: &[Vec<f32>]) -> f64 {
    let hits = queries
        .iter()
        .filter(|q| matches!(query(url, "docs", q).1.as_deref(), Some("l1") | Some("l2")))
        .count();
    hits as f64 / queries.len() as f64
}

/// Waits (up to 20 s) until `router`'s warm-up replayed `n` requests.
fn wait_warmed(router: &Process, n: f64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while metric(&admin(router), "vecgate_cache_warmed_total", &[]) < n {
        assert!(
            Instant::now() < deadline,
            "warm-up did not replay {n} requests"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_restarted_router_answers_its_hot_queries_from_a_warm_cache() {
    let dir = tempfile::tempdir().unwrap();
    let warm_cfg = config(dir.path(), "router", &[], "[cache]\nwarm_top_n = 20\n");
    let mut router = vecgate(&warm_cfg);
    let data = random_vectors(300, DIM, 21);
    setup(&router.url(), &data);
    let hot: Vec<Vec<f32>> = data[..20].to_vec();
    for _ in 0..3 {
        for q in &hot {
            query(&router.url(), "docs", q);
        }
    }
    // A query asked once is not among the 20 hottest.
    query(&router.url(), "docs", &data[100]);
    assert!(router.terminate());

    let router = vecgate(&warm_cfg);
    wait_warmed(&router, 20.0);
    let warm = hit_ratio(&router.url(), &hot);
    assert_eq!(
        query(&router.url(), "docs", &data[100]).1.as_deref(),
        Some("miss")
    );
    // A reload warms too.
    let (status, _, _) = call_cached("POST", &format!("{}/admin/reload", admin(&router)), b"");
    assert_eq!(status, 200);
    wait_warmed(&router, 40.0);
    let mut router = router;
    assert!(router.terminate());

    let cold_cfg = config(dir.path(), "router", &[], "[cache]\nwarm_top_n = 0\n");
    let router = vecgate(&cold_cfg);
    let cold = hit_ratio(&router.url(), &hot);
    eprintln!("hit ratio of the 20 hot queries right after a restart: warm {warm}, cold {cold}");
    assert_eq!((warm, cold), (1.0, 0.0));
}

#[test]
fn a_new_router_warms_from_the_demand_other_routers_counted_in_redis() {
    let mut p = pair("warm_top_n = 10\n");
    let data = random_vectors(200, DIM, 17);
    setup(&p.a.url(), &data);
    let hot: Vec<Vec<f32>> = data[..10].to_vec();
    for _ in 0..2 {
        for q in &hot {
            query(&p.a.url(), "docs", q);
        }
    }
    assert!(p.a.terminate());
    // A router that never served these queries starts.
    p.b.restart();
    wait_for_ready(&p.b);
    wait_warmed(&p.b, 10.0);
    assert_eq!(hit_ratio(&p.b.url(), &hot), 1.0);
    assert_eq!(
        metric(
            &admin(&p.b),
            "vecgate_cache_warmups_total",
            &["trigger=\"start\""]
        ),
        1.0
    );
}

#[test]
fn precise_answers_equal_uncached_ones_under_a_write_stream_and_outlive_writes_that_miss_them() {
    use rand::{Rng, SeedableRng};
    let p = pair("\n[collections.docs.cache]\nmode = \"precise\"\n");
    let data = random_vectors(300, DIM, 23);
    setup(&p.a.url(), &data);
    let (a, b, direct) = (p.a.url(), p.b.url(), p.shard.url());
    // Searches with and without a filter (the shard scans 300 points exactly, so a fresh
    // answer is the one exact answer).
    let bodies: Vec<Vec<u8>> = data[..8]
        .iter()
        .enumerate()
        .map(|(i, q)| {
            let mut body = json!({"query": q, "limit": 5, "with_payload": true});
            if i % 2 == 1 {
                body["filter"] = json!({"must": [{"key": "group", "match": {"value": "g1"}}]});
            }
            serde_json::to_vec(&body).unwrap()
        })
        .collect();
    let path = "/collections/docs/points/query";
    let ask = |url: &str, body: &[u8]| {
        let (result, cache) = post(url, path, body);
        (ranking(&result), cache)
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let (mut kept, mut asked_after_writes) = (0, 0);
    for i in 0..24u64 {
        let (writer, other) = if i % 2 == 0 { (&a, &b) } else { (&b, &a) };
        for body in &bodies {
            ask(writer, body);
            ask(other, body);
        }
        let id = 50_000 + i;
        match i % 4 {
            // A point near one of the queries, in group g1: it enters answers.
            0 => {
                let q = &data[rng.random_range(0..8)];
                let v: Vec<f32> = q.iter().map(|x| x * 3.0).collect();
                ok(
                    "PUT",
                    &format!("{writer}/collections/docs/points?wait=true"),
                    Some(&json!({"points": [{"id": id, "vector": v, "payload": {"group": "g1"}}]})),
                );
            }
            // Tiny points: they enter no full answer.
            1 | 2 => {
                let v: Vec<f32> = (0..DIM)
                    .map(|_| rng.random_range(-0.001f32..0.001))
                    .collect();
                ok(
                    "PUT",
                    &format!("{writer}/collections/docs/points?wait=true"),
                    Some(&json!({"points": [{"id": id, "vector": v, "payload": {"group": "g5"}}]})),
                );
            }
            // Delete the best point of one answer.
            _ => {
                let body = &bodies[rng.random_range(0..8)];
                let best = ask(&direct, body).0[0].0.clone();
                ok(
                    "POST",
                    &format!("{writer}/collections/docs/points/delete?wait=true"),
                    Some(&json!({"points": [best]})),
                );
            }
        }
        for body in &bodies {
            let truth = ask(&direct, body).0;
            let (got, cache) = ask(writer, body);
            assert_eq!(
                got, truth,
                "write {i}, on the router that took it ({cache:?})"
            );
            asked_after_writes += 1;
            if cache.as_deref() == Some("l1") {
                kept += 1;
            }
            let deadline = Instant::now() + Duration::from_secs(5);
            while ask(other, body).0 != truth {
                assert!(
                    Instant::now() < deadline,
                    "write {i} never reached the other router"
                );
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    }
    eprintln!("answers still served from L1 right after a write: {kept} of {asked_after_writes}");
    // Tiny points miss every full answer: half the writes leave the answers standing.
    assert!(
        kept * 4 >= asked_after_writes,
        "{kept} of {asked_after_writes}"
    );
    assert!(
        metric(
            &admin(&p.a),
            "vecgate_cache_invalidations_total",
            &["cause=\"precise\""]
        ) >= 1.0
    );
}

#[test]
fn answers_cached_before_a_reload_made_the_collection_precise_are_not_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "router", &[], "[cache]\nwarm_top_n = 0\n");
    let router = vecgate(&cfg);
    let url = router.url();
    let data = random_vectors(100, DIM, 29);
    setup(&url, &data);
    let q = &data[4];
    query(&url, "docs", q);
    assert_eq!(query(&url, "docs", q).1.as_deref(), Some("l1"));
    config(
        dir.path(),
        "router",
        &[],
        "[cache]\nwarm_top_n = 0\n\n[collections.docs.cache]\nmode = \"precise\"\n",
    );
    let (status, body, _) = call_cached("POST", &format!("{}/admin/reload", admin(&router)), b"");
    assert_eq!(status, 200, "{body}");
    let nearest: Vec<f32> = q.iter().map(|x| x * 10.0).collect();
    upsert(&url, "docs", 777, &nearest);
    let (after, cache) = query(&url, "docs", q);
    assert_eq!(after["points"][0]["id"], json!(777), "{cache:?}: {after}");
}

/// One router stores an answer in Redis, the other finds it there, and a write on either is
/// seen by the other: the checks run over Sentinel and Cluster deployments.
fn share_answers_and_writes(p: &Pair, data: &[Vec<f32>]) {
    // Each try asks a query neither router has seen; the store into Redis runs in the
    // background, so the second router asks a moment later.
    let l2 = (0..50).any(|i| {
        let q = &data[i];
        assert_eq!(query(&p.a.url(), "docs", q).1.as_deref(), Some("miss"));
        std::thread::sleep(Duration::from_millis(100));
        query(&p.b.url(), "docs", q).1.as_deref() == Some("l2")
    });
    assert!(l2, "no L2 hit on the second router");
    let q = &data[60];
    query(&p.b.url(), "docs", q);
    let nearest: Vec<f32> = q.iter().map(|x| x * 10.0).collect();
    upsert(&p.a.url(), "docs", 4242, &nearest);
    let deadline = Instant::now() + Duration::from_secs(5);
    while query(&p.b.url(), "docs", q).0["points"][0]["id"] != json!(4242) {
        assert!(
            Instant::now() < deadline,
            "the write never reached the second router"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn the_cache_shares_answers_and_writes_through_a_redis_sentinel() {
    let master = RedisServer::start();
    let sentinel = RedisServer::sentinel(&master);
    let url = format!(
        "redis-sentinel://127.0.0.1:{}?sentinelServiceName=mymaster",
        sentinel.port
    );
    let p = pair_over(master, &url, "");
    let data = random_vectors(100, DIM, 31);
    setup(&p.a.url(), &data);
    share_answers_and_writes(&p, &data);
    drop(sentinel);
}

#[test]
fn the_cache_shares_answers_and_writes_through_a_redis_cluster() {
    let cluster = e2e::RedisCluster::start();
    let url = cluster.url();
    let mut nodes = cluster.nodes.into_iter();
    let first = nodes.next().unwrap();
    let p = pair_over(first, &url, "warm_top_n = 10\n");
    let data = random_vectors(100, DIM, 31);
    setup(&p.a.url(), &data);
    share_answers_and_writes(&p, &data);
    drop(nodes);
}

#[test]
fn a_router_started_while_redis_is_down_serves_and_uses_redis_once_it_is_up() {
    let redis = RedisServer::stopped();
    let url = redis.url();
    let mut p = pair_over(redis, &url, "");
    let data = random_vectors(100, DIM, 37);
    setup(&p.a.url(), &data);
    // Served from the shard and L1 while Redis is not there.
    for q in &data[70..80] {
        assert_eq!(query(&p.a.url(), "docs", q).1.as_deref(), Some("miss"));
        assert_eq!(query(&p.a.url(), "docs", q).1.as_deref(), Some("l1"));
    }
    p.redis.restart();
    share_answers_and_writes(&p, &data);
}
