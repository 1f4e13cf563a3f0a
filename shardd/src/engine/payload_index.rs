//! Payload indexes: per-field maps from values to point slots, so a selective filter reads the
//! slots it names instead of every payload.
//!
//! One ordered map per field holds every type (keyword, integer, float, bool, datetime, uuid,
//! text tokens), so equality, `any` and ranges are map lookups or range scans. A `text` index
//! gives `match.text` Qdrant's full-text meaning on that field: every query word present.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::engine::filter::{parse_datetime, Bounds, Condition, FieldCheck, Filter, Scalar};
use crate::engine::payload::scalars_at;
use crate::engine::point::Payload;
use crate::engine::text::tokens;

/// The type a payload index keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FieldType {
    /// Exact strings.
    Keyword,
    /// Integers (equality and ranges).
    Integer,
    /// Numbers (ranges).
    Float,
    /// Booleans.
    Bool,
    /// RFC 3339 datetimes (ranges).
    Datetime,
    /// UUID strings.
    Uuid,
    /// Lower-cased words, for `match.text`.
    Text,
}

/// An index key; one ordered map holds the keys of every type.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Key {
    Bool(bool),
    Int(i64),
    /// f64 bits mapped so that integer order is numeric order.
    Num(u64),
    Time(i64),
    Str(String),
}

fn ordered(x: f64) -> u64 {
    let bits = x.to_bits();
    if bits >> 63 == 1 {
        !bits
    } else {
        bits | (1 << 63)
    }
}

/// One field's index.
pub struct FieldIndex {
    kind: FieldType,
    map: BTreeMap<Key, BTreeSet<u32>>,
    points: BTreeSet<u32>,
}

impl FieldIndex {
    fn keys(&self, payload: &Payload, field: &str) -> Vec<Key> {
        let mut out = Vec::new();
        for v in scalars_at(payload, field) {
            match (self.kind, v) {
                (FieldType::Keyword, Value::String(s)) => out.push(Key::Str(s.clone())),
                (FieldType::Uuid, Value::String(s)) => {
                    if let Ok(u) = uuid::Uuid::parse_str(s) {
                        out.push(Key::Str(u.hyphenated().to_string()));
                    }
                }
                (FieldType::Integer, Value::Number(n)) => out.extend(n.as_i64().map(Key::Int)),
                (FieldType::Float, Value::Number(n)) => {
                    out.extend(n.as_f64().map(|x| Key::Num(ordered(x))))
                }
                (FieldType::Bool, Value::Bool(b)) => out.push(Key::Bool(*b)),
                (FieldType::Datetime, Value::String(s)) => {
                    out.extend(parse_datetime(s).map(Key::Time))
                }
                (FieldType::Text, Value::String(s)) => out.extend(tokens(s).map(Key::Str)),
                _ => {}
            }
        }
        out
    }

    fn slots(&self, key: &Key) -> impl Iterator<Item = u32> + '_ {
        self.map.get(key).into_iter().flatten().copied()
    }

    fn range<T: Copy + PartialOrd>(
        &self,
        b: &Bounds<T>,
        key: impl Fn(T) -> Key,
        from_key: impl Fn(&Key) -> Option<T>,
    ) -> BTreeSet<u32> {
        use std::ops::Bound::{Excluded, Included, Unbounded};
        let lower = match (b.gte, b.gt) {
            (Some(x), _) => Included(key(x)),
            (None, Some(x)) => Excluded(key(x)),
            _ => Unbounded,
        };
        let upper = match (b.lte, b.lt) {
            (Some(x), _) => Included(key(x)),
            (None, Some(x)) => Excluded(key(x)),
            _ => Unbounded,
        };
        self.map
            .range((lower, upper))
            .filter(|(k, _)| from_key(k).is_some_and(|x| b.contains_value(x)))
            .flat_map(|(_, s)| s.iter().copied())
            .collect()
    }

    /// The slots satisfying `check`, when this index can answer it exactly.
    fn lookup(&self, check: &FieldCheck) -> Option<BTreeSet<u32>> {
        let scalar = |s: &Scalar| -> Option<Key> {
            match (self.kind, s) {
                (FieldType::Keyword, Scalar::Str(v)) => Some(Key::Str(v.clone())),
                (FieldType::Uuid, Scalar::Str(v)) => uuid::Uuid::parse_str(v)
                    .ok()
                    .map(|u| Key::Str(u.hyphenated().to_string())),
                (FieldType::Integer, Scalar::Int(i)) => Some(Key::Int(*i)),
                (FieldType::Bool, Scalar::Bool(b)) => Some(Key::Bool(*b)),
                _ => None,
            }
        };
        match check {
            FieldCheck::Value(s) => scalar(s).map(|k| self.slots(&k).collect()),
            FieldCheck::Any(list) => {
                let keys: Option<Vec<Key>> = list.iter().map(scalar).collect();
                keys.map(|ks| ks.iter().flat_map(|k| self.slots(k)).collect())
            }
            FieldCheck::Range(b) => match self.kind {
                FieldType::Float => Some(self.range(
                    b,
                    |x: f64| Key::Num(ordered(x)),
                    |k| match k {
                        Key::Num(u) => Some(if u >> 63 == 1 {
                            f64::from_bits(u & !(1 << 63))
                        } else {
                            f64::from_bits(!u)
                        }),
                        _ => None,
                    },
                )),
                FieldType::Integer => {
                    let ints = Bounds {
                        lt: b.lt.map(|x| x.ceil() as i64),
                        gt: b.gt.map(|x| x.floor() as i64),
                        gte: b.gte.map(|x| x.ceil() as i64),
                        lte: b.lte.map(|x| x.floor() as i64),
                    };
                    Some(self.range(&ints, Key::Int, |k| match k {
                        Key::Int(i) => Some(*i),
                        _ => None,
                    }))
                }
                _ => None,
            },
            FieldCheck::DatetimeRange(b) if self.kind == FieldType::Datetime => {
                Some(self.range(b, Key::Time, |k| match k {
                    Key::Time(t) => Some(*t),
                    _ => None,
                }))
            }
            FieldCheck::Tokens(text) if self.kind == FieldType::Text => {
                let mut words = tokens(text).peekable();
                words.peek()?;
                let mut out: Option<BTreeSet<u32>> = None;
                for w in words {
                    let hits: BTreeSet<u32> = self.slots(&Key::Str(w)).collect();
                    out = Some(match out {
                        None => hits,
                        Some(prev) => prev.intersection(&hits).copied().collect(),
                    });
                }
                out
            }
            _ => None,
        }
    }
}

/// The payload indexes of a collection.
#[derive(Default)]
pub struct PayloadIndexes {
    fields: BTreeMap<String, FieldIndex>,
}

impl PayloadIndexes {
    /// The indexed fields and their types.
    pub fn schema(&self) -> BTreeMap<String, FieldType> {
        self.fields
            .iter()
            .map(|(k, f)| (k.clone(), f.kind))
            .collect()
    }

    /// Points with at least one indexed value, per field.
    pub fn points(&self, field: &str) -> usize {
        self.fields.get(field).map_or(0, |f| f.points.len())
    }

    /// Creates (or replaces) the index of `field`, indexing `payloads` (slot, payload).
    pub fn create<'a>(
        &mut self,
        field: &str,
        kind: FieldType,
        payloads: impl Iterator<Item = (u32, &'a Payload)>,
    ) {
        let mut index = FieldIndex {
            kind,
            map: BTreeMap::new(),
            points: BTreeSet::new(),
        };
        for (slot, payload) in payloads {
            for k in index.keys(payload, field) {
                index.map.entry(k).or_default().insert(slot);
                index.points.insert(slot);
            }
        }
        self.fields.insert(field.to_string(), index);
    }

    /// Drops the index of `field`; `false` when there was none.
    pub fn drop_field(&mut self, field: &str) -> bool {
        self.fields.remove(field).is_some()
    }

    /// Indexes a point's payload under `slot`.
    pub fn insert(&mut self, slot: u32, payload: &Payload) {
        for (field, index) in &mut self.fields {
            for k in index.keys(payload, field) {
                index.map.entry(k).or_default().insert(slot);
                index.points.insert(slot);
            }
        }
    }

    /// Removes a point's payload, indexed under `slot` before.
    pub fn remove(&mut self, slot: u32, payload: &Payload) {
        for (field, index) in &mut self.fields {
            for k in index.keys(payload, field) {
                if let Some(set) = index.map.get_mut(&k) {
                    set.remove(&slot);
                    if set.is_empty() {
                        index.map.remove(&k);
                    }
                }
            }
            index.points.remove(&slot);
        }
    }

    /// The filter as evaluated with these indexes: `match.text` on a text-indexed field means
    /// "every word present", and UUIDs matched on a uuid-indexed field are compared in canonical
    /// form (dashes or not), as in Qdrant.
    pub fn resolve(&self, filter: &Filter) -> Filter {
        let conds = |cs: &[Condition]| cs.iter().map(|c| self.resolve_condition(c)).collect();
        Filter {
            must: conds(&filter.must),
            should: conds(&filter.should),
            must_not: conds(&filter.must_not),
            min_should: filter.min_should.as_ref().map(|(cs, n)| (conds(cs), *n)),
        }
    }

    fn resolve_condition(&self, c: &Condition) -> Condition {
        let canonical = |s: &Scalar| match s {
            Scalar::Str(v) => uuid::Uuid::parse_str(v)
                .map_or_else(|_| s.clone(), |u| Scalar::Str(u.hyphenated().to_string())),
            other => other.clone(),
        };
        match c {
            Condition::Field { key, checks } => {
                let kind = self.fields.get(key).map(|f| f.kind);
                Condition::Field {
                    key: key.clone(),
                    checks: checks
                        .iter()
                        .map(|ch| match (kind, ch) {
                            (Some(FieldType::Uuid), FieldCheck::Value(v)) => {
                                FieldCheck::Value(canonical(v))
                            }
                            (Some(FieldType::Uuid), FieldCheck::Any(vs)) => {
                                FieldCheck::Any(vs.iter().map(canonical).collect())
                            }
                            (Some(FieldType::Text), FieldCheck::Text(t)) => {
                                FieldCheck::Tokens(t.clone())
                            }
                            (_, other) => other.clone(),
                        })
                        .collect(),
                }
            }
            Condition::Filter(f) => Condition::Filter(self.resolve(f)),
            other => other.clone(),
        }
    }

    /// A superset of the slots matching a resolved `filter`, from the indexed conditions among
    /// its `must`; `None` when none can narrow it (the caller scans).
    pub fn candidates(&self, filter: &Filter) -> Option<BTreeSet<u32>> {
        let mut out: Option<BTreeSet<u32>> = None;
        for c in &filter.must {
            let Condition::Field { key, checks } = c else {
                continue;
            };
            let Some(index) = self.fields.get(key) else {
                continue;
            };
            for check in checks {
                if let Some(hits) = index.lookup(check) {
                    out = Some(match out {
                        None => hits,
                        Some(prev) => prev.intersection(&hits).copied().collect(),
                    });
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn payloads() -> Vec<Payload> {
        (0..100)
            .map(|i| {
                json!({
                    "tenant": format!("t{}", i % 10),
                    "n": i,
                    "price": i as f64 / 4.0,
                    "ok": i % 2 == 0,
                    "ts": format!("2024-01-{:02}T00:00:00Z", 1 + i % 28),
                    "body": if i % 3 == 0 { "Quantum physics, explained" } else { "biology notes" },
                    "id": format!("00000000-0000-0000-0000-{i:012}"),
                })
                .as_object()
                .unwrap()
                .clone()
            })
            .collect()
    }

    fn indexed() -> PayloadIndexes {
        let ps = payloads();
        let mut idx = PayloadIndexes::default();
        for (field, kind) in [
            ("tenant", FieldType::Keyword),
            ("n", FieldType::Integer),
            ("price", FieldType::Float),
            ("ok", FieldType::Bool),
            ("ts", FieldType::Datetime),
            ("body", FieldType::Text),
            ("id", FieldType::Uuid),
        ] {
            idx.create(
                field,
                kind,
                ps.iter().enumerate().map(|(i, p)| (i as u32, p)),
            );
        }
        idx
    }

    fn filter(v: serde_json::Value) -> Filter {
        serde_json::from_value(v).unwrap()
    }

    /// Indexed candidates, evaluated, equal a scan of every payload.
    fn agrees(idx: &PayloadIndexes, f: serde_json::Value) -> usize {
        let f = idx.resolve(&filter(f));
        let cand = idx.candidates(&f).expect("indexed");
        struct P<'a>(&'a Payload);
        impl crate::engine::filter::PointView for P<'_> {
            fn id(&self) -> crate::engine::point::PointId {
                crate::engine::point::PointId::Num(0)
            }
            fn payload(&self) -> &Payload {
                self.0
            }
            fn has_vector(&self, _: &str) -> bool {
                false
            }
        }
        let ps = payloads();
        let scanned: Vec<u32> = (0..100u32)
            .filter(|&i| f.matches(&P(&ps[i as usize])))
            .collect();
        let via_index: Vec<u32> = cand
            .into_iter()
            .filter(|&i| f.matches(&P(&ps[i as usize])))
            .collect();
        assert_eq!(via_index, scanned);
        scanned.len()
    }

    #[test]
    fn every_type_answers_like_a_scan() {
        let idx = indexed();
        assert_eq!(
            agrees(
                &idx,
                json!({"must": [{"key": "tenant", "match": {"value": "t3"}}]})
            ),
            10
        );
        assert_eq!(
            agrees(
                &idx,
                json!({"must": [{"key": "tenant", "match": {"any": ["t1", "t2"]}}, {"key": "ok", "match": {"value": true}}]})
            ),
            10
        );
        assert_eq!(
            agrees(
                &idx,
                json!({"must": [{"key": "n", "range": {"gt": 10.5, "lte": 20}}]})
            ),
            10
        );
        assert_eq!(
            agrees(
                &idx,
                json!({"must": [{"key": "price", "range": {"gte": -1, "lt": 2.5}}]})
            ),
            10
        );
        assert_eq!(
            agrees(
                &idx,
                json!({"must": [{"key": "ts", "range": {"gte": "2024-01-27", "lt": "2024-02-01"}}]})
            ),
            6
        );
        assert_eq!(
            agrees(
                &idx,
                json!({"must": [{"key": "body", "match": {"text": "PHYSICS quantum"}}]})
            ),
            34
        );
        assert_eq!(
            agrees(
                &idx,
                json!({"must": [{"key": "id", "match": {"value": "00000000000000000000000000000007"}}]})
            ),
            1
        );
        assert_eq!(
            agrees(
                &idx,
                json!({"must": [{"key": "n", "match": {"value": 5}}, {"key": "tenant", "match": {"value": "t5"}}]})
            ),
            1
        );
    }

    #[test]
    fn updates_and_removals_keep_the_index_exact() {
        let mut idx = indexed();
        let ps = payloads();
        idx.remove(3, &ps[3]);
        let moved = json!({"tenant": "t9"}).as_object().unwrap().clone();
        idx.insert(3, &moved);
        let f = filter(json!({"must": [{"key": "tenant", "match": {"value": "t9"}}]}));
        assert!(idx.candidates(&f).unwrap().contains(&3));
        let f = filter(json!({"must": [{"key": "tenant", "match": {"value": "t3"}}]}));
        assert!(!idx.candidates(&f).unwrap().contains(&3));
        assert_eq!(idx.points("n"), 99);
        assert!(idx.drop_field("n"));
        assert!(idx
            .candidates(&filter(
                json!({"must": [{"key": "n", "match": {"value": 1}}]})
            ))
            .is_none());
    }
}
