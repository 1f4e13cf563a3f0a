//! The request path's side of the semantic cache: which searches it may answer, and a search
//! answered from it, or run with `limit + semantic_extra` points and their vectors and kept.

use std::time::Instant as StdInstant;

use serde_json::value::RawValue;
use serde_json::Value;
use shardd::api::response::Answer as Written;
use shardd::api::{Body, Endpoint, Route};
use shardd::engine::params::Distance;
use shardd::engine::point::{PointId, WithVector};
use shardd::engine::search::{QueryVector, SearchRequest};
use shardd::query::plan::QueryPlan;
use shardd::query::run;
use xxhash_rust::xxh3::Xxh3;

use super::{Ctx, Done, RawPayload};
use crate::cache::semantic::{Entry, Probe};
use crate::cache::{Cache, Generation};
use crate::config::{CollectionCache, SemanticMode};
use crate::error::GatewayError;
use crate::scatter::{RawHit, Scatter};

/// A search the semantic cache may answer.
pub(crate) struct Ask {
    search: SearchRequest,
    endpoint: Endpoint,
    shape: u128,
    /// The query, prepared as the shards prepare it.
    query: Vec<f32>,
    distance: Distance,
    settings: CollectionCache,
    /// The collection's answers follow its writes by the write log (precise mode).
    precise: bool,
}

impl Ask {
    /// The semantic lookup `route` may have: a dense nearest search without offset or score
    /// threshold, on a vector scored by Cosine, Euclid or Manhattan (a dot product has no bound
    /// on how far a point's score moves), in a collection whose `semantic` is not off.
    pub(crate) fn of(
        route: &Route<RawPayload>,
        settings: &CollectionCache,
        distance: impl Fn(&str) -> Option<Distance>,
        generation: Generation,
        placement: u64,
        precise: bool,
    ) -> Option<Ask> {
        if settings.semantic == SemanticMode::Off {
            return None;
        }
        let Body::Query(QueryPlan::Search(search)) = &route.body else {
            return None;
        };
        let QueryVector::Dense(vector) = &search.vector else {
            return None;
        };
        if search.offset > 0 || search.score_threshold.is_some() || search.limit == 0 {
            return None;
        }
        let distance = distance(&search.using).filter(|d| *d != Distance::Dot)?;
        let mut query = vector.clone();
        distance.prepare(&mut query);
        let mut shape = search.clone();
        shape.vector = QueryVector::Dense(Vec::new());
        shape.limit = 0;
        let mut h = Xxh3::new();
        h.update(route.collection.as_bytes());
        h.update(&[0]);
        h.update(&placement.to_le_bytes());
        h.update(&generation.shared.to_le_bytes());
        h.update(&generation.local.to_le_bytes());
        h.update(format!("{shape:?}").as_bytes());
        Some(Ask {
            search: search.clone(),
            endpoint: route.endpoint,
            shape: h.digest128(),
            query,
            distance,
            settings: settings.clone(),
            precise,
        })
    }
}

impl Ctx<'_> {
    /// Answers `ask` from the semantic cache, or searches and keeps the answer there; says
    /// whether the answer came from the cache. A share of would-be hits
    /// (`semantic_verify_ratio`) is searched anyway and compared.
    pub(super) async fn semantic(
        &self,
        collection: &str,
        ask: Ask,
        cache: &Cache,
        started: StdInstant,
    ) -> Result<(Done, bool), GatewayError> {
        let mode = match ask.settings.semantic {
            SemanticMode::Exact => "exact",
            _ => "threshold",
        };
        let seen = cache.seen();
        let limit = ask.search.limit;
        let probe = Probe {
            shape: ask.shape,
            query: &ask.query,
            limit,
            distance: ask.distance,
            mode: ask.settings.semantic,
            threshold: ask.settings.semantic_threshold,
        };
        let valid = |e: &Entry| !(ask.precise && cache.written_since(collection, e.seen));
        let found = cache.semantic().find(&probe, valid).await;
        let verify = found.is_some() && fastrand::f64() < ask.settings.semantic_verify_ratio;
        cache.semantic_looked_up(found.is_some() && !verify);
        let would = match found {
            Some(hits) if !verify => {
                let hits = shaped(hits, &ask.search.using, &ask.search.with_vector);
                let body = Written::for_query(ask.endpoint, hits, false).to_bytes(false, started);
                return Ok((Done::ok(body), true));
            }
            Some(hits) => Some(ids(&hits)),
            None => None,
        };
        let asked = limit + ask.settings.semantic_extra;
        let mut search = ask.search.clone();
        search.limit = asked;
        search.with_vector = with(&search.with_vector, &search.using);
        let scatter = Scatter::new(self, collection);
        let mut hits = run(&scatter, QueryPlan::Search(search)).await?;
        let partial = scatter.missing();
        if partial.is_empty() {
            if let Some(entry) = Entry::new(
                ask.query.clone(),
                hits.clone(),
                &ask.search.using,
                asked,
                seen,
            ) {
                cache.semantic().insert(ask.shape, entry).await;
            }
        }
        hits.truncate(limit);
        if let Some(would) = would {
            cache.semantic_checked(mode, would == ids(&hits));
        }
        let hits = shaped(hits, &ask.search.using, &ask.search.with_vector);
        let body =
            Written::for_query(ask.endpoint, hits, !partial.is_empty()).to_bytes(false, started);
        Ok((
            Done {
                status: 200,
                body: body.into(),
                partial,
            },
            false,
        ))
    }
}

fn ids(hits: &[RawHit]) -> Vec<PointId> {
    hits.iter().map(|h| h.id).collect()
}

/// `asked` with the vector `using` added.
fn with(asked: &WithVector, using: &str) -> WithVector {
    match asked {
        WithVector::All(true) => WithVector::All(true),
        WithVector::All(false) => WithVector::Names(vec![using.to_string()]),
        WithVector::Names(names) if names.iter().any(|n| n == using) => asked.clone(),
        WithVector::Names(names) => {
            let mut names = names.clone();
            names.push(using.to_string());
            WithVector::Names(names)
        }
    }
}

/// `hits` with only the vectors the client asked for (`using` was added to keep them).
fn shaped(mut hits: Vec<RawHit>, using: &str, asked: &WithVector) -> Vec<RawHit> {
    match asked {
        WithVector::All(true) => {}
        WithVector::All(false) => hits.iter_mut().for_each(|h| h.vector = None),
        WithVector::Names(names) if names.iter().any(|n| n == using) => {}
        WithVector::Names(_) => {
            for h in &mut hits {
                h.vector = h.vector.take().and_then(|raw| without(&raw, using));
            }
        }
    }
    hits
}

/// A point's raw vectors without the one named `using` (`None` when nothing is left).
fn without(raw: &RawValue, using: &str) -> Option<Box<RawValue>> {
    match serde_json::from_str::<Value>(raw.get()).ok()? {
        Value::Object(mut named) => {
            named.remove(using);
            if named.is_empty() {
                return None;
            }
            RawValue::from_string(Value::Object(named).to_string()).ok()
        }
        // A bare list is the unnamed vector, the one searched.
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(vector: &str) -> RawHit {
        RawHit {
            id: PointId::Num(1),
            version: 1,
            score: 0.5,
            payload: None,
            vector: Some(RawValue::from_string(vector.to_string()).unwrap()),
        }
    }

    #[test]
    fn the_searched_vector_added_for_the_cache_is_taken_out_of_the_answer() {
        let names = |n: &[&str]| WithVector::Names(n.iter().map(|s| s.to_string()).collect());
        assert_eq!(with(&WithVector::All(false), "d"), names(&["d"]));
        assert_eq!(with(&names(&["s"]), "d"), names(&["s", "d"]));
        assert_eq!(with(&names(&["d"]), "d"), names(&["d"]));
        assert_eq!(with(&WithVector::All(true), "d"), WithVector::All(true));

        let named = r#"{"d":[1.0,0.0],"s":{"indices":[1],"values":[2.0]}}"#;
        let out = shaped(vec![hit(named)], "d", &names(&["s"]));
        assert_eq!(
            out[0].vector.as_ref().unwrap().get(),
            r#"{"s":{"indices":[1],"values":[2.0]}}"#
        );
        let out = shaped(vec![hit(named)], "d", &WithVector::All(false));
        assert!(out[0].vector.is_none());
        let out = shaped(vec![hit("[1.0,0.0]")], "", &names(&["other"]));
        assert!(out[0].vector.is_none());
        let out = shaped(vec![hit(named)], "d", &names(&["d"]));
        assert_eq!(out[0].vector.as_ref().unwrap().get(), named);
    }
}
