//! Grouped search (`/points/query/groups`): the best points of a query, grouped by a payload
//! value. A pure function over a ranked list, shared by shards and the router.

use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::output::ScoredPoint;
use crate::payload::{scalars_at, WithPayload};
use crate::wire::MAX_RESULTS;

/// The grouping part of a `/points/query/groups` request.
#[derive(Clone, Debug, Deserialize)]
pub struct GroupsRequest {
    /// The payload key whose values name the groups (keyword or integer).
    pub group_by: String,
    /// Points per group (default 3).
    pub group_size: Option<usize>,
    /// Groups to return (default 10).
    pub limit: Option<usize>,
    /// Payload to return with each point (default: none).
    pub with_payload: Option<WithPayload>,
}

impl GroupsRequest {
    /// (group_size, limit), checked.
    pub fn sizes(&self) -> Result<(usize, usize)> {
        let (size, limit) = (self.group_size.unwrap_or(3), self.limit.unwrap_or(10));
        if size == 0 || limit == 0 || size.saturating_mul(limit) > MAX_RESULTS {
            return Err(Error::bad(format!(
                "group_size and limit must be at least 1, with at most {MAX_RESULTS} points in all"
            )));
        }
        if self.group_by.is_empty() {
            return Err(Error::bad("group_by must name a payload key"));
        }
        Ok((size, limit))
    }

    /// How many ranked points to fetch first: enough for full groups if values spread evenly.
    pub fn first_fetch(&self) -> Result<usize> {
        let (size, limit) = self.sizes()?;
        Ok((size * limit * 2).clamp(limit, MAX_RESULTS))
    }
}

/// The query behind a groups request: its own fields, minus grouping, fetching `asked`
/// points with their payload.
pub fn ranked_query(raw: &Value, asked: usize) -> Value {
    let mut q = raw.clone();
    if let Some(m) = q.as_object_mut() {
        for key in ["group_by", "group_size", "with_lookup", "offset"] {
            m.remove(key);
        }
    }
    q["limit"] = json!(asked);
    q["with_payload"] = json!(true);
    q
}

/// Whether a fetch of `fetched` points, which produced `groups` groups, should be widened.
pub fn needs_more(groups: usize, limit: usize, fetched: usize, asked: usize) -> bool {
    groups < limit && fetched == asked && asked < MAX_RESULTS
}

/// Groups ranked points (carrying their full payload) by the value at `group_by`, in rank order
/// of each group's best point; each point goes to every group its value (or values) names.
/// Hits get the payload `with_payload` selects.
pub fn group(points: &[ScoredPoint], req: &GroupsRequest) -> Result<Vec<Value>> {
    let (size, limit) = req.sizes()?;
    let select = req.with_payload.clone().unwrap_or(WithPayload::All(false));
    let mut groups: Vec<(Value, Vec<ScoredPoint>)> = Vec::new();
    for p in points {
        let Some(payload) = p.payload.as_ref() else {
            continue;
        };
        for key in scalars_at(payload, &req.group_by) {
            if !(key.is_string() || key.is_i64() || key.is_u64()) {
                continue;
            }
            let at = match groups.iter().position(|(k, _)| k == key) {
                Some(at) => at,
                None if groups.len() < limit => {
                    groups.push((key.clone(), Vec::new()));
                    groups.len() - 1
                }
                None => continue,
            };
            if groups[at].1.len() < size {
                let mut hit = p.clone();
                hit.payload = select.select(payload);
                groups[at].1.push(hit);
            }
        }
    }
    Ok(groups
        .into_iter()
        .map(|(id, hits)| json!({"id": id, "hits": hits}))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::point::PointId;

    fn p(id: u64, score: f32, doc: Value) -> ScoredPoint {
        ScoredPoint {
            id: PointId::Num(id),
            version: 0,
            score,
            payload: Some(json!({"doc": doc}).as_object().unwrap().clone()),
            vector: None,
        }
    }

    #[test]
    fn groups_follow_rank_order_and_respect_sizes() {
        let points = vec![
            p(1, 0.9, json!("a")),
            p(2, 0.8, json!("b")),
            p(3, 0.7, json!("a")),
            p(4, 0.6, json!("a")),
            p(5, 0.5, json!(["b", "c"])),
            p(6, 0.4, json!(7)),
        ];
        let req = GroupsRequest {
            group_by: "doc".into(),
            group_size: Some(2),
            limit: Some(3),
            with_payload: None,
        };
        let groups = group(&points, &req).unwrap();
        let ids: Vec<(Value, Vec<Value>)> = groups
            .iter()
            .map(|g| {
                (
                    g["id"].clone(),
                    g["hits"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|h| h["id"].clone())
                        .collect(),
                )
            })
            .collect();
        assert_eq!(
            ids,
            vec![
                (json!("a"), vec![json!(1), json!(3)]),
                (json!("b"), vec![json!(2), json!(5)]),
                (json!("c"), vec![json!(5)])
            ]
        );
        assert!(
            groups[0]["hits"][0]["payload"].is_null(),
            "payload only when asked"
        );
        assert!(needs_more(2, 3, 10, 10) && !needs_more(3, 3, 10, 10) && !needs_more(2, 3, 7, 10));
    }
}
