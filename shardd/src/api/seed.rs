//! The seed-style search API, `POST /v1/search`: its request shape and the translation of its
//! Mongo-style filter into Qdrant's filter model.
//!
//! `{"tags": ["physics"], "year": {"$gte": 2020}, "$or": [...]}` becomes the filter
//! `{"must": [{"key": "tags", "match": {"any": ["physics"]}}, {"key": "year", "range": {"gte": 2020}}, ...]}`.
//! Every error names the place in the filter the client wrote (`filter.year.$gte`).

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::api::request::check_limit;
use crate::engine::filter::{parse_datetime, Bounds, Condition, FieldCheck, Filter, Scalar};
use crate::engine::payload::WithPayload;
use crate::engine::search::{QueryVector, SearchRequest};
use crate::error::{Error, Result};
use crate::query::plan::QueryPlan;

/// `POST /v1/search`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedSearch {
    /// The collection to search.
    pub collection: String,
    /// A text query (needs an embedder).
    pub query: Option<String>,
    /// A vector query.
    pub vector: Option<Vec<f32>>,
    /// Which named vector to search (default: the unnamed one).
    pub using: Option<String>,
    /// How many results (default 10).
    pub top_k: Option<usize>,
    /// Mongo-style filter.
    pub filter: Option<Map<String, Value>>,
}

impl SeedSearch {
    /// The plan: one search with the payload, the filter translated.
    pub fn into_plan(self) -> Result<QueryPlan> {
        let vector = match (self.vector, self.query) {
            (Some(v), None) => v,
            (None, Some(_)) => {
                return Err(Error::bad(
                    "text queries need an embedder, and none is configured; send `vector`",
                ))
            }
            _ => return Err(Error::bad("give exactly one of `query` (text) or `vector`")),
        };
        let limit = self.top_k.unwrap_or(10);
        check_limit(limit, 0)?;
        Ok(QueryPlan::Search(SearchRequest {
            filter: self.filter.as_ref().map(translate).transpose()?,
            with_payload: WithPayload::All(true),
            ..SearchRequest::nearest(
                self.using.unwrap_or_default(),
                QueryVector::Dense(vector),
                limit,
            )
        }))
    }
}

/// A keyword, integer or boolean to match; `at` names it in the error.
fn scalar(v: &Value, at: &str) -> Result<Scalar, String> {
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

const OPERATORS: &str = "$eq, $ne, $in, $nin, $gt, $gte, $lt, $lte, $exists";

/// Translates a Mongo-style filter into a Qdrant filter.
pub fn translate(filter: &Map<String, Value>) -> Result<Filter> {
    translate_at(filter, "filter").map_err(Error::BadRequest)
}

fn translate_at(filter: &Map<String, Value>, at: &str) -> Result<Filter, String> {
    let mut out = Filter::default();
    for (key, value) in filter {
        let at = format!("{at}.{key}");
        match key.as_str() {
            "$and" => {
                for (i, f) in clauses(value, &at)?.into_iter().enumerate() {
                    out.must
                        .push(Condition::Filter(translate_at(f, &format!("{at}[{i}]"))?));
                }
            }
            "$or" => {
                let should = clauses(value, &at)?
                    .into_iter()
                    .enumerate()
                    .map(|(i, f)| translate_at(f, &format!("{at}[{i}]")).map(Condition::Filter))
                    .collect::<Result<_, String>>()?;
                out.must.push(Condition::Filter(Filter {
                    should,
                    ..Filter::default()
                }));
            }
            "$not" => match value {
                Value::Object(f) => out.must_not.push(Condition::Filter(translate_at(f, &at)?)),
                _ => return Err(format!("{at}: expected an object")),
            },
            op if op.starts_with('$') => {
                return Err(format!(
                    "{at}: unknown operator; at the top level use $and, $or or $not, and put {OPERATORS} under a field"
                ))
            }
            field => field_conditions(field, value, &at, &mut out)?,
        }
    }
    Ok(out)
}

fn clauses<'a>(value: &'a Value, at: &str) -> Result<Vec<&'a Map<String, Value>>, String> {
    value
        .as_array()
        .ok_or_else(|| format!("{at}: expected a list of filters"))?
        .iter()
        .enumerate()
        .map(|(i, v)| {
            v.as_object()
                .ok_or_else(|| format!("{at}[{i}]: expected an object"))
        })
        .collect()
}

fn field(key: &str, check: FieldCheck) -> Condition {
    Condition::Field {
        key: key.to_string(),
        checks: vec![check],
    }
}

/// Equality: keywords, integers and booleans match exactly; other numbers as a one-point range.
fn equals(key: &str, v: &Value, at: &str) -> Result<Condition, String> {
    match v {
        Value::Number(n) if !(n.is_i64() || n.is_u64()) => {
            let x = n.as_f64();
            Ok(field(
                key,
                FieldCheck::Range(Bounds {
                    gte: x,
                    lte: x,
                    ..Bounds::default()
                }),
            ))
        }
        Value::String(_) | Value::Bool(_) | Value::Number(_) => {
            Ok(field(key, FieldCheck::Value(scalar(v, at)?)))
        }
        other => Err(format!(
            "{at}: cannot match {other}; expected a string, number or boolean"
        )),
    }
}

fn any_of(v: &Value, at: &str) -> Result<Vec<Scalar>, String> {
    v.as_array()
        .ok_or_else(|| format!("{at}: expected a list"))?
        .iter()
        .enumerate()
        .map(|(i, x)| scalar(x, &format!("{at}[{i}]")))
        .collect()
}

/// A bound of a range: a number, or a date or datetime (RFC 3339).
enum Bound {
    Number(f64),
    Datetime(i64),
}

fn bound(v: &Value, at: &str) -> Result<Bound, String> {
    match v {
        Value::Number(n) => n
            .as_f64()
            .map(Bound::Number)
            .ok_or_else(|| format!("{at}: {n} is out of range")),
        Value::String(s) => parse_datetime(s).map(Bound::Datetime).ok_or_else(|| {
            format!("{at}: {v} is neither a number nor an RFC 3339 date or datetime")
        }),
        other => Err(format!(
            "{at}: expected a number or an RFC 3339 date or datetime, got {other}"
        )),
    }
}

fn range(bounds: Vec<(&str, Bound)>, at: &str) -> Result<FieldCheck, String> {
    fn set<T>(b: &mut Bounds<T>, op: &str, x: T) {
        match op {
            "$lt" => b.lt = Some(x),
            "$gt" => b.gt = Some(x),
            "$gte" => b.gte = Some(x),
            _ => b.lte = Some(x),
        }
    }
    if bounds.iter().all(|(_, b)| matches!(b, Bound::Number(_))) {
        let mut out = Bounds::default();
        for (op, b) in bounds {
            if let Bound::Number(x) = b {
                set(&mut out, op, x);
            }
        }
        return Ok(FieldCheck::Range(out));
    }
    let mut out = Bounds::default();
    for (op, b) in bounds {
        match b {
            Bound::Datetime(x) => set(&mut out, op, x),
            Bound::Number(_) => {
                return Err(format!(
                    "{at}.{op}: a number in a range of datetimes; give every bound as a date or datetime"
                ))
            }
        }
    }
    Ok(FieldCheck::DatetimeRange(out))
}

fn field_conditions(key: &str, value: &Value, at: &str, out: &mut Filter) -> Result<(), String> {
    match value {
        Value::Array(_) => out
            .must
            .push(field(key, FieldCheck::Any(any_of(value, at)?))),
        Value::Object(ops) => {
            let mut bounds = Vec::new();
            for (op, arg) in ops {
                let at = format!("{at}.{op}");
                match op.as_str() {
                    "$eq" => out.must.push(equals(key, arg, &at)?),
                    "$ne" => out.must_not.push(equals(key, arg, &at)?),
                    "$in" => out
                        .must
                        .push(field(key, FieldCheck::Any(any_of(arg, &at)?))),
                    "$nin" => out
                        .must_not
                        .push(field(key, FieldCheck::Any(any_of(arg, &at)?))),
                    "$gt" | "$gte" | "$lt" | "$lte" => bounds.push((op.as_str(), bound(arg, &at)?)),
                    "$exists" => match arg.as_bool() {
                        Some(true) => out.must_not.push(Condition::IsEmpty(key.to_string())),
                        Some(false) => out.must.push(Condition::IsEmpty(key.to_string())),
                        None => return Err(format!("{at}: expected true or false")),
                    },
                    _ => return Err(format!("{at}: unknown operator; use one of {OPERATORS}")),
                }
            }
            if !bounds.is_empty() {
                out.must.push(field(key, range(bounds, at)?));
            }
        }
        scalar => out.must.push(equals(key, scalar, at)?),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn t(v: Value) -> Result<Filter> {
        translate(v.as_object().unwrap())
    }

    fn qdrant(v: Value) -> Filter {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn the_design_example_translates() {
        let q = t(json!({"tags": ["physics"], "timestamp": {"$gte": "2024-01-01"}})).unwrap();
        assert_eq!(
            q,
            qdrant(json!({"must": [
                {"key": "tags", "match": {"any": ["physics"]}},
                {"key": "timestamp", "range": {"gte": "2024-01-01T00:00:00Z"}},
            ]}))
        );
    }

    #[test]
    fn operators_and_boolean_structure_translate() {
        let q = t(json!({"a": 1, "b": {"$ne": "x", "$in": [1, 2]}, "c": {"$exists": false}, "$or": [{"d": true}, {"e": 2.5}], "$not": {"f": "g"}})).unwrap();
        assert!(q
            .must
            .contains(&qdrant(json!({"must": [{"key": "a", "match": {"value": 1}}]})).must[0]));
        assert!(q.must.contains(&Condition::IsEmpty("c".into())));
        assert!(q.must.contains(&Condition::Filter(qdrant(json!({"should": [
            {"must": [{"key": "d", "match": {"value": true}}]},
            {"must": [{"key": "e", "range": {"gte": 2.5, "lte": 2.5}}]},
        ]})))));
        assert!(q
            .must_not
            .contains(&field("b", FieldCheck::Value(Scalar::Str("x".into())))));
        assert!(q.must_not.contains(&Condition::Filter(qdrant(
            json!({"must": [{"key": "f", "match": {"value": "g"}}]})
        ))));
    }

    #[test]
    fn errors_name_the_path_the_client_wrote() {
        let err = |v: Value| t(v).unwrap_err().to_string();
        let e = err(json!({"timestamp": {"$gte": "2024-13-45"}}));
        assert!(
            e.contains("filter.timestamp.$gte: \"2024-13-45\" is neither"),
            "{e}"
        );
        let e = err(json!({"$or": [{"n": {"$lt": "soon"}}]}));
        assert!(e.contains("filter.$or[0].n.$lt"), "{e}");
        let e = err(json!({"a": {"$regex": "x"}}));
        assert!(
            e.contains("filter.a.$regex: unknown operator; use one of $eq"),
            "{e}"
        );
        assert!(err(json!({"$nor": []})).contains("filter.$nor: unknown operator"));
        assert!(err(json!({"tags": ["a", 1.5]})).contains("filter.tags[1]: 1.5 is not an integer"));
        assert!(err(json!({"a": null})).contains("filter.a: cannot match null"));
        let e = err(json!({"ts": {"$gte": "2024-01-01", "$lt": 5}}));
        assert!(
            e.contains("filter.ts.$lt: a number in a range of datetimes"),
            "{e}"
        );
    }
}
