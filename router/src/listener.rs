//! The router's sockets: bound before anything is announced, served with pingora's HTTP
//! sessions, and drained on shutdown.
//!
//! vecgate binds its listeners itself instead of leaving that to pingora's `Server`, which logs
//! a failed bind in a service thread and keeps the process running unbound. Here a socket that
//! cannot be bound is a fatal error naming the address, and `listening on ADDR` is printed only
//! for a bound socket; the bound socket is then handed to pingora's listening service, as an
//! inherited listener, which accepts and serves connections.
//!
//! The client API runs on [`Workers`]: one thread per core, each with its own single-threaded
//! runtime accepting on its own handle of the socket and serving the connections it accepted.
//! A connection's reads and writes, its requests and their calls to shards then never leave
//! the thread that accepted it. (pingora's no-steal pool accepts on one thread and hands each
//! connection to a random other, whose every read is then woken across threads: measured, an
//! eventfd write for every other request and about 10% more CPU per forwarded request.)

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use bytes::Bytes;
use std::os::fd::IntoRawFd;

use pingora::apps::{HttpPersistentSettings, HttpServerApp, ReusedHttpStream, ServerApp};
use pingora::http::ResponseHeader;
use pingora::listeners::ListenerConfig;
use pingora::protocols::http::ServerSession;
use pingora::protocols::l4::stream::L4BufferSettings;
use pingora::server::ShutdownWatch;
use pingora::server::{Fds, ListenFds};
use pingora::services::listening::Service;
use pingora::services::Service as PingoraService;
use tokio::sync::{watch, Notify};

/// How long shutdown waits for requests in flight.
pub const DRAIN: Duration = Duration::from_secs(10);

/// Bytes read from a connection at a time.
const READ_BUFFER: usize = 16 << 10;
/// Bytes of an answer gathered before they are sent: an answer's head and a body up to this
/// size leave in one write.
const WRITE_BUFFER: usize = 16 << 10;

/// Binds `addr` (named by its config field `what`), failing with both in the message.
pub fn bind(addr: &str, what: &str) -> anyhow::Result<std::net::TcpListener> {
    let parsed: SocketAddr = addr
        .parse()
        .with_context(|| format!("{what}: `{addr}` is not an IP:port address"))?;
    let listener = std::net::TcpListener::bind(parsed)
        .with_context(|| format!("cannot listen on {addr} ({what})"))?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Requests being answered, so that shutdown can wait for them and no longer.
#[derive(Default)]
pub struct InFlight {
    count: AtomicUsize,
    idle: Notify,
}

/// Counts one request until dropped.
pub struct Entered(Arc<InFlight>);

impl Drop for Entered {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl InFlight {
    /// Counts a request as in flight until the guard drops.
    pub fn enter(self: &Arc<Self>) -> Entered {
        self.count.fetch_add(1, Ordering::SeqCst);
        Entered(self.clone())
    }

    /// Waits until no request is in flight, for at most `limit`; `false` if some still were.
    pub async fn drained(&self, limit: Duration) -> bool {
        let wait = async {
            loop {
                let idle = self.idle.notified();
                if self.count.load(Ordering::SeqCst) == 0 {
                    return;
                }
                idle.await;
            }
        };
        tokio::time::timeout(limit, wait).await.is_ok()
    }
}

/// An HTTP answer: status, content type, body and extra headers.
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// `content-type`.
    pub content_type: &'static str,
    /// Body.
    pub body: Bytes,
    /// More headers (`allow`, `x-vecgate-partial`).
    pub headers: Vec<(&'static str, String)>,
}

impl Answer {
    /// A JSON answer.
    pub fn json(status: u16, body: impl Into<Bytes>) -> Answer {
        Answer {
            status,
            content_type: "application/json",
            body: body.into(),
            headers: Vec::new(),
        }
    }

    /// A plain-text answer.
    pub fn text(status: u16, body: &str) -> Answer {
        Answer {
            status,
            content_type: "text/plain",
            body: Bytes::copy_from_slice(body.as_bytes()),
            headers: Vec::new(),
        }
    }
}

/// What answers the requests of a listener.
#[async_trait]
pub trait Handler: Send + Sync {
    /// The answer to the request whose head `session` has read (the body is the handler's
    /// to read).
    async fn handle(&self, session: &mut ServerSession) -> Answer;
}

/// A [`Handler`] as pingora's HTTP app: each request counted in an [`InFlight`], its answer
/// written head and body together, and the connection kept alive unless shutdown began.
#[derive(Clone)]
pub struct Http<H> {
    /// The handler.
    pub handler: H,
    /// Where its requests are counted.
    pub in_flight: Arc<InFlight>,
}

/// How long an idle connection is kept open (seconds).
const KEEPALIVE_S: u64 = 60;

#[async_trait]
impl<H: Handler> HttpServerApp for Http<H> {
    async fn process_new_http(
        self: &Arc<Self>,
        mut session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        match session.read_request().await {
            Ok(true) => {}
            Ok(false) => return None,
            Err(e) => {
                tracing::debug!(error = %e, "reading a request failed");
                return None;
            }
        }
        session.set_keepalive(if *shutdown.borrow() {
            None
        } else {
            Some(KEEPALIVE_S)
        });
        let answer = {
            let _counted = self.in_flight.enter();
            self.handler.handle(&mut session).await
        };
        let mut head = ResponseHeader::build(answer.status, Some(2 + answer.headers.len())).ok()?;
        head.insert_header(http::header::CONTENT_TYPE, answer.content_type)
            .ok()?;
        head.insert_header(http::header::CONTENT_LENGTH, answer.body.len())
            .ok()?;
        for (name, value) in answer.headers {
            head.insert_header(name, value).ok()?;
        }
        if let Err(e) = session.write_response_header(Box::new(head)).await {
            tracing::debug!(error = %e, "writing an answer failed");
            return None;
        }
        if !answer.body.is_empty() {
            if let Err(e) = session.write_response_body(answer.body, true).await {
                tracing::debug!(error = %e, "writing an answer failed");
                return None;
            }
        }
        let settings = HttpPersistentSettings::for_session(&session);
        match session.finish().await {
            Ok(reusable) => reusable.map(|s| ReusedHttpStream::from_reusable_stream(s, settings)),
            Err(e) => {
                tracing::debug!(error = %e, "finishing an answer failed");
                None
            }
        }
    }
}

/// Serves `app` on the bound `listener` with pingora's listening service (its accept loop,
/// connection handshake and write buffering), until `shutdown` turns true. The socket goes to
/// pingora through its table of inherited listeners, under the address it was bound to.
pub async fn serve<A>(
    listener: std::net::TcpListener,
    app: A,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()>
where
    A: ServerApp + Send + Sync + 'static,
{
    let addr = listener.local_addr()?.to_string();
    let fds = Fds::new();
    let fds: ListenFds = std::sync::Arc::new(parking_lot::Mutex::new(fds));
    fds.lock().add(addr.clone(), listener.into_raw_fd());
    let mut service = Service::new(format!("vecgate {addr}"), app);
    service.add_listener(
        ListenerConfig::tcp(addr).l4_buffer(L4BufferSettings::new(READ_BUFFER, WRITE_BUFFER)),
    );
    PingoraService::start_service(&mut service, Some(fds), shutdown, 1).await;
    Ok(())
}

/// The client API's worker threads.
pub struct Workers {
    threads: Vec<std::thread::JoinHandle<anyhow::Result<()>>>,
    ended: Arc<Notify>,
}

/// Tells [`Workers::ended`] that a worker stopped, however it stopped (a panic included).
struct Ended(Arc<Notify>);

impl Drop for Ended {
    fn drop(&mut self) {
        self.0.notify_one();
    }
}

impl Workers {
    /// Serves `app` on `listener` from `count` threads until `shutdown` turns true; each then
    /// waits for the requests in flight (up to [`DRAIN`]) before it stops.
    pub fn start<H>(
        listener: std::net::TcpListener,
        app: Http<H>,
        count: usize,
        shutdown: watch::Receiver<bool>,
    ) -> anyhow::Result<Workers>
    where
        H: Handler + Clone + 'static,
    {
        let ended = Arc::new(Notify::new());
        let threads = (0..count)
            .map(|i| {
                let listener = listener.try_clone().context("duplicating the API socket")?;
                let app = app.clone();
                let shutdown = shutdown.clone();
                let ended = Ended(ended.clone());
                std::thread::Builder::new()
                    .name(format!("vecgate-api-{i}"))
                    .spawn(move || {
                        let _ended = ended;
                        let runtime = tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()
                            .context("starting an API worker's runtime")?;
                        let in_flight = app.in_flight.clone();
                        runtime.block_on(async move {
                            serve(listener, app, shutdown).await?;
                            in_flight.drained(DRAIN).await;
                            Ok(())
                        })
                    })
                    .context("starting an API worker thread")
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Workers { threads, ended })
    }

    /// Resolves when a worker stops; before shutdown that is a failure.
    pub async fn ended(&self) {
        self.ended.notified().await
    }

    /// Waits for every worker to stop.
    pub fn join(self) -> anyhow::Result<()> {
        for t in self.threads {
            t.join()
                .map_err(|_| anyhow::anyhow!("an API worker thread panicked"))??;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_busy_address_is_an_error_naming_it() {
        let first = bind("127.0.0.1:0", "server.listen").unwrap();
        let addr = first.local_addr().unwrap().to_string();
        let err = format!("{:#}", bind(&addr, "server.listen").unwrap_err());
        assert!(
            err.contains(&format!("cannot listen on {addr} (server.listen)")),
            "{err}"
        );
    }

    #[tokio::test]
    async fn drain_waits_for_requests_in_flight() {
        let in_flight = Arc::new(InFlight::default());
        assert!(in_flight.drained(Duration::from_millis(10)).await);
        let request = in_flight.enter();
        assert!(!in_flight.drained(Duration::from_millis(20)).await);
        let waiter = {
            let in_flight = in_flight.clone();
            tokio::spawn(async move { in_flight.drained(Duration::from_secs(5)).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(request);
        assert!(waiter.await.unwrap());
    }
}
