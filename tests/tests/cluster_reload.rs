//! End-to-end tests of configuration: hot reload under traffic, a watched config file, and
//! `check-config`.

use std::process::Command;
use std::time::{Duration, Instant};

use e2e::fixture::*;
use e2e::*;
use serde_json::json;

#[test]
fn fifty_reloads_under_traffic_fail_no_request() {
    let cluster = Cluster::start(3, &["eu", "eu"], "");
    setup(&cluster.url(), &random_vectors(90, DIM, 6));
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
