//! Qdrant's filter language on the wire: [`Filter`] read from and written to its JSON shape
//! without building a JSON tree, with errors that name the bad part (`filter.must[0].match`).
//!
//! Fields a client sends as `null` (qdrant-client writes every optional field) are ignored.

use std::fmt;

use chrono::DateTime;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};

use crate::engine::filter::{parse_datetime, Bounds, Condition, FieldCheck, Filter, IdSet, Scalar};
use crate::engine::point::PointId;

impl<'de> Deserialize<'de> for Filter {
    /// Reads a filter; an error names its place below the filter (`filter.must[0].range.gt`).
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        serde_path_to_error::deserialize::<_, Wire<Filter>>(d)
            .map(|w| w.0)
            .map_err(|e| {
                let path = e.path().to_string();
                let inner = e.into_inner();
                de::Error::custom(match path.as_str() {
                    "." => format!("filter: {inner}"),
                    path => format!("filter.{path}: {inner}"),
                })
            })
    }
}

/// The recursive reader; only the outermost [`Filter`] adds paths to errors.
struct Wire<T>(T);

impl<'de> Deserialize<'de> for Wire<Filter> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(FilterVisitor).map(Wire)
    }
}

/// Reads a map key without allocating for the names a visitor knows.
struct Key<'a>(std::borrow::Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(v.into()))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(v.to_string().into()))
            }
        }
        d.deserialize_str(V)
    }
}

struct FilterVisitor;

impl<'de> Visitor<'de> for FilterVisitor {
    type Value = Filter;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a filter object (must, should, must_not, min_should)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Filter, A::Error> {
        let mut f = Filter::default();
        while let Some(Key(k)) = m.next_key()? {
            match k.as_ref() {
                "must" => f.must = m.next_value::<Conditions>()?.0,
                "should" => f.should = m.next_value::<Conditions>()?.0,
                "must_not" => f.must_not = m.next_value::<Conditions>()?.0,
                "min_should" => {
                    f.min_should = m
                        .next_value::<Option<MinShould>>()?
                        .map(|ms| (ms.conditions.0, ms.min_count))
                }
                other => {
                    return Err(de::Error::custom(format!(
                        "unknown filter clause `{other}`; expected must, should, must_not or min_should"
                    )))
                }
            }
        }
        Ok(f)
    }
}

/// One condition or a list of them; `null` is none.
struct Conditions(Vec<Condition>);

impl<'de> Deserialize<'de> for Conditions {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Conditions;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a condition or a list of conditions")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Conditions, E> {
                Ok(Conditions(Vec::new()))
            }
            fn visit_none<E: de::Error>(self) -> Result<Conditions, E> {
                Ok(Conditions(Vec::new()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<Conditions, A::Error> {
                let mut out = Vec::with_capacity(s.size_hint().unwrap_or(2));
                while let Some(Wire(c)) = s.next_element::<Wire<Condition>>()? {
                    out.push(c);
                }
                Ok(Conditions(out))
            }
            fn visit_map<A: MapAccess<'de>>(self, m: A) -> Result<Conditions, A::Error> {
                ConditionVisitor.visit_map(m).map(|c| Conditions(vec![c]))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Deserialize)]
struct MinShould {
    conditions: Conditions,
    min_count: usize,
}

impl<'de> Deserialize<'de> for Wire<Condition> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(ConditionVisitor).map(Wire)
    }
}

/// `is_empty` / `is_null`: a flag inside a field condition, or `{"key"}` as its own condition.
enum FlagOrKey {
    Flag(bool),
    Key(String),
}

#[derive(Deserialize)]
struct KeyOnly {
    key: String,
}

impl<'de> Deserialize<'de> for FlagOrKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = FlagOrKey;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("true, false or {\"key\": \"...\"}")
            }
            fn visit_bool<E: de::Error>(self, b: bool) -> Result<FlagOrKey, E> {
                Ok(FlagOrKey::Flag(b))
            }
            fn visit_map<A: MapAccess<'de>>(self, m: A) -> Result<FlagOrKey, A::Error> {
                KeyOnly::deserialize(de::value::MapAccessDeserializer::new(m))
                    .map(|k| FlagOrKey::Key(k.key))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Deserialize)]
struct NestedWire {
    key: String,
    filter: Wire<Filter>,
}

struct ConditionVisitor;

impl<'de> Visitor<'de> for ConditionVisitor {
    type Value = Condition;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a condition object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Condition, A::Error> {
        let mut key: Option<String> = None;
        let mut checks: Vec<FieldCheck> = Vec::new();
        let mut single: Option<Condition> = None;
        let mut sub = Filter::default();
        let mut is_sub = false;
        let mut unknown: Vec<String> = Vec::new();
        while let Some(Key(k)) = m.next_key()? {
            match k.as_ref() {
                "key" => key = Some(m.next_value()?),
                "match" => checks.extend(m.next_value::<Option<MatchWire>>()?.map(|w| w.0)),
                "range" | "datetime_range" => {
                    checks.extend(m.next_value::<Option<RangeWire>>()?.map(|w| w.0))
                }
                "values_count" => checks.extend(
                    m.next_value::<Option<NumberBounds>>()?
                        .map(|b| FieldCheck::ValuesCount(b.0)),
                ),
                "is_empty" => match m.next_value::<Option<FlagOrKey>>()? {
                    Some(FlagOrKey::Flag(b)) => checks.push(FieldCheck::Empty(b)),
                    Some(FlagOrKey::Key(k)) => single = Some(Condition::IsEmpty(k)),
                    None => {}
                },
                "is_null" => match m.next_value::<Option<FlagOrKey>>()? {
                    Some(FlagOrKey::Flag(b)) => checks.push(FieldCheck::Null(b)),
                    Some(FlagOrKey::Key(k)) => single = Some(Condition::IsNull(k)),
                    None => {}
                },
                "has_id" => {
                    if let Some(ids) = m.next_value::<Option<Vec<PointId>>>()? {
                        single = Some(Condition::HasId(ids.into_iter().collect::<IdSet>()));
                    }
                }
                "has_vector" => {
                    if let Some(name) = m.next_value::<Option<String>>()? {
                        single = Some(Condition::HasVector(name));
                    }
                }
                "nested" => {
                    if let Some(n) = m.next_value::<Option<NestedWire>>()? {
                        single = Some(Condition::Nested {
                            key: n.key,
                            filter: n.filter.0,
                        });
                    }
                }
                "must" => {
                    is_sub = true;
                    sub.must = m.next_value::<Conditions>()?.0;
                }
                "should" => {
                    is_sub = true;
                    sub.should = m.next_value::<Conditions>()?.0;
                }
                "must_not" => {
                    is_sub = true;
                    sub.must_not = m.next_value::<Conditions>()?.0;
                }
                "min_should" => {
                    is_sub = true;
                    sub.min_should = m
                        .next_value::<Option<MinShould>>()?
                        .map(|ms| (ms.conditions.0, ms.min_count));
                }
                other => {
                    if m.next_value::<Option<IgnoredAny>>()?.is_some() {
                        unknown.push(other.to_string());
                    }
                }
            }
        }
        if let Some(key) = key {
            if let Some(field) = unknown.first() {
                return Err(de::Error::custom(format!(
                    "unsupported field condition `{field}` on `{key}`; supported: match, range, values_count, is_empty, is_null"
                )));
            }
            if checks.is_empty() {
                return Err(de::Error::custom(format!(
                    "condition on `{key}` has no match, range or values_count"
                )));
            }
            return Ok(Condition::Field { key, checks });
        }
        if !unknown.is_empty() {
            return Err(de::Error::custom(format!(
                "unsupported condition with fields {unknown:?}; supported: key (match, range, values_count), is_empty, is_null, has_id, has_vector, nested, and sub-filters"
            )));
        }
        match (single, is_sub) {
            (Some(c), false) => Ok(c),
            (None, true) => Ok(Condition::Filter(sub)),
            (Some(_), true) => Err(de::Error::custom(
                "a condition mixes a sub-filter (must, should, must_not) with another condition; nest them in `must`",
            )),
            (None, false) => Err(de::Error::custom(
                "empty condition; expected key, is_empty, is_null, has_id, has_vector, nested or a sub-filter",
            )),
        }
    }
}

/// A keyword, integer or boolean to match.
pub struct ScalarWire(pub Scalar);

impl<'de> Deserialize<'de> for ScalarWire {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ScalarWire;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a keyword, integer or boolean")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ScalarWire, E> {
                Ok(ScalarWire(Scalar::Str(v.to_string())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<ScalarWire, E> {
                Ok(ScalarWire(Scalar::Str(v)))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<ScalarWire, E> {
                Ok(ScalarWire(Scalar::Bool(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ScalarWire, E> {
                Ok(ScalarWire(Scalar::Int(v)))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ScalarWire, E> {
                i64::try_from(v)
                    .map(|v| ScalarWire(Scalar::Int(v)))
                    .map_err(|_| E::custom(format!("{v} is too large for an integer match")))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<ScalarWire, E> {
                Err(E::custom(format!(
                    "{v} is not an integer; match floats with a range"
                )))
            }
        }
        d.deserialize_any(V)
    }
}

/// `match`: exactly one of `value`, `text`, `any`, `except`.
struct MatchWire(FieldCheck);

impl<'de> Deserialize<'de> for MatchWire {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = MatchWire;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a match object: value, text, any or except")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<MatchWire, A::Error> {
                let mut found: Option<FieldCheck> = None;
                while let Some(Key(k)) = m.next_key()? {
                    let check = match k.as_ref() {
                        "value" => FieldCheck::Value(m.next_value::<ScalarWire>()?.0),
                        "text" => FieldCheck::Text(m.next_value()?),
                        "any" => FieldCheck::Any(scalars(m.next_value()?)),
                        "except" => FieldCheck::Except(scalars(m.next_value()?)),
                        other => {
                            return Err(de::Error::custom(format!(
                                "unsupported match `{other}`; expected value, text, any or except"
                            )))
                        }
                    };
                    if found.replace(check).is_some() {
                        return Err(de::Error::custom(
                            "expected exactly one of value, text, any, except",
                        ));
                    }
                }
                found.map(MatchWire).ok_or_else(|| {
                    de::Error::custom("expected exactly one of value, text, any, except")
                })
            }
        }
        d.deserialize_map(V)
    }
}

fn scalars(list: Vec<ScalarWire>) -> Vec<Scalar> {
    list.into_iter().map(|s| s.0).collect()
}

/// A range bound: a number, or an RFC 3339 datetime.
enum BoundWire {
    Number(f64),
    Datetime(i64),
}

impl<'de> Deserialize<'de> for BoundWire {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = BoundWire;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number or an RFC 3339 datetime")
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<BoundWire, E> {
                Ok(BoundWire::Number(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<BoundWire, E> {
                Ok(BoundWire::Number(v as f64))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<BoundWire, E> {
                Ok(BoundWire::Number(v as f64))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<BoundWire, E> {
                parse_datetime(v).map(BoundWire::Datetime).ok_or_else(|| {
                    E::custom(format!(
                        "\"{v}\" is neither a number nor an RFC 3339 datetime"
                    ))
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// The four bounds of a range, as read.
fn read_bounds<'de, A: MapAccess<'de>>(mut m: A) -> Result<[Option<BoundWire>; 4], A::Error> {
    let mut out: [Option<BoundWire>; 4] = [None, None, None, None];
    while let Some(Key(k)) = m.next_key()? {
        let at = match k.as_ref() {
            "lt" => 0,
            "gt" => 1,
            "gte" => 2,
            "lte" => 3,
            other => {
                return Err(de::Error::custom(format!(
                    "unknown bound `{other}`; expected lt, gt, gte or lte"
                )))
            }
        };
        out[at] = m.next_value()?;
    }
    Ok(out)
}

fn to_bounds<T>([lt, gt, gte, lte]: [Option<T>; 4]) -> Bounds<T> {
    Bounds { lt, gt, gte, lte }
}

/// `range`: numbers, or datetimes (all bounds of one kind).
struct RangeWire(FieldCheck);

impl<'de> Deserialize<'de> for RangeWire {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RangeWire;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a range object (lt, gt, gte, lte)")
            }
            fn visit_map<A: MapAccess<'de>>(self, m: A) -> Result<RangeWire, A::Error> {
                let bounds = read_bounds(m)?;
                let numbers = bounds
                    .iter()
                    .all(|b| !matches!(b, Some(BoundWire::Datetime(_))));
                if numbers {
                    return Ok(RangeWire(FieldCheck::Range(to_bounds(bounds.map(|b| {
                        b.map(|b| match b {
                            BoundWire::Number(x) => x,
                            BoundWire::Datetime(_) => unreachable!("checked above"),
                        })
                    })))));
                }
                if bounds
                    .iter()
                    .any(|b| matches!(b, Some(BoundWire::Number(_))))
                {
                    return Err(de::Error::custom(
                        "a range mixes numbers and datetimes; give every bound as an RFC 3339 datetime",
                    ));
                }
                Ok(RangeWire(FieldCheck::DatetimeRange(to_bounds(bounds.map(
                    |b| {
                        b.map(|b| match b {
                            BoundWire::Datetime(x) => x,
                            BoundWire::Number(_) => unreachable!("checked above"),
                        })
                    },
                )))))
            }
        }
        d.deserialize_map(V)
    }
}

/// `values_count`: numeric bounds.
struct NumberBounds(Bounds<f64>);

impl<'de> Deserialize<'de> for NumberBounds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match RangeWire::deserialize(d)?.0 {
            FieldCheck::Range(b) => Ok(NumberBounds(b)),
            _ => Err(de::Error::custom("values_count takes numbers")),
        }
    }
}

impl Serialize for Filter {
    /// Qdrant's JSON shape, which [`Filter`]'s `Deserialize` reads back to an equal filter.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        for (k, cs) in [
            ("must", &self.must),
            ("should", &self.should),
            ("must_not", &self.must_not),
        ] {
            if !cs.is_empty() {
                m.serialize_entry(k, cs)?;
            }
        }
        if let Some((conditions, min_count)) = &self.min_should {
            m.serialize_entry(
                "min_should",
                &MinShouldOut {
                    conditions,
                    min_count: *min_count,
                },
            )?;
        }
        m.end()
    }
}

#[derive(Serialize)]
struct MinShouldOut<'a> {
    conditions: &'a [Condition],
    min_count: usize,
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

/// Bounds, each written by `write`.
struct BoundsOut<'a, T, F>(&'a Bounds<T>, F);

impl<T: Copy, F: Fn(T) -> BoundOut> Serialize for BoundsOut<'_, T, F> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        let b = self.0;
        for (k, v) in [("lt", b.lt), ("gt", b.gt), ("gte", b.gte), ("lte", b.lte)] {
            if let Some(v) = v {
                m.serialize_entry(k, &(self.1)(v))?;
            }
        }
        m.end()
    }
}

/// One bound as written: a number, or a datetime (UTC microseconds) as RFC 3339.
enum BoundOut {
    Number(f64),
    Datetime(i64),
}

impl Serialize for BoundOut {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match *self {
            BoundOut::Number(x) => s.serialize_f64(x),
            BoundOut::Datetime(micros) => match DateTime::from_timestamp_micros(micros) {
                Some(dt) => s.collect_str(&dt.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)),
                None => s.serialize_none(),
            },
        }
    }
}

/// A field check's value inside `match`.
struct MatchOut<'a>(&'a FieldCheck);

impl Serialize for MatchOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(1))?;
        match self.0 {
            FieldCheck::Value(v) => m.serialize_entry("value", v)?,
            FieldCheck::Text(t) | FieldCheck::Tokens(t) => m.serialize_entry("text", t)?,
            FieldCheck::Any(vs) => m.serialize_entry("any", vs)?,
            FieldCheck::Except(vs) => m.serialize_entry("except", vs)?,
            _ => {}
        }
        m.end()
    }
}

/// The JSON key a check is written under inside a field condition.
fn check_key(c: &FieldCheck) -> &'static str {
    match c {
        FieldCheck::Value(_)
        | FieldCheck::Text(_)
        | FieldCheck::Tokens(_)
        | FieldCheck::Any(_)
        | FieldCheck::Except(_) => "match",
        FieldCheck::Range(_) | FieldCheck::DatetimeRange(_) => "range",
        FieldCheck::ValuesCount(_) => "values_count",
        FieldCheck::Empty(_) => "is_empty",
        FieldCheck::Null(_) => "is_null",
    }
}

fn write_check<M: SerializeMap>(m: &mut M, c: &FieldCheck) -> Result<(), M::Error> {
    let k = check_key(c);
    match c {
        FieldCheck::Range(b) | FieldCheck::ValuesCount(b) => {
            m.serialize_entry(k, &BoundsOut(b, BoundOut::Number))
        }
        FieldCheck::DatetimeRange(b) => m.serialize_entry(k, &BoundsOut(b, BoundOut::Datetime)),
        FieldCheck::Empty(e) | FieldCheck::Null(e) => m.serialize_entry(k, e),
        other => m.serialize_entry(k, &MatchOut(other)),
    }
}

/// A field condition holding exactly one check.
struct OneCheck<'a>(&'a str, &'a FieldCheck);

impl Serialize for OneCheck<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(2))?;
        m.serialize_entry("key", self.0)?;
        write_check(&mut m, self.1)?;
        m.end()
    }
}

/// Field conditions whose checks share a JSON key, written as `{"must": [one per check]}`.
struct AllChecks<'a>(&'a str, &'a [FieldCheck]);

impl Serialize for AllChecks<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.1.len()))?;
        for c in self.1 {
            seq.serialize_element(&OneCheck(self.0, c))?;
        }
        seq.end()
    }
}

#[derive(Serialize)]
struct KeyOut<'a> {
    key: &'a str,
}

#[derive(Serialize)]
struct NestedOut<'a> {
    key: &'a str,
    filter: &'a Filter,
}

impl Serialize for Condition {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Condition::Field { key, checks } => {
                let distinct = checks.iter().enumerate().all(|(i, c)| {
                    checks[..i]
                        .iter()
                        .all(|other| check_key(other) != check_key(c))
                });
                let mut m = s.serialize_map(None)?;
                if distinct {
                    m.serialize_entry("key", key)?;
                    for c in checks {
                        write_check(&mut m, c)?;
                    }
                } else {
                    m.serialize_entry("must", &AllChecks(key, checks))?;
                }
                m.end()
            }
            Condition::IsEmpty(key) => one_entry(s, "is_empty", &KeyOut { key }),
            Condition::IsNull(key) => one_entry(s, "is_null", &KeyOut { key }),
            Condition::HasId(ids) => {
                let mut sorted: Vec<&PointId> = ids.0.iter().collect();
                sorted.sort();
                one_entry(s, "has_id", &sorted)
            }
            Condition::HasVector(name) => one_entry(s, "has_vector", name),
            Condition::Nested { key, filter } => one_entry(s, "nested", &NestedOut { key, filter }),
            Condition::Filter(f) => f.serialize(s),
        }
    }
}

fn one_entry<S: Serializer, V: Serialize + ?Sized>(
    s: S,
    key: &str,
    value: &V,
) -> Result<S::Ok, S::Error> {
    let mut m = s.serialize_map(Some(1))?;
    m.serialize_entry(key, value)?;
    m.end()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::filter::tests::point;
    use serde_json::json;

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
                {"key": "x", "is_empty": false, "is_null": true, "geo_radius": null}
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
    fn nulls_are_ignored_and_a_single_condition_needs_no_list() {
        let f: Filter = serde_json::from_value(json!({
            "must": {"key": "a", "match": {"value": 1}, "range": null},
            "should": null,
            "min_should": null
        }))
        .unwrap();
        assert_eq!(f.must.len(), 1);
        assert!(f.should.is_empty() && f.min_should.is_none());
    }
}
