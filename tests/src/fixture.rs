//! The `docs` collection the cluster tests share: its data, its setup through any endpoint, and a
//! stream of searches that counts what failed.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use crate::{call, client, metric, ok, Cluster, Process};

/// The dimension of the `docs` collection.
pub const DIM: usize = 8;

/// `n` vectors of `dim` uniform components in [-1, 1), the same for the same `seed`.
pub fn random_vectors(n: usize, dim: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| (0..dim).map(|_| rng.random_range(-1.0f32..1.0)).collect())
        .collect()
}

/// Creates `docs` (Dot, [`DIM`]) and upserts `data`: every fifth id a UUID, payloads `group` and `n`.
pub fn setup(url: &str, data: &[Vec<f32>]) {
    ok(
        "PUT",
        &format!("{url}/collections/docs"),
        Some(&json!({"vectors": {"size": DIM, "distance": "Dot"}})),
    );
    for (c, chunk) in data.chunks(100).enumerate() {
        let points: Vec<Value> = chunk
            .iter()
            .enumerate()
            .map(|(j, v)| {
                let i = c * 100 + j;
                let id = if i % 5 == 0 {
                    json!(format!("00000000-0000-0000-0000-{i:012}"))
                } else {
                    json!(i)
                };
                json!({"id": id, "vector": v, "payload": {"group": format!("g{}", i % 7), "n": i}})
            })
            .collect();
        ok(
            "PUT",
            &format!("{url}/collections/docs/points?wait=true"),
            Some(&json!({"points": points})),
        );
    }
}

/// An admin endpoint's JSON (not wrapped in Qdrant's envelope).
pub fn admin_json(url: &str) -> Value {
    let (status, body) = call("GET", url, None);
    assert_eq!(status, 200, "{url}: {body}");
    body
}

/// `v` without the points' `version` fields: a version names the write that last changed a
/// point (a router's clock or a shard's), so two deployments fed the same data differ there.
pub fn unversioned(mut v: Value) -> Value {
    fn strip(v: &mut Value) {
        match v {
            Value::Object(m) => {
                m.remove("version");
                m.values_mut().for_each(strip);
            }
            Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    strip(&mut v);
    v
}

/// The ids of a list of points or hits.
pub fn ids(points: &Value) -> Vec<Value> {
    points
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].clone())
        .collect()
}

/// A search with offset, payloads and a `must_not` filter.
pub fn search_body(q: &[f32]) -> Value {
    json!({"query": q, "limit": 7, "offset": 3, "with_payload": true, "filter": {"must_not": [{"key": "group", "match": {"value": "g3"}}]}})
}

/// How many `/points/query` requests `replica` has served.
pub fn query_count(replica: &Process) -> f64 {
    metric(
        &replica.url(),
        "shardd_http_requests_total",
        &["route=\"/collections/{c}/points/query\""],
    )
}

/// Search loops running against the router, counting answers.
pub struct Stream {
    handles: Vec<std::thread::JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    errors: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Stream {
    /// Starts `threads` loops of searches (each stops by itself after 20,000).
    pub fn start(url: String, threads: usize) -> Stream {
        let stop = Arc::new(AtomicBool::new(false));
        let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let errors = Arc::new(std::sync::Mutex::new(Vec::new()));
        let handles = (0..threads)
            .map(|t| {
                let (url, stop, okc, bad, errors) = (
                    url.clone(),
                    stop.clone(),
                    ok.clone(),
                    failed.clone(),
                    errors.clone(),
                );
                std::thread::spawn(move || {
                    let agent = client();
                    let mut i = 0u64;
                    while !stop.load(Ordering::SeqCst) && i < 20_000 {
                        i += 1;
                        let q = vec![((t as f32) + (i as f32)).sin(); DIM];
                        match agent
                            .post(&format!("{url}/collections/docs/points/query"))
                            .send_json(json!({"query": q, "limit": 5}))
                        {
                            Ok(r) if r.status().as_u16() == 200 => {
                                okc.fetch_add(1, Ordering::SeqCst);
                            }
                            Ok(mut r) => {
                                bad.fetch_add(1, Ordering::SeqCst);
                                errors
                                    .lock()
                                    .unwrap()
                                    .push(r.body_mut().read_to_string().unwrap_or_default());
                            }
                            Err(e) => {
                                bad.fetch_add(1, Ordering::SeqCst);
                                errors.lock().unwrap().push(e.to_string());
                            }
                        }
                    }
                })
            })
            .collect();
        Stream {
            handles,
            stop,
            ok,
            failed,
            errors,
        }
    }

    /// Searches that succeeded so far.
    pub fn succeeded(&self) -> usize {
        self.ok.load(Ordering::SeqCst)
    }

    /// Waits (up to a minute) until `n` searches succeeded.
    pub fn wait_for_ok(&self, n: usize) {
        let t = Instant::now();
        while self.ok.load(Ordering::SeqCst) < n && t.elapsed() < Duration::from_secs(60) {
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops the loops and returns (succeeded, failed, first error).
    pub fn finish(self) -> (usize, usize, Option<String>) {
        self.stop.store(true, Ordering::SeqCst);
        self.handles.into_iter().for_each(|h| h.join().unwrap());
        let first = self.errors.lock().unwrap().first().cloned();
        (
            self.ok.load(Ordering::SeqCst),
            self.failed.load(Ordering::SeqCst),
            first,
        )
    }
}

/// Every point a replica holds (payloads and vectors), in id order, read from it directly.
pub fn replica_points(url: &str) -> Vec<Value> {
    scroll_all(
        url,
        json!({"limit": 1000, "with_payload": true, "with_vector": true}),
    )
}

/// Every page of a scroll of `docs` at `url` with `body` (its `offset` set page by page).
pub fn scroll_all(url: &str, mut body: Value) -> Vec<Value> {
    let mut out = Vec::new();
    loop {
        let page = ok(
            "POST",
            &format!("{url}/collections/docs/points/scroll"),
            Some(&body),
        );
        out.extend(page["points"].as_array().unwrap().iter().cloned());
        if page["next_page_offset"].is_null() {
            return out;
        }
        body["offset"] = page["next_page_offset"].clone();
    }
}

/// Reloads the router whose admin listener is `admin`; the reload must be applied.
pub fn reload(admin: &str) {
    let (status, body) = call("POST", &format!("{admin}/admin/reload"), None);
    assert_eq!(status, 200, "{body}");
}

/// Waits (up to `within`) until the sum of `metric{labels}` at `admin` reaches `at_least`.
pub fn wait_metric(
    admin: &str,
    metric_name: &str,
    labels: &[&str],
    at_least: f64,
    within: Duration,
) {
    let started = Instant::now();
    while metric(admin, metric_name, labels) < at_least {
        assert!(
            started.elapsed() < within,
            "{metric_name}{labels:?} below {at_least} after {within:?}: {}",
            admin_json(&format!("{admin}/admin/cluster"))
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Stops `stream` and asserts that none of its searches failed; how many succeeded.
pub fn finish_searches(stream: Stream) -> usize {
    let (succeeded, failed, first_error) = stream.finish();
    assert_eq!(failed, 0, "failed searches: {first_error:?}");
    succeeded
}

/// Waits (up to `within`) until every replica in `/admin/cluster` is `serving`.
pub fn wait_all_serving(admin: &str, within: Duration) {
    let started = Instant::now();
    loop {
        let cluster = admin_json(&format!("{admin}/admin/cluster"));
        let states: Vec<Value> = cluster["shards"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|s| s["replicas"].as_array().unwrap().clone())
            .map(|r| r["state"].clone())
            .collect();
        if states.iter().all(|s| s == "serving") {
            return;
        }
        assert!(
            started.elapsed() < within,
            "replicas not serving after {within:?}: {cluster}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Asserts that every replica of every shard in the config holds exactly the same points.
pub fn assert_replicas_identical(cluster: &Cluster) {
    for (s, replicas) in cluster.replicas.iter().enumerate() {
        if cluster.dropped.contains(&s) {
            continue;
        }
        let first = replica_points(&replicas[0].url());
        assert!(!first.is_empty(), "shard {s} holds nothing");
        for r in &replicas[1..] {
            let other = replica_points(&r.url());
            assert_eq!(first.len(), other.len(), "shard {s}: point counts differ");
            assert!(first == other, "shard {s}: replicas hold different points");
        }
    }
}

/// What each id should hold after the last write acknowledged for it: the upsert's `rev`, or
/// nothing once deleted.
pub type Expected = BTreeMap<u64, Option<u64>>;

/// One writer upserting and deleting ids 5000..5300 through the router, one write at a time;
/// it remembers what each id should hold after the last write acknowledged for it.
pub struct Writer {
    handle: JoinHandle<(Expected, Vec<String>)>,
    stop: Arc<AtomicBool>,
}

impl Writer {
    /// Starts the writer against the router at `url`.
    pub fn start(url: String) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let agent = client();
            let mut expected = BTreeMap::new();
            let mut errors = Vec::new();
            let mut i = 0u64;
            while !flag.load(Ordering::SeqCst) && i < 20_000 {
                i += 1;
                let (path, body, id, state) = if i.is_multiple_of(7) {
                    let id = 5000 + (i * 3) % 300;
                    ("points/delete", json!({"points": [id]}), id, None)
                } else {
                    let id = 5000 + i % 300;
                    let v = vec![(i as f32).cos(); DIM];
                    let p = json!({"points": [{"id": id, "vector": v, "payload": {"rev": i}}]});
                    ("points", p, id, Some(i))
                };
                let at = format!("{url}/collections/docs/{path}?wait=true");
                let r = if state.is_some() {
                    agent.put(&at).send_json(body)
                } else {
                    agent.post(&at).send_json(body)
                };
                match r {
                    Ok(r) if r.status().as_u16() == 200 => {
                        expected.insert(id, state);
                    }
                    Ok(mut r) => errors.push(r.body_mut().read_to_string().unwrap_or_default()),
                    Err(e) => errors.push(e.to_string()),
                }
            }
            (expected, errors)
        });
        Writer { handle, stop }
    }

    /// Stops it; returns what each id should hold and the errors of failed writes.
    pub fn finish(self) -> (Expected, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.join().unwrap()
    }

    /// Stops it and asserts that every write was acknowledged; what each id should hold.
    pub fn finish_clean(self) -> Expected {
        let (expected, errors) = self.finish();
        assert!(
            errors.is_empty(),
            "{} failed writes, the first: {:?}",
            errors.len(),
            errors.first()
        );
        expected
    }
}

/// Every acknowledged write is what the router reads back: the last upsert's `rev`, or gone.
pub fn assert_writes_kept(url: &str, expected: &Expected) {
    assert!(expected.len() > 50, "too few writes: {}", expected.len());
    for (id, state) in expected {
        let (status, body) = call("GET", &format!("{url}/collections/docs/points/{id}"), None);
        match state {
            Some(rev) => {
                assert_eq!(status, 200, "point {id}: {body}");
                assert_eq!(body["result"]["payload"]["rev"], json!(rev), "point {id}");
            }
            None => assert_eq!(status, 404, "deleted point {id} is back: {body}"),
        }
    }
}
