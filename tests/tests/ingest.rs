//! End-to-end tests of `vecgate ingest`: the Python tutorial (Debian's python3-doc) chunked,
//! embedded by the built-in model and written through a 3-shard cluster, then asked the
//! committed questions; a run killed part way and run again; a changed document rewritten.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use e2e::embedder::FakeEmbedder;
use e2e::*;
use serde_json::{json, Value};

/// Debian's HTML build of the Python tutorial (package python3-doc, installed by
/// scripts/deps.sh).
const TUTORIAL: &str = "/usr/share/doc/python3-doc/html/tutorial";

/// Runs `vecgate ingest` with `args` to its end; its exit status and stdout.
fn ingest(args: &[&str]) -> (std::process::ExitStatus, String) {
    let mut all = vec!["ingest"];
    all.extend_from_slice(args);
    let (status, stdout, stderr) = run_captured("vecgate", &all, Duration::from_secs(600));
    eprintln!("{stderr}");
    (status, stdout)
}

fn count(url: &str, collection: &str) -> u64 {
    ok(
        "POST",
        &format!("{url}/collections/{collection}/points/count"),
        Some(&json!({"exact": true})),
    )["count"]
        .as_u64()
        .unwrap()
}

/// The payloads of `source`'s chunks in `collection`, by chunk index.
fn chunks_of(url: &str, collection: &str, source: &str) -> Vec<Value> {
    let answer = ok(
        "POST",
        &format!("{url}/collections/{collection}/points/scroll"),
        Some(&json!({
            "filter": {"must": [{"key": "source_id", "match": {"value": source}}]},
            "limit": 100,
            "with_payload": true
        })),
    );
    let mut payloads: Vec<Value> = answer["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["payload"].clone())
        .collect();
    payloads.sort_by_key(|p| p["chunk_index"].as_u64());
    payloads
}

#[test]
fn the_python_tutorial_ingested_through_three_shards_answers_the_committed_questions() {
    let cluster = Cluster::start_with(
        3,
        &["local"],
        "timeout_ms = 60000",
        &format!(
            "[embedding]\nprovider = \"builtin\"\nmodel_dir = \"{}\"\ntimeout_ms = 60000\n",
            minilm_dir().display()
        ),
    );
    let state = tempfile::tempdir().unwrap();
    let state_file = state.path().join("state.jsonl");
    let config = cluster.config.display().to_string();
    let url = cluster.url();
    let args = [
        TUTORIAL,
        "--collection",
        "pydocs",
        "--config",
        &config,
        "--url",
        &url,
        "--state",
        state_file.to_str().unwrap(),
    ];
    let (status, out) = ingest(&args);
    assert!(status.success(), "{out}");
    assert!(out.contains("ingested 17 documents"), "{out}");
    let chunks: u64 = out
        .split(" chunks,")
        .next()
        .and_then(|s| s.rsplit('(').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no chunk count in {out}"));
    assert!(chunks > 100, "{out}");
    assert_eq!(count(&url, "pydocs"), chunks);
    // Every shard holds a part.
    for replicas in &cluster.replicas {
        let held = count(&replicas[0].url(), "pydocs");
        assert!(
            held > 0 && held < chunks,
            "a shard holds {held} of {chunks}"
        );
    }

    let questions: Vec<Value> = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/ingest_questions.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(questions.len(), 20);
    let mut found = 0;
    for q in &questions {
        let (question, source) = (&q["question"], q["source"].as_str().unwrap());
        let (status, answer) = call(
            "POST",
            &format!("{url}/v1/search"),
            Some(&json!({"collection": "pydocs", "query": question, "top_k": 5})),
        );
        assert_eq!(status, 200, "{answer}");
        let sources: Vec<&str> = answer["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["payload"]["source_id"].as_str().unwrap())
            .collect();
        let hit = sources.iter().any(|s| s.ends_with(&format!("/{source}")));
        eprintln!(
            "{} {question}: {}",
            if hit { "hit " } else { "MISS" },
            sources.join(", ")
        );
        found += usize::from(hit);
        let first = &answer["results"][0]["payload"];
        assert!(
            first["chunk_index"].is_u64() && first["text"].is_string(),
            "{first}"
        );
        assert!(
            first["timestamp"].is_string() && first["title"].is_string(),
            "{first}"
        );
    }
    assert!(
        found >= 18,
        "{found} of 20 questions found their source in the top 5"
    );

    // A second run finds every document finished and writes nothing.
    let (status, out) = ingest(&args);
    assert!(status.success(), "{out}");
    assert!(
        out.contains("ingested 0 documents") && out.contains("skipped 17 unchanged"),
        "{out}"
    );
    assert_eq!(count(&url, "pydocs"), chunks);
}

/// An embedded vecgate whose embedder is `fake`; its config file and the process.
fn embedded_with(dir: &Path, fake: &FakeEmbedder) -> (PathBuf, Process) {
    let config = dir.join("vecgate.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n\n[[shards]]\nname = \"local\"\nbuiltin = true\n\n[embedding]\nprovider = \"openai\"\nurl = \"{}\"\nmodel = \"fake-8\"\n",
            dir.join("data").display(),
            fake.url
        ),
    )
    .unwrap();
    let router = vecgate(&config);
    (config, router)
}

fn lines(path: &Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |t| t.lines().count())
}

#[test]
fn an_ingest_killed_part_way_goes_on_where_it_stopped_and_a_changed_document_is_rewritten() {
    let fake = FakeEmbedder::start();
    let dir = tempfile::tempdir().unwrap();
    let (config, router) = embedded_with(dir.path(), &fake);
    let docs = dir.path().join("docs");
    std::fs::create_dir(&docs).unwrap();
    for i in 0..30 {
        std::fs::write(
            docs.join(format!("note-{i:02}.md")),
            format!("# N{i:02}\n\nThis is note {i:02}. It has two sentences."),
        )
        .unwrap();
    }
    // Three chunks of at most 8 approximate tokens (four characters each), one per sentence.
    std::fs::write(
        docs.join("long.txt"),
        "The first sentence is here. The second one follows it. The third ends the text.",
    )
    .unwrap();
    std::fs::write(
        docs.join("lines.jsonl"),
        "{\"id\": \"faq-1\", \"text\": \"How do I reset it?\", \"tags\": [\"faq\"], \"lang\": \"en\"}\n",
    )
    .unwrap();
    let state = dir.path().join("state.jsonl");
    let (config_arg, url) = (config.display().to_string(), router.url());
    let args = [
        "ingest",
        docs.to_str().unwrap(),
        "--collection",
        "notes",
        "--config",
        &config_arg,
        "--url",
        &url,
        "--state",
        state.to_str().unwrap(),
        "--max-tokens",
        "8",
        "--overlap",
        "0",
        "--batch",
        "1",
        "--concurrency",
        "1",
        "--tags",
        "kb,v1",
    ];

    // Every embedding call takes 100 ms; the run is killed once a few documents are finished.
    fake.stall(100);
    let mut run = Command::new(bin("vecgate"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let until = Instant::now() + Duration::from_secs(60);
    while lines(&state) < 5 {
        assert!(Instant::now() < until, "no document finished within 60 s");
        assert!(
            run.try_wait().unwrap().is_none(),
            "the run ended before it was killed"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    run.kill().unwrap();
    run.wait().unwrap();
    let finished = lines(&state);
    assert!(
        finished < 32,
        "{finished} documents finished before the kill"
    );

    fake.stall(0);
    let calls_before = fake.batches().len();
    let (status, out) = ingest(&args[1..]);
    assert!(status.success(), "{out}");
    assert!(
        out.contains(&format!("ingested {} documents", 32 - finished))
            && out.contains(&format!("skipped {finished} unchanged")),
        "{out}"
    );
    // 30 notes of 2 chunks, 3 chunks of long.txt, 1 jsonl line: each point written once.
    assert_eq!(count(&url, "notes"), 64);
    // Only the unfinished documents' chunks were embedded again (a finished one's never).
    let embedded_again = fake.batches().len() - calls_before;
    assert!(
        embedded_again <= 64 - 2 * (finished - 1),
        "{embedded_again} calls"
    );

    let long = docs
        .join("long.txt")
        .canonicalize()
        .unwrap()
        .display()
        .to_string();
    let chunks = chunks_of(&url, "notes", &long);
    let texts: Vec<&str> = chunks.iter().map(|p| p["text"].as_str().unwrap()).collect();
    assert_eq!(
        texts,
        [
            "The first sentence is here.",
            "The second one follows it.",
            "The third ends the text."
        ]
    );
    assert_eq!(chunks[2]["chunk_index"], 2);
    assert_eq!(chunks[2]["tags"], json!(["kb", "v1"]));
    let faq = chunks_of(&url, "notes", "faq-1");
    assert_eq!(faq.len(), 1);
    assert_eq!(faq[0]["tags"], json!(["kb", "v1", "faq"]));
    assert_eq!(faq[0]["lang"], "en");
    assert_eq!(faq[0]["text"], "How do I reset it?");

    // long.txt shrinks to one chunk: it is written again and its two old chunks deleted.
    std::fs::write(docs.join("long.txt"), "Only one sentence now.").unwrap();
    let (status, out) = ingest(&args[1..]);
    assert!(status.success(), "{out}");
    assert!(
        out.contains("ingested 1 documents") && out.contains("skipped 31 unchanged"),
        "{out}"
    );
    assert_eq!(count(&url, "notes"), 62);
    let chunks = chunks_of(&url, "notes", &long);
    assert_eq!(chunks.len(), 1);
    assert_eq!(chunks[0]["text"], "Only one sentence now.");

    // The embedded default has no embedder: refused with the reason.
    let (status, _, err) = run_captured(
        "vecgate",
        &["ingest", docs.to_str().unwrap(), "--collection", "notes"],
        Duration::from_secs(30),
    );
    assert!(!status.success());
    assert!(err.contains("collection notes has no embedder"), "{err}");
}
