//! What a new user meets first: one process per data directory and port, errors that name
//! what was sent, a startup line that says what runs, and `scripts/cluster.sh`.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use e2e::*;
use serde_json::{json, Value};

fn points(range: std::ops::Range<u64>) -> Value {
    let points: Vec<Value> = range
        .map(|i| json!({"id": i, "vector": [i as f32, 1.0, 0.5, 0.25], "payload": {"n": i}}))
        .collect();
    json!({ "points": points })
}

fn count(url: &str) -> u64 {
    ok(
        "POST",
        &format!("{url}/collections/docs/points/count"),
        Some(&json!({})),
    )["count"]
        .as_u64()
        .unwrap()
}

fn create_docs(url: &str) {
    ok(
        "PUT",
        &format!("{url}/collections/docs"),
        Some(&json!({"vectors": {"size": 4, "distance": "Cosine"}})),
    );
}

fn embedded_config(path: &std::path::Path, data: &std::path::Path, listen: &str) {
    std::fs::write(
        path,
        format!(
            "[server]\nlisten = \"{listen}\"\nadmin = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n\n[[shards]]\nname = \"local\"\nbuiltin = true\n",
            data.display()
        ),
    )
    .unwrap();
}

#[test]
fn a_second_shardd_on_a_held_directory_or_port_exits_and_nothing_acknowledged_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("shard");
    let mut first = shardd(&data, &[]);
    let url = first.url();
    create_docs(&url);
    ok(
        "PUT",
        &format!("{url}/collections/docs/points?wait=true"),
        Some(&points(0..20)),
    );

    let pid = first.pid().unwrap();
    let (status, stderr) = run_to_exit(
        "shardd",
        &[
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            data.to_str().unwrap(),
        ],
        Duration::from_secs(10),
    );
    assert!(
        !status.success(),
        "a second shardd on a held directory must fail"
    );
    assert!(
        stderr.contains(&format!("data directory {} is in use", data.display()))
            && stderr.contains(&format!("pid {pid}")),
        "{stderr}"
    );

    let addr = first.addr.to_string();
    let (status, stderr) = run_to_exit(
        "shardd",
        &[
            "--listen",
            &addr,
            "--data-dir",
            dir.path().join("other").to_str().unwrap(),
        ],
        Duration::from_secs(10),
    );
    assert!(
        !status.success(),
        "a second shardd on a held port must fail"
    );
    assert!(
        stderr.contains(&format!("cannot listen on {addr}")),
        "{stderr}"
    );

    ok(
        "PUT",
        &format!("{url}/collections/docs/points?wait=true"),
        Some(&points(20..30)),
    );
    first.restart();
    assert_eq!(count(&first.url()), 30, "every acknowledged write survives");
}

#[test]
fn a_second_vecgate_on_a_held_directory_or_port_exits_and_nothing_acknowledged_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("embedded.toml");
    embedded_config(&config, &data, "127.0.0.1:0");
    let mut first = vecgate(&config);
    let url = first.url();
    create_docs(&url);
    ok(
        "PUT",
        &format!("{url}/collections/docs/points?wait=true"),
        Some(&points(0..20)),
    );

    let pid = first.pid().unwrap();
    let (status, stderr) = run_to_exit(
        "vecgate",
        &["--config", config.to_str().unwrap()],
        Duration::from_secs(10),
    );
    assert!(
        !status.success(),
        "a second vecgate on a held directory must fail"
    );
    let held = data.join("local");
    assert!(
        stderr.contains(&format!("data directory {} is in use", held.display()))
            && stderr.contains(&format!("pid {pid}")),
        "{stderr}"
    );

    let other = dir.path().join("other.toml");
    embedded_config(
        &other,
        &dir.path().join("other-data"),
        &first.addr.to_string(),
    );
    let (status, stderr) = run_to_exit(
        "vecgate",
        &["--config", other.to_str().unwrap()],
        Duration::from_secs(10),
    );
    assert!(
        !status.success(),
        "a second vecgate on a held port must fail"
    );
    assert!(
        stderr.contains(&format!("cannot listen on {} (server.listen)", first.addr)),
        "{stderr}"
    );

    ok(
        "PUT",
        &format!("{url}/collections/docs/points?wait=true"),
        Some(&points(20..30)),
    );
    first.kill9();
    let first = vecgate(&config);
    assert_eq!(count(&first.url()), 30, "every acknowledged write survives");
}

#[test]
fn a_second_router_on_a_held_hint_directory_exits() {
    let cluster = Cluster::start(1, &["eu"], "");
    let pid = cluster.router.pid().unwrap();
    let (status, stderr) = run_to_exit(
        "vecgate",
        &["--config", cluster.config.to_str().unwrap()],
        Duration::from_secs(10),
    );
    assert!(!status.success());
    assert!(
        stderr.contains("hints is in use") && stderr.contains(&format!("pid {pid}")),
        "{stderr}"
    );
}

/// The message of an error answer.
fn error_of(method: &str, url: &str, body: Option<&[u8]>) -> (u16, String) {
    let (status, v) = call_raw(method, url, body);
    (
        status,
        v["status"]["error"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

#[test]
fn errors_name_what_the_user_sent_on_shardd_and_through_the_router() {
    let dir = tempfile::tempdir().unwrap();
    let shard = shardd(&dir.path().join("shard"), &[]);
    let config = dir.path().join("embedded.toml");
    embedded_config(&config, &dir.path().join("data"), "127.0.0.1:0");
    let router = vecgate(&config);
    for url in [shard.url(), router.url()] {
        let (status, msg) = error_of(
            "PUT",
            &format!("{url}/collections/a"),
            Some(br#"{"vectors": {"size": 4, "distance": "cosine"}}"#),
        );
        assert_eq!(status, 400, "{url}: {msg}");
        assert!(
            msg.contains("vectors.distance: unknown variant `cosine`, expected one of `Cosine`, `Dot`, `Euclid`, `Manhattan`"),
            "{url}: {msg}"
        );

        let (status, msg) = error_of("PUT", &format!("{url}/collections/y"), Some(b""));
        assert_eq!(status, 400, "{url}: {msg}");
        assert!(msg.contains("the request body is empty"), "{url}: {msg}");
        let (status, _) = call("GET", &format!("{url}/collections/y/exists"), None);
        assert_eq!(status, 200);
        assert_eq!(
            ok("GET", &format!("{url}/collections/y/exists"), None)["exists"],
            json!(false),
            "{url}: an empty body creates nothing"
        );

        create_docs(&url);
        let (status, msg) = error_of(
            "PUT",
            &format!("{url}/collections/docs/points"),
            Some(br#"{"points": [{"id": 1, "vector": [1, 2, 3]}]}"#),
        );
        assert_eq!(status, 400, "{url}: {msg}");
        assert!(
            msg.contains("point 1: vector has dimension 3, expected 4 (collection `docs`)"),
            "{url}: {msg}"
        );
        let (status, msg) = error_of(
            "POST",
            &format!("{url}/collections/docs/points/query"),
            Some(br#"{"query": [1, 2, 3]}"#),
        );
        assert_eq!(status, 400, "{url}: {msg}");
        assert!(
            msg.contains("query vector has dimension 3, expected 4 (collection `docs`, vector)"),
            "{url}: {msg}"
        );

        ok(
            "PUT",
            &format!("{url}/collections/named"),
            Some(&json!({"vectors": {"dense": {"size": 2, "distance": "Dot"}}})),
        );
        let (_, msg) = error_of(
            "PUT",
            &format!("{url}/collections/named/points"),
            Some(br#"{"points": [{"id": 7, "vector": {"dense": [1]}}]}"#),
        );
        assert!(
            msg.contains(r#"point 7: vector "dense" has dimension 1, expected 2"#),
            "{url}: {msg}"
        );

        let (status, v) = call("PATCH", &format!("{url}/collections/docs"), None);
        assert_eq!(status, 405, "{url}: {v}");
        let allow = header_of(
            "GET",
            &format!("{url}/collections/docs/points/search"),
            "allow",
        );
        assert_eq!(allow.as_deref(), Some("POST"), "{url}");
        assert!(v["status"]["error"]
            .as_str()
            .unwrap()
            .contains("takes PUT, GET, DELETE"));
    }

    let (status, msg) = error_of(
        "POST",
        &format!("{}/v1/search", router.url()),
        Some(br#"{"collection": "docs", "vector": [1, 0, 0, 0], "filter": {"timestamp": {"$gte": "2024-13-45"}}}"#),
    );
    assert_eq!(status, 400, "{msg}");
    assert!(
        msg.contains("filter.timestamp.$gte: \"2024-13-45\" is neither a number nor an RFC 3339"),
        "{msg}"
    );
    let admin = format!("http://{}", router.addrs[1]);
    assert_eq!(
        header_of("GET", &format!("{admin}/admin/reload"), "allow").as_deref(),
        Some("POST")
    );
    assert_eq!(
        header_of("POST", &format!("{}/metrics", shard.url()), "allow").as_deref(),
        Some("GET")
    );
}

/// The value of response header `name`.
fn header_of(method: &str, url: &str, name: &str) -> Option<String> {
    let req = ureq::http::Request::builder()
        .method(method)
        .uri(url)
        .body(Vec::new())
        .unwrap();
    let resp = client().run(req).unwrap();
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

#[test]
fn startup_says_what_runs_without_colours_and_exports_builtin_metrics_only_with_builtins() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("embedded.toml");
    embedded_config(&config, &data, "127.0.0.1:0");
    let mut child = Command::new(bin("vecgate"))
        .args(["--config", config.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let line = stderr
        .lines()
        .map_while(Result::ok)
        .find(|l| l.contains("vecgate running"))
        .expect("a startup line");
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        !line.contains('\u{1b}'),
        "no ANSI colours on a pipe: {line:?}"
    );
    for needle in [
        "mode=\"embedded\"",
        "shards=local",
        &format!("data_dir={}", data.display()),
        "api=127.0.0.1:",
        "admin=127.0.0.1:",
    ] {
        assert!(line.contains(needle), "`{needle}` missing from {line:?}");
    }

    let embedded = vecgate(&config);
    let admin = format!("http://{}", embedded.addrs[1]);
    create_docs(&embedded.url());
    assert!(metric(&admin, "vecgate_builtin_points", &[]) >= 0.0);
    assert!(metrics_text(&admin).contains("vecgate_builtin_"));
    let cluster = Cluster::start(1, &["eu"], "");
    assert!(
        !metrics_text(&cluster.admin()).contains("vecgate_builtin_"),
        "no built-in shard, no built-in metrics"
    );
}

fn metrics_text(admin: &str) -> String {
    client()
        .get(format!("{admin}/metrics"))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap()
}

/// Kills a whole process group when dropped, so a failed test leaves no cluster behind.
struct KillGroupOnDrop(u32);

impl Drop for KillGroupOnDrop {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.0)])
            .status();
    }
}

/// A 2 x 2 cluster config on free ports, for `scripts/cluster.sh`, with a commented-out
/// `[cluster]` naming a fifth address (`ports[4]`), which is no replica.
fn cluster_config(path: &std::path::Path, data: &std::path::Path) -> Vec<u16> {
    let ports: Vec<u16> = (0..5).map(|_| free_port()).collect();
    let replicas = |a: u16, b: u16| {
        format!("[{{ url = \"http://127.0.0.1:{a}\" }}, {{ url = \"http://127.0.0.1:{b}\" }}]")
    };
    std::fs::write(
        path,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n\n[routing]\nwrite_consistency = \"one\"\n\n[[shards]]\nname = \"s0\"\nreplicas = {}\n\n[[shards]]\nname = \"s1\"\nreplicas = {}\n\n# [cluster]\n# etcd_endpoints = [\"http://127.0.0.1:{}\"]\n",
            data.join("router").display(),
            replicas(ports[0], ports[1]),
            replicas(ports[2], ports[3]),
            ports[4],
        ),
    )
    .unwrap();
    ports
}

#[test]
fn cluster_script_survives_a_replica_kill_and_exits_0_on_sigint() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cluster.toml");
    let data = dir.path().join("data");
    let ports = cluster_config(&config, &data);
    let bin_dir = bin("vecgate").parent().unwrap().to_path_buf();
    let mut script = Command::new("bash")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../scripts/cluster.sh"
        ))
        .env("CONFIG", &config)
        .env("DATA", &data)
        .env("BIN_DIR", &bin_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    let _group = KillGroupOnDrop(script.id());
    let stdout = BufReader::new(script.stdout.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let addrs: Vec<String> = rx
        .iter()
        .filter_map(|l| l.strip_prefix("listening on ").map(str::to_string))
        .take(2)
        .collect();
    assert_eq!(addrs.len(), 2, "vecgate's two listeners");
    let url = format!("http://{}", addrs[0]);
    wait_for(&format!("{url}/healthz"), Duration::from_secs(30));
    assert!(
        pids_with(&["shardd", &format!("127.0.0.1:{}", ports[4])]).is_empty(),
        "an address that is no replica's gets no shardd"
    );
    create_docs(&url);
    ok(
        "PUT",
        &format!("{url}/collections/docs/points?wait=true"),
        Some(&points(0..50)),
    );

    let victim = pids_with(&["shardd", &format!("127.0.0.1:{}", ports[0])]);
    assert_eq!(victim.len(), 1, "{victim:?}");
    Command::new("kill")
        .args(["-9", &victim[0].to_string()])
        .status()
        .unwrap();
    let until = Instant::now() + Duration::from_secs(3);
    let mut answered = 0;
    while Instant::now() < until {
        let (status, v) = call(
            "POST",
            &format!("{url}/collections/docs/points/query"),
            Some(&json!({"query": [1.0, 1.0, 0.5, 0.25], "limit": 5})),
        );
        assert_eq!(status, 200, "reads fail over to the peer: {v}");
        answered += 1;
    }
    assert!(answered > 10);
    ok(
        "PUT",
        &format!("{url}/collections/docs/points?wait=true"),
        Some(&points(50..60)),
    );
    assert_eq!(count(&url), 60);
    assert!(
        script.try_wait().unwrap().is_none(),
        "the script keeps running after a replica dies"
    );

    Command::new("kill")
        .args(["-INT", &script.id().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = script.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "cluster.sh did not stop on SIGINT"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        status.success(),
        "SIGINT stops the cluster with status 0: {status}"
    );
    for port in &ports[1..] {
        assert!(
            pids_with(&["shardd", &format!("127.0.0.1:{port}")]).is_empty(),
            "shardd on {port} was stopped"
        );
    }
}
