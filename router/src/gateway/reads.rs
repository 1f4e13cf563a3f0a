//! Reads from shards: one replica per shard by the read policy, retried on another, and
//! scattered over every shard, then gathered (lists, counts, scroll pages, points by id).

use super::*;

impl Ctx<'_> {
    /// Reads from one replica of `shard`, retrying other replicas on failure until the deadline.
    pub(super) async fn read_one(
        &self,
        shard: &ShardRoute,
        policy: ReadPolicy,
        method: &Method,
        path: &str,
        body: Bytes,
    ) -> Result<Answer, Error> {
        match &shard.kind {
            ShardKind::Builtin(s) => call_builtin(
                s.clone(),
                method.clone(),
                path.to_string(),
                body,
                self.deadline,
            )
            .await
            .map_err(|e| match e {
                CallError::Timeout => Error::Timeout(format!("shard {}: timed out", shard.name)),
                e => Error::Unavailable(format!("shard {}: {e}", shard.name)),
            }),
            ShardKind::Remote(replicas) => {
                let mut tried = Vec::new();
                let mut last = String::from("no replica is available");
                let mut timed_out = false;
                while let Some(i) = pick(policy, replicas, &self.region, &shard.turn, &tried) {
                    tried.push(i);
                    let r = &replicas[i];
                    // While another replica could still answer, one attempt may use half of
                    // what is left, so a hung replica costs a retry rather than the request.
                    let now = Instant::now();
                    let others_left = replicas.len() > tried.len();
                    let left = self.deadline.saturating_duration_since(now);
                    let attempt_deadline = if others_left {
                        now + left / 2
                    } else {
                        self.deadline
                    };
                    let _in_flight = r.state.start();
                    let result = self
                        .gw
                        .client
                        .call(&r.state.url, method, path, body.clone(), attempt_deadline)
                        .await;
                    self.gw.observe(&shard.name, r, &result);
                    timed_out = matches!(result, Err(CallError::Timeout));
                    match result {
                        Ok(a) if a.status < 500 => return Ok(a),
                        Ok(a) => last = format!("{} answered {}", r.state.url, a.status),
                        Err(CallError::Timeout) => last = format!("{} timed out", r.state.url),
                        Err(e) => last = format!("{}: {e}", r.state.url),
                    }
                }
                let message = format!("shard {}: {last}", shard.name);
                Err(if timed_out {
                    Error::Timeout(message)
                } else {
                    Error::Unavailable(message)
                })
            }
        }
    }

    /// Reads from every shard; failed shards are named, and tolerated only with `allow_partial`.
    pub(super) async fn scatter(
        &self,
        collection: &str,
        method: &Method,
        path: &str,
        bodies: Vec<Bytes>,
    ) -> Result<(Vec<Value>, Vec<String>), Error> {
        let policy = self.policy(collection);
        let calls = self
            .topo
            .shards
            .iter()
            .zip(bodies)
            .map(|(shard, body)| self.read_one(shard, policy, method, path, body));
        let answers = join_all(calls).await;
        let mut results = Vec::new();
        let mut missing = Vec::new();
        let mut failures = Vec::new();
        for (shard, answer) in self.topo.shards.iter().zip(answers) {
            match answer {
                Ok(a) => results.push(envelope_result(&a)?),
                Err(why) => {
                    missing.push(shard.name.clone());
                    failures.push(why);
                }
            }
        }
        if !missing.is_empty() && (!self.topo.config.routing.allow_partial || results.is_empty()) {
            let message = failures
                .iter()
                .map(Error::detail)
                .collect::<Vec<_>>()
                .join("; ");
            let all_timed_out = failures.iter().all(|e| matches!(e, Error::Timeout(_)));
            return Err(if all_timed_out {
                Error::Timeout(message)
            } else {
                Error::Unavailable(message)
            });
        }
        Ok((results, missing))
    }

    pub(super) async fn list_collections(&self) -> Outcome {
        let (results, missing) = self
            .scatter(
                "",
                &Method::GET,
                "/collections",
                self.same_body(&Bytes::new()),
            )
            .await?;
        let mut names: Vec<String> = results
            .iter()
            .flat_map(|r| r["collections"].as_array().cloned().unwrap_or_default())
            .filter_map(|c| c["name"].as_str().map(str::to_string))
            .collect();
        names.sort();
        names.dedup();
        Ok((
            json!({"collections": names.iter().map(|n| json!({"name": n})).collect::<Vec<_>>()}),
            missing,
        ))
    }

    pub(super) async fn collection_info(&self, c: &str) -> Outcome {
        let path = format!("/collections/{}", encode_segment(c));
        let (results, missing) = self
            .scatter(c, &Method::GET, &path, self.same_body(&Bytes::new()))
            .await?;
        let mut info = results.first().cloned().unwrap_or(Value::Null);
        for key in ["points_count", "indexed_vectors_count"] {
            info[key] = json!(results.iter().filter_map(|r| r[key].as_u64()).sum::<u64>());
        }
        info["config"]["params"]["shard_number"] = json!(self.topo.shards.len());
        if let Some(fields) = info["payload_schema"].as_object().cloned() {
            for field in fields.keys() {
                let points: u64 = results
                    .iter()
                    .filter_map(|r| r["payload_schema"][field]["points"].as_u64())
                    .sum();
                info["payload_schema"][field]["points"] = json!(points);
            }
        }
        Ok((info, missing))
    }

    pub(super) async fn exists(&self, c: &str) -> Outcome {
        let path = format!("/collections/{}/exists", encode_segment(c));
        let (results, missing) = self
            .scatter(c, &Method::GET, &path, self.same_body(&Bytes::new()))
            .await?;
        Ok((
            json!({"exists": results.iter().any(|r| r["exists"] == json!(true))}),
            missing,
        ))
    }

    pub(super) async fn get_points(&self, c: &str, body: &Bytes) -> Outcome {
        let req: GetPointsRequest = parse_body(body)?;
        let path = format!("/collections/{}/points", encode_segment(c));
        let policy = self.policy(c);
        let parts = self.by_owner(req.ids.clone(), |id| *id);
        let calls = parts.iter().map(|(&i, ids)| {
            let body = to_body(&json!({"ids": ids, "with_payload": req.with_payload, "with_vector": req.with_vector}));
            self.read_one(&self.topo.shards[i], policy, &Method::POST, &path, body)
        });
        let mut found: HashMap<PointId, Value> = HashMap::new();
        for answer in join_all(calls).await {
            let records: Vec<Record> = from_value(envelope_result(&answer?)?)?;
            for r in records {
                found.insert(r.id, serde_json::to_value(&r).unwrap_or(Value::Null));
            }
        }
        let ordered: Vec<Value> = req.ids.iter().filter_map(|id| found.remove(id)).collect();
        Ok((Value::Array(ordered), Vec::new()))
    }

    pub(super) async fn get_point(&self, c: &str, id: &str) -> Outcome {
        let parsed = PointId::parse(id)?;
        let shard = &self.topo.shards[self.owner(&parsed)];
        let path = format!(
            "/collections/{}/points/{}",
            encode_segment(c),
            encode_segment(id)
        );
        let answer = self
            .read_one(shard, self.policy(c), &Method::GET, &path, Bytes::new())
            .await?;
        Ok((envelope_result(&answer)?, Vec::new()))
    }

    pub(super) async fn scroll(&self, c: &str, body: &Bytes) -> Outcome {
        let req: ScrollRequest = parse_body(body)?;
        let limit = req.limit.unwrap_or(10);
        wire::check_limit(limit, 0)?;
        let mut shard_body: Value = parse_body(body)?;
        shard_body["limit"] = json!(limit + 1);
        let path = format!("/collections/{}/points/scroll", encode_segment(c));
        let (results, missing) = self
            .scatter(
                c,
                &Method::POST,
                &path,
                self.same_body(&to_body(&shard_body)),
            )
            .await?;
        let mut all: Vec<Record> = Vec::new();
        for r in results {
            all.extend(from_value::<Vec<Record>>(r["points"].clone())?);
        }
        all.sort_by_key(|p| p.id);
        let next = all.get(limit).map(|r| r.id);
        all.truncate(limit);
        Ok((json!({"points": all, "next_page_offset": next}), missing))
    }

    pub(super) async fn count(&self, c: &str, body: &Bytes) -> Outcome {
        let path = format!("/collections/{}/points/count", encode_segment(c));
        let (results, missing) = self
            .scatter(c, &Method::POST, &path, self.same_body(body))
            .await?;
        Ok((
            json!({"count": results.iter().filter_map(|r| r["count"].as_u64()).sum::<u64>()}),
            missing,
        ))
    }
}
