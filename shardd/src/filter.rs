//! Qdrant's filter language: parsing with errors that name the bad part, and evaluation on a point.

use std::collections::HashSet;

use chrono::{DateTime, NaiveDate, NaiveDateTime};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{json, Map, Value};

use crate::payload::{any_scalar_at, any_value_at};
use crate::payload_index::tokens;
use crate::point::{Payload, PointId};

/// What a filter sees of a point.
pub trait PointView {
    /// The point's id.
    fn id(&self) -> PointId;
    /// The point's payload.
    fn payload(&self) -> &Payload;
    /// Whether the point has a vector of this name.
    fn has_vector(&self, name: &str) -> bool;
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
    HasId(HashSet<PointId>),
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

impl<'de> Deserialize<'de> for Filter {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        parse_filter(&v, "filter").map_err(serde::de::Error::custom)
    }
}

type ParseResult<T> = Result<T, String>;

fn object<'a>(v: &'a Value, at: &str) -> ParseResult<&'a Map<String, Value>> {
    v.as_object()
        .ok_or_else(|| format!("{at}: expected an object, got {v}"))
}

fn parse_filter(v: &Value, at: &str) -> ParseResult<Filter> {
    let m = object(v, at)?;
    let mut f = Filter::default();
    for (k, v) in m {
        let at = format!("{at}.{k}");
        match k.as_str() {
            "must" => f.must = parse_conditions(v, &at)?,
            "should" => f.should = parse_conditions(v, &at)?,
            "must_not" => f.must_not = parse_conditions(v, &at)?,
            "min_should" if v.is_null() => {}
            "min_should" => {
                let m = object(v, &at)?;
                let conditions =
                    parse_conditions(m.get("conditions").unwrap_or(&Value::Null), &at)?;
                let min_count = m
                    .get("min_count")
                    .and_then(Value::as_u64)
                    .ok_or_else(|| format!("{at}.min_count: expected an unsigned integer"))?;
                f.min_should = Some((conditions, min_count as usize));
            }
            other => return Err(format!("{at}: unknown filter clause `{other}`")),
        }
    }
    Ok(f)
}

fn parse_conditions(v: &Value, at: &str) -> ParseResult<Vec<Condition>> {
    match v {
        Value::Null => Ok(Vec::new()),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, c)| parse_condition(c, &format!("{at}[{i}]")))
            .collect(),
        single => Ok(vec![parse_condition(single, at)?]),
    }
}

fn key_of(v: &Value, at: &str) -> ParseResult<String> {
    object(v, at)?
        .get("key")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| format!("{at}: expected {{\"key\": \"...\"}}"))
}

fn parse_condition(v: &Value, at: &str) -> ParseResult<Condition> {
    let m = object(v, at)?;
    if m.contains_key("key") {
        return parse_field(m, at);
    }
    if let Some(x) = m.get("is_empty") {
        return Ok(Condition::IsEmpty(key_of(x, &format!("{at}.is_empty"))?));
    }
    if let Some(x) = m.get("is_null") {
        return Ok(Condition::IsNull(key_of(x, &format!("{at}.is_null"))?));
    }
    if let Some(x) = m.get("has_id") {
        let ids: Vec<PointId> =
            serde_json::from_value(x.clone()).map_err(|e| format!("{at}.has_id: {e}"))?;
        return Ok(Condition::HasId(ids.into_iter().collect()));
    }
    if let Some(x) = m.get("has_vector") {
        let name = x
            .as_str()
            .ok_or_else(|| format!("{at}.has_vector: expected a vector name"))?;
        return Ok(Condition::HasVector(name.to_string()));
    }
    if let Some(x) = m.get("nested") {
        let at = format!("{at}.nested");
        let key = key_of(x, &at)?;
        let inner = object(x, &at)?
            .get("filter")
            .ok_or_else(|| format!("{at}: missing `filter`"))?;
        return Ok(Condition::Nested {
            key,
            filter: parse_filter(inner, &format!("{at}.filter"))?,
        });
    }
    if m.keys()
        .all(|k| matches!(k.as_str(), "must" | "should" | "must_not" | "min_should"))
    {
        return Ok(Condition::Filter(parse_filter(v, at)?));
    }
    let keys: Vec<&str> = m.keys().map(String::as_str).collect();
    Err(format!("{at}: unsupported condition with fields {keys:?}"))
}

fn parse_field(m: &Map<String, Value>, at: &str) -> ParseResult<Condition> {
    let key = m["key"]
        .as_str()
        .ok_or_else(|| format!("{at}.key: expected a string"))?
        .to_string();
    let mut checks = Vec::new();
    for (k, v) in m {
        let at = format!("{at}.{k}");
        match k.as_str() {
            "key" => {}
            _ if v.is_null() => {}
            "match" => checks.push(parse_match(v, &at)?),
            "range" | "datetime_range" => checks.push(parse_range(v, &at)?),
            "values_count" => checks.push(FieldCheck::ValuesCount(number_bounds(v, &at)?)),
            "is_empty" => checks.push(FieldCheck::Empty(
                v.as_bool()
                    .ok_or_else(|| format!("{at}: expected a boolean"))?,
            )),
            "is_null" => checks.push(FieldCheck::Null(
                v.as_bool()
                    .ok_or_else(|| format!("{at}: expected a boolean"))?,
            )),
            other => return Err(format!("{at}: unsupported field condition `{other}`")),
        }
    }
    if checks.is_empty() {
        return Err(format!(
            "{at}: condition on `{key}` has no match, range or values_count"
        ));
    }
    Ok(Condition::Field { key, checks })
}

/// Parses a value to match against; `at` names it in the error.
pub fn scalar(v: &Value, at: &str) -> ParseResult<Scalar> {
    match v {
        Value::String(s) => Ok(Scalar::Str(s.clone())),
        Value::Bool(b) => Ok(Scalar::Bool(*b)),
        Value::Number(n) => n
            .as_i64()
            .map(Scalar::Int)
            .ok_or_else(|| format!("{at}: {n} is not an integer")),
        other => Err(format!(
            "{at}: expected a keyword, integer or boolean, got {other}"
        )),
    }
}

fn scalars(v: &Value, at: &str) -> ParseResult<Vec<Scalar>> {
    v.as_array()
        .ok_or_else(|| format!("{at}: expected a list"))?
        .iter()
        .map(|x| scalar(x, at))
        .collect()
}

fn parse_match(v: &Value, at: &str) -> ParseResult<FieldCheck> {
    let m = object(v, at)?;
    let (k, x) = match m.iter().next() {
        Some(kv) if m.len() == 1 => kv,
        _ => {
            return Err(format!(
                "{at}: expected exactly one of value, text, any, except"
            ))
        }
    };
    let at = format!("{at}.{k}");
    match k.as_str() {
        "value" => Ok(FieldCheck::Value(scalar(x, &at)?)),
        "text" => Ok(FieldCheck::Text(
            x.as_str()
                .ok_or_else(|| format!("{at}: expected a string"))?
                .to_string(),
        )),
        "any" => Ok(FieldCheck::Any(scalars(x, &at)?)),
        "except" => Ok(FieldCheck::Except(scalars(x, &at)?)),
        other => Err(format!("{at}: unsupported match `{other}`")),
    }
}

fn bound_fields(v: &Value, at: &str) -> ParseResult<[(&'static str, Option<Value>); 4]> {
    let m = object(v, at)?;
    if let Some(k) = m
        .keys()
        .find(|k| !matches!(k.as_str(), "lt" | "gt" | "gte" | "lte"))
    {
        return Err(format!("{at}: unknown bound `{k}`"));
    }
    let get = |k| m.get(k).filter(|v| !v.is_null()).cloned();
    Ok([
        ("lt", get("lt")),
        ("gt", get("gt")),
        ("gte", get("gte")),
        ("lte", get("lte")),
    ])
}

fn to_bounds<T>(fields: [(&str, Option<T>); 4]) -> Bounds<T> {
    let [(_, lt), (_, gt), (_, gte), (_, lte)] = fields;
    Bounds { lt, gt, gte, lte }
}

fn number_bounds(v: &Value, at: &str) -> ParseResult<Bounds<f64>> {
    let fields = bound_fields(v, at)?;
    let mut out: [(&str, Option<f64>); 4] =
        [("lt", None), ("gt", None), ("gte", None), ("lte", None)];
    for (i, (k, x)) in fields.into_iter().enumerate() {
        out[i] = (
            k,
            x.map(|x| {
                x.as_f64()
                    .ok_or_else(|| format!("{at}.{k}: expected a number"))
            })
            .transpose()?,
        );
    }
    Ok(to_bounds(out))
}

fn parse_range(v: &Value, at: &str) -> ParseResult<FieldCheck> {
    let fields = bound_fields(v, at)?;
    if fields
        .iter()
        .all(|(_, x)| x.as_ref().is_none_or(Value::is_number))
    {
        return Ok(FieldCheck::Range(number_bounds(v, at)?));
    }
    let mut out: [(&str, Option<i64>); 4] =
        [("lt", None), ("gt", None), ("gte", None), ("lte", None)];
    for (i, (k, x)) in fields.into_iter().enumerate() {
        out[i] = (
            k,
            x.map(|x| {
                x.as_str().and_then(parse_datetime).ok_or_else(|| {
                    format!("{at}.{k}: {x} is neither a number nor an RFC 3339 datetime")
                })
            })
            .transpose()?,
        );
    }
    Ok(FieldCheck::DatetimeRange(to_bounds(out)))
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

impl Serialize for Filter {
    /// Qdrant's JSON shape, which [`Filter`]'s `Deserialize` reads back to an equal filter.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_json().serialize(s)
    }
}

impl Filter {
    fn to_json(&self) -> Value {
        let list = |cs: &[Condition]| Value::Array(cs.iter().map(Condition::to_json).collect());
        let mut m = Map::new();
        for (k, cs) in [
            ("must", &self.must),
            ("should", &self.should),
            ("must_not", &self.must_not),
        ] {
            if !cs.is_empty() {
                m.insert(k.into(), list(cs));
            }
        }
        if let Some((conditions, min_count)) = &self.min_should {
            m.insert(
                "min_should".into(),
                json!({"conditions": list(conditions), "min_count": min_count}),
            );
        }
        Value::Object(m)
    }
}

impl Serialize for Scalar {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Scalar::Str(v) => s.serialize_str(v),
            Scalar::Int(v) => s.serialize_i64(*v),
            Scalar::Bool(v) => s.serialize_bool(*v),
        }
    }
}

impl<T: Serialize> Serialize for Bounds<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        for (k, v) in [
            ("lt", &self.lt),
            ("gt", &self.gt),
            ("gte", &self.gte),
            ("lte", &self.lte),
        ] {
            if let Some(v) = v {
                m.serialize_entry(k, v)?;
            }
        }
        m.end()
    }
}

/// A datetime bound (UTC microseconds) as RFC 3339, which [`parse_datetime`] reads back.
fn datetime_json(micros: i64) -> Value {
    DateTime::from_timestamp_micros(micros).map_or(Value::Null, |dt| {
        Value::String(dt.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
    })
}

impl FieldCheck {
    /// The JSON key and value this check is written as inside a field condition.
    fn to_json(&self) -> (&'static str, Value) {
        match self {
            FieldCheck::Value(v) => ("match", json!({"value": v})),
            FieldCheck::Text(t) | FieldCheck::Tokens(t) => ("match", json!({"text": t})),
            FieldCheck::Any(vs) => ("match", json!({"any": vs})),
            FieldCheck::Except(vs) => ("match", json!({"except": vs})),
            FieldCheck::Range(b) => ("range", json!(b)),
            FieldCheck::DatetimeRange(b) => {
                let mut m = Map::new();
                for (k, v) in [("lt", b.lt), ("gt", b.gt), ("gte", b.gte), ("lte", b.lte)] {
                    if let Some(v) = v {
                        m.insert(k.into(), datetime_json(v));
                    }
                }
                ("range", Value::Object(m))
            }
            FieldCheck::ValuesCount(b) => ("values_count", json!(b)),
            FieldCheck::Empty(e) => ("is_empty", Value::Bool(*e)),
            FieldCheck::Null(n) => ("is_null", Value::Bool(*n)),
        }
    }
}

impl Condition {
    fn to_json(&self) -> Value {
        match self {
            Condition::Field { key, checks } => {
                let parts: Vec<(&str, Value)> = checks.iter().map(FieldCheck::to_json).collect();
                let distinct = parts
                    .iter()
                    .enumerate()
                    .all(|(i, (k, _))| parts[..i].iter().all(|(other, _)| other != k));
                if distinct {
                    let mut m = Map::new();
                    m.insert("key".into(), Value::String(key.clone()));
                    m.extend(parts.into_iter().map(|(k, v)| (k.to_string(), v)));
                    Value::Object(m)
                } else {
                    let one = |(k, v): (&str, Value)| {
                        let mut m = Map::new();
                        m.insert("key".into(), Value::String(key.clone()));
                        m.insert(k.into(), v);
                        Value::Object(m)
                    };
                    json!({"must": parts.into_iter().map(one).collect::<Vec<_>>()})
                }
            }
            Condition::IsEmpty(key) => json!({"is_empty": {"key": key}}),
            Condition::IsNull(key) => json!({"is_null": {"key": key}}),
            Condition::HasId(ids) => {
                let mut sorted: Vec<&PointId> = ids.iter().collect();
                sorted.sort();
                json!({"has_id": sorted})
            }
            Condition::HasVector(name) => json!({"has_vector": name}),
            Condition::Nested { key, filter } => {
                json!({"nested": {"key": key, "filter": filter.to_json()}})
            }
            Condition::Filter(f) => f.to_json(),
        }
    }
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
            Condition::HasId(ids) => ids.contains(&p.id()),
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
mod tests {
    use super::*;
    use serde_json::json;

    struct P(PointId, Payload);
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

    fn point(id: u64, v: Value) -> P {
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
    fn a_serialized_filter_parses_back_to_the_same_filter() {
        let f: Filter = serde_json::from_value(json!({
            "must": [
                {"key": "city", "match": {"value": "London"}, "values_count": {"gte": 1}},
                {"key": "tags", "match": {"any": ["a", 2, true]}},
                {"key": "tags", "match": {"except": ["z"]}},
                {"key": "price", "range": {"gte": 1.5, "lt": 10}},
                {"key": "ts", "range": {"gte": "2024-01-01T00:00:00Z", "lt": "2024-03-01T12:00:00.5+02:00"}},
                {"is_empty": {"key": "e"}}, {"is_null": {"key": "n"}},
                {"has_id": [3, "5c56c793-a4b5-4b0c-9f1a-0b2e1b5a8d2f", 1]},
                {"has_vector": "dense"},
                {"nested": {"key": "items", "filter": {"must": [{"key": "k", "match": {"text": "w"}}]}}},
                {"key": "x", "is_empty": false, "is_null": true}
            ],
            "should": [{"must_not": [{"key": "a", "match": {"value": 1}}]}],
            "min_should": {"conditions": [{"has_id": [7]}], "min_count": 1}
        }))
        .unwrap();
        let written = serde_json::to_value(&f).unwrap();
        assert_eq!(serde_json::from_value::<Filter>(written).unwrap(), f);
        let two_matches = Filter {
            must: vec![Condition::Field {
                key: "k".into(),
                checks: vec![
                    FieldCheck::Value(Scalar::Int(1)),
                    FieldCheck::Any(vec![Scalar::Int(2)]),
                ],
            }],
            ..Filter::default()
        };
        let back: Filter =
            serde_json::from_value(serde_json::to_value(&two_matches).unwrap()).unwrap();
        let p = point(1, json!({"k": [1, 2]}));
        assert!(back.matches(&p) && two_matches.matches(&p));
        assert!(!back.matches(&point(1, json!({"k": 1}))));
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
