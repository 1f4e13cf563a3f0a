//! JSON payload access: dotted key paths, payload selectors, and set-payload merging.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::engine::point::Payload;
use crate::error::{Error, Result};

/// Calls `f` on each value at a dotted key path (`a.b`, `a[].b`, `a[0]`) until it returns
/// `true`, and returns whether it did. Allocates nothing, so filters can run it per point.
///
/// Arrays met on the way are descended into element by element, so `tags.name` reaches the
/// `name` of every object in `tags`; the values at the end are passed as stored (arrays intact).
pub fn any_value_at<'a>(
    payload: &'a Payload,
    path: &str,
    f: &mut dyn FnMut(&'a Value) -> bool,
) -> bool {
    visit_object(payload, path, f)
}

/// Like [`any_value_at`] over scalars: arrays at the end are flattened one level, nulls skipped.
pub fn any_scalar_at<'a>(
    payload: &'a Payload,
    path: &str,
    f: &mut dyn FnMut(&'a Value) -> bool,
) -> bool {
    any_value_at(payload, path, &mut |v| match v {
        Value::Array(items) => items.iter().filter(|x| !x.is_null()).any(&mut *f),
        Value::Null => false,
        other => f(other),
    })
}

/// A visit of the values at a path, stopping when the callback says so.
type Walk<'a> = fn(&'a Payload, &str, &mut dyn FnMut(&'a Value) -> bool) -> bool;

fn collect_at<'a>(payload: &'a Payload, path: &str, walk: Walk<'a>) -> Vec<&'a Value> {
    let mut out = Vec::new();
    walk(payload, path, &mut |v| {
        out.push(v);
        false
    });
    out
}

/// Every value at a dotted key path (see [`any_value_at`]).
pub fn values_at<'a>(payload: &'a Payload, path: &str) -> Vec<&'a Value> {
    collect_at(payload, path, any_value_at)
}

/// Every scalar value at a path (see [`any_scalar_at`]).
pub fn scalars_at<'a>(payload: &'a Payload, path: &str) -> Vec<&'a Value> {
    collect_at(payload, path, any_scalar_at)
}

/// Splits `a[]` / `a[3]` into the key and the bracket content.
fn split_index(segment: &str) -> (&str, Option<&str>) {
    match segment.strip_suffix(']').and_then(|s| s.split_once('[')) {
        Some((key, idx)) => (key, Some(idx)),
        None => (segment, None),
    }
}

fn visit_object<'a>(m: &'a Payload, path: &str, f: &mut dyn FnMut(&'a Value) -> bool) -> bool {
    let (segment, rest) = match path.split_once('.') {
        Some((segment, rest)) => (segment, Some(rest)),
        None => (path, None),
    };
    let (key, index) = split_index(segment);
    let Some(child) = m.get(key) else {
        return false;
    };
    match (index, child) {
        (None, v) => visit(v, rest, f),
        (Some(""), Value::Array(items)) => items.iter().any(|item| visit(item, rest, f)),
        (Some(i), Value::Array(items)) => i
            .parse::<usize>()
            .ok()
            .and_then(|i| items.get(i))
            .is_some_and(|item| visit(item, rest, f)),
        (Some(_), _) => false,
    }
}

fn visit<'a>(v: &'a Value, rest: Option<&str>, f: &mut dyn FnMut(&'a Value) -> bool) -> bool {
    match (rest, v) {
        (None, v) => f(v),
        (Some(rest), Value::Object(m)) => visit_object(m, rest, f),
        (Some(_), Value::Array(items)) => items.iter().any(|item| visit(item, rest, f)),
        _ => false,
    }
}

/// Which payload fields a response carries (`with_payload`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum WithPayload {
    /// All of it or none of it.
    All(bool),
    /// Only these keys.
    Include(Vec<String>),
    /// `{"include": [...]}` or `{"exclude": [...]}`.
    Selector(PayloadSelector),
}

/// An explicit include or exclude list.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PayloadSelector {
    /// Keep only these keys.
    Include(Vec<String>),
    /// Drop these keys.
    Exclude(Vec<String>),
}

impl WithPayload {
    /// The part of `payload` this selector asks for, or `None` when no payload is wanted.
    pub fn select(&self, payload: &Payload) -> Option<Payload> {
        match self {
            WithPayload::All(false) => None,
            WithPayload::All(true) => Some(payload.clone()),
            WithPayload::Include(keys) | WithPayload::Selector(PayloadSelector::Include(keys)) => {
                Some(include(payload, keys))
            }
            WithPayload::Selector(PayloadSelector::Exclude(keys)) => {
                let mut p = payload.clone();
                for k in keys {
                    remove_path(&mut p, k);
                }
                Some(p)
            }
        }
    }
}

fn include(payload: &Payload, keys: &[String]) -> Payload {
    let mut out = Payload::new();
    for key in keys {
        let mut parts = key.split('.').peekable();
        let (mut src, mut dst) = (payload, &mut out);
        while let Some(part) = parts.next() {
            let Some(v) = src.get(part) else { break };
            if parts.peek().is_none() {
                dst.insert(part.to_string(), v.clone());
                break;
            }
            let Value::Object(child) = v else { break };
            let entry = dst
                .entry(part.to_string())
                .or_insert_with(|| Value::Object(Payload::new()));
            let Value::Object(next) = entry else { break };
            src = child;
            dst = next;
        }
    }
    out
}

fn remove_path(payload: &mut Payload, key: &str) {
    match key.split_once('.') {
        None => {
            payload.remove(key);
        }
        Some((head, rest)) => {
            if let Some(Value::Object(child)) = payload.get_mut(head) {
                remove_path(child, rest);
            }
        }
    }
}

/// Merges `update` into `payload`, at the object found (or created) at `key` when given.
pub fn merge(payload: &mut Payload, update: &Payload, key: Option<&str>) -> Result<()> {
    let mut target = payload;
    if let Some(key) = key {
        for part in key.split('.') {
            let entry = target
                .entry(part.to_string())
                .or_insert_with(|| Value::Object(Payload::new()));
            if !entry.is_object() {
                *entry = Value::Object(Payload::new());
            }
            target = entry
                .as_object_mut()
                .ok_or_else(|| Error::bad(format!("`{key}` is not an object")))?;
        }
    }
    for (k, v) in update {
        target.insert(k.clone(), v.clone());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn payload(v: Value) -> Payload {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn dotted_paths_reach_into_objects_and_arrays() {
        let p = payload(json!({"a": {"b": 1}, "tags": [{"n": "x"}, {"n": "y"}], "arr": [1, 2]}));
        assert_eq!(values_at(&p, "a.b"), vec![&json!(1)]);
        assert_eq!(values_at(&p, "tags[].n"), vec![&json!("x"), &json!("y")]);
        assert_eq!(values_at(&p, "tags.n"), vec![&json!("x"), &json!("y")]);
        assert_eq!(values_at(&p, "arr[1]"), vec![&json!(2)]);
        assert!(values_at(&p, "missing.x").is_empty());
        assert_eq!(scalars_at(&p, "arr"), vec![&json!(1), &json!(2)]);
    }

    #[test]
    fn selectors_include_and_exclude_nested_keys() {
        let p = payload(json!({"a": {"b": 1, "c": 2}, "d": 3}));
        let inc: WithPayload = serde_json::from_value(json!(["a.b"])).unwrap();
        assert_eq!(inc.select(&p).unwrap(), payload(json!({"a": {"b": 1}})));
        let exc: WithPayload = serde_json::from_value(json!({"exclude": ["a"]})).unwrap();
        assert_eq!(exc.select(&p).unwrap(), payload(json!({"d": 3})));
        assert_eq!(WithPayload::All(false).select(&p), None);
    }

    #[test]
    fn merge_sets_top_level_or_nested_keys() {
        let mut p = payload(json!({"a": 1}));
        merge(&mut p, &payload(json!({"b": 2})), None).unwrap();
        merge(&mut p, &payload(json!({"c": 3})), Some("x.y")).unwrap();
        assert_eq!(p, payload(json!({"a": 1, "b": 2, "x": {"y": {"c": 3}}})));
    }
}
