//! End-to-end tests of writes through the router: validation before any shard changes, quorums,
//! and a replica that missed writes catching up before it serves reads.

use std::time::{Duration, Instant};

use e2e::fixture::*;
use e2e::*;
use serde_json::{json, Value};

#[test]
fn bad_writes_are_rejected_before_any_shard_changes() {
    let cluster = Cluster::start(3, &["eu", "eu"], "");
    let url = cluster.url();
    setup(&url, &random_vectors(30, DIM, 3));
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
    setup(&url, &random_vectors(60, DIM, 4));
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

#[test]
fn a_replica_that_missed_writes_catches_up_before_it_serves_reads() {
    let mut cluster = Cluster::start(
        1,
        &["eu", "eu"],
        "write_consistency = \"one\"\nread_policy = \"round_robin\"",
    );
    let url = cluster.url();
    setup(&url, &random_vectors(30, DIM, 13));
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
