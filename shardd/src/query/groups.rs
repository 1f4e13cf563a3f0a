//! Grouped search (`/points/query/groups`): the best points of a query, grouped by a payload
//! value. A pure function over a ranked list of any [`Hit`].

use serde::Serialize;
use serde_json::Value;

use crate::query::plan::GroupsPlan;
use crate::query::Hit;

/// A group's id: a keyword or integer payload value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum GroupKey {
    /// A keyword.
    Str(String),
    /// A negative integer.
    Int(i64),
    /// A non-negative integer.
    UInt(u64),
}

impl GroupKey {
    /// The key a payload value names, if it can name a group.
    pub fn of(v: &Value) -> Option<GroupKey> {
        match v {
            Value::String(s) => Some(GroupKey::Str(s.clone())),
            Value::Number(n) => n
                .as_u64()
                .map(GroupKey::UInt)
                .or_else(|| n.as_i64().map(GroupKey::Int)),
            _ => None,
        }
    }
}

/// One group: its key and its best points.
#[derive(Clone, Debug, PartialEq)]
pub struct Group<H> {
    /// The payload value the group's points share.
    pub id: GroupKey,
    /// Its points, best first.
    pub hits: Vec<H>,
}

/// Groups ranked points (carrying their full payload) by the values at `group_by`, in rank
/// order of each group's best point; a point goes to every group its values name. Each hit
/// keeps the payload the plan's `with_payload` selects.
pub fn group<H: Hit>(points: &[H], plan: &GroupsPlan) -> Vec<Group<H>> {
    let mut groups: Vec<Group<H>> = Vec::new();
    for p in points {
        for key in p.group_keys(&plan.group_by) {
            let at = match groups.iter().position(|g| g.id == key) {
                Some(at) => at,
                None if groups.len() < plan.limit => {
                    groups.push(Group {
                        id: key,
                        hits: Vec::new(),
                    });
                    groups.len() - 1
                }
                None => continue,
            };
            if groups[at].hits.len() < plan.group_size {
                let mut hit = p.clone();
                hit.select_payload(&plan.with_payload);
                groups[at].hits.push(hit);
            }
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::payload::WithPayload;
    use crate::engine::point::{PointId, ScoredPoint};
    use crate::query::plan::{needs_more, ListRequest, QueryPlan};
    use serde_json::json;

    fn p(id: u64, score: f32, doc: Value) -> ScoredPoint {
        ScoredPoint {
            id: PointId::Num(id),
            version: 0,
            score,
            payload: Some(json!({"doc": doc}).as_object().unwrap().clone()),
            vectors: None,
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
        let plan = GroupsPlan {
            query: QueryPlan::List(ListRequest {
                filter: None,
                offset: 0,
                limit: 10,
                with_payload: WithPayload::All(true),
                with_vector: crate::engine::point::WithVector::All(false),
            }),
            group_by: "doc".into(),
            group_size: 2,
            limit: 3,
            with_payload: WithPayload::All(false),
        };
        let groups = group(&points, &plan);
        let ids: Vec<(GroupKey, Vec<PointId>)> = groups
            .iter()
            .map(|g| (g.id.clone(), g.hits.iter().map(|h| h.id).collect()))
            .collect();
        assert_eq!(
            ids,
            vec![
                (
                    GroupKey::Str("a".into()),
                    vec![PointId::Num(1), PointId::Num(3)]
                ),
                (
                    GroupKey::Str("b".into()),
                    vec![PointId::Num(2), PointId::Num(5)]
                ),
                (GroupKey::Str("c".into()), vec![PointId::Num(5)])
            ]
        );
        assert!(
            groups[0].hits[0].payload.is_none(),
            "payload only when asked"
        );
        assert!(needs_more(2, 3, 10, 10) && !needs_more(3, 3, 10, 10) && !needs_more(2, 3, 7, 10));
    }
}
