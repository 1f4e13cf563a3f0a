//! End-to-end tests of replica choice: the geo policy's locality and failover, and least-connection
//! steering away from a slow replica.

use std::process::Command;

use e2e::fixture::*;
use e2e::*;
use serde_json::json;

#[test]
fn geo_policy_stays_in_region_and_fails_over() {
    let mut cluster = Cluster::start(3, &["eu", "us"], "read_policy = \"geo\"");
    let url = cluster.url();
    setup(&url, &random_vectors(60, DIM, 7));
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
    setup(&cluster.url(), &random_vectors(30, DIM, 8));
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
