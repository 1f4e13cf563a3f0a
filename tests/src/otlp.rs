//! An OpenTelemetry collector for tests: an OTLP/HTTP receiver on 127.0.0.1 that takes span
//! batches (protobuf or JSON) posted to `/v1/traces` and keeps every span it was sent.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use prost::Message;

/// One received span, ids in lowercase hex, attribute values as text.
#[derive(Clone, Debug)]
pub struct ReceivedSpan {
    /// The `service.name` of the process that sent it.
    pub service: String,
    /// The span's name.
    pub name: String,
    /// Its trace.
    pub trace_id: String,
    /// Its id.
    pub span_id: String,
    /// Its parent's id; empty for a root.
    pub parent: String,
    /// Its attributes.
    pub attributes: BTreeMap<String, String>,
}

impl ReceivedSpan {
    /// The attribute `key`, or "" when absent.
    pub fn attr(&self, key: &str) -> &str {
        self.attributes.get(key).map_or("", String::as_str)
    }
}

/// What a receiver took.
#[derive(Default)]
struct Taken {
    /// Whether batches are decoded and their spans kept.
    keep: bool,
    spans: Mutex<Vec<ReceivedSpan>>,
    bytes: AtomicUsize,
}

/// A running receiver; it serves until the test process ends.
pub struct OtlpReceiver {
    /// `http://127.0.0.1:PORT`, its base URL.
    pub url: String,
    taken: Arc<Taken>,
}

impl OtlpReceiver {
    /// Starts a receiver on a free port that keeps every span.
    pub fn start() -> OtlpReceiver {
        Self::listen(true)
    }

    /// Starts a receiver that takes batches and throws them away (for benchmarks, where
    /// decoding would take CPU from what is measured); it only counts their bytes.
    pub fn sink() -> OtlpReceiver {
        Self::listen(false)
    }

    fn listen(keep: bool) -> OtlpReceiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the OTLP receiver");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let taken = Arc::new(Taken {
            keep,
            ..Taken::default()
        });
        let shared = taken.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let taken = shared.clone();
                std::thread::spawn(move || serve(stream, &taken));
            }
        });
        OtlpReceiver { url, taken }
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.taken.spans.lock().expect("spans").clone()
    }

    /// Bytes of span batches received so far.
    pub fn bytes(&self) -> usize {
        self.taken.bytes.load(Ordering::Relaxed)
    }

    /// The spans of trace `trace_id` once `done` holds for them, waiting up to `within`.
    pub fn trace(
        &self,
        trace_id: &str,
        within: Duration,
        done: impl Fn(&[ReceivedSpan]) -> bool,
    ) -> Vec<ReceivedSpan> {
        let deadline = Instant::now() + within;
        loop {
            let spans: Vec<_> = self
                .spans()
                .into_iter()
                .filter(|s| s.trace_id == trace_id)
                .collect();
            if done(&spans) {
                return spans;
            }
            assert!(
                Instant::now() < deadline,
                "trace {trace_id} incomplete after {within:?}: {spans:#?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Answers the requests of one connection, keeping the spans of each batch.
fn serve(mut stream: TcpStream, taken: &Taken) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut buf = Vec::new();
    loop {
        let Some(end) = find(&buf, b"\r\n\r\n") else {
            let mut chunk = [0u8; 16384];
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        let length: usize = header(&head, "content-length").map_or(0, |v| v.parse().unwrap_or(0));
        let json = header(&head, "content-type").is_some_and(|t| t.contains("json"));
        while buf.len() < end + 4 + length {
            let mut chunk = [0u8; 16384];
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body = &buf[end + 4..end + 4 + length];
        taken.bytes.fetch_add(length, Ordering::Relaxed);
        let decoded = if !taken.keep {
            Ok(ExportTraceServiceRequest::default())
        } else if json {
            serde_json::from_slice::<ExportTraceServiceRequest>(body).map_err(|e| e.to_string())
        } else {
            ExportTraceServiceRequest::decode(body).map_err(|e| e.to_string())
        };
        let (status, answer) = match decoded {
            Ok(request) => {
                taken.spans.lock().expect("spans").extend(flatten(request));
                ("200 OK", if json { "{}" } else { "" })
            }
            Err(_) => ("400 Bad Request", "bad batch"),
        };
        let reply = format!(
            "HTTP/1.1 {status}\r\ncontent-type: {}\r\ncontent-length: {}\r\n\r\n{answer}",
            if json {
                "application/json"
            } else {
                "application/x-protobuf"
            },
            answer.len()
        );
        if stream.write_all(reply.as_bytes()).is_err() {
            return;
        }
        buf.drain(..end + 4 + length);
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == name).then(|| v.trim())
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn text(value: Option<Any>) -> String {
    match value {
        Some(Any::StringValue(s)) => s,
        Some(Any::IntValue(i)) => i.to_string(),
        Some(Any::BoolValue(b)) => b.to_string(),
        Some(Any::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn flatten(request: ExportTraceServiceRequest) -> Vec<ReceivedSpan> {
    let mut out = Vec::new();
    for resource_spans in request.resource_spans {
        let service = resource_spans
            .resource
            .into_iter()
            .flat_map(|r| r.attributes)
            .find(|kv| kv.key == "service.name")
            .map(|kv| text(kv.value.and_then(|v| v.value)))
            .unwrap_or_default();
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                out.push(ReceivedSpan {
                    service: service.clone(),
                    name: span.name,
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent: hex(&span.parent_span_id),
                    attributes: span
                        .attributes
                        .into_iter()
                        .map(|kv| (kv.key, text(kv.value.and_then(|v| v.value))))
                        .collect(),
                });
            }
        }
    }
    out
}
