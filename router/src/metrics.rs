//! The router's Prometheus metrics: client requests, replica calls by outcome, ejections,
//! reloads, hints, replica joins and anti-entropy repair.

use prometheus::{
    Histogram, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Registry,
};
use shardd::metrics::{Registrar, LATENCY_BUCKETS};

/// Router-level metrics.
pub struct RouterMetrics {
    /// Client requests by route, method and status.
    pub requests: IntCounterVec,
    /// Client request latency by route.
    pub latency: HistogramVec,
    /// Calls to replicas by shard, URL and outcome (`ok`, `4xx`, `5xx`, `error`: refused or
    /// broken, `timeout`).
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
    /// Searches end to end (query, search, batch, groups, `/v1/search`).
    pub search_latency: Histogram,
    /// Calls to each replica, by shard and URL.
    pub replica_latency: HistogramVec,
    /// Requests in flight to each replica (at scrape time).
    pub replica_in_flight: IntGaugeVec,
    /// 1 when a replica serves reads, else 0 (at scrape time).
    pub replica_up: IntGaugeVec,
    /// 1 for each replica's state: serving, joining, lagging, down (at scrape time).
    pub replica_state: IntGaugeVec,
    /// Answers that left out shards (`allow_partial`), by route.
    pub partial: IntCounterVec,
    /// 1, labelled with the running config's hash.
    pub config_info: IntGaugeVec,
}

impl RouterMetrics {
    /// Registers the router's metrics in `registry`, the labelled ones with a fixed set of
    /// labels at 0, so that rules over them see a series before the first event.
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let m = Self::register(registry)?;
        for result in ["ok", "invalid", "failed"] {
            m.reloads.with_label_values(&[result]);
        }
        for result in ["done", "failed"] {
            m.moves.with_label_values(&[result]);
        }
        for trigger in ["schedule", "admin"] {
            for result in ["ok", "failed"] {
                m.repairs.with_label_values(&[trigger, result]);
            }
        }
        Ok(m)
    }

    fn register(registry: &Registry) -> prometheus::Result<Self> {
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
                LATENCY_BUCKETS.to_vec(),
                &["route"],
            )?,
            replica_calls: r.counters(
                "replica_calls_total",
                "Calls to replicas by shard, url and outcome (ok, 4xx, 5xx, error, timeout)",
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
            search_latency: r.histogram(
                "search_latency_seconds",
                "Searches end to end: query, search, batch, groups and /v1/search",
                LATENCY_BUCKETS.to_vec(),
            )?,
            replica_latency: r.histograms(
                "replica_call_duration_seconds",
                "Calls to replicas by shard and url",
                LATENCY_BUCKETS.to_vec(),
                &["shard", "url"],
            )?,
            replica_in_flight: r.gauges(
                "replica_in_flight",
                "Requests in flight to each replica",
                &["shard", "url"],
            )?,
            replica_up: r.gauges(
                "replica_up",
                "1 when a replica serves reads (healthy, not ejected, joining or lagging)",
                &["shard", "url"],
            )?,
            replica_state: r.gauges(
                "replica_state",
                "1 for each replica's state (serving, joining, lagging, down)",
                &["shard", "url", "state"],
            )?,
            partial: r.counters(
                "partial_answers_total",
                "Answers that left out shards (allow_partial), by route",
                &["route"],
            )?,
            config_info: r.gauges(
                "config_info",
                "1, labelled with the hash of the running config",
                &["hash"],
            )?,
        })
    }
}
