//! Logs and traces for both binaries: log lines on stderr (text, or JSON lines carrying the
//! trace id), spans sent to an OpenTelemetry collector over OTLP/HTTP when an endpoint is set,
//! and W3C trace context (`traceparent`) read from requests and passed on with calls.
//!
//! With no endpoint and text logs no layer wants a span, so the request path's spans cost a
//! disabled callsite check each.

use std::cell::Cell;
use std::io::{IsTerminal, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytes::Bytes;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use prometheus::{IntCounterVec, Opts, Registry};
use serde::{Deserialize, Serialize};
use tracing::{Instrument, Level, Metadata, Span, Subscriber};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::{filter_fn, DynFilterFn, EnvFilter, FilterExt};
use tracing_subscriber::fmt::{format::Writer, FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry as Spans};

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object a line: timestamp, level, target, message, fields, and the trace id of
    /// the request the line is about.
    Json,
}

/// The OTLP/HTTP encoding of exported spans.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
pub enum OtlpProtocol {
    /// Protobuf (OTLP's default).
    #[default]
    #[serde(rename = "http/protobuf")]
    #[value(name = "http/protobuf")]
    HttpProtobuf,
    /// JSON.
    #[serde(rename = "http/json")]
    #[value(name = "http/json")]
    HttpJson,
}

/// What a binary logs and traces.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The `service.name` spans carry.
    pub service: &'static str,
    /// The collector (`http://host:4318`, or a full URL ending in `/v1/traces`); `None` = no
    /// spans exported.
    pub otlp_endpoint: Option<String>,
    /// The export encoding.
    pub protocol: OtlpProtocol,
    /// The share of traces started here (no sampled parent) that are recorded; a caller's
    /// `traceparent` decides for the traces it started.
    pub sample_ratio: f64,
    /// Deadline of one export call.
    pub export_timeout: Duration,
    /// How log lines are written.
    pub log_format: LogFormat,
}

impl Settings {
    /// Text logs, no spans exported.
    pub fn logs_only(service: &'static str) -> Settings {
        Settings {
            service,
            otlp_endpoint: None,
            protocol: OtlpProtocol::default(),
            sample_ratio: 1.0,
            export_timeout: Duration::from_secs(5),
            log_format: LogFormat::Text,
        }
    }
}

/// The installed pipeline; [`Telemetry::shutdown`] sends the spans still queued.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Sends the spans still queued (within the export deadline) and stops exporting.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider {
            if let Err(e) = provider.shutdown() {
                tracing::warn!(error = %e, "sending the last spans failed");
            }
        }
    }
}

static EXPORTING: AtomicBool = AtomicBool::new(false);
static EXPORTS: OnceLock<IntCounterVec> = OnceLock::new();

/// Whether spans are exported (calls then carry `traceparent`).
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// Installs logging and, with an endpoint, span export. Call once, before anything logs.
pub fn init(settings: &Settings) -> Result<Telemetry, String> {
    let env = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = settings.log_format == LogFormat::Json;
    // Text lines do not show spans; JSON lines read the trace id from them.
    let fmt_filter = env.and(filter_fn(move |m| json || !m.is_span()));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let mut layers: Vec<Box<dyn Layer<Spans> + Send + Sync>> = vec![if json {
        fmt.event_format(JsonLines).with_filter(fmt_filter).boxed()
    } else {
        fmt.with_ansi(std::io::stderr().is_terminal())
            .with_filter(fmt_filter)
            .boxed()
    }];
    let provider = match &settings.otlp_endpoint {
        Some(endpoint) => {
            let provider = provider(settings, endpoint)?;
            let tracer = provider.tracer(settings.service);
            layers.push(
                tracing_opentelemetry::layer()
                    .with_tracer(tracer)
                    .with_location(false)
                    .with_threads(false)
                    .with_target(false)
                    .with_tracked_inactivity(false)
                    // Nothing here reads OpenTelemetry's own current context: entering a span
                    // (every poll of an instrumented future) need not set it.
                    .with_context_activation(false)
                    .with_filter(DynFilterFn::new(traced))
                    .boxed(),
            );
            Some(provider)
        }
        None => None,
    };
    tracing_subscriber::registry()
        .with(layers)
        .try_init()
        .map_err(|e| format!("installing the log subscriber: {e}"))?;
    RATIO.store(settings.sample_ratio.to_bits(), Ordering::Relaxed);
    EXPORTING.store(provider.is_some(), Ordering::Relaxed);
    Ok(Telemetry { provider })
}

fn provider(settings: &Settings, endpoint: &str) -> Result<SdkTracerProvider, String> {
    let url = traces_url(endpoint)?;
    let protocol = match settings.protocol {
        OtlpProtocol::HttpProtobuf => opentelemetry_otlp::Protocol::HttpBinary,
        OtlpProtocol::HttpJson => opentelemetry_otlp::Protocol::HttpJson,
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(Post {
            timeout: settings.export_timeout,
        })
        .with_endpoint(url)
        .with_protocol(protocol)
        .with_timeout(settings.export_timeout)
        .build()
        .map_err(|e| format!("the OTLP exporter: {e}"))?;
    // Whether a trace is recorded is decided as its request arrives (`request_span`): only
    // recorded requests make spans, so every span that reaches the SDK is kept.
    let sampler = Sampler::AlwaysOn;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(sampler)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(settings.service)
                .build(),
        )
        .build())
}

/// The URL spans are posted to: the endpoint as given when it names a path, else its
/// `/v1/traces` (as `OTEL_EXPORTER_OTLP_ENDPOINT` is read). Only `http://` is spoken.
pub fn traces_url(endpoint: &str) -> Result<String, String> {
    let uri: http::Uri = endpoint
        .parse()
        .map_err(|e| format!("`{endpoint}` is not a URL: {e}"))?;
    if uri.scheme_str() != Some("http") || uri.host().is_none() {
        return Err(format!(
            "`{endpoint}` must be http://host:port (OTLP over HTTP; a collector next to vecgate forwards over TLS)"
        ));
    }
    Ok(match uri.path() {
        "" | "/" => format!("{}/v1/traces", endpoint.trim_end_matches('/')),
        _ => endpoint.to_string(),
    })
}

/// Counts export calls by outcome as `{prefix}_trace_exports_total` in `registry`.
pub fn register(registry: &Registry, prefix: &str) -> prometheus::Result<()> {
    let counter = IntCounterVec::new(
        Opts::new(
            format!("{prefix}_trace_exports_total"),
            "Span export calls to the OTLP collector by outcome (ok, failed)",
        ),
        &["outcome"],
    )?;
    for outcome in ["ok", "failed"] {
        counter.with_label_values(&[outcome]);
    }
    registry.register(Box::new(counter.clone()))?;
    let _ = EXPORTS.set(counter);
    Ok(())
}

/// The OTLP exporter's HTTP client: one blocking POST a batch, on the SDK's own export thread
/// (which has no async runtime), bounded by `timeout` end to end.
#[derive(Debug)]
struct Post {
    timeout: Duration,
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for Post {
    async fn send_bytes(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, opentelemetry_http::HttpError> {
        let answered = post(&request, Instant::now() + self.timeout);
        let ok = matches!(&answered, Ok(r) if r.status().is_success());
        if let Some(c) = EXPORTS.get() {
            c.with_label_values(&[if ok { "ok" } else { "failed" }])
                .inc();
        }
        if !ok {
            let why = match &answered {
                Ok(r) => format!("status {}", r.status()),
                Err(e) => e.to_string(),
            };
            tracing::debug!(url = %request.uri(), %why, "span export failed");
        }
        answered
    }
}

/// Largest collector answer read.
const MAX_ANSWER: usize = 1 << 20;

fn post(
    request: &http::Request<Bytes>,
    deadline: Instant,
) -> Result<http::Response<Bytes>, opentelemetry_http::HttpError> {
    let uri = request.uri();
    let host = uri.host().ok_or("the collector URL has no host")?;
    let port = uri.port_u16().unwrap_or(80);
    let left = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or("the collector did not answer in time")
    };
    let addr = (host, port)
        .to_socket_addrs()?
        .next()
        .ok_or("the collector's host resolves to no address")?;
    let mut stream = TcpStream::connect_timeout(&addr, left()?)?;
    stream.set_write_timeout(Some(left()?))?;
    let body = request.body();
    let mut head = format!(
        "{} {} HTTP/1.1\r\nhost: {host}:{port}\r\ncontent-length: {}\r\nconnection: close\r\n",
        request.method(),
        uri.path_and_query().map_or("/", |p| p.as_str()),
        body.len()
    );
    for (name, value) in request.headers() {
        if let Ok(value) = value.to_str() {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    let mut answer = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        stream.set_read_timeout(Some(left()?))?;
        match stream.read(&mut buf)? {
            0 => break,
            n if answer.len() + n > MAX_ANSWER => {
                return Err("the collector's answer is too large".into())
            }
            n => answer.extend_from_slice(&buf[..n]),
        }
    }
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut parsed = httparse::Response::new(&mut headers);
    let httparse::Status::Complete(at) = parsed.parse(&answer)? else {
        return Err("the collector's answer ended in its head".into());
    };
    let chunked = parsed.headers.iter().any(|h| {
        h.name.eq_ignore_ascii_case("transfer-encoding")
            && String::from_utf8_lossy(h.value).contains("chunked")
    });
    // The body only tells of partially rejected batches; a chunked one is not decoded.
    let body = if chunked {
        Bytes::new()
    } else {
        Bytes::copy_from_slice(&answer[at..])
    };
    Ok(http::Response::builder()
        .status(parsed.code.unwrap_or(500))
        .body(body)?)
}

/// A request's `traceparent` and `tracestate` headers.
#[derive(Default)]
pub struct TraceHeaders<'a> {
    /// `traceparent`.
    pub traceparent: Option<&'a str>,
    /// `tracestate`.
    pub tracestate: Option<&'a str>,
}

impl Extractor for TraceHeaders<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            "traceparent" => self.traceparent,
            "tracestate" => self.tracestate,
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        vec!["traceparent", "tracestate"]
    }
}

/// Header lines of an outgoing request, as the propagator writes them.
#[derive(Default)]
struct HeadLines(String);

impl Injector for HeadLines {
    fn set(&mut self, key: &str, value: String) {
        if !value.is_empty() {
            self.0.push_str(&format!("{key}: {value}\r\n"));
        }
    }
}

/// A caller's `traceparent`: `00-<32 hex trace id>-<16 hex span id>-<2 hex flags>`.
#[derive(Debug, PartialEq)]
struct Parent<'a> {
    trace_id: &'a str,
    span_id: &'a str,
    sampled: bool,
}

/// A well-formed `traceparent` (any version's first four fields, ids not all zero), or `None`,
/// which starts a new trace as W3C Trace Context asks.
fn parent_of(traceparent: &str) -> Option<Parent<'_>> {
    let mut parts = traceparent.trim().split('-');
    let (version, trace_id, span_id, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| {
        s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit()) && s.bytes().any(|b| b != b'0')
    };
    let flags = u8::from_str_radix(flags, 16).ok()?;
    (version.len() == 2 && version != "ff" && hex(trace_id, 32) && hex(span_id, 16)).then_some(
        Parent {
            trace_id,
            span_id,
            sampled: flags & 1 == 1,
        },
    )
}

thread_local! {
    /// Whether the request span being made is recorded (read by the export filter).
    static ADMIT: Cell<bool> = const { Cell::new(false) };
}

tokio::task_local! {
    /// For a request that is not recorded, the `traceparent` its calls pass on (sampled flag
    /// off), so the shards do not record it either.
    static PASS_ON: Option<String>;
}

/// The share of traces started here that are recorded, as `f64` bits.
static RATIO: AtomicU64 = AtomicU64::new(0);

/// The export filter: a request span when the request is recorded, our other spans only inside
/// one, and warnings and errors inside one (as span events).
fn traced<S>(m: &Metadata<'_>, cx: &tracing_subscriber::layer::Context<'_, S>) -> bool
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    if !m.is_span() {
        return *m.level() <= Level::WARN && cx.lookup_current().is_some();
    }
    let ours = m.target().starts_with("vecgate") || m.target().starts_with("shardd");
    if !ours || *m.level() > Level::INFO {
        return false;
    }
    if m.name() == "request" {
        ADMIT.get()
    } else {
        cx.lookup_current().is_some()
    }
}

/// A request's span and its place in a trace.
pub struct Traced {
    /// The span (named `request`); its children are the request's work.
    pub span: Span,
    /// For a request that is not recorded, the `traceparent` lines its calls pass on.
    unsampled: Option<String>,
}

/// Starts the span of a request that came with `headers`, made by `make` (an `info_span!`
/// named `request`). With span export on, whether it is recorded is decided here, once: as
/// the caller's `traceparent` says, else by the sample ratio; a request that is not recorded
/// makes no spans (its calls pass the trace on, marked not sampled). The span is tagged with
/// the trace id for JSON log lines; without export, a caller's trace id still tags them.
pub fn request_span(headers: &TraceHeaders<'_>, make: impl FnOnce() -> Span) -> Traced {
    let parent = headers.traceparent.and_then(parent_of);
    let exporting = exporting();
    let sampled = exporting
        && match &parent {
            Some(p) => p.sampled,
            None => fastrand::f64() < f64::from_bits(RATIO.load(Ordering::Relaxed)),
        };
    ADMIT.set(sampled);
    let span = make();
    ADMIT.set(false);
    let mut unsampled = None;
    let trace_id = if sampled {
        if parent.is_some() {
            let _ = span.set_parent(TraceContextPropagator::new().extract(headers));
        }
        let cx = span.context();
        let sc = cx.span().span_context().clone();
        sc.is_valid().then(|| sc.trace_id().to_string())
    } else {
        let (trace_id, span_id) = match &parent {
            Some(p) => (
                p.trace_id.to_ascii_lowercase(),
                p.span_id.to_ascii_lowercase(),
            ),
            None if exporting => (
                format!("{:032x}", fastrand::u128(1..)),
                format!("{:016x}", fastrand::u64(1..)),
            ),
            None => return Traced { span, unsampled },
        };
        if exporting {
            let state = headers
                .tracestate
                .filter(|s| !s.is_empty())
                .map_or(String::new(), |s| format!("tracestate: {s}\r\n"));
            unsampled = Some(format!(
                "traceparent: 00-{trace_id}-{span_id}-00\r\n{state}"
            ));
        }
        Some(trace_id)
    };
    if let (Some(id), false) = (trace_id, span.is_disabled()) {
        span.with_subscriber(|(id_of_span, dispatch)| {
            if let Some(spans) = dispatch.downcast_ref::<Spans>() {
                if let Some(data) = spans.span(id_of_span) {
                    data.extensions_mut().insert(TraceId(id));
                }
            }
        });
    }
    Traced { span, unsampled }
}

impl Traced {
    /// No span: for health checks and scrapes, which are not traced.
    pub fn untraced() -> Traced {
        Traced {
            span: Span::none(),
            unsampled: None,
        }
    }

    /// Runs `work` (the request's handling) in the span; calls made in it carry the trace.
    pub async fn run<T>(&self, work: impl std::future::Future<Output = T>) -> T {
        PASS_ON
            .scope(self.unsampled.clone(), work.instrument(self.span.clone()))
            .await
    }

    /// Names the exported span once what the request did is known
    /// (`POST /collections/{c}/points/query`); the span is under way by then.
    pub fn rename(&self, name: impl FnOnce() -> String) {
        if exporting() && !self.span.is_disabled() && self.unsampled.is_none() {
            self.span.context().span().update_name(name());
        }
    }
}

/// The `traceparent` (and `tracestate`) header lines for a call made inside the current span,
/// `\r\n`-terminated; empty when spans are not exported or the call is outside a request.
pub fn outgoing() -> String {
    if !exporting() {
        return String::new();
    }
    if let Ok(Some(lines)) = PASS_ON.try_with(Clone::clone) {
        return lines;
    }
    let mut lines = HeadLines::default();
    TraceContextPropagator::new().inject_context(&Span::current().context(), &mut lines);
    lines.0
}

/// A span's trace id, kept for JSON log lines.
struct TraceId(String);

/// JSON log lines: `timestamp`, `level`, `target`, `message`, the event's fields, and
/// `span` and `trace_id` when the line is written inside a request.
struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let meta = event.metadata();
        let mut fields = JsonFields(Vec::new());
        event.record(&mut fields);
        let mut line: Vec<(&str, serde_json::Value)> = vec![
            (
                "timestamp",
                chrono::DateTime::<chrono::Utc>::from(std::time::SystemTime::now())
                    .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
                    .into(),
            ),
            ("level", meta.level().as_str().into()),
            ("target", meta.target().into()),
        ];
        // The message first, then the fields in the order the event names them.
        fields.0.sort_by_key(|(name, _)| *name != "message");
        line.extend(fields.0);
        if let Some(span) = ctx.lookup_current() {
            line.push(("span", span.name().into()));
            let trace_id = span
                .scope()
                .find_map(|s| s.extensions().get::<TraceId>().map(|t| t.0.clone()));
            if let Some(id) = trace_id {
                line.push(("trace_id", id.into()));
            }
        }
        let mut text = String::from("{");
        for (i, (key, value)) in line.iter().enumerate() {
            if i > 0 {
                text.push(',');
            }
            let key = serde_json::to_string(key).map_err(|_| std::fmt::Error)?;
            let value = serde_json::to_string(value).map_err(|_| std::fmt::Error)?;
            text.push_str(&key);
            text.push(':');
            text.push_str(&value);
        }
        text.push('}');
        writeln!(writer, "{text}")
    }
}

/// An event's fields as JSON values (numbers and booleans kept as such), in order.
struct JsonFields(Vec<(&'static str, serde_json::Value)>);

impl tracing::field::Visit for JsonFields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.push((field.name(), format!("{value:?}").into()));
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.push((field.name(), value.into()));
    }

    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        self.0.push((field.name(), value.into()));
    }

    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        self.0.push((field.name(), value.into()));
    }

    fn record_f64(&mut self, field: &tracing::field::Field, value: f64) {
        self.0.push((field.name(), value.into()));
    }

    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        self.0.push((field.name(), value.into()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endpoint_without_a_path_gets_the_traces_path() {
        assert_eq!(
            traces_url("http://127.0.0.1:4318").unwrap(),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(
            traces_url("http://c:4318/").unwrap(),
            "http://c:4318/v1/traces"
        );
        assert_eq!(
            traces_url("http://c:4318/otlp/v1/traces").unwrap(),
            "http://c:4318/otlp/v1/traces"
        );
        assert!(traces_url("https://c:4318").is_err());
        assert!(traces_url("c:4318").is_err());
    }

    #[test]
    fn a_traceparent_is_read_only_when_well_formed() {
        assert_eq!(
            parent_of("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"),
            Some(Parent {
                trace_id: "4BF92F3577B34DA6A3CE929D0E0E4736",
                span_id: "00f067aa0ba902b7",
                sampled: true
            })
        );
        assert!(
            !parent_of("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00")
                .unwrap()
                .sampled
        );
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-xyz-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "garbage",
        ] {
            assert_eq!(parent_of(bad), None, "{bad}");
        }
    }
}
