//! The `shardd` daemon: parses flags, opens the shard, serves it, snapshots it, shuts down cleanly.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use shardd::lock::DirLock;
use shardd::metrics::Metrics;
use shardd::server::{serve, AppState};
use shardd::shard::{Shard, ShardOptions};
use shardd::telemetry::{self, LogFormat, OtlpProtocol, Settings};
use shardd::FsyncPolicy;
use tokio::signal::unix::{signal, SignalKind};

#[cfg(all(feature = "mimalloc", feature = "jemalloc"))]
compile_error!("features `mimalloc` and `jemalloc` each pick the allocator: enable one");

#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// One Vecgate shard: an HNSW index, payloads and a WAL for every collection.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Address to serve the API, health and metrics on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:7001")]
    listen: SocketAddr,
    /// Directory for the WAL and snapshots.
    #[arg(long, default_value = "./shard-data")]
    data_dir: PathBuf,
    /// `always`: fsync before acknowledging a write (group-committed). `never`: leave flushing
    /// to the OS (survives a process crash, not a power loss).
    #[arg(long, value_enum, default_value = "always")]
    wal_fsync: FsyncPolicy,
    /// A WAL segment is closed at this size (MiB).
    #[arg(long, default_value_t = 64)]
    wal_segment_mb: u64,
    /// Seconds between snapshot rounds (changed collections only; 0 disables).
    #[arg(long, default_value_t = 60)]
    snapshot_interval_s: u64,
    /// Largest accepted request body (MiB).
    #[arg(long, default_value_t = 32)]
    max_body_mb: usize,
    /// An OpenTelemetry collector to send spans to over OTLP/HTTP (`http://host:4318`); a
    /// router's `traceparent` joins them to its trace. Absent = no spans exported.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
    /// The OTLP encoding.
    #[arg(long, value_enum, default_value = "http/protobuf")]
    otlp_protocol: OtlpProtocol,
    /// The share of traces started here (no caller's `traceparent`) that are recorded.
    #[arg(long, default_value_t = 1.0)]
    trace_sample_ratio: f64,
    /// `text` lines, or `json` lines carrying the trace id of the request they are about.
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if !(0.0..=1.0).contains(&args.trace_sample_ratio) {
        eprintln!(
            "shardd: --trace-sample-ratio must be between 0 and 1, got {}",
            args.trace_sample_ratio
        );
        return ExitCode::FAILURE;
    }
    let telemetry = match telemetry::init(&Settings {
        otlp_endpoint: args.otlp_endpoint.clone(),
        protocol: args.otlp_protocol,
        sample_ratio: args.trace_sample_ratio,
        log_format: args.log_format,
        ..Settings::logs_only("shardd")
    }) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("shardd: --otlp-endpoint: {e}");
            return ExitCode::FAILURE;
        }
    };
    let ran = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(run(args)));
    telemetry.shutdown();
    match ran {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shardd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let lock = DirLock::acquire(&args.data_dir)?;
    let registry = prometheus::Registry::new();
    let metrics = Arc::new(Metrics::new(&registry, "shardd")?);
    telemetry::register(&registry, "shardd")?;
    let state = Arc::new(AppState::new(registry, args.max_body_mb << 20)?);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    println!("listening on {addr}");
    std::io::stdout().flush()?;
    tracing::info!(listen = %addr, data_dir = %args.data_dir.display(), "shardd starting");

    let options = ShardOptions {
        fsync: args.wal_fsync,
        wal_segment_bytes: args.wal_segment_mb << 20,
    };
    let started = Instant::now();
    let shard = tokio::task::spawn_blocking(move || Shard::open_locked(lock, options, metrics))
        .await?
        .with_context(|| format!("opening data directory {}", args.data_dir.display()))?;
    let shard = Arc::new(shard);
    tracing::info!(dir = %args.data_dir.display(), collections = shard.collection_names().len(), seconds = started.elapsed().as_secs_f64(), "recovered");
    let _ = state.shard.set(shard.clone());

    if args.snapshot_interval_s > 0 {
        let shard = shard.clone();
        let every = Duration::from_secs(args.snapshot_interval_s);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                let shard = shard.clone();
                match tokio::task::spawn_blocking(move || shard.snapshot()).await {
                    Ok(Ok(n)) if n > 0 => tracing::info!(collections = n, "snapshot written"),
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => tracing::error!(error = %e, "snapshot failed"),
                    Err(e) => tracing::error!(error = %e, "snapshot task failed"),
                }
            }
        });
    }

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!("shutting down");
    };
    serve(listener, state, shutdown, Duration::from_secs(10)).await;
    tokio::task::spawn_blocking(move || shard.close())
        .await?
        .context("final snapshot")?;
    tracing::info!("clean shutdown");
    Ok(())
}
