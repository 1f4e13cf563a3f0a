//! End-to-end tests of an elastic topology under streaming searches and writes: a replica added
//! empty, a replica that lost its data directory, two routers writing the same ids, and
//! anti-entropy repair of writes a replica never saw.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use e2e::fixture::*;
use e2e::*;
use serde_json::{json, Value};

#[test]
fn replicas_added_empty_are_filled_before_they_serve_and_then_equal_their_peers() {
    let mut cluster = Cluster::start(3, &["eu"], "");
    setup(&cluster.url(), &random_vectors(900, DIM, 11));
    ok(
        "PUT",
        &format!("{}/collections/docs/index", cluster.url()),
        Some(&json!({"field_name": "group", "field_schema": "keyword"})),
    );
    let stream = Stream::start(cluster.url(), 2);
    let writer = Writer::start(cluster.url());
    stream.wait_for_ok(100);
    for s in 0..3 {
        cluster.add_replica(s, "");
    }
    reload(&cluster.admin());
    let joining = admin_json(&format!("{}/admin/cluster", cluster.admin()));
    let new_states: Vec<&Value> = joining["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| &s["replicas"][1]["state"])
        .collect();
    assert!(
        new_states
            .iter()
            .all(|s| *s == "joining" || *s == "serving"),
        "{joining}"
    );
    wait_all_serving(&cluster.admin(), Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(500));
    let expected = writer.finish_clean();
    assert!(finish_searches(stream) > 100);
    assert_replicas_identical(&cluster);
    assert_writes_kept(&cluster.url(), &expected);
    for replicas in &cluster.replicas {
        let info = ok(
            "GET",
            &format!("{}/collections/docs", replicas[1].url()),
            None,
        );
        assert_eq!(
            info["payload_schema"]["group"]["data_type"], "keyword",
            "the payload index was copied: {info}"
        );
    }
    assert_eq!(
        metric(
            &cluster.admin(),
            "vecgate_replica_joins_total",
            &["result=\"done\""]
        ),
        3.0
    );
}

#[test]
fn a_joined_replica_is_followed_by_a_cache_warm_up() {
    let mut cluster = Cluster::start_with(
        1,
        &["eu"],
        "",
        "[cache]\nl1_max_bytes = 1048576\nttl_s = 60\n",
    );
    setup(&cluster.url(), &random_vectors(200, DIM, 16));
    for q in random_vectors(5, DIM, 17) {
        ok(
            "POST",
            &format!("{}/collections/docs/points/query", cluster.url()),
            Some(&json!({"query": q, "limit": 3})),
        );
    }
    cluster.add_replica(0, "");
    reload(&cluster.admin());
    wait_metric(
        &cluster.admin(),
        "vecgate_cache_warmups_total",
        &["trigger=\"join\""],
        1.0,
        Duration::from_secs(30),
    );
    assert!(metric(&cluster.admin(), "vecgate_cache_warmed_total", &[]) >= 5.0);
}

#[test]
fn a_replica_whose_data_directory_was_deleted_is_refilled_without_a_failed_search() {
    // One acknowledgement, so writes go on while the replica is away (with two replicas a
    // quorum is both): every one of them must be on the refilled replica afterwards.
    let mut cluster = Cluster::start(3, &["eu", "eu"], "write_consistency = \"one\"");
    setup(&cluster.url(), &random_vectors(900, DIM, 12));
    let stream = Stream::start(cluster.url(), 2);
    let writer = Writer::start(cluster.url());
    stream.wait_for_ok(100);
    cluster.replicas[0][1].kill9();
    std::fs::remove_dir_all(cluster.replica_dir(0, 1)).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    cluster.replicas[0][1].restart();
    wait_joined(&cluster.admin(), 1.0);
    wait_all_serving(&cluster.admin(), Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(500));
    let expected = writer.finish_clean();
    finish_searches(stream);
    assert_replicas_identical(&cluster);
    assert_writes_kept(&cluster.url(), &expected);
}

#[test]
fn a_replica_that_lost_a_collection_fails_no_search_and_is_refilled() {
    let cluster = Cluster::start(1, &["eu", "eu"], "");
    setup(&cluster.url(), &random_vectors(300, DIM, 15));
    let stream = Stream::start(cluster.url(), 2);
    stream.wait_for_ok(100);
    // Behind the router's back, as an operator's mistake would: the replica stays up and
    // healthy, and answers 404 for the collection.
    ok(
        "DELETE",
        &format!("{}/collections/docs", cluster.replicas[0][1].url()),
        None,
    );
    wait_joined(&cluster.admin(), 1.0);
    stream.wait_for_ok(stream.succeeded() + 200);
    finish_searches(stream);
    assert_replicas_identical(&cluster);
}

#[test]
fn two_routers_writing_the_same_ids_leave_every_replica_identical() {
    let cluster = Cluster::start(3, &["eu", "eu"], "repair_interval_s = 0");
    let second = cluster.another_router("repair_interval_s = 0");
    setup(&cluster.url(), &random_vectors(50, DIM, 13));
    let routers = [cluster.url(), second.url()];
    // Every round, the four writers write the same five ids at the same moment (one of them
    // deletes them every fourth round), so the replicas of a shard receive them in different
    // orders; each id's final state is decided by its own round.
    let barrier = Arc::new(std::sync::Barrier::new(4));
    let writers: Vec<JoinHandle<usize>> = (0..4)
        .map(|t| {
            let url = routers[t % 2].clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let agent = client();
                let mut acked = 0;
                for round in 0..80u64 {
                    let ids = round * 5..round * 5 + 5;
                    barrier.wait();
                    let r = if t == 3 && round.is_multiple_of(4) {
                        agent
                            .post(&format!("{url}/collections/docs/points/delete?wait=true"))
                            .send_json(json!({"points": ids.collect::<Vec<u64>>()}))
                    } else {
                        let points: Vec<Value> = ids
                            .map(|id| {
                                let v = vec![((t as u64 * 1000 + id) as f32).sin(); DIM];
                                json!({"id": id, "vector": v, "payload": {"writer": t}})
                            })
                            .collect();
                        agent
                            .put(&format!("{url}/collections/docs/points?wait=true"))
                            .send_json(json!({"points": points}))
                    };
                    acked += usize::from(matches!(r, Ok(r) if r.status().as_u16() == 200));
                }
                acked
            })
        })
        .collect();
    let acked: usize = writers.into_iter().map(|w| w.join().unwrap()).sum();
    assert_eq!(acked, 320, "every write acknowledged");
    assert_replicas_identical(&cluster);
}

#[test]
fn repair_brings_every_replica_the_writes_it_never_saw() {
    let cluster = Cluster::start(1, &["eu", "eu"], "repair_interval_s = 0");
    setup(&cluster.url(), &random_vectors(300, DIM, 14));
    let behind_the_router = cluster.replicas[0][1].url();
    let points: Vec<Value> = (1000..1010u64)
        .map(|id| json!({"id": id, "vector": vec![0.5; DIM], "payload": {"direct": true}}))
        .collect();
    ok(
        "PUT",
        &format!("{behind_the_router}/collections/docs/points?wait=true"),
        Some(&json!({"points": points})),
    );
    ok(
        "POST",
        &format!("{behind_the_router}/collections/docs/points/delete?wait=true"),
        Some(&json!({"points": [1, 2, 3]})),
    );
    ok(
        "POST",
        &format!("{behind_the_router}/collections/docs/points/payload?wait=true"),
        Some(&json!({"points": [4], "payload": {"patched": 1}})),
    );
    let report = {
        let (status, body) = call("POST", &format!("{}/admin/repair", cluster.admin()), None);
        assert_eq!(status, 200, "{body}");
        body
    };
    assert_eq!(report["status"], "ok", "{report}");
    let docs = &report["shards"][0]["collections"]["docs"];
    assert_eq!(
        docs["copied"],
        json!(14),
        "10 upserts, 3 deletes, 1 payload: {report}"
    );
    assert_replicas_identical(&cluster);
    let again = {
        let (_, body) = call("POST", &format!("{}/admin/repair", cluster.admin()), None);
        body
    };
    assert_eq!(
        again["shards"][0]["collections"]["docs"]["buckets_differing"],
        json!(0),
        "{again}"
    );
    assert_eq!(
        metric(
            &cluster.admin(),
            "vecgate_repair_points_copied_total",
            &["shard=\"s0\""]
        ),
        14.0
    );
}

/// Waits (up to a minute) until `n` replica joins finished at the router `admin`.
fn wait_joined(admin: &str, n: f64) {
    wait_metric(
        admin,
        "vecgate_replica_joins_total",
        &["result=\"done\""],
        n,
        Duration::from_secs(60),
    );
}

/// Upserts one point through `url`; the answer's `x-vecgate-version`.
fn write_one(url: &str, id: u64, vector: Vec<f32>) -> u64 {
    let resp = client()
        .put(&format!("{url}/collections/docs/points?wait=true"))
        .send_json(json!({"points": [{"id": id, "vector": vector, "payload": {"w": id}}]}))
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    resp.headers()
        .get("x-vecgate-version")
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .expect("a write is answered with its version")
}

/// The top hit of a search through `url`, sent with `token` as `x-vecgate-version`.
fn top_hit(url: &str, token: Option<u64>) -> Value {
    let mut req = client().post(&format!("{url}/collections/docs/points/query"));
    if let Some(v) = token {
        req = req.header("x-vecgate-version", v.to_string());
    }
    let mut resp = req
        .send_json(json!({"query": vec![1.0; DIM], "limit": 1}))
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let body: Value = serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap();
    body["result"]["points"][0]["id"].clone()
}

#[test]
fn writes_are_answered_with_versions_that_reads_may_present() {
    let cluster = Cluster::start(2, &["eu", "eu"], "");
    setup(&cluster.url(), &random_vectors(50, DIM, 18));
    let a = write_one(&cluster.url(), 900, vec![10.0; DIM]);
    let b = write_one(&cluster.url(), 901, vec![0.1; DIM]);
    assert!(b > a, "versions rise: {a} then {b}");
    assert_eq!(top_hit(&cluster.url(), Some(b)), json!(900));
    let (status, body) = {
        let r = client()
            .post(&format!("{}/collections/docs/points/query", cluster.url()))
            .header("x-vecgate-version", "soon")
            .send_json(json!({"query": vec![1.0; DIM]}));
        match r {
            Ok(mut r) => (r.status().as_u16(), r.body_mut().read_to_string().unwrap()),
            Err(e) => (0, e.to_string()),
        }
    };
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("x-vecgate-version"), "{body}");
}

#[test]
fn a_read_with_a_version_through_another_router_sees_that_write() {
    let etcd = EtcdServer::start();
    let routing = "write_consistency = \"one\"\ntimeout_ms = 600\nread_policy = \"round_robin\"";
    let mut cluster = Cluster::start_with(
        1,
        &["eu", "eu"],
        routing,
        &format!("[cluster]\netcd_endpoints = [\"{}\"]\n", etcd.url),
    );
    let other = cluster.another_router(routing);
    setup(&cluster.url(), &random_vectors(50, DIM, 19));
    // One replica stops answering: the write reaches the other, and the first router keeps
    // a hint for the stopped one, and records in etcd that it missed writes.
    let stopped = cluster.replicas[0][1].pid().unwrap().to_string();
    let signal = |sig: &str| {
        std::process::Command::new("kill")
            .args([sig, &stopped])
            .status()
            .unwrap()
    };
    signal("-STOP");
    let version = write_one(&cluster.url(), 777, vec![10.0; DIM]);
    // The first router dies before it can replay; the replica comes back without the write.
    cluster.router.kill9();
    signal("-CONT");
    std::thread::sleep(Duration::from_millis(1500));
    let unversioned: Vec<Value> = (0..20).map(|_| top_hit(&other.url(), None)).collect();
    assert!(
        unversioned.iter().any(|id| *id != json!(777)),
        "without a version some reads reach the replica that missed the write: {unversioned:?}"
    );
    for _ in 0..20 {
        assert_eq!(top_hit(&other.url(), Some(version)), json!(777));
    }
}
