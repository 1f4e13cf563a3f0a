//! An OpenAI-compatible `/v1/embeddings` (OpenAI's own API, TEI, vLLM, Ollama): one call a batch,
//! retried after a 429, a 5xx or a transport failure as `retry-after` says (else 100 ms
//! doubling), each call bounded by the embedder's timeout and all by the request's deadline.

use std::time::Duration;

use http::Method;
use serde::Deserialize;
use tokio::time::Instant;

use super::{EmbedError, EmbedMetrics};
use crate::config::EmbeddingConfig;
use crate::upstream::{client, CallError};

/// `{"data": [{"embedding": [...], "index": i}]}`.
#[derive(Deserialize)]
struct Answer {
    data: Vec<Item>,
}

#[derive(Deserialize)]
struct Item {
    embedding: Vec<f32>,
    index: usize,
}

/// The first wait before a retry without `retry-after`.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// The vectors of `texts`, in order.
pub(super) async fn embed(
    config: &EmbeddingConfig,
    texts: &[&str],
    deadline: Instant,
    m: &EmbedMetrics,
) -> Result<Vec<Vec<f32>>, EmbedError> {
    let rest = config.url.strip_prefix("http://").unwrap_or(&config.url);
    let (authority, prefix) = match rest.find('/') {
        Some(at) => (&rest[..at], rest[at..].trim_end_matches('/')),
        None => (rest, ""),
    };
    let path = format!("{prefix}/embeddings");
    let body = bytes::Bytes::from(
        serde_json::to_vec(&serde_json::json!({"model": config.model, "input": texts}))
            .unwrap_or_default(),
    );
    let headers = config
        .api_key_env
        .as_ref()
        .and_then(|var| std::env::var(var).ok())
        .map_or(String::new(), |key| {
            format!("authorization: Bearer {key}\r\n")
        });
    let timeout = Duration::from_millis(config.timeout_ms);
    let mut backoff = FIRST_BACKOFF;
    let mut attempt = 0;
    loop {
        let call_deadline = deadline.min(Instant::now() + timeout);
        let answered = client()
            .call_with(
                authority,
                &Method::POST,
                &path,
                &headers,
                body.clone(),
                call_deadline,
            )
            .await;
        let (failure, reason, wait) = match answered {
            Ok(a) if a.status == 200 => return read(&a.body, texts.len()),
            Ok(a) if a.status == 429 || a.status >= 500 => (
                EmbedError::Unavailable(format!("{} answered {}", config.url, a.status)),
                if a.status == 429 { "429" } else { "5xx" },
                a.retry_after.unwrap_or(backoff),
            ),
            Ok(a) => {
                return Err(EmbedError::Refused {
                    status: a.status,
                    message: String::from_utf8_lossy(&a.body).chars().take(300).collect(),
                })
            }
            Err(CallError::Timeout) => (EmbedError::Timeout, "timeout", backoff),
            Err(CallError::Transport(e)) => (
                EmbedError::Unavailable(format!("{}: {e}", config.url)),
                "transport",
                backoff,
            ),
        };
        if attempt >= config.retries || Instant::now() + wait >= deadline {
            return Err(failure);
        }
        m.retries.with_label_values(&[&config.model, reason]).inc();
        tokio::time::sleep(wait).await;
        backoff *= 2;
        attempt += 1;
    }
}

/// The vectors of an answer, in input order; exactly `n` of them, all of one length.
fn read(body: &[u8], n: usize) -> Result<Vec<Vec<f32>>, EmbedError> {
    let answer: Answer =
        serde_json::from_slice(body).map_err(|e| EmbedError::Invalid(e.to_string()))?;
    if answer.data.len() != n {
        return Err(EmbedError::Invalid(format!(
            "{} vectors for {n} texts",
            answer.data.len()
        )));
    }
    let mut out: Vec<Option<Vec<f32>>> = vec![None; n];
    for item in answer.data {
        let slot = out
            .get_mut(item.index)
            .ok_or_else(|| EmbedError::Invalid(format!("index {} out of range", item.index)))?;
        *slot = Some(item.embedding);
    }
    let out: Vec<Vec<f32>> = out
        .into_iter()
        .collect::<Option<_>>()
        .ok_or_else(|| EmbedError::Invalid("an index appears twice".into()))?;
    if out.windows(2).any(|w| w[0].len() != w[1].len()) || out.iter().any(Vec::is_empty) {
        return Err(EmbedError::Invalid("vectors of different lengths".into()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_is_put_in_input_order_and_checked() {
        let body = br#"{"data": [{"embedding": [2.0, 2.0], "index": 1}, {"embedding": [1.0, 1.0], "index": 0}]}"#;
        assert_eq!(read(body, 2).unwrap(), vec![vec![1.0, 1.0], vec![2.0, 2.0]]);
        assert!(read(body, 3).is_err(), "one vector per text");
        let twice =
            br#"{"data": [{"embedding": [1.0], "index": 0}, {"embedding": [1.0], "index": 0}]}"#;
        assert!(read(twice, 2).is_err());
        let ragged = br#"{"data": [{"embedding": [1.0], "index": 0}, {"embedding": [1.0, 2.0], "index": 1}]}"#;
        assert!(read(ragged, 2).is_err());
        assert!(read(b"not json", 1).is_err());
    }
}
