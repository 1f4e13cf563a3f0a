//! End-to-end tests of the real `shardd` binary: CRUD, exactness against brute force for every
//! distance, filters, deletes, bad input, restart recovery and `kill -9` during a write stream.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use e2e::fixture::random_vectors;
use e2e::*;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

const DIM: usize = 16;

fn create(url: &str, name: &str, body: Value) {
    assert_eq!(
        ok("PUT", &format!("{url}/collections/{name}"), Some(&body)),
        json!(true)
    );
}

/// Upserts `vectors` as points 0..n with a payload of category (i % 10) and price i.
fn upsert_all(url: &str, name: &str, vectors: &[Vec<f32>]) {
    for (chunk_no, chunk) in vectors.chunks(500).enumerate() {
        let points: Vec<Value> = chunk
            .iter()
            .enumerate()
            .map(|(j, v)| {
                let i = chunk_no * 500 + j;
                json!({"id": i, "vector": v, "payload": {"category": format!("c{}", i % 10), "price": i, "rare": i % 100 == 0}})
            })
            .collect();
        ok(
            "PUT",
            &format!("{url}/collections/{name}/points?wait=true"),
            Some(&json!({"points": points})),
        );
    }
}

fn norm(v: &[f32]) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter().map(|x| x / n).collect()
}

/// Qdrant's score and ordering for each distance, computed naively.
fn brute_force(
    distance: &str,
    data: &[Vec<f32>],
    q: &[f32],
    k: usize,
    keep: impl Fn(usize) -> bool,
) -> Vec<(u64, f32)> {
    let mut scored: Vec<(u64, f32)> = data
        .iter()
        .enumerate()
        .filter(|(i, _)| keep(*i))
        .map(|(i, v)| {
            let s = match distance {
                "Cosine" => norm(q).iter().zip(norm(v)).map(|(a, b)| a * b).sum(),
                "Dot" => q.iter().zip(v).map(|(a, b)| a * b).sum(),
                "Euclid" => q
                    .iter()
                    .zip(v)
                    .map(|(a, b)| (a - b) * (a - b))
                    .sum::<f32>()
                    .sqrt(),
                _ => q.iter().zip(v).map(|(a, b)| (a - b).abs()).sum(),
            };
            (i as u64, s)
        })
        .collect();
    let higher = matches!(distance, "Cosine" | "Dot");
    scored.sort_by(|a, b| {
        let by_score = if higher {
            b.1.total_cmp(&a.1)
        } else {
            a.1.total_cmp(&b.1)
        };
        by_score.then(a.0.cmp(&b.0))
    });
    scored.truncate(k);
    scored
}

fn hits(result: &Value) -> Vec<(u64, f32)> {
    result
        .as_array()
        .expect("a list of scored points")
        .iter()
        .map(|p| {
            (
                p["id"].as_u64().unwrap(),
                p["score"].as_f64().unwrap() as f32,
            )
        })
        .collect()
}

fn assert_same(got: &[(u64, f32)], want: &[(u64, f32)]) {
    assert_eq!(
        got.iter().map(|h| h.0).collect::<Vec<_>>(),
        want.iter().map(|h| h.0).collect::<Vec<_>>(),
        "ids differ"
    );
    for (g, w) in got.iter().zip(want) {
        assert!(
            (g.1 - w.1).abs() <= 1e-4 * w.1.abs().max(1.0),
            "score of {} is {} not {}",
            g.0,
            g.1,
            w.1
        );
    }
}

#[test]
fn crud_round_trip_in_qdrant_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let p = shardd(dir.path(), &[]);
    let url = p.url();
    let (status, root) = call("GET", &format!("{url}/"), None);
    assert_eq!(status, 200);
    assert!(
        root["version"].is_string() && root["title"].is_string(),
        "GET / answers bare version info: {root}"
    );
    create(
        &url,
        "docs",
        json!({"vectors": {"size": 3, "distance": "Cosine"}}),
    );
    assert_eq!(
        ok("GET", &format!("{url}/collections/docs/exists"), None),
        json!({"exists": true})
    );
    assert_eq!(
        ok("GET", &format!("{url}/collections"), None),
        json!({"collections": [{"name": "docs"}]})
    );
    let info = ok("GET", &format!("{url}/collections/docs"), None);
    assert_eq!(
        info["config"]["params"]["vectors"],
        json!({"size": 3, "distance": "Cosine"})
    );
    assert_eq!(info["status"], "green");

    let uuid = "5c56c793a4b54b0c9f1a0b2e1b5a8d2f";
    let canonical = "5c56c793-a4b5-4b0c-9f1a-0b2e1b5a8d2f";
    let upsert = json!({"points": [
        {"id": 1, "vector": [1.0, 0.0, 0.0], "payload": {"city": "Berlin", "n": 1}},
        {"id": uuid, "vector": [0.0, 1.0, 0.0], "payload": {"city": "London", "n": 2}},
    ]});
    let r = ok(
        "PUT",
        &format!("{url}/collections/docs/points?wait=true"),
        Some(&upsert),
    );
    assert_eq!(r["status"], "completed");
    let batch = json!({"batch": {"ids": [2, 3], "vectors": [[0.0, 0.0, 1.0], [1.0, 1.0, 0.0]], "payloads": [{"city": "Paris"}, null]}});
    ok(
        "PUT",
        &format!("{url}/collections/docs/points"),
        Some(&batch),
    );
    assert_eq!(
        ok(
            "POST",
            &format!("{url}/collections/docs/points/count"),
            Some(&json!({}))
        ),
        json!({"count": 4})
    );

    let got = ok(
        "POST",
        &format!("{url}/collections/docs/points"),
        Some(&json!({"ids": [uuid, 1, 99], "with_vector": true})),
    );
    assert_eq!(got.as_array().unwrap().len(), 2);
    assert_eq!(got[0]["id"], canonical);
    assert_eq!(got[0]["vector"], json!([0.0, 1.0, 0.0]));
    let one = ok(
        "GET",
        &format!("{url}/collections/docs/points/{canonical}"),
        None,
    );
    assert_eq!(one["payload"]["city"], "London");
    assert_eq!(
        call("GET", &format!("{url}/collections/docs/points/77"), None).0,
        404
    );

    ok(
        "POST",
        &format!("{url}/collections/docs/points/payload"),
        Some(&json!({"payload": {"tag": "x"}, "points": [1]})),
    );
    ok(
        "PUT",
        &format!("{url}/collections/docs/points/payload"),
        Some(&json!({"payload": {"only": true}, "points": [2]})),
    );
    let got = ok(
        "POST",
        &format!("{url}/collections/docs/points"),
        Some(&json!({"ids": [1, 2]})),
    );
    assert_eq!(
        got[0]["payload"],
        json!({"city": "Berlin", "n": 1, "tag": "x"})
    );
    assert_eq!(got[1]["payload"], json!({"only": true}));

    let page1 = ok(
        "POST",
        &format!("{url}/collections/docs/points/scroll"),
        Some(&json!({"limit": 2})),
    );
    assert_eq!(
        page1["points"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["id"].clone())
            .collect::<Vec<_>>(),
        vec![json!(1), json!(2)]
    );
    let page2 = ok(
        "POST",
        &format!("{url}/collections/docs/points/scroll"),
        Some(&json!({"limit": 2, "offset": page1["next_page_offset"]})),
    );
    assert_eq!(
        page2["points"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["id"].clone())
            .collect::<Vec<_>>(),
        vec![json!(3), json!(canonical)]
    );
    assert_eq!(page2["next_page_offset"], Value::Null);

    let found = ok(
        "POST",
        &format!("{url}/collections/docs/points/query"),
        Some(&json!({"query": [0.9, 0.1, 0.0], "limit": 2, "with_payload": ["city"]})),
    );
    assert_eq!(found["points"][0]["id"], 1);
    assert_eq!(found["points"][0]["payload"], json!({"city": "Berlin"}));
    let batch = ok(
        "POST",
        &format!("{url}/collections/docs/points/search/batch"),
        Some(&json!({"searches": [
            {"vector": [0.0, 0.0, 1.0], "limit": 1},
            {"vector": [0.0, 1.0, 0.0], "limit": 1, "filter": {"must_not": [{"has_id": [uuid]}]}},
        ]})),
    );
    assert_eq!(batch[0][0]["id"], 2);
    assert_ne!(batch[1][0]["id"], json!(canonical));
    let listed = ok(
        "POST",
        &format!("{url}/collections/docs/points/query"),
        Some(
            &json!({"filter": {"must": [{"key": "city", "match": {"any": ["Berlin", "London"]}}]}}),
        ),
    );
    assert_eq!(listed["points"].as_array().unwrap().len(), 2);

    ok(
        "POST",
        &format!("{url}/collections/docs/points/delete?wait=true"),
        Some(&json!({"points": [1]})),
    );
    ok(
        "POST",
        &format!("{url}/collections/docs/points/delete"),
        Some(&json!({"filter": {"must": [{"key": "only", "match": {"value": true}}]}})),
    );
    assert_eq!(
        ok(
            "POST",
            &format!("{url}/collections/docs/points/count"),
            Some(&json!({}))
        ),
        json!({"count": 2})
    );

    assert_eq!(
        ok("DELETE", &format!("{url}/collections/docs"), None),
        json!(true)
    );
    assert_eq!(
        ok("GET", &format!("{url}/collections/docs/exists"), None),
        json!({"exists": false})
    );
    assert_eq!(
        call(
            "POST",
            &format!("{url}/collections/docs/points/count"),
            Some(&json!({}))
        )
        .0,
        404
    );
}

#[test]
fn search_equals_brute_force_for_every_distance() {
    let dir = tempfile::tempdir().unwrap();
    let p = shardd(dir.path(), &[]);
    let url = p.url();
    let data = random_vectors(2000, DIM, 11);
    let queries = random_vectors(15, DIM, 12);
    for distance in ["Cosine", "Dot", "Euclid", "Manhattan"] {
        let name = distance.to_lowercase();
        create(
            &url,
            &name,
            json!({"vectors": {"size": DIM, "distance": distance}}),
        );
        upsert_all(&url, &name, &data);
        for q in &queries {
            let want = brute_force(distance, &data, q, 10, |_| true);
            let got = ok(
                "POST",
                &format!("{url}/collections/{name}/points/search"),
                Some(&json!({"vector": q, "limit": 10})),
            );
            assert_same(&hits(&got), &want);
            let paged = ok(
                "POST",
                &format!("{url}/collections/{name}/points/query"),
                Some(&json!({"query": q, "limit": 5, "offset": 5, "params": {"exact": true}})),
            );
            assert_same(&hits(&paged["points"]), &want[5..]);
        }
    }
}

#[test]
fn graph_search_recall_stays_high_through_the_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let p = shardd(dir.path(), &[]);
    let url = p.url();
    let data = random_vectors(2000, DIM, 21);
    create(
        &url,
        "g",
        json!({"vectors": {"size": DIM, "distance": "Euclid"}, "hnsw_config": {"full_scan_threshold": 0, "ef_construct": 100}}),
    );
    upsert_all(&url, "g", &data);
    let mut found = 0;
    for q in random_vectors(20, DIM, 22) {
        let want: BTreeSet<u64> = brute_force("Euclid", &data, &q, 10, |_| true)
            .iter()
            .map(|h| h.0)
            .collect();
        let got = ok(
            "POST",
            &format!("{url}/collections/g/points/search"),
            Some(&json!({"vector": q, "limit": 10, "params": {"hnsw_ef": 128}})),
        );
        found += hits(&got).iter().filter(|h| want.contains(&h.0)).count();
    }
    assert!(found >= 190, "recall@10 {found}/200");
    let metrics = client()
        .get(&format!("{url}/metrics"))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    assert!(
        metrics.contains("shardd_searches_total{plan=\"hnsw\"} 20"),
        "{metrics}"
    );
}

#[test]
fn selective_filters_return_k_points_that_match() {
    let dir = tempfile::tempdir().unwrap();
    let p = shardd(dir.path(), &[]);
    let url = p.url();
    let data = random_vectors(2000, DIM, 31);
    for (name, threshold) in [("exact", 10_000), ("graph", 0)] {
        create(
            &url,
            name,
            json!({"vectors": {"size": DIM, "distance": "Dot"}, "hnsw_config": {"full_scan_threshold": threshold}}),
        );
        upsert_all(&url, name, &data);
        for q in random_vectors(10, DIM, 32) {
            let rare = json!({"must": [{"key": "rare", "match": {"value": true}}]});
            let got = hits(&ok(
                "POST",
                &format!("{url}/collections/{name}/points/search"),
                Some(&json!({"vector": q, "limit": 10, "filter": rare})),
            ));
            let want = brute_force("Dot", &data, &q, 10, |i| i % 100 == 0);
            assert_eq!(
                got.len(),
                10,
                "{name}: a 1% filter must still give k results"
            );
            assert!(got.iter().all(|h| h.0 % 100 == 0));
            if name == "exact" {
                assert_same(&got, &want);
            }
            let range = json!({"must": [{"key": "category", "match": {"value": "c3"}}, {"key": "price", "range": {"gte": 500, "lt": 1500}}]});
            let got = hits(&ok(
                "POST",
                &format!("{url}/collections/{name}/points/search"),
                Some(&json!({"vector": q, "limit": 10, "filter": range})),
            ));
            let want = brute_force("Dot", &data, &q, 10, |i| {
                i % 10 == 3 && (500..1500).contains(&i)
            });
            assert_same(&got, &want);
        }
    }
}

#[test]
fn deleted_points_never_appear_in_results() {
    let dir = tempfile::tempdir().unwrap();
    let p = shardd(dir.path(), &[]);
    let url = p.url();
    let data = random_vectors(2000, DIM, 41);
    create(
        &url,
        "d",
        json!({"vectors": {"size": DIM, "distance": "Euclid"}, "hnsw_config": {"full_scan_threshold": 0}}),
    );
    upsert_all(&url, "d", &data);
    let doomed: Vec<u64> = (0..2000).filter(|i| i % 2 == 0).collect();
    ok(
        "POST",
        &format!("{url}/collections/d/points/delete?wait=true"),
        Some(&json!({"points": doomed})),
    );
    for (i, q) in data.iter().enumerate().step_by(97) {
        for exact in [false, true] {
            let got = hits(&ok(
                "POST",
                &format!("{url}/collections/d/points/search"),
                Some(&json!({"vector": q, "limit": 20, "params": {"exact": exact}})),
            ));
            assert_eq!(got.len(), 20);
            assert!(
                got.iter().all(|h| h.0 % 2 == 1),
                "deleted point returned for query {i}"
            );
        }
    }
    assert_eq!(
        ok(
            "POST",
            &format!("{url}/collections/d/points/count"),
            Some(&json!({}))
        ),
        json!({"count": 1000})
    );
}

#[test]
fn bad_input_gets_a_clear_4xx_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let p = shardd(dir.path(), &["--max-body-mb", "1"]);
    let url = p.url();
    create(
        &url,
        "c",
        json!({"vectors": {"size": 3, "distance": "Dot"}}),
    );
    ok(
        "PUT",
        &format!("{url}/collections/c/points"),
        Some(&json!({"points": [{"id": 1, "vector": [1.0, 2.0, 3.0]}]})),
    );
    let points = format!("{url}/collections/c/points");
    let search = format!("{url}/collections/c/points/search");
    let cases: Vec<BadCase> = vec![
        ("PUT", points.clone(), Some(br#"{"points": [{"id": 2, "vector": [1.0, 2.0]}]}"#.to_vec()), 400, "dimension 2, expected 3"),
        ("PUT", points.clone(), Some(br#"{"points": [{"id": 2, "vector": [1e39, 0, 0]}]}"#.to_vec()), 400, "non-finite"),
        ("PUT", points.clone(), Some(br#"{"points": [{"id": -2, "vector": [1, 0, 0]}]}"#.to_vec()), 400, "negative"),
        ("PUT", points.clone(), Some(br#"{"points": [{"id": 2, "vector": {"other": [1, 0, 0]}}]}"#.to_vec()), 400, "no dense vector named"),
        ("PUT", points.clone(), Some(br#"{"points": [{"id": 2, "vector": [1, 0, 0]"#.to_vec()), 400, "Format error"),
        ("PUT", format!("{url}/collections/nope/points"), Some(br#"{"points": []}"#.to_vec()), 404, "doesn't exist"),
        ("POST", search.clone(), Some(br#"{"vector": [1, 0, 0], "limit": 0}"#.to_vec()), 400, "at least 1"),
        ("POST", search.clone(), Some(br#"{"vector": [1, 0, 0], "limit": 100000000}"#.to_vec()), 400, "at most"),
        ("POST", search.clone(), Some(br#"{"vector": [1, 0], "limit": 1}"#.to_vec()), 400, "dimension"),
        ("POST", search.clone(), Some(br#"{"vector": [1, 0, 0], "limit": 1, "filter": {"must": [{"key": "a", "match": {"valu": 1}}]}}"#.to_vec()), 400, "unsupported match"),
        ("POST", search.clone(), Some(br#"{"vector": [1, 0, 0], "limit": 1, "filter": {"must": [{"geo_radius": {}}]}}"#.to_vec()), 400, "unsupported condition"),
        ("PUT", format!("{url}/collections/c"), Some(br#"{"vectors": {"size": 3, "distance": "Dot"}}"#.to_vec()), 409, "already exists"),
        ("PUT", format!("{url}/collections/bad"), Some(br#"{"vectors": {"size": 3, "distance": "Hamming"}}"#.to_vec()), 400, "Format error"),
        ("PUT", format!("{url}/collections/bad"), Some(br#"{"vectors": {"size": 0, "distance": "Dot"}}"#.to_vec()), 400, "size"),
        ("POST", format!("{url}/collections/c/points/payload"), Some(br#"{"payload": {"a": 1}, "points": [42]}"#.to_vec()), 404, "No point"),
        ("POST", format!("{url}/collections/c/points/delete"), Some(br#"{}"#.to_vec()), 400, "exactly one"),
        ("GET", format!("{url}/collections/c/nonsense"), None, 404, "no route"),
    ];
    for (method, u, body, status, needle) in cases {
        let (got, v) = call_raw(method, &u, body.as_deref());
        let msg = v["status"]["error"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert_eq!(got, status, "{method} {u}: {v}");
        assert!(
            msg.contains(needle),
            "{method} {u}: `{msg}` lacks `{needle}`"
        );
    }
    let declared = format!("PUT /collections/c/points HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n", 2 << 20);
    assert!(raw_exchange(p.addr, declared.as_bytes(), &[]).starts_with("HTTP/1.1 413"));
    let chunk = format!("{:x}\r\n{}\r\n", 256 << 10, "x".repeat(256 << 10));
    let chunked = "PUT /collections/c/points HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n";
    assert!(
        raw_exchange(p.addr, chunked.as_bytes(), &[chunk.as_bytes(); 6].concat())
            .starts_with("HTTP/1.1 413")
    );
    assert_eq!(
        ok(
            "POST",
            &format!("{url}/collections/c/points/count"),
            Some(&json!({}))
        ),
        json!({"count": 1})
    );
    assert_eq!(
        ok("GET", &format!("{url}/collections"), None),
        json!({"collections": [{"name": "c"}]})
    );
}

/// A bad request: method, URL, body, expected status, and a phrase the error must contain.
type BadCase = (&'static str, String, Option<Vec<u8>>, u16, &'static str);

/// Writes a request head and then as much of `body` as the server takes, and returns what it answers.
fn raw_exchange(addr: std::net::SocketAddr, head: &[u8], body: &[u8]) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(head).unwrap();
    let _ = s.write_all(body);
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

#[test]
fn restart_recovers_after_clean_and_unclean_stops() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = shardd(dir.path(), &[]);
    let data = random_vectors(1000, DIM, 51);
    create(
        &p.url(),
        "r",
        json!({"vectors": {"size": DIM, "distance": "Cosine"}, "hnsw_config": {"full_scan_threshold": 0}}),
    );
    upsert_all(&p.url(), "r", &data);
    let q = json!({"vector": data[7], "limit": 5, "with_payload": true});
    let before = ok(
        "POST",
        &format!("{}/collections/r/points/search", p.url()),
        Some(&q),
    );
    assert!(p.terminate(), "SIGTERM must shut down cleanly");
    assert!(
        std::fs::read_dir(dir.path().join("snapshots"))
            .unwrap()
            .count()
            == 1,
        "clean shutdown writes a snapshot"
    );

    p.restart();
    wait_for(&format!("{}/readyz", p.url()), Duration::from_secs(60));
    assert_eq!(
        ok(
            "POST",
            &format!("{}/collections/r/points/search", p.url()),
            Some(&q)
        ),
        before
    );
    ok(
        "POST",
        &format!("{}/collections/r/points/delete", p.url()),
        Some(&json!({"points": [7]})),
    );
    ok(
        "PUT",
        &format!("{}/collections/r/points", p.url()),
        Some(&json!({"points": [{"id": 5000, "vector": data[7], "payload": {"new": true}}]})),
    );
    p.kill9();

    p.restart();
    wait_for(&format!("{}/readyz", p.url()), Duration::from_secs(60));
    let after = ok(
        "POST",
        &format!("{}/collections/r/points/search", p.url()),
        Some(&q),
    );
    assert_eq!(after[0]["id"], 5000);
    assert_eq!(after[0]["payload"], json!({"new": true}));
    assert_eq!(
        ok(
            "POST",
            &format!("{}/collections/r/points/count", p.url()),
            Some(&json!({}))
        ),
        json!({"count": 1000})
    );
}

#[test]
fn acked_writes_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = shardd(
        dir.path(),
        &["--snapshot-interval-s", "1", "--wal-segment-mb", "1"],
    );
    create(
        &p.url(),
        "k",
        json!({"vectors": {"size": DIM, "distance": "Dot"}}),
    );
    let acked: Arc<Mutex<HashMap<u64, u64>>> = Arc::default();
    let mut next_id = 0u64;
    for round in 0..3 {
        let stop = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..4)
            .map(|w| {
                let (url, acked, stop) = (p.url(), acked.clone(), stop.clone());
                let base = next_id + w * 1_000_000;
                std::thread::spawn(move || {
                    let mut rng = rand::rngs::StdRng::seed_from_u64(base);
                    for i in 0..1_000_000u64 {
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        let id = base + i;
                        let v: Vec<f32> = (0..DIM).map(|_| rng.random()).collect();
                        let body = json!({"points": [{"id": id, "vector": v, "payload": {"round": round, "id": id}}]});
                        let req = client().put(&format!("{url}/collections/k/points?wait=true")).send_json(&body);
                        match req {
                            Ok(r) if r.status().as_u16() == 200 => {
                                acked.lock().unwrap().insert(id, round);
                            }
                            _ => break,
                        }
                    }
                })
            })
            .collect();
        let started = Instant::now();
        let enough = |n: usize| {
            n >= (round as usize + 1) * 1000 && started.elapsed() > Duration::from_millis(1500)
        };
        while !enough(acked.lock().unwrap().len()) && started.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(20));
        }
        p.kill9();
        stop.store(true, Ordering::SeqCst);
        for w in writers {
            w.join().unwrap();
        }
        next_id += 10_000_000;
        p.restart();
        wait_for(&format!("{}/readyz", p.url()), Duration::from_secs(60));
        let acked = acked.lock().unwrap().clone();
        let ids: Vec<u64> = acked.keys().copied().collect();
        for chunk in ids.chunks(1000) {
            let got = ok(
                "POST",
                &format!("{}/collections/k/points", p.url()),
                Some(&json!({"ids": chunk})),
            );
            let got = got.as_array().unwrap();
            assert_eq!(
                got.len(),
                chunk.len(),
                "round {round}: acknowledged points lost after kill -9"
            );
            for r in got {
                let id = r["id"].as_u64().unwrap();
                assert_eq!(r["payload"], json!({"round": acked[&id], "id": id}));
            }
        }
        assert!(
            acked.len() >= (round as usize + 1) * 1000,
            "writers made too little progress: {}",
            acked.len()
        );
    }
}

fn filtered_plans(url: &str, plan: &str) -> f64 {
    metric(
        url,
        "shardd_filtered_searches_total",
        &[&format!("plan=\"{plan}\"")],
    )
}

#[test]
fn payload_indexes_narrow_filters_and_survive_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = shardd(dir.path(), &[]);
    let data = random_vectors(2000, DIM, 61);
    create(
        &p.url(),
        "ix",
        json!({"vectors": {"size": DIM, "distance": "Dot"}}),
    );
    upsert_all(&p.url(), "ix", &data);
    let texts = json!({"points": [
        {"id": 5000, "vector": data[0], "payload": {"body": "Quantum physics explained", "category": "text"}},
        {"id": 5001, "vector": data[1], "payload": {"body": "physics of quanta", "category": "text"}},
    ]});
    ok(
        "PUT",
        &format!("{}/collections/ix/points?wait=true", p.url()),
        Some(&texts),
    );
    let q = json!({"vector": data[3], "limit": 10, "filter": {"must": [{"key": "category", "match": {"value": "c7"}}, {"key": "price", "range": {"gte": 1000}}]}});
    let search = |url: &str| {
        hits(&ok(
            "POST",
            &format!("{url}/collections/ix/points/search"),
            Some(&q),
        ))
    };
    let scanned = search(&p.url());
    assert_eq!(scanned.len(), 10);
    assert_eq!(filtered_plans(&p.url(), "scan"), 1.0);

    for (field, schema) in [
        ("category", json!("keyword")),
        ("price", json!({"type": "integer", "is_tenant": false})),
        ("body", json!("text")),
    ] {
        let r = ok(
            "PUT",
            &format!("{}/collections/ix/index?wait=true", p.url()),
            Some(&json!({"field_name": field, "field_schema": schema})),
        );
        assert_eq!(r["status"], "completed");
    }
    let info = ok("GET", &format!("{}/collections/ix", p.url()), None);
    assert_eq!(
        info["payload_schema"]["category"],
        json!({"data_type": "keyword", "params": null, "points": 2002})
    );
    assert_eq!(info["payload_schema"]["price"]["points"], 2000);
    assert_eq!(
        search(&p.url()),
        scanned,
        "an indexed filter finds the same points"
    );
    assert_eq!(filtered_plans(&p.url(), "index"), 1.0);

    let text = |url: &str, words: &str| {
        let r = ok(
            "POST",
            &format!("{url}/collections/ix/points/scroll"),
            Some(&json!({"filter": {"must": [{"key": "body", "match": {"text": words}}]}})),
        );
        r["points"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["id"].as_u64().unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        text(&p.url(), "PHYSICS quantum"),
        vec![5000],
        "with a text index every word must be present"
    );

    let moved = scanned[0].0;
    ok(
        "PUT",
        &format!("{}/collections/ix/points", p.url()),
        Some(
            &json!({"points": [{"id": moved, "vector": data[moved as usize], "payload": {"category": "c8", "price": moved}}]}),
        ),
    );
    ok(
        "POST",
        &format!("{}/collections/ix/points/delete", p.url()),
        Some(&json!({"points": [scanned[1].0]})),
    );
    let after = search(&p.url());
    assert!(
        after.iter().all(|h| h.0 != moved && h.0 != scanned[1].0),
        "the index follows upserts and deletes"
    );
    assert_eq!(
        ok(
            "POST",
            &format!("{}/collections/ix/points/count", p.url()),
            Some(&json!({"filter": q["filter"]}))
        ),
        json!({"count": 98})
    );

    p.kill9();
    p.restart();
    wait_for(&format!("{}/readyz", p.url()), Duration::from_secs(60));
    assert_eq!(
        search(&p.url()),
        after,
        "indexes come back after kill -9 (WAL replay)"
    );
    assert_eq!(filtered_plans(&p.url(), "index"), 1.0);
    assert!(p.terminate());
    p.restart();
    wait_for(&format!("{}/readyz", p.url()), Duration::from_secs(60));
    assert_eq!(search(&p.url()), after, "indexes come back from a snapshot");
    assert_eq!(text(&p.url(), "quantum physics"), vec![5000]);

    ok(
        "DELETE",
        &format!("{}/collections/ix/index/category", p.url()),
        None,
    );
    let info = ok("GET", &format!("{}/collections/ix", p.url()), None);
    assert!(info["payload_schema"].get("category").is_none());
    let (status, body) = call(
        "PUT",
        &format!("{}/collections/ix/index", p.url()),
        Some(&json!({"field_name": "x", "field_schema": "vector"})),
    );
    assert_eq!(status, 400, "{body}");
    let (status, _) = call(
        "PUT",
        &format!("{}/collections/ix/index", p.url()),
        Some(&json!({"field_name": "x"})),
    );
    assert_eq!(status, 400);
}
