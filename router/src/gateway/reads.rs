//! Reads from shards: one replica per shard by the read policy, retried on another, and
//! scattered over every shard, then gathered (collections, counts, scroll pages, points by id).

use std::collections::HashMap;
use std::time::Instant as StdInstant;

use bytes::Bytes;
use futures_util::future::join_all;
use http::Method;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use shardd::api::request::{GetPointsRequest, ScrollRequest};
use shardd::api::response::{envelope, Answer as Written};
use shardd::api::CountResult;
use shardd::engine::point::PointId;
use tokio::time::Instant;

use super::{encode_segment, read_result, Ctx, Done, Listed};
use crate::balance::{pick, Replica};
use crate::config::ReadPolicy;
use crate::coordination::url_hash;
use crate::error::{Attempt, CallKind, GatewayError, ShardFailure};
use crate::merge::merge_by_id;
use crate::scatter::RawHit;
use crate::topology::{ShardKind, ShardRoute};
use crate::upstream::{call_builtin, client, traced, Answer, CallError};

/// Ids per page of a count taken while points move.
const COUNT_PAGE: usize = 10_000;
/// How often a read waiting for a version looks again.
const BEHIND_POLL: std::time::Duration = std::time::Duration::from_millis(50);

impl Ctx<'_> {
    /// Reads from one replica of `shard`, retrying other replicas on failure until the
    /// deadline; an answer below 500 (a 4xx included) ends the read, except a 404 while another
    /// replica could still answer: a replica that lost its data (or has not been filled yet)
    /// must not make a point or a collection disappear, so it is asked of the next one.
    pub(crate) async fn read_one(
        &self,
        shard: &ShardRoute,
        policy: ReadPolicy,
        method: &Method,
        path: &str,
        body: Bytes,
    ) -> Result<Answer, ShardFailure> {
        let failed = |attempts| ShardFailure {
            shard: shard.name.clone(),
            attempts,
        };
        match &shard.kind {
            ShardKind::Builtin(s) => self
                .call_in_process(&shard.name, s, method, path, body)
                .await
                .map_err(|e| {
                    failed(vec![Attempt {
                        replica: "built-in".into(),
                        kind: kind_of(e),
                    }])
                }),
            ShardKind::Remote(replicas) => {
                let started = Instant::now();
                let mut refresh = false;
                loop {
                    // A read that must see a write skips the replicas other routers know
                    // missed it (this router's own such replicas are lagging, never picked).
                    let mut tried = match self.behind(replicas, refresh).await {
                        Ok(behind) => behind,
                        Err(why) => return Err(self.not_applied(shard, why)),
                    };
                    let mut attempts = Vec::new();
                    let mut not_found = None;
                    while let Some(i) = pick(policy, replicas, &self.region, &shard.turn, &tried) {
                        tried.push(i);
                        let r = &replicas[i];
                        // While another replica could still answer, one attempt may use half
                        // of what is left, so a hung replica costs a retry, not the request.
                        let now = Instant::now();
                        let left = self.deadline.saturating_duration_since(now);
                        let attempt_deadline = if replicas.len() > tried.len() {
                            now + left / 2
                        } else {
                            self.deadline
                        };
                        let _in_flight = r.state.start();
                        let sent = Instant::now();
                        let result = traced(
                            &shard.name,
                            &r.state.url,
                            tried.len(),
                            client().call(
                                &r.state.url,
                                method,
                                path,
                                body.clone(),
                                attempt_deadline,
                            ),
                        )
                        .await;
                        self.gw.observe(&shard.name, r, &result, sent.elapsed());
                        let kind = match result {
                            Ok(a) if a.status == 404 => {
                                if a.lost_collection() {
                                    r.state.suspect();
                                }
                                not_found = Some(a);
                                continue;
                            }
                            Ok(a) if a.status < 500 => return Ok(a),
                            Ok(a) => CallKind::Status(a.status),
                            Err(e) => kind_of(e),
                        };
                        attempts.push(Attempt {
                            replica: r.state.url.clone(),
                            kind,
                        });
                    }
                    if let Some(a) = not_found {
                        return Ok(a);
                    }
                    // With a version to see and no replica yet known to have it, wait for one
                    // (hints replayed, another router's record cleared) until the deadline.
                    if self.token.is_none() || !attempts.is_empty() {
                        return Err(failed(attempts));
                    }
                    if Instant::now() + BEHIND_POLL >= self.deadline {
                        let waited = started.elapsed().as_millis();
                        return Err(self.not_applied(shard, format!("waited {waited} ms")));
                    }
                    tokio::time::sleep(BEHIND_POLL).await;
                    refresh = true;
                }
            }
        }
    }

    /// Runs `method path` on built-in shard `name` within the request's deadline, in its
    /// `shard call` span.
    pub(super) async fn call_in_process(
        &self,
        name: &str,
        shard: &std::sync::Arc<shardd::Shard>,
        method: &Method,
        path: &str,
        body: Bytes,
    ) -> Result<Answer, CallError> {
        let call = call_builtin(
            shard.clone(),
            method.clone(),
            path.to_string(),
            body,
            self.deadline,
        );
        traced(name, "built-in", 1, call).await
    }

    /// The replicas of a shard known (through etcd) to have missed writes up to the token's
    /// version, by index; none without a token or `[cluster]`.
    async fn behind(&self, replicas: &[Replica], refresh: bool) -> Result<Vec<usize>, String> {
        let (Some(version), Some(etcd)) = (self.token, &self.gw.etcd) else {
            return Ok(Vec::new());
        };
        let mut missing = self.missing.lock().await;
        if refresh || missing.is_none() {
            *missing = Some(etcd.missing().await?);
        }
        let missing = missing.as_ref().expect("just read");
        Ok((0..replicas.len())
            .filter(|&i| {
                missing
                    .get(&url_hash(&replicas[i].state.url))
                    .is_some_and(|&since| since <= version)
            })
            .collect())
    }

    fn not_applied(&self, shard: &ShardRoute, why: String) -> ShardFailure {
        ShardFailure {
            shard: shard.name.clone(),
            attempts: vec![Attempt {
                replica: "every replica".into(),
                kind: CallKind::NotApplied {
                    version: self.token.unwrap_or_default(),
                    why,
                },
            }],
        }
    }

    /// Reads `method path` with `body` from every shard and reads each answer's result;
    /// shards that did not answer are named, and tolerated only with `allow_partial`.
    pub(crate) async fn scatter<T: DeserializeOwned>(
        &self,
        collection: &str,
        method: &Method,
        path: &str,
        body: Bytes,
    ) -> Result<(Vec<T>, Vec<String>), GatewayError> {
        let policy = self.policy(collection);
        let answers = self
            .stats
            .shards(join_all(self.topo.shards.iter().map(|shard| {
                self.read_one(shard, policy, method, path, body.clone())
            })))
            .await;
        let mut results = Vec::with_capacity(answers.len());
        let mut failures = Vec::new();
        let mut lacking = None;
        for (shard, answer) in self.topo.shards.iter().zip(answers) {
            match answer {
                // While points move, a new shard may not hold the collection yet: it has
                // nothing to add.
                Ok(a) if self.topo.moving.is_some() && a.lost_collection() => {
                    lacking = Some((shard, a));
                }
                Ok(a) => results.push(read_result(&shard.name, &a)?),
                Err(f) => failures.push(f),
            }
        }
        if let (true, Some((shard, a))) = (results.is_empty() && failures.is_empty(), lacking) {
            return Err(read_result::<Value>(&shard.name, &a).expect_err("a 404 is a refusal"));
        }
        if !failures.is_empty() && (!self.topo.config.routing.allow_partial || results.is_empty()) {
            return Err(GatewayError::Unreachable(failures));
        }
        Ok((results, failures.into_iter().map(|f| f.shard).collect()))
    }

    pub(super) async fn list_collections(&self, started: StdInstant) -> Result<Done, GatewayError> {
        let (lists, partial) = self
            .scatter::<Listed>("", &Method::GET, "/collections", Bytes::new())
            .await?;
        let mut names: Vec<String> = lists.into_iter().flat_map(Listed::names).collect();
        names.sort();
        names.dedup();
        let collections: Vec<Value> = names.iter().map(|n| json!({"name": n})).collect();
        Ok(Done {
            status: 200,
            body: envelope(&json!({ "collections": collections }), started).into(),
            partial,
        })
    }

    pub(super) async fn collection_info(
        &self,
        c: &str,
        started: StdInstant,
    ) -> Result<Done, GatewayError> {
        let path = format!("/collections/{}", encode_segment(c));
        let (results, partial) = self
            .scatter::<Value>(c, &Method::GET, &path, Bytes::new())
            .await?;
        let mut info = results.first().cloned().unwrap_or(Value::Null);
        for key in ["points_count", "indexed_vectors_count"] {
            info[key] = json!(results.iter().filter_map(|r| r[key].as_u64()).sum::<u64>());
        }
        info["config"]["params"]["shard_number"] = json!(self.topo.serving().len());
        if let Some(fields) = info["payload_schema"].as_object().cloned() {
            for field in fields.keys() {
                let points: u64 = results
                    .iter()
                    .filter_map(|r| r["payload_schema"][field]["points"].as_u64())
                    .sum();
                info["payload_schema"][field]["points"] = json!(points);
            }
        }
        Ok(Done {
            status: 200,
            body: envelope(&info, started).into(),
            partial,
        })
    }

    pub(super) async fn exists(&self, c: &str, started: StdInstant) -> Result<Done, GatewayError> {
        #[derive(Deserialize)]
        struct Exists {
            exists: bool,
        }
        let path = format!("/collections/{}/exists", encode_segment(c));
        let (results, partial) = self
            .scatter::<Exists>(c, &Method::GET, &path, Bytes::new())
            .await?;
        Ok(Done {
            status: 200,
            body: envelope(
                &json!({"exists": results.iter().any(|r| r.exists)}),
                started,
            )
            .into(),
            partial,
        })
    }

    pub(super) async fn get_points(
        &self,
        c: &str,
        req: GetPointsRequest,
        started: StdInstant,
    ) -> Result<Done, GatewayError> {
        let path = format!("/collections/{}/points", encode_segment(c));
        let policy = self.policy(c);
        // While points move, a point may be on its previous owner too: both are asked, and
        // the copy with the higher version is the current one.
        let parts = self.by_targets(
            req.ids.clone(),
            |id| *id,
            |id| (self.topo.owner(id), self.topo.previous_owner(id)),
        );
        let calls = parts.into_iter().map(|(i, ids)| {
            let body = serde_json::to_vec(&GetPointsRequest {
                ids,
                with_payload: req.with_payload.clone(),
                with_vector: req.with_vector.clone(),
            })
            .unwrap_or_default();
            let shard = &self.topo.shards[i];
            let path = &path;
            async move {
                let answer = self
                    .read_one(shard, policy, &Method::POST, path, body.into())
                    .await?;
                read_result::<Vec<RawHit>>(&shard.name, &answer)
            }
        });
        let mut found: HashMap<PointId, RawHit> = HashMap::new();
        for records in self.stats.shards(join_all(calls)).await {
            for r in records? {
                if found.get(&r.id).is_none_or(|held| held.version < r.version) {
                    found.insert(r.id, r);
                }
            }
        }
        let ordered: Vec<RawHit> = req.ids.iter().filter_map(|id| found.remove(id)).collect();
        Ok(Done::ok(Written::Records(ordered).to_bytes(false, started)))
    }

    pub(super) async fn get_point(
        &self,
        c: &str,
        id: PointId,
        path: &str,
    ) -> Result<Done, GatewayError> {
        let shard = &self.topo.shards[self.topo.owner(&id)];
        let answer = self
            .stats
            .shards(self.read_one(shard, self.policy(c), &Method::GET, path, Bytes::new()))
            .await?;
        // While points move, one not yet copied is on its previous owner.
        if let (404, Some(previous)) = (answer.status, self.topo.previous_owner(&id)) {
            let shard = &self.topo.shards[previous];
            return Ok(self
                .read_one(shard, self.policy(c), &Method::GET, path, Bytes::new())
                .await?
                .into());
        }
        Ok(answer.into())
    }

    pub(super) async fn scroll(
        &self,
        c: &str,
        mut req: ScrollRequest,
        started: StdInstant,
    ) -> Result<Done, GatewayError> {
        #[derive(Deserialize)]
        struct Page {
            points: Vec<RawHit>,
        }
        let limit = req.page()?;
        req.limit = Some(limit + 1);
        let path = format!("/collections/{}/points/scroll", encode_segment(c));
        let body = serde_json::to_vec(&req).unwrap_or_default();
        let (pages, partial) = self
            .scatter::<Page>(c, &Method::POST, &path, body.into())
            .await?;
        let mut all = merge_by_id(pages.into_iter().map(|p| p.points).collect());
        let next = all.get(limit).map(|r| r.id);
        all.truncate(limit);
        Ok(Done {
            status: 200,
            body: Written::Scroll(all, next).to_bytes(false, started).into(),
            partial,
        })
    }

    pub(super) async fn count(
        &self,
        c: &str,
        body: &Bytes,
        started: StdInstant,
    ) -> Result<Done, GatewayError> {
        #[derive(Deserialize)]
        struct Count {
            count: u64,
        }
        if self.topo.moving.is_some() {
            return self.count_distinct(c, body, started).await;
        }
        let path = format!("/collections/{}/points/count", encode_segment(c));
        let (counts, partial) = self
            .scatter::<Count>(c, &Method::POST, &path, body.clone())
            .await?;
        Ok(Done {
            status: 200,
            body: envelope(
                &CountResult {
                    count: counts.iter().map(|c| c.count).sum(),
                },
                started,
            )
            .into(),
            partial,
        })
    }

    /// A count while points move, when a point may be on two shards: the distinct ids of a
    /// scroll over every shard (ids only), which costs a pass over the matching points.
    async fn count_distinct(
        &self,
        c: &str,
        body: &Bytes,
        started: StdInstant,
    ) -> Result<Done, GatewayError> {
        #[derive(Deserialize)]
        struct Page {
            points: Vec<RawHit>,
            next_page_offset: Option<PointId>,
        }
        let filter = serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|v| v.get("filter").cloned())
            .unwrap_or(Value::Null);
        let path = format!("/collections/{}/points/scroll", encode_segment(c));
        let (mut count, mut offset, mut partial) = (0u64, None::<PointId>, Vec::new());
        loop {
            let mut req = json!({"limit": COUNT_PAGE, "with_payload": false, "with_vector": false});
            if !filter.is_null() {
                req["filter"] = filter.clone();
            }
            if let Some(o) = offset {
                req["offset"] = json!(o);
            }
            let (pages, missing) = self
                .scatter::<Page>(
                    c,
                    &Method::POST,
                    &path,
                    serde_json::to_vec(&req).unwrap_or_default().into(),
                )
                .await?;
            partial.extend(missing);
            // Each shard's page ends where its next one starts; ids below the lowest of those
            // ends are complete across shards, so they are counted, and the next round starts
            // there.
            let end = pages.iter().filter_map(|p| p.next_page_offset).min();
            let mut ids: Vec<PointId> = pages
                .into_iter()
                .flat_map(|p| p.points.into_iter().map(|h| h.id))
                .filter(|id| end.is_none_or(|e| *id < e))
                .collect();
            ids.sort_unstable();
            ids.dedup();
            count += ids.len() as u64;
            match end {
                Some(e) => offset = Some(e),
                None => break,
            }
        }
        partial.sort();
        partial.dedup();
        Ok(Done {
            status: 200,
            body: envelope(&CountResult { count }, started).into(),
            partial,
        })
    }
}

fn kind_of(e: CallError) -> CallKind {
    match e {
        CallError::Timeout => CallKind::Timeout,
        CallError::Transport(t) => CallKind::Transport(t),
    }
}
