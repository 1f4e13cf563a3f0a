//! The running topology: an immutable snapshot built from a validated config and swapped whole
//! on reload. Live state (replica counters and health, open built-in shards) is kept in
//! [`Live`], keyed by replica URL or data directory, and carried into every new snapshot.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, OnceLock};

use prometheus::Registry;
use shardd::lock::DirLock;
use shardd::metrics::Metrics;
use shardd::shard::{Shard, ShardOptions};

use crate::balance::Replica;
use crate::config::Config;
use crate::hints::HintLog;
use crate::replica::ReplicaState;
use crate::ring::Ring;

/// One shard as the router reaches it.
pub enum ShardKind {
    /// In process.
    Builtin(Arc<Shard>),
    /// Remote replicas.
    Remote(Vec<Replica>),
}

/// One shard of the running topology.
pub struct ShardRoute {
    /// The shard's stable name.
    pub name: String,
    /// How it is reached.
    pub kind: ShardKind,
    /// Round-robin counter.
    pub turn: AtomicUsize,
}

/// A running config: the shards, the ring over them, and the config itself.
pub struct Topology {
    /// The validated config this was built from.
    pub config: Config,
    /// Point placement; indexes into `shards`.
    pub ring: Ring,
    /// The shards, in config order.
    pub shards: Vec<ShardRoute>,
}

impl Topology {
    /// Names the shard set (order aside): answers computed over one set are not answers over
    /// another, so cache keys include it.
    pub fn placement(&self) -> u64 {
        let mut names: Vec<&str> = self.shards.iter().map(|s| s.name.as_str()).collect();
        names.sort_unstable();
        xxhash_rust::xxh3::xxh3_64(names.join("\0").as_bytes())
    }
}

/// State that outlives any one topology.
pub struct Live {
    replicas: Mutex<HashMap<String, Arc<ReplicaState>>>,
    builtins: Mutex<HashMap<PathBuf, Arc<Shard>>>,
    /// Locks on the hint directories in use, so no other process writes them.
    hint_dirs: Mutex<HashMap<PathBuf, DirLock>>,
    registry: Registry,
    /// The built-in shards' engine metrics (`vecgate_builtin_*`), registered with the first one.
    engine_metrics: OnceLock<Arc<Metrics>>,
}

impl Live {
    /// Live state whose built-in shards, once there are any, report into `registry`.
    pub fn new(registry: Registry) -> Self {
        Live {
            replicas: Mutex::default(),
            builtins: Mutex::default(),
            hint_dirs: Mutex::default(),
            registry,
            engine_metrics: OnceLock::new(),
        }
    }

    fn engine_metrics(&self) -> Result<Arc<Metrics>, String> {
        if let Some(m) = self.engine_metrics.get() {
            return Ok(m.clone());
        }
        let m = Arc::new(
            Metrics::new(&self.registry, "vecgate_builtin")
                .map_err(|e| format!("registering built-in shard metrics: {e}"))?,
        );
        Ok(self.engine_metrics.get_or_init(|| m).clone())
    }

    /// Locks `dir` for this process's hint logs, once.
    fn lock_hint_dir(&self, dir: &Path) -> Result<(), String> {
        let mut held = self.hint_dirs.lock().unwrap_or_else(|p| p.into_inner());
        if !held.contains_key(dir) {
            let lock = DirLock::acquire(dir).map_err(|e| e.detail().to_string())?;
            held.insert(dir.to_path_buf(), lock);
        }
        Ok(())
    }

    /// Every replica state known, by URL.
    pub fn replica_states(&self) -> Vec<Arc<ReplicaState>> {
        self.replicas
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Every open built-in shard.
    pub fn builtin_shards(&self) -> Vec<Arc<Shard>> {
        self.builtins
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Builds a topology for `config`, reusing the live state of replicas and built-in shards it
    /// keeps and opening new built-in shards (blocking: recovery reads their data).
    ///
    /// A replica added (by a reload) to a shard whose other replicas are already known starts
    /// out joining: it is filled from them before it serves reads.
    pub fn build(&self, config: Config) -> Result<Topology, String> {
        let mut shards = Vec::with_capacity(config.shards.len());
        for s in &config.shards {
            let name = s.name.clone();
            let kind = if s.builtin {
                let dir = config.server.data_dir.join(&name);
                let mut open = self.builtins.lock().unwrap_or_else(|p| p.into_inner());
                let shard = match open.get(&dir) {
                    Some(shard) => shard.clone(),
                    None => {
                        let shard =
                            Shard::open(&dir, ShardOptions::default(), self.engine_metrics()?)
                                .map_err(|e| format!("shards.{name}: {}", e.detail()))?;
                        open.entry(dir).or_insert(Arc::new(shard)).clone()
                    }
                };
                ShardKind::Builtin(shard)
            } else {
                let hints_dir = config.server.data_dir.join("hints");
                self.lock_hint_dir(&hints_dir)?;
                let mut known = self.replicas.lock().unwrap_or_else(|p| p.into_inner());
                let url_of =
                    |r: &crate::config::ReplicaConfig| r.url.trim_end_matches('/').to_string();
                let peers_known = s.replicas.iter().any(|r| known.contains_key(&url_of(r)));
                let mut replicas = Vec::with_capacity(s.replicas.len());
                for r in &s.replicas {
                    let url = url_of(r);
                    let state = match known.get(&url) {
                        Some(state) => state.clone(),
                        None => {
                            let log = HintLog::open(&hints_dir, &url).map_err(|e| {
                                format!(
                                    "shards.{name}: hint log for {url} in {}: {e}",
                                    hints_dir.display()
                                )
                            })?;
                            let state = ReplicaState::with_hints(&url, log);
                            if peers_known {
                                tracing::info!(shard = %name, %url, "new replica joins: it is filled from its peers before it serves reads");
                                state.start_joining();
                            }
                            known.entry(url.clone()).or_insert(state).clone()
                        }
                    };
                    replicas.push(Replica {
                        state,
                        region: r.region.clone().unwrap_or_default(),
                        weight: r.weight,
                    });
                }
                ShardKind::Remote(replicas)
            };
            shards.push(ShardRoute {
                name,
                kind,
                turn: AtomicUsize::new(0),
            });
        }
        let names: Vec<&str> = shards.iter().map(|s| s.name.as_str()).collect();
        let ring = Ring::new(&names);
        Ok(Topology {
            config,
            ring,
            shards,
        })
    }
}
