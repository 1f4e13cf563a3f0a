//! The router's Prometheus metrics: client requests, replica calls by outcome, ejections, reloads.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

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
    /// Config reloads by result (`ok`, `invalid`).
    pub reloads: IntCounterVec,
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
        let reloads = IntCounterVec::new(
            Opts::new(
                "vecgate_config_reloads_total",
                "Config reloads by result (ok, invalid)",
            ),
            &["result"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        registry.register(Box::new(replica_calls.clone()))?;
        registry.register(Box::new(ejections.clone()))?;
        registry.register(Box::new(reloads.clone()))?;
        Ok(RouterMetrics {
            requests,
            latency,
            replica_calls,
            ejections,
            reloads,
        })
    }
}
