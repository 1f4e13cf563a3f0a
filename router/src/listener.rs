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
//! runtime. One acceptor hands each new connection, as a plain socket, to the worker with the
//! fewest open connections, which registers it with its own event loop: the connection's reads
//! and writes, its requests and their calls to shards then never leave that thread. (pingora's
//! no-steal pool accepts on one thread and hands each connection, registered with the
//! acceptor's event loop, to a random other, whose every read is then woken across threads:
//! measured, an eventfd write for every other request and about 10% more CPU per forwarded
//! request. Workers that each accept on a shared socket avoid that, but whichever is awake
//! first takes a whole burst of connections: measured, in half the runs all 16 of a client's
//! connections landed on one of two workers and the embedded search ran on one core.)

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use bytes::Bytes;
use std::os::fd::IntoRawFd;

use pingora::apps::{HttpPersistentSettings, HttpServerApp, ReusedHttpStream, ServerApp};
use pingora::http::ResponseHeader;
use pingora::listeners::ListenerConfig;
use pingora::protocols::http::ServerSession;
use pingora::protocols::l4::stream::{L4BufferSettings, Stream as L4Stream};
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl,
    TimingDigest, UniqueID, UniqueIDType,
};
use pingora::server::ShutdownWatch;
use pingora::server::{Fds, ListenFds};
use pingora::services::listening::Service;
use pingora::services::Service as PingoraService;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
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

/// The client API's worker threads, fed by one acceptor.
pub struct Workers {
    threads: Vec<std::thread::JoinHandle<anyhow::Result<()>>>,
    acceptor: tokio::task::JoinHandle<()>,
    ended: Arc<Notify>,
}

/// Tells [`Workers::ended`] that a worker stopped, however it stopped (a panic included).
struct Ended(Arc<Notify>);

impl Drop for Ended {
    fn drop(&mut self) {
        self.0.notify_one();
    }
}

/// Counts one open connection of a worker until dropped.
struct Open(Arc<AtomicUsize>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One worker: where its connections are sent, and how many it has open.
struct Worker {
    connections: tokio::sync::mpsc::UnboundedSender<(std::net::TcpStream, Open)>,
    open: Arc<AtomicUsize>,
}

impl Workers {
    /// Serves `app` on `listener` from `count` threads until `shutdown` turns true; each then
    /// waits for the requests in flight (up to [`DRAIN`]) before it stops. Must be called
    /// within a tokio runtime, which runs the acceptor.
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
        let app = Arc::new(app);
        let mut workers = Vec::with_capacity(count);
        let mut threads = Vec::with_capacity(count);
        for i in 0..count {
            let (connections, incoming) = tokio::sync::mpsc::unbounded_channel();
            workers.push(Worker {
                connections,
                open: Arc::new(AtomicUsize::new(0)),
            });
            let app = app.clone();
            let shutdown = shutdown.clone();
            let ended = Ended(ended.clone());
            let thread = std::thread::Builder::new()
                .name(format!("vecgate-api-{i}"))
                .spawn(move || {
                    let _ended = ended;
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .context("starting an API worker's runtime")?
                        .block_on(work(incoming, app, shutdown));
                    Ok(())
                })
                .context("starting an API worker thread")?;
            threads.push(thread);
        }
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let acceptor = tokio::spawn(accept(listener, workers, shutdown));
        Ok(Workers {
            threads,
            acceptor,
            ended,
        })
    }

    /// Resolves when a worker stops; before shutdown that is a failure.
    pub async fn ended(&self) {
        self.ended.notified().await
    }

    /// Waits for the acceptor and every worker to stop.
    pub async fn join(self) -> anyhow::Result<()> {
        self.acceptor.await.context("the API acceptor")?;
        let threads = self.threads;
        tokio::task::spawn_blocking(move || {
            threads.into_iter().try_for_each(|t| {
                t.join()
                    .map_err(|_| anyhow::anyhow!("an API worker thread panicked"))?
            })
        })
        .await?
    }
}

/// Accepts connections until shutdown and gives each to the worker with the fewest open
/// connections, so that a burst of connections (or a few long-lived ones) spreads over all of
/// them; the worker registers it with its own event loop.
async fn accept(
    listener: tokio::net::TcpListener,
    workers: Vec<Worker>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut next = 0;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|stop| *stop) => return,
        };
        let stream = match accepted.and_then(|(stream, _)| stream.into_std()) {
            Ok(stream) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "accepting an API connection failed");
                // Out of file descriptors: accept would fail again at once.
                if e.raw_os_error() == Some(24) {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                continue;
            }
        };
        let n = workers.len();
        let pick = (0..n)
            .map(|k| (next + k) % n)
            .min_by_key(|&i| workers[i].open.load(Ordering::Relaxed))
            .unwrap_or(0);
        next = (pick + 1) % n;
        let worker = &workers[pick];
        worker.open.fetch_add(1, Ordering::Relaxed);
        let open = Open(worker.open.clone());
        if worker.connections.send((stream, open)).is_err() {
            tracing::error!("an API worker is gone; its connection is dropped");
        }
    }
}

/// A worker's event loop: serves the connections it is given until the acceptor stops, then
/// waits for its requests in flight.
async fn work<H: Handler + 'static>(
    mut incoming: tokio::sync::mpsc::UnboundedReceiver<(std::net::TcpStream, Open)>,
    app: Arc<Http<H>>,
    shutdown: watch::Receiver<bool>,
) {
    while let Some((stream, open)) = incoming.recv().await {
        let app = app.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _open = open;
            let stream = match tokio::net::TcpStream::from_std(stream) {
                Ok(stream) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "registering an API connection failed");
                    return;
                }
            };
            let mut stream = L4Stream::from(stream);
            if let Err(e) = stream.set_nodelay() {
                tracing::debug!(error = %e, "setting TCP_NODELAY failed");
            }
            let stream = Buffered(tokio::io::BufWriter::with_capacity(WRITE_BUFFER, stream));
            let mut next: Option<pingora::protocols::Stream> = Some(Box::new(stream));
            while let Some(stream) = next {
                next = app.process_new(stream, &shutdown).await;
            }
        });
    }
    app.in_flight.drained(DRAIN).await;
}

/// A client connection whose writes are gathered up to [`WRITE_BUFFER`] bytes until pingora
/// flushes them, so that an answer's head and body leave in one send. (pingora buffers the
/// connections its own accept loop makes, but offers no public way to buffer one made here.)
#[derive(Debug)]
struct Buffered(tokio::io::BufWriter<L4Stream>);

impl AsyncRead for Buffered {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Buffered {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

#[async_trait]
impl Shutdown for Buffered {
    async fn shutdown(&mut self) {
        if let Err(e) = AsyncWriteExt::shutdown(&mut self.0).await {
            tracing::debug!(error = %e, "closing a connection failed");
        }
    }
}

impl UniqueID for Buffered {
    fn id(&self) -> UniqueIDType {
        self.0.get_ref().id()
    }
}

impl Ssl for Buffered {}

impl Peek for Buffered {}

impl GetTimingDigest for Buffered {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.0.get_ref().get_timing_digest()
    }
}

impl GetProxyDigest for Buffered {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.0.get_ref().get_proxy_digest()
    }
}

impl GetSocketDigest for Buffered {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.0.get_ref().get_socket_digest()
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

    /// Answers with the name of the thread that serves the request.
    #[derive(Clone)]
    struct ThreadName;

    #[async_trait]
    impl Handler for ThreadName {
        async fn handle(&self, _session: &mut ServerSession) -> Answer {
            Answer::text(200, std::thread::current().name().unwrap_or(""))
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn connections_spread_evenly_over_the_workers() {
        use std::io::{Read, Write};
        let listener = bind("127.0.0.1:0", "server.listen").unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, shutdown) = watch::channel(false);
        let app = Http {
            handler: ThreadName,
            in_flight: Arc::new(InFlight::default()),
        };
        let workers = Workers::start(listener, app, 2, shutdown).unwrap();
        let names = tokio::task::spawn_blocking(move || {
            // All connections open before any request: a burst, as a client pool makes.
            let mut conns: Vec<_> = (0..6)
                .map(|_| std::net::TcpStream::connect(addr).unwrap())
                .collect();
            let mut names: Vec<String> = conns
                .iter_mut()
                .map(|c| {
                    c.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
                        .unwrap();
                    let mut answer = String::new();
                    c.read_to_string(&mut answer).unwrap();
                    answer.rsplit("\r\n").next().unwrap().to_string()
                })
                .collect();
            names.sort();
            names
        })
        .await
        .unwrap();
        assert_eq!(
            names,
            ["vecgate-api-0", "vecgate-api-0", "vecgate-api-0"]
                .into_iter()
                .chain(["vecgate-api-1"; 3])
                .collect::<Vec<_>>()
        );
        stop.send(true).unwrap();
        workers.join().await.unwrap();
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
