//! Calls to one shard: a remote shardd replica over pooled HTTP with a deadline, or a built-in
//! shard in process. Both answer the same Qdrant API, so routing code treats them alike.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use shardd::api;
use shardd::shard::Shard;
use tokio::time::Instant;

/// A shard's answer: HTTP status and JSON body.
#[derive(Clone, Debug)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Body bytes (Qdrant's envelope).
    pub body: Bytes,
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

/// The pooled HTTP client for all remote replicas; pools are keyed by host, so they survive
/// reloads that keep a replica.
#[derive(Clone)]
pub struct HttpClient(Client<HttpConnector, Full<Bytes>>);

impl Default for HttpClient {
    fn default() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(1)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(256)
            .build(connector);
        HttpClient(client)
    }
}

impl HttpClient {
    /// Sends `method path_and_query` with a JSON body to `base_url`, giving up at `deadline`.
    pub async fn call(
        &self,
        base_url: &str,
        method: &Method,
        path_and_query: &str,
        body: Bytes,
        deadline: Instant,
    ) -> Result<Answer, CallError> {
        let req = Request::builder()
            .method(method)
            .uri(format!("{base_url}{path_and_query}"))
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(body))
            .map_err(|e| CallError::Transport(e.to_string()))?;
        let exchange = async {
            let resp = self
                .0
                .request(req)
                .await
                .map_err(|e| CallError::Transport(e.to_string()))?;
            let status = resp.status().as_u16();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| CallError::Transport(e.to_string()))?
                .to_bytes();
            Ok(Answer { status, body })
        };
        tokio::time::timeout_at(deadline, exchange)
            .await
            .map_err(|_| CallError::Timeout)?
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
