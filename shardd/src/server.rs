//! The shardd HTTP server: hyper over the API, plus `/healthz`, `/readyz` and `/metrics`.
//!
//! The listener is up before recovery finishes: health answers at once, readiness and the API
//! answer 503 until the shard is open. Reads run in place on the connection's worker (a search
//! is short CPU work; handing it to another thread measured 1.4x slower), writes on the
//! blocking pool, so an fsync never stalls the connection tasks.

use std::convert::Infallible;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder,
};
use tokio::net::TcpListener;

use crate::api::{self, response::error_body};
use crate::shard::Shard;
use crate::telemetry::{self, TraceHeaders, Traced};

/// How long a client may take to send its request headers, and then its body.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Everything a request handler needs.
pub struct AppState {
    /// The shard, once recovered.
    pub shard: OnceLock<Arc<Shard>>,
    /// Registry behind `/metrics`.
    pub registry: Registry,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    requests: IntCounterVec,
    latency: HistogramVec,
}

impl AppState {
    /// State for a server whose shard is not open yet; HTTP metrics go into `registry`.
    pub fn new(registry: Registry, max_body_bytes: usize) -> prometheus::Result<Self> {
        let requests = IntCounterVec::new(
            Opts::new(
                "shardd_http_requests_total",
                "HTTP requests by route, method and status",
            ),
            &["route", "method", "status"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "shardd_http_request_duration_seconds",
                "HTTP request latency by route",
            )
            .buckets(crate::metrics::LATENCY_BUCKETS.to_vec()),
            &["route"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        Ok(AppState {
            shard: OnceLock::new(),
            registry,
            max_body_bytes,
            requests,
            latency,
        })
    }
}

type Body = Full<Bytes>;

fn reply(status: StatusCode, content_type: &'static str, body: Vec<u8>) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    r
}

fn json_error(status: StatusCode, message: &str) -> Response<Body> {
    reply(
        status,
        "application/json",
        error_body(message, Instant::now()),
    )
}

async fn handle(
    state: Arc<AppState>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let started = Instant::now();
    let method = req.method().clone();
    let header = |name| req.headers().get(name).and_then(|v| v.to_str().ok());
    let headers = TraceHeaders {
        traceparent: header("traceparent"),
        tracestate: header("tracestate"),
    };
    let probe = matches!(
        req.uri().path(),
        "/healthz" | "/livez" | "/readyz" | "/metrics"
    );
    let traced = if probe {
        Traced::untraced()
    } else {
        telemetry::request_span(&headers, || {
            tracing::info_span!(
                "request",
                otel.kind = "server",
                http.request.method = %method,
                url.path = req.uri().path(),
                http.route = tracing::field::Empty,
                http.response.status_code = tracing::field::Empty,
            )
        })
    };
    let (route, resp) = traced.run(route(&state, req)).await;
    let status = resp.status();
    traced.rename(|| format!("{method} {route}"));
    let span = &traced.span;
    if !span.is_disabled() {
        span.record("http.route", route);
        span.record("http.response.status_code", status.as_u16());
    }
    state
        .requests
        .with_label_values(&[route, method.as_str(), status.as_str()])
        .inc();
    state
        .latency
        .with_label_values(&[route])
        .observe(started.elapsed().as_secs_f64());
    Ok(resp)
}

async fn route(state: &Arc<AppState>, req: Request<Incoming>) -> (&'static str, Response<Body>) {
    let text = "text/plain; charset=utf-8";
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz" | "/livez") => {
            return (
                "/healthz",
                reply(StatusCode::OK, text, b"healthz check passed".to_vec()),
            )
        }
        (&Method::GET, "/readyz") => {
            return match state.shard.get() {
                Some(shard) => (
                    "/readyz",
                    reply(
                        StatusCode::OK,
                        "application/json",
                        serde_json::to_vec(
                            &serde_json::json!({"status": "ready", "identity": shard.identity()}),
                        )
                        .unwrap_or_default(),
                    ),
                ),
                None => (
                    "/readyz",
                    reply(
                        StatusCode::SERVICE_UNAVAILABLE,
                        text,
                        b"recovering".to_vec(),
                    ),
                ),
            }
        }
        (&Method::GET, "/metrics") => {
            let mut buf = Vec::new();
            let encoded = TextEncoder::new().encode(&state.registry.gather(), &mut buf);
            return match encoded {
                Ok(()) => (
                    "/metrics",
                    reply(StatusCode::OK, "text/plain; version=0.0.4", buf),
                ),
                Err(e) => (
                    "/metrics",
                    json_error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
                ),
            };
        }
        (_, "/healthz" | "/livez" | "/readyz" | "/metrics") => {
            let mut resp = json_error(
                StatusCode::METHOD_NOT_ALLOWED,
                &format!(
                    "Method not allowed: {} takes GET, not {}",
                    req.uri().path(),
                    req.method()
                ),
            );
            resp.headers_mut()
                .insert(header::ALLOW, header::HeaderValue::from_static("GET"));
            return ("unmatched", resp);
        }
        _ => {}
    }
    let Some(shard) = state.shard.get().cloned() else {
        return (
            "recovering",
            json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "Service unavailable: shard is recovering its data",
            ),
        );
    };
    let read = api::Endpoint::find(req.method(), req.uri().path()).is_ok_and(|(e, _)| e.is_read());
    let (parts, body) = req.into_parts();
    let limit = state.max_body_bytes;
    let too_large = || {
        json_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("Payload too large: request body exceeds {limit} bytes"),
        )
    };
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return ("too_large", too_large());
    }
    let body = match tokio::time::timeout(READ_TIMEOUT, Limited::new(body, limit).collect()).await {
        Ok(Ok(b)) => b.to_bytes(),
        Ok(Err(e))
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            return ("too_large", too_large())
        }
        Ok(Err(e)) => {
            return (
                "bad_body",
                json_error(
                    StatusCode::BAD_REQUEST,
                    &format!("Wrong input: reading body: {e}"),
                ),
            )
        }
        Err(_) => {
            return (
                "bad_body",
                json_error(
                    StatusCode::REQUEST_TIMEOUT,
                    "request body not received in time",
                ),
            )
        }
    };
    let run = move || {
        let req = api::Request {
            method: &parts.method,
            path: parts.uri.path(),
            query: parts.uri.query(),
            body: &body,
        };
        api::handle(&shard, &req)
    };
    let answered = if read {
        Ok(run())
    } else {
        tokio::task::spawn_blocking(run).await
    };
    match answered {
        Ok(r) => {
            let mut resp = reply(r.status, "application/json", r.body);
            if let Some(allow) = r.allow.and_then(|a| header::HeaderValue::from_str(&a).ok()) {
                resp.headers_mut().insert(header::ALLOW, allow);
            }
            (r.route, resp)
        }
        Err(e) => (
            "panic",
            json_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("internal error: {e}"),
            ),
        ),
    }
}

/// Serves connections from `listener` until `shutdown` resolves, then waits up to `drain` for
/// requests in flight to finish.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl std::future::Future<Output = ()>,
    drain: Duration,
) {
    let graceful = GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(READ_TIMEOUT)
        .keep_alive(true);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let state = state.clone();
                let conn = builder.serve_connection(TokioIo::new(stream), service_fn(move |req| handle(state.clone(), req)));
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("requests still in flight after {drain:?}; closing anyway");
    }
}
