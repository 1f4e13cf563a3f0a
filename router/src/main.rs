//! The `vecgate` binary: parses flags, loads the config (or the embedded default), and runs the
//! API and admin listeners on pingora.

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server};
use pingora::services::background::background_service;
use pingora::services::listening::Service;
use vecgate::config::{self, Config};
use vecgate::gateway::Gateway;
use vecgate::metrics::RouterMetrics;
use vecgate::server::{AdminApp, ApiApp, Maintenance};
use vecgate::topology::Live;
use vecgate::watch::ConfigWatch;

/// Vecgate: a Qdrant-compatible query router and cache in front of shardd shards.
#[derive(Parser, Debug)]
#[command(version)]
struct Cli {
    /// The TOML config; without it, one built-in shard with data in ./data on 127.0.0.1:6333.
    #[arg(long)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Validates a config file; exits non-zero with every problem found.
    CheckConfig {
        /// The file to check.
        file: PathBuf,
    },
}

/// Turns a `:0` port into a free one, so the address can be printed before pingora binds it.
fn concrete(addr: &str) -> anyhow::Result<SocketAddr> {
    let addr: SocketAddr = addr
        .parse()
        .with_context(|| format!("`{addr}` is not an IP:port address"))?;
    if addr.port() != 0 {
        return Ok(addr);
    }
    Ok(TcpListener::bind(addr)
        .with_context(|| format!("binding {addr}"))?
        .local_addr()?)
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    shardd::logs::init();
    if let Some(Command::CheckConfig { file }) = cli.command {
        return match config::load(&file) {
            Ok(_) => {
                println!("{}: ok", file.display());
                Ok(())
            }
            Err(e) => {
                eprintln!("{e}");
                std::process::exit(1);
            }
        };
    }
    let config = match &cli.config {
        Some(path) => config::load(path)?.0,
        None => Config::embedded(),
    };
    let listen = concrete(&config.server.listen)?;
    let admin = concrete(&config.server.admin)?;

    let registry = prometheus::Registry::new();
    let engine_metrics = Arc::new(shardd::metrics::Metrics::new(&registry, "vecgate_builtin")?);
    let metrics = Arc::new(RouterMetrics::new(&registry)?);
    let live = Live::new(engine_metrics);
    let topology = live.build(config).map_err(anyhow::Error::msg)?;
    let gateway = Arc::new(Gateway::new(topology, live, metrics.clone()));

    let conf = ServerConf {
        threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(10),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut api = Service::new(
        "vecgate api".into(),
        ApiApp {
            gateway: gateway.clone(),
            metrics: metrics.clone(),
        },
    );
    api.add_tcp(&listen.to_string());
    let admin_app = AdminApp {
        gateway: gateway.clone(),
        registry,
        metrics: metrics.clone(),
        config_path: cli.config.clone(),
    };
    let mut admin_svc = Service::new("vecgate admin".into(), admin_app);
    admin_svc.add_tcp(&admin.to_string());
    server.add_service(api);
    server.add_service(admin_svc);
    server.add_service(background_service(
        "maintenance",
        Maintenance {
            gateway: gateway.clone(),
        },
    ));
    if let Some(path) = cli.config {
        server.add_service(background_service(
            "config watch",
            ConfigWatch {
                gateway: gateway.clone(),
                metrics,
                path,
            },
        ));
    }
    println!("listening on {listen}");
    println!("listening on {admin}");
    std::io::stdout().flush()?;
    server.run(RunArgs::default());
    for shard in gateway.live.builtin_shards() {
        shard
            .close()
            .context("final snapshot of a built-in shard")?;
    }
    tracing::info!("clean shutdown");
    Ok(())
}
