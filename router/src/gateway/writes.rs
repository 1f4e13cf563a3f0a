//! Writes to shards: every replica of each owning shard, acknowledgements counted against the
//! consistency level, and hints kept for replicas that missed a write.

use bytes::Bytes;
use futures_util::future::join_all;
use http::Method;
use serde::Deserialize;
use serde_json::Value;
use shardd::api::request::{DeleteRequest, SetPayloadRequest, UpsertOut};
use shardd::api::{update_result, UpdateResult};
use shardd::engine::point::{PointId, PointWrite};
use shardd::shard::Selector;

use super::{encode_segment, read_result, Ctx, RawPayload};
use crate::balance::Replica;
use crate::error::GatewayError;
use crate::hints::Hint;
use crate::topology::{ShardKind, ShardRoute};
use crate::upstream::{client, traced, Answer, CallError};

/// Acknowledgements of one shard's part of a write.
struct ShardWrite {
    acks: usize,
    needed: usize,
    replicas: usize,
    answers: Vec<Answer>,
    failures: Vec<String>,
}

/// `{"operation_id"}` of a write's answer.
#[derive(Deserialize)]
struct Written {
    operation_id: Option<u64>,
}

impl Ctx<'_> {
    /// Sends a write to every replica of `shard` and counts acknowledgements.
    async fn write_shard(
        &self,
        shard: &ShardRoute,
        method: &Method,
        path: &str,
        body: Bytes,
    ) -> ShardWrite {
        let needed_of = |n| self.topo.config.routing.write_consistency.required(n);
        match &shard.kind {
            ShardKind::Builtin(s) => {
                let result = self
                    .call_in_process(&shard.name, s, method, path, body)
                    .await;
                let mut w = ShardWrite {
                    acks: 0,
                    needed: 1,
                    replicas: 1,
                    answers: Vec::new(),
                    failures: Vec::new(),
                };
                match result {
                    Ok(a) => {
                        w.acks += usize::from(a.status == 200);
                        w.answers.push(a);
                    }
                    Err(e) => w.failures.push(format!("built-in: {e}")),
                }
                w
            }
            ShardKind::Remote(replicas) => {
                let calls = replicas.iter().map(|r| {
                    let body = body.clone();
                    // Whether it counts is decided once, as the write is sent: a join that ends
                    // while it is in flight must not make a queued write count as missed.
                    let joining = r.state.joining();
                    async move {
                        let hint = Hint {
                            method: method.to_string(),
                            path: path.to_string(),
                            body: String::from_utf8_lossy(&body).into_owned(),
                        };
                        if let Some(log) = r.state.hints() {
                            let queued = log.queue_if_lagging(&hint).unwrap_or_else(|e| {
                                self.gw.hint_disk_failure(&r.state.url, &e);
                                true
                            });
                            if queued {
                                return (
                                    r,
                                    joining,
                                    hint,
                                    Err(CallError::Transport(
                                        "queued behind writes it missed".into(),
                                    )),
                                );
                            }
                        }
                        let _in_flight = r.state.start();
                        let sent = tokio::time::Instant::now();
                        let result = traced(
                            &shard.name,
                            &r.state.url,
                            1,
                            client().call(&r.state.url, method, path, body, self.deadline),
                        )
                        .await;
                        self.gw.observe(&shard.name, r, &result, sent.elapsed());
                        // A joining replica may not hold the collection yet: whatever it did not
                        // take is kept for it, to replay once its copy is done.
                        let kept = if joining {
                            !matches!(&result, Ok(a) if a.status == 200)
                        } else {
                            !matches!(&result, Ok(a) if a.status < 500)
                        };
                        if kept {
                            self.keep_hint(r, &hint).await;
                        }
                        (r, joining, hint, result)
                    }
                });
                let results = join_all(calls).await;
                // Joining replicas get every write but count for nothing: the consistency level
                // is over the replicas that serve.
                let counted: Vec<_> = results
                    .into_iter()
                    .filter(|(_, joining, _, _)| !joining)
                    .map(|(r, _, hint, result)| (r, hint, result))
                    .collect();
                let mut w = ShardWrite {
                    acks: 0,
                    needed: needed_of(counted.len()),
                    replicas: counted.len(),
                    answers: Vec::new(),
                    failures: Vec::new(),
                };
                let acked = counted
                    .iter()
                    .any(|(_, _, result)| matches!(result, Ok(a) if a.status == 200));
                for (r, hint, result) in counted {
                    match result {
                        // A replica that does not know a collection its peer just wrote to lost
                        // its data: it is refilled, and gets this write with its hints.
                        Ok(a) if acked && a.status == 404 && a.lost_collection() => {
                            r.state.suspect();
                            self.keep_hint(r, &hint).await;
                            w.failures
                                .push(format!("{} does not hold the collection", r.state.url));
                        }
                        Ok(a) => {
                            if a.status == 200 {
                                w.acks += 1;
                            } else if a.status >= 500 {
                                w.failures
                                    .push(format!("{} answered {}", r.state.url, a.status));
                            }
                            w.answers.push(a);
                        }
                        Err(e) => w.failures.push(format!("{}: {e}", r.state.url)),
                    }
                }
                w
            }
        }
    }

    /// Keeps a write `r` missed in its hint log, for replay; with `[cluster]`, the first one
    /// missed is recorded in etcd before the write is answered, so that reads on other routers
    /// presenting its version avoid `r`.
    async fn keep_hint(&self, r: &Replica, hint: &Hint) {
        let Some(log) = r.state.hints() else { return };
        let first = !log.lagging();
        if let Err(e) = log.push(hint) {
            self.gw.hint_disk_failure(&r.state.url, &e);
        }
        self.gw
            .metrics
            .hints_pending
            .with_label_values(&[&r.state.url])
            .set(log.pending() as i64);
        if let (true, Some(etcd)) = (first, &self.gw.etcd) {
            match etcd
                .record_missing(&self.gw.router_id, &r.state.url, hint.version())
                .await
            {
                Ok(()) => r.state.set_missing_published(true),
                Err(e) => etcd.failed(self.gw, &e),
            }
        }
    }

    /// Writes to the given shards, each with its own body, and checks every one reached its
    /// consistency level; returns every acknowledging answer with its shard's name. A client
    /// error from any replica is returned as it was written.
    async fn write_answers(
        &self,
        method: &Method,
        path: &str,
        parts: Vec<(usize, Bytes)>,
    ) -> Result<Vec<(String, Answer)>, GatewayError> {
        let calls = parts.into_iter().map(|(i, body)| {
            let shard = &self.topo.shards[i];
            async move { (shard, self.write_shard(shard, method, path, body).await) }
        });
        let mut acknowledged = Vec::new();
        let mut short = Vec::new();
        let mut missing = None;
        for (shard, w) in self.stats.shards(join_all(calls)).await {
            if let Some(refused) = w.answers.iter().find(|a| (400..500).contains(&a.status)) {
                let refusal = read_result::<Value>(&shard.name, refused)
                    .expect_err("4xx answers are refusals");
                // While points move, a payload write goes to both of a point's shards, and one of
                // them may not hold it (yet, or any more): that one is not a refusal.
                if self.topo.moving.is_some() && refused.status == 404 {
                    missing = Some(refusal);
                    continue;
                }
                return Err(refusal);
            }
            if w.acks < w.needed {
                short.push(format!(
                    "shard {}: {} of {} replicas acknowledged, {} needed ({})",
                    shard.name,
                    w.acks,
                    w.replicas,
                    w.needed,
                    w.failures.join(", ")
                ));
            }
            acknowledged.extend(
                w.answers
                    .into_iter()
                    .filter(|a| a.status == 200)
                    .map(|a| (shard.name.clone(), a)),
            );
        }
        if !short.is_empty() {
            return Err(GatewayError::Unacknowledged(short));
        }
        match missing {
            Some(refusal) if acknowledged.is_empty() => Err(refusal),
            _ => Ok(acknowledged),
        }
    }

    /// A write of points, versioned by the router's clock so that every replica (and every
    /// replay or copy of it) orders it the same way: answered with Qdrant's update result
    /// (the highest operation id).
    async fn write(
        &self,
        method: &Method,
        path: &str,
        parts: Vec<(usize, Bytes)>,
    ) -> Result<UpdateResult, GatewayError> {
        let sep = if path.contains('?') { '&' } else { '?' };
        let version = self.gw.clock.now();
        self.stats.wrote(version);
        let path = format!("{path}{sep}version={version}");
        let mut operation = 0;
        for (shard, a) in self.write_answers(method, &path, parts).await? {
            if let Some(op) = read_result::<Written>(&shard, &a)?.operation_id {
                operation = operation.max(op);
            }
        }
        Ok(update_result(operation, true))
    }

    fn all_shards(&self, body: &Bytes) -> Vec<(usize, Bytes)> {
        (0..self.topo.shards.len())
            .map(|i| (i, body.clone()))
            .collect()
    }

    /// Per-shard bodies: the client's own when one shard takes everything, else `part`'s
    /// encoding of each shard's share (a share goes to two shards while its points move;
    /// `delete` says whether the write removes them).
    fn parts<T: Clone>(
        &self,
        items: Vec<T>,
        id: impl Fn(&T) -> PointId,
        delete: bool,
        original: &Bytes,
        part: impl Fn(Vec<T>) -> Vec<u8>,
    ) -> Vec<(usize, Bytes)> {
        let by_owner = self.by_targets(items, id, |id| self.topo.write_targets(id, delete));
        if by_owner.len() == 1 && self.topo.shards.len() == 1 {
            return by_owner
                .into_keys()
                .map(|i| (i, original.clone()))
                .collect();
        }
        by_owner
            .into_iter()
            .map(|(i, share)| (i, Bytes::from(part(share))))
            .collect()
    }

    /// Per-shard bodies of a write by selector: ids go to their owners (`part` encodes each
    /// share), a filter to every shard as the client sent it.
    fn by_selector(
        &self,
        selector: Selector,
        delete: bool,
        original: &Bytes,
        part: impl Fn(Vec<PointId>) -> Vec<u8>,
    ) -> Vec<(usize, Bytes)> {
        match selector {
            Selector::Ids(ids) => self.parts(ids, |id| *id, delete, original, part),
            Selector::Filter(_) => self.all_shards(original),
        }
    }

    pub(super) async fn create_collection(
        &self,
        c: &str,
        body: &Bytes,
    ) -> Result<Value, GatewayError> {
        shardd::shard::validate_name(c)?;
        self.gw.forget_schema(c);
        let path = format!("/collections/{}", encode_segment(c));
        self.write_answers(&Method::PUT, &path, self.all_shards(body))
            .await?;
        Ok(Value::Bool(true))
    }

    /// Drops a collection everywhere; `true` when some shard had it.
    pub(super) async fn drop_collection(&self, c: &str) -> Result<Value, GatewayError> {
        self.gw.forget_schema(c);
        let path = format!("/collections/{}", encode_segment(c));
        let answers = self
            .write_answers(&Method::DELETE, &path, self.all_shards(&Bytes::new()))
            .await?;
        let mut dropped = false;
        for (shard, a) in answers {
            dropped |= read_result::<bool>(&shard, &a)?;
        }
        Ok(Value::Bool(dropped))
    }

    /// Creates or drops a payload index on every replica of every shard.
    pub(super) async fn index_op(
        &self,
        c: &str,
        method: &Method,
        suffix: &str,
        body: &Bytes,
    ) -> Result<UpdateResult, GatewayError> {
        let path = format!("/collections/{}/{suffix}?wait=true", encode_segment(c));
        self.write(method, &path, self.all_shards(body)).await
    }

    pub(super) async fn upsert(
        &self,
        c: &str,
        points: Vec<PointWrite<Option<RawPayload>>>,
        original: &Bytes,
    ) -> Result<UpdateResult, GatewayError> {
        let points = if self.topo.shards.len() == 1 {
            points
        } else {
            self.schema(c).await?.check(c, points)?
        };
        let path = format!("/collections/{}/points?wait=true", encode_segment(c));
        let parts = self.parts(
            points,
            |p| p.id,
            false,
            original,
            |share: Vec<PointWrite<Option<RawPayload>>>| {
                serde_json::to_vec(&UpsertOut(share.as_slice())).unwrap_or_default()
            },
        );
        self.write(&Method::PUT, &path, parts).await
    }

    pub(super) async fn delete(
        &self,
        c: &str,
        selector: Selector,
        original: &Bytes,
    ) -> Result<UpdateResult, GatewayError> {
        let path = format!("/collections/{}/points/delete?wait=true", encode_segment(c));
        let parts = self.by_selector(selector, true, original, |share| {
            serde_json::to_vec(&DeleteRequest {
                points: Some(share),
                filter: None,
            })
            .unwrap_or_default()
        });
        self.write(&Method::POST, &path, parts).await
    }

    pub(super) async fn set_payload(
        &self,
        c: &str,
        selector: Selector,
        payload: RawPayload,
        key: Option<String>,
        overwrite: bool,
        original: &Bytes,
    ) -> Result<UpdateResult, GatewayError> {
        let method = if overwrite { Method::PUT } else { Method::POST };
        let path = format!(
            "/collections/{}/points/payload?wait=true",
            encode_segment(c)
        );
        let parts = self.by_selector(selector, false, original, |share| {
            serde_json::to_vec(&SetPayloadRequest {
                payload: &payload,
                points: Some(share),
                filter: None,
                key: key.clone(),
            })
            .unwrap_or_default()
        });
        self.write(&method, &path, parts).await
    }
}
