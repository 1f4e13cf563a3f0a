//! End-to-end test of the semantic cache on paraphrased questions: three routers over the same
//! 3 shards (no cache, `semantic = "exact"`, `semantic = "threshold"`) asked the same
//! 1,000-query mix, every answer of the caching routers compared with the uncached one.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use e2e::*;
use serde_json::{json, Value};

/// Three pages of Debian's HTML build of the Python tutorial (package python3-doc).
const PAGES: [&str; 3] = ["errors.html", "controlflow.html", "classes.html"];
const TUTORIAL: &str = "/usr/share/doc/python3-doc/html/tutorial";

/// The base questions the mix paraphrases.
const QUESTIONS: [&str; 20] = [
    "How do I catch an exception raised inside a try block?",
    "What does the finally clause do?",
    "How do I raise my own exception?",
    "How do I define a custom exception class?",
    "What is exception chaining with from?",
    "What does an else clause on a for loop do?",
    "How does the range function work?",
    "How do I define a function with default argument values?",
    "What are keyword arguments?",
    "How does the match statement work?",
    "What is a lambda expression?",
    "How do I write a docstring?",
    "What is the difference between class variables and instance variables?",
    "How does inheritance work?",
    "What are private variables in a class?",
    "How do I write an iterator?",
    "How do I write a generator function with yield?",
    "What is a namespace?",
    "How do nonlocal and global change scope?",
    "What does the pass statement do?",
];

/// Ways of asking the same question.
fn paraphrases(q: &str) -> Vec<String> {
    let bare = q.trim_end_matches('?');
    let lower = {
        let mut c = bare.chars();
        c.next()
            .map(|f| f.to_lowercase().collect::<String>() + c.as_str())
            .unwrap_or_default()
    };
    vec![
        q.to_string(),
        bare.to_string(),
        format!("{bare}, please?"),
        format!("{q} Thanks!"),
        format!("Quick question: {lower}?"),
        format!("Can you tell me {lower}?"),
        format!("{bare} in Python?"),
        q.to_uppercase(),
        format!("I'd like to know: {lower}?"),
        q.replacen("How do I", "How can I", 1)
            .replacen("What is", "What's", 1),
    ]
}

/// The mix: every paraphrase of every question at five limits, 1,000 requests, shuffled with a
/// fixed seed.
fn mix() -> Vec<(String, u64)> {
    let mut all = Vec::new();
    for q in QUESTIONS {
        for p in paraphrases(q) {
            for k in [1, 2, 3, 5, 10] {
                all.push((p.clone(), k));
            }
        }
    }
    let mut seed: u64 = 0x5eed;
    for i in (1..all.len()).rev() {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        all.swap(i, (seed >> 33) as usize % (i + 1));
    }
    all
}

/// A router over `cluster`'s shards with its own data directory and `sections` appended.
fn router(cluster: &Cluster, dir: &Path, name: &str, sections: &str) -> Process {
    let base = std::fs::read_to_string(&cluster.config).unwrap();
    let data = dir.join(format!("{name}-data"));
    let text = base
        .lines()
        .map(|l| {
            if l.starts_with("data_dir") {
                format!("data_dir = \"{}\"", data.display())
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(&config, format!("{text}\n\n{sections}\n")).unwrap();
    vecgate(&config)
}

/// Ids and scores of a `/v1/search` answer, and its `x-vecgate-cache`.
fn search(url: &str, query: &str, k: u64) -> (Vec<(String, f64)>, String) {
    let body =
        serde_json::to_vec(&json!({"collection": "tut", "query": query, "top_k": k})).unwrap();
    let (status, answer, cache) = call_cached("POST", &format!("{url}/v1/search"), &body);
    assert_eq!(status, 200, "{answer}");
    let results = answer["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["id"].to_string(), r["score"].as_f64().unwrap()))
        .collect();
    (results, cache.unwrap_or_default())
}

fn same(a: &[(String, f64)], b: &[(String, f64)]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.0 == y.0 && (x.1 - y.1).abs() < 1e-4)
}

#[test]
fn exact_semantic_hits_equal_a_search_on_a_paraphrase_mix_and_threshold_hits_are_measured() {
    let embedding = format!(
        "[embedding]\nprovider = \"builtin\"\nmodel_dir = \"{}\"\ntimeout_ms = 60000\n",
        minilm_dir().display()
    );
    let cluster = Cluster::start_with(3, &["local"], "timeout_ms = 60000", &embedding);
    let dir = tempfile::tempdir().unwrap();
    let pages: Vec<String> = PAGES.iter().map(|p| format!("{TUTORIAL}/{p}")).collect();
    let (config, url, state) = (
        cluster.config.display().to_string(),
        cluster.url(),
        dir.path().join("state.jsonl"),
    );
    let mut args = vec!["ingest"];
    args.extend(pages.iter().map(String::as_str));
    args.extend([
        "--collection",
        "tut",
        "--config",
        &config,
        "--url",
        &url,
        "--state",
        state.to_str().unwrap(),
        "--max-tokens",
        "100",
    ]);
    let (status, out, err) = run_captured("vecgate", &args, Duration::from_secs(600));
    assert!(status.success(), "{out}{err}");

    let cache = "[cache]\nwarm_top_n = 0\n\n[collections.tut.cache]\n";
    let exact = router(
        &cluster,
        dir.path(),
        "exact",
        &format!("{cache}semantic = \"exact\"\nsemantic_verify_ratio = 0.25\n"),
    );
    let threshold = router(
        &cluster,
        dir.path(),
        "threshold",
        &format!("{cache}semantic = \"threshold\"\nsemantic_threshold = 0.95\nsemantic_verify_ratio = 0.25\n"),
    );

    let requests = mix();
    assert_eq!(requests.len(), 1000);
    let mut outcomes: HashMap<(&str, String), usize> = HashMap::new();
    let (mut exact_differs, mut threshold_false) = (0, 0);
    // Semantic hits for a text asked before (at another limit) and for a new text.
    let (mut asked, mut exact_repeats) = (std::collections::HashSet::new(), 0);
    for (query, k) in &requests {
        let repeat = !asked.insert(query.clone());
        let (truth, _) = search(&url, query, *k);
        assert_eq!(truth.len(), *k as usize);
        let (got, how) = search(&exact.url(), query, *k);
        if !same(&got, &truth) {
            exact_differs += 1;
            eprintln!("exact ({how}) differs for {query:?} k={k}: {got:?} vs {truth:?}");
        }
        if how == "semantic" && repeat {
            exact_repeats += 1;
        }
        *outcomes.entry(("exact", how)).or_default() += 1;
        let (got, how) = search(&threshold.url(), query, *k);
        if how == "semantic" && !same(&got, &truth) {
            threshold_false += 1;
        }
        *outcomes.entry(("threshold", how)).or_default() += 1;
    }
    let count =
        |mode: &str, how: &str| outcomes.get(&(mode, how.to_string())).copied().unwrap_or(0);
    let (exact_hits, threshold_hits) = (count("exact", "semantic"), count("threshold", "semantic"));
    eprintln!(
        "1000 requests: exact mode {exact_hits} semantic hits ({:.1}%; {exact_repeats} for a text asked before at another limit, {} for a new paraphrase), {} l1, {} miss; threshold 0.95: {threshold_hits} semantic hits ({:.1}%), {threshold_false} of them differ from a search ({:.1}% false hits), {} l1",
        exact_hits as f64 / 10.0,
        exact_hits - exact_repeats,
        count("exact", "l1"),
        count("exact", "miss"),
        threshold_hits as f64 / 10.0,
        threshold_false as f64 * 100.0 / threshold_hits.max(1) as f64,
        count("threshold", "l1"),
    );
    assert_eq!(
        exact_differs, 0,
        "exact mode served answers a search does not give"
    );
    assert!(
        exact_hits > exact_repeats,
        "no paraphrase was a semantic hit in exact mode"
    );
    assert!(
        threshold_hits > exact_hits,
        "{threshold_hits} vs {exact_hits}"
    );

    // The sampled checks: exact mode's never differ; their counts add up with the hits.
    let checks = |p: &Process, mode: &str, result: &str| {
        metric(
            &format!("http://{}", p.addrs[1]),
            "vecgate_cache_semantic_checks_total",
            &[&format!("mode=\"{mode}\""), &format!("result=\"{result}\"")],
        )
    };
    assert_eq!(checks(&exact, "exact", "differs"), 0.0);
    assert!(checks(&exact, "exact", "same") > 0.0);
    let threshold_checks =
        checks(&threshold, "threshold", "same") + checks(&threshold, "threshold", "differs");
    assert!(threshold_checks > 0.0);
    let served = metric(
        &format!("http://{}", exact.addrs[1]),
        "vecgate_cache_lookups_total",
        &["tier=\"semantic\"", "result=\"hit\""],
    );
    assert_eq!(served as usize, exact_hits);

    // A write drops the semantic entries: the next paraphrase searches again.
    let (_, how) = search(&exact.url(), QUESTIONS[0], 3);
    assert_ne!(how, "miss");
    let point =
        json!({"points": [{"id": 1, "vector": vec![0.05f32; 384], "payload": {"text": "x"}}]});
    let v: Value = ok(
        "PUT",
        &format!("{}/collections/tut/points?wait=true", exact.url()),
        Some(&point),
    );
    assert_eq!(v["status"], "completed");
    let (_, how) = search(&exact.url(), &format!("{} Thanks!", QUESTIONS[0]), 3);
    assert_eq!(how, "miss");
}

/// A unit vector in 8 dimensions, from an angle in the first plane and a tilt.
fn unit8(angle: f32, tilt: f32) -> Vec<f32> {
    let mut v = vec![angle.cos(), angle.sin(), tilt, 0.1, 0.0, 0.0, 0.0, 0.0];
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= n);
    v
}

fn query(url: &str, vector: &[f32]) -> (Vec<u64>, String) {
    let body = serde_json::to_vec(&json!({"query": vector, "limit": 3})).unwrap();
    let (status, answer, cache) =
        call_cached("POST", &format!("{url}/collections/v/points/query"), &body);
    assert_eq!(status, 200, "{answer}");
    let ids = answer["result"]["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_u64().unwrap())
        .collect();
    (ids, cache.unwrap_or_default())
}

#[test]
fn a_write_that_could_change_a_semantic_answer_is_never_served_past() {
    for mode in ["generation", "precise"] {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("vecgate.toml");
        std::fs::write(
            &config,
            format!(
                "[server]\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n\n[[shards]]\nname = \"local\"\nbuiltin = true\n\n[cache]\nwarm_top_n = 0\n\n[collections.v.cache]\nmode = \"{mode}\"\nsemantic = \"exact\"\nsemantic_verify_ratio = 0.0\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let router = vecgate(&config);
        let url = router.url();
        ok(
            "PUT",
            &format!("{url}/collections/v"),
            Some(&json!({"vectors": {"size": 8, "distance": "Cosine"}})),
        );
        // Points 0.5 radians apart: the top 3 around angle 0 has a wide gap to the 4th.
        let points: Vec<Value> = (0..12)
            .map(|i| json!({"id": i, "vector": unit8(i as f32 * 0.5, 0.0)}))
            .collect();
        ok(
            "PUT",
            &format!("{url}/collections/v/points?wait=true"),
            Some(&json!({ "points": points })),
        );
        let (first, how) = query(&url, &unit8(0.45, 0.0));
        assert_eq!((first, how.as_str()), (vec![1, 0, 2], "miss"), "{mode}");
        let (near, how) = query(&url, &unit8(0.47, 0.01));
        assert_eq!((near, how.as_str()), (vec![1, 0, 2], "semantic"), "{mode}");
        // A far query is searched.
        let (_, how) = query(&url, &unit8(2.0, 0.0));
        assert_eq!(how, "miss", "{mode}");

        // A new point next to the query: the entry may no longer stand.
        ok(
            "PUT",
            &format!("{url}/collections/v/points?wait=true"),
            Some(&json!({"points": [{"id": 100, "vector": unit8(0.47, 0.0)}]})),
        );
        let (after, how) = query(&url, &unit8(0.48, 0.01));
        assert_eq!((after, how.as_str()), (vec![100, 1, 0], "miss"), "{mode}");
    }
}
