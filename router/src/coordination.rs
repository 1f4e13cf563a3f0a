//! Several routers over the same shards, coordinated through etcd (`[cluster]`), the store
//! Milvus, Vitess and Kubernetes keep cluster metadata in.
//!
//! Three keys under the prefix: `placement` (the shard set points are placed by, shared by
//! every router instead of each one's `placement.json`; its revision is the topology epoch),
//! `move` (the running move's shard sets and phase, so every router sends writes where the
//! phase says) and `move/lease` (held, under an etcd lease, by the one router that runs the
//! move; when that router dies the lease expires and another takes the move over from the
//! phase it reached). etcd is spoken to through its v3 JSON API with the router's own HTTP
//! client, each call with a deadline; a router that cannot reach etcd keeps its last view.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use bytes::Bytes;
use http::Method;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::config::{ClusterConfig, ShardConfig};
use crate::gateway::Gateway;
use crate::topology::Phase;
use crate::upstream::client;

/// Deadline of one etcd call.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// The running move as etcd keeps it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SharedMove {
    /// Shard names points move from, sorted.
    pub from: Vec<String>,
    /// Shard names they move to, sorted.
    pub to: Vec<String>,
    /// The phase reached (`preparing`, `copying`, `settling`).
    pub phase: String,
}

/// A client of one etcd cluster, under one key prefix.
pub struct Etcd {
    endpoints: Vec<String>,
    prefix: String,
    lease_ttl_s: u64,
    /// The topology epoch: the revision of the placement key last read.
    pub epoch: AtomicI64,
    /// The last call failed (so the next failure is not logged again).
    down: AtomicBool,
    /// This router's missed-writes records from an earlier run were cleared.
    cleared: AtomicBool,
}

fn b64(s: &str) -> String {
    B64.encode(s.as_bytes())
}

/// The hash a replica's URL is recorded under.
pub fn url_hash(url: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(url.as_bytes())
}

/// The end of the key range holding every key that starts with `prefix`.
fn prefix_end(prefix: &str) -> String {
    let mut bytes = prefix.as_bytes().to_vec();
    if let Some(last) = bytes.last_mut() {
        *last += 1;
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

fn int(v: &Value) -> i64 {
    match v {
        Value::String(s) => s.parse().unwrap_or(0),
        Value::Number(n) => n.as_i64().unwrap_or(0),
        _ => 0,
    }
}

impl Etcd {
    /// A client for `config`.
    pub fn new(config: &ClusterConfig) -> Arc<Etcd> {
        Arc::new(Etcd {
            endpoints: config
                .etcd_endpoints
                .iter()
                .map(|e| e.trim_end_matches('/').to_string())
                .collect(),
            prefix: config.prefix.trim_end_matches('/').to_string(),
            lease_ttl_s: config.lease_ttl_s,
            epoch: AtomicI64::new(0),
            down: AtomicBool::new(false),
            cleared: AtomicBool::new(false),
        })
    }

    fn key(&self, name: &str) -> String {
        format!("{}/{name}", self.prefix)
    }

    /// Calls `path` with `body` on the first endpoint that answers.
    async fn post(&self, path: &str, body: Value) -> Result<Value, String> {
        let body = Bytes::from(serde_json::to_vec(&body).unwrap_or_default());
        let mut errors = Vec::new();
        for endpoint in &self.endpoints {
            let deadline = Instant::now() + CALL_TIMEOUT;
            match client()
                .call(endpoint, &Method::POST, path, body.clone(), deadline)
                .await
            {
                Ok(a) if a.status == 200 => {
                    return serde_json::from_slice(&a.body)
                        .map_err(|e| format!("etcd {endpoint}{path}: unreadable answer: {e}"))
                }
                Ok(a) => errors.push(format!(
                    "{endpoint}{path} answered {}: {}",
                    a.status,
                    String::from_utf8_lossy(&a.body[..a.body.len().min(200)])
                )),
                Err(e) => errors.push(format!("{endpoint}{path}: {e}")),
            }
        }
        Err(format!("etcd: {}", errors.join("; ")))
    }

    /// The value of `name` and its revision, if set.
    async fn get(&self, name: &str) -> Result<Option<(Vec<u8>, i64)>, String> {
        let answer = self
            .post("/v3/kv/range", json!({"key": b64(&self.key(name))}))
            .await?;
        let Some(kv) = answer["kvs"].as_array().and_then(|k| k.first()) else {
            return Ok(None);
        };
        let value = B64
            .decode(kv["value"].as_str().unwrap_or_default())
            .map_err(|e| format!("etcd: {name}: {e}"))?;
        Ok(Some((value, int(&kv["mod_revision"]))))
    }

    async fn put(&self, name: &str, value: &[u8], lease: Option<i64>) -> Result<(), String> {
        let mut req = json!({"key": b64(&self.key(name)), "value": B64.encode(value)});
        if let Some(lease) = lease {
            req["lease"] = json!(lease.to_string());
        }
        self.post("/v3/kv/put", req).await.map(drop)
    }

    /// Sets `name` to `value` only if it does not exist; whether it did so.
    async fn create(&self, name: &str, value: &[u8], lease: Option<i64>) -> Result<bool, String> {
        let key = b64(&self.key(name));
        let mut put = json!({"key": key, "value": B64.encode(value)});
        if let Some(lease) = lease {
            put["lease"] = json!(lease.to_string());
        }
        let answer = self
            .post(
                "/v3/kv/txn",
                json!({
                    "compare": [{"key": key, "target": "CREATE", "create_revision": "0"}],
                    "success": [{"request_put": put}],
                }),
            )
            .await?;
        Ok(answer["succeeded"].as_bool().unwrap_or(false))
    }

    async fn delete(&self, name: &str) -> Result<(), String> {
        self.post("/v3/kv/deleterange", json!({"key": b64(&self.key(name))}))
            .await
            .map(drop)
    }

    /// The shared placement (and records the epoch); when none is set yet, `ours` becomes it.
    pub async fn placement(&self, ours: &[ShardConfig]) -> Result<Vec<ShardConfig>, String> {
        if let Some((value, revision)) = self.get("placement").await? {
            self.epoch.store(revision, Ordering::SeqCst);
            return serde_json::from_slice(&value).map_err(|e| format!("etcd placement: {e}"));
        }
        let value = serde_json::to_vec(ours).unwrap_or_default();
        if !self.create("placement", &value, None).await? {
            return Box::pin(self.placement(ours)).await;
        }
        Ok(ours.to_vec())
    }

    /// Records that points are placed by `shards` and that no move runs.
    pub async fn placed(&self, shards: &[ShardConfig]) -> Result<(), String> {
        self.put(
            "placement",
            &serde_json::to_vec(shards).unwrap_or_default(),
            None,
        )
        .await?;
        self.delete("move").await
    }

    /// The running move, as the router that runs it last recorded it.
    pub async fn running_move(&self) -> Result<Option<SharedMove>, String> {
        match self.get("move").await? {
            Some((value, _)) => serde_json::from_slice(&value)
                .map(Some)
                .map_err(|e| format!("etcd move: {e}")),
            None => Ok(None),
        }
    }

    /// Records the move's phase, for the other routers.
    pub async fn record_move(&self, m: &SharedMove) -> Result<(), String> {
        self.put("move", &serde_json::to_vec(m).unwrap_or_default(), None)
            .await
    }

    /// Takes the lease that lets one router run the move; `None` when another holds it.
    pub async fn acquire(&self, holder: &str) -> Result<Option<i64>, String> {
        let granted = self
            .post("/v3/lease/grant", json!({"TTL": self.lease_ttl_s}))
            .await?;
        let lease = int(&granted["ID"]);
        if self
            .create("move/lease", holder.as_bytes(), Some(lease))
            .await?
        {
            return Ok(Some(lease));
        }
        let _ = self
            .post("/v3/lease/revoke", json!({"ID": lease.to_string()}))
            .await;
        Ok(None)
    }

    /// Keeps `lease` alive; `false` once it expired (another router may run the move now).
    pub async fn keep_alive(&self, lease: i64) -> Result<bool, String> {
        let answer = self
            .post("/v3/lease/keepalive", json!({"ID": lease.to_string()}))
            .await?;
        Ok(int(&answer["result"]["TTL"]) > 0)
    }

    /// Gives the lease up.
    pub async fn release(&self, lease: i64) {
        let _ = self
            .post("/v3/lease/revoke", json!({"ID": lease.to_string()}))
            .await;
    }

    /// Records that `url` missed writes from `router`, the first of version `since` (before the
    /// write that it missed is acknowledged), so that reads on other routers presenting a
    /// later version avoid it.
    pub async fn record_missing(&self, router: &str, url: &str, since: u64) -> Result<(), String> {
        let name = format!("missing/{router}/{:016x}", url_hash(url));
        self.put(&name, since.to_string().as_bytes(), None).await
    }

    /// Records that `url` has every write `router` sent it.
    pub async fn clear_missing(&self, router: &str, url: &str) -> Result<(), String> {
        self.delete(&format!("missing/{router}/{:016x}", url_hash(url)))
            .await
    }

    /// Forgets every missed-writes record of `router` (at its start, before recording afresh).
    pub async fn clear_all_missing(&self, router: &str) -> Result<(), String> {
        let key = self.key(&format!("missing/{router}/"));
        self.post(
            "/v3/kv/deleterange",
            json!({"key": b64(&key), "range_end": b64(&prefix_end(&key))}),
        )
        .await
        .map(drop)
    }

    /// Every router's missed-writes records: by replica URL hash, the first version missed.
    pub async fn missing(&self) -> Result<HashMap<u64, u64>, String> {
        let key = self.key("missing/");
        let answer = self
            .post(
                "/v3/kv/range",
                json!({"key": b64(&key), "range_end": b64(&prefix_end(&key))}),
            )
            .await?;
        let mut out: HashMap<u64, u64> = HashMap::new();
        for kv in answer["kvs"].as_array().into_iter().flatten() {
            let decode = |field: &str| {
                B64.decode(kv[field].as_str().unwrap_or_default())
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
            };
            let (Some(k), Some(v)) = (decode("key"), decode("value")) else {
                continue;
            };
            let (Some(url), Ok(since)) = (
                k.rsplit('/')
                    .next()
                    .and_then(|h| u64::from_str_radix(h, 16).ok()),
                v.parse::<u64>(),
            ) else {
                continue;
            };
            let first = out.entry(url).or_insert(since);
            *first = (*first).min(since);
        }
        Ok(out)
    }

    /// How often to keep a lease alive.
    pub fn keep_alive_every(&self) -> Duration {
        Duration::from_millis(self.lease_ttl_s * 1000 / 3)
    }

    /// Counts a failed call, logging only the first of a run of them.
    pub(crate) fn failed(&self, gateway: &Gateway, e: &str) {
        gateway.metrics.etcd_errors.inc();
        if !self.down.swap(true, Ordering::SeqCst) {
            tracing::warn!(error = %e, "etcd unreachable; keeping the last placement and move phase seen");
        }
    }

    fn answered(&self) {
        if self.down.swap(false, Ordering::SeqCst) {
            tracing::info!("etcd reachable again");
        }
    }
}

/// Brings this router's missed-writes records in etcd in line with its hint logs: a record for
/// each replica with pending hints, none for the others (the first round clears what an
/// earlier run of this router left).
async fn publish_missing(gateway: &Gateway, etcd: &Etcd) {
    if !etcd.cleared.swap(true, Ordering::SeqCst) {
        if let Err(e) = etcd.clear_all_missing(&gateway.router_id).await {
            etcd.cleared.store(false, Ordering::SeqCst);
            return etcd.failed(gateway, &e);
        }
    }
    for r in gateway.live.replica_states() {
        let since = r.hints().and_then(|h| h.head()).map(|h| h.version());
        let result = match (since, r.missing_published()) {
            (Some(since), false) => etcd.record_missing(&gateway.router_id, &r.url, since).await,
            (None, true) => etcd.clear_missing(&gateway.router_id, &r.url).await,
            _ => continue,
        };
        match result {
            Ok(()) => r.set_missing_published(since.is_some()),
            Err(e) => etcd.failed(gateway, &e),
        }
    }
}

/// Follows what other routers recorded (every second): a placement another router's move
/// changed (the topology is rebuilt over it), and the phase of the running move (writes go
/// where it says).
pub async fn follow(gateway: &Arc<Gateway>) {
    let Some(etcd) = &gateway.etcd else { return };
    let topo = gateway.topology();
    let placed = match etcd.placement(&topo.config.shards).await {
        Ok(placed) => placed,
        Err(e) => return etcd.failed(gateway, &e),
    };
    if gateway.live.set_shared_placement(placed) {
        tracing::info!(
            epoch = etcd.epoch.load(Ordering::SeqCst),
            "shared placement changed; rebuilding the topology"
        );
        let (gw, config) = (gateway.clone(), topo.config.clone());
        match tokio::task::spawn_blocking(move || gw.build(config)).await {
            Ok(Ok(t)) => gateway.swap(t),
            Ok(Err(e)) => {
                tracing::error!(error = %e, "topology over the shared placement could not be built")
            }
            Err(e) => tracing::error!(error = %e, "topology build task failed"),
        }
    }
    let shared = match etcd.running_move().await {
        Ok(shared) => shared,
        Err(e) => return etcd.failed(gateway, &e),
    };
    etcd.answered();
    publish_missing(gateway, etcd).await;
    let topo = gateway.topology();
    if let (Some(m), Some(shared)) = (&topo.moving, shared) {
        if shared.from == m.progress.from && shared.to == m.progress.to {
            if let Some(phase) = Phase::named(&shared.phase) {
                m.progress.catch_up(phase);
            }
        }
    }
}
