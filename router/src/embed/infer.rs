//! Text in requests: `query` text in `/v1/search`, and Qdrant's inference objects (a `Document`,
//! `{"text": ..., "model": ...}`) in queries (`query`, `nearest`, prefetches, batches) and in
//! points' vectors, replaced by vectors before the request is parsed, so everything after sees
//! vectors only: the collection's embedder for dense ones, `qdrant/bm25` (computed here) for
//! sparse ones.

use bytes::Bytes;
use serde_json::{Map, Value};
use shardd::api::Endpoint;
use tokio::time::Instant;

use super::{bm25, Embedder};
use crate::cache::Cache;

/// Why the text of a request could not be replaced: the client's mistake (400) or the
/// embedder's failure (its status).
#[derive(Debug)]
pub struct InferError {
    /// The HTTP status.
    pub status: u16,
    /// The message the client reads.
    pub message: String,
}

fn bad(message: String) -> InferError {
    InferError {
        status: 400,
        message: format!("Wrong input: {message}"),
    }
}

/// Whether a request to `endpoint` with `body` may carry text to embed (a quick look, so
/// requests without any are not parsed for it): a `Document` has both `text` and `model`
/// (Qdrant requires the model), so a payload with a `text` field alone, as RAG apps write, is
/// not parsed twice.
pub fn may_carry_text(endpoint: Endpoint, body: &[u8]) -> bool {
    let has = |key: &[u8]| memchr::memmem::find(body, key).is_some();
    match endpoint {
        Endpoint::SeedSearch => has(b"\"query\""),
        Endpoint::Query | Endpoint::QueryBatch | Endpoint::QueryGroups | Endpoint::Upsert => {
            has(b"\"text\"") && has(b"\"model\"")
        }
        _ => false,
    }
}

/// `body` with its text replaced by vectors of `embedder` (whose vectors `shared`'s Redis
/// keeps for every router); `None` when it carries none.
/// Without an embedder, text is a 400 naming the collection.
pub async fn replace_text(
    endpoint: Endpoint,
    collection: &str,
    body: &[u8],
    embedder: Option<&Embedder>,
    shared: Option<&Cache>,
    deadline: Instant,
) -> Result<Option<Bytes>, InferError> {
    let Ok(mut root) = serde_json::from_slice::<Value>(body) else {
        // Not JSON: the parser that follows says what is wrong with it.
        return Ok(None);
    };
    // Each text, and whether it is for `qdrant/bm25` (computed here) or the embedder.
    let mut docs: Vec<(String, Option<String>)> = Vec::new();
    if endpoint == Endpoint::SeedSearch {
        match root.get("query") {
            Some(Value::String(text)) => docs.push((text.clone(), None)),
            _ => return Ok(None),
        }
    } else {
        slots(endpoint, &mut root, &mut |slot| {
            let text = slot["text"].as_str().unwrap_or_default().to_string();
            let model = slot
                .get("model")
                .and_then(Value::as_str)
                .map(str::to_string);
            docs.push((text, model));
        });
        if docs.is_empty() {
            return Ok(None);
        }
    }
    let sparse = |model: &Option<String>| {
        model
            .as_deref()
            .is_some_and(|m| m.eq_ignore_ascii_case(bm25::MODEL))
    };
    let dense: Vec<String> = docs
        .iter()
        .filter(|(_, m)| !sparse(m))
        .map(|(t, _)| t.clone())
        .collect();
    let mut vectors = Vec::new();
    if !dense.is_empty() {
        let Some(embedder) = embedder else {
            return Err(bad(format!(
                "collection `{collection}` has no embedder for text: configure [embedding] or [collections.{collection}.embedding], send vectors, or use model `{}` for sparse vectors",
                bm25::MODEL
            )));
        };
        if let Some(other) = docs.iter().filter_map(|(_, m)| m.as_deref()).find(|m| {
            !m.eq_ignore_ascii_case(embedder.model()) && !m.eq_ignore_ascii_case(bm25::MODEL)
        }) {
            return Err(bad(format!(
                "a Document asks for model `{other}`, and collection `{collection}` embeds text with `{}` (or `{}` for sparse vectors)",
                embedder.model(),
                bm25::MODEL
            )));
        }
        vectors = embedder
            .embed(&dense, deadline, shared)
            .await
            .map_err(|e| InferError {
                status: e.status(),
                message: format!("embedding text for collection `{collection}`: {e}"),
            })?;
    }
    let as_json = |v: &[f32]| Value::Array(v.iter().map(|x| Value::from(f64::from(*x))).collect());
    let mut dense_vectors = vectors.iter();
    let mut values = docs.iter().map(|(text, model)| {
        if sparse(model) {
            let v = if endpoint == Endpoint::Upsert {
                bm25::document(text)
            } else {
                bm25::query(text)
            };
            serde_json::json!({"indices": v.indices, "values": v.values})
        } else {
            dense_vectors.next().map_or(Value::Null, |v| as_json(v))
        }
    });
    if endpoint == Endpoint::SeedSearch {
        if let (Value::Object(m), Some(v)) = (&mut root, values.next()) {
            m.remove("query");
            m.insert("vector".into(), v);
        }
    } else {
        slots(endpoint, &mut root, &mut |slot| {
            if let Some(v) = values.next() {
                *slot = v;
            }
        });
    }
    Ok(Some(Bytes::from(
        serde_json::to_vec(&root).unwrap_or_default(),
    )))
}

/// A `Document`: an object with a string `text` and a string `model`, and nothing but
/// `options` besides.
fn is_document(v: &Value) -> bool {
    match v {
        Value::Object(m) => {
            m.get("text").is_some_and(Value::is_string)
                && m.get("model").is_some_and(Value::is_string)
                && m.keys()
                    .all(|k| matches!(k.as_str(), "text" | "model" | "options"))
        }
        _ => false,
    }
}

/// Calls `f` on every `Document` of a request to `endpoint`, in one fixed order.
fn slots(endpoint: Endpoint, root: &mut Value, f: &mut dyn FnMut(&mut Value)) {
    match endpoint {
        Endpoint::Query | Endpoint::QueryGroups => query_slots(root, f),
        Endpoint::QueryBatch => {
            if let Some(Value::Array(searches)) = root.get_mut("searches") {
                searches.iter_mut().for_each(|q| query_slots(q, f));
            }
        }
        Endpoint::Upsert => {
            if let Some(Value::Array(points)) = root.get_mut("points") {
                for p in points {
                    if let Some(v) = p.get_mut("vector") {
                        vector_slots(v, f);
                    }
                }
            }
            if let Some(Value::Object(batch)) = root.get_mut("batch") {
                match batch.get_mut("vectors") {
                    Some(Value::Array(all)) => all.iter_mut().for_each(|v| vector_slots(v, f)),
                    Some(Value::Object(named)) => named_lists(named, f),
                    _ => {}
                }
            }
        }
        _ => {}
    }
}

/// The `Document`s of one query request: its `query` (or `query.nearest`) and its prefetches'.
fn query_slots(q: &mut Value, f: &mut dyn FnMut(&mut Value)) {
    if let Some(query) = q.get_mut("query") {
        if is_document(query) {
            f(query);
        } else if let Some(nearest) = query.get_mut("nearest").filter(|n| is_document(n)) {
            f(nearest);
        }
    }
    match q.get_mut("prefetch") {
        Some(Value::Array(all)) => all.iter_mut().for_each(|p| query_slots(p, f)),
        Some(p @ Value::Object(_)) => query_slots(p, f),
        _ => {}
    }
}

/// A point's vectors: one `Document`, or `Document`s by vector name.
fn vector_slots(v: &mut Value, f: &mut dyn FnMut(&mut Value)) {
    if is_document(v) {
        f(v);
    } else if let Value::Object(named) = v {
        named.values_mut().filter(|d| is_document(d)).for_each(f);
    }
}

/// A batch's vectors by name, each a list with a vector per point.
fn named_lists(named: &mut Map<String, Value>, f: &mut dyn FnMut(&mut Value)) {
    for list in named.values_mut() {
        if let Value::Array(all) = list {
            all.iter_mut().filter(|d| is_document(d)).for_each(&mut *f);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts_of(endpoint: Endpoint, body: Value) -> Vec<String> {
        let mut root = body;
        let mut out = Vec::new();
        slots(endpoint, &mut root, &mut |slot| {
            out.push(slot["text"].as_str().unwrap().to_string());
        });
        out
    }

    #[test]
    fn documents_are_found_where_qdrant_clients_put_them() {
        let doc = |t: &str| serde_json::json!({"text": t, "model": "m"});
        let query = serde_json::json!({
            "query": doc("a"),
            "prefetch": [{"query": {"nearest": doc("b")}, "using": "d"}, {"query": [1.0], "prefetch": {"query": doc("c")}}]
        });
        assert_eq!(texts_of(Endpoint::Query, query.clone()), ["a", "b", "c"]);
        assert_eq!(
            texts_of(
                Endpoint::QueryBatch,
                serde_json::json!({"searches": [query, {"query": doc("d")}]})
            ),
            ["a", "b", "c", "d"]
        );
        let upsert = serde_json::json!({"points": [
            {"id": 1, "vector": doc("e")},
            {"id": 2, "vector": {"dense": doc("f"), "sparse": {"indices": [1], "values": [1.0]}}},
            {"id": 3, "vector": [0.5]}
        ]});
        assert_eq!(texts_of(Endpoint::Upsert, upsert), ["e", "f"]);
        let batch = serde_json::json!({"batch": {"ids": [1, 2], "vectors": {"dense": [doc("g"), doc("h")]}}});
        assert_eq!(texts_of(Endpoint::Upsert, batch), ["g", "h"]);
        let payload_text = serde_json::json!({"points": [{"id": 1, "vector": [1.0], "payload": {"text": "not a document"}}]});
        assert!(texts_of(Endpoint::Upsert, payload_text).is_empty());
        let more_keys = serde_json::json!({"query": {"text": "x", "model": "m", "filter": {}}});
        assert!(
            texts_of(Endpoint::Query, more_keys).is_empty(),
            "not a Document"
        );
        let payload =
            br#"{"points": [{"id": 1, "vector": [1.0], "payload": {"text": "a chunk"}}]}"#;
        assert!(
            !may_carry_text(Endpoint::Upsert, payload),
            "a payload's text is not parsed for"
        );
        assert!(may_carry_text(
            Endpoint::Query,
            br#"{"query": {"text": "a", "model": "m"}}"#
        ));
        assert!(!may_carry_text(
            Endpoint::SeedSearch,
            br#"{"collection": "c", "vector": [1.0]}"#
        ));
    }
}
