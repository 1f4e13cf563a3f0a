//! The cache's second tier: answers and collection generations in Redis, through a fred pool
//! with a deadline on every command and a breaker that stops calling a Redis that fails.
//!
//! Keys: `vecgate:r:{key hex}` holds an answer (with its own TTL), `vecgate:gen:{collection}`
//! a collection's generation. A write's bump sets a new, larger value and publishes
//! `"{value} {collection}"` on `vecgate:generations`, in one script; every router subscribes
//! and adopts the larger value, so a write on one router invalidates the others' answers
//! within the message's delivery time.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fred::clients::SubscriberClient;
use fred::prelude::*;

use super::precise::{Logs, Written};
use super::warm::{id_of, Recorded};
use super::{CacheMetrics, Generations};
use crate::config::{redact_url, CacheConfig};

/// Sets a generation above both the caller's floor (the time in µs, or what it last saw,
/// whichever is later) and the value in Redis, then publishes it. Time-based values keep
/// increasing across a Redis restart that emptied it (given clocks within the restart's
/// length of each other), so a generation is never reused.
const BUMP: &str = "local v = tonumber(redis.call('GET', KEYS[1]) or '0') \
local t = tonumber(ARGV[1]) \
if t <= v then t = v + 1 end \
local text = string.format('%d', t) \
redis.call('SET', KEYS[1], text) \
redis.call('PUBLISH', ARGV[2], text .. ' ' .. ARGV[3]) \
return t";

/// Adds hot-query counts (ARGV: the most to keep, then id, count, request triples) and drops
/// the least asked past the limit, with their requests.
const ADD_HOT: &str = "local keep = tonumber(ARGV[1]) \
for i = 2, #ARGV, 3 do \
  redis.call('ZINCRBY', KEYS[1], ARGV[i + 1], ARGV[i]) \
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 2]) \
end \
local gone = redis.call('ZRANGE', KEYS[1], 0, -(keep + 1)) \
if #gone > 0 then \
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -(keep + 1)) \
  redis.call('HDEL', KEYS[2], unpack(gone)) \
end \
return #gone";

/// The `ARGV[1]` most asked requests, as count, request pairs.
const TOP_HOT: &str =
    "local ids = redis.call('ZREVRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1, 'WITHSCORES') \
local out = {} \
for i = 1, #ids, 2 do \
  local r = redis.call('HGET', KEYS[2], ids[i]) \
  if r then \
    table.insert(out, ids[i + 1]) \
    table.insert(out, r) \
  end \
end \
return out";

/// Hot-query counts and the requests they count (one hash slot, for Redis Cluster).
const HOT_KEYS: [&str; 2] = ["{vecgate}:hot", "{vecgate}:hotreq"];

/// The pub/sub channel of generation bumps.
const CHANNEL: &str = "vecgate:generations";
/// The pub/sub channel of precise collections' writes: `"{collection}\n{json}"`.
const WRITES: &str = "vecgate:writes";
/// A write described in more bytes than this is not sent; the collection's generation is
/// bumped instead.
const MAX_WRITE_MESSAGE: usize = 256 << 10;
/// Failures in a row that open the breaker.
const TRIP_AFTER: u32 = 3;
/// How long the breaker stays open before one call tries Redis again.
const OPEN_FOR: Duration = Duration::from_secs(1);

/// Redis as the cache's second tier.
pub struct Redis {
    pool: Pool,
    subscriber: SubscriberClient,
    ttl_s: i64,
    timeout: Duration,
    breaker: Arc<Breaker>,
    metrics: Arc<CacheMetrics>,
}

impl Redis {
    /// Starts the pool and the subscriber; both connect (and reconnect) in the background.
    pub(crate) fn connect(
        url: &str,
        config: &CacheConfig,
        generations: Arc<Generations>,
        logs: Arc<Logs>,
        metrics: Arc<CacheMetrics>,
    ) -> anyhow::Result<Redis> {
        let timeout = Duration::from_millis(config.redis_timeout_ms);
        let mut redis_config = Config::from_url(url)
            .map_err(|e| anyhow::anyhow!("cache.redis_url `{}`: {e}", redact_url(url)))?;
        // A Redis that is down when vecgate starts is retried like one that went down later.
        redis_config.fail_fast = false;
        let mut builder = Builder::from_config(redis_config);
        builder
            .with_performance_config(|p| p.default_command_timeout = timeout)
            .with_connection_config(|c| {
                c.connection_timeout = Duration::from_secs(1);
                c.internal_command_timeout = Duration::from_secs(1);
                c.max_command_attempts = 1;
            })
            .set_policy(reconnect_policy());
        let pool = builder.build_pool(config.redis_pool)?;
        let subscriber = builder.build_subscriber_client()?;
        pool.connect();
        subscriber.connect();
        let breaker = Arc::new(Breaker::new(metrics.clone()));
        tokio::spawn(listen(
            subscriber.clone(),
            pool.clone(),
            generations,
            logs,
            breaker.clone(),
            metrics.clone(),
            timeout,
        ));
        Ok(Redis {
            pool,
            subscriber,
            ttl_s: i64::try_from(if config.redis_ttl_s > 0 {
                config.redis_ttl_s
            } else {
                config.ttl_s
            })
            .unwrap_or(i64::MAX),
            timeout,
            breaker,
            metrics,
        })
    }

    /// Runs one command under the deadline and the breaker; `None` when skipped or failed.
    async fn call<T>(
        &self,
        op: &'static str,
        command: impl std::future::Future<Output = Result<T, Error>>,
    ) -> Option<T> {
        call(&self.breaker, &self.metrics, self.timeout, op, command).await
    }

    /// The answer stored under `key`.
    pub(crate) async fn get(&self, key: u128) -> Option<Bytes> {
        self.get_named(answer_key(key)).await
    }

    /// Stores an answer, in the background: the client does not wait for Redis.
    pub(crate) fn set(&self, key: u128, body: Bytes) {
        self.set_named(answer_key(key), body, self.ttl_s);
    }

    /// The vector an embedder made, stored under `key` (model and text).
    pub(crate) async fn get_vector(&self, key: u128) -> Option<Bytes> {
        self.get_named(vector_key(key)).await
    }

    /// Stores a vector for `ttl_s` seconds, in the background.
    pub(crate) fn set_vector(&self, key: u128, bytes: Bytes, ttl_s: i64) {
        self.set_named(vector_key(key), bytes, ttl_s);
    }

    async fn get_named(&self, name: String) -> Option<Bytes> {
        self.call("get", self.pool.get::<Option<Bytes>, _>(name))
            .await
            .flatten()
    }

    fn set_named(&self, name: String, body: Bytes, ttl: i64) {
        let pool = self.pool.clone();
        let (breaker, metrics, timeout) =
            (self.breaker.clone(), self.metrics.clone(), self.timeout);
        tokio::spawn(async move {
            let set = pool.set::<(), _, _>(name, body, Some(Expiration::EX(ttl)), None, false);
            call(&breaker, &metrics, timeout, "set", set).await;
        });
    }

    /// `collection`'s generation in Redis (0 when never bumped).
    pub(crate) async fn generation(&self, collection: &str) -> Option<u64> {
        self.call(
            "get",
            self.pool.get::<Option<u64>, _>(generation_key(collection)),
        )
        .await
        .map(Option::unwrap_or_default)
    }

    /// Bumps `collection`'s generation to a value above both `floor` and the one in Redis,
    /// and tells the other routers, in one script; the new value, or `None` when Redis could
    /// not be told.
    pub(crate) async fn bump(&self, collection: &str, floor: u64) -> Option<u64> {
        bump(
            &self.pool,
            &self.breaker,
            &self.metrics,
            self.timeout,
            collection,
            floor,
        )
        .await
    }

    /// Sends a precise collection's write to the other routers; `false` when it could not be
    /// (too large, or Redis failing).
    pub(crate) async fn tell_written(&self, collection: &str, write: &Written) -> bool {
        let Ok(json) = serde_json::to_string(write) else {
            return false;
        };
        if json.len() > MAX_WRITE_MESSAGE {
            return false;
        }
        let publish = self
            .pool
            .next()
            .publish::<(), _, _>(WRITES, format!("{collection}\n{json}"));
        self.call("publish", publish).await.is_some()
    }

    /// Adds `counts` to the hot-query counts kept in Redis, which keeps the `keep` most asked.
    pub(crate) async fn add_hot(&self, counts: Vec<(u64, Recorded)>, keep: usize) {
        if counts.is_empty() {
            return;
        }
        let mut args = vec![keep.to_string()];
        for (n, request) in counts {
            args.push(format!("{:032x}", id_of(&request)));
            args.push(n.to_string());
            args.push(serde_json::to_string(&request).unwrap_or_default());
        }
        let add = self
            .pool
            .next()
            .eval::<u64, _, _, _>(ADD_HOT, HOT_KEYS.to_vec(), args);
        self.call("hot", add).await;
    }

    /// The `n` most asked requests kept in Redis, with their counts (waiting up to a second
    /// for the connection, since a warm-up starts with the router).
    pub(crate) async fn top_hot(&self, n: usize) -> Vec<(u64, Recorded)> {
        let _ = tokio::time::timeout(Duration::from_secs(1), self.pool.wait_for_connect()).await;
        let top = self.pool.next().eval::<Vec<String>, _, _, _>(
            TOP_HOT,
            HOT_KEYS.to_vec(),
            vec![n.to_string()],
        );
        let flat = self.call("hot", top).await.unwrap_or_default();
        flat.chunks(2)
            .filter_map(|pair| {
                let count = pair.first()?.parse::<f64>().ok()? as u64;
                let request = serde_json::from_str(pair.get(1)?).ok()?;
                Some((count, request))
            })
            .collect()
    }

    /// Closes the connections.
    pub(crate) async fn close(&self) {
        let _ = self.subscriber.quit().await;
        let _ = self.pool.quit().await;
    }
}

/// Connects at once, then retries every 10 ms doubling up to 1 s, without end (fred sleeps the
/// first delay even before the first attempt).
fn reconnect_policy() -> ReconnectPolicy {
    let mut policy = ReconnectPolicy::new_exponential(0, 10, 1000, 2);
    policy.set_jitter(5);
    policy
}

/// The [`BUMP`] script for `collection` with `floor`.
async fn bump(
    pool: &Pool,
    breaker: &Breaker,
    metrics: &CacheMetrics,
    timeout: Duration,
    collection: &str,
    floor: u64,
) -> Option<u64> {
    let bump = pool.next().eval::<u64, _, _, _>(
        BUMP,
        vec![generation_key(collection)],
        vec![
            floor.to_string(),
            CHANNEL.to_string(),
            collection.to_string(),
        ],
    );
    call(breaker, metrics, timeout, "bump", bump).await
}

/// A generation above the time in µs and above `seen`.
pub(crate) fn floor_above(seen: u64) -> u64 {
    let now_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    now_us.max(seen + 1)
}

fn answer_key(key: u128) -> String {
    format!("vecgate:r:{key:032x}")
}

fn vector_key(key: u128) -> String {
    format!("vecgate:v:{key:032x}")
}

fn generation_key(collection: &str) -> String {
    format!("vecgate:gen:{collection}")
}

async fn call<T>(
    breaker: &Breaker,
    metrics: &CacheMetrics,
    timeout: Duration,
    op: &'static str,
    command: impl std::future::Future<Output = Result<T, Error>>,
) -> Option<T> {
    if !breaker.allows() {
        return None;
    }
    match tokio::time::timeout(timeout, command).await {
        Ok(Ok(value)) => {
            breaker.succeeded();
            Some(value)
        }
        Ok(Err(e)) => {
            metrics.l2_errors.with_label_values(&[op]).inc();
            breaker.failed(&e.to_string());
            None
        }
        Err(_) => {
            metrics.l2_errors.with_label_values(&[op]).inc();
            breaker.failed(&format!("no answer within {timeout:?}"));
            None
        }
    }
}

/// Follows the other routers' bumps: subscribes (again after every reconnect, when every
/// generation is read afresh, since bumps may have been missed while disconnected).
async fn listen(
    subscriber: SubscriberClient,
    pool: Pool,
    generations: Arc<Generations>,
    logs: Arc<Logs>,
    breaker: Arc<Breaker>,
    metrics: Arc<CacheMetrics>,
    timeout: Duration,
) {
    let mut messages = subscriber.message_rx();
    let mut reconnects = subscriber.reconnect_rx();
    loop {
        if subscriber.wait_for_connect().await.is_err() {
            tokio::time::sleep(OPEN_FOR).await;
            continue;
        }
        if let Err(e) = subscriber.subscribe(vec![CHANNEL, WRITES]).await {
            metrics.l2_errors.with_label_values(&["subscribe"]).inc();
            tracing::debug!(error = %e, "subscribing to cache invalidations failed; retrying");
            tokio::time::sleep(OPEN_FOR).await;
            continue;
        }
        // The subscription just went through: Redis answers, whatever the breaker last saw.
        breaker.succeeded();
        generations.forget_shared();
        for collection in generations.collections() {
            let read = pool.get::<Option<u64>, _>(generation_key(&collection));
            if let Some(v) = call(&breaker, &metrics, timeout, "get", read).await {
                generations.heard(&collection, v.unwrap_or_default());
            }
        }
        // Writes made while Redis was away: the other routers learn of them now, and every
        // router's keys for those collections agree again (so L2 is shared again).
        for (collection, seen) in generations.written_alone() {
            let floor = floor_above(seen);
            if let Some(v) = bump(&pool, &breaker, &metrics, timeout, &collection, floor).await {
                generations.heard(&collection, v);
            }
        }
        loop {
            tokio::select! {
                message = messages.recv() => match message {
                    Ok(m) => {
                        let text = m.value.as_str().map(|s| s.to_string()).unwrap_or_default();
                        if &*m.channel == WRITES {
                            heard_write(&logs, &generations, &text);
                        } else if let Some((value, collection)) = text.split_once(' ') {
                            if let Ok(v) = value.parse::<u64>() {
                                generations.heard(collection, v);
                            }
                        }
                        metrics.remote_invalidations.inc();
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        generations.forget_shared();
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                },
                reconnected = reconnects.recv() => match reconnected {
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => break,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                },
            }
        }
    }
}

/// Logs another router's write to a precise collection; one that cannot be read drops the
/// collection's answers (its generation moves past anything cached).
fn heard_write(logs: &Logs, generations: &Generations, text: &str) {
    let Some((collection, json)) = text.split_once('\n') else {
        return;
    };
    match serde_json::from_str::<Written>(json) {
        Ok(write) => logs.log(collection, write),
        Err(e) => {
            tracing::warn!(collection, error = %e, "unreadable write from another router; dropping the collection's cached answers");
            generations.update(collection, |g| g.local += 1);
        }
    }
}

/// Stops calling Redis after [`TRIP_AFTER`] failures in a row; after [`OPEN_FOR`] one call
/// tries again, and a success closes it. One log line when it opens and one when it closes.
struct Breaker {
    failures: AtomicU32,
    open: AtomicBool,
    /// When the open breaker lets a call through, as milliseconds since `epoch`.
    retry_at_ms: AtomicU64,
    epoch: Instant,
    metrics: Arc<CacheMetrics>,
}

impl Breaker {
    fn new(metrics: Arc<CacheMetrics>) -> Breaker {
        Breaker {
            failures: AtomicU32::new(0),
            open: AtomicBool::new(false),
            retry_at_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            metrics,
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn allows(&self) -> bool {
        if !self.open.load(Ordering::Acquire) {
            return true;
        }
        let now = self.now_ms();
        let at = self.retry_at_ms.load(Ordering::Acquire);
        // One caller wins the retry; the others keep skipping until it answers.
        now >= at
            && self
                .retry_at_ms
                .compare_exchange(
                    at,
                    now + OPEN_FOR.as_millis() as u64,
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_ok()
    }

    fn succeeded(&self) {
        self.failures.store(0, Ordering::Release);
        if self.open.swap(false, Ordering::AcqRel) {
            self.metrics.l2_breaker_open.set(0);
            tracing::info!("Redis answers again; the cache uses it again");
        }
    }

    fn failed(&self, why: &str) {
        let failures = self.failures.fetch_add(1, Ordering::AcqRel) + 1;
        if failures >= TRIP_AFTER && !self.open.swap(true, Ordering::AcqRel) {
            self.retry_at_ms.store(
                self.now_ms() + OPEN_FOR.as_millis() as u64,
                Ordering::Release,
            );
            self.metrics.l2_breaker_open.set(1);
            tracing::warn!(
                error = why,
                "Redis failing; the cache skips it (answers come from L1 and the shards) until it answers again"
            );
        }
    }
}
