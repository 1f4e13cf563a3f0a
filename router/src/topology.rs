//! The running topology: an immutable snapshot built from a validated config and swapped whole
//! on reload. Live state (replica counters and health, open built-in shards, a running move)
//! is kept in [`Live`], keyed by replica URL or data directory, and carried into every new
//! snapshot.
//!
//! The shard set points were last placed by is kept in `<data_dir>/placement.json`. A config
//! whose shard set differs starts a [`Move`]: the shards it drops stay in the topology,
//! draining, until the points whose owner changed have moved (`reshard`), and a router
//! restarted in the middle of one resumes it from that file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use prometheus::Registry;
use serde::{Deserialize, Serialize};
use shardd::engine::point::PointId;
use shardd::lock::DirLock;
use shardd::metrics::Metrics;
use shardd::shard::{Shard, ShardOptions};

use crate::balance::Replica;
use crate::config::{Config, ShardConfig};
use crate::hints::HintLog;
use crate::replica::ReplicaState;
use crate::ring::Ring;

/// Where a move is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// New shards get every collection; writes still go where the previous set placed them.
    Preparing = 0,
    /// Points are copied to their new owners; every write goes to both owners.
    Copying = 1,
    /// Copies left behind by writes during the copy are cleared; only deletes still go to the
    /// previous owner.
    Settling = 2,
}

impl Phase {
    /// The phase named `name`.
    pub fn named(name: &str) -> Option<Phase> {
        [Phase::Preparing, Phase::Copying, Phase::Settling]
            .into_iter()
            .find(|p| p.as_str() == name)
    }

    /// The phase's name, for `/admin/cluster`.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Preparing => "preparing",
            Phase::Copying => "copying",
            Phase::Settling => "settling",
        }
    }
}

/// A move's progress, shared by every topology built while it runs.
#[derive(Debug)]
pub struct MoveProgress {
    /// The shard set points move from, and to (names, sorted).
    pub from: Vec<String>,
    /// The shard set points move to.
    pub to: Vec<String>,
    phase: AtomicU8,
    /// Points (and tombstones) moved so far.
    pub moved: AtomicU64,
    /// A mover task runs it.
    pub running: std::sync::atomic::AtomicBool,
}

impl MoveProgress {
    /// The current phase.
    pub fn phase(&self) -> Phase {
        match self.phase.load(Ordering::SeqCst) {
            0 => Phase::Preparing,
            1 => Phase::Copying,
            _ => Phase::Settling,
        }
    }

    /// Moves to `phase`.
    pub fn enter(&self, phase: Phase) {
        self.phase.store(phase as u8, Ordering::SeqCst);
    }

    /// Moves to `phase` if it is further along (another router's mover got there).
    pub fn catch_up(&self, phase: Phase) {
        self.phase.fetch_max(phase as u8, Ordering::SeqCst);
    }
}

/// A resharding in progress: the shards of the previous set not in this one follow the
/// serving ones in [`Topology::shards`], and the previous set's ring still says where each
/// point may be.
pub struct Move {
    old_ring: Ring,
    /// Position in the old ring to index in `Topology::shards`.
    old_index: Vec<usize>,
    /// Progress, shared across reloads that keep the same move.
    pub progress: Arc<MoveProgress>,
}

/// The shard set points were placed by, as `placement.json` keeps it.
#[derive(Serialize, Deserialize)]
struct Placement {
    shards: Vec<ShardConfig>,
}

/// `<data_dir>/placement.json`.
pub fn placement_file(data_dir: &Path) -> PathBuf {
    data_dir.join("placement.json")
}

fn read_placement(data_dir: &Path) -> Result<Option<Vec<ShardConfig>>, String> {
    let path = placement_file(data_dir);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice::<Placement>(&bytes)
            .map(|p| Some(p.shards))
            .map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// Records that points are placed by `shards` (durably: written aside, fsynced, renamed).
pub fn write_placement(data_dir: &Path, shards: &[ShardConfig]) -> Result<(), String> {
    let path = placement_file(data_dir);
    let tmp = path.with_extension("tmp");
    let write = || -> std::io::Result<()> {
        std::fs::create_dir_all(data_dir)?;
        let bytes = serde_json::to_vec_pretty(&Placement {
            shards: shards.to_vec(),
        })
        .map_err(std::io::Error::other)?;
        let mut f = std::fs::File::create(&tmp)?;
        std::io::Write::write_all(&mut f, &bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(data_dir)?.sync_all()
    };
    write().map_err(|e| format!("{}: {e}", path.display()))
}

fn sorted_names(shards: &[ShardConfig]) -> Vec<String> {
    let mut names: Vec<String> = shards.iter().map(|s| s.name.clone()).collect();
    names.sort();
    names
}

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
    /// The shards: the config's, in config order, then (while a move runs) the draining ones.
    pub shards: Vec<ShardRoute>,
    /// The resharding in progress, if any.
    pub moving: Option<Move>,
}

impl Topology {
    /// Names the shard set (order aside): answers computed over one set are not answers over
    /// another, so cache keys include it.
    pub fn placement(&self) -> u64 {
        let mut names: Vec<&str> = self.shards.iter().map(|s| s.name.as_str()).collect();
        names.sort_unstable();
        xxhash_rust::xxh3::xxh3_64(names.join("\0").as_bytes())
    }

    /// A hash of the running config, as `vecgate_config_info{hash}` shows it.
    pub fn config_hash(&self) -> String {
        let text = serde_json::to_vec(&self.config).unwrap_or_default();
        format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&text))
    }

    /// The shards of the config (not the draining ones).
    pub fn serving(&self) -> &[ShardRoute] {
        &self.shards[..self.config.shards.len()]
    }

    /// The shard that owns `id`.
    pub fn owner(&self, id: &PointId) -> usize {
        self.ring
            .owner(id)
            .expect("a validated config has at least one shard")
    }

    /// The shard the previous set placed `id` on, while a move runs and it differs from the
    /// owner.
    pub fn previous_owner(&self, id: &PointId) -> Option<usize> {
        let m = self.moving.as_ref()?;
        let old = m.old_index[m.old_ring.owner(id)?];
        (old != self.owner(id)).then_some(old)
    }

    /// The shards a write of `id` goes to: where reads will find it (during a move's
    /// preparation, where the previous set placed it), and while points are copied, where they
    /// may still be read from too; deletes reach both until the move ends, so that no copy left
    /// behind comes back.
    pub fn write_targets(&self, id: &PointId, delete: bool) -> (usize, Option<usize>) {
        let (owner, previous) = (self.owner(id), self.previous_owner(id));
        match (self.moving.as_ref().map(|m| m.progress.phase()), previous) {
            (Some(Phase::Preparing), Some(old)) => (old, None),
            (Some(Phase::Copying), Some(old)) => (owner, Some(old)),
            (Some(Phase::Settling), Some(old)) if delete => (owner, Some(old)),
            _ => (owner, None),
        }
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
    /// The move in progress, kept across the reloads that keep it.
    moving: Mutex<Option<Arc<MoveProgress>>>,
    /// One build at a time (a file-change reload and `/admin/reload` may race), so that
    /// `placement.json` is read and written by one of them.
    building: Mutex<()>,
    /// With `[cluster]`: the placement etcd holds, as last read (it replaces the file).
    shared_placement: Mutex<Option<Vec<ShardConfig>>>,
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
            moving: Mutex::default(),
            building: Mutex::default(),
            shared_placement: Mutex::default(),
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

    /// Records the placement etcd holds; `true` when it changed.
    pub fn set_shared_placement(&self, placed: Vec<ShardConfig>) -> bool {
        let mut held = self
            .shared_placement
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let changed = held
            .as_ref()
            .is_none_or(|h| serde_json::to_value(h).ok() != serde_json::to_value(&placed).ok());
        *held = Some(placed);
        changed
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
    /// out joining: it is filled from them before it serves reads. A shard set that differs
    /// from the one points were placed by (`placement.json`) makes the topology a move.
    pub fn build(&self, config: Config) -> Result<Topology, String> {
        let _one_at_a_time = self.building.lock().unwrap_or_else(|p| p.into_inner());
        let data_dir = config.server.data_dir.clone();
        let shared = config.cluster.is_some().then(|| {
            self.shared_placement
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
                .unwrap_or_else(|| config.shards.clone())
        });
        let placed = match (shared, read_placement(&data_dir)?) {
            (Some(shared), _) => shared,
            (None, Some(placed)) => placed,
            (None, None) => {
                write_placement(&data_dir, &config.shards)?;
                config.shards.clone()
            }
        };
        let (from, to) = (sorted_names(&placed), sorted_names(&config.shards));
        let draining: Vec<ShardConfig> = placed
            .iter()
            .filter(|p| !to.contains(&p.name))
            .cloned()
            .collect();
        let mut shards = Vec::with_capacity(config.shards.len() + draining.len());
        for s in config.shards.iter().chain(&draining) {
            shards.push(self.shard_route(&config, s)?);
        }
        let names: Vec<&str> = shards[..config.shards.len()]
            .iter()
            .map(|s| s.name.as_str())
            .collect();
        let ring = Ring::new(&names);
        let moving = if from == to {
            *self.moving.lock().unwrap_or_else(|p| p.into_inner()) = None;
            if config.cluster.is_none()
                && serde_json::to_value(&placed).ok() != serde_json::to_value(&config.shards).ok()
            {
                write_placement(&data_dir, &config.shards)?;
            }
            None
        } else {
            let old: Vec<&str> = placed.iter().map(|s| s.name.as_str()).collect();
            let old_index = old
                .iter()
                .map(|n| {
                    shards
                        .iter()
                        .position(|s| s.name == *n)
                        .expect("every placed shard is serving or draining")
                })
                .collect();
            Some(Move {
                old_ring: Ring::new(&old),
                old_index,
                progress: self.move_progress(from, to),
            })
        };
        Ok(Topology {
            config,
            ring,
            shards,
            moving,
        })
    }

    /// The progress of the move from `from` to `to`: the running one's when it is the same.
    fn move_progress(&self, from: Vec<String>, to: Vec<String>) -> Arc<MoveProgress> {
        let mut running = self.moving.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = running.as_ref().filter(|p| p.from == from && p.to == to) {
            return p.clone();
        }
        let p = Arc::new(MoveProgress {
            from,
            to,
            phase: AtomicU8::new(Phase::Preparing as u8),
            moved: AtomicU64::new(0),
            running: std::sync::atomic::AtomicBool::new(false),
        });
        *running = Some(p.clone());
        p
    }

    /// The route to shard `s` of `config`, with the live state of its replicas.
    fn shard_route(&self, config: &Config, s: &ShardConfig) -> Result<ShardRoute, String> {
        let name = s.name.clone();
        let kind = if s.builtin {
            let dir = config.server.data_dir.join(&name);
            let mut open = self.builtins.lock().unwrap_or_else(|p| p.into_inner());
            let shard = match open.get(&dir) {
                Some(shard) => shard.clone(),
                None => {
                    let shard = Shard::open(&dir, ShardOptions::default(), self.engine_metrics()?)
                        .map_err(|e| format!("shards.{name}: {}", e.detail()))?;
                    open.entry(dir).or_insert(Arc::new(shard)).clone()
                }
            };
            ShardKind::Builtin(shard)
        } else {
            let hints_dir = config.server.data_dir.join("hints");
            self.lock_hint_dir(&hints_dir)?;
            let mut known = self.replicas.lock().unwrap_or_else(|p| p.into_inner());
            let url_of = |r: &crate::config::ReplicaConfig| r.url.trim_end_matches('/').to_string();
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
        Ok(ShardRoute {
            name,
            kind,
            turn: AtomicUsize::new(0),
        })
    }
}
