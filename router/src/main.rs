//! The `vecgate` binary: parses flags, loads the config (or the embedded default), opens the
//! built-in shards, binds both listeners, serves until SIGTERM or SIGINT, then drains.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio::signal::unix::{signal, SignalKind};
use vecgate::cache::{warm, Cache, CacheMetrics};
use vecgate::config::{self, Config};
use vecgate::coordination::Etcd;
use vecgate::embed::{EmbedMetrics, Embedders};
use vecgate::gateway::Gateway;
use vecgate::ingest::IngestArgs;
use vecgate::listener::{bind, serve, Http, InFlight, Workers, DRAIN};
use vecgate::metrics::RouterMetrics;
use vecgate::server::{AdminApp, ApiApp};
use vecgate::topology::{Live, ShardKind};
use vecgate::{maintenance, reload};

#[cfg(all(feature = "mimalloc", feature = "jemalloc"))]
compile_error!("features `mimalloc` and `jemalloc` each pick the allocator: enable one");

#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Vecgate: a Qdrant-compatible query router and cache in front of shardd shards.
#[derive(Parser, Debug)]
#[command(version)]
struct Cli {
    /// The TOML config; without it, one built-in shard with data in ./data on 127.0.0.1:6333.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Validates a config file; exits 1 listing every problem, one a line (file:line: field: what).
    CheckConfig {
        /// The file to check.
        file: PathBuf,
    },
    /// Reads documents (txt, md, html, jsonl), chunks, embeds and upserts them through a
    /// running router; a rerun goes on where an interrupted one stopped.
    Ingest(IngestArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::CheckConfig { file }) = cli.command {
        return match config::load(&file) {
            Ok(_) => {
                println!("{}: ok", file.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        };
    }
    if let Some(Command::Ingest(args)) = &cli.command {
        return ingest(cli.config.as_deref(), args);
    }
    let config = match &cli.config {
        Some(path) => config::load(path),
        None => Ok(Config::embedded()),
    };
    let config = match config {
        Ok(c) => c,
        Err(e) => {
            eprintln!("vecgate: {e}");
            return ExitCode::FAILURE;
        }
    };
    let telemetry = match shardd::telemetry::init(&config.telemetry.settings()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("vecgate: [telemetry]: {e}");
            return ExitCode::FAILURE;
        }
    };
    let ran = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(run(config, cli.config)));
    telemetry.shutdown();
    match ran {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vecgate: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `vecgate ingest`: exits 0 when every document was written, 1 otherwise (130 after Ctrl-C).
fn ingest(config: Option<&std::path::Path>, args: &IngestArgs) -> ExitCode {
    let config = match config {
        Some(path) => config::load(path),
        None => Ok(Config::embedded()),
    };
    let ran = config.map_err(anyhow::Error::msg).and_then(|config| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(vecgate::ingest::run(&config, args))
    });
    match ran {
        Ok(s) if s.interrupted => ExitCode::from(130),
        Ok(s) if s.failed > 0 => ExitCode::FAILURE,
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vecgate ingest: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config, config_path: Option<PathBuf>) -> anyhow::Result<()> {
    let registry = prometheus::Registry::new();
    let metrics = Arc::new(RouterMetrics::new(&registry)?);
    shardd::telemetry::register(&registry, "vecgate")?;
    let live = Live::new(registry.clone());
    let etcd = config.cluster.as_ref().map(Etcd::new);
    if let Some(etcd) = &etcd {
        let placed = etcd
            .placement(&config.shards)
            .await
            .map_err(|e| anyhow::anyhow!("[cluster]: reading the shared placement: {e}"))?;
        live.set_shared_placement(placed);
    }
    let (api_addr, admin_addr) = (config.server.listen.clone(), config.server.admin.clone());
    let (live, topology) = tokio::task::spawn_blocking(move || {
        let topology = live.build(config);
        (live, topology)
    })
    .await?;
    let topology = topology.map_err(anyhow::Error::msg)?;
    let api_listener = bind(&api_addr, "server.listen")?;
    let admin_listener = bind(&admin_addr, "server.admin")?;
    let (api_at, admin_at) = (api_listener.local_addr()?, admin_listener.local_addr()?);

    let builtin = topology
        .shards
        .iter()
        .filter(|s| matches!(s.kind, ShardKind::Builtin(_)))
        .count();
    let mode = if builtin == topology.shards.len() {
        "embedded"
    } else {
        "cluster"
    };
    let shards: Vec<&str> = topology.shards.iter().map(|s| s.name.as_str()).collect();
    tracing::info!(
        mode,
        shards = %shards.join(","),
        builtin,
        data_dir = %topology.config.server.data_dir.display(),
        api = %api_at,
        admin = %admin_at,
        config = %config_path.as_deref().map_or("(embedded default)".into(), |p| p.display().to_string()),
        "vecgate running"
    );
    let cache = match topology.config.cache.clone() {
        Some(c) => {
            tracing::info!(
                l1_max_bytes = c.l1_max_bytes,
                ttl_s = c.ttl_s,
                redis = %c.redis_url.as_deref().map_or("(none)".into(), config::redact_url),
                "result cache on"
            );
            Some(Cache::new(
                c,
                Arc::new(CacheMetrics::new(&registry)?),
                &topology.config.server.data_dir,
            )?)
        }
        None => None,
    };
    let embedders = Embedders::new(Arc::new(EmbedMetrics::new(&registry)?));
    let gateway = Arc::new(Gateway::new(
        topology,
        live,
        metrics.clone(),
        cache,
        etcd,
        embedders,
    ));
    let in_flight = Arc::new(InFlight::default());
    let (stop, shutdown) = tokio::sync::watch::channel(false);

    // The client API: one worker thread per core, each accepting and serving its own
    // connections (see `listener::Workers`).
    let api = Http {
        handler: ApiApp {
            gateway: gateway.clone(),
            metrics: metrics.clone(),
        },
        in_flight: in_flight.clone(),
    };
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let api_workers = Workers::start(api_listener, api, workers, shutdown.clone())?;
    let admin = Http {
        handler: AdminApp {
            gateway: gateway.clone(),
            registry,
            metrics: metrics.clone(),
            config_path: config_path.clone(),
        },
        in_flight: in_flight.clone(),
    };
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(serve(admin_listener, admin, shutdown.clone()));
    tokio::spawn(maintenance::run(gateway.clone(), shutdown.clone()));
    if let Some(path) = config_path {
        tokio::spawn(reload::watch(
            gateway.clone(),
            metrics,
            path,
            shutdown.clone(),
        ));
    }
    println!("listening on {api_at}");
    println!("listening on {admin_at}");
    std::io::stdout().flush()?;
    tokio::spawn(warm::warm(gateway.clone(), "start"));
    tokio::spawn(warm::keep_counts(gateway.clone(), shutdown.clone()));

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: draining"),
        _ = int.recv() => tracing::info!("SIGINT: draining"),
        Some(ended) = tasks.join_next() => {
            ended.context("admin listener task")?.context("admin listener")?;
        }
        _ = api_workers.ended() => anyhow::bail!("an API worker thread stopped unexpectedly"),
    }
    let _ = stop.send(true);
    if !in_flight.drained(DRAIN).await {
        tracing::warn!("requests still in flight after {DRAIN:?}; closing anyway");
    }
    api_workers.join().await?;
    let shards = gateway.live.builtin_shards();
    tokio::task::spawn_blocking(move || {
        shards
            .iter()
            .try_for_each(|s| s.close())
            .context("final snapshot of a built-in shard")
    })
    .await??;
    if let Some(cache) = &gateway.cache {
        cache.close().await;
    }
    tracing::info!("clean shutdown");
    Ok(())
}
