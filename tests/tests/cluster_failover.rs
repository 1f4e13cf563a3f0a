//! End-to-end tests of failures under the router: killed replicas, lost shards, shards past their
//! deadline, and a clean SIGTERM of built-in shards.

use std::process::Command;
use std::time::{Duration, Instant};

use e2e::fixture::*;
use e2e::*;
use serde_json::{json, Value};

#[test]
fn reads_survive_a_replica_kill_and_restart() {
    let mut cluster = Cluster::start(
        3,
        &["eu", "eu"],
        "read_policy = \"round_robin\"\ntimeout_ms = 2000",
    );
    setup(&cluster.url(), &random_vectors(90, DIM, 5));
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
fn a_lost_shard_fails_reads_unless_partial_answers_are_allowed() {
    let mut cluster = Cluster::start(3, &["eu"], "timeout_ms = 1000");
    let url = cluster.url();
    setup(&url, &random_vectors(90, DIM, 12));
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
fn a_shard_that_does_not_answer_in_time_gets_a_504_naming_it() {
    let cluster = Cluster::start(2, &["eu"], "timeout_ms = 600");
    let url = cluster.url();
    setup(&url, &random_vectors(40, DIM, 17));
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
    setup(&router.url(), &random_vectors(20, DIM, 18));
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

#[test]
fn builtin_shards_are_snapshotted_every_snapshot_interval() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("embedded.toml");
    std::fs::write(&config, format!("[server]\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\ndata_dir = \"{}\"\nsnapshot_interval_s = 1\n\n[[shards]]\nname = \"local\"\nbuiltin = true\n", data.display())).unwrap();
    let mut router = vecgate(&config);
    setup(&router.url(), &random_vectors(20, DIM, 19));
    // File times come from the kernel's coarse clock (a few ms behind): wait that out, so a
    // snapshot taken during the writes cannot look newer than they are.
    std::thread::sleep(Duration::from_millis(20));
    let written = std::time::SystemTime::now();
    let snapshot_since_writes = || {
        std::fs::read_dir(data.join("local/snapshots"))
            .into_iter()
            .flatten()
            .flatten()
            .any(|f| {
                f.metadata()
                    .and_then(|m| m.modified())
                    .is_ok_and(|m| m >= written)
            })
    };
    let started = Instant::now();
    while !snapshot_since_writes() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no snapshot within 10 s of the writes"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    router.kill9();
    let router = vecgate(&config);
    let metrics = client()
        .get(format!("http://{}/metrics", router.addrs[1]))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l == "vecgate_builtin_wal_replayed_records_total 0"),
        "recovery loads the snapshot and replays nothing:\n{metrics}"
    );
}
