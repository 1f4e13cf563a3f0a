//! What the benchmarks share: loading points, wrk runs with CPU per request, nginx, routers
//! and the interleaved comparison that prints medians and same-round ratios.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{free_port, ok, vecgate_binary, wait_for, Process};
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

/// The number in environment variable `key`, or `default`.
pub fn env_or(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The median of `xs`.
pub fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// What a benchmark run is sized by (each from a `BENCH_*` variable).
pub struct Knobs {
    /// Points loaded.
    pub n: usize,
    /// Their dimension.
    pub dim: usize,
    /// Seconds of each wrk run.
    pub seconds: usize,
    /// Interleaved rounds.
    pub rounds: usize,
    /// wrk connections.
    pub connections: usize,
    /// `limit` of each query.
    pub limit: usize,
}

/// A vector of `dim` uniform components in [-1, 1).
pub fn vector(rng: &mut rand::rngs::StdRng, dim: usize) -> Vec<f32> {
    (0..dim).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

/// A point as a RAG app stores it: a vector and a short text with some metadata.
pub fn point(id: usize, v: Vec<f32>) -> Value {
    json!({"id": id, "vector": v, "payload": {
        "text": format!("chunk {id} of a document about vector search, routing and caching in RAG systems"),
        "source": format!("doc-{}", id / 20), "chunk": id % 20, "tags": ["bench", if id.is_multiple_of(2) { "even" } else { "odd" }]
    }})
}

/// Creates `bench` at `url` and loads `k.n` points; every shard, however small, searches its
/// HNSW graph (a 10k-point shard would otherwise scan), so shard counts compare like for like.
pub fn load(url: &str, k: &Knobs) {
    ok(
        "PUT",
        &format!("{url}/collections/bench"),
        Some(&json!({
            "vectors": {"size": k.dim, "distance": "Cosine"},
            "hnsw_config": {"full_scan_threshold": 1000}
        })),
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
pub fn wrk_script(dir: &Path, name: &str, method: &str, path: &str, bodies: &[String]) -> PathBuf {
    let mut lua = format!(
        "local bodies = {{}}\nlocal i = 0\nwrk.method = \"{method}\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\n"
    );
    for b in bodies {
        lua.push_str(&format!("table.insert(bodies, [==[{b}]==])\n"));
    }
    // `__ID__` in a body becomes a fresh point id per request: ids start past anything an
    // earlier run in the last hours used (a million per second of wall time).
    lua.push_str(&format!(
        "local next_id = 1000000000 + (os.time() % 10000) * 1000000\nlocal function fresh() next_id = next_id + 1; return string.format(\"%d\", next_id) end\nrequest = function()\n  i = i % #bodies + 1\n  return wrk.format(nil, \"{path}\", nil, (bodies[i]:gsub(\"__ID__\", fresh)))\nend\n"
    ));
    lua.push_str(
        "local shown = 0\nresponse = function(status, headers, body)\n  if status ~= 200 and shown < 3 then\n    shown = shown + 1\n    io.write(\"error response \" .. status .. \": \" .. body .. \"\\n\")\n  end\nend\n",
    );
    let file = dir.join(format!("{name}.lua"));
    std::fs::write(&file, lua).expect("writing the wrk script");
    file
}

/// What one wrk run measured.
#[derive(Clone, Copy)]
pub struct Run {
    /// Requests per second.
    pub rps: f64,
    /// Median latency.
    pub p50_ms: f64,
    /// 99th percentile latency.
    pub p99_ms: f64,
    /// CPU time the target's own processes spent per request.
    pub cpu_us: f64,
}

/// A process's user plus system CPU time so far, in seconds.
pub fn cpu_seconds(pid: u32) -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    let ticks = *TICKS.get_or_init(|| {
        let out = Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .expect("getconf");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("CLK_TCK")
    });
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/PID/stat");
    // Fields after the command name (which may hold spaces) start at the state, field 3.
    let fields: Vec<&str> = stat[stat.rfind(')').expect("stat") + 2..]
        .split(' ')
        .collect();
    let (utime, stime): (f64, f64) = (
        fields[11].parse().expect("utime"),
        fields[12].parse().expect("stime"),
    );
    (utime + stime) / ticks
}

/// A process and its children (nginx's workers).
pub fn process_tree(pid: u32) -> Vec<u32> {
    let mut pids = vec![pid];
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let ppid = stat
            .get(stat.rfind(')').unwrap_or(0) + 2..)
            .and_then(|rest| rest.split(' ').nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(pid) {
            pids.push(child);
        }
    }
    pids
}

/// One wrk run against `url`, charging the CPU time of `pids` to it.
pub fn wrk(url: &str, pids: &[u32], script: &Path, k: &Knobs) -> Run {
    let cpu = || pids.iter().map(|&p| cpu_seconds(p)).sum::<f64>();
    let cpu_before = cpu();
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
    let requests: f64 = text
        .lines()
        .find_map(|l| l.trim().split_once(" requests in "))
        .and_then(|(n, _)| n.parse().ok())
        .unwrap_or_else(|| panic!("no request count in wrk output:\n{text}"));
    Run {
        rps: field("Requests/sec:"),
        p50_ms: field("50%"),
        p99_ms: field("99%"),
        cpu_us: (cpu() - cpu_before) * 1e6 / requests,
    }
}

/// An nginx on a free port, stopped when dropped.
pub struct Nginx {
    child: Child,
    pub url: String,
    _dir: tempfile::TempDir,
}

impl Nginx {
    /// nginx as a reverse proxy to `upstream`, with upstream keep-alive, one worker per core.
    pub fn start(upstream: &str) -> Nginx {
        Nginx::serving(
            &format!("upstream shard {{ server {upstream}; keepalive 128; }}"),
            "proxy_pass http://shard; proxy_http_version 1.1; proxy_set_header Connection \"\";",
        )
    }

    /// nginx answering every request with `body` (`return 200`), one worker per core.
    pub fn fixed(body: &str) -> Nginx {
        assert!(!body.contains('\''), "the body goes between single quotes");
        Nginx::serving(
            "",
            &format!("default_type application/json; return 200 '{body}';"),
        )
    }

    /// nginx with `http` added to its `http` block and `location` as `location /`.
    fn serving(http: &str, location: &str) -> Nginx {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let conf = format!(
            "worker_processes auto;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
             events {{ worker_connections 4096; }}\n\
             http {{\n  access_log off;\n  client_body_buffer_size 1m;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
             {http}\n\
             server {{ listen 127.0.0.1:{port}; location / {{ {location} }} }}\n}}\n",
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
        wait_for(&url, Duration::from_secs(10));
        Nginx {
            child,
            url,
            _dir: dir,
        }
    }
}

impl Nginx {
    /// The master's pid and its workers'.
    pub fn pids(&self) -> Vec<u32> {
        process_tree(self.child.id())
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

/// A vecgate from `binary` over `shards` (config text), its data under `dir/name`. Like every
/// shard here, it takes no snapshot while measured (they would stall writes, see the README).
pub fn router(binary: &str, dir: &Path, name: &str, shards: &str) -> Process {
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\ndata_dir = \"{}\"\nsnapshot_interval_s = 0\n\n{shards}",
            dir.join(name).display()
        ),
    )
    .expect("writing a router config");
    vecgate_binary(binary, &config)
}

/// A `[[shards]]` entry named `name` with `urls` as its replicas.
pub fn remote_shard(name: &str, urls: &[String]) -> String {
    let replicas: Vec<String> = urls
        .iter()
        .map(|u| format!("{{ url = \"{u}\" }}"))
        .collect();
    format!(
        "[[shards]]\nname = \"{name}\"\nreplicas = [{}]\n\n",
        replicas.join(", ")
    )
}

/// Something wrk loads: a name, a URL and the processes whose CPU time a request costs.
pub struct Target {
    /// Its row's name.
    pub name: String,
    /// Where wrk sends requests.
    pub url: String,
    /// Whose CPU time is charged to it.
    pub pids: Vec<u32>,
}

impl Target {
    pub fn new(name: &str, url: String, pids: Vec<u32>) -> Target {
        Target {
            name: name.to_string(),
            url,
            pids,
        }
    }

    /// A target served by `p` alone.
    pub fn of(name: &str, p: &Process) -> Target {
        Target::new(name, p.url(), vec![p.pid().expect("running")])
    }
}

/// Runs `script` against every target, interleaved round by round, and prints medians and
/// ratios to the first target.
pub fn compare(title: &str, targets: &[Target], script: &Path, k: &Knobs) {
    let mut runs: Vec<Vec<Run>> = vec![Vec::new(); targets.len()];
    for round in 0..k.rounds {
        // Each round starts one target later, so no target always runs first or last.
        for i in (0..targets.len()).map(|j| (j + round) % targets.len()) {
            let t = &targets[i];
            let r = wrk(&t.url, &t.pids, script, k);
            eprintln!(
                "  {title} round {}: {}: {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, {:.1} us CPU/req",
                round + 1,
                t.name,
                r.rps,
                r.p50_ms,
                r.p99_ms,
                r.cpu_us
            );
            runs[i].push(r);
        }
    }
    let per_round = |i: usize, f: fn(&Run) -> f64| -> f64 {
        median(
            runs[i]
                .iter()
                .zip(&runs[0])
                .map(|(r, base)| f(r) / f(base))
                .collect(),
        )
    };
    let med = |i: usize, f: fn(&Run) -> f64| median(runs[i].iter().map(f).collect());
    println!(
        "\n{title} (median of {} interleaved runs of {} s, {} connections; ratios are to the first row in the same round; CPU is the target's own processes, shards excluded)",
        k.rounds, k.seconds, k.connections
    );
    println!("| target | req/s | ratio | p50 ms | p99 ms | p99 ratio | CPU us/req |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (i, t) in targets.iter().enumerate() {
        println!(
            "| {} | {:.0} | {:.2}x | {:.2} | {:.2} | {:.2}x | {:.1} |",
            t.name,
            med(i, |r| r.rps),
            per_round(i, |r| r.rps),
            med(i, |r| r.p50_ms),
            med(i, |r| r.p99_ms),
            per_round(i, |r| r.p99_ms),
            med(i, |r| r.cpu_us),
        );
    }
    let _ = std::io::stdout().flush();
}
