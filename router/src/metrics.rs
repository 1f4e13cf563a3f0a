//! The router's Prometheus metrics: client requests, replica calls by outcome, ejections, reloads.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};

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
}

impl RouterMetrics {
    /// Registers the router's metrics in `registry`.
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let requests = IntCounterVec::new(
            Opts::new(
                "vecgate_http_requests_total",
                "Client requests by route, method and status",
            ),
            &["route", "method", "status"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "vecgate_http_request_duration_seconds",
                "Client request latency by route",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
            ]),
            &["route"],
        )?;
        let replica_calls = IntCounterVec::new(
            Opts::new(
                "vecgate_replica_calls_total",
                "Calls to replicas by shard, url and outcome (ok, error, timeout)",
            ),
            &["shard", "url", "outcome"],
        )?;
        let ejections = IntCounterVec::new(
            Opts::new(
                "vecgate_replica_ejections_total",
                "Passive ejections of replicas by shard and url",
            ),
            &["shard", "url"],
        )?;
        let request_errors = IntCounterVec::new(
            Opts::new(
                "vecgate_request_errors_total",
                "Requests answered with an error, by route and kind (invalid, rejected, timeout, unavailable, unacknowledged)",
            ),
            &["route", "kind"],
        )?;
        let reloads = IntCounterVec::new(
            Opts::new(
                "vecgate_config_reloads_total",
                "Config reloads by result (ok, invalid, failed)",
            ),
            &["result"],
        )?;
        let hints_pending = IntGaugeVec::new(
            Opts::new(
                "vecgate_hints_pending",
                "Writes waiting to be replayed to a replica that missed them",
            ),
            &["url"],
        )?;
        let hints_replayed = IntCounterVec::new(
            Opts::new(
                "vecgate_hints_replayed_total",
                "Missed writes replayed to replicas",
            ),
            &["url"],
        )?;
        let hint_failures = IntCounterVec::new(
            Opts::new(
                "vecgate_hint_failures_total",
                "Hints not persisted (disk) or rejected on replay (rejected)",
            ),
            &["url", "reason"],
        )?;
        registry.register(Box::new(hints_pending.clone()))?;
        registry.register(Box::new(hints_replayed.clone()))?;
        registry.register(Box::new(hint_failures.clone()))?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        registry.register(Box::new(replica_calls.clone()))?;
        registry.register(Box::new(ejections.clone()))?;
        registry.register(Box::new(reloads.clone()))?;
        registry.register(Box::new(request_errors.clone()))?;
        Ok(RouterMetrics {
            requests,
            latency,
            replica_calls,
            ejections,
            request_errors,
            reloads,
            hints_pending,
            hints_replayed,
            hint_failures,
        })
    }
}
