//! Write-aware invalidation (`mode = "precise"`): instead of dropping every answer of a
//! collection on each write, the router logs what each write did (the points written, the ids
//! deleted) and, when a cached answer is asked for, checks it against the writes logged since
//! its search began. The answer is served only if none of them could change it: no written or
//! deleted id is among its points, and no written point that passes its filter scores at least
//! as well as its last point. A write whose effect cannot be known from the request (a delete
//! or payload change by filter) is logged as `Unknown` and fails every check.
//!
//! Only plain dense searches without `offset` carry a [`Validator`]; any other cached answer
//! of a precise collection (fusion, sparse, MMR, groups, batches, count, get) fails the check
//! on any write since it was searched.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use shardd::api::{Body, Route};
use shardd::engine::filter::{Filter, PointView};
use shardd::engine::params::Distance;
use shardd::engine::point::{Payload, PointId, PointWrite, Vector};
use shardd::engine::search::QueryVector;
use shardd::query::plan::QueryPlan;
use shardd::shard::Selector;

use crate::gateway::RawPayload;

/// Writes kept per collection; an answer searched before the oldest kept one is searched again.
const LOG_LEN: usize = 4096;

/// What one write did, as far as cached answers care.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Written {
    /// These points were upserted (replacing any with the same id).
    Points(Vec<PointWrite<Payload>>),
    /// These ids were deleted.
    Deleted(Vec<PointId>),
    /// Something no answer can be checked against.
    Unknown,
}

impl Written {
    /// What `route`, a write, did; `None` for reads.
    pub fn of(route: &Route<RawPayload>) -> Option<Written> {
        Some(match &route.body {
            Body::Upsert(points) => points
                .iter()
                .map(|p| {
                    let payload = match &p.payload {
                        Some(raw) => serde_json::from_str::<Payload>(raw.get()).ok()?,
                        None => Payload::default(),
                    };
                    Some(PointWrite {
                        id: p.id,
                        vectors: p.vectors.clone(),
                        payload,
                    })
                })
                .collect::<Option<Vec<_>>>()
                .map_or(Written::Unknown, Written::Points),
            Body::Delete(Selector::Ids(ids)) => Written::Deleted(ids.clone()),
            Body::Delete(_) | Body::SetPayload { .. } | Body::CreateCollection(_) | Body::Empty => {
                Written::Unknown
            }
            _ if route.endpoint.is_read() => return None,
            _ => Written::Unknown,
        })
    }
}

/// What a plain dense search's answer depends on.
#[derive(Debug)]
pub struct Validator {
    using: String,
    query: Vec<f32>,
    distance: Distance,
    filter: Option<Filter>,
    threshold: Option<f32>,
    /// The answer's points.
    ids: HashSet<PointId>,
    /// The score of its last point when the answer was full (`limit` points); `None` when it
    /// held fewer, so that any passing point would enter it.
    last: Option<f32>,
}

/// What a plain dense search asks, known before it runs; with its answer it makes the
/// answer's [`Validator`].
pub struct Asked {
    using: String,
    query: Vec<f32>,
    distance: Distance,
    filter: Option<Filter>,
    threshold: Option<f32>,
    limit: usize,
}

impl Asked {
    /// What `route` asks, when it is a plain dense search without offset; `distance` names the
    /// distance of each dense vector of the collection.
    pub fn of(
        route: &Route<RawPayload>,
        distance: impl Fn(&str) -> Option<Distance>,
    ) -> Option<Asked> {
        let Body::Query(QueryPlan::Search(s)) = &route.body else {
            return None;
        };
        let QueryVector::Dense(q) = &s.vector else {
            return None;
        };
        if s.offset > 0 {
            return None;
        }
        let distance = distance(&s.using)?;
        let mut query = q.clone();
        distance.prepare(&mut query);
        Some(Asked {
            using: s.using.clone(),
            query,
            distance,
            filter: s.filter.clone(),
            threshold: s.score_threshold,
            limit: s.limit,
        })
    }

    /// The validator of this search's answer `body`.
    pub fn validator(self, body: &[u8]) -> Option<Validator> {
        let scored = answer_points(body)?;
        Some(Validator {
            last: (scored.len() >= self.limit)
                .then(|| scored.last().map(|p| p.1))
                .flatten(),
            ids: scored.into_iter().map(|p| p.0).collect(),
            using: self.using,
            query: self.query,
            distance: self.distance,
            filter: self.filter,
            threshold: self.threshold,
        })
    }
}

impl Validator {
    /// Whether `write` could change the answer.
    fn changed_by(&self, write: &Written) -> bool {
        match write {
            Written::Unknown => true,
            Written::Deleted(ids) => ids.iter().any(|id| self.ids.contains(id)),
            Written::Points(points) => points.iter().any(|p| self.entered_by(p)),
        }
    }

    fn entered_by(&self, p: &PointWrite<Payload>) -> bool {
        if self.ids.contains(&p.id) {
            return true;
        }
        let Some(Vector::Dense(v)) = p.vectors.get(&self.using) else {
            return false;
        };
        if v.len() != self.query.len() {
            return true;
        }
        if let Some(f) = &self.filter {
            if !f.matches(&Candidate(p)) {
                return false;
            }
        }
        let mut v = v.clone();
        self.distance.prepare(&mut v);
        let score = self.distance.score(&self.query, &v);
        // Ties and rounding count as entering: the check may drop an answer it could keep,
        // never keep one it should drop.
        let margin = 1e-4 * score.abs().max(1.0);
        let beats = |bound: f32| {
            if self.distance.higher_is_better() {
                score >= bound - margin
            } else {
                score <= bound + margin
            }
        };
        self.threshold.is_none_or(beats) && self.last.is_none_or(beats)
    }
}

/// A written point as a filter sees it.
struct Candidate<'a>(&'a PointWrite<Payload>);

impl PointView for Candidate<'_> {
    fn id(&self) -> PointId {
        self.0.id
    }
    fn payload(&self) -> &Payload {
        &self.0.payload
    }
    fn has_vector(&self, name: &str) -> bool {
        self.0.vectors.contains_key(name)
    }
}

/// The (id, score) of an answer's points, in order: `result.points` (query), `result`
/// (search) or `results` (`/v1/search`).
fn answer_points(body: &[u8]) -> Option<Vec<(PointId, f32)>> {
    #[derive(Deserialize)]
    struct Hit {
        id: PointId,
        score: f32,
    }
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Result {
        Points { points: Vec<Hit> },
        List(Vec<Hit>),
    }
    #[derive(Deserialize)]
    struct Answer {
        result: Option<Result>,
        results: Option<Vec<Hit>>,
    }
    let a: Answer = serde_json::from_slice(body).ok()?;
    let hits = match (a.result, a.results) {
        (Some(Result::Points { points }), _) | (Some(Result::List(points)), _) => points,
        (None, Some(hits)) => hits,
        (None, None) => return None,
    };
    Some(hits.into_iter().map(|h| (h.id, h.score)).collect())
}

/// What a precise entry needs to be checked: its validator and how far it was checked.
#[derive(Debug)]
pub struct Check {
    validator: Option<Validator>,
    /// Every write up to this sequence number is known not to change the answer.
    checked: AtomicU64,
}

impl Check {
    /// An answer searched when the log stood at `seen`.
    pub fn new(validator: Option<Validator>, seen: u64) -> Check {
        Check {
            validator,
            checked: AtomicU64::new(seen),
        }
    }
}

/// The writes of one collection, by sequence number.
#[derive(Default)]
struct Log {
    writes: VecDeque<(u64, Arc<Written>)>,
}

/// Every precise collection's write log.
#[derive(Default)]
pub struct Logs {
    next: AtomicU64,
    logs: Mutex<std::collections::HashMap<String, Log>>,
}

impl Logs {
    /// The sequence number of the last write logged (anywhere).
    pub fn seen(&self) -> u64 {
        self.next.load(Ordering::Acquire)
    }

    /// The sequence number of the last write logged to `collection` (0: none kept).
    pub fn last(&self, collection: &str) -> u64 {
        let logs = self.logs.lock();
        logs.get(collection)
            .and_then(|l| l.writes.back())
            .map_or(0, |w| w.0)
    }

    /// Logs a write to `collection`.
    pub fn log(&self, collection: &str, write: Written) {
        let mut logs = self.logs.lock();
        let seq = self.next.fetch_add(1, Ordering::AcqRel) + 1;
        let log = logs.entry(collection.to_string()).or_default();
        log.writes.push_back((seq, Arc::new(write)));
        if log.writes.len() > LOG_LEN {
            log.writes.pop_front();
        }
    }

    /// Whether the answer checked by `check` still stands after every write to `collection`
    /// logged so far; brings its mark forward when it does.
    pub fn still_valid(&self, collection: &str, check: &Check) -> bool {
        let from = check.checked.load(Ordering::Acquire);
        let now = self.seen();
        if from >= now {
            return true;
        }
        let pending: Vec<Arc<Written>> = {
            let logs = self.logs.lock();
            let Some(log) = logs.get(collection) else {
                return true;
            };
            if log.writes.len() == LOG_LEN && log.writes.front().is_some_and(|w| w.0 > from + 1) {
                // Writes it was not checked against are no longer kept.
                return false;
            }
            log.writes
                .iter()
                .filter(|(seq, _)| *seq > from && *seq <= now)
                .map(|(_, w)| w.clone())
                .collect()
        };
        if pending.is_empty() {
            check.checked.fetch_max(now, Ordering::AcqRel);
            return true;
        }
        let Some(v) = &check.validator else {
            return false;
        };
        if pending.iter().any(|w| v.changed_by(w)) {
            return false;
        }
        check.checked.fetch_max(now, Ordering::AcqRel);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shardd::engine::point::NamedVectors;

    fn validator(last: Option<f32>, filter: Option<Filter>) -> Validator {
        Validator {
            using: String::new(),
            query: vec![1.0, 0.0],
            distance: Distance::Dot,
            filter,
            threshold: None,
            ids: [PointId::Num(1), PointId::Num(2)].into_iter().collect(),
            last,
        }
    }

    fn point(id: u64, v: [f32; 2], payload: serde_json::Value) -> PointWrite<Payload> {
        let mut vectors = NamedVectors::new();
        vectors.insert(String::new(), Vector::Dense(v.to_vec()));
        PointWrite {
            id: PointId::Num(id),
            vectors,
            payload: serde_json::from_value(payload).unwrap(),
        }
    }

    #[test]
    fn a_write_changes_an_answer_only_if_it_touches_its_points_or_could_enter_it() {
        let v = validator(Some(0.5), None);
        let none = serde_json::json!({});
        assert!(!v.changed_by(&Written::Points(vec![point(9, [0.1, 1.0], none.clone())])));
        assert!(v.changed_by(&Written::Points(vec![point(9, [0.9, 0.0], none.clone())])));
        assert!(v.changed_by(&Written::Points(vec![point(2, [0.0, 0.0], none.clone())])));
        assert!(!v.changed_by(&Written::Deleted(vec![PointId::Num(7)])));
        assert!(v.changed_by(&Written::Deleted(vec![PointId::Num(1)])));
        assert!(v.changed_by(&Written::Unknown));
        // An answer with room left takes any point that passes its filter.
        let open = validator(None, None);
        assert!(open.changed_by(&Written::Points(vec![point(9, [-5.0, 0.0], none)])));
    }

    #[test]
    fn a_point_outside_the_answers_filter_cannot_enter_it() {
        let filter: Filter = serde_json::from_value(
            serde_json::json!({"must": [{"key": "tenant", "match": {"value": "a"}}]}),
        )
        .unwrap();
        let v = validator(Some(0.5), Some(filter));
        let b = point(9, [0.9, 0.0], serde_json::json!({"tenant": "b"}));
        let a = point(9, [0.9, 0.0], serde_json::json!({"tenant": "a"}));
        assert!(!v.changed_by(&Written::Points(vec![b])));
        assert!(v.changed_by(&Written::Points(vec![a])));
    }

    #[test]
    fn the_log_checks_only_what_came_after_and_forgets_nothing_it_needs() {
        let logs = Logs::default();
        logs.log("docs", Written::Deleted(vec![PointId::Num(1)]));
        let check = Check::new(Some(validator(Some(0.5), None)), logs.seen());
        assert!(logs.still_valid("docs", &check));
        logs.log("docs", Written::Deleted(vec![PointId::Num(7)]));
        logs.log("other", Written::Unknown);
        assert!(logs.still_valid("docs", &check));
        logs.log("docs", Written::Deleted(vec![PointId::Num(2)]));
        assert!(!logs.still_valid("docs", &check));
        let blind = Check::new(None, logs.seen());
        assert!(logs.still_valid("docs", &blind));
        logs.log("docs", Written::Deleted(vec![PointId::Num(7)]));
        assert!(!logs.still_valid("docs", &blind));
        let old = Check::new(Some(validator(Some(0.5), None)), logs.seen());
        for _ in 0..=LOG_LEN {
            logs.log("docs", Written::Deleted(vec![PointId::Num(7)]));
        }
        assert!(!logs.still_valid("docs", &old));
    }
}
