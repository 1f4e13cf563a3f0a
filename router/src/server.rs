//! The pingora services: the client API, the admin listener, and the background maintenance
//! (active health checks, hint replay, periodic snapshots of built-in shards).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use http::{Method, Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use prometheus::{Encoder, Registry, TextEncoder};
use serde_json::json;
use shardd::api::error_body;

use crate::config;
use crate::gateway::{Call, Gateway};
use crate::metrics::RouterMetrics;
use crate::topology::ShardKind;

/// Largest accepted request body.
pub const MAX_BODY_BYTES: usize = 32 << 20;

fn respond(
    status: u16,
    content_type: &str,
    body: Vec<u8>,
    extra: &[(&str, String)],
) -> Response<Vec<u8>> {
    let mut b = Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header(http::header::CONTENT_TYPE, content_type)
        .header(http::header::CONTENT_LENGTH, body.len());
    for (k, v) in extra {
        b = b.header(*k, v.as_str());
    }
    b.body(body).unwrap_or_else(|_| Response::new(Vec::new()))
}

fn json_error(status: u16, msg: &str) -> Response<Vec<u8>> {
    respond(
        status,
        "application/json",
        error_body(msg, Instant::now()),
        &[],
    )
}

/// Reads the whole request body, refusing more than [`MAX_BODY_BYTES`].
async fn read_body(session: &mut ServerSession) -> Result<Bytes, Response<Vec<u8>>> {
    let mut body = Vec::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_BODY_BYTES {
                    return Err(json_error(
                        413,
                        &format!("Payload too large: request body exceeds {MAX_BODY_BYTES} bytes"),
                    ));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(Bytes::from(body)),
            Err(e) => return Err(json_error(400, &format!("Wrong input: reading body: {e}"))),
        }
    }
}

/// The client API listener.
pub struct ApiApp {
    /// The router.
    pub gateway: Arc<Gateway>,
    /// Metrics.
    pub metrics: Arc<RouterMetrics>,
}

#[async_trait]
impl ServeHttp for ApiApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let started = Instant::now();
        let header = session.req_header();
        let method = header.method.clone();
        let path = header.uri.path().to_string();
        let query = header.uri.query().map(str::to_string);
        let region = session
            .get_header("x-vecgate-region")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        if method == Method::GET && matches!(path.as_str(), "/healthz" | "/livez" | "/readyz") {
            return respond(200, "text/plain", b"ok".to_vec(), &[]);
        }
        let body = match read_body(session).await {
            Ok(b) => b,
            Err(resp) => return resp,
        };
        let reply = self
            .gateway
            .handle(Call {
                method: method.clone(),
                path,
                query,
                body,
                region,
            })
            .await;
        self.metrics
            .requests
            .with_label_values(&[reply.route, method.as_str(), &reply.status.to_string()])
            .inc();
        self.metrics
            .latency
            .with_label_values(&[reply.route])
            .observe(started.elapsed().as_secs_f64());
        let extra: Vec<(&str, String)> = if reply.partial.is_empty() {
            Vec::new()
        } else {
            vec![("x-vecgate-partial", reply.partial.join(","))]
        };
        respond(reply.status, "application/json", reply.body, &extra)
    }
}

/// Loads, validates and swaps in a config file; the running config stays on any problem.
pub async fn reload(
    gateway: &Arc<Gateway>,
    metrics: &RouterMetrics,
    path: &Path,
) -> Result<(), String> {
    let loaded = config::load(path).map_err(|e| e.to_string());
    let result = match loaded {
        Ok((config, _)) => {
            let gw = gateway.clone();
            match tokio::task::spawn_blocking(move || gw.build(config)).await {
                Ok(Ok(topology)) => {
                    gateway.swap(topology);
                    Ok(())
                }
                Ok(Err(e)) => Err(format!("{}: {e}", path.display())),
                Err(e) => Err(format!("reload task failed: {e}")),
            }
        }
        Err(e) => Err(e),
    };
    match &result {
        Ok(()) => {
            metrics.reloads.with_label_values(&["ok"]).inc();
            tracing::info!(file = %path.display(), "config reloaded");
        }
        Err(e) => {
            metrics.reloads.with_label_values(&["invalid"]).inc();
            tracing::error!(error = %e, "config rejected; the running config stays");
        }
    }
    result
}

/// The admin listener: `/metrics` and `/admin/*`.
pub struct AdminApp {
    /// The router.
    pub gateway: Arc<Gateway>,
    /// Where metrics are gathered from.
    pub registry: Registry,
    /// Metrics.
    pub metrics: Arc<RouterMetrics>,
    /// The config file, when running from one.
    pub config_path: Option<PathBuf>,
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let header = session.req_header();
        let (method, path) = (header.method.clone(), header.uri.path().to_string());
        let ok = |v: serde_json::Value| {
            respond(
                200,
                "application/json",
                serde_json::to_vec(&v).unwrap_or_default(),
                &[],
            )
        };
        match (method, path.as_str()) {
            (Method::GET, "/metrics") => {
                let mut buf = Vec::new();
                match TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
                    Ok(()) => respond(200, "text/plain; version=0.0.4", buf, &[]),
                    Err(e) => json_error(500, &e.to_string()),
                }
            }
            (Method::GET, "/healthz") => respond(200, "text/plain", b"ok".to_vec(), &[]),
            (Method::GET, "/admin/config") => ok(serde_json::to_value(
                self.gateway.topology().config.redacted(),
            )
            .unwrap_or_default()),
            (Method::GET, "/admin/cluster") => ok(cluster(&self.gateway)),
            (Method::POST, "/admin/reload") => match &self.config_path {
                None => json_error(
                    409,
                    "running the embedded default (no --config file) has nothing to reload",
                ),
                Some(p) => match reload(&self.gateway, &self.metrics, p).await {
                    Ok(()) => ok(json!({"status": "ok", "reloaded": p})),
                    Err(e) => json_error(400, &e),
                },
            },
            (_, p) => json_error(404, &format!("no admin route {p}")),
        }
    }
}

/// `/admin/cluster`: each shard's replicas with health, in-flight requests and ejections.
fn cluster(gateway: &Gateway) -> serde_json::Value {
    let topo = gateway.topology();
    let shards: Vec<_> = topo
        .shards
        .iter()
        .map(|s| match &s.kind {
            ShardKind::Builtin(_) => json!({"name": s.name, "builtin": true, "replicas": []}),
            ShardKind::Remote(rs) => json!({
                "name": s.name,
                "builtin": false,
                "replicas": rs.iter().map(|r| json!({
                    "url": r.state.url,
                    "region": r.region,
                    "weight": r.weight,
                    "healthy": r.state.healthy(),
                    "ejected": r.state.ejected(),
                    "in_flight": r.state.in_flight(),
                    "ejections": r.state.ejections(),
                    "lagging": r.state.lagging(),
                    "pending_hints": r.state.hints().map_or(0, |h| h.pending()),
                })).collect::<Vec<_>>(),
            }),
        })
        .collect();
    json!({"region": topo.config.server.region, "shards": shards})
}

/// Active health checks and hint replay every second, and snapshots of built-in shards every
/// minute (the final snapshot at shutdown is `main`'s, once the listeners have drained).
pub struct Maintenance {
    /// The router.
    pub gateway: Arc<Gateway>,
}

#[async_trait]
impl BackgroundService for Maintenance {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut seconds = 0u64;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => break,
            }
            self.gateway.probe_replicas().await;
            self.gateway.replay_hints().await;
            seconds += 1;
            if seconds.is_multiple_of(60) {
                self.snapshot().await;
            }
        }
    }
}

impl Maintenance {
    async fn snapshot(&self) {
        for shard in self.gateway.live.builtin_shards() {
            match tokio::task::spawn_blocking(move || shard.close()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "snapshot of a built-in shard failed"),
                Err(e) => tracing::error!(error = %e, "snapshot task failed"),
            }
        }
    }
}
