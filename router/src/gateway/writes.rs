//! Writes to shards: every replica of each owning shard, acknowledgements counted against the
//! consistency level, and hints kept for replicas that missed a write.

use super::*;

/// Acknowledgements of one shard's part of a write.
struct ShardWrite {
    acks: usize,
    needed: usize,
    replicas: usize,
    answers: Vec<Answer>,
    failures: Vec<String>,
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
                let result = call_builtin(
                    s.clone(),
                    method.clone(),
                    path.to_string(),
                    body,
                    self.deadline,
                )
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
                    async move {
                        let hint = Hint {
                            method: method.to_string(),
                            path: path.to_string(),
                            body: String::from_utf8_lossy(&body).into_owned(),
                        };
                        if let Some(log) = r.state.hints() {
                            match log.queue_if_lagging(&hint) {
                                Ok(false) => {}
                                Ok(true) => {
                                    return (
                                        r,
                                        Err(CallError::Transport(
                                            "queued behind writes it missed".into(),
                                        )),
                                    )
                                }
                                Err(e) => {
                                    self.gw.hint_disk_failure(&r.state.url, &e);
                                    return (
                                        r,
                                        Err(CallError::Transport(
                                            "queued behind writes it missed".into(),
                                        )),
                                    );
                                }
                            }
                        }
                        let _in_flight = r.state.start();
                        let result = self
                            .gw
                            .client
                            .call(&r.state.url, method, path, body, self.deadline)
                            .await;
                        self.gw.observe(&shard.name, r, &result);
                        if !matches!(&result, Ok(a) if a.status < 500) {
                            if let Some(log) = r.state.hints() {
                                if let Err(e) = log.push(&hint) {
                                    self.gw.hint_disk_failure(&r.state.url, &e);
                                }
                                self.gw
                                    .metrics
                                    .hints_pending
                                    .with_label_values(&[&r.state.url])
                                    .set(log.pending() as i64);
                            }
                        }
                        (r, result)
                    }
                });
                let mut w = ShardWrite {
                    acks: 0,
                    needed: needed_of(replicas.len()),
                    replicas: replicas.len(),
                    answers: Vec::new(),
                    failures: Vec::new(),
                };
                for (r, result) in join_all(calls).await {
                    match result {
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

    /// Writes to the given shards, each with its own body, and checks every one reached its
    /// consistency level. A client error from any replica is returned as is.
    pub(super) async fn write(
        &self,
        method: &Method,
        path: &str,
        parts: Vec<(usize, Bytes)>,
    ) -> Result<Vec<Value>, Error> {
        let calls = parts.into_iter().map(|(i, body)| {
            let shard = &self.topo.shards[i];
            async move { (shard, self.write_shard(shard, method, path, body).await) }
        });
        let mut results = Vec::new();
        let mut short = Vec::new();
        for (shard, w) in join_all(calls).await {
            if let Some(client_error) = w.answers.iter().find(|a| (400..500).contains(&a.status)) {
                return Err(envelope_result(client_error).expect_err("4xx answers are errors"));
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
            if let Some(a) = w.answers.iter().find(|a| a.status == 200) {
                results.push(envelope_result(a)?);
            }
        }
        if !short.is_empty() {
            return Err(Error::Unavailable(format!(
                "write not acknowledged: {}",
                short.join("; ")
            )));
        }
        Ok(results)
    }

    pub(super) async fn create_collection(&self, c: &str, body: &Bytes) -> Result<Value, Error> {
        let req: CreateCollection = parse_body(body)?;
        CollectionConfig::from_request(req)?;
        shardd::shard::validate_name(c)?;
        self.forget_schema(c);
        let path = format!("/collections/{}", encode_segment(c));
        self.write(&Method::PUT, &path, self.all_shards(body))
            .await?;
        Ok(Value::Bool(true))
    }

    pub(super) async fn drop_collection(&self, c: &str) -> Result<Value, Error> {
        self.forget_schema(c);
        let path = format!("/collections/{}", encode_segment(c));
        let results = self
            .write(&Method::DELETE, &path, self.all_shards(&Bytes::new()))
            .await?;
        Ok(Value::Bool(
            results.iter().any(|r| r.as_bool() == Some(true)),
        ))
    }

    /// Creates or drops a payload index on every replica of every shard.
    pub(super) async fn index_op(
        &self,
        c: &str,
        method: &Method,
        suffix: &str,
        body: &Bytes,
    ) -> Result<Value, Error> {
        let path = format!("/collections/{}/{suffix}?wait=true", encode_segment(c));
        let results = self.write(method, &path, self.all_shards(body)).await?;
        Ok(Self::update_result(&results, true))
    }

    pub(super) async fn upsert(&self, c: &str, body: &Bytes) -> Result<Value, Error> {
        let points = parse_body::<UpsertRequest>(body)?.into_points()?;
        let schema = self.schema(c).await?;
        schema.collection.validate(points.clone())?;
        let path = format!("/collections/{}/points?wait=true", encode_segment(c));
        let parts = self
            .by_owner(points, |p| p.id)
            .into_iter()
            .map(|(i, pts)| {
                (
                    i,
                    to_body(&json!({"points": pts.iter().map(point_json).collect::<Vec<_>>()})),
                )
            })
            .collect();
        let results = self.write(&Method::PUT, &path, parts).await?;
        Ok(Self::update_result(&results, true))
    }

    pub(super) async fn delete(&self, c: &str, body: &Bytes) -> Result<Value, Error> {
        let req: DeleteRequest = parse_body(body)?;
        let path = format!("/collections/{}/points/delete?wait=true", encode_segment(c));
        let parts = match (req.points, req.filter) {
            (Some(ids), None) => self
                .by_owner(ids, |id| *id)
                .into_iter()
                .map(|(i, ids)| (i, to_body(&json!({"points": ids}))))
                .collect(),
            (None, Some(_)) => self.all_shards(body),
            _ => return Err(Error::bad("give exactly one of `points` (ids) or `filter`")),
        };
        let results = self.write(&Method::POST, &path, parts).await?;
        Ok(Self::update_result(&results, true))
    }

    pub(super) async fn set_payload(
        &self,
        c: &str,
        method: &Method,
        body: &Bytes,
    ) -> Result<Value, Error> {
        let req: SetPayloadRequest = parse_body(body)?;
        let path = format!(
            "/collections/{}/points/payload?wait=true",
            encode_segment(c)
        );
        let parts = match (&req.points, &req.filter) {
            (Some(ids), None) => self
                .by_owner(ids.clone(), |id| *id)
                .into_iter()
                .map(|(i, ids)| {
                    (
                        i,
                        to_body(&json!({"payload": req.payload, "points": ids, "key": req.key})),
                    )
                })
                .collect(),
            (None, Some(_)) => self.all_shards(body),
            _ => return Err(Error::bad("give exactly one of `points` (ids) or `filter`")),
        };
        let results = self.write(method, &path, parts).await?;
        Ok(Self::update_result(&results, true))
    }
}
