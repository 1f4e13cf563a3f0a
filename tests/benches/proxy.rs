//! Proxy-overhead benchmark: the same requests from wrk, in one run, to one shardd directly (the
//! baseline), to vecgate in front of it, to nginx `proxy_pass` in front of it, and to vecgate's
//! embedded default holding the same points in process; then vecgate in front of 3 shards, and
//! upserts through each. Every figure is printed with its ratio to the direct shard.
//! Run: `bench/proxy.sh` (installs nginx and wrk when missing); see BENCHMARKS.md.
//!
//! Knobs (environment): BENCH_N (30000 points), BENCH_DIM (128), BENCH_SECONDS (8 per wrk run),
//! BENCH_ROUNDS (3, interleaved), BENCH_CONNECTIONS (16), BENCH_LIMIT (10).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use e2e::{free_port, ok, shardd, vecgate, wait_for, Process};
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

fn env_or(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

struct Knobs {
    n: usize,
    dim: usize,
    seconds: usize,
    rounds: usize,
    connections: usize,
    limit: usize,
}

fn vector(rng: &mut rand::rngs::StdRng, dim: usize) -> Vec<f32> {
    (0..dim).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

/// A point as a RAG app stores it: a vector and a short text with some metadata.
fn point(id: usize, v: Vec<f32>) -> Value {
    json!({"id": id, "vector": v, "payload": {
        "text": format!("chunk {id} of a document about vector search, routing and caching in RAG systems"),
        "source": format!("doc-{}", id / 20), "chunk": id % 20, "tags": ["bench", if id.is_multiple_of(2) { "even" } else { "odd" }]
    }})
}

fn load(url: &str, k: &Knobs) {
    ok(
        "PUT",
        &format!("{url}/collections/bench"),
        Some(&json!({"vectors": {"size": k.dim, "distance": "Cosine"}})),
    );
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for start in (0..k.n).step_by(1000) {
        let points: Vec<Value> = (start..(start + 1000).min(k.n))
            .map(|i| point(i, vector(&mut rng, k.dim)))
            .collect();
        ok(
            "PUT",
            &format!("{url}/collections/bench/points?wait=true"),
            Some(&json!({ "points": points })),
        );
    }
}

/// A wrk script that cycles through `bodies` for `method path`.
fn wrk_script(dir: &Path, name: &str, method: &str, path: &str, bodies: &[String]) -> PathBuf {
    let mut lua = format!(
        "local bodies = {{}}\nlocal i = 0\nwrk.method = \"{method}\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\n"
    );
    for b in bodies {
        lua.push_str(&format!("table.insert(bodies, [==[{b}]==])\n"));
    }
    lua.push_str(&format!(
        "request = function()\n  i = i % #bodies + 1\n  return wrk.format(nil, \"{path}\", nil, bodies[i])\nend\n"
    ));
    lua.push_str(
        "local shown = 0\nresponse = function(status, headers, body)\n  if status ~= 200 and shown < 3 then\n    shown = shown + 1\n    io.write(\"error response \" .. status .. \": \" .. body .. \"\\n\")\n  end\nend\n",
    );
    let file = dir.join(format!("{name}.lua"));
    std::fs::write(&file, lua).expect("writing the wrk script");
    file
}

/// One wrk run: (requests/s, p50 ms, p99 ms).
fn wrk(url: &str, script: &Path, k: &Knobs) -> (f64, f64, f64) {
    let out = Command::new("wrk")
        .args([
            "-t1",
            &format!("-c{}", k.connections),
            &format!("-d{}s", k.seconds),
            "--latency",
            "-s",
        ])
        .arg(script)
        .arg(url)
        .output()
        .expect("running wrk (bench/proxy.sh installs it)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !text.contains("Non-2xx"),
        "{url}: errors during the run:\n{text}"
    );
    let field = |prefix: &str| -> f64 {
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(prefix))
            .unwrap_or_else(|| panic!("no `{prefix}` in wrk output:\n{text}"));
        let value = line.trim_start()[prefix.len()..].trim();
        let (number, unit): (String, String) =
            value.chars().partition(|c| c.is_ascii_digit() || *c == '.');
        let x: f64 = number.parse().unwrap_or(f64::NAN);
        match unit.trim() {
            "us" => x / 1000.0,
            "ms" | "" => x,
            "s" => x * 1000.0,
            other => panic!("unit {other}"),
        }
    };
    (field("Requests/sec:"), field("50%"), field("99%"))
}

/// nginx as a reverse proxy to `upstream`, with upstream keep-alive, one worker per core.
struct Nginx {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Nginx {
    fn start(upstream: &str) -> Nginx {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let conf = format!(
            "worker_processes auto;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
             events {{ worker_connections 4096; }}\n\
             http {{\n  access_log off;\n  client_body_buffer_size 1m;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
             upstream shard {{ server {upstream}; keepalive 128; }}\n\
             server {{ listen 127.0.0.1:{port}; location / {{ proxy_pass http://shard; proxy_http_version 1.1; proxy_set_header Connection \"\"; }} }}\n}}\n",
            d = dir.path().display()
        );
        let path = dir.path().join("nginx.conf");
        std::fs::write(&path, conf).expect("writing nginx.conf");
        let child = Command::new("nginx")
            .args([
                "-e",
                &dir.path().join("error.log").display().to_string(),
                "-c",
            ])
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting nginx (bench/proxy.sh installs it)");
        let url = format!("http://127.0.0.1:{port}");
        wait_for(&format!("{url}/readyz"), Duration::from_secs(10));
        Nginx {
            child,
            url,
            _dir: dir,
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-QUIT", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

fn router(dir: &Path, name: &str, shards: &str) -> Process {
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n\n{shards}",
            dir.join(name).display()
        ),
    )
    .expect("writing a router config");
    vecgate(&config)
}

fn remote_shard(name: &str, urls: &[String]) -> String {
    let replicas: Vec<String> = urls
        .iter()
        .map(|u| format!("{{ url = \"{u}\" }}"))
        .collect();
    format!(
        "[[shards]]\nname = \"{name}\"\nreplicas = [{}]\n\n",
        replicas.join(", ")
    )
}

/// Runs `script` against every target, interleaved round by round, and prints medians and
/// ratios to the first target.
fn compare(title: &str, targets: &[(&str, &str)], script: &Path, k: &Knobs) {
    let mut runs: Vec<Vec<(f64, f64, f64)>> = vec![Vec::new(); targets.len()];
    for round in 0..k.rounds {
        for (i, (name, url)) in targets.iter().enumerate() {
            let r = wrk(url, script, k);
            eprintln!(
                "  {title} round {}: {name}: {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms",
                round + 1,
                r.0,
                r.1,
                r.2
            );
            runs[i].push(r);
        }
    }
    let per_round = |i: usize, f: fn(&(f64, f64, f64)) -> f64| -> f64 {
        median(
            runs[i]
                .iter()
                .zip(&runs[0])
                .map(|(r, base)| f(r) / f(base))
                .collect(),
        )
    };
    println!(
        "\n{title} (median of {} interleaved runs of {} s, {} connections; ratios are to the direct shard in the same round)",
        k.rounds, k.seconds, k.connections
    );
    println!("| target | req/s | ratio | p50 ms | p99 ms | p99 ratio |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (i, (name, _)) in targets.iter().enumerate() {
        println!(
            "| {name} | {:.0} | {:.2}x | {:.2} | {:.2} | {:.2}x |",
            median(runs[i].iter().map(|r| r.0).collect()),
            per_round(i, |r| r.0),
            median(runs[i].iter().map(|r| r.1).collect()),
            median(runs[i].iter().map(|r| r.2).collect()),
            per_round(i, |r| r.2),
        );
    }
    let _ = std::io::stdout().flush();
}

fn main() {
    let k = Knobs {
        n: env_or("BENCH_N", 30_000),
        dim: env_or("BENCH_DIM", 128),
        seconds: env_or("BENCH_SECONDS", 8),
        rounds: env_or("BENCH_ROUNDS", 3),
        connections: env_or("BENCH_CONNECTIONS", 16),
        limit: env_or("BENCH_LIMIT", 10),
    };
    let dir = tempfile::tempdir().expect("temp dir");
    eprintln!(
        "loading {} x {}-d points into one shardd, the embedded router and 3 shards",
        k.n, k.dim
    );
    let shard = shardd(&dir.path().join("shard"), &["--snapshot-interval-s", "0"]);
    load(&shard.url(), &k);
    let proxy = router(dir.path(), "proxy", &remote_shard("s0", &[shard.url()]));
    let nginx = Nginx::start(&shard.addr.to_string());
    let embedded = router(
        dir.path(),
        "embedded",
        "[[shards]]\nname = \"local\"\nbuiltin = true\n",
    );
    load(&embedded.url(), &k);
    let three: Vec<Process> = (0..3)
        .map(|i| shardd(&dir.path().join(format!("three-{i}")), &[]))
        .collect();
    let shards3: String = three
        .iter()
        .enumerate()
        .map(|(i, p)| remote_shard(&format!("s{i}"), &[p.url()]))
        .collect();
    let proxy3 = router(dir.path(), "proxy3", &shards3);
    load(&proxy3.url(), &k);

    let mut rng = rand::rngs::StdRng::seed_from_u64(99);
    let queries: Vec<String> = (0..64)
        .map(|_| {
            json!({"query": vector(&mut rng, k.dim), "limit": k.limit, "with_payload": true})
                .to_string()
        })
        .collect();
    let query = wrk_script(
        dir.path(),
        "query",
        "POST",
        "/collections/bench/points/query",
        &queries,
    );
    let (shard_url, proxy_url, embedded_url, proxy3_url) =
        (shard.url(), proxy.url(), embedded.url(), proxy3.url());
    compare(
        &format!(
            "/points/query, {} x {}-d, limit {}, with payload",
            k.n, k.dim, k.limit
        ),
        &[
            ("shardd direct", &shard_url),
            ("vecgate -> shardd", &proxy_url),
            ("nginx -> shardd", &nginx.url),
            ("vecgate embedded", &embedded_url),
            ("vecgate -> 3 shardd", &proxy3_url),
        ],
        &query,
        &k,
    );

    let upserts: Vec<String> = (0..64)
        .map(|b| {
            let points: Vec<Value> = (0..10)
                .map(|j| point(k.n + b * 10 + j, vector(&mut rng, k.dim)))
                .collect();
            json!({ "points": points }).to_string()
        })
        .collect();
    let upsert = wrk_script(
        dir.path(),
        "upsert",
        "PUT",
        "/collections/bench/points?wait=true",
        &upserts,
    );
    compare(
        "upserts of 10 points (wait=true, fsync per write)",
        &[
            ("shardd direct", &shard_url),
            ("vecgate -> shardd", &proxy_url),
            ("nginx -> shardd", &nginx.url),
            ("vecgate embedded", &embedded_url),
            ("vecgate -> 3 shardd", &proxy3_url),
        ],
        &upsert,
        &k,
    );
}
