//! The running topology: an immutable snapshot built from a validated config and swapped whole
//! on reload. Live state (replica counters and health, open built-in shards) is kept in
//! [`Live`], keyed by replica URL or data directory, and carried into every new snapshot.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};

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

/// State that outlives any one topology.
pub struct Live {
    replicas: Mutex<HashMap<String, Arc<ReplicaState>>>,
    builtins: Mutex<HashMap<PathBuf, Arc<Shard>>>,
    engine_metrics: Arc<Metrics>,
}

impl Live {
    /// Live state whose built-in shards report into `engine_metrics`.
    pub fn new(engine_metrics: Arc<Metrics>) -> Self {
        Live {
            replicas: Mutex::default(),
            builtins: Mutex::default(),
            engine_metrics,
        }
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
    pub fn build(&self, config: Config) -> Result<Topology, String> {
        let mut shards = Vec::with_capacity(config.shards.len());
        for s in &config.shards {
            let name = s.name.get_ref().clone();
            let kind = if s.builtin {
                let dir = config.server.data_dir.join(&name);
                let mut open = self.builtins.lock().unwrap_or_else(|p| p.into_inner());
                let shard = match open.get(&dir) {
                    Some(shard) => shard.clone(),
                    None => {
                        let shard =
                            Shard::open(&dir, ShardOptions::default(), self.engine_metrics.clone())
                                .map_err(|e| {
                                    format!("shards.{name}: opening {}: {e}", dir.display())
                                })?;
                        open.entry(dir).or_insert(Arc::new(shard)).clone()
                    }
                };
                ShardKind::Builtin(shard)
            } else {
                let hints_dir = config.server.data_dir.join("hints");
                let mut known = self.replicas.lock().unwrap_or_else(|p| p.into_inner());
                let mut replicas = Vec::with_capacity(s.replicas.len());
                for r in &s.replicas {
                    let url = r.url.get_ref().trim_end_matches('/').to_string();
                    let state = match known.get(&url) {
                        Some(state) => state.clone(),
                        None => {
                            let log = HintLog::open(&hints_dir, &url).map_err(|e| {
                                format!(
                                    "shards.{name}: hint log for {url} in {}: {e}",
                                    hints_dir.display()
                                )
                            })?;
                            known
                                .entry(url.clone())
                                .or_insert(ReplicaState::with_hints(&url, log))
                                .clone()
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
