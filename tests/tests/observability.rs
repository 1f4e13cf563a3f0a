//! End-to-end tests of what operators watch: both binaries' metrics under traffic (names,
//! values moving, `promtool check metrics`), the alert rules (`promtool check rules`), and a
//! real Prometheus scraping a cluster, through which every dashboard panel's and alert rule's
//! expression is evaluated.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use e2e::fixture::*;
use e2e::*;
use serde_json::{json, Value};

fn dashboards() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../dashboards")
}

fn scrape(url: &str) -> String {
    client()
        .get(&format!("{url}/metrics"))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap()
}

/// `promtool check metrics` on `text`: its complaints, empty when clean.
fn promtool_metrics(text: &str) -> String {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (scripts/deps.sh installs prometheus)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        said.trim().to_string()
    } else {
        format!("exit {}: {said}", out.status)
    }
}

/// A 3-shard cluster with a Redis-backed cache and an embedder, and some of everything: writes,
/// searches (some cached, some with text), a bad request, a repair round.
fn busy_cluster(redis: &RedisServer) -> Cluster {
    let embedder = e2e::embedder::FakeEmbedder::start();
    let cluster = Cluster::start_with(
        3,
        &["eu", "eu"],
        "",
        &format!(
            "[cache]\nredis_url = \"{}\"\n\n[embedding]\nprovider = \"openai\"\nurl = \"{}\"\nmodel = \"fake-8\"\n",
            redis.url(),
            embedder.url
        ),
    );
    setup(&cluster.url(), &random_vectors(300, DIM, 31));
    for i in 0..10 {
        ok(
            "POST",
            &format!("{}/collections/docs/points/query", cluster.url()),
            Some(
                &json!({"query": {"text": format!("question {}", i % 4), "model": "fake-8"}, "limit": 3}),
            ),
        );
    }
    for q in random_vectors(20, DIM, 32).iter().cycle().take(60) {
        ok(
            "POST",
            &format!("{}/collections/docs/points/query", cluster.url()),
            Some(&json!({"query": q, "limit": 5})),
        );
    }
    let (status, _) = call(
        "POST",
        &format!("{}/collections/docs/points/query", cluster.url()),
        Some(&json!({"query": "not a vector"})),
    );
    assert_eq!(status, 400);
    let (status, _) = call("POST", &format!("{}/admin/repair", cluster.admin()), None);
    assert_eq!(status, 200);
    cluster
}

#[test]
fn both_binaries_export_their_metrics_under_traffic() {
    let redis = RedisServer::start();
    let cluster = busy_cluster(&redis);
    let router = scrape(&cluster.admin());
    let shard = scrape(&cluster.replicas[0][0].url());
    for name in [
        "vecgate_http_requests_total",
        "vecgate_search_latency_seconds_bucket",
        "vecgate_replica_call_duration_seconds_bucket",
        "vecgate_replica_in_flight",
        "vecgate_replica_up",
        "vecgate_replica_state",
        "vecgate_replica_ejections_total",
        "vecgate_request_errors_total",
        "vecgate_hints_pending",
        "vecgate_cache_lookups_total",
        "vecgate_cache_l2_breaker_open",
        "vecgate_config_reloads_total",
        "vecgate_config_info",
        "vecgate_move_running",
        "vecgate_replica_joining",
        "vecgate_repair_buckets_differing_total",
    ] {
        assert!(router.contains(name), "router lacks {name}:\n{router}");
    }
    for name in [
        "shardd_points",
        "shardd_collection_bytes",
        "shardd_wal_appended_bytes_total",
        "shardd_wal_fsync_duration_seconds_bucket",
        "shardd_index_build_duration_seconds_bucket",
        "shardd_searches_total",
        "shardd_http_request_duration_seconds_bucket",
    ] {
        assert!(shard.contains(name), "shardd lacks {name}:\n{shard}");
    }
    let admin = cluster.admin();
    assert!(metric(&admin, "vecgate_search_latency_seconds_count", &[]) >= 60.0);
    assert!(metric(&admin, "vecgate_cache_lookups_total", &["result=\"hit\""]) > 0.0);
    assert!(
        metric(
            &admin,
            "vecgate_request_errors_total",
            &["kind=\"invalid\""]
        ) >= 1.0
    );
    let shard_url = cluster.replicas[0][0].url();
    assert!(
        metric(
            &shard_url,
            "shardd_collection_bytes",
            &["collection=\"docs\""]
        ) > 0.0
    );
    assert!(metric(&shard_url, "shardd_index_build_duration_seconds_count", &[]) > 0.0);
    assert_eq!(promtool_metrics(&router), "", "the router's scrape");
    assert_eq!(promtool_metrics(&shard), "", "shardd's scrape");
    let rules = Command::new("promtool")
        .args(["check", "rules"])
        .arg(dashboards().join("alerts.yml"))
        .output()
        .unwrap();
    assert!(
        rules.status.success(),
        "{}",
        String::from_utf8_lossy(&rules.stdout)
    );
}

/// Every `expr` in a dashboard, with Grafana's `$__rate_interval` made a plain range.
fn panel_exprs(dashboard: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"]
                .as_str()
                .unwrap()
                .replace("$__rate_interval", "1m");
            out.push((panel["title"].as_str().unwrap().to_string(), expr));
        }
    }
    out
}

/// The metric names an expression reads (`vecgate_...`, `shardd_...`).
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find(['v', 's']) {
        let tail = &rest[at..];
        if tail.starts_with("vecgate_") || tail.starts_with("shardd_") {
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            names.push(tail[..end].to_string());
            rest = &tail[end..];
        } else {
            rest = &tail[1..];
        }
    }
    names
}

#[test]
fn prometheus_evaluates_every_dashboard_panel_and_alert_rule() {
    let redis = RedisServer::start();
    let cluster = busy_cluster(&redis);
    let mut targets = vec![cluster.admin().trim_start_matches("http://").to_string()];
    for replicas in &cluster.replicas {
        for r in replicas {
            targets.push(r.addr.to_string());
        }
    }
    let rules = dashboards().join("alerts.yml");
    let prometheus = PrometheusServer::start(&targets, &rules);
    // Rates need two scrapes with traffic between them.
    let stream = Stream::start(cluster.url(), 1);
    let started = Instant::now();
    loop {
        let up = prometheus.query("sum(up)").unwrap();
        let scrapes = prometheus.query("min(count_over_time(up[1m]))").unwrap();
        let n = |v: &[Value]| {
            v.first()
                .and_then(|s| s["value"][1].as_str()?.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        if n(&up) == targets.len() as f64 && n(&scrapes) >= 3.0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "targets not scraped: {up:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    finish_searches(stream);
    let mut empty = Vec::new();
    for file in ["router.json", "shardd.json"] {
        let dashboard: Value =
            serde_json::from_str(&std::fs::read_to_string(dashboards().join(file)).unwrap())
                .unwrap();
        assert_eq!(
            dashboard["templating"]["list"][0]["type"], "datasource",
            "{file}: the datasource is a variable"
        );
        for (title, expr) in panel_exprs(&dashboard) {
            match prometheus.query(&expr) {
                Ok(result) if result.is_empty() => empty.push(format!("{file}: {title}: {expr}")),
                Ok(_) => {}
                Err(e) => panic!("{file}: {title}: `{expr}` does not evaluate: {e}"),
            }
        }
    }
    assert!(
        empty.is_empty(),
        "panels without data:\n{}",
        empty.join("\n")
    );
    let text = std::fs::read_to_string(&rules).unwrap();
    let exprs: Vec<&str> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("expr: "))
        .collect();
    assert!(exprs.len() >= 8);
    for expr in exprs {
        prometheus
            .query(expr)
            .unwrap_or_else(|e| panic!("rule `{expr}` does not evaluate: {e}"));
        for name in metric_names(expr) {
            let series = prometheus
                .query(&format!("count({{__name__=\"{name}\"}})"))
                .unwrap();
            assert!(
                !series.is_empty(),
                "rule `{expr}` reads {name}, which nobody exports"
            );
        }
    }
}

/// A search through `url`: its `x-vecgate-shards` and the `server-timing` durations by name.
fn explained(url: &str, body: &Value) -> (String, std::collections::BTreeMap<String, f64>) {
    let resp = client()
        .post(&format!("{url}/collections/docs/points/query"))
        .config()
        .http_status_as_error(false)
        .build()
        .send_json(body)
        .unwrap();
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let timing = header("server-timing")
        .split(", ")
        .filter_map(|part| {
            let (name, dur) = part.split_once(";dur=")?;
            Some((name.to_string(), dur.parse().ok()?))
        })
        .collect();
    (header("x-vecgate-shards"), timing)
}

#[test]
fn every_answer_says_which_shards_answered_and_where_its_time_went() {
    let mut cluster =
        Cluster::start_with(3, &["eu"], "allow_partial = true", "[cache]\nttl_s = 60\n");
    setup(&cluster.url(), &random_vectors(300, DIM, 33));
    let q = json!({"query": vec![0.5; DIM], "limit": 5});
    let (shards, t) = explained(&cluster.url(), &q);
    assert_eq!(shards, "3/3");
    for part in ["cache", "scatter", "merge", "total"] {
        assert!(t.contains_key(part), "{part} missing: {t:?}");
    }
    assert!(t["scatter"] > 0.0 && t["total"] >= t["scatter"], "{t:?}");
    let (shards, t) = explained(&cluster.url(), &q);
    assert_eq!(shards, "3/3", "a cached answer covers every shard");
    assert_eq!(t["scatter"], 0.0, "a cache hit asks no shard: {t:?}");
    assert!(t["cache"] > 0.0, "{t:?}");
    let (shards, _) = explained(&cluster.url(), &json!({"query": "nope"}));
    assert_eq!(shards, "0/3", "a bad request reaches no shard");
    cluster.replicas[1][0].kill9();
    let (shards, _) = explained(
        &cluster.url(),
        &json!({"query": vec![0.25; DIM], "limit": 5}),
    );
    assert_eq!(shards, "2/3", "a partial answer names how many answered");
}

/// 32 (trace) or 16 (span) random lowercase hex digits.
fn random_hex(digits: usize) -> String {
    (0..digits)
        .map(|_| char::from_digit(rand::random_range(0..16u32), 16).unwrap())
        .collect()
}

/// A search through `url` carrying `traceparent` (when given); its status and cache outcome.
fn search_traced(url: &str, q: &Value, traceparent: Option<&str>) -> (u16, String) {
    let mut req = client()
        .post(&format!("{url}/collections/docs/points/query"))
        .config()
        .http_status_as_error(false)
        .build();
    if let Some(tp) = traceparent {
        req = req.header("traceparent", tp);
    }
    let resp = req.send_json(q).unwrap();
    let cache = resp
        .headers()
        .get("x-vecgate-cache")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    (resp.status().as_u16(), cache)
}

#[test]
fn one_search_through_three_shards_is_one_trace_from_router_to_shardd() {
    let otlp = e2e::otlp::OtlpReceiver::start();
    let cluster = Cluster::start_full(
        3,
        &["eu"],
        "",
        &format!(
            "[cache]\nttl_s = 60\n\n[telemetry]\notlp_endpoint = \"{}\"\n",
            otlp.url
        ),
        &["--otlp-endpoint", &otlp.url],
    );
    setup(&cluster.url(), &random_vectors(300, DIM, 34));
    let q = json!({"query": vec![0.5; DIM], "limit": 5});
    let unsampled = random_hex(32);
    let tp = format!("00-{unsampled}-{}-00", random_hex(16));
    assert_eq!(
        search_traced(&cluster.url(), &json!({"query": vec![0.1; DIM]}), Some(&tp)).0,
        200
    );
    let (trace, parent) = (random_hex(32), random_hex(16));
    let (status, cache) =
        search_traced(&cluster.url(), &q, Some(&format!("00-{trace}-{parent}-01")));
    assert_eq!((status, cache.as_str()), (200, "miss"));

    let spans = otlp.trace(&trace, Duration::from_secs(30), |spans| {
        spans.iter().filter(|s| s.service == "shardd").count() >= 3
            && spans
                .iter()
                .any(|s| s.service == "vecgate" && s.name.starts_with("POST "))
    });
    let request = spans
        .iter()
        .find(|s| s.service == "vecgate" && s.name.starts_with("POST "))
        .unwrap();
    assert_eq!(request.parent, parent, "the caller's span is the parent");
    assert_eq!(request.attr("http.response.status_code"), "200");
    assert_eq!(request.attr("vecgate.shards"), "3/3");
    assert_eq!(request.attr("vecgate.cache"), "miss");
    assert!(
        request.attr("http.route").contains("points/query"),
        "{request:?}"
    );
    let children = |name: &str| -> Vec<&e2e::otlp::ReceivedSpan> {
        spans
            .iter()
            .filter(|s| s.name == name && s.parent == request.span_id)
            .collect()
    };
    let lookups = children("cache");
    assert!(
        lookups
            .iter()
            .any(|s| s.attr("vecgate.cache.tier") == "l1"
                && s.attr("vecgate.cache.result") == "miss"),
        "{lookups:?}"
    );
    assert_eq!(children("merge").len(), 1, "{spans:#?}");
    let calls = children("shard call");
    let mut shards: Vec<&str> = calls.iter().map(|s| s.attr("vecgate.shard")).collect();
    shards.sort();
    assert_eq!(shards, ["s0", "s1", "s2"], "{calls:#?}");
    for call in &calls {
        let s: usize = call.attr("vecgate.shard")[1..].parse().unwrap();
        assert_eq!(call.attr("vecgate.replica"), cluster.replicas[s][0].url());
        assert_eq!(call.attr("vecgate.attempt"), "1");
        assert_eq!(call.attr("http.response.status_code"), "200");
    }
    let on_shards: Vec<_> = spans.iter().filter(|s| s.service == "shardd").collect();
    let mut parents: Vec<&str> = on_shards.iter().map(|s| s.parent.as_str()).collect();
    let mut call_ids: Vec<&str> = calls.iter().map(|s| s.span_id.as_str()).collect();
    parents.sort();
    call_ids.sort();
    assert_eq!(
        parents, call_ids,
        "each shard's span is a child of the router's call to it"
    );
    for s in &on_shards {
        assert_eq!(s.attr("http.response.status_code"), "200");
        assert!(s.attr("http.route").contains("points/query"), "{s:?}");
    }
    let all = otlp.spans();
    assert!(
        all.iter().all(|s| s.trace_id != unsampled),
        "a caller's unsampled trace is not recorded, here or on the shards"
    );
    assert!(
        all.iter()
            .filter(|s| s.service == "shardd")
            .all(|s| !s.parent.is_empty()),
        "every search reached the shards with its trace (an unsampled one marked so): {:#?}",
        all.iter()
            .filter(|s| s.service == "shardd" && s.parent.is_empty())
            .collect::<Vec<_>>()
    );

    let cached = random_hex(32);
    let (_, cache) = search_traced(
        &cluster.url(),
        &q,
        Some(&format!("00-{cached}-{}-01", random_hex(16))),
    );
    assert_eq!(cache, "l1");
    let spans = otlp.trace(&cached, Duration::from_secs(30), |spans| {
        spans.iter().any(|s| s.name.starts_with("POST "))
    });
    let request = spans.iter().find(|s| s.name.starts_with("POST ")).unwrap();
    assert_eq!(request.attr("vecgate.cache"), "l1");
    assert!(spans
        .iter()
        .any(|s| s.name == "cache" && s.attr("vecgate.cache.result") == "hit"));
    assert!(
        spans
            .iter()
            .all(|s| s.name != "shard call" && s.service != "shardd"),
        "a cache hit calls no shard: {spans:#?}"
    );

    let upserts = otlp.spans();
    let root = upserts
        .iter()
        .find(|s| s.name.starts_with("PUT ") && s.name.contains("points") && s.parent.is_empty())
        .expect("an upsert without a caller's trace starts one");
    otlp.trace(&root.trace_id, Duration::from_secs(30), |spans| {
        spans.iter().filter(|s| s.service == "shardd").count() >= 3
    });
}

/// The JSON log lines in `log` (every line must be one).
fn json_lines(log: &Path) -> Vec<Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

fn access_lines(log: &Path) -> Vec<Value> {
    json_lines(log)
        .into_iter()
        .filter(|l| l["target"] == "vecgate::access")
        .collect()
}

#[test]
fn json_logs_carry_the_trace_id_and_the_access_log_follows_reloads() {
    let otlp = e2e::otlp::OtlpReceiver::start();
    let dir = tempfile::tempdir().unwrap();
    let (config, log) = (
        dir.path().join("vecgate.toml"),
        dir.path().join("stderr.log"),
    );
    let write = |endpoint: &str, access_log: bool| {
        std::fs::write(
            &config,
            format!(
                "[server]\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n\n[[shards]]\nname = \"local\"\nbuiltin = true\n\n[telemetry]\notlp_endpoint = \"{endpoint}\"\notlp_protocol = \"http/json\"\nlog_format = \"json\"\naccess_log = {access_log}\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap()
    };
    write(&otlp.url, true);
    let router = vecgate_logging("vecgate", &config, Some(&log));
    let (url, admin) = (router.url(), format!("http://{}", router.addrs[1]));
    setup(&url, &random_vectors(50, DIM, 35));
    let q = json!({"query": vec![0.5; DIM], "limit": 3});

    let trace = random_hex(32);
    let tp = format!("00-{trace}-{}-01", random_hex(16));
    assert_eq!(search_traced(&url, &q, Some(&tp)).0, 200);
    let line = access_lines(&log)
        .into_iter()
        .find(|l| l["trace_id"] == trace.as_str())
        .expect("the search's access line carries the caller's trace id");
    assert_eq!(line["status"], 200);
    assert_eq!(line["method"], "POST");
    assert!(
        line["route"].as_str().unwrap().contains("points/query"),
        "{line}"
    );
    assert!(line["ms"].as_f64().unwrap() > 0.0, "{line}");
    assert!(
        line["timestamp"].is_string() && line["level"] == "INFO",
        "{line}"
    );
    otlp.trace(&trace, Duration::from_secs(30), |spans| {
        spans
            .iter()
            .any(|s| s.name == "shard call" && s.attr("vecgate.replica") == "built-in")
    });

    assert_eq!(
        search_traced(&url, &json!({"query": vec![0.25; DIM]}), None).0,
        200
    );
    let started = access_lines(&log).last().unwrap()["trace_id"]
        .as_str()
        .expect("a request without a caller's trace gets one")
        .to_string();
    assert_eq!(started.len(), 32);
    otlp.trace(&started, Duration::from_secs(30), |spans| {
        spans
            .iter()
            .any(|s| s.name.starts_with("POST ") && s.parent.is_empty())
    });

    write("http://127.0.0.1:1", true);
    let (status, body) = call("POST", &format!("{admin}/admin/reload"), None);
    assert_eq!(status, 409, "a changed exporter needs a restart: {body}");
    assert!(body.to_string().contains("[telemetry]"), "{body}");
    write(&otlp.url, false);
    reload(&admin);
    let before = access_lines(&log).len();
    assert_eq!(search_traced(&url, &q, None).0, 200);
    assert_eq!(
        access_lines(&log).len(),
        before,
        "access_log = false stops the lines"
    );
}
