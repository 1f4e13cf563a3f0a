//! End-to-end tests of `vecgate` in front of real shardd replicas (3 shards x 2 replicas):
//! equality with one shard, quorum writes, failover, read policies and hot reload.

use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use e2e::*;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

const DIM: usize = 8;

fn random_vectors(n: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| (0..DIM).map(|_| rng.random_range(-1.0f32..1.0)).collect())
        .collect()
}

fn setup(url: &str, data: &[Vec<f32>]) {
    ok(
        "PUT",
        &format!("{url}/collections/docs"),
        Some(&json!({"vectors": {"size": DIM, "distance": "Dot"}})),
    );
    for (c, chunk) in data.chunks(100).enumerate() {
        let points: Vec<Value> = chunk
            .iter()
            .enumerate()
            .map(|(j, v)| {
                let i = c * 100 + j;
                let id = if i % 5 == 0 {
                    json!(format!("00000000-0000-0000-0000-{i:012}"))
                } else {
                    json!(i)
                };
                json!({"id": id, "vector": v, "payload": {"group": format!("g{}", i % 7), "n": i}})
            })
            .collect();
        ok(
            "PUT",
            &format!("{url}/collections/docs/points?wait=true"),
            Some(&json!({"points": points})),
        );
    }
}

/// An admin endpoint's JSON (not wrapped in Qdrant's envelope).
fn admin_json(url: &str) -> Value {
    let (status, body) = call("GET", url, None);
    assert_eq!(status, 200, "{url}: {body}");
    body
}

fn ids(points: &Value) -> Vec<Value> {
    points
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].clone())
        .collect()
}

fn search_body(q: &[f32]) -> Value {
    json!({"query": q, "limit": 7, "offset": 3, "with_payload": true, "filter": {"must_not": [{"key": "group", "match": {"value": "g3"}}]}})
}

#[test]
fn a_sharded_cluster_answers_like_one_shard() {
    let cluster = Cluster::start(3, &["eu", "eu"], "read_policy = \"round_robin\"");
    let dir = tempfile::tempdir().unwrap();
    let single = shardd(dir.path(), &[]);
    let data = random_vectors(600, 1);
    setup(&cluster.url(), &data);
    setup(&single.url(), &data);
    let (routed, alone) = (cluster.url(), single.url());
    let both = |method: &str, path: &str, body: Value| {
        let a = ok(method, &format!("{routed}{path}"), Some(&body));
        let b = ok(method, &format!("{alone}{path}"), Some(&body));
        (a, b)
    };
    for q in random_vectors(15, 2) {
        let (a, b) = both("POST", "/collections/docs/points/query", search_body(&q));
        assert_eq!(a, b, "query differs");
        let (a, b) = both(
            "POST",
            "/collections/docs/points/search",
            json!({"vector": q, "limit": 5}),
        );
        assert_eq!(a, b, "legacy search differs");
    }
    let (a, b) = both(
        "POST",
        "/collections/docs/points/query/batch",
        json!({"searches": [search_body(&data[0]), {"filter": {"must": [{"key": "group", "match": {"value": "g1"}}]}, "limit": 4, "offset": 2}]}),
    );
    assert_eq!(a, b, "batch or listing differs");
    let groups = json!({"query": data[2], "group_by": "group", "group_size": 3, "limit": 4, "with_payload": ["n"]});
    let (a, b) = both("POST", "/collections/docs/points/query/groups", groups);
    assert_eq!(a, b, "groups differ");
    let groups = a["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 4);
    for g in groups {
        let hits = g["hits"].as_array().unwrap();
        assert!(!hits.is_empty() && hits.len() <= 3);
        assert!(
            hits.iter()
                .all(|h| h["payload"].as_object().unwrap().keys().eq(["n"].iter())),
            "{g}"
        );
    }
    for filter in [
        json!(null),
        json!({"must": [{"key": "n", "range": {"gte": 100, "lt": 400}}]}),
    ] {
        let (a, b) = both(
            "POST",
            "/collections/docs/points/count?consistency=majority&timeout=5",
            json!({"filter": filter}),
        );
        assert_eq!(a, b);
        let mut pages = (Vec::new(), Vec::new());
        for (url, out) in [(&routed, &mut pages.0), (&alone, &mut pages.1)] {
            let mut offset = Value::Null;
            loop {
                let page = ok(
                    "POST",
                    &format!("{url}/collections/docs/points/scroll"),
                    Some(&json!({"limit": 37, "offset": offset, "filter": filter})),
                );
                out.extend(ids(&page["points"]));
                offset = page["next_page_offset"].clone();
                if offset.is_null() {
                    break;
                }
            }
        }
        assert_eq!(pages.0, pages.1, "scroll paging differs");
    }
    let (a, b) = both(
        "POST",
        "/collections/docs/points",
        json!({"ids": [5, 3, "00000000-0000-0000-0000-000000000010", 999999], "with_vector": true}),
    );
    assert_eq!(a, b);
    assert_eq!(
        ok("GET", &format!("{routed}/collections/docs/points/7"), None),
        ok("GET", &format!("{alone}/collections/docs/points/7"), None)
    );
    both(
        "POST",
        "/collections/docs/points/delete",
        json!({"filter": {"must": [{"key": "group", "match": {"value": "g2"}}]}}),
    );
    both(
        "POST",
        "/collections/docs/points/payload",
        json!({"payload": {"tagged": true}, "points": [1, 3, 4]}),
    );
    both(
        "POST",
        "/collections/docs/points/delete",
        json!({"points": [1, 8, 9]}),
    );
    let (a, b) = both(
        "POST",
        "/collections/docs/points/scroll",
        json!({"limit": 1000, "with_payload": true}),
    );
    assert_eq!(a, b, "state after deletes and payload writes differs");
    let info = ok("GET", &format!("{routed}/collections/docs"), None);
    assert_eq!(
        info["points_count"],
        ok("GET", &format!("{alone}/collections/docs"), None)["points_count"]
    );
    let per_shard: Vec<f64> = cluster
        .replicas
        .iter()
        .map(|r| metric(&r[0].url(), "shardd_points", &["collection=\"docs\""]))
        .collect();
    assert!(
        per_shard.iter().all(|&n| n > 100.0),
        "points are spread over the shards: {per_shard:?}"
    );
    assert_eq!(
        ok("DELETE", &format!("{routed}/collections/docs"), None),
        json!(true)
    );
    assert_eq!(
        ok("GET", &format!("{routed}/collections/docs/exists"), None),
        json!({"exists": false})
    );
}

#[test]
fn bad_writes_are_rejected_before_any_shard_changes() {
    let cluster = Cluster::start(3, &["eu", "eu"], "");
    let url = cluster.url();
    setup(&url, &random_vectors(30, 3));
    let mut points: Vec<Value> = (100..130)
        .map(|i| json!({"id": i, "vector": vec![0.5; DIM]}))
        .collect();
    points.push(json!({"id": 131, "vector": [1.0, 2.0]}));
    let (status, body) = call(
        "PUT",
        &format!("{url}/collections/docs/points"),
        Some(&json!({"points": points})),
    );
    assert_eq!(status, 400, "{body}");
    assert!(body["status"]["error"]
        .as_str()
        .unwrap()
        .contains("point 131"));
    assert_eq!(
        ok(
            "POST",
            &format!("{url}/collections/docs/points/count"),
            Some(&json!({}))
        ),
        json!({"count": 30})
    );
    assert_eq!(
        call(
            "PUT",
            &format!("{url}/collections/nope/points"),
            Some(&json!({"points": []}))
        )
        .0,
        404
    );
    assert_eq!(
        call(
            "POST",
            &format!("{url}/collections/docs/points/query"),
            Some(&json!({"query": [1.0], "limit": 0}))
        )
        .0,
        400
    );
}

#[test]
fn quorum_writes_need_enough_replicas_and_reads_go_on() {
    let mut cluster = Cluster::start(3, &["eu", "eu"], "write_consistency = \"quorum\"");
    let url = cluster.url();
    setup(&url, &random_vectors(60, 4));
    cluster.replicas[0][1].kill9();
    let points: Vec<Value> = (1000..1060)
        .map(|i| json!({"id": i, "vector": vec![0.1; DIM]}))
        .collect();
    let (status, body) = call(
        "PUT",
        &format!("{url}/collections/docs/points"),
        Some(&json!({"points": points})),
    );
    assert_eq!(status, 503, "{body}");
    let msg = body["status"]["error"].as_str().unwrap();
    assert!(
        msg.contains("shard s0: 1 of 2 replicas acknowledged, 2 needed"),
        "{msg}"
    );
    for _ in 0..20 {
        let r = ok(
            "POST",
            &format!("{url}/collections/docs/points/query"),
            Some(&json!({"query": vec![0.3; DIM], "limit": 3})),
        );
        assert_eq!(r["points"].as_array().unwrap().len(), 3);
    }
    cluster.write_config("write_consistency = \"one\"", None);
    let (status, body) = call("POST", &format!("{}/admin/reload", cluster.admin()), None);
    assert_eq!(status, 200, "{body}");
    let carried = admin_json(&format!("{}/admin/cluster", cluster.admin()))["shards"][0]
        ["replicas"][1]
        .clone();
    assert_eq!(
        carried["lagging"],
        json!(true),
        "live replica state survives the reload: {carried}"
    );
    let points: Vec<Value> = (2000..2060)
        .map(|i| json!({"id": i, "vector": vec![0.1; DIM]}))
        .collect();
    ok(
        "PUT",
        &format!("{url}/collections/docs/points"),
        Some(&json!({"points": points})),
    );
}

/// Search loops running against the router, counting answers.
struct Stream {
    handles: Vec<std::thread::JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    errors: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Stream {
    /// Starts `threads` loops of searches (each stops by itself after 20,000).
    fn start(url: String, threads: usize) -> Stream {
        let stop = Arc::new(AtomicBool::new(false));
        let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let errors = Arc::new(std::sync::Mutex::new(Vec::new()));
        let handles = (0..threads)
            .map(|t| {
                let (url, stop, okc, bad, errors) = (
                    url.clone(),
                    stop.clone(),
                    ok.clone(),
                    failed.clone(),
                    errors.clone(),
                );
                std::thread::spawn(move || {
                    let agent = client();
                    let mut i = 0u64;
                    while !stop.load(Ordering::SeqCst) && i < 20_000 {
                        i += 1;
                        let q = vec![((t as f32) + (i as f32)).sin(); DIM];
                        match agent
                            .post(&format!("{url}/collections/docs/points/query"))
                            .send_json(json!({"query": q, "limit": 5}))
                        {
                            Ok(r) if r.status().as_u16() == 200 => {
                                okc.fetch_add(1, Ordering::SeqCst);
                            }
                            Ok(mut r) => {
                                bad.fetch_add(1, Ordering::SeqCst);
                                errors
                                    .lock()
                                    .unwrap()
                                    .push(r.body_mut().read_to_string().unwrap_or_default());
                            }
                            Err(e) => {
                                bad.fetch_add(1, Ordering::SeqCst);
                                errors.lock().unwrap().push(e.to_string());
                            }
                        }
                    }
                })
            })
            .collect();
        Stream {
            handles,
            stop,
            ok,
            failed,
            errors,
        }
    }

    /// Waits (up to a minute) until `n` searches succeeded.
    fn wait_for_ok(&self, n: usize) {
        let t = Instant::now();
        while self.ok.load(Ordering::SeqCst) < n && t.elapsed() < Duration::from_secs(60) {
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops the loops and returns (succeeded, failed, first error).
    fn finish(self) -> (usize, usize, Option<String>) {
        self.stop.store(true, Ordering::SeqCst);
        self.handles.into_iter().for_each(|h| h.join().unwrap());
        let first = self.errors.lock().unwrap().first().cloned();
        (
            self.ok.load(Ordering::SeqCst),
            self.failed.load(Ordering::SeqCst),
            first,
        )
    }
}

#[test]
fn reads_survive_a_replica_kill_and_restart() {
    let mut cluster = Cluster::start(
        3,
        &["eu", "eu"],
        "read_policy = \"round_robin\"\ntimeout_ms = 2000",
    );
    setup(&cluster.url(), &random_vectors(90, 5));
    let stream = Stream::start(cluster.url(), 2);
    stream.wait_for_ok(200);
    cluster.replicas[1][0].kill9();
    stream.wait_for_ok(500);
    cluster.replicas[1][0].restart();
    stream.wait_for_ok(1000);
    let (succeeded, failed, first_error) = stream.finish();
    assert!(succeeded >= 1000);
    assert_eq!(failed, 0, "failed searches: {first_error:?}");
}

#[test]
fn fifty_reloads_under_traffic_fail_no_request() {
    let cluster = Cluster::start(3, &["eu", "eu"], "");
    setup(&cluster.url(), &random_vectors(90, 6));
    let stream = Stream::start(cluster.url(), 2);
    let reload = format!("{}/admin/reload", cluster.admin());
    for i in 0..50 {
        if i % 5 == 4 {
            std::fs::write(
                &cluster.config,
                format!("[routing]\ntimeout_ms = \"soon\"  # invalid {i}\n"),
            )
            .unwrap();
            let (status, body) = call("POST", &reload, None);
            assert_eq!(status, 400, "invalid config {i} accepted: {body}");
            assert!(
                body["status"]["error"]
                    .as_str()
                    .unwrap()
                    .contains("vecgate.toml:2: routing.timeout_ms: invalid type"),
                "{body}"
            );
        } else {
            let policy = ["least_conn", "round_robin", "geo"][i % 3];
            cluster.write_config(
                &format!("read_policy = \"{policy}\"\ntimeout_ms = {}", 2000 + i),
                (i % 2 == 0).then_some((2, 1)),
            );
            let (status, body) = call("POST", &reload, None);
            assert_eq!(status, 200, "valid config {i} rejected: {body}");
            let running = admin_json(&format!("{}/admin/config", cluster.admin()));
            assert_eq!(running["routing"]["timeout_ms"], json!(2000 + i));
            let replicas_of_s2 = admin_json(&format!("{}/admin/cluster", cluster.admin()))
                ["shards"][2]["replicas"]
                .as_array()
                .unwrap()
                .len();
            assert_eq!(replicas_of_s2, if i % 2 == 0 { 1 } else { 2 });
        }
    }
    let (succeeded, failed, first_error) = stream.finish();
    assert!(succeeded > 0);
    assert_eq!(failed, 0, "failed searches: {first_error:?}");
    assert_eq!(
        metric(
            &cluster.admin(),
            "vecgate_config_reloads_total",
            &["result=\"invalid\""]
        ),
        10.0
    );
}

#[test]
fn a_changed_config_file_is_picked_up_without_a_signal() {
    let cluster = Cluster::start(1, &["eu"], "timeout_ms = 1000");
    cluster.write_config("timeout_ms = 1234", None);
    let started = Instant::now();
    while admin_json(&format!("{}/admin/config", cluster.admin()))["routing"]["timeout_ms"]
        != json!(1234)
    {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "file change not picked up"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    cluster.write_config("timeout_ms = 4321", None);
    let pid = cluster.router.pid().unwrap().to_string();
    Command::new("kill").args(["-HUP", &pid]).status().unwrap();
    let started = Instant::now();
    while admin_json(&format!("{}/admin/config", cluster.admin()))["routing"]["timeout_ms"]
        != json!(4321)
    {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "SIGHUP not acted on"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn query_count(replica: &Process) -> f64 {
    metric(
        &replica.url(),
        "shardd_http_requests_total",
        &["route=\"/collections/{c}/points/query\""],
    )
}

#[test]
fn geo_policy_stays_in_region_and_fails_over() {
    let mut cluster = Cluster::start(3, &["eu", "us"], "read_policy = \"geo\"");
    let url = cluster.url();
    setup(&url, &random_vectors(60, 7));
    for _ in 0..60 {
        ok(
            "POST",
            &format!("{url}/collections/docs/points/query"),
            Some(&json!({"query": vec![0.2; DIM]})),
        );
    }
    for shard in &cluster.replicas {
        assert_eq!(
            query_count(&shard[0]),
            60.0,
            "eu replica serves every eu read"
        );
        assert_eq!(
            query_count(&shard[1]),
            0.0,
            "us replica gets none while eu is healthy"
        );
    }
    let agent = client();
    for _ in 0..20 {
        let r = agent
            .post(&format!("{url}/collections/docs/points/query"))
            .header("x-vecgate-region", "us")
            .send_json(json!({"query": vec![0.2; DIM]}))
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
    }
    assert_eq!(
        query_count(&cluster.replicas[0][1]),
        20.0,
        "a caller in us is served from us"
    );
    let routing =
        "read_policy = \"geo\"\n[routing.collections.docs]\nread_policy = \"round_robin\"";
    cluster.write_config(routing, None);
    assert_eq!(
        call("POST", &format!("{}/admin/reload", cluster.admin()), None).0,
        200
    );
    for _ in 0..20 {
        ok(
            "POST",
            &format!("{url}/collections/docs/points/query"),
            Some(&json!({"query": vec![0.2; DIM]})),
        );
    }
    assert_eq!(
        query_count(&cluster.replicas[2][1]),
        30.0,
        "the collection's own policy overrides geo"
    );
    cluster.write_config("read_policy = \"geo\"", None);
    assert_eq!(
        call("POST", &format!("{}/admin/reload", cluster.admin()), None).0,
        200
    );
    cluster.replicas[0][0].kill9();
    for _ in 0..30 {
        ok(
            "POST",
            &format!("{url}/collections/docs/points/query"),
            Some(&json!({"query": vec![0.2; DIM]})),
        );
    }
    assert_eq!(
        query_count(&cluster.replicas[0][1]),
        60.0,
        "reads fail over to us"
    );
    assert_eq!(
        query_count(&cluster.replicas[1][1]),
        30.0,
        "other shards stay in eu"
    );
}

#[test]
fn least_conn_sends_less_to_a_slow_replica() {
    let cluster = Cluster::start(
        1,
        &["eu", "eu"],
        "read_policy = \"least_conn\"\ntimeout_ms = 3000",
    );
    setup(&cluster.url(), &random_vectors(30, 8));
    let slow = cluster.replicas[0][0].pid().unwrap().to_string();
    Command::new("kill")
        .args(["-STOP", &slow])
        .status()
        .unwrap();
    let stream = Stream::start(cluster.url(), 4);
    stream.wait_for_ok(200);
    stream.finish();
    Command::new("kill")
        .args(["-CONT", &slow])
        .status()
        .unwrap();
    let calls = |r: &Process| {
        metric(
            &cluster.admin(),
            "vecgate_replica_calls_total",
            &[&format!("url=\"{}\"", r.url())],
        )
    };
    let (to_slow, to_fast) = (
        calls(&cluster.replicas[0][0]),
        calls(&cluster.replicas[0][1]),
    );
    assert!(
        to_slow * 10.0 < to_fast,
        "slow replica got {to_slow} calls, fast {to_fast}"
    );
}

#[test]
fn check_config_names_file_field_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[[shards]]\nname = \"s0\"\nreplicas = [{ url = \"ftp://x:1\" }]\n",
    )
    .unwrap();
    let out = Command::new(bin("vecgate"))
        .args(["check-config", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml:3: shards[0].replicas[0].url: `ftp://x:1` must start with http://"),
        "{err}"
    );
    let good = dir.path().join("good.toml");
    std::fs::write(&good, "[[shards]]\nname = \"local\"\nbuiltin = true\n").unwrap();
    assert!(Command::new(bin("vecgate"))
        .args(["check-config", good.to_str().unwrap()])
        .output()
        .unwrap()
        .status
        .success());
}

#[test]
fn a_builtin_shard_serves_the_api_in_process() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("embedded.toml");
    std::fs::write(&config, format!("[server]\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n\n[[shards]]\nname = \"local\"\nbuiltin = true\n", dir.path().join("data").display())).unwrap();
    let mut router = vecgate(&config);
    let data = random_vectors(50, 9);
    setup(&router.url(), &data);
    let before = ok(
        "POST",
        &format!("{}/collections/docs/points/query", router.url()),
        Some(&search_body(&data[4])),
    );
    assert_eq!(before["points"].as_array().unwrap().len(), 7);
    router.kill9();
    let router = vecgate(&config);
    let after = ok(
        "POST",
        &format!("{}/collections/docs/points/query", router.url()),
        Some(&search_body(&data[4])),
    );
    assert_eq!(
        before, after,
        "acknowledged writes survive kill -9 of the embedded router"
    );
}

#[test]
fn seed_search_filters_like_the_equivalent_qdrant_query() {
    let cluster = Cluster::start(3, &["eu", "eu"], "");
    let url = cluster.url();
    ok(
        "PUT",
        &format!("{url}/collections/docs"),
        Some(&json!({"vectors": {"size": DIM, "distance": "Cosine"}})),
    );
    let data = random_vectors(300, 10);
    let points: Vec<Value> = data
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let tags = if i % 3 == 0 {
                json!(["physics", "math"])
            } else {
                json!(["biology"])
            };
            let ts = format!("{}-0{}-15T10:00:00Z", 2022 + i % 4, 1 + i % 9);
            json!({"id": i, "vector": v, "payload": {"tags": tags, "timestamp": ts}})
        })
        .collect();
    ok(
        "PUT",
        &format!("{url}/collections/docs/points?wait=true"),
        Some(&json!({"points": points})),
    );
    for q in random_vectors(5, 11) {
        let (status, seed) = call(
            "POST",
            &format!("{url}/v1/search"),
            Some(&json!({
                "collection": "docs", "vector": q, "top_k": 5,
                "filter": {"tags": ["physics"], "timestamp": {"$gte": "2024-01-01"}}
            })),
        );
        assert_eq!(status, 200, "{seed}");
        assert_eq!(seed["partial"], json!(false));
        let qdrant = ok(
            "POST",
            &format!("{url}/collections/docs/points/query"),
            Some(&json!({
                "query": q, "limit": 5, "with_payload": true,
                "filter": {"must": [{"key": "tags", "match": {"any": ["physics"]}}, {"key": "timestamp", "range": {"gte": "2024-01-01"}}]}
            })),
        );
        let expected: Vec<Value> = qdrant["points"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| json!({"id": p["id"], "score": p["score"], "payload": p["payload"]}))
            .collect();
        assert_eq!(seed["results"], json!(expected));
        assert_eq!(expected.len(), 5);
        for r in &expected {
            assert!(r["payload"]["tags"]
                .as_array()
                .unwrap()
                .contains(&json!("physics")));
            assert!(r["payload"]["timestamp"].as_str().unwrap() >= "2024");
        }
    }
    let (status, body) = call(
        "POST",
        &format!("{url}/v1/search"),
        Some(&json!({"collection": "docs", "query": "quantum"})),
    );
    assert_eq!(status, 400);
    assert!(
        body["status"]["error"]
            .as_str()
            .unwrap()
            .contains("embedder"),
        "{body}"
    );
    let (status, body) = call(
        "POST",
        &format!("{url}/v1/search"),
        Some(
            &json!({"collection": "docs", "vector": vec![0.1; DIM], "filter": {"a": {"$regex": "x"}}}),
        ),
    );
    assert_eq!(status, 400);
    assert!(
        body["status"]["error"].as_str().unwrap().contains("$regex"),
        "{body}"
    );
}

#[test]
fn a_lost_shard_fails_reads_unless_partial_answers_are_allowed() {
    let mut cluster = Cluster::start(3, &["eu"], "timeout_ms = 1000");
    let url = cluster.url();
    setup(&url, &random_vectors(90, 12));
    cluster.replicas[1][0].kill9();
    let query = format!("{url}/collections/docs/points/query");
    let (status, body) = call(
        "POST",
        &query,
        Some(&json!({"query": vec![0.2; DIM], "limit": 90})),
    );
    assert_eq!(status, 503, "{body}");
    assert!(
        body["status"]["error"]
            .as_str()
            .unwrap()
            .contains("shard s1"),
        "{body}"
    );
    cluster.write_config("timeout_ms = 1000\nallow_partial = true", None);
    assert_eq!(
        call("POST", &format!("{}/admin/reload", cluster.admin()), None).0,
        200
    );
    let mut resp = client()
        .post(&query)
        .send_json(json!({"query": vec![0.2; DIM], "limit": 90}))
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        resp.headers()
            .get("x-vecgate-partial")
            .and_then(|v| v.to_str().ok()),
        Some("s1")
    );
    let body: Value = resp.body_mut().read_json().unwrap();
    let n = body["result"]["points"].as_array().unwrap().len();
    assert!(n > 0 && n < 90, "{n} points from the two live shards");
    let (status, seed) = call(
        "POST",
        &format!("{url}/v1/search"),
        Some(&json!({"collection": "docs", "vector": vec![0.2; DIM]})),
    );
    assert_eq!(status, 200);
    assert_eq!(seed["partial"], json!(true));
}

#[test]
fn a_replica_that_missed_writes_catches_up_before_it_serves_reads() {
    let mut cluster = Cluster::start(
        1,
        &["eu", "eu"],
        "write_consistency = \"one\"\nread_policy = \"round_robin\"",
    );
    let url = cluster.url();
    setup(&url, &random_vectors(30, 13));
    cluster.replicas[0][1].kill9();
    let points: Vec<Value> = (100..130)
        .map(|i| json!({"id": i, "vector": vec![0.3; DIM], "payload": {"late": true}}))
        .collect();
    ok(
        "PUT",
        &format!("{url}/collections/docs/points"),
        Some(&json!({"points": points})),
    );
    ok(
        "POST",
        &format!("{url}/collections/docs/points/delete"),
        Some(&json!({"points": [1, 2, 3]})),
    );
    ok(
        "POST",
        &format!("{url}/collections/docs/points/payload"),
        Some(&json!({"payload": {"edited": true}, "points": [4]})),
    );
    let lagging = |c: &Cluster| {
        admin_json(&format!("{}/admin/cluster", c.admin()))["shards"][0]["replicas"][1].clone()
    };
    assert_eq!(lagging(&cluster)["lagging"], json!(true));
    assert_eq!(lagging(&cluster)["pending_hints"], json!(3));

    cluster.router.kill9();
    cluster.router = vecgate(&cluster.config);
    let url = cluster.url();
    assert_eq!(
        lagging(&cluster)["pending_hints"],
        json!(3),
        "hints survive a router crash"
    );

    cluster.replicas[0][1].restart();
    let started = Instant::now();
    loop {
        let count = ok(
            "POST",
            &format!("{url}/collections/docs/points/count"),
            Some(&json!({})),
        );
        assert_eq!(
            count,
            json!({"count": 57}),
            "a read was served by the replica that is catching up"
        );
        if lagging(&cluster)["lagging"] == json!(false) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "replica never caught up"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let dump = |p: &Process| {
        ok(
            "POST",
            &format!("{}/collections/docs/points/scroll", p.url()),
            Some(&json!({"limit": 1000, "with_vector": true})),
        )
    };
    assert_eq!(
        dump(&cluster.replicas[0][0]),
        dump(&cluster.replicas[0][1]),
        "replicas differ after catch-up"
    );
    let before = query_count(&cluster.replicas[0][1]);
    for _ in 0..10 {
        ok(
            "POST",
            &format!("{url}/collections/docs/points/query"),
            Some(&json!({"query": vec![0.2; DIM]})),
        );
    }
    assert!(
        query_count(&cluster.replicas[0][1]) >= before + 4.0,
        "the caught-up replica serves reads again"
    );
}

#[test]
fn payload_indexes_are_built_on_every_replica_and_used() {
    let cluster = Cluster::start(3, &["eu", "eu"], "");
    let url = cluster.url();
    setup(&url, &random_vectors(300, 14));
    let q = json!({"query": vec![0.3; DIM], "limit": 8, "filter": {"must": [{"key": "group", "match": {"value": "g3"}}]}});
    let before = ok(
        "POST",
        &format!("{url}/collections/docs/points/query"),
        Some(&q),
    );
    ok(
        "PUT",
        &format!("{url}/collections/docs/index"),
        Some(&json!({"field_name": "group", "field_schema": "keyword"})),
    );
    let info = ok("GET", &format!("{url}/collections/docs"), None);
    assert_eq!(info["payload_schema"]["group"]["points"], 300, "{info}");
    for replica in cluster.replicas.iter().flatten() {
        let own = ok("GET", &format!("{}/collections/docs", replica.url()), None);
        assert_eq!(own["payload_schema"]["group"]["data_type"], "keyword");
    }
    assert_eq!(
        ok(
            "POST",
            &format!("{url}/collections/docs/points/query"),
            Some(&q)
        ),
        before
    );
    for shard in &cluster.replicas {
        let indexed: f64 = shard
            .iter()
            .map(|r| {
                metric(
                    &r.url(),
                    "shardd_filtered_searches_total",
                    &["plan=\"index\""],
                )
            })
            .sum();
        assert_eq!(
            indexed, 1.0,
            "each shard answered the filter from its index"
        );
    }
    ok(
        "DELETE",
        &format!("{url}/collections/docs/index/group"),
        None,
    );
    let info = ok("GET", &format!("{url}/collections/docs"), None);
    assert!(info["payload_schema"].get("group").is_none());
}

#[test]
fn hybrid_fusion_on_a_cluster_equals_one_shard() {
    let cluster = Cluster::start(3, &["eu", "eu"], "");
    let dir = tempfile::tempdir().unwrap();
    let single = shardd(dir.path(), &[]);
    let collection = json!({"vectors": {"dense": {"size": DIM, "distance": "Cosine"}}, "sparse_vectors": {"text": {}}});
    let data = random_vectors(300, 15);
    let points: Vec<Value> = data
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let vector = if i % 4 == 3 {
                json!({"dense": v})
            } else {
                json!({"dense": v, "text": {"indices": [i % 17, 100 + i % 5, 200 + i % 11], "values": [1.0, 0.5 + (i % 3) as f32, 0.25]}})
            };
            json!({"id": i, "vector": vector, "payload": {"n": i, "even": i % 2 == 0}})
        })
        .collect();
    for url in [cluster.url(), single.url()] {
        ok("PUT", &format!("{url}/collections/h"), Some(&collection));
        ok(
            "PUT",
            &format!("{url}/collections/h/points?wait=true"),
            Some(&json!({"points": points})),
        );
    }
    let dense = |q: &[f32], limit: usize| json!({"query": q, "using": "dense", "limit": limit});
    let sparse = |limit: usize| json!({"query": {"indices": [3, 101, 205], "values": [1.0, 2.0, 0.5]}, "using": "text", "limit": limit});
    let q = &data[7];
    let queries = vec![
        json!({"prefetch": [dense(q, 20), sparse(20)], "query": {"fusion": "rrf"}, "limit": 10, "with_payload": true}),
        json!({"prefetch": [dense(q, 20), sparse(20)], "query": {"fusion": "dbsf"}, "limit": 10}),
        json!({"prefetch": [dense(q, 15), sparse(25)], "query": {"rrf": {"k": 60, "weights": [2.0, 1.0]}}, "limit": 8, "offset": 2}),
        json!({
            "prefetch": {"prefetch": [dense(q, 30), sparse(30)], "query": {"fusion": "rrf"}, "limit": 25},
            "query": {"nearest": data[9]}, "using": "dense", "limit": 5,
            "filter": {"must": [{"key": "even", "match": {"value": true}}]}, "with_payload": true,
        }),
    ];
    let mmr = |diversity: f32| json!({"query": {"nearest": q, "mmr": {"diversity": diversity, "candidates_limit": 40}}, "using": "dense", "limit": 6, "with_payload": true});
    let mut queries = queries;
    queries.push(mmr(0.6));
    queries.push(json!({"prefetch": [dense(q, 30), sparse(30)], "query": {"nearest": data[2], "mmr": {"diversity": 0.4}}, "using": "dense", "limit": 4}));
    let relevant = ok(
        "POST",
        &format!("{}/collections/h/points/query", cluster.url()),
        Some(&mmr(0.0)),
    );
    let plain = ok(
        "POST",
        &format!("{}/collections/h/points/query", cluster.url()),
        Some(&dense(q, 6)),
    );
    let ids = |v: &Value| {
        v["points"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["id"].clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        ids(&relevant),
        ids(&plain),
        "mmr without diversity is plain nearest search"
    );
    let diverse = ok(
        "POST",
        &format!("{}/collections/h/points/query", cluster.url()),
        Some(&mmr(0.9)),
    );
    assert_ne!(ids(&diverse), ids(&plain), "diversity changes the picks");
    assert!(
        diverse["points"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["vector"].is_null()),
        "vectors fetched for mmr are not returned"
    );
    for query in &queries {
        let routed = ok(
            "POST",
            &format!("{}/collections/h/points/query", cluster.url()),
            Some(query),
        );
        let alone = ok(
            "POST",
            &format!("{}/collections/h/points/query", single.url()),
            Some(query),
        );
        assert_eq!(routed, alone, "query {query} differs");
        assert!(!routed["points"].as_array().unwrap().is_empty());
    }
    let rrf = ok(
        "POST",
        &format!("{}/collections/h/points/query", cluster.url()),
        Some(&queries[0]),
    );
    assert!(
        rrf["points"][0]["score"].as_f64().unwrap() <= 1.0,
        "RRF scores: {rrf}"
    );
    let rescored = ok(
        "POST",
        &format!("{}/collections/h/points/query", cluster.url()),
        Some(&queries[3]),
    );
    assert!(rescored["points"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["payload"]["even"] == json!(true)));
    let batch = json!({"searches": queries});
    assert_eq!(
        ok(
            "POST",
            &format!("{}/collections/h/points/query/batch", cluster.url()),
            Some(&batch)
        ),
        ok(
            "POST",
            &format!("{}/collections/h/points/query/batch", single.url()),
            Some(&batch)
        )
    );
    let (status, body) = call(
        "POST",
        &format!("{}/collections/h/points/query", cluster.url()),
        Some(&json!({"prefetch": [dense(q, 5)], "query": {"rrf": {"weights": [1.0, 2.0]}}})),
    );
    assert_eq!(status, 400, "{body}");
}

#[test]
fn idf_weighted_sparse_search_through_shards_equals_one_shard() {
    let cluster = Cluster::start(3, &["eu"], "");
    let dir = tempfile::tempdir().unwrap();
    let single = shardd(dir.path(), &[]);
    let collection = json!({"vectors": {"dense": {"size": DIM, "distance": "Dot"}}, "sparse_vectors": {"text": {"modifier": "idf"}}});
    let data = random_vectors(240, 16);
    let points: Vec<Value> = data
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let words: Vec<u32> = (0..4)
                .map(|w| ((i * 7 + w * 13) % 40) as u32)
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect();
            let values: Vec<f32> = words.iter().map(|w| 1.0 + (*w % 3) as f32).collect();
            json!({"id": i, "vector": {"dense": v, "text": {"indices": words, "values": values}}})
        })
        .collect();
    for url in [cluster.url(), single.url()] {
        ok("PUT", &format!("{url}/collections/i"), Some(&collection));
        ok(
            "PUT",
            &format!("{url}/collections/i/points?wait=true"),
            Some(&json!({"points": points})),
        );
    }
    let sparse = json!({"indices": [1, 13, 26, 39], "values": [1.0, 1.0, 2.0, 0.5]});
    let queries = [
        (
            "/points/query",
            json!({"query": sparse, "using": "text", "limit": 10}),
        ),
        (
            "/points/query",
            json!({"prefetch": [{"query": sparse, "using": "text", "limit": 20}, {"query": data[0], "using": "dense", "limit": 20}], "query": {"fusion": "rrf"}, "limit": 10}),
        ),
        (
            "/points/search",
            json!({"vector": {"name": "text", "vector": sparse}, "limit": 10}),
        ),
    ];
    for (path, q) in &queries {
        let routed = ok(
            "POST",
            &format!("{}/collections/i{path}", cluster.url()),
            Some(q),
        );
        let alone = ok(
            "POST",
            &format!("{}/collections/i{path}", single.url()),
            Some(q),
        );
        assert_eq!(routed, alone, "{path} {q}");
    }
}

#[test]
fn scroll_pages_of_ten_thousand_cover_every_point_once() {
    let cluster = Cluster::start(3, &["eu"], "");
    let url = cluster.url();
    ok(
        "PUT",
        &format!("{url}/collections/big"),
        Some(&json!({"vectors": {"size": 2, "distance": "Dot"}})),
    );
    for start in (0..25_000u64).step_by(5_000) {
        let points: Vec<Value> = (start..start + 5_000)
            .map(|i| json!({"id": i, "vector": [1.0, i as f32], "payload": {"even": i % 2 == 0}}))
            .collect();
        ok(
            "PUT",
            &format!("{url}/collections/big/points?wait=true"),
            Some(&json!({"points": points})),
        );
    }
    for (filter, expected) in [
        (json!(null), 25_000u64),
        (
            json!({"must": [{"key": "even", "match": {"value": true}}]}),
            12_500,
        ),
    ] {
        let (mut seen, mut offset, mut pages) = (Vec::new(), Value::Null, 0);
        loop {
            let page = ok(
                "POST",
                &format!("{url}/collections/big/points/scroll"),
                Some(
                    &json!({"limit": 10_000, "offset": offset, "filter": filter, "with_payload": false}),
                ),
            );
            seen.extend(
                page["points"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| p["id"].as_u64().unwrap()),
            );
            pages += 1;
            offset = page["next_page_offset"].clone();
            if offset.is_null() {
                break;
            }
        }
        assert_eq!(pages, expected.div_ceil(10_000));
        let step = 25_000 / expected;
        assert_eq!(
            seen,
            (0..25_000).step_by(step as usize).collect::<Vec<u64>>(),
            "every point once, in id order"
        );
    }
}

#[test]
fn a_shard_that_does_not_answer_in_time_gets_a_504_naming_it() {
    let cluster = Cluster::start(2, &["eu"], "timeout_ms = 600");
    let url = cluster.url();
    setup(&url, &random_vectors(40, 17));
    let stuck = cluster.replicas[1][0].pid().unwrap().to_string();
    Command::new("kill")
        .args(["-STOP", &stuck])
        .status()
        .unwrap();
    let started = Instant::now();
    let (status, body) = call(
        "POST",
        &format!("{url}/collections/docs/points/query"),
        Some(&json!({"query": vec![0.1; DIM]})),
    );
    let waited = started.elapsed();
    Command::new("kill")
        .args(["-CONT", &stuck])
        .status()
        .unwrap();
    assert_eq!(status, 504, "{body}");
    let msg = body["status"]["error"].as_str().unwrap();
    assert!(
        msg.contains("shard s1") && msg.contains("timed out"),
        "{msg}"
    );
    assert!(
        waited < Duration::from_secs(5),
        "the deadline bounds the wait: {waited:?}"
    );
    let (status, _) = call(
        "POST",
        &format!("{url}/collections/docs/points/query"),
        Some(&json!({"query": vec![0.1; DIM]})),
    );
    assert_eq!(status, 200, "the shard answers again once it runs");
}

#[test]
fn sigterm_snapshots_builtin_shards_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("embedded.toml");
    std::fs::write(&config, format!("[server]\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n\n[[shards]]\nname = \"local\"\nbuiltin = true\n", data.display())).unwrap();
    let mut router = vecgate(&config);
    setup(&router.url(), &random_vectors(20, 18));
    assert!(router.terminate(), "SIGTERM exits 0");
    let snapshots = std::fs::read_dir(data.join("local/snapshots"))
        .unwrap()
        .count();
    assert_eq!(
        snapshots, 1,
        "the built-in shard is snapshotted before exit"
    );
    let router = vecgate(&config);
    assert_eq!(
        ok(
            "POST",
            &format!("{}/collections/docs/points/count", router.url()),
            Some(&json!({}))
        ),
        json!({"count": 20})
    );
}
