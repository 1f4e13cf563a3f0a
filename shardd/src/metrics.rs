//! The engine's Prometheus metrics, registered in a registry the caller owns.

use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
};

/// Counters and histograms for the WAL, snapshots, recovery and searches.
pub struct Metrics {
    /// Seconds each WAL fsync took.
    pub wal_fsync_seconds: Histogram,
    /// Bytes appended to the WAL.
    pub wal_bytes: IntCounter,
    /// WAL writes or fsyncs that failed (writes are refused afterwards).
    pub wal_failures: IntCounter,
    /// Torn records cut from the WAL tail at start (a crash mid-write).
    pub wal_torn_tails: IntCounter,
    /// WAL records replayed at start.
    pub wal_replayed: IntCounter,
    /// Seconds each collection snapshot took.
    pub snapshot_seconds: Histogram,
    /// Snapshots that failed.
    pub snapshot_failures: IntCounter,
    /// Searches by plan (`exact`, `hnsw`, `hnsw_filtered`, `exact_fallback`, `sparse`).
    pub searches: IntCounterVec,
    /// Points per collection.
    pub points: IntGaugeVec,
    /// Filtered searches by how the filter found its points (`index`, `scan`).
    pub filters: IntCounterVec,
}

impl Metrics {
    /// Creates the metrics, named with `prefix` (`shardd` in the daemon), and registers them.
    pub fn new(registry: &Registry, prefix: &str) -> prometheus::Result<Self> {
        let name = |n: &str| format!("{prefix}_{n}");
        let buckets = vec![
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
        ];
        let m = Metrics {
            wal_fsync_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    name("wal_fsync_duration_seconds"),
                    "Seconds each WAL fsync took",
                )
                .buckets(buckets.clone()),
            )?,
            wal_bytes: IntCounter::new(
                name("wal_appended_bytes_total"),
                "Bytes appended to the WAL",
            )?,
            wal_failures: IntCounter::new(
                name("wal_failures_total"),
                "WAL writes or fsyncs that failed; writes are refused afterwards",
            )?,
            wal_torn_tails: IntCounter::new(
                name("wal_torn_tails_total"),
                "Torn records cut from the WAL tail at start",
            )?,
            wal_replayed: IntCounter::new(
                name("wal_replayed_records_total"),
                "WAL records replayed at start",
            )?,
            snapshot_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    name("snapshot_duration_seconds"),
                    "Seconds each collection snapshot took",
                )
                .buckets(buckets),
            )?,
            snapshot_failures: IntCounter::new(
                name("snapshot_failures_total"),
                "Collection snapshots that failed",
            )?,
            searches: IntCounterVec::new(
                Opts::new(name("searches_total"), "Searches by plan"),
                &["plan"],
            )?,
            points: IntGaugeVec::new(
                Opts::new(name("points"), "Points per collection"),
                &["collection"],
            )?,
            filters: IntCounterVec::new(
                Opts::new(
                    name("filtered_searches_total"),
                    "Filtered searches by how the filter found its points (index, scan)",
                ),
                &["plan"],
            )?,
        };
        registry.register(Box::new(m.wal_fsync_seconds.clone()))?;
        registry.register(Box::new(m.wal_bytes.clone()))?;
        registry.register(Box::new(m.wal_failures.clone()))?;
        registry.register(Box::new(m.wal_torn_tails.clone()))?;
        registry.register(Box::new(m.wal_replayed.clone()))?;
        registry.register(Box::new(m.snapshot_seconds.clone()))?;
        registry.register(Box::new(m.snapshot_failures.clone()))?;
        registry.register(Box::new(m.searches.clone()))?;
        registry.register(Box::new(m.points.clone()))?;
        registry.register(Box::new(m.filters.clone()))?;
        Ok(m)
    }
}
