//! Qdrant's filter language as the engine evaluates it: the model and its evaluation on a point.
//! Its JSON shape (read and written) is `api::filter`'s.

use std::collections::HashSet;

use chrono::{DateTime, NaiveDate, NaiveDateTime};
use serde_json::Value;

use crate::engine::payload::{any_scalar_at, any_value_at};
use crate::engine::point::{Payload, PointId};
use crate::engine::text::tokens;

/// What a filter sees of a point.
pub trait PointView {
    /// The point's id.
    fn id(&self) -> PointId;
    /// The point's payload.
    fn payload(&self) -> &Payload;
    /// Whether the point has a vector of this name.
    fn has_vector(&self, name: &str) -> bool;
}

/// The ids of a `has_id` condition. Its `Debug` lists them in order, so that equal sets read
/// the same (cache keys are built from it).
#[derive(Clone, Default, PartialEq)]
pub struct IdSet(pub HashSet<PointId>);

impl std::fmt::Debug for IdSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut ids: Vec<&PointId> = self.0.iter().collect();
        ids.sort_unstable();
        f.debug_set().entries(ids).finish()
    }
}

impl FromIterator<PointId> for IdSet {
    fn from_iter<T: IntoIterator<Item = PointId>>(iter: T) -> Self {
        IdSet(iter.into_iter().collect())
    }
}

/// A boolean combination of conditions (`must`, `should`, `must_not`, `min_should`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Filter {
    /// Every one must hold.
    pub must: Vec<Condition>,
    /// At least one must hold, when there are any.
    pub should: Vec<Condition>,
    /// None may hold.
    pub must_not: Vec<Condition>,
    /// At least `min_count` of `conditions` must hold.
    pub min_should: Option<(Vec<Condition>, usize)>,
}

/// One condition of a filter.
#[derive(Clone, Debug, PartialEq)]
pub enum Condition {
    /// Checks on the values at a payload key; all must hold.
    Field {
        key: String,
        checks: Vec<FieldCheck>,
    },
    /// The key is missing, null or an empty array.
    IsEmpty(String),
    /// The key is present and null.
    IsNull(String),
    /// The point's id is one of these.
    HasId(IdSet),
    /// The point has a vector of this name.
    HasVector(String),
    /// Some object in the array at `key` satisfies `filter` on its own.
    Nested { key: String, filter: Filter },
    /// A sub-filter.
    Filter(Filter),
}

/// One check of a field condition.
#[derive(Clone, Debug, PartialEq)]
pub enum FieldCheck {
    /// Some value equals this.
    Value(Scalar),
    /// Some string value contains this text.
    Text(String),
    /// Some string value has every word of this text (`match.text` on a text-indexed field).
    Tokens(String),
    /// Some value is one of these.
    Any(Vec<Scalar>),
    /// Some value is none of these.
    Except(Vec<Scalar>),
    /// Some number lies in the range.
    Range(Bounds<f64>),
    /// Some RFC 3339 datetime lies in the range (microseconds since the epoch).
    DatetimeRange(Bounds<i64>),
    /// The number of values lies in the range.
    ValuesCount(Bounds<f64>),
    /// `is_empty` / `is_null` written inside a field condition.
    Empty(bool),
    /// See [`FieldCheck::Empty`].
    Null(bool),
}

/// A keyword, integer or boolean to match against.
#[derive(Clone, Debug, PartialEq)]
pub enum Scalar {
    /// A keyword.
    Str(String),
    /// An integer.
    Int(i64),
    /// A boolean.
    Bool(bool),
}

/// Range bounds; unset ones do not constrain.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Bounds<T> {
    /// Strictly less than.
    pub lt: Option<T>,
    /// Strictly greater than.
    pub gt: Option<T>,
    /// Greater than or equal.
    pub gte: Option<T>,
    /// Less than or equal.
    pub lte: Option<T>,
}

impl<T: PartialOrd + Copy> Bounds<T> {
    /// Whether `x` lies within every set bound.
    pub fn contains_value(&self, x: T) -> bool {
        self.contains(x)
    }

    fn contains(&self, x: T) -> bool {
        self.lt.is_none_or(|b| x < b)
            && self.gt.is_none_or(|b| x > b)
            && self.gte.is_none_or(|b| x >= b)
            && self.lte.is_none_or(|b| x <= b)
    }
}

/// Parses an RFC 3339 datetime (also without zone, with a space, or a bare date) to UTC microseconds.
pub fn parse_datetime(s: &str) -> Option<i64> {
    if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
        return Some(dt.timestamp_micros());
    }
    for fmt in ["%Y-%m-%d %H:%M:%S%.f%:z", "%Y-%m-%d %H:%M:%S%.f%#z"] {
        if let Ok(dt) = DateTime::parse_from_str(s, fmt) {
            return Some(dt.timestamp_micros());
        }
    }
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(dt) = NaiveDateTime::parse_from_str(s, fmt) {
            return Some(dt.and_utc().timestamp_micros());
        }
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|dt| dt.and_utc().timestamp_micros())
}

impl Scalar {
    fn matches(&self, v: &Value) -> bool {
        match (self, v) {
            (Scalar::Str(s), Value::String(x)) => s == x,
            (Scalar::Int(i), Value::Number(n)) => n.as_i64() == Some(*i),
            (Scalar::Bool(b), Value::Bool(x)) => b == x,
            _ => false,
        }
    }
}

impl Filter {
    /// Whether the point satisfies the filter; an empty filter matches everything.
    pub fn matches(&self, p: &dyn PointView) -> bool {
        self.must.iter().all(|c| c.matches(p))
            && (self.should.is_empty() || self.should.iter().any(|c| c.matches(p)))
            && !self.must_not.iter().any(|c| c.matches(p))
            && self
                .min_should
                .as_ref()
                .is_none_or(|(cs, n)| cs.iter().filter(|c| c.matches(p)).take(*n).count() >= *n)
    }
}

/// A payload object seen as a point, for nested filters.
struct Element<'a> {
    parent: &'a dyn PointView,
    payload: &'a Payload,
}

impl PointView for Element<'_> {
    fn id(&self) -> PointId {
        self.parent.id()
    }
    fn payload(&self) -> &Payload {
        self.payload
    }
    fn has_vector(&self, name: &str) -> bool {
        self.parent.has_vector(name)
    }
}

impl Condition {
    /// Whether the point satisfies this condition.
    pub fn matches(&self, p: &dyn PointView) -> bool {
        match self {
            Condition::Field { key, checks } => checks.iter().all(|c| c.matches(p.payload(), key)),
            Condition::IsEmpty(key) => !any_scalar_at(p.payload(), key, &mut |_| true),
            Condition::IsNull(key) => any_value_at(p.payload(), key, &mut Value::is_null),
            Condition::HasId(ids) => ids.0.contains(&p.id()),
            Condition::HasVector(name) => p.has_vector(name),
            Condition::Nested { key, filter } => {
                let mut element = |v: &Value| {
                    v.as_object()
                        .is_some_and(|payload| filter.matches(&Element { parent: p, payload }))
                };
                any_value_at(p.payload(), key, &mut |v| match v {
                    Value::Array(items) => items.iter().any(&mut element),
                    other => element(other),
                })
            }
            Condition::Filter(f) => f.matches(p),
        }
    }
}

impl FieldCheck {
    /// Whether the values at `key` pass, stopping at the first value that decides it.
    fn matches(&self, payload: &Payload, key: &str) -> bool {
        let any = |pred: &mut dyn FnMut(&Value) -> bool| any_scalar_at(payload, key, pred);
        match self {
            FieldCheck::Value(s) => any(&mut |v| s.matches(v)),
            FieldCheck::Text(t) => any(&mut |v| v.as_str().is_some_and(|s| s.contains(t.as_str()))),
            FieldCheck::Tokens(t) => any(&mut |v| {
                v.as_str().is_some_and(|s| {
                    let words: std::collections::HashSet<String> = tokens(s).collect();
                    tokens(t).all(|w| words.contains(&w))
                })
            }),
            FieldCheck::Any(list) => any(&mut |v| list.iter().any(|s| s.matches(v))),
            FieldCheck::Except(list) => any(&mut |v| !list.iter().any(|s| s.matches(v))),
            FieldCheck::Range(b) => any(&mut |v| v.as_f64().is_some_and(|x| b.contains(x))),
            FieldCheck::DatetimeRange(b) => any(&mut |v| {
                v.as_str()
                    .and_then(parse_datetime)
                    .is_some_and(|x| b.contains(x))
            }),
            FieldCheck::ValuesCount(b) => {
                let mut n = 0usize;
                any(&mut |_| {
                    n += 1;
                    false
                });
                b.contains(n as f64)
            }
            FieldCheck::Empty(want) => any(&mut |_| true) != *want,
            FieldCheck::Null(want) => any_value_at(payload, key, &mut Value::is_null) == *want,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    /// A point for filter tests: an id, a payload and one unnamed vector.
    pub(crate) struct P(PointId, Payload);
    impl PointView for P {
        fn id(&self) -> PointId {
            self.0
        }
        fn payload(&self) -> &Payload {
            &self.1
        }
        fn has_vector(&self, name: &str) -> bool {
            name.is_empty()
        }
    }

    /// Point `id` with payload `v`.
    pub(crate) fn point(id: u64, v: Value) -> P {
        P(PointId::Num(id), v.as_object().unwrap().clone())
    }

    fn check(f: Value, p: &P) -> bool {
        serde_json::from_value::<Filter>(f).unwrap().matches(p)
    }

    #[test]
    fn match_value_any_except_text() {
        let p = point(
            1,
            json!({"city": "London", "tags": ["a", "b"], "n": 3, "ok": true}),
        );
        assert!(check(
            json!({"must": [{"key": "city", "match": {"value": "London"}}]}),
            &p
        ));
        assert!(check(
            json!({"must": {"key": "tags", "match": {"any": ["b", "z"]}}}),
            &p
        ));
        assert!(!check(
            json!({"must": [{"key": "tags", "match": {"except": ["a", "b"]}}]}),
            &p
        ));
        assert!(check(
            json!({"must": [{"key": "n", "match": {"value": 3}}]}),
            &p
        ));
        assert!(check(
            json!({"must": [{"key": "ok", "match": {"value": true}}]}),
            &p
        ));
        assert!(check(
            json!({"must": [{"key": "city", "match": {"text": "ond"}}]}),
            &p
        ));
        assert!(!check(
            json!({"must": [{"key": "missing", "match": {"except": ["x"]}}]}),
            &p
        ));
    }

    #[test]
    fn ranges_on_numbers_and_datetimes() {
        let p = point(1, json!({"price": 10.5, "ts": "2024-03-01T12:00:00Z"}));
        assert!(check(
            json!({"must": [{"key": "price", "range": {"gte": 10, "lt": 11}}]}),
            &p
        ));
        assert!(!check(
            json!({"must": [{"key": "price", "range": {"gt": 10.5}}]}),
            &p
        ));
        assert!(check(
            json!({"must": [{"key": "ts", "range": {"gte": "2024-01-01", "lt": "2024-03-01T12:00:01+00:00"}}]}),
            &p
        ));
        assert!(!check(
            json!({"must": [{"key": "ts", "range": {"lt": "2024-03-01 12:00:00"}}]}),
            &p
        ));
    }

    #[test]
    fn boolean_structure_and_special_conditions() {
        let p = point(
            7,
            json!({"a": null, "e": [], "n": {"x": 1}, "items": [{"k": "v", "q": 1}, {"k": "w", "q": 2}]}),
        );
        assert!(check(json!({"must": []}), &p));
        assert!(check(
            json!({"should": [{"has_id": [1, 7]}], "must_not": [{"has_id": [8]}]}),
            &p
        ));
        assert!(check(
            json!({"must": [{"is_empty": {"key": "e"}}, {"is_empty": {"key": "zz"}}, {"is_null": {"key": "a"}}]}),
            &p
        ));
        assert!(!check(json!({"must": [{"is_null": {"key": "e"}}]}), &p));
        assert!(check(
            json!({"must": [{"key": "n.x", "match": {"value": 1}}]}),
            &p
        ));
        assert!(check(
            json!({"must": [{"nested": {"key": "items", "filter": {"must": [{"key": "k", "match": {"value": "w"}}, {"key": "q", "range": {"gte": 2}}]}}}]}),
            &p
        ));
        assert!(!check(
            json!({"must": [{"nested": {"key": "items", "filter": {"must": [{"key": "k", "match": {"value": "v"}}, {"key": "q", "range": {"gte": 2}}]}}}]}),
            &p
        ));
        assert!(check(
            json!({"min_should": {"conditions": [{"has_id": [7]}, {"has_id": [8]}, {"key": "n.x", "match": {"value": 1}}], "min_count": 2}}),
            &p
        ));
        assert!(check(
            json!({"must": [{"must_not": [{"has_id": [9]}]}], "should": []}),
            &p
        ));
        assert!(check(
            json!({"must": [{"key": "items[].q", "values_count": {"gte": 2}}]}),
            &p
        ));
    }

    #[test]
    fn malformed_filters_name_the_bad_part() {
        let err = |f: Value| serde_json::from_value::<Filter>(f).unwrap_err().to_string();
        assert!(err(json!({"must": [{"foo": 1}]})).contains("filter.must[0]"));
        assert!(err(json!({"mustt": []})).contains("unknown filter clause"));
        assert!(
            err(json!({"must": [{"key": "a", "match": {"value": 1.5}}]}))
                .contains("not an integer")
        );
        assert!(
            err(json!({"must": [{"key": "a", "range": {"gt": "yesterday"}}]})).contains("RFC 3339")
        );
        assert!(err(json!({"must": [{"key": "a"}]})).contains("no match"));
    }
}
