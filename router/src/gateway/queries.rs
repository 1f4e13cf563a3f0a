//! Searches across shards: ranked scatter and merge, query stages (fusion, rescoring, MMR),
//! grouped search, collection-wide idf, batches and the seed-style `/v1/search`.

use super::*;

/// Points of a stage, and the shards missing from them.
type Gathered = Result<(Vec<ScoredPoint>, Vec<String>), Error>;

impl Ctx<'_> {
    /// Sends a ranked search (`/points/{endpoint}`) to every shard with `limit` widened to
    /// `widened` and `offset` 0, plus collection-wide idf when `search` needs it, and returns
    /// each shard's ranked points.
    pub(super) async fn scatter_ranked(
        &self,
        c: &str,
        endpoint: &str,
        mut body: Value,
        widened: usize,
        search: Option<&SearchRequest>,
    ) -> Result<(Vec<Vec<ScoredPoint>>, Vec<String>), Error> {
        body["limit"] = json!(widened);
        body["offset"] = json!(0);
        if let Some(s) = search {
            if let Some(stats) = self.global_idf(c, &s.using, &s.vector).await? {
                body["vecgate_idf"] = json!(stats);
            }
        }
        let path = format!("/collections/{}/points/{endpoint}", encode_segment(c));
        let (results, missing) = self
            .scatter(c, &Method::POST, &path, self.same_body(&to_body(&body)))
            .await?;
        let lists = results
            .into_iter()
            .map(|r| from_value(if r.is_array() { r } else { r["points"].clone() }))
            .collect::<Result<_, _>>()?;
        Ok((lists, missing))
    }

    /// For a sparse query on an idf-weighted vector, the document frequencies of the whole
    /// collection (every shard's, summed), so each shard weights terms as one shard holding
    /// every point would. `None` for anything else.
    pub(super) async fn global_idf(
        &self,
        c: &str,
        using: &str,
        vector: &QueryVector,
    ) -> Result<Option<IdfStats>, Error> {
        let QueryVector::Sparse(query) = vector else {
            return Ok(None);
        };
        let schema = self.schema(c).await?;
        if schema
            .collection
            .config
            .sparse_vectors
            .get(using)
            .and_then(|p| p.modifier)
            != Some(Modifier::Idf)
        {
            return Ok(None);
        }
        let path = format!("/collections/{}/sparse/stats", encode_segment(c));
        let body = to_body(&json!({"using": using, "indices": query.indices}));
        let (results, _) = self
            .scatter(c, &Method::POST, &path, self.same_body(&body))
            .await?;
        let mut total = IdfStats::default();
        for r in results {
            total.add(&from_value(r)?);
        }
        Ok(Some(total))
    }

    /// Runs one query over every shard and merges; answers the points as a JSON list. Shards get
    /// the client's own request with `limit` widened to `offset + limit` and `offset` 0.
    pub(super) async fn query(&self, c: &str, raw: Result<Value, Error>) -> Outcome {
        let raw = raw?;
        let plan = wire::query_plan(&raw)?;
        let (limit, offset, distance) = match &plan {
            QueryPlan::Search(s) => (s.limit, s.offset, self.schema(c).await?.distance(&s.using)),
            QueryPlan::List { limit, offset, .. } => (*limit, *offset, Distance::Dot),
            QueryPlan::Staged {
                stage,
                offset,
                with_payload,
                with_vector,
            } => {
                let (mut points, missing) = self.stage(c, stage, with_payload, with_vector).await?;
                points.drain(..(*offset).min(points.len()));
                return Ok((serde_json::to_value(points).unwrap_or(Value::Null), missing));
            }
        };
        let search = match &plan {
            QueryPlan::Search(s) => Some(s),
            _ => None,
        };
        let (lists, missing) = self
            .scatter_ranked(c, "query", raw, limit + offset, search)
            .await?;
        let merged = match plan {
            QueryPlan::List { .. } => {
                let mut all: Vec<ScoredPoint> = lists.into_iter().flatten().collect();
                all.sort_by_key(|p| p.id);
                all.into_iter().skip(offset).take(limit).collect()
            }
            _ => merge_top_k(&lists, distance, offset, limit),
        };
        Ok((serde_json::to_value(merged).unwrap_or(Value::Null), missing))
    }

    /// Runs one stage of a universal query over every shard. Searches scatter and merge; a
    /// fusion or rescoring runs here over the merged results of each prefetch, so the answer
    /// equals that of one shard holding every point.
    pub(super) fn stage<'s>(
        &'s self,
        c: &'s str,
        stage: &'s Stage,
        with_payload: &'s WithPayload,
        with_vector: &'s WithVector,
    ) -> BoxFuture<'s, Gathered> {
        Box::pin(async move {
            let runs = join_all(
                stage
                    .prefetch
                    .iter()
                    .map(|p| self.stage(c, p, with_payload, with_vector)),
            )
            .await;
            let (mut lists, mut missing) = (Vec::new(), Vec::new());
            for run in runs {
                let (list, m) = run?;
                lists.push(list);
                missing.extend(m);
            }
            let vector = match &stage.query {
                StageQuery::Fusion(f) if !lists.is_empty() => {
                    return Ok((fused_top(fuse(lists, f)?, stage), missing))
                }
                StageQuery::Fusion(_) => {
                    return Err(Error::bad("query: fusion needs prefetches to fuse"))
                }
                StageQuery::Nearest(v) => v,
            };
            let filter = if stage.prefetch.is_empty() {
                stage.filter_json.clone()
            } else {
                let ids: BTreeSet<PointId> = lists.iter().flatten().map(|p| p.id).collect();
                let mut must = vec![json!({"has_id": ids})];
                must.extend(stage.filter_json.clone());
                Some(json!({"must": must}))
            };
            let (limit, fetch) = candidates_for(stage, with_vector);
            let (found, m) = self
                .stage_search(c, stage, filter, limit, with_payload, &fetch)
                .await?;
            missing.extend(m);
            let points = match stage.mmr {
                Some(params) => mmr::rerank(
                    found,
                    vector,
                    &stage.using,
                    self.schema(c).await?.distance(&stage.using),
                    params,
                    stage.limit,
                    with_vector,
                ),
                None => found,
            };
            Ok((points, missing))
        })
    }

    /// One nearest search of a stage on every shard, merged to `limit`.
    pub(super) async fn stage_search(
        &self,
        c: &str,
        stage: &Stage,
        filter: Option<Value>,
        limit: usize,
        with_payload: &WithPayload,
        with_vector: &WithVector,
    ) -> Gathered {
        let StageQuery::Nearest(vector) = &stage.query else {
            return Err(Error::bad("query: only a nearest stage searches"));
        };
        let body = json!({
            "query": vector_json(vector),
            "using": stage.using,
            "filter": filter,
            "params": stage.params,
            "score_threshold": stage.score_threshold,
            "limit": limit,
            "with_payload": with_payload,
            "with_vector": with_vector,
            "vecgate_idf": self.global_idf(c, &stage.using, vector).await?,
        });
        let distance = self.schema(c).await?.distance(&stage.using);
        let path = format!("/collections/{}/points/query", encode_segment(c));
        let (results, missing) = self
            .scatter(c, &Method::POST, &path, self.same_body(&to_body(&body)))
            .await?;
        let lists: Vec<Vec<ScoredPoint>> = results
            .into_iter()
            .map(|r| from_value(r["points"].clone()))
            .collect::<Result<_, _>>()?;
        Ok((merge_top_k(&lists, distance, 0, limit), missing))
    }

    /// `/points/query/groups`: the query ranked over every shard, grouped here.
    pub(super) async fn query_groups(&self, c: &str, body: &Bytes) -> Outcome {
        let raw: Value = parse_body(body)?;
        let req: GroupsRequest = parse_value(raw.clone())?;
        let (_, limit) = req.sizes()?;
        let mut asked = req.first_fetch()?;
        loop {
            let (found, missing) = self.query(c, Ok(groups::ranked_query(&raw, asked))).await?;
            let points: Vec<ScoredPoint> = from_value(found)?;
            let grouped = groups::group(&points, &req)?;
            if !groups::needs_more(grouped.len(), limit, points.len(), asked) {
                return Ok((json!({"groups": grouped}), missing));
            }
            asked = (asked * 4).min(wire::MAX_RESULTS);
        }
    }

    pub(super) async fn query_batch(&self, c: &str, body: &Bytes) -> Outcome {
        let batch: Batch<Value> = parse_body(body)?;
        let answers = join_all(batch.searches.into_iter().map(|q| self.query(c, Ok(q)))).await;
        gather_batch(answers, |points| json!({"points": points}))
    }

    pub(super) async fn search(&self, c: &str, raw: Result<Value, Error>) -> Outcome {
        let body = raw?;
        let req: LegacySearchRequest = parse_value(body.clone())?;
        let search = req.into_search()?;
        let distance = self.schema(c).await?.distance(&search.using);
        let (lists, missing) = self
            .scatter_ranked(
                c,
                "search",
                body,
                search.limit + search.offset,
                Some(&search),
            )
            .await?;
        Ok((
            serde_json::to_value(merge_top_k(&lists, distance, search.offset, search.limit))
                .unwrap_or(Value::Null),
            missing,
        ))
    }

    pub(super) async fn search_batch(&self, c: &str, body: &Bytes) -> Outcome {
        let batch: Batch<Value> = parse_body(body)?;
        let answers = join_all(batch.searches.into_iter().map(|q| self.search(c, Ok(q)))).await;
        gather_batch(answers, |points| points)
    }

    /// `POST /v1/search`: a vector search with a Mongo-style filter, answered as
    /// `{"results": [{"id", "score", "payload"}], "partial"}`.
    pub(super) async fn seed_search(&self, body: &Bytes) -> Outcome {
        let req: SeedSearch = parse_body(body)?;
        let vector = match (req.vector, req.query) {
            (Some(v), None) => v,
            (None, Some(_)) => {
                return Err(Error::bad(
                    "text queries need an embedder, and none is configured; send `vector`",
                ))
            }
            _ => return Err(Error::bad("give exactly one of `query` (text) or `vector`")),
        };
        let filter = req.filter.as_ref().map(translate).transpose()?;
        let query = json!({
            "query": vector,
            "using": req.using,
            "limit": req.top_k.unwrap_or(10),
            "filter": filter,
            "with_payload": true,
        });
        let (points, missing) = self.query(&req.collection, Ok(query)).await?;
        let results: Vec<Value> = points
            .as_array()
            .map(|ps| {
                ps.iter()
                    .map(|p| json!({"id": p["id"], "score": p["score"], "payload": p["payload"]}))
                    .collect()
            })
            .unwrap_or_default();
        let partial = !missing.is_empty();
        Ok((json!({"results": results, "partial": partial}), missing))
    }
}

/// Answers a batch in request order; the first failed entry fails the batch, as in Qdrant.
fn gather_batch(answers: Vec<Outcome>, shape: impl Fn(Value) -> Value) -> Outcome {
    let mut out = Vec::with_capacity(answers.len());
    let mut missing = Vec::new();
    for answer in answers {
        let (points, m) = answer?;
        out.push(shape(points));
        missing.extend(m);
    }
    missing.sort();
    missing.dedup();
    Ok((Value::Array(out), missing))
}
