//! The seed-style search API, `POST /v1/search`: its request shape and the translation of its
//! Mongo-style filter into Qdrant's filter model.
//!
//! `{"tags": ["physics"], "year": {"$gte": 2020}, "$or": [...]}` becomes
//! `{"must": [{"key": "tags", "match": {"any": ["physics"]}}, {"key": "year", "range": {"gte": 2020}}, ...]}`.

use serde::Deserialize;
use serde_json::{json, Map, Value};
use shardd::error::{Error, Result};

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

/// Translates a Mongo-style filter into a Qdrant filter (as JSON, parsed by the engine later).
pub fn translate(filter: &Map<String, Value>) -> Result<Value> {
    let mut must = Vec::new();
    let mut must_not = Vec::new();
    for (key, value) in filter {
        match key.as_str() {
            "$and" => {
                for f in clauses(value, "$and")? {
                    must.push(translate(f)?);
                }
            }
            "$or" => {
                let any: Vec<Value> = clauses(value, "$or")?
                    .into_iter()
                    .map(translate)
                    .collect::<Result<_>>()?;
                must.push(json!({"should": any}));
            }
            "$not" => match value {
                Value::Object(f) => must_not.push(translate(f)?),
                _ => return Err(Error::bad("filter.$not: expected an object")),
            },
            op if op.starts_with('$') => {
                return Err(Error::bad(format!(
                    "filter: unknown operator `{op}` at the top level"
                )))
            }
            field => field_conditions(field, value, &mut must, &mut must_not)?,
        }
    }
    Ok(json!({"must": must, "must_not": must_not}))
}

fn clauses<'a>(value: &'a Value, op: &str) -> Result<Vec<&'a Map<String, Value>>> {
    value
        .as_array()
        .ok_or_else(|| Error::bad(format!("filter.{op}: expected a list of filters")))?
        .iter()
        .map(|v| {
            v.as_object()
                .ok_or_else(|| Error::bad(format!("filter.{op}: every entry must be an object")))
        })
        .collect()
}

fn equals(field: &str, v: &Value) -> Result<Value> {
    match v {
        Value::String(_) | Value::Bool(_) => Ok(json!({"key": field, "match": {"value": v}})),
        Value::Number(n) if n.is_i64() || n.is_u64() => {
            Ok(json!({"key": field, "match": {"value": v}}))
        }
        Value::Number(_) => Ok(json!({"key": field, "range": {"gte": v, "lte": v}})),
        other => Err(Error::bad(format!("filter.{field}: cannot match {other}"))),
    }
}

fn field_conditions(
    field: &str,
    value: &Value,
    must: &mut Vec<Value>,
    must_not: &mut Vec<Value>,
) -> Result<()> {
    match value {
        Value::Array(items) => must.push(json!({"key": field, "match": {"any": items}})),
        Value::Object(ops) => {
            let mut range = Map::new();
            for (op, arg) in ops {
                match op.as_str() {
                    "$eq" => must.push(equals(field, arg)?),
                    "$ne" => must_not.push(equals(field, arg)?),
                    "$in" => must.push(json!({"key": field, "match": {"any": arg}})),
                    "$nin" => must_not.push(json!({"key": field, "match": {"any": arg}})),
                    "$gt" | "$gte" | "$lt" | "$lte" => {
                        range.insert(op[1..].to_string(), arg.clone());
                    }
                    "$exists" => match arg.as_bool() {
                        Some(true) => must_not.push(json!({"is_empty": {"key": field}})),
                        Some(false) => must.push(json!({"is_empty": {"key": field}})),
                        None => {
                            return Err(Error::bad(format!(
                                "filter.{field}.$exists: expected true or false"
                            )))
                        }
                    },
                    other => {
                        return Err(Error::bad(format!(
                            "filter.{field}: unknown operator `{other}`"
                        )))
                    }
                }
            }
            if !range.is_empty() {
                must.push(json!({"key": field, "range": range}));
            }
        }
        scalar => must.push(equals(field, scalar)?),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(v: Value) -> Result<Value> {
        translate(v.as_object().unwrap())
    }

    #[test]
    fn the_design_example_translates() {
        let q = t(json!({"tags": ["physics"], "timestamp": {"$gte": "2024-01-01"}})).unwrap();
        assert_eq!(
            q,
            json!({"must": [
                {"key": "tags", "match": {"any": ["physics"]}},
                {"key": "timestamp", "range": {"gte": "2024-01-01"}},
            ], "must_not": []})
        );
    }

    #[test]
    fn operators_and_boolean_structure_translate() {
        let q = t(json!({"a": 1, "b": {"$ne": "x", "$in": [1, 2]}, "c": {"$exists": false}, "$or": [{"d": true}, {"e": 2.5}], "$not": {"f": "g"}})).unwrap();
        let must = q["must"].as_array().unwrap();
        assert!(must.contains(&json!({"key": "a", "match": {"value": 1}})));
        assert!(must.contains(&json!({"key": "b", "match": {"any": [1, 2]}})));
        assert!(must.contains(&json!({"is_empty": {"key": "c"}})));
        assert!(must.contains(&json!({"should": [
            {"must": [{"key": "d", "match": {"value": true}}], "must_not": []},
            {"must": [{"key": "e", "range": {"gte": 2.5, "lte": 2.5}}], "must_not": []},
        ]})));
        let not = q["must_not"].as_array().unwrap();
        assert!(not.contains(&json!({"key": "b", "match": {"value": "x"}})));
        assert!(
            not.contains(&json!({"must": [{"key": "f", "match": {"value": "g"}}], "must_not": []}))
        );
    }

    #[test]
    fn unknown_operators_are_named() {
        assert!(t(json!({"a": {"$regex": "x"}}))
            .unwrap_err()
            .to_string()
            .contains("$regex"));
        assert!(t(json!({"$nor": []}))
            .unwrap_err()
            .to_string()
            .contains("$nor"));
        assert!(t(json!({"a": null})).is_err());
    }
}
