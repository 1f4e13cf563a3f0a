//! The router's sockets: bound before anything is announced, served with pingora's HTTP
//! sessions, and drained on shutdown.
//!
//! vecgate binds its listeners itself instead of leaving that to pingora's `Server`, which logs
//! a failed bind in a service thread and keeps the process running unbound. Here a socket that
//! cannot be bound is a fatal error naming the address, and `listening on ADDR` is printed only
//! for a bound socket.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::apps::ServerApp;
use pingora::protocols::http::ServerSession;
use pingora::protocols::l4::stream::Stream;
use tokio::sync::{watch, Notify};

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

/// An HTTP app whose requests are counted in an [`InFlight`].
pub struct Counted<A> {
    /// The app.
    pub app: A,
    /// Where its requests are counted.
    pub in_flight: Arc<InFlight>,
}

#[async_trait]
impl<A: ServeHttp + Send + Sync> ServeHttp for Counted<A> {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let _counted = self.in_flight.enter();
        self.app.response(session).await
    }
}

/// Accepts connections on `listener` and serves each with `app` until `shutdown` turns true;
/// connections then stop being kept alive, and the runtime's end closes idle ones.
pub async fn serve<A>(
    listener: std::net::TcpListener,
    app: Arc<A>,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()>
where
    A: ServerApp + Send + Sync + 'static,
{
    let listener = tokio::net::TcpListener::from_std(listener)?;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.changed() => return Ok(()),
        };
        let (tcp, _) = match accepted {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let app = app.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let mut next = Some(Box::new(Stream::from(tcp)) as pingora::protocols::Stream);
            while let Some(stream) = next {
                next = app.process_new(stream, &shutdown).await;
            }
        });
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
