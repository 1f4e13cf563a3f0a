//! Hot queries and warm-up: the router counts the cacheable requests it answers, keeps the
//! counts (in Redis when the cache has one, shared by every router; else in a file under
//! `server.data_dir`), and on start and after a reload replays the `warm_top_n` most asked,
//! rate-limited and in the background, so that a new or restarted router does not start cold.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Method;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::gateway::{Call, Gateway};

/// How often the counts are kept (in Redis or the file).
pub const KEEP_EVERY: Duration = Duration::from_secs(5);

/// Replays the hottest requests through `gateway`, at most `warm_rate` a second, so that
/// their answers are cached; `trigger` names why (`start`, `reload`) in metrics and the log.
pub async fn warm(gateway: Arc<Gateway>, trigger: &'static str) {
    let Some(cache) = &gateway.cache else { return };
    let requests = cache.hottest().await;
    if requests.is_empty() {
        return;
    }
    cache.metrics().warmups.with_label_values(&[trigger]).inc();
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1) / cache.config().warm_rate.max(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (asked, mut warmed) = (requests.len(), 0);
    for r in requests {
        tick.tick().await;
        let Ok(method) = Method::from_bytes(r.method.as_bytes()) else {
            continue;
        };
        let reply = gateway
            .handle(Call {
                method,
                path: r.path,
                query: r.query,
                body: Bytes::from(r.body),
                region: None,
                token: None,
                warming: true,
            })
            .await;
        if reply.status == 200 {
            warmed += 1;
            cache.metrics().warmed.inc();
        }
    }
    tracing::info!(
        trigger,
        asked,
        warmed,
        took_ms = started.elapsed().as_millis() as u64,
        "cache warm-up done"
    );
}

/// Keeps the hot-query counts every [`KEEP_EVERY`] until shutdown.
pub async fn keep_counts(gateway: Arc<Gateway>, mut shutdown: watch::Receiver<bool>) {
    let Some(cache) = &gateway.cache else { return };
    let mut tick = tokio::time::interval(KEEP_EVERY);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => cache.flush_hot().await,
            changed = shutdown.changed() => if changed.is_err() || *shutdown.borrow() {
                return;
            },
        }
    }
}

/// A request as it came, replayable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recorded {
    /// HTTP method.
    pub method: String,
    /// Path.
    pub path: String,
    /// Query string.
    pub query: Option<String>,
    /// The JSON body.
    pub body: String,
}

/// One counted request: how often it was asked (in all, and since the last flush).
struct Count {
    total: u64,
    unflushed: u64,
    request: Recorded,
}

/// The counts of the requests this router answered, bounded to `capacity` distinct ones
/// (past that, the least asked half is dropped).
pub struct Hot {
    counts: Mutex<HashMap<u128, Count>>,
    capacity: usize,
}

impl Hot {
    /// Counts for at most `capacity` distinct requests.
    pub fn new(capacity: usize) -> Hot {
        Hot {
            counts: Mutex::default(),
            capacity: capacity.max(1),
        }
    }

    /// Counts one request, identified by `id`; `request` makes its record the first time.
    pub fn record(&self, id: u128, request: impl FnOnce() -> Recorded) {
        let mut counts = self.counts.lock();
        let count = counts.entry(id).or_insert_with(|| Count {
            total: 0,
            unflushed: 0,
            request: request(),
        });
        count.total += 1;
        count.unflushed += 1;
        if counts.len() > self.capacity {
            let mut totals: Vec<u64> = counts.values().map(|c| c.total).collect();
            totals.sort_unstable();
            let keep_above = totals[totals.len() / 2];
            counts.retain(|_, c| c.total > keep_above);
        }
    }

    /// Adds counts read back from where they were kept.
    pub fn merge(&self, counted: Vec<(u64, Recorded)>) {
        let mut counts = self.counts.lock();
        for (n, request) in counted {
            let id = id_of(&request);
            counts
                .entry(id)
                .or_insert(Count {
                    total: 0,
                    unflushed: 0,
                    request,
                })
                .total += n;
        }
    }

    /// The `n` most asked requests, most asked first.
    pub fn top(&self, n: usize) -> Vec<Recorded> {
        let counts = self.counts.lock();
        let mut all: Vec<&Count> = counts.values().collect();
        all.sort_by(|a, b| {
            b.total
                .cmp(&a.total)
                .then(a.request.path.cmp(&b.request.path))
        });
        all.into_iter().take(n).map(|c| c.request.clone()).collect()
    }

    /// The counts asked since the last call, with their requests (for Redis).
    pub fn take_unflushed(&self) -> Vec<(u64, Recorded)> {
        let mut counts = self.counts.lock();
        counts
            .values_mut()
            .filter(|c| c.unflushed > 0)
            .map(|c| (std::mem::take(&mut c.unflushed), c.request.clone()))
            .collect()
    }

    /// Every count (for the file).
    pub fn all(&self) -> Vec<(u64, Recorded)> {
        self.counts
            .lock()
            .values()
            .map(|c| (c.total, c.request.clone()))
            .collect()
    }
}

/// A request's identity among the hot ones: its method, path, query string and body bytes.
pub fn id_of(r: &Recorded) -> u128 {
    identify(&r.method, &r.path, r.query.as_deref(), r.body.as_bytes())
}

/// [`id_of`] for a request's parts.
pub fn identify(method: &str, path: &str, query: Option<&str>, body: &[u8]) -> u128 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for part in [
        method.as_bytes(),
        path.as_bytes(),
        query.unwrap_or("").as_bytes(),
    ] {
        h.update(part);
        h.update(b"\0");
    }
    h.update(body);
    h.digest128()
}

/// Where the counts are kept without Redis.
pub fn file_in(data_dir: &Path) -> PathBuf {
    data_dir.join("hot-queries.json")
}

/// Reads the counts kept in `path` (none when it does not exist or cannot be read).
pub fn read_file(path: &Path) -> Vec<(u64, Recorded)> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            tracing::warn!(file = %path.display(), error = %e, "unreadable hot-query counts; starting without them");
            Vec::new()
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "cannot read hot-query counts");
            Vec::new()
        }
    }
}

/// Writes the counts to `path` atomically (a temporary file, then a rename).
pub fn write_file(path: &Path, counts: &[(u64, Recorded)]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec(counts)?)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(i: usize) -> Recorded {
        Recorded {
            method: "POST".into(),
            path: "/collections/docs/points/query".into(),
            query: None,
            body: format!("{{\"query\": [{i}]}}"),
        }
    }

    #[test]
    fn the_most_asked_come_first_and_the_least_asked_go_when_full() {
        let hot = Hot::new(4);
        for (i, times) in [(0, 5), (1, 1), (2, 9), (3, 2)] {
            for _ in 0..times {
                hot.record(id_of(&request(i)), || request(i));
            }
        }
        assert_eq!(hot.top(2), vec![request(2), request(0)]);
        hot.record(id_of(&request(4)), || request(4));
        let kept = hot.top(10);
        assert!(
            kept.contains(&request(2)) && kept.contains(&request(0)),
            "{kept:?}"
        );
        assert!(!kept.contains(&request(1)), "{kept:?}");
        assert!(kept.len() <= 4);
    }

    #[test]
    fn counts_survive_a_file_round_trip_and_unflushed_counts_are_taken_once() {
        let dir = tempfile::tempdir().unwrap();
        let hot = Hot::new(10);
        for _ in 0..3 {
            hot.record(id_of(&request(1)), || request(1));
        }
        assert_eq!(hot.take_unflushed(), vec![(3, request(1))]);
        assert!(hot.take_unflushed().is_empty());
        let path = file_in(dir.path());
        write_file(&path, &hot.all()).unwrap();
        let again = Hot::new(10);
        again.merge(read_file(&path));
        assert_eq!(again.all(), vec![(3, request(1))]);
        assert!(read_file(&dir.path().join("absent.json")).is_empty());
    }
}
