//! End-to-end tests of text in, results out: `/v1/search` with a text query and Qdrant
//! `Document`s in queries and upserts, embedded by an OpenAI-compatible embedder (a fake one
//! started by the test) with micro-batching, an embedding cache, retries after 429 and a
//! deadline.

use std::path::Path;
use std::time::Duration;

use e2e::embedder::{fake_vector, FakeEmbedder, FAKE_DIM};
use e2e::*;
use serde_json::{json, Value};

fn text(i: usize) -> String {
    format!("document {i} on topic {}", i % 7)
}

/// Creates `docs` (8-d Cosine) at `url` holding `n` points whose vectors are the fake's
/// vectors of their texts.
fn load(url: &str, n: usize) {
    ok(
        "PUT",
        &format!("{url}/collections/docs"),
        Some(&json!({"vectors": {"size": FAKE_DIM, "distance": "Cosine"}})),
    );
    let points: Vec<Value> = (0..n)
        .map(|i| json!({"id": i, "vector": fake_vector(&text(i)), "payload": {"text": text(i)}}))
        .collect();
    ok(
        "PUT",
        &format!("{url}/collections/docs/points?wait=true"),
        Some(&json!({ "points": points })),
    );
}

fn embedding_section(fake: &FakeEmbedder, extra: &str) -> String {
    format!(
        "[embedding]\nprovider = \"openai\"\nurl = \"{}\"\nmodel = \"fake-8\"\n{extra}",
        fake.url
    )
}

/// An embedded vecgate whose config ends with `sections`.
fn embedded(dir: &Path, sections: &str) -> Process {
    embedded_env(dir, sections, &[])
}

/// [`embedded`] with `env` in its environment.
fn embedded_env(dir: &Path, sections: &str, env: &[(&str, &str)]) -> Process {
    let config = dir.join("vecgate.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n\n[[shards]]\nname = \"local\"\nbuiltin = true\n\n{sections}",
            dir.join("data").display()
        ),
    )
    .unwrap();
    vecgate_env("vecgate", &config, None, env)
}

/// A `/v1/search` at `url`: its answer, which must be a 200.
fn seed(url: &str, body: Value) -> Value {
    let (status, answer) = call("POST", &format!("{url}/v1/search"), Some(&body));
    assert_eq!(status, 200, "{answer}");
    answer
}

fn top_id(answer: &Value) -> u64 {
    answer["results"][0]["id"].as_u64().unwrap_or(u64::MAX)
}

#[test]
fn text_queries_through_three_shards_are_embedded_in_batches_and_cached() {
    let fake = FakeEmbedder::start();
    let otlp = e2e::otlp::OtlpReceiver::start();
    let cluster = Cluster::start_with(
        3,
        &["eu"],
        "",
        &format!(
            "{}\n[telemetry]\notlp_endpoint = \"{}\"\n",
            embedding_section(&fake, "max_batch = 64\nmax_wait_ms = 50\n"),
            otlp.url
        ),
    );
    let url = cluster.url();
    load(&url, 200);

    // A text query's time in the embedder is its own part of `server-timing`, and its span.
    let trace = "5a7e0b3f2c9d4e1fa0b1c2d3e4f50617";
    let resp = client()
        .post(&format!("{url}/v1/search"))
        .header("traceparent", &format!("00-{trace}-1a2b3c4d5e6f7081-01"))
        .send_json(json!({"collection": "docs", "query": text(3), "top_k": 1}))
        .unwrap();
    let timing = resp.headers()["server-timing"]
        .to_str()
        .unwrap()
        .to_string();
    let embed_ms: f64 = timing
        .split(", ")
        .find_map(|p| p.strip_prefix("embed;dur="))
        .and_then(|d| d.parse().ok())
        .unwrap_or_else(|| panic!("no embed part: {timing}"));
    assert!(embed_ms > 0.0, "{timing}");
    let spans = otlp.trace(trace, Duration::from_secs(30), |spans| {
        spans.iter().any(|s| s.name == "embed") && spans.iter().any(|s| s.name.starts_with("POST "))
    });
    let request = spans.iter().find(|s| s.name.starts_with("POST ")).unwrap();
    let embed = spans.iter().find(|s| s.name == "embed").unwrap();
    assert_eq!(embed.parent, request.span_id);
    assert_eq!(
        (
            embed.attr("vecgate.model"),
            embed.attr("vecgate.collection")
        ),
        ("fake-8", "docs")
    );

    let answer = seed(
        &url,
        json!({"collection": "docs", "query": text(17), "top_k": 3}),
    );
    assert_eq!(top_id(&answer), 17, "{answer}");
    assert_eq!(answer["results"][0]["payload"]["text"], text(17));

    // 32 clients at once: their texts travel together.
    let calls_before = fake.batches().len();
    let threads: Vec<_> = (0..32)
        .map(|i| {
            let url = url.clone();
            std::thread::spawn(move || {
                let answer = seed(
                    &url,
                    json!({"collection": "docs", "query": text(100 + i), "top_k": 1}),
                );
                assert_eq!(top_id(&answer), 100 + i as u64, "{answer}");
            })
        })
        .collect();
    threads.into_iter().for_each(|t| t.join().unwrap());
    let batches = fake.batches()[calls_before..].to_vec();
    let texts: usize = batches.iter().map(Vec::len).sum();
    assert_eq!(texts, 32, "every text embedded once: {batches:?}");
    assert!(
        batches.len() < 32 && batches.iter().any(|b| b.len() > 1),
        "concurrent texts share calls: {:?}",
        batches.iter().map(Vec::len).collect::<Vec<_>>()
    );

    // The same text again is answered from the embedding cache.
    let calls = fake.batches().len();
    let hits = metric(
        &cluster.admin(),
        "vecgate_embed_cache_lookups_total",
        &["result=\"hit\""],
    );
    seed(
        &url,
        json!({"collection": "docs", "query": text(17), "top_k": 3}),
    );
    assert_eq!(fake.batches().len(), calls, "no call for a cached text");
    assert_eq!(
        metric(
            &cluster.admin(),
            "vecgate_embed_cache_lookups_total",
            &["result=\"hit\""]
        ),
        hits + 1.0
    );

    // Qdrant's Document, as qdrant-client sends it, in a query and its prefetch.
    let doc = |t: String| json!({"text": t, "model": "fake-8"});
    let answer = ok(
        "POST",
        &format!("{url}/collections/docs/points/query"),
        Some(&json!({"query": doc(text(42)), "limit": 2})),
    );
    assert_eq!(answer["points"][0]["id"], 42, "{answer}");
    let answer = ok(
        "POST",
        &format!("{url}/collections/docs/points/query"),
        Some(
            &json!({"prefetch": {"query": doc(text(43)), "limit": 10}, "query": {"nearest": doc(text(43))}, "limit": 1}),
        ),
    );
    assert_eq!(answer["points"][0]["id"], 43, "{answer}");

    // Points written with Documents for vectors.
    ok(
        "PUT",
        &format!("{url}/collections/docs/points?wait=true"),
        Some(
            &json!({"points": [{"id": 1000, "vector": doc("a new text".into()), "payload": {"text": "a new text"}}]}),
        ),
    );
    let answer = seed(
        &url,
        json!({"collection": "docs", "query": "a new text", "top_k": 1}),
    );
    assert_eq!(top_id(&answer), 1000, "{answer}");

    let (status, body) = call(
        "POST",
        &format!("{url}/collections/docs/points/query"),
        Some(&json!({"query": {"text": "x", "model": "another-model"}})),
    );
    assert_eq!(status, 400);
    assert!(
        body.to_string().contains("another-model") && body.to_string().contains("fake-8"),
        "{body}"
    );
}

#[test]
fn text_without_an_embedder_is_a_400_naming_the_collection() {
    let dir = tempfile::tempdir().unwrap();
    let router = embedded(dir.path(), "");
    load(&router.url(), 10);
    for (path, body) in [
        (
            "/v1/search",
            json!({"collection": "docs", "query": "hello"}),
        ),
        (
            "/collections/docs/points/query",
            json!({"query": {"text": "hello", "model": "any"}}),
        ),
    ] {
        let (status, answer) = call("POST", &format!("{}{path}", router.url()), Some(&body));
        assert_eq!(status, 400, "{answer}");
        let message = answer["status"]["error"].as_str().unwrap_or_default();
        assert!(message.contains("`docs` has no embedder"), "{message}");
    }
}

#[test]
fn an_embedder_answering_429_is_asked_again_after_its_retry_after() {
    let fake = FakeEmbedder::start();
    let dir = tempfile::tempdir().unwrap();
    let router = embedded_env(
        dir.path(),
        &format!(
            "[routing]\ntimeout_ms = 5000\n\n{}",
            embedding_section(&fake, "api_key_env = \"VECGATE_TEST_EMBED_KEY\"\n")
        ),
        &[("VECGATE_TEST_EMBED_KEY", "test-key")],
    );
    load(&router.url(), 20);
    fake.refuse_next(1);
    let answer = seed(
        &router.url(),
        json!({"collection": "docs", "query": text(5), "top_k": 1}),
    );
    assert_eq!(top_id(&answer), 5, "{answer}");
    assert_eq!(fake.batches().len(), 2, "refused once, then answered");
    let admin = format!("http://{}", router.addrs[1]);
    assert_eq!(
        metric(&admin, "vecgate_embed_retries_total", &["reason=\"429\""]),
        1.0
    );
    assert!(
        fake.keys().iter().all(|k| k == "test-key") && fake.keys().len() == 2,
        "the key from api_key_env goes with every call: {:?}",
        fake.keys()
    );
}

#[test]
fn a_stalled_embedder_times_out_with_504_and_is_counted() {
    let fake = FakeEmbedder::start();
    let dir = tempfile::tempdir().unwrap();
    let router = embedded(
        dir.path(),
        &format!(
            "[routing]\ntimeout_ms = 1000\n\n{}",
            embedding_section(&fake, "timeout_ms = 300\nretries = 1\n")
        ),
    );
    load(&router.url(), 10);
    fake.stall(3000);
    let (status, answer) = call(
        "POST",
        &format!("{}/v1/search", router.url()),
        Some(&json!({"collection": "docs", "query": "anything", "top_k": 1})),
    );
    assert_eq!(status, 504, "{answer}");
    assert!(answer.to_string().contains("embedder"), "{answer}");
    let admin = format!("http://{}", router.addrs[1]);
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        metric(
            &admin,
            "vecgate_embed_calls_total",
            &["outcome=\"timeout\""]
        ) >= 1.0
    );
    assert_eq!(
        metric(
            &admin,
            "vecgate_embed_retries_total",
            &["reason=\"timeout\""]
        ),
        1.0,
        "one retry, then the call gave up"
    );
}

#[test]
fn qdrant_client_does_dense_sparse_and_hybrid_search_with_documents_unchanged() {
    let fake = FakeEmbedder::start();
    let cluster = Cluster::start_with(3, &["eu"], "", &embedding_section(&fake, ""));
    let out: Value = serde_json::from_str(&run_python(
        "qdrant_client_documents.py",
        &[&cluster.url(), "fake-8"],
    ))
    .unwrap();
    assert_eq!(out["dense"][0], 7, "{out}");
    assert_eq!(out["prefetched"][0], 11, "{out}");
    assert_eq!(
        out["sparse"][0], 23,
        "BM25 finds the passage by its number: {out}"
    );
    assert_eq!(out["hybrid"][0], 31, "{out}");
    let sizes: Vec<usize> = fake.batches().iter().map(Vec::len).collect();
    assert!(
        sizes.iter().sum::<usize>() == 40 && sizes.iter().all(|&n| n <= 32),
        "the upsert's 40 texts, in calls of at most max_batch (32); the queries' texts came from the cache: {sizes:?}"
    );
}

/// Cosine similarity of two vectors.
fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (norm(a) * norm(b))
}

#[test]
fn builtin_vectors_match_sentence_transformers() {
    let reference: Vec<Value> =
        serde_json::from_str(include_str!("../../router/testdata/minilm_reference.json")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let router = embedded(
        dir.path(),
        &format!(
            // A debug build runs the model slowly: the deadline leaves it time.
            "[routing]\ntimeout_ms = 60000\n\n[embedding]\nprovider = \"builtin\"\nmodel_dir = \"{}\"\ntimeout_ms = 60000\n",
            minilm_dir().display()
        ),
    );
    let url = router.url();
    ok(
        "PUT",
        &format!("{url}/collections/minilm"),
        Some(&json!({"vectors": {"size": 384, "distance": "Cosine"}})),
    );
    let points: Vec<Value> = reference
        .iter()
        .enumerate()
        .map(|(i, r)| json!({"id": i, "vector": {"text": r["text"], "model": "sentence-transformers/all-MiniLM-L6-v2"}}))
        .collect();
    ok(
        "PUT",
        &format!("{url}/collections/minilm/points?wait=true"),
        Some(&json!({ "points": points })),
    );
    let stored = ok(
        "POST",
        &format!("{url}/collections/minilm/points"),
        Some(&json!({"ids": (0..reference.len()).collect::<Vec<_>>(), "with_vector": true})),
    );
    for (i, r) in reference.iter().enumerate() {
        let want: Vec<f32> = serde_json::from_value(r["vector"].clone()).unwrap();
        let point = stored
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["id"] == i)
            .unwrap_or_else(|| panic!("point {i} missing: {stored}"));
        let got: Vec<f32> = serde_json::from_value(point["vector"].clone()).unwrap();
        let similarity = cosine(&got, &want);
        assert!(
            similarity >= 0.999,
            "{:?}: cosine {similarity} to sentence-transformers",
            r["text"]
                .as_str()
                .unwrap()
                .chars()
                .take(40)
                .collect::<String>()
        );
    }
    let answer = seed(
        &url,
        json!({"collection": "minilm", "query": "How can I set how long cached answers live?", "top_k": 1}),
    );
    assert_eq!(
        top_id(&answer),
        0,
        "the cache TTL question is nearest: {answer}"
    );
}

#[test]
fn routers_sharing_redis_share_their_embeddings() {
    let fake = FakeEmbedder::start();
    let redis = RedisServer::start();
    let sections = format!(
        "[cache]\nredis_url = \"{}\"\n\n{}",
        redis.url(),
        embedding_section(&fake, "")
    );
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (
        embedded(dir_a.path(), &sections),
        embedded(dir_b.path(), &sections),
    );
    load(&a.url(), 30);
    load(&b.url(), 30);
    let q = json!({"collection": "docs", "query": text(12), "top_k": 1});
    assert_eq!(top_id(&seed(&a.url(), q.clone())), 12);
    let calls = fake.batches().len();
    let admin_b = format!("http://{}", b.addrs[1]);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    // The first router stores the vector in Redis in the background.
    loop {
        let before = metric(
            &admin_b,
            "vecgate_embed_cache_lookups_total",
            &["tier=\"l2\"", "result=\"hit\""],
        );
        assert_eq!(top_id(&seed(&b.url(), q.clone())), 12);
        let after = metric(
            &admin_b,
            "vecgate_embed_cache_lookups_total",
            &["tier=\"l2\"", "result=\"hit\""],
        );
        if after == before + 1.0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the vector never reached Redis"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        fake.batches()[calls..]
            .iter()
            .all(|b| !b.contains(&text(12))),
        "the second router did not ask the embedder again for the text"
    );
}
