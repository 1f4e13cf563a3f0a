//! The two HTTP apps: the client API (Qdrant-compatible, through the gateway) and the admin
//! listener (`/metrics`, `/admin/*`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use http::{Method, StatusCode};
use pingora::protocols::http::ServerSession;
use prometheus::{Encoder, Registry, TextEncoder};
use serde_json::json;
use shardd::api::response::error_body;
use shardd::telemetry::{self, TraceHeaders};

use crate::gateway::{Call, Gateway};
use crate::listener::{Answer, Handler};
use crate::metrics::RouterMetrics;
use crate::reload::{reload, ReloadOutcome};
use crate::topology::ShardKind;

/// The admin listener's paths and the method each takes.
const ADMIN_ROUTES: &[(&str, &str)] = &[
    ("/metrics", "GET"),
    ("/healthz", "GET"),
    ("/admin/config", "GET"),
    ("/admin/cluster", "GET"),
    ("/admin/reload", "POST"),
    ("/admin/cache/purge", "POST"),
    ("/admin/repair", "POST"),
];

/// Largest accepted request body.
pub const MAX_BODY_BYTES: usize = 32 << 20;

fn json_error(status: u16, msg: &str) -> Answer {
    Answer::json(status, error_body(msg, Instant::now()))
}

/// Reads the whole request body, refusing more than [`MAX_BODY_BYTES`]. A body that arrives
/// in one piece (most do) is kept as it came, uncopied.
async fn read_body(session: &mut ServerSession) -> Result<Bytes, Answer> {
    let mut first: Option<Bytes> = None;
    let mut rest = Vec::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                let held = first.as_ref().map_or(0, Bytes::len) + rest.len();
                if held + chunk.len() > MAX_BODY_BYTES {
                    return Err(json_error(
                        413,
                        &format!("Payload too large: request body exceeds {MAX_BODY_BYTES} bytes"),
                    ));
                }
                match &first {
                    None => first = Some(chunk),
                    Some(f) => {
                        if rest.is_empty() {
                            rest.extend_from_slice(f);
                        }
                        rest.extend_from_slice(&chunk);
                    }
                }
            }
            Ok(None) if rest.is_empty() => return Ok(first.unwrap_or_default()),
            Ok(None) => return Ok(Bytes::from(rest)),
            Err(e) => return Err(json_error(400, &format!("Wrong input: reading body: {e}"))),
        }
    }
}

/// The client API listener.
#[derive(Clone)]
pub struct ApiApp {
    /// The router.
    pub gateway: Arc<Gateway>,
    /// Metrics.
    pub metrics: Arc<RouterMetrics>,
}

#[async_trait]
impl Handler for ApiApp {
    async fn handle(&self, session: &mut ServerSession) -> Answer {
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
            return Answer::text(200, "ok");
        }
        let token =
            match session.get_header("x-vecgate-version").map(|v| v.to_str()) {
                None => None,
                Some(Ok(v)) if v.trim().parse::<u64>().is_ok() => v.trim().parse().ok(),
                Some(_) => return json_error(
                    400,
                    "Wrong input: x-vecgate-version must be the number a write was answered with",
                ),
            };
        let body = match read_body(session).await {
            Ok(b) => b,
            Err(answer) => return answer,
        };
        let header = |name| session.get_header(name).and_then(|v| v.to_str().ok());
        let headers = TraceHeaders {
            traceparent: header("traceparent"),
            tracestate: header("tracestate"),
        };
        let traced = telemetry::request_span(&headers, || {
            tracing::info_span!(
                "request",
                otel.kind = "server",
                otel.status_code = tracing::field::Empty,
                http.request.method = %method,
                url.path = path.as_str(),
                http.route = tracing::field::Empty,
                http.response.status_code = tracing::field::Empty,
                vecgate.cache = tracing::field::Empty,
                vecgate.shards = tracing::field::Empty,
            )
        });
        let reply = traced
            .run(self.gateway.handle(Call {
                method: method.clone(),
                path,
                query,
                body,
                region,
                token,
                warming: false,
            }))
            .await;
        let status =
            StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let cache = reply.cache.map(|o| o.as_str());
        let shards = reply
            .shards
            .map(|(answered, total)| format!("{answered}/{total}"));
        traced.rename(|| format!("{method} {}", reply.route));
        let span = &traced.span;
        if !span.is_disabled() {
            span.record("http.route", reply.route);
            span.record("http.response.status_code", reply.status);
            if reply.status >= 500 {
                span.record("otel.status_code", "ERROR");
            }
            if let Some(cache) = cache {
                span.record("vecgate.cache", cache);
            }
            if let Some(shards) = &shards {
                span.record("vecgate.shards", shards.as_str());
            }
        }
        if self.gateway.topology().config.telemetry.access_log {
            let _in = span.enter();
            tracing::info!(
                target: "vecgate::access",
                method = %method,
                route = reply.route,
                status = reply.status,
                ms = started.elapsed().as_secs_f64() * 1000.0,
                cache,
                shards,
                "answered"
            );
        }
        self.metrics
            .requests
            .with_label_values(&[reply.route, method.as_str(), status.as_str()])
            .inc();
        self.metrics
            .latency
            .with_label_values(&[reply.route])
            .observe(started.elapsed().as_secs_f64());
        if reply.search {
            self.metrics
                .search_latency
                .observe(started.elapsed().as_secs_f64());
        }
        if !reply.partial.is_empty() {
            self.metrics.partial.with_label_values(&[reply.route]).inc();
        }
        let mut answer = Answer::json(reply.status, reply.body);
        if !reply.partial.is_empty() {
            answer
                .headers
                .push(("x-vecgate-partial", reply.partial.join(",")));
        }
        if let Some(allow) = reply.allow {
            answer.headers.push(("allow", allow));
        }
        if let Some(v) = reply.version {
            answer.headers.push(("x-vecgate-version", v.to_string()));
        }
        if let Some(shards) = shards {
            answer.headers.push(("x-vecgate-shards", shards));
        }
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let t = reply.timing;
        answer.headers.push((
            "server-timing",
            format!(
                "cache;dur={:.3}, embed;dur={:.3}, scatter;dur={:.3}, merge;dur={:.3}, total;dur={:.3}",
                ms(t.cache),
                ms(t.embed),
                ms(t.scatter),
                ms(t.merge),
                ms(started.elapsed())
            ),
        ));
        if let Some(cache) = cache {
            answer.headers.push(("x-vecgate-cache", cache.to_string()));
        }
        answer
    }
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
impl Handler for AdminApp {
    async fn handle(&self, session: &mut ServerSession) -> Answer {
        let header = session.req_header();
        let (method, path) = (header.method.clone(), header.uri.path().to_string());
        let ok =
            |v: serde_json::Value| Answer::json(200, serde_json::to_vec(&v).unwrap_or_default());
        match (method, path.as_str()) {
            (Method::GET, "/metrics") => {
                if let Some(cache) = &self.gateway.cache {
                    cache.measure().await;
                }
                self.gateway.measure();
                let mut buf = Vec::new();
                match TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
                    Ok(()) => Answer {
                        status: 200,
                        content_type: "text/plain; version=0.0.4",
                        body: buf.into(),
                        headers: Vec::new(),
                    },
                    Err(e) => json_error(500, &e.to_string()),
                }
            }
            (Method::GET, "/healthz") => Answer::text(200, "ok"),
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
                    ReloadOutcome::Applied => ok(json!({"status": "ok", "reloaded": p})),
                    ReloadOutcome::Rejected(e) => json_error(400, &e.to_string()),
                    ReloadOutcome::Failed(e) => json_error(409, &e),
                },
            },
            (Method::POST, "/admin/repair") => {
                let report = crate::repair::repair(&self.gateway, "admin").await;
                let failed = report.iter().any(|p| !p.errors.is_empty());
                ok(json!({"status": if failed { "incomplete" } else { "ok" }, "shards": report}))
            }
            (Method::POST, "/admin/cache/purge") => {
                let body = match read_body(session).await {
                    Ok(b) => b,
                    Err(answer) => return answer,
                };
                purge(&self.gateway, &body).await
            }
            (m, p) => match ADMIN_ROUTES.iter().find(|(path, _)| *path == p) {
                Some((_, allowed)) => {
                    let mut answer = json_error(
                        405,
                        &format!("Method not allowed: {p} takes {allowed}, not {m}"),
                    );
                    answer.headers.push(("allow", allowed.to_string()));
                    answer
                }
                None => json_error(404, &format!("Not found: no admin route {p}")),
            },
        }
    }
}

/// `POST /admin/cache/purge`: `{"collection": C}` drops C's cached answers, an empty body
/// all of them, here and on the routers sharing this one's Redis.
async fn purge(gateway: &Gateway, body: &[u8]) -> Answer {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Purge {
        collection: Option<String>,
    }
    let Some(cache) = &gateway.cache else {
        return json_error(409, "no result cache is configured (no [cache] section)");
    };
    let asked = if body.iter().all(u8::is_ascii_whitespace) {
        Purge { collection: None }
    } else {
        match serde_json::from_slice::<Purge>(body) {
            Ok(p) => p,
            Err(e) => {
                return json_error(
                    400,
                    &format!("Wrong input: expected {{\"collection\": NAME}} or no body: {e}"),
                )
            }
        }
    };
    cache.purge(asked.collection.as_deref()).await;
    let purged = asked.collection.map_or(json!("all"), |c| json!(c));
    Answer::json(
        200,
        serde_json::to_vec(&json!({"status": "ok", "purged": purged})).unwrap_or_default(),
    )
}

/// `/admin/cluster`: each shard (draining ones too, while a move runs) with its replicas'
/// state, health, in-flight requests, ejections and hints, and the move in progress.
fn cluster(gateway: &Gateway) -> serde_json::Value {
    let topo = gateway.topology();
    let serving = topo.serving().len();
    let shards: Vec<_> = topo
        .shards
        .iter()
        .enumerate()
        .map(|(i, s)| match &s.kind {
            ShardKind::Builtin(_) => {
                json!({"name": s.name, "builtin": true, "draining": i >= serving, "replicas": []})
            }
            ShardKind::Remote(rs) => json!({
                "name": s.name,
                "builtin": false,
                "draining": i >= serving,
                "replicas": rs.iter().map(|r| json!({
                    "url": r.state.url,
                    "region": r.region,
                    "weight": r.weight,
                    "healthy": r.state.healthy(),
                    "ejected": r.state.ejected(),
                    "in_flight": r.state.in_flight(),
                    "ejections": r.state.ejections(),
                    "state": r.state.role().as_str(),
                    "lagging": r.state.lagging(),
                    "pending_hints": r.state.hints().map_or(0, |h| h.pending()),
                    "join": r.state.joining().then(|| {
                        let (done, total) = r.state.join_progress();
                        json!({"buckets_done": done, "buckets_total": total})
                    }),
                })).collect::<Vec<_>>(),
            }),
        })
        .collect();
    let moving = topo.moving.as_ref().map(|m| {
        let p = &m.progress;
        json!({
            "from": p.from,
            "to": p.to,
            "phase": p.phase().as_str(),
            "moved": p.moved.load(std::sync::atomic::Ordering::SeqCst),
        })
    });
    let epoch = gateway
        .etcd
        .as_ref()
        .map(|e| e.epoch.load(std::sync::atomic::Ordering::SeqCst));
    json!({"region": topo.config.server.region, "shards": shards, "move": moving, "epoch": epoch})
}
