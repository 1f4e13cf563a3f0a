//! Calls to one shard: a remote shardd replica over pooled HTTP/1.1 with a deadline, or a
//! built-in shard in process. Both answer the same Qdrant API, so routing code treats them
//! alike.
//!
//! The HTTP client is small and runs in the calling task: a request is one write (head and
//! body together) and its answer is read on the same connection, which then goes back to this
//! thread's pool. A general client (hyper's) runs each connection as its own task and hands
//! every request to it through a channel, which costs two task wake-ups per shard call on the
//! router's hot path. The shards speak plain HTTP/1.1 with `content-length` (or chunked)
//! bodies; nothing else is needed.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::Method;
use shardd::api;
use shardd::shard::Shard;
use shardd::telemetry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tracing::Instrument;

/// A shard's answer: HTTP status and JSON body.
#[derive(Clone, Debug)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Body bytes (Qdrant's envelope).
    pub body: Bytes,
    /// `retry-after`, when the answer gave one in seconds.
    pub retry_after: Option<Duration>,
}

impl Answer {
    /// Whether this is shardd's 404 for a collection it does not hold.
    pub fn lost_collection(&self) -> bool {
        let needle = b"doesn't exist!";
        self.status == 404 && self.body.windows(needle.len()).any(|w| w == needle)
    }
}

/// Why a call got no answer.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The deadline passed first.
    #[error("timed out")]
    Timeout,
    /// Connecting, sending or reading failed.
    #[error("{0}")]
    Transport(String),
}

/// Runs one call to a replica of `shard` in its own span (`shard call`, a child of the
/// request's): the shard, the replica, the attempt (from 1) and how the call ended. A remote
/// call made in it carries the span's `traceparent`.
pub async fn traced(
    shard: &str,
    replica: &str,
    attempt: usize,
    call: impl std::future::Future<Output = Result<Answer, CallError>>,
) -> Result<Answer, CallError> {
    let span = tracing::info_span!(
        "shard call",
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
        vecgate.shard = shard,
        vecgate.replica = replica,
        vecgate.attempt = attempt,
        http.response.status_code = tracing::field::Empty,
        error.type = tracing::field::Empty,
    );
    let result = call.instrument(span.clone()).await;
    if !span.is_disabled() {
        match &result {
            Ok(a) => {
                span.record("http.response.status_code", a.status);
                if a.status >= 500 {
                    span.record("otel.status_code", "ERROR");
                }
            }
            Err(e) => {
                let kind = match e {
                    CallError::Timeout => "timeout",
                    CallError::Transport(_) => "transport",
                };
                span.record("error.type", kind);
                span.record("otel.status_code", "ERROR");
            }
        }
    }
    result
}

/// Idle connections kept per replica and thread.
const MAX_IDLE: usize = 64;
/// An idle connection unused this long is closed rather than reused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(50);
/// The longest response head accepted.
const MAX_HEAD: usize = 64 << 10;

/// An open connection to a replica, with what was read past the last answer.
struct Conn {
    stream: TcpStream,
    buf: BytesMut,
    idle_since: Instant,
}

thread_local! {
    /// Idle connections of this thread, by `host:port`.
    static POOL: RefCell<HashMap<String, Vec<Conn>>> = RefCell::new(HashMap::new());
}

fn checkout(authority: &str) -> Option<Conn> {
    POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        let idle = pool.get_mut(authority)?;
        while let Some(c) = idle.pop() {
            if c.idle_since.elapsed() < IDLE_TIMEOUT {
                return Some(c);
            }
        }
        None
    })
}

fn checkin(authority: &str, mut conn: Conn) {
    conn.idle_since = Instant::now();
    POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        let idle = pool.entry(authority.to_string()).or_default();
        if idle.len() < MAX_IDLE {
            idle.push(conn);
        }
    });
}

fn transport(what: &str, e: impl std::fmt::Display) -> CallError {
    CallError::Transport(format!("{what}: {e}"))
}

/// The HTTP client for remote replicas; connections are pooled per thread, so a request's
/// connection lives on the runtime that serves the request.
#[derive(Clone, Copy, Debug, Default)]
pub struct HttpClient;

/// This thread's client.
pub fn client() -> HttpClient {
    HttpClient
}

impl HttpClient {
    /// Sends `method path_and_query` with a JSON body to `base_url` (`http://host:port`),
    /// giving up at `deadline`. A pooled connection the replica closed while it was idle is
    /// replaced by a new one, once, when it fails before any answer byte arrived.
    pub async fn call(
        &self,
        base_url: &str,
        method: &Method,
        path_and_query: &str,
        body: Bytes,
        deadline: Instant,
    ) -> Result<Answer, CallError> {
        self.call_with(base_url, method, path_and_query, "", body, deadline)
            .await
    }

    /// [`HttpClient::call`] with `headers` (`name: value\r\n` lines) added to the request.
    pub async fn call_with(
        &self,
        base_url: &str,
        method: &Method,
        path_and_query: &str,
        headers: &str,
        body: Bytes,
        deadline: Instant,
    ) -> Result<Answer, CallError> {
        let authority = base_url
            .strip_prefix("http://")
            .unwrap_or(base_url)
            .trim_end_matches('/');
        let head = format!(
            "{method} {path_and_query} HTTP/1.1\r\nhost: {authority}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{headers}{}\r\n",
            body.len(),
            telemetry::outgoing()
        );
        let exchange = async {
            if let Some(conn) = checkout(authority) {
                match exchange(conn, head.as_bytes(), &body).await {
                    Ok((answer, conn)) => return Ok(finish(authority, answer, conn)),
                    Err(Failure::Stale) => {}
                    Err(Failure::Broken(e)) => return Err(e),
                }
            }
            let stream = TcpStream::connect(authority)
                .await
                .map_err(|e| transport("connecting", e))?;
            let _ = stream.set_nodelay(true);
            let conn = Conn {
                stream,
                buf: BytesMut::with_capacity(8 << 10),
                idle_since: Instant::now(),
            };
            match exchange(conn, head.as_bytes(), &body).await {
                Ok((answer, conn)) => Ok(finish(authority, answer, conn)),
                Err(Failure::Stale) => Err(CallError::Transport(
                    "the connection closed before an answer".into(),
                )),
                Err(Failure::Broken(e)) => Err(e),
            }
        };
        tokio::time::timeout_at(deadline, exchange)
            .await
            .map_err(|_| CallError::Timeout)?
    }
}

fn finish(authority: &str, answer: Parsed, conn: Conn) -> Answer {
    if answer.keep_alive {
        checkin(authority, conn);
    }
    Answer {
        status: answer.status,
        body: answer.body,
        retry_after: answer.retry_after,
    }
}

/// How an exchange failed: before any answer byte (a stale pooled connection), or after.
enum Failure {
    Stale,
    Broken(CallError),
}

struct Parsed {
    status: u16,
    body: Bytes,
    keep_alive: bool,
    retry_after: Option<Duration>,
}

/// Writes one request and reads its answer.
async fn exchange(mut conn: Conn, head: &[u8], body: &[u8]) -> Result<(Parsed, Conn), Failure> {
    let mut written = 0;
    let total = head.len() + body.len();
    while written < total {
        let parts = if written < head.len() {
            [
                std::io::IoSlice::new(&head[written..]),
                std::io::IoSlice::new(body),
            ]
        } else {
            [
                std::io::IoSlice::new(&body[written - head.len()..]),
                std::io::IoSlice::new(&[]),
            ]
        };
        match conn.stream.write_vectored(&parts).await {
            Ok(0) | Err(_) if written == 0 => return Err(Failure::Stale),
            Ok(0) => {
                return Err(Failure::Broken(CallError::Transport(
                    "sending: connection closed".into(),
                )))
            }
            Ok(n) => written += n,
            Err(e) => return Err(Failure::Broken(transport("sending", e))),
        }
    }
    let mut received_any = !conn.buf.is_empty();
    let (status, body_start, length, keep_alive, retry_after) = loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(&conn.buf) {
            Ok(httparse::Status::Complete(at)) => {
                let mut length = Length::UntilClose;
                let mut keep_alive = response.version == Some(1);
                let mut retry_after = None;
                for h in response.headers.iter() {
                    if h.name.eq_ignore_ascii_case("content-length") {
                        let n = std::str::from_utf8(h.value)
                            .ok()
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .ok_or_else(|| {
                                Failure::Broken(CallError::Transport(
                                    "the answer's content-length is not a number".into(),
                                ))
                            })?;
                        length = Length::Exact(n);
                    } else if h.name.eq_ignore_ascii_case("transfer-encoding")
                        && h.value.eq_ignore_ascii_case(b"chunked")
                    {
                        length = Length::Chunked;
                    } else if h.name.eq_ignore_ascii_case("connection") {
                        keep_alive = !h.value.eq_ignore_ascii_case(b"close");
                    } else if h.name.eq_ignore_ascii_case("retry-after") {
                        retry_after = std::str::from_utf8(h.value)
                            .ok()
                            .and_then(|v| v.trim().parse::<u64>().ok())
                            .map(Duration::from_secs);
                    }
                }
                let status = response.code.unwrap_or(0);
                break (
                    status,
                    at,
                    length,
                    keep_alive && length != Length::UntilClose,
                    retry_after,
                );
            }
            Ok(httparse::Status::Partial) if conn.buf.len() < MAX_HEAD => {}
            Ok(httparse::Status::Partial) => {
                return Err(Failure::Broken(CallError::Transport(
                    "the answer's head is too large".into(),
                )))
            }
            Err(e) => return Err(Failure::Broken(transport("reading the answer", e))),
        }
        match read_more(&mut conn).await {
            Ok(0) if !received_any => return Err(Failure::Stale),
            Ok(0) => {
                return Err(Failure::Broken(CallError::Transport(
                    "the connection closed mid-answer".into(),
                )))
            }
            Ok(_) => received_any = true,
            Err(e) if !received_any => {
                let _ = e;
                return Err(Failure::Stale);
            }
            Err(e) => return Err(Failure::Broken(transport("reading", e))),
        }
    };
    let _ = conn.buf.split_to(body_start);
    let body = match length {
        Length::Exact(n) => {
            while conn.buf.len() < n {
                if read_more(&mut conn)
                    .await
                    .map_err(|e| Failure::Broken(transport("reading", e)))?
                    == 0
                {
                    return Err(Failure::Broken(CallError::Transport(
                        "the connection closed mid-answer".into(),
                    )));
                }
            }
            conn.buf.split_to(n).freeze()
        }
        Length::Chunked => read_chunked(&mut conn).await.map_err(Failure::Broken)?,
        Length::UntilClose => {
            while read_more(&mut conn)
                .await
                .map_err(|e| Failure::Broken(transport("reading", e)))?
                > 0
            {}
            conn.buf.split().freeze()
        }
    };
    Ok((
        Parsed {
            status,
            body,
            keep_alive,
            retry_after,
        },
        conn,
    ))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Length {
    Exact(usize),
    Chunked,
    UntilClose,
}

async fn read_more(conn: &mut Conn) -> std::io::Result<usize> {
    if conn.buf.capacity() - conn.buf.len() < 4096 {
        conn.buf.reserve(16 << 10);
    }
    conn.stream.read_buf(&mut conn.buf).await
}

/// Reads a chunked body: `size-in-hex\r\n data \r\n` repeated, ending with a zero-size chunk.
async fn read_chunked(conn: &mut Conn) -> Result<Bytes, CallError> {
    let mut body = BytesMut::new();
    loop {
        let line_end = loop {
            if let Some(at) = conn.buf.windows(2).position(|w| w == b"\r\n") {
                break at;
            }
            if read_more(conn).await.map_err(|e| transport("reading", e))? == 0 {
                return Err(CallError::Transport(
                    "the connection closed mid-chunk".into(),
                ));
            }
        };
        let size_text = std::str::from_utf8(&conn.buf[..line_end])
            .ok()
            .map(|l| l.split(';').next().unwrap_or("").trim().to_string())
            .unwrap_or_default();
        let size = usize::from_str_radix(&size_text, 16)
            .map_err(|_| CallError::Transport("a chunk size is not hex".into()))?;
        while conn.buf.len() < line_end + 2 + size + 2 {
            if read_more(conn).await.map_err(|e| transport("reading", e))? == 0 {
                return Err(CallError::Transport(
                    "the connection closed mid-chunk".into(),
                ));
            }
        }
        let _ = conn.buf.split_to(line_end + 2);
        body.extend_from_slice(&conn.buf.split_to(size));
        let _ = conn.buf.split_to(2);
        if size == 0 {
            return Ok(body.freeze());
        }
    }
}

/// Runs one API request (`path_and_query` as for a remote replica) on a built-in shard on the
/// blocking pool, giving up waiting at `deadline`.
pub async fn call_builtin(
    shard: Arc<Shard>,
    method: Method,
    path_and_query: String,
    body: Bytes,
    deadline: Instant,
) -> Result<Answer, CallError> {
    let work = tokio::task::spawn_blocking(move || {
        let (path, query) = match path_and_query.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path_and_query.as_str(), None),
        };
        let req = api::Request {
            method: &method,
            path,
            query,
            body: &body,
        };
        let resp = api::handle(&shard, &req);
        Answer {
            status: resp.status.as_u16(),
            body: Bytes::from(resp.body),
            retry_after: None,
        }
    });
    match tokio::time::timeout_at(deadline, work).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(e)) => Err(CallError::Transport(format!(
            "built-in shard task failed: {e}"
        ))),
        Err(_) => Err(CallError::Timeout),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A server that answers each request on a connection with the next canned answer.
    async fn serve(answers: Vec<&'static str>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            for a in answers {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await.unwrap();
                s.write_all(a.as_bytes()).await.unwrap();
            }
        });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn content_length_and_chunked_answers_are_read_and_the_connection_reused() {
        let url = serve(vec![
            "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
            "HTTP/1.1 404 Not Found\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        ])
        .await;
        let deadline = Instant::now() + Duration::from_secs(5);
        let a = client()
            .call(
                &url,
                &Method::POST,
                "/x",
                Bytes::from_static(b"{}"),
                deadline,
            )
            .await
            .unwrap();
        assert_eq!((a.status, &a.body[..]), (200, &b"ok"[..]));
        let b = client()
            .call(&url, &Method::GET, "/y", Bytes::new(), deadline)
            .await
            .unwrap();
        assert_eq!(
            (b.status, &b.body[..]),
            (404, &b"abcde"[..]),
            "same connection, second answer"
        );
    }

    #[tokio::test]
    async fn a_silent_server_times_out_and_a_closed_port_is_a_transport_error() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let deadline = Instant::now() + Duration::from_millis(100);
        let err = client()
            .call(&url, &Method::GET, "/", Bytes::new(), deadline)
            .await
            .unwrap_err();
        assert!(matches!(err, CallError::Timeout), "{err}");
        drop(listener);
        let err = client()
            .call(
                &url,
                &Method::GET,
                "/",
                Bytes::new(),
                Instant::now() + Duration::from_secs(1),
            )
            .await
            .unwrap_err();
        assert!(matches!(err, CallError::Transport(_)), "{err}");
    }
}
