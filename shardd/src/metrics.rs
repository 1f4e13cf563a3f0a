//! The engine's Prometheus metrics, registered in a registry the caller owns.

use prometheus::core::Collector;
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

/// Latency buckets, in seconds, from 0.1 ms to 10 s: every `_seconds` histogram of both
/// binaries uses them.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

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
    /// Bytes of vectors and payloads per collection.
    pub bytes: IntGaugeVec,
    /// Seconds each write spent inserting vectors into HNSW graphs (and each rebuild at start).
    pub index_build_seconds: Histogram,
    /// Filtered searches by how the filter found its points (`index`, `scan`).
    pub filters: IntCounterVec,
}

impl Metrics {
    /// Creates the metrics, named with `prefix` (`shardd` in the daemon), and registers them.
    pub fn new(registry: &Registry, prefix: &str) -> prometheus::Result<Self> {
        let r = Registrar::new(registry, prefix);
        let buckets = LATENCY_BUCKETS.to_vec();
        Ok(Metrics {
            wal_fsync_seconds: r.histogram(
                "wal_fsync_duration_seconds",
                "Seconds each WAL fsync took",
                buckets.clone(),
            )?,
            wal_bytes: r.counter("wal_appended_bytes_total", "Bytes appended to the WAL")?,
            wal_failures: r.counter(
                "wal_failures_total",
                "WAL writes or fsyncs that failed; writes are refused afterwards",
            )?,
            wal_torn_tails: r.counter(
                "wal_torn_tails_total",
                "Torn records cut from the WAL tail at start",
            )?,
            wal_replayed: r.counter(
                "wal_replayed_records_total",
                "WAL records replayed at start",
            )?,
            snapshot_seconds: r.histogram(
                "snapshot_duration_seconds",
                "Seconds each collection snapshot took",
                buckets.clone(),
            )?,
            snapshot_failures: r.counter(
                "snapshot_failures_total",
                "Collection snapshots that failed",
            )?,
            searches: r.counters("searches_total", "Searches by plan", &["plan"])?,
            points: r.gauges("points", "Points per collection", &["collection"])?,
            bytes: r.gauges(
                "collection_bytes",
                "Bytes of vectors and payloads per collection",
                &["collection"],
            )?,
            index_build_seconds: r.histogram(
                "index_build_duration_seconds",
                "Seconds each write spent inserting vectors into HNSW graphs",
                buckets,
            )?,
            filters: r.counters(
                "filtered_searches_total",
                "Filtered searches by how the filter found its points (index, scan)",
                &["plan"],
            )?,
        })
    }
}

/// Creates metrics named `PREFIX_name` and registers each in one registry.
pub struct Registrar<'a> {
    registry: &'a Registry,
    prefix: &'a str,
}

impl<'a> Registrar<'a> {
    /// Metrics named `{prefix}_...` in `registry`.
    pub fn new(registry: &'a Registry, prefix: &'a str) -> Self {
        Registrar { registry, prefix }
    }

    fn name(&self, name: &str) -> String {
        format!("{}_{name}", self.prefix)
    }

    fn add<M: Collector + Clone + 'static>(&self, metric: M) -> prometheus::Result<M> {
        self.registry.register(Box::new(metric.clone()))?;
        Ok(metric)
    }

    /// A counter.
    pub fn counter(&self, name: &str, help: &str) -> prometheus::Result<IntCounter> {
        self.add(IntCounter::new(self.name(name), help)?)
    }

    /// Counters by `labels`.
    pub fn counters(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> prometheus::Result<IntCounterVec> {
        self.add(IntCounterVec::new(
            Opts::new(self.name(name), help),
            labels,
        )?)
    }

    /// A gauge.
    pub fn gauge(&self, name: &str, help: &str) -> prometheus::Result<IntGauge> {
        self.add(IntGauge::new(self.name(name), help)?)
    }

    /// Gauges by `labels`.
    pub fn gauges(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> prometheus::Result<IntGaugeVec> {
        self.add(IntGaugeVec::new(Opts::new(self.name(name), help), labels)?)
    }

    /// A histogram over `buckets`.
    pub fn histogram(
        &self,
        name: &str,
        help: &str,
        buckets: Vec<f64>,
    ) -> prometheus::Result<Histogram> {
        self.add(Histogram::with_opts(
            HistogramOpts::new(self.name(name), help).buckets(buckets),
        )?)
    }

    /// Histograms over `buckets` by `labels`.
    pub fn histograms(
        &self,
        name: &str,
        help: &str,
        buckets: Vec<f64>,
        labels: &[&str],
    ) -> prometheus::Result<HistogramVec> {
        self.add(HistogramVec::new(
            HistogramOpts::new(self.name(name), help).buckets(buckets),
            labels,
        )?)
    }
}
