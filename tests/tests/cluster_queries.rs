//! End-to-end tests of what a sharded, replicated cluster answers: the same as one shard for
//! search, query, hybrid fusion, IDF-weighted sparse search, scroll and payload indexes, and the
//! `/v1/search` and built-in-shard paths.

use e2e::fixture::*;
use e2e::*;
use serde_json::{json, Value};

#[test]
fn a_sharded_cluster_answers_like_one_shard() {
    let cluster = Cluster::start(3, &["eu", "eu"], "read_policy = \"round_robin\"");
    let dir = tempfile::tempdir().unwrap();
    let single = shardd(dir.path(), &[]);
    let data = random_vectors(600, DIM, 1);
    setup(&cluster.url(), &data);
    setup(&single.url(), &data);
    let (routed, alone) = (cluster.url(), single.url());
    let both = |method: &str, path: &str, body: Value| {
        let a = unversioned(ok(method, &format!("{routed}{path}"), Some(&body)));
        let b = unversioned(ok(method, &format!("{alone}{path}"), Some(&body)));
        (a, b)
    };
    for q in random_vectors(15, DIM, 2) {
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
fn hybrid_fusion_on_a_cluster_equals_one_shard() {
    let cluster = Cluster::start(3, &["eu", "eu"], "");
    let dir = tempfile::tempdir().unwrap();
    let single = shardd(dir.path(), &[]);
    let collection = json!({"vectors": {"dense": {"size": DIM, "distance": "Cosine"}}, "sparse_vectors": {"text": {}}});
    let data = random_vectors(300, DIM, 15);
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
        assert_eq!(
            unversioned(routed.clone()),
            unversioned(alone),
            "query {query} differs"
        );
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
        unversioned(ok(
            "POST",
            &format!("{}/collections/h/points/query/batch", cluster.url()),
            Some(&batch)
        )),
        unversioned(ok(
            "POST",
            &format!("{}/collections/h/points/query/batch", single.url()),
            Some(&batch)
        ))
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
    let data = random_vectors(240, DIM, 16);
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
        assert_eq!(unversioned(routed), unversioned(alone), "{path} {q}");
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
fn payload_indexes_are_built_on_every_replica_and_used() {
    let cluster = Cluster::start(3, &["eu", "eu"], "");
    let url = cluster.url();
    setup(&url, &random_vectors(300, DIM, 14));
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
fn seed_search_filters_like_the_equivalent_qdrant_query() {
    let cluster = Cluster::start(3, &["eu", "eu"], "");
    let url = cluster.url();
    ok(
        "PUT",
        &format!("{url}/collections/docs"),
        Some(&json!({"vectors": {"size": DIM, "distance": "Cosine"}})),
    );
    let data = random_vectors(300, DIM, 10);
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
    for q in random_vectors(5, DIM, 11) {
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
fn a_builtin_shard_serves_the_api_in_process() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("embedded.toml");
    std::fs::write(&config, format!("[server]\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n\n[[shards]]\nname = \"local\"\nbuiltin = true\n", dir.path().join("data").display())).unwrap();
    let mut router = vecgate(&config);
    let data = random_vectors(50, DIM, 9);
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
