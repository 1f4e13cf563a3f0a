//! The router's Prometheus metrics: client requests, replica calls by outcome, ejections,
//! reloads, hints, replica joins and anti-entropy repair.

use prometheus::{HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Registry};
use shardd::metrics::Registrar;

/// Router-level metrics.
pub struct RouterMetrics {
    /// Client requests by route, method and status.
    pub requests: IntCounterVec,
    /// Client request latency by route.
    pub latency: HistogramVec,
    /// Calls to replicas by shard, URL and outcome (`ok`, `error`, `timeout`).
    pub replica_calls: IntCounterVec,
    /// Passive ejections by shard and URL.
    pub ejections: IntCounterVec,
    /// Requests answered with an error, by route and kind (`invalid`, `rejected`, `timeout`,
    /// `unavailable`, `unacknowledged`).
    pub request_errors: IntCounterVec,
    /// Config reloads by result (`ok`, `invalid`, `failed`: valid but could not be applied).
    pub reloads: IntCounterVec,
    /// Writes waiting to be replayed to each replica.
    pub hints_pending: IntGaugeVec,
    /// Writes replayed to each replica.
    pub hints_replayed: IntCounterVec,
    /// Hints that could not be persisted (`disk`) or that a replica rejected on replay (`rejected`).
    pub hint_failures: IntCounterVec,
    /// 1 while a replica is joining (being filled from a peer), else 0.
    pub joining: IntGaugeVec,
    /// Finished replica joins by URL and result (`done`, `failed`).
    pub joins: IntCounterVec,
    /// Anti-entropy rounds by trigger (`schedule`, `admin`) and result (`ok`, `failed`).
    pub repairs: IntCounterVec,
    /// Id buckets found differing between replicas, by shard.
    pub repair_buckets: IntCounterVec,
    /// Points and tombstones copied between replicas (joins and repairs), by shard.
    pub repair_copied: IntCounterVec,
    /// 1 while points move to a new shard set.
    pub move_running: IntGauge,
    /// Moves by result (`done`, `failed`: a step failed and is retried).
    pub moves: IntCounterVec,
    /// Points and tombstones moved to their new owner.
    pub moved: IntCounter,
    /// Failed calls to etcd (`[cluster]`).
    pub etcd_errors: IntCounter,
}

impl RouterMetrics {
    /// Registers the router's metrics in `registry`.
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let r = Registrar::new(registry, "vecgate");
        Ok(RouterMetrics {
            requests: r.counters(
                "http_requests_total",
                "Client requests by route, method and status",
                &["route", "method", "status"],
            )?,
            latency: r.histograms(
                "http_request_duration_seconds",
                "Client request latency by route",
                vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                    10.0,
                ],
                &["route"],
            )?,
            replica_calls: r.counters(
                "replica_calls_total",
                "Calls to replicas by shard, url and outcome (ok, error, timeout)",
                &["shard", "url", "outcome"],
            )?,
            ejections: r.counters(
                "replica_ejections_total",
                "Passive ejections of replicas by shard and url",
                &["shard", "url"],
            )?,
            request_errors: r.counters(
                "request_errors_total",
                "Requests answered with an error, by route and kind (invalid, rejected, timeout, unavailable, unacknowledged)",
                &["route", "kind"],
            )?,
            reloads: r.counters(
                "config_reloads_total",
                "Config reloads by result (ok, invalid, failed)",
                &["result"],
            )?,
            hints_pending: r.gauges(
                "hints_pending",
                "Writes waiting to be replayed to a replica that missed them",
                &["url"],
            )?,
            hints_replayed: r.counters(
                "hints_replayed_total",
                "Missed writes replayed to replicas",
                &["url"],
            )?,
            hint_failures: r.counters(
                "hint_failures_total",
                "Hints not persisted (disk) or rejected on replay (rejected)",
                &["url", "reason"],
            )?,
            joining: r.gauges(
                "replica_joining",
                "1 while a replica is being filled from a peer before it serves reads",
                &["url"],
            )?,
            joins: r.counters(
                "replica_joins_total",
                "Finished replica joins by result (done, failed)",
                &["url", "result"],
            )?,
            repairs: r.counters(
                "repairs_total",
                "Anti-entropy rounds by trigger (schedule, admin) and result (ok, failed)",
                &["trigger", "result"],
            )?,
            repair_buckets: r.counters(
                "repair_buckets_differing_total",
                "Id buckets found differing between the replicas of a shard",
                &["shard"],
            )?,
            repair_copied: r.counters(
                "repair_points_copied_total",
                "Points and tombstones copied between replicas by joins and repairs",
                &["shard"],
            )?,
            move_running: r.gauge(
                "move_running",
                "1 while points move to a new shard set",
            )?,
            moves: r.counters(
                "moves_total",
                "Moves by result (done; failed: a step failed and is retried)",
                &["result"],
            )?,
            moved: r.counter(
                "move_points_total",
                "Points and tombstones moved to their new owner",
            )?,
            etcd_errors: r.counter("etcd_errors_total", "Failed calls to etcd")?,
        })
    }
}
